//! The ledger's transaction scripts: grant, reserve, settle, reap and expire.
//!
//! Each one begins a write transaction, loads the rows it needs, asks tollgate-core what
//! changes (`check_spend`, `plan_reservation`, `plan_settlement`, `expiry_amount`, `post`,
//! `reserve`, `settle_pending`), writes the returned totals, the month's spend counter and
//! the audit log, and commits. No amount of money is
//! computed here or in SQL. Account rows are written compare-and-set against the totals
//! that were loaded and read back before commit (TigerBeetle's pair assertions); a core
//! `TransferError` or a failed assertion is a bug that rolls the transaction back.

use std::collections::HashMap;

use sqlx::SqliteConnection;
use tollgate_core::Timestamp;
use tollgate_core::ledger::{self, Account, AccountId, AccountKind, Lot, LotKind};
use tollgate_core::money::NanoUsd;

use crate::batching::{ReservationCommit, reap_overdue};
use crate::error::{StoreError, TxError};
use crate::journal::{AccountSet, JournalEntry, TransferKind, balance_view, check_read_back, describe_grant};
use crate::limits::Limits;
use crate::model::{
    AuditEntry, BalanceView, GrantRejection, LotView, NewLot, NewReservation, Reservation, ReserveRejection,
    SettleOutcome, Settlement,
};
use crate::rows::{ACCOUNT_SELECT, LOT_SELECT, account_from_row, lot_view_from_row, overdue_from_row};
use crate::rules::check_amount_positive;
use crate::sqlite::audit_log::{CREDIT_EXPIRED, CREDIT_GRANTED, SYSTEM_ACTOR, insert_audit_event};
use crate::sqlite::{SqliteStore, column, invariant, millis, store_error, truncate_to_millis};

/// Reservation ids one heartbeat `UPDATE` names: below SQLite's bound on parameters.
const EXTEND_PAGE: usize = 500;

impl SqliteStore {
    pub(crate) async fn grant_lot(&self, new_lot: NewLot) -> Result<LotView, TxError<GrantRejection>> {
        let mut transaction = self.begin_write().await?;
        let view = grant_in(&mut transaction, &new_lot).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(view)
    }

    pub(crate) async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(store_error)?;
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
        self.hot.reserve(reservation).await
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        self.hot.settle(settlement).await
    }

    /// Voids every pending reservation past its deadline, a page at a time. Each void is a
    /// settlement for nothing through the writer, so a request that ends at the same moment
    /// and the reaper end it once between them.
    pub(crate) async fn reap_reservations(&self, now: Timestamp) -> Result<usize, StoreError> {
        let fetch_page = |limit: usize| async move {
            let rows = sqlx::query(
                "SELECT id, org_id, workspace_id, api_key_id, request_id, model, created_at
                 FROM reservations
                 WHERE state = 'pending' AND deadline <= ?
                 ORDER BY deadline, id
                 LIMIT ?",
            )
            .bind(millis(now))
            .bind(limit as i64)
            .fetch_all(&self.writer)
            .await
            .map_err(store_error)?;
            rows.iter().map(overdue_from_row).collect::<Result<Vec<_>, _>>()
        };
        reap_overdue(now, fetch_page, |settlement| self.hot.settle(settlement)).await
    }

    /// The heartbeat's write: one `UPDATE` per page of ids, on the pool's write connection
    /// (the hot-path writer neither reads nor writes deadlines).
    pub(crate) async fn extend_reservations(
        &self,
        reservation_ids: &[String],
        deadline: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut extended = 0;
        for page in reservation_ids.chunks(EXTEND_PAGE) {
            let placeholders = vec!["?"; page.len()].join(", ");
            let sql = format!(
                "UPDATE reservations SET deadline = ?
                 WHERE state = 'pending' AND deadline < ? AND id IN ({placeholders})"
            );
            let mut query = sqlx::query(&sql).bind(millis(deadline)).bind(millis(deadline));
            for id in page {
                query = query.bind(id);
            }
            let result = query.execute(&self.writer).await.map_err(store_error)?;
            extended += usize::try_from(result.rows_affected()).unwrap_or(usize::MAX);
        }
        Ok(extended)
    }

    pub(crate) async fn pending_reservation_count(&self, org_id: Option<&str>) -> Result<usize, StoreError> {
        let count: i64 = match org_id {
            Some(org_id) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE state = 'pending' AND org_id = ?")
                    .bind(org_id)
                    .fetch_one(&self.reader)
                    .await
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE state = 'pending'")
                    .fetch_one(&self.reader)
                    .await
            }
        }
        .map_err(store_error)?;
        usize::try_from(count).map_err(|_| StoreError::Database(format!("bad count {count}")))
    }

    pub(crate) async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut transaction = self.begin_write().await?;
        // A pre-filter that compares and never computes: a lot whose posted debits have
        // reached its credits has nothing left to expire. `expiry_amount` decides the rest.
        let rows = sqlx::query(&format!(
            "{LOT_SELECT}
             WHERE l.expires_at IS NOT NULL AND l.expires_at <= ?
               AND a.debits_posted < a.credits_posted
             ORDER BY l.expires_at, l.id"
        ))
        .bind(millis(now))
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;

        let mut accounts = AccountSet::default();
        let mut expired_accounts: HashMap<String, AccountId> = HashMap::new();
        let mut moved = 0;
        for row in &rows {
            let org_id: String = column(row, "org_id")?;
            let view = lot_view_from_row(row)?;
            let Some(amount) = ledger::expiry_amount(&view.lot, now) else {
                continue;
            };
            let expired_account_id = match expired_accounts.get(&org_id) {
                Some(id) => *id,
                None => {
                    let account =
                        load_system_account(&mut transaction, &org_id, AccountKind::Expired).await?;
                    accounts.insert(account);
                    expired_accounts.insert(org_id.clone(), account.id);
                    account.id
                }
            };
            accounts.insert(view.lot.account);
            accounts.transfer(view.lot.account.id, expired_account_id, |debit, credit| {
                ledger::post(debit, credit, amount)
            })?;
            append_journal(
                &mut transaction,
                &JournalEntry {
                    org_id: &org_id,
                    debit: view.lot.account.id,
                    credit: expired_account_id,
                    amount,
                    kind: TransferKind::Expiry,
                    reservation_id: None,
                    lot_id: Some(&view.lot.lot_id),
                    created_at: now,
                },
            )
            .await?;
            insert_audit_event(
                &mut transaction,
                &AuditEntry {
                    org_id: org_id.clone(),
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
            moved += 1;
        }
        write_accounts(&mut transaction, &accounts).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(moved)
    }
}

/// Grants a lot inside the caller's write transaction: posts `amount` from the org's source
/// account for the lot's kind to a new lot account and logs who granted it. Shared by
/// `grant_lot` and a succeeded purchase, so a lot is granted the same way whoever grants it.
pub(crate) async fn grant_in(
    connection: &mut SqliteConnection,
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

    let organization = sqlx::query("SELECT 1 FROM organizations WHERE id = ?")
        .bind(&new_lot.org_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    if organization.is_none() {
        return Err(TxError::Rejected(GrantRejection::UnknownOrganization));
    }
    if new_lot.kind == LotKind::Starter {
        let starter = sqlx::query("SELECT 1 FROM lots WHERE org_id = ? AND kind = ?")
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
        sqlx::query_scalar("INSERT INTO accounts (org_id, kind) VALUES (?, ?) RETURNING id")
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
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        &JournalEntry {
            org_id: &new_lot.org_id,
            debit: source.id,
            credit: lot.account.id,
            amount: new_lot.amount,
            kind: TransferKind::Grant,
            reservation_id: None,
            lot_id: Some(&new_lot.lot_id),
            created_at: granted_at,
        },
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

/// Writes every changed account, then reads each back. The write only applies if the
/// row still holds the totals that were loaded; the read-back checks what was stored.
async fn write_accounts(connection: &mut SqliteConnection, accounts: &AccountSet) -> Result<(), StoreError> {
    let changed = accounts.changed()?;
    for (loaded, current) in &changed {
        let id = current.id;
        let updated = sqlx::query(
            "UPDATE accounts
                 SET debits_pending = ?, debits_posted = ?, credits_pending = ?, credits_posted = ?
                 WHERE id = ? AND debits_pending = ? AND debits_posted = ?
                   AND credits_pending = ? AND credits_posted = ?",
        )
        .bind(current.debits_pending.nanos())
        .bind(current.debits_posted.nanos())
        .bind(current.credits_pending.nanos())
        .bind(current.credits_posted.nanos())
        .bind(id.0)
        .bind(loaded.debits_pending.nanos())
        .bind(loaded.debits_posted.nanos())
        .bind(loaded.credits_pending.nanos())
        .bind(loaded.credits_posted.nanos())
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
        if updated.rows_affected() != 1 {
            return Err(invariant(format!(
                "account {} changed after it was loaded in the same transaction",
                id.0
            )));
        }
    }
    for (_, current) in &changed {
        let stored = load_account(&mut *connection, current.id).await?;
        check_read_back(&stored, current)?;
    }
    Ok(())
}

async fn append_journal(
    connection: &mut SqliteConnection,
    entry: &JournalEntry<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transfers
            (org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id,
             created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.org_id)
    .bind(entry.debit.0)
    .bind(entry.credit.0)
    .bind(entry.amount.nanos())
    .bind(entry.kind.as_str())
    .bind(entry.reservation_id)
    .bind(entry.lot_id)
    .bind(millis(entry.created_at))
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// The organization's lots, as `crate::limits` reads them for both backends.
pub(crate) async fn load_lots(
    connection: &mut SqliteConnection,
    org_id: &str,
) -> Result<Vec<LotView>, StoreError> {
    SqliteStore::load_lots(connection, org_id).await
}

async fn load_account(connection: &mut SqliteConnection, id: AccountId) -> Result<Account, StoreError> {
    let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    match row {
        Some(row) => account_from_row(&row),
        None => Err(invariant(format!("account {} does not exist", id.0))),
    }
}

/// One of an organization's system accounts. Missing means the organization does not exist
/// (or was created wrongly), which callers treat as a bug.
async fn load_system_account(
    connection: &mut SqliteConnection,
    org_id: &str,
    kind: AccountKind,
) -> Result<Account, StoreError> {
    let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE org_id = ? AND kind = ?"))
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
pub(crate) async fn load_lot_in(
    connection: &mut SqliteConnection,
    lot_id: &str,
) -> Result<LotView, StoreError> {
    sqlx::query(&format!("{LOT_SELECT} WHERE l.id = ?"))
        .bind(lot_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .map(|row| lot_view_from_row(&row))
        .transpose()?
        .ok_or_else(|| invariant(format!("lot {lot_id} does not exist")))
}

/// Posts what a reversal recovers from a purchase's lot back to its organization's
/// purchases account, inside the caller's write transaction: the grant, run backwards.
pub(crate) async fn reverse_lot_in(
    connection: &mut SqliteConnection,
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
        &JournalEntry {
            org_id,
            debit: lot.account.id,
            credit: source.id,
            amount,
            kind: TransferKind::Reversal,
            reservation_id: None,
            lot_id: Some(&lot.lot_id),
            created_at: now,
        },
    )
    .await?;
    write_accounts(&mut *connection, &accounts).await
}
