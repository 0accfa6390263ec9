//! Durable state of tollgate: organizations, workspaces, keys, the credit ledger, usage
//! records, monthly spend counters, limits, purchases, auto-reload and the audit log, behind
//! one façade, `Store`.
//!
//! Every ledger method is a transaction script: begin, load rows, ask tollgate-core what
//! changes, write the returned totals, commit. The store never decides an amount of money
//! itself and never computes one in SQL; the audit's sums are the only exception, because
//! they are the check. Signatures mention only core types and the rows in `model`: no sqlx
//! type crosses this boundary, so a PostgreSQL adapter can sit behind the same façade and
//! pass the same conformance suite (`tests/it`).
//!
//! Timestamps are stored with millisecond precision; whatever is finer is dropped on write.

mod admin_model;
mod error;
mod model;
mod sqlite;

use std::path::Path;

use tollgate_core::Timestamp;
use tollgate_core::keys::KeyKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::MonthSpend;

pub use admin_model::*;
pub use error::{StoreError, TxError};
pub use model::*;

use crate::sqlite::SqliteStore;

/// The store: cheap to clone (it holds connection pools), safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    sqlite: SqliteStore,
}

impl Store {
    /// Opens (creating if missing) the SQLite database file at `path` and runs pending
    /// migrations. The parent directory must exist.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            sqlite: SqliteStore::open(path).await?,
        })
    }

    /// Closes every connection; calls made afterwards fail.
    pub async fn close(&self) {
        self.sqlite.close().await
    }

    // Organizations and workspaces.

    /// Creates the organization, its system accounts (starter_grants, promotional_grants,
    /// purchases, spend, expired) and its default workspace named "Default", in one
    /// transaction.
    pub async fn create_organization(
        &self,
        org_id: &str,
        name: &str,
        default_workspace_id: &str,
        now: Timestamp,
    ) -> Result<Organization, TxError<NameTaken>> {
        self.sqlite
            .create_organization(org_id, name, default_workspace_id, now)
            .await
    }

    pub async fn organization(&self, org_id: &str) -> Result<Option<Organization>, StoreError> {
        self.sqlite.organization(org_id).await
    }

    pub async fn organization_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        self.sqlite.organization_by_name(name).await
    }

    /// Oldest first.
    pub async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        self.sqlite.list_organizations().await
    }

    /// A workspace name is unique within its organization, archived workspaces included.
    pub async fn create_workspace(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Workspace, TxError<NameTaken>> {
        self.sqlite
            .create_workspace(org_id, workspace_id, name, now)
            .await
    }

    pub async fn workspace(&self, workspace_id: &str) -> Result<Option<Workspace>, StoreError> {
        self.sqlite.workspace(workspace_id).await
    }

    pub async fn workspace_by_name(&self, org_id: &str, name: &str) -> Result<Option<Workspace>, StoreError> {
        self.sqlite.workspace_by_name(org_id, name).await
    }

    /// The organization's workspaces, archived included: the default first, then by
    /// creation.
    pub async fn list_workspaces(&self, org_id: &str) -> Result<Vec<Workspace>, StoreError> {
        self.sqlite.list_workspaces(org_id).await
    }

    /// Every organization has one; an unknown organization is `StoreError::Invariant`.
    pub async fn default_workspace(&self, org_id: &str) -> Result<Workspace, StoreError> {
        self.sqlite.default_workspace(org_id).await
    }

    // Keys.

    /// Inserts an `Active` key. A duplicate id or secret hash is a `StoreError::Database`.
    pub async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        self.sqlite.insert_key(key).await
    }

    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.sqlite.key_by_hash(secret_hash).await
    }

    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.sqlite.key(key_id).await
    }

    /// Newest first. `workspace_id` None = all of the org's keys of that kind.
    pub async fn list_keys(
        &self,
        org_id: &str,
        kind: KeyKind,
        workspace_id: Option<&str>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.sqlite.list_keys(org_id, kind, workspace_id).await
    }

    /// Returns false if no such key.
    pub async fn set_key_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        self.sqlite.set_key_status(key_id, status).await
    }

    /// Records a use of the key; never moves `last_used_at` backwards.
    pub async fn touch_key(&self, key_id: &str, now: Timestamp) -> Result<(), StoreError> {
        self.sqlite.touch_key(key_id, now).await
    }

    // Credit.

    /// Posts `amount` from the org's source account for the lot's kind to a new lot
    /// account (journal kind 'grant') and logs it ("credit.granted", by `lot.actor`), in one
    /// transaction. A programme on a non-promotional lot is a caller bug
    /// (`StoreError::Invariant`).
    pub async fn grant_lot(&self, lot: NewLot) -> Result<LotView, TxError<GrantRejection>> {
        self.sqlite.grant_lot(lot).await
    }

    /// The organization's lots, oldest grant first.
    pub async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, StoreError> {
        self.sqlite.lots(org_id).await
    }

    /// `available` and `held` from the core's `credit_balance(lots, now)`; `spent` and
    /// `expired` are what the spend and expired accounts were credited; `granted` is the sum
    /// of the lots' amounts. An unknown organization is `StoreError::Invariant`.
    pub async fn balance(&self, org_id: &str, now: Timestamp) -> Result<BalanceView, StoreError> {
        self.sqlite.balance(org_id, now).await
    }

    /// Reserves `amount` across the org's lots in drawdown order, all or nothing. First,
    /// in the same transaction, the month's spend (of `created_at`'s month: the org's over
    /// all workspaces, and the reservation's workspace's) must leave room for `amount` under
    /// every limit in `spend_limits`, else `SpendLimitReached`; then the credit must cover
    /// it, else `InsufficientCredit`. A refusal writes nothing. On success the workspace's
    /// month counter holds `amount` until the reservation ends. A non-positive amount is a
    /// caller bug (`StoreError::Invariant`).
    pub async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<Reservation, TxError<ReserveRejection>> {
        self.sqlite.reserve(reservation).await
    }

    /// Ends a pending reservation exactly once: settled when the cost is positive (one
    /// 'usage' journal row per lot charged), voided when it is zero; the rest is released,
    /// the spend counter of the month the reservation was made in moves from held to
    /// settled, and the usage record is written, all in one transaction. An already ended reservation
    /// gives `already_ended: true` and writes nothing, not even the record. An unknown id,
    /// a negative cost or a record of another organization is `StoreError::Invariant`.
    pub async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        self.sqlite.settle(settlement).await
    }

    /// A usage record for a request that never reserved (refused, bad input after auth).
    pub async fn insert_usage_record(&self, record: UsageRecord) -> Result<(), StoreError> {
        self.sqlite.insert_usage_record(record).await
    }

    /// Oldest first, by when the request ended.
    pub async fn usage_records(&self, org_id: &str) -> Result<Vec<UsageRecord>, StoreError> {
        self.sqlite.usage_records(org_id).await
    }

    /// Voids every pending reservation whose deadline <= now, recording it as `Abandoned`
    /// with zero tokens and cost. Returns how many.
    pub async fn reap_reservations(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.sqlite.reap_reservations(now).await
    }

    /// Open reservations, of one organization or of all.
    pub async fn pending_reservation_count(&self, org_id: Option<&str>) -> Result<usize, StoreError> {
        self.sqlite.pending_reservation_count(org_id).await
    }

    /// Moves each expired lot's unreserved remainder to its org's expired account (journal
    /// kind 'expiry'), as the core's `expiry_amount` says, logging each ("credit.expired" by
    /// "system"). Returns how many lots moved.
    pub async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.sqlite.expire_lots(now).await
    }

    /// Recomputes every account's posted totals from the journal and its pending totals from
    /// the lines of open reservations, compares them with the stored totals, and checks that
    /// debits equal credits, posted and pending, per organization and overall. Also checks
    /// each lot against its grant, each reservation against its lines and each ended
    /// reservation against its usage transfers; each month's spend counters against the
    /// reservations made that month (held = open amounts, settled = charges); and each
    /// organization's cumulative purchases against its succeeded purchases and their lots.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.sqlite.audit().await
    }

    // Spend and limits.

    /// Spend in the calendar month (UTC) of `now`: settled charges plus open reservations of
    /// the reservations made that month, for the whole organization and for one workspace.
    pub async fn month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        now: Timestamp,
    ) -> Result<MonthSpend, StoreError> {
        self.sqlite.month_spend(org_id, workspace_id, now).await
    }

    /// What decides the organization's tier and limits; `None` if no such organization.
    pub async fn organization_billing(
        &self,
        org_id: &str,
        now: Timestamp,
    ) -> Result<Option<OrganizationBilling>, StoreError> {
        self.sqlite.organization_billing(org_id, now).await
    }

    /// Sets the org's own spend limit (None clears). Validation (against the tier cap) is
    /// the caller's; this writes and audits (action "limits.organization_spend_limit"): the
    /// caller's `audit` entry is recorded as given, in the same transaction. Returns whether
    /// the organization exists. An entry of another organization, or a non-positive limit,
    /// is a caller bug (`StoreError::Invariant`).
    pub async fn set_organization_spend_limit(
        &self,
        org_id: &str,
        limit: Option<NanoUsd>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.sqlite
            .set_organization_spend_limit(org_id, limit, audit)
            .await
    }

    /// Assigns a custom limit set by name (None returns the org to the ladder); audited
    /// ("limits.limit_set") with the caller's entry. Whether the name is configured is the
    /// caller's check. Returns whether the organization exists.
    pub async fn set_organization_limit_set(
        &self,
        org_id: &str,
        limit_set: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.sqlite
            .set_organization_limit_set(org_id, limit_set, audit)
            .await
    }

    /// The workspace's own limits; an unknown workspace has none.
    pub async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, StoreError> {
        self.sqlite.workspace_limits(workspace_id).await
    }

    /// Replaces the workspace's limits wholesale (validation is the caller's); audited
    /// ("limits.workspace") with the caller's entry, which must be filed under the
    /// workspace's organization. Returns whether the workspace exists. A zero limit is a
    /// caller bug (`StoreError::Invariant`).
    pub async fn set_workspace_limits(
        &self,
        workspace_id: &str,
        limits: &WorkspaceLimits,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.sqlite
            .set_workspace_limits(workspace_id, limits, audit)
            .await
    }

    // Purchases.

    /// Claims a purchase before the payment provider is charged, idempotent by (org, key):
    /// a new key inserts it `Pending` (`New`); a used key with the same amount returns the
    /// stored purchase and writes nothing (`Existing`); with another amount it is refused
    /// (`IdempotencyKeyReused`). A non-positive amount is a caller bug.
    pub async fn claim_purchase(
        &self,
        purchase: NewPurchase,
    ) -> Result<PurchaseClaim, TxError<IdempotencyKeyReused>> {
        self.sqlite.claim_purchase(purchase).await
    }

    /// Ends a Pending purchase exactly once (guarded by status='pending'). Succeeded: in ONE
    /// transaction mark succeeded, grant the lot (as `grant_lot` does, with its audit
    /// event), add the amount to the org's cumulative purchases (the tier advances with it,
    /// atomically), and log "credit.purchased". Declined/Failed: mark and log
    /// ("credit.purchase_declined"/"credit.purchase_failed", the reason as the entry's
    /// reason); no lot. Already ended → returned unchanged (idempotent). An unknown id, or a
    /// lot that is not a purchase lot of the purchase's org and amount, is
    /// `StoreError::Invariant`.
    pub async fn complete_purchase(
        &self,
        purchase_id: &str,
        outcome: PurchaseOutcome,
        actor: &str,
        now: Timestamp,
    ) -> Result<Purchase, StoreError> {
        self.sqlite
            .complete_purchase(purchase_id, outcome, actor, now)
            .await
    }

    /// Newest first.
    pub async fn purchases(&self, org_id: &str) -> Result<Vec<Purchase>, StoreError> {
        self.sqlite.purchases(org_id).await
    }

    pub async fn purchase_by_key(
        &self,
        org_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        self.sqlite.purchase_by_key(org_id, idempotency_key).await
    }

    // Auto-reload.

    pub async fn auto_reload(&self, org_id: &str) -> Result<Option<AutoReload>, StoreError> {
        self.sqlite.auto_reload(org_id).await
    }

    /// Upserts the settings (enabling clears a previous notice; a claim in flight is kept);
    /// audited ("autoreload.set") with the caller's entry. `settings.in_flight_since` and
    /// `notice` inputs are ignored.
    pub async fn set_auto_reload(
        &self,
        settings: &AutoReload,
        audit: AuditEntry,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.sqlite.set_auto_reload(settings, audit, now).await
    }

    /// Turns it off, recording `notice` (None clears it); audited ("autoreload.off") with the
    /// caller's entry. Returns false if none was set.
    pub async fn disable_auto_reload(
        &self,
        org_id: &str,
        notice: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        self.sqlite.disable_auto_reload(org_id, notice, audit).await
    }

    /// Atomically claims the org's reload: succeeds (Some, with `in_flight_since = now`) only
    /// if enabled and not in flight, or in flight since before `now - stale_after` (a crashed
    /// claimer). At most one claimer wins, across processes: the claim is taken under the
    /// database's write lock.
    pub async fn claim_auto_reload(
        &self,
        org_id: &str,
        now: Timestamp,
        stale_after: chrono::Duration,
    ) -> Result<Option<AutoReload>, StoreError> {
        self.sqlite.claim_auto_reload(org_id, now, stale_after).await
    }

    /// Releases the claim; with Some(notice) also disables auto-reload and records the
    /// notice (audited "autoreload.disabled" by "system", the notice as the reason).
    pub async fn finish_auto_reload(
        &self,
        org_id: &str,
        disable_with_notice: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.sqlite
            .finish_auto_reload(org_id, disable_with_notice, now)
            .await
    }

    // Audit log.

    /// Appends an entry as given.
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.sqlite.record_audit(entry).await
    }

    /// The organization's audit log, oldest first.
    pub async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        self.sqlite.audit_events(org_id).await
    }
}
