//! PostgreSQL twin of `sqlite/ledger.rs`: grant, reap and expire; reservations and settlements
//! are queued to the batching writer (`writer.rs`), and so are the reaper's abandonments.
//!
//! Every script runs at READ COMMITTED and takes the organization's row lock
//! (`SELECT … FOR UPDATE` on `organizations`) before it reads anything it will change, so
//! the scripts of one organization run one after another across every replica, and the
//! rows they then read are the last committed ones. It asks tollgate-core what changes and
//! writes the returned totals: account rows in one `UPDATE … FROM UNNEST` compare-and-set
//! against the totals loaded and read back through `RETURNING`, journal rows and
//! reservation lines in one `INSERT … SELECT FROM UNNEST` each. A script PostgreSQL aborts
//! for contention is run again whole by `retrying`.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;
use tollgate_core::Timestamp;
use tollgate_core::ledger::{self, Account, AccountId, AccountKind, Lot, LotKind};
use tollgate_core::money::NanoUsd;

use crate::batching::{ReservationCommit, reap_overdue};
use crate::error::{StoreError, TxError};
use crate::journal::{
    AccountSet, JournalEntry, TransferKind, balance_view, check_read_back, check_settlement, describe_grant,
};
use crate::limits::Limits;
use crate::model::{
    AuditEntry, BalanceView, GrantRejection, LotView, NewLot, NewReservation, Reservation, ReserveRejection,
    SettleOutcome, Settlement,
};
use crate::postgres::audit_log::{CREDIT_EXPIRED, CREDIT_GRANTED, SYSTEM_ACTOR, insert_audit_event};
use crate::postgres::{
    PgStore, check_rows_written, column, invariant, lock_organization, millis, retrying, retrying_store,
    store_error, timestamp_from_sql, truncate_to_millis,
};
use crate::rows::{ACCOUNT_SELECT, LOT_SELECT, account_from_row, lot_view_from_row, overdue_from_row};
use crate::rules::check_amount_positive;

impl PgStore {
    pub(crate) async fn grant_lot(&self, new_lot: NewLot) -> Result<LotView, TxError<GrantRejection>> {
        let new_lot = &new_lot;
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            let view = grant_in(&mut transaction, new_lot).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(view)
        })
        .await
    }

    pub(crate) async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, StoreError> {
        let mut connection = self.pool().acquire().await.map_err(store_error)?;
        load_lots(&mut connection, org_id).await
    }

    pub(crate) async fn balance(&self, org_id: &str, now: Timestamp) -> Result<BalanceView, StoreError> {
        // One snapshot, so a settlement committing between the queries can't be half seen.
        let mut transaction = self.begin_read().await?;
        let lots = load_lots(&mut transaction, org_id).await?;
        let spend = load_system_account(&mut transaction, org_id, AccountKind::Spend).await?;
        let expired = load_system_account(&mut transaction, org_id, AccountKind::Expired).await?;
        transaction.commit().await.map_err(store_error)?;

        balance_view(org_id, lots, &spend, &expired, now)
    }

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

    /// Voids every pending reservation past its deadline, a page at a time, each as a
    /// settlement through the replica's writer (`writer.rs`), the guarded path every request
    /// ends by: a request that ends at the same moment, the reaper of another replica and
    /// this one end it once between them.
    pub(crate) async fn reap_reservations(&self, now: Timestamp) -> Result<usize, StoreError> {
        let fetch_page = |limit: usize| async move {
            let rows = sqlx::query(
                "SELECT id, org_id, workspace_id, api_key_id, request_id, model, created_at
                 FROM reservations
                 WHERE state = 'pending' AND deadline <= $1
                 ORDER BY deadline, id
                 LIMIT $2",
            )
            .bind(millis(now))
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(store_error)?;
            rows.iter().map(overdue_from_row).collect::<Result<Vec<_>, _>>()
        };
        reap_overdue(now, fetch_page, |settlement| self.writer().settle(settlement)).await
    }

    /// The heartbeat's write: one `UPDATE` over every id, in id order so that two replicas'
    /// heartbeats and the writer's batches take row locks in one order.
    pub(crate) async fn extend_reservations(
        &self,
        reservation_ids: &[String],
        deadline: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut ids = reservation_ids.to_vec();
        ids.sort_unstable();
        let result = sqlx::query(
            "UPDATE reservations SET deadline = $1
             WHERE id IN (
                 SELECT id FROM reservations
                 WHERE id = ANY($2) AND state = 'pending' AND deadline < $1
                 ORDER BY id
                 FOR UPDATE
             )",
        )
        .bind(millis(deadline))
        .bind(&ids)
        .execute(self.pool())
        .await
        .map_err(store_error)?;
        Ok(usize::try_from(result.rows_affected()).unwrap_or(usize::MAX))
    }

    pub(crate) async fn pending_reservation_count(&self, org_id: Option<&str>) -> Result<usize, StoreError> {
        let count: i64 = match org_id {
            Some(org_id) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM reservations WHERE state = 'pending' AND org_id = $1",
                )
                .bind(org_id)
                .fetch_one(self.pool())
                .await
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE state = 'pending'")
                    .fetch_one(self.pool())
                    .await
            }
        }
        .map_err(store_error)?;
        usize::try_from(count).map_err(|_| StoreError::Database(format!("bad count {count}")))
    }

    /// Moves the unreserved remainder of every expired lot to its organization's expired
    /// account, one organization per transaction (under its lock).
    pub(crate) async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        // A pre-filter that compares and never computes: a lot whose posted debits have
        // reached its credits has nothing left to expire. `expiry_amount` decides the rest.
        let org_ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT l.org_id FROM lots l JOIN accounts a ON a.id = l.account_id
             WHERE l.expires_at IS NOT NULL AND l.expires_at <= $1
               AND a.debits_posted < a.credits_posted
             ORDER BY l.org_id",
        )
        .bind(millis(now))
        .fetch_all(self.pool())
        .await
        .map_err(store_error)?;
        let mut moved = 0;
        for org_id in &org_ids {
            moved += retrying_store(|| async move {
                let mut transaction = self.begin().await?;
                let moved = expire_in(&mut transaction, org_id, now).await?;
                transaction.commit().await.map_err(store_error)?;
                Ok(moved)
            })
            .await?;
        }
        Ok(moved)
    }
}

/// Expires one organization's expired lots, under its lock.
async fn expire_in(connection: &mut PgConnection, org_id: &str, now: Timestamp) -> Result<usize, StoreError> {
    if !lock_organization(&mut *connection, org_id).await? {
        return Ok(0);
    }
    let rows = sqlx::query(&format!(
        "{LOT_SELECT}
         WHERE l.org_id = $1 AND l.expires_at IS NOT NULL AND l.expires_at <= $2
           AND a.debits_posted < a.credits_posted
         ORDER BY l.expires_at, l.id"
    ))
    .bind(org_id)
    .bind(millis(now))
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    let mut expiring = Vec::new();
    for row in &rows {
        let view = lot_view_from_row(row)?;
        if let Some(amount) = ledger::expiry_amount(&view.lot, now) {
            expiring.push((view, amount));
        }
    }
    if expiring.is_empty() {
        return Ok(0);
    }
    let expired = load_system_account(&mut *connection, org_id, AccountKind::Expired).await?;
    let mut accounts = AccountSet::default();
    accounts.insert(expired);
    let mut journal = Vec::with_capacity(expiring.len());
    for (view, amount) in &expiring {
        accounts.insert(view.lot.account);
        accounts.transfer(view.lot.account.id, expired.id, |debit, credit| {
            ledger::post(debit, credit, *amount)
        })?;
        journal.push(JournalEntry {
            org_id,
            debit: view.lot.account.id,
            credit: expired.id,
            amount: *amount,
            kind: TransferKind::Expiry,
            reservation_id: None,
            lot_id: Some(&view.lot.lot_id),
            created_at: now,
        });
    }
    append_journal(&mut *connection, &journal).await?;
    write_accounts(&mut *connection, &accounts).await?;
    for (view, amount) in &expiring {
        insert_audit_event(
            &mut *connection,
            &AuditEntry {
                org_id: org_id.to_owned(),
                actor: SYSTEM_ACTOR.to_owned(),
                action: CREDIT_EXPIRED.to_owned(),
                subject: view.lot.lot_id.clone(),
                details: format!(
                    "{amount} of {} lot {} expired unused",
                    view.lot.kind.as_str(),
                    view.lot.lot_id
                ),
                reason: None,
                at: now,
            },
        )
        .await?;
    }
    Ok(expiring.len())
}

/// Grants a lot inside the caller's transaction: locks the organization, posts `amount`
/// from its source account for the lot's kind to a new lot account and logs who granted
/// it. Shared by `grant_lot` and a succeeded purchase.
pub(crate) async fn grant_in(
    connection: &mut PgConnection,
    new_lot: &NewLot,
) -> Result<LotView, TxError<GrantRejection>> {
    if !new_lot.amount.is_positive() {
        return Err(TxError::Rejected(GrantRejection::AmountNotPositive));
    }
    if new_lot.programme.is_some() && new_lot.kind != LotKind::Promotional {
        return Err(invariant(format!(
            "lot {} names a programme but is a {} lot; only promotional lots belong to one",
            new_lot.lot_id,
            new_lot.kind.as_str()
        ))
        .into());
    }
    let granted_at = truncate_to_millis(new_lot.granted_at)?;
    let expires_at = new_lot.expires_at.map(truncate_to_millis).transpose()?;
    // The lot as it will be stored, so the core judges expiry on stored instants.
    let mut lot = Lot {
        lot_id: new_lot.lot_id.clone(),
        kind: new_lot.kind,
        account: Account::new(AccountId(0), AccountKind::Lot),
        granted_at,
        expires_at,
    };
    if lot.is_expired(granted_at) {
        return Err(TxError::Rejected(GrantRejection::AlreadyExpired));
    }
    if !lock_organization(&mut *connection, &new_lot.org_id).await? {
        return Err(TxError::Rejected(GrantRejection::UnknownOrganization));
    }
    if new_lot.kind == LotKind::Starter {
        let starter = sqlx::query("SELECT 1 FROM lots WHERE org_id = $1 AND kind = $2")
            .bind(&new_lot.org_id)
            .bind(LotKind::Starter.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)?;
        if starter.is_some() {
            return Err(TxError::Rejected(GrantRejection::StarterAlreadyGranted));
        }
    }
    let source = load_system_account(
        &mut *connection,
        &new_lot.org_id,
        new_lot.kind.source_account_kind(),
    )
    .await?;
    let lot_account_id: i64 =
        sqlx::query_scalar("INSERT INTO accounts (org_id, kind) VALUES ($1, $2) RETURNING id")
            .bind(&new_lot.org_id)
            .bind(AccountKind::Lot.as_str())
            .fetch_one(&mut *connection)
            .await
            .map_err(store_error)?;
    lot.account = Account::new(AccountId(lot_account_id), AccountKind::Lot);

    let mut accounts = AccountSet::default();
    accounts.insert(source);
    accounts.insert(lot.account);
    accounts.transfer(source.id, lot.account.id, |debit, credit| {
        ledger::post(debit, credit, new_lot.amount)
    })?;

    sqlx::query(
        "INSERT INTO lots
            (id, org_id, account_id, kind, amount, granted_at, expires_at, memo, programme)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&new_lot.lot_id)
    .bind(&new_lot.org_id)
    .bind(lot_account_id)
    .bind(new_lot.kind.as_str())
    .bind(new_lot.amount.nanos())
    .bind(millis(granted_at))
    .bind(expires_at.map(millis))
    .bind(&new_lot.memo)
    .bind(&new_lot.programme)
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    append_journal(
        &mut *connection,
        &[JournalEntry {
            org_id: &new_lot.org_id,
            debit: source.id,
            credit: lot.account.id,
            amount: new_lot.amount,
            kind: TransferKind::Grant,
            reservation_id: None,
            lot_id: Some(&new_lot.lot_id),
            created_at: granted_at,
        }],
    )
    .await?;
    write_accounts(&mut *connection, &accounts).await?;
    insert_audit_event(
        &mut *connection,
        &AuditEntry {
            org_id: new_lot.org_id.clone(),
            actor: new_lot.actor.clone(),
            action: CREDIT_GRANTED.to_owned(),
            subject: new_lot.lot_id.clone(),
            details: describe_grant(new_lot, expires_at),
            reason: Some(new_lot.memo.clone()).filter(|memo| !memo.is_empty()),
            at: granted_at,
        },
    )
    .await?;

    lot.account = accounts.get(lot.account.id)?;
    Ok(LotView {
        lot,
        amount: new_lot.amount,
        memo: new_lot.memo.clone(),
        programme: new_lot.programme.clone(),
    })
}

/// Writes every changed account in one statement, compare-and-set against the totals that
/// were loaded, and checks each row the database returns as stored.
pub(crate) async fn write_accounts(
    connection: &mut PgConnection,
    accounts: &AccountSet,
) -> Result<(), StoreError> {
    write_changed_accounts(connection, &accounts.changed()?).await
}

/// Writes accounts given as (as loaded, as changed), like `write_accounts`.
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

/// The organization's lots, as `crate::limits` reads them for both backends.
pub(crate) async fn load_lots(
    connection: &mut PgConnection,
    org_id: &str,
) -> Result<Vec<LotView>, StoreError> {
    PgStore::load_lots(connection, org_id).await
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

/// One of an organization's system accounts. Missing means the organization does not exist
/// (or was created wrongly), which callers treat as a bug.
async fn load_system_account(
    connection: &mut PgConnection,
    org_id: &str,
    kind: AccountKind,
) -> Result<Account, StoreError> {
    let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE org_id = $1 AND kind = $2"))
        .bind(org_id)
        .bind(kind.as_str())
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    match row {
        Some(row) => account_from_row(&row),
        None => Err(invariant(format!(
            "organization {org_id} has no {} account",
            kind.as_str()
        ))),
    }
}

/// A lot by id with its account, inside the caller's transaction (unknown is a bug).
pub(crate) async fn load_lot_in(connection: &mut PgConnection, lot_id: &str) -> Result<LotView, StoreError> {
    sqlx::query(&format!("{LOT_SELECT} WHERE l.id = $1"))
        .bind(lot_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .map(|row| lot_view_from_row(&row))
        .transpose()?
        .ok_or_else(|| invariant(format!("lot {lot_id} does not exist")))
}

/// Posts what a reversal recovers from a purchase's lot back to its organization's
/// purchases account, under the organization's lock the caller holds: the grant, run
/// backwards.
pub(crate) async fn reverse_lot_in(
    connection: &mut PgConnection,
    org_id: &str,
    lot: &Lot,
    amount: NanoUsd,
    now: Timestamp,
) -> Result<(), StoreError> {
    let source = load_system_account(&mut *connection, org_id, lot.kind.source_account_kind()).await?;
    let mut accounts = AccountSet::default();
    accounts.insert(lot.account);
    accounts.insert(source);
    accounts.transfer(lot.account.id, source.id, |debit, credit| {
        ledger::post(debit, credit, amount)
    })?;
    append_journal(
        &mut *connection,
        &[JournalEntry {
            org_id,
            debit: lot.account.id,
            credit: source.id,
            amount,
            kind: TransferKind::Reversal,
            reservation_id: None,
            lot_id: Some(&lot.lot_id),
            created_at: now,
        }],
    )
    .await?;
    write_accounts(&mut *connection, &accounts).await
}
