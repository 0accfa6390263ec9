//! PostgreSQL's side of the ledger (`crate::ledger`, written once for both backends): how
//! its scripts store changed accounts and journal rows, each in one statement (account rows
//! `UPDATE … FROM UNNEST` compare-and-set against the totals loaded and read back through
//! `RETURNING`, journal rows `INSERT … SELECT FROM UNNEST`), which the hot path's writer
//! (`writer.rs`) shares with the lots and spend accounts it loads; and the reserve and
//! settle that are queued to that writer. The doors the purchases' scripts go through
//! (`grant_in`, `load_lot_in`, `reverse_lot_in`) forward to the shared scripts.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;
use tollgate_core::ledger::{Account, AccountId, Lot, LotKind};

use crate::batching::ReservationCommit;
use crate::error::{StoreError, TxError};
use crate::journal::{AccountSet, JournalEntry, check_read_back, check_settlement};
use crate::ledger::Ledger;
use crate::model::{NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement};
use crate::postgres::{
    PgStore, check_rows_written, column, invariant, millis, store_error, timestamp_from_sql,
};
use crate::rows::account_from_row;
use crate::rules::check_amount_positive;

impl PgStore {
    pub(crate) async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<(Reservation, ReservationCommit), TxError<ReserveRejection>> {
        check_amount_positive("reservation", &reservation.reservation_id, reservation.amount)?;
        self.writer().reserve(reservation).await
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        check_settlement(&settlement)?;
        self.writer().settle(settlement).await
    }
}

impl Ledger for PgStore {
    async fn write_accounts(connection: &mut PgConnection, accounts: &AccountSet) -> Result<(), StoreError> {
        write_changed_accounts(connection, &accounts.changed()?).await
    }

    async fn append_journal(
        connection: &mut PgConnection,
        entries: &[JournalEntry<'_>],
    ) -> Result<(), StoreError> {
        append_journal(connection, entries).await
    }
}

/// Writes accounts given as (as loaded, as changed) in one statement, compare-and-set
/// against the totals that were loaded, and checks each row the database returns as stored:
/// `Ledger::write_accounts` here, and the hot-path writer's batches.
pub(crate) async fn write_changed_accounts(
    connection: &mut PgConnection,
    changed: &[(Account, Account)],
) -> Result<(), StoreError> {
    if changed.is_empty() {
        return Ok(());
    }
    let column_of = |pick: fn(&Account) -> i64, of_current: bool| -> Vec<i64> {
        changed
            .iter()
            .map(|(loaded, current)| pick(if of_current { current } else { loaded }))
            .collect()
    };
    let ids = column_of(|account| account.id.0, true);
    let rows = sqlx::query(
        "UPDATE accounts a
         SET debits_pending = v.debits_pending, debits_posted = v.debits_posted,
             credits_pending = v.credits_pending, credits_posted = v.credits_posted
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
              AS v (id, debits_pending, debits_posted, credits_pending, credits_posted,
                    loaded_debits_pending, loaded_debits_posted, loaded_credits_pending,
                    loaded_credits_posted)
         WHERE a.id = v.id
           AND a.debits_pending = v.loaded_debits_pending AND a.debits_posted = v.loaded_debits_posted
           AND a.credits_pending = v.loaded_credits_pending AND a.credits_posted = v.loaded_credits_posted
         RETURNING a.id AS account_id, a.kind AS account_kind, a.debits_pending, a.debits_posted,
                   a.credits_pending, a.credits_posted",
    )
    .bind(&ids)
    .bind(column_of(|account| account.debits_pending.nanos(), true))
    .bind(column_of(|account| account.debits_posted.nanos(), true))
    .bind(column_of(|account| account.credits_pending.nanos(), true))
    .bind(column_of(|account| account.credits_posted.nanos(), true))
    .bind(column_of(|account| account.debits_pending.nanos(), false))
    .bind(column_of(|account| account.debits_posted.nanos(), false))
    .bind(column_of(|account| account.credits_pending.nanos(), false))
    .bind(column_of(|account| account.credits_posted.nanos(), false))
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    let mut stored: BTreeMap<AccountId, Account> = BTreeMap::new();
    for row in &rows {
        let account = account_from_row(row)?;
        stored.insert(account.id, account);
    }
    for (_, current) in changed {
        let Some(stored) = stored.get(&current.id) else {
            return Err(invariant(format!(
                "account {} changed after it was loaded in the same transaction",
                current.id.0
            )));
        };
        check_read_back(stored, current)?;
    }
    Ok(())
}

/// Appends transfers to the journal, in order, in one statement.
pub(crate) async fn append_journal(
    connection: &mut PgConnection,
    entries: &[JournalEntry<'_>],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let org_ids: Vec<&str> = entries.iter().map(|entry| entry.org_id).collect();
    let debits: Vec<i64> = entries.iter().map(|entry| entry.debit.0).collect();
    let credits: Vec<i64> = entries.iter().map(|entry| entry.credit.0).collect();
    let amounts: Vec<i64> = entries.iter().map(|entry| entry.amount.nanos()).collect();
    let kinds: Vec<&str> = entries.iter().map(|entry| entry.kind.as_str()).collect();
    let reservation_ids: Vec<Option<&str>> = entries.iter().map(|entry| entry.reservation_id).collect();
    let lot_ids: Vec<Option<&str>> = entries.iter().map(|entry| entry.lot_id).collect();
    let created_at: Vec<i64> = entries.iter().map(|entry| millis(entry.created_at)).collect();
    let inserted = sqlx::query(
        "INSERT INTO transfers
            (org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id,
             created_at)
         SELECT t.org_id, t.debit, t.credit, t.amount, t.kind, t.reservation_id, t.lot_id, t.created_at
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[])
              WITH ORDINALITY
              AS t (org_id, debit, credit, amount, kind, reservation_id, lot_id, created_at, n)
         ORDER BY t.n",
    )
    .bind(&org_ids)
    .bind(&debits)
    .bind(&credits)
    .bind(&amounts)
    .bind(&kinds)
    .bind(&reservation_ids)
    .bind(&lot_ids)
    .bind(&created_at)
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    check_rows_written(inserted.rows_affected(), entries.len(), "journal transfers")
}

/// Each organization's lots (in drawdown-independent storage order) and its spend account,
/// from one query: the spend account is the row without a lot.
pub(crate) async fn load_lots_and_spend_accounts(
    connection: &mut PgConnection,
    org_ids: &[&str],
) -> Result<HashMap<String, (Vec<Lot>, Option<Account>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.org_id, a.id AS account_id, a.kind AS account_kind, a.debits_pending,
                a.debits_posted, a.credits_pending, a.credits_posted, l.id AS lot_id,
                l.kind AS lot_kind, l.granted_at, l.expires_at
         FROM accounts a LEFT JOIN lots l ON l.account_id = a.id
         WHERE a.org_id = ANY($1) AND (a.kind = 'spend' OR l.id IS NOT NULL)
         ORDER BY a.org_id, l.granted_at, l.id",
    )
    .bind(org_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    let mut of_orgs: HashMap<String, (Vec<Lot>, Option<Account>)> = HashMap::new();
    for row in &rows {
        let account = account_from_row(row)?;
        let (lots, spend_account) = of_orgs.entry(column(row, "org_id")?).or_default();
        let Some(lot_id) = column::<Option<String>>(row, "lot_id")? else {
            *spend_account = Some(account);
            continue;
        };
        let kind_text: String = column::<Option<String>>(row, "lot_kind")?.unwrap_or_default();
        let kind = LotKind::parse(&kind_text)
            .ok_or_else(|| StoreError::Database(format!("unknown lot kind '{kind_text}'")))?;
        lots.push(Lot {
            lot_id,
            kind,
            account,
            granted_at: timestamp_from_sql(column::<Option<i64>>(row, "granted_at")?.unwrap_or_default())?,
            expires_at: column::<Option<i64>>(row, "expires_at")?
                .map(timestamp_from_sql)
                .transpose()?,
        });
    }
    Ok(of_orgs)
}
