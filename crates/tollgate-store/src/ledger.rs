//! The ledger's transaction scripts outside the hot path: granting a lot, reading lots and
//! balances, reaping overdue reservations, the heartbeat that extends reservations'
//! deadlines, counting pending reservations, expiring lots, and the pieces a purchase's
//! script borrows (loading a lot, reversing one).
//!
//! Each script begins a write transaction, loads the rows it needs, asks tollgate-core what
//! changes (`post`, `expiry_amount`), writes the returned totals, the journal and the audit
//! log, and commits. No amount of money is computed here or in SQL. Account rows are written
//! compare-and-set against the totals that were loaded and checked as stored before commit
//! (TigerBeetle's pair assertions); a core `TransferError` or a failed check is a bug that
//! rolls the transaction back. Reservations and settlements go through the hot path's
//! writer (`sqlite/writer.rs`, `postgres/writer.rs`), and so do the reaper's abandonments.
//!
//! Written once for both backends over `Dialect`; what differs stays behind it:
//! - the locking: a script is a write transaction (`Dialect::begin_write`: SQLite's `BEGIN
//!   IMMEDIATE`) that first holds the organization it changes
//!   (`Dialect::lock_organization`: PostgreSQL's row lock, SQLite only checks the row is
//!   there), run again on contention where the backend does so (`Dialect::busy_pause`:
//!   PostgreSQL). Expiry runs one such transaction per organization.
//! - the heartbeat's list of ids (`Dialect::any_of`: SQLite one placeholder per id, a page
//!   of them per statement; PostgreSQL one array) and its row locks taken in id order
//!   (`Dialect::for_update`: PostgreSQL).
//! - how changed accounts and journal rows are stored: `Ledger::write_accounts` and
//!   `Ledger::append_journal` are each backend's own (SQLite a statement per row and a
//!   read-back; PostgreSQL one `UNNEST` statement, read back through `RETURNING`), shared
//!   with its hot-path writer.

use std::future::Future;

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::ledger::{self, Account, AccountId, AccountKind, Lot, LotKind};
use tollgate_core::money::NanoUsd;

use crate::audit_log::AuditLog;
use crate::batching::reap_overdue;
use crate::book::HeldInMemory;
use crate::codec::{invariant, millis, truncate_to_millis};
use crate::dialect::{Dialect, retrying};
use crate::error::{StoreError, TxError};
use crate::journal::{
    AccountSet, CREDIT_EXPIRED, CREDIT_GRANTED, JournalEntry, SYSTEM_ACTOR, TransferKind, balance_view,
    describe_grant,
};
use crate::limits::Limits;
use crate::model::{AuditEntry, BalanceView, GrantRejection, LotView, NewLot};
use crate::rows::{
    ACCOUNT_SELECT, DbRow, LOT_SELECT, account_from_row, column, lot_view_from_row, overdue_from_row,
};

/// The ledger's scripts outside the hot path, the same on every backend but for how
/// accounts and journal rows are stored.
pub(crate) trait Ledger: Dialect + AuditLog + Limits
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
{
    /// Writes every account `accounts` changed, compare-and-set against the totals that
    /// were loaded, and checks each as stored: a row that changed since it was loaded, or
    /// reads back otherwise than written, is a bug (`StoreError::Invariant`).
    fn write_accounts(
        connection: &mut <Self::Db as Database>::Connection,
        accounts: &AccountSet,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends transfers to the journal, in order.
    fn append_journal(
        connection: &mut <Self::Db as Database>::Connection,
        entries: &[JournalEntry<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    async fn grant_lot(&self, new_lot: NewLot) -> Result<LotView, TxError<GrantRejection>> {
        let new_lot = &new_lot;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            let view = Self::grant_in(&mut transaction, new_lot).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(view)
        })
        .await
    }

    /// The organization's lots, with what the writer's book holds in memory on each
    /// counted as held.
    async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, StoreError> {
        let mut connection = self.read_pool().acquire().await.map_err(Self::store_error)?;
        let lots = Self::load_lots(&mut connection, org_id).await?;
        Ok(self.with_held_in_memory(lots))
    }

    /// Lots as read, with what the writer's book holds in memory on each added to their
    /// pending debits, as a written hold would be.
    fn with_held_in_memory(&self, lots: Vec<LotView>) -> Vec<LotView> {
        let held = self.hot_writer().held_in_memory();
        lots.into_iter()
            .map(|view| LotView {
                lot: held.lot(&view.lot),
                ..view
            })
            .collect()
    }

    async fn balance(&self, org_id: &str, now: Timestamp) -> Result<BalanceView, StoreError> {
        // One snapshot, so a settlement committing between the queries can't be half seen.
        let mut transaction = self.begin_read().await?;
        let lots = Self::load_lots(&mut transaction, org_id).await?;
        let spend = Self::load_system_account(&mut transaction, org_id, AccountKind::Spend).await?;
        let expired = Self::load_system_account(&mut transaction, org_id, AccountKind::Expired).await?;
        transaction.commit().await.map_err(Self::store_error)?;

        balance_view(org_id, self.with_held_in_memory(lots), &spend, &expired, now)
    }

    /// Voids every pending reservation past its deadline, a page at a time, each as a
    /// settlement through the hot path's writer, the guarded path every request ends by: a
    /// request that ends at the same moment, another replica's reaper and this one end it
    /// once between them.
    async fn reap_reservations(&self, now: Timestamp) -> Result<usize, StoreError> {
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
            .fetch_all(self.write_pool())
            .await
            .map_err(Self::store_error)?;
            rows.iter().map(overdue_from_row).collect::<Result<Vec<_>, _>>()
        };
        reap_overdue(now, fetch_page, |settlement| self.hot_writer().settle(settlement)).await
    }

    /// The heartbeat's write, outside the hot path's writer (which neither reads nor writes
    /// deadlines): one `UPDATE` per page of ids (`Dialect::texts_per_statement`), in id
    /// order, so that two replicas' heartbeats and the writer's batches lock rows in one
    /// order where the backend locks rows (`Dialect::for_update`).
    async fn extend_reservations(
        &self,
        reservation_ids: &[String],
        deadline: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut ids = reservation_ids.to_vec();
        ids.sort_unstable();
        let mut extended = 0;
        for page in ids.chunks(Self::texts_per_statement()) {
            let sql = format!(
                "UPDATE reservations SET deadline = $1
                 WHERE id IN (
                     SELECT id FROM reservations
                     WHERE {} AND state = 'pending' AND deadline < $1
                     ORDER BY id{}
                 )",
                Self::any_of("id", 2, page.len()),
                Self::for_update(),
            );
            let query = sqlx::query(&sql).bind(millis(deadline));
            let result = Self::bind_any_of(query, page)
                .execute(self.write_pool())
                .await
                .map_err(Self::store_error)?;
            extended += usize::try_from(Self::rows_affected(&result)).unwrap_or(usize::MAX);
        }
        Ok(extended)
    }

    async fn pending_reservation_count(&self, org_id: Option<&str>) -> Result<usize, StoreError> {
        let row = match org_id {
            Some(org_id) => {
                sqlx::query(
                    "SELECT COUNT(*) AS count FROM reservations WHERE state = 'pending' AND org_id = $1",
                )
                .bind(org_id)
                .fetch_one(self.read_pool())
                .await
            }
            None => {
                sqlx::query("SELECT COUNT(*) AS count FROM reservations WHERE state = 'pending'")
                    .fetch_one(self.read_pool())
                    .await
            }
        }
        .map_err(Self::store_error)?;
        let count: i64 = column(&row, "count")?;
        usize::try_from(count).map_err(|_| StoreError::Database(format!("bad count {count}")))
    }

    /// Moves the unreserved remainder of every expired lot to its organization's expired
    /// account, one organization per write transaction (holding it). What the writer's book
    /// holds in memory counts as reserved.
    async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        let held = &self.hot_writer().held_in_memory();
        // A pre-filter that compares and never computes: a lot whose posted debits have
        // reached its credits has nothing left to expire. `expiry_amount` decides the rest.
        let rows = sqlx::query(
            "SELECT DISTINCT l.org_id FROM lots l JOIN accounts a ON a.id = l.account_id
             WHERE l.expires_at IS NOT NULL AND l.expires_at <= $1
               AND a.debits_posted < a.credits_posted
             ORDER BY l.org_id",
        )
        .bind(millis(now))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let mut moved = 0;
        for row in &rows {
            let org_id: String = column(row, "org_id")?;
            let org_id = org_id.as_str();
            moved += retrying::<Self, _, _, _, _>(|| async move {
                let mut transaction = self.begin_write().await?;
                let moved = Self::expire_in(&mut transaction, org_id, held, now).await?;
                transaction.commit().await.map_err(Self::store_error)?;
                Ok::<_, StoreError>(moved)
            })
            .await?;
        }
        Ok(moved)
    }

    /// Expires one organization's expired lots inside the caller's write transaction,
    /// holding the organization first, leaving what is held on them (`held`: in memory).
    async fn expire_in(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        held: &HeldInMemory,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        if !Self::lock_organization(&mut *connection, org_id).await? {
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
        .map_err(Self::store_error)?;
        let mut expiring = Vec::new();
        for row in &rows {
            let view = lot_view_from_row(row)?;
            if let Some(amount) = ledger::expiry_amount(&held.lot(&view.lot), now) {
                expiring.push((view, amount));
            }
        }
        if expiring.is_empty() {
            return Ok(0);
        }
        let expired = Self::load_system_account(&mut *connection, org_id, AccountKind::Expired).await?;
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
        Self::append_journal(&mut *connection, &journal).await?;
        Self::write_accounts(&mut *connection, &accounts).await?;
        for (view, amount) in &expiring {
            Self::insert_audit_event(
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

    /// Grants a lot inside the caller's write transaction: holds the organization, posts
    /// `amount` from its source account for the lot's kind to a new lot account and logs
    /// who granted it. Shared by `grant_lot` and a succeeded purchase, so a lot is granted
    /// the same way whoever grants it.
    async fn grant_in(
        connection: &mut <Self::Db as Database>::Connection,
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
        if !Self::lock_organization(&mut *connection, &new_lot.org_id).await? {
            return Err(TxError::Rejected(GrantRejection::UnknownOrganization));
        }
        if new_lot.kind == LotKind::Starter {
            let starter = sqlx::query("SELECT 1 FROM lots WHERE org_id = $1 AND kind = $2")
                .bind(new_lot.org_id.as_str())
                .bind(LotKind::Starter.as_str())
                .fetch_optional(&mut *connection)
                .await
                .map_err(Self::store_error)?;
            if starter.is_some() {
                return Err(TxError::Rejected(GrantRejection::StarterAlreadyGranted));
            }
        }
        let source = Self::load_system_account(
            &mut *connection,
            &new_lot.org_id,
            new_lot.kind.source_account_kind(),
        )
        .await?;
        let inserted = sqlx::query("INSERT INTO accounts (org_id, kind) VALUES ($1, $2) RETURNING id")
            .bind(new_lot.org_id.as_str())
            .bind(AccountKind::Lot.as_str())
            .fetch_one(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        let lot_account_id: i64 = column(&inserted, "id")?;
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
        .bind(new_lot.lot_id.as_str())
        .bind(new_lot.org_id.as_str())
        .bind(lot_account_id)
        .bind(new_lot.kind.as_str())
        .bind(new_lot.amount.nanos())
        .bind(millis(granted_at))
        .bind(expires_at.map(millis))
        .bind(new_lot.memo.as_str())
        .bind(new_lot.programme.as_deref())
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        Self::append_journal(
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
        Self::write_accounts(&mut *connection, &accounts).await?;
        Self::insert_audit_event(
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

    /// One of an organization's system accounts. Missing means the organization does not
    /// exist (or was created wrongly), which callers treat as a bug.
    async fn load_system_account(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        kind: AccountKind,
    ) -> Result<Account, StoreError> {
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE org_id = $1 AND kind = $2"))
            .bind(org_id)
            .bind(kind.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        match row {
            Some(row) => account_from_row(&row),
            None => Err(invariant(format!(
                "organization {org_id} has no {} account",
                kind.as_str()
            ))),
        }
    }

    /// A lot by id with its account, inside the caller's transaction (unknown is a bug).
    async fn load_lot_in(
        connection: &mut <Self::Db as Database>::Connection,
        lot_id: &str,
    ) -> Result<LotView, StoreError> {
        sqlx::query(&format!("{LOT_SELECT} WHERE l.id = $1"))
            .bind(lot_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?
            .map(|row| lot_view_from_row(&row))
            .transpose()?
            .ok_or_else(|| invariant(format!("lot {lot_id} does not exist")))
    }

    /// Posts what a reversal recovers from a purchase's lot back to its organization's
    /// purchases account, inside the caller's write transaction (holding the organization
    /// where the backend locks it): the grant, run backwards.
    async fn reverse_lot_in(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        lot: &Lot,
        amount: NanoUsd,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let source =
            Self::load_system_account(&mut *connection, org_id, lot.kind.source_account_kind()).await?;
        let mut accounts = AccountSet::default();
        accounts.insert(lot.account);
        accounts.insert(source);
        accounts.transfer(lot.account.id, source.id, |debit, credit| {
            ledger::post(debit, credit, amount)
        })?;
        Self::append_journal(
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
        Self::write_accounts(&mut *connection, &accounts).await
    }
}
