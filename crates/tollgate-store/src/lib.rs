//! Durable state of tollgate: organizations, workspaces, keys, the credit ledger, usage
//! records, monthly spend counters, limits, purchases, auto-reload, the audit log and Message
//! Batches, stored responses of the Responses API, the control plane's idempotency keys,
//! behind one façade, `Store`.
//!
//! Every ledger method is a transaction script: begin, load rows, ask tollgate-core what
//! changes, write the returned totals, commit. The store never decides an amount of money
//! itself and never computes one in SQL; the audit's sums are the only exception, because
//! they are the check. Signatures mention only core types and the rows in `model`: no sqlx
//! type crosses this boundary, so a PostgreSQL adapter can sit behind the same façade and
//! pass the same conformance suite (`tests/it`).
//!
//! Timestamps are stored with millisecond precision; whatever is finer is dropped on write.

/// Forwards a façade call to the adapter's method of the same name and arguments.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($argument:expr),* )) => {
        match &$self.engine {
            $crate::Engine::Sqlite(adapter) => adapter.$method($($argument),*).await,
            $crate::Engine::Postgres(adapter) => adapter.$method($($argument),*).await,
        }
    };
}

mod admin_model;
mod alerts;
mod audit_log;
mod batches;
mod batching;
mod book;
mod captures;
mod codec;
mod console;
mod deactivations;
mod device_grants;
mod dialect;
mod directory;
mod error;
mod files;
mod idempotency_keys;
mod journal;
mod ledger;
mod ledger_audit;
mod limits;
mod model;
mod payment_customers;
mod postgres;
mod purchases;
mod reports;
mod request_log;
mod rollup;
mod rows;
mod rules;
mod service_accounts;
mod sqlite;
mod sso;
mod sso_refresh;
mod stored_responses;

use std::path::Path;

use tollgate_core::Timestamp;
use tollgate_core::alerts::AlertKind;
use tollgate_core::keys::KeyKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::BucketWidth;
use tollgate_core::roles::OrgRole;
use tollgate_core::spend::MonthSpend;

pub use admin_model::*;
pub use alerts::{
    AlertChannel, AlertDelivery, AlertDestination, AlertSettings, AttemptRecord, DeliveryAttempt,
    DeliveryState, LeasedDelivery, NewAlert,
};
pub use batches::{
    BatchDeletion, BatchPage, BatchRequestCounts, BatchRequestState, BatchResult, BatchStatus,
    ClaimedBatchRequest, MessageBatch, NewBatchRequest, NewMessageBatch, UnrunBatchRequest,
};
pub use batching::ReservationCommit;
pub use captures::{CaptureSettings, CapturedResponseKind, RequestCapture};
pub use console::ConsoleSession;
pub use device_grants::DevicePoll;
pub use error::{StoreError, TxError};
pub use files::{DeletedFile, StoredFile};
pub use idempotency_keys::{ClaimOutcome, IdempotencyClaim, IdempotencyRecord, IdempotentAnswer};
pub use model::*;
pub use service_accounts::{ServiceAccountMembership, ServiceAccountRecord};
pub use sso::SsoAttempt;
pub use sso_refresh::SsoRefreshToken;
pub use stored_responses::StoredResponse;

pub use postgres::PostgresOptions;
pub use sqlite::SqliteOptions;
pub use sqlite::backup::SqliteBackup;

use crate::alerts::Alerts;
use crate::audit_log::AuditLog;
use crate::batches::Batches;
use crate::captures::Captures;
use crate::dialect::Dialect;
use crate::directory::Directory;
use crate::ledger::Ledger;
use crate::ledger_audit::LedgerAudit;
use crate::limits::Limits;
use crate::payment_customers::PaymentCustomers;
use crate::postgres::PgStore;
use crate::purchases::Purchases;
use crate::reports::Reports;
use crate::request_log::RequestLog;
use crate::sqlite::SqliteStore;
use crate::stored_responses::StoredResponses;

/// The store: cheap to clone (it holds connection pools), safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
}

/// The adapter behind the façade. Both pass the same conformance suite (`tests/it`).
#[derive(Clone)]
enum Engine {
    /// The embedded default: one file, one process writing money.
    Sqlite(SqliteStore),
    /// Shared by several replicas.
    Postgres(PgStore),
}

impl Store {
    /// Opens (creating if missing) the SQLite database file at `path` and runs pending
    /// migrations. The parent directory must exist.
    pub async fn open_sqlite(path: &Path, options: SqliteOptions) -> Result<Store, StoreError> {
        Ok(Store {
            engine: Engine::Sqlite(SqliteStore::open(path, options).await?),
        })
    }

    /// Connects to the PostgreSQL database at `options.url` (`postgres://…`) and runs
    /// pending migrations; several processes may do so at once (the migrator takes an
    /// advisory lock).
    pub async fn open_postgres(options: &PostgresOptions) -> Result<Store, StoreError> {
        Ok(Store {
            engine: Engine::Postgres(PgStore::open(options).await?),
        })
    }

    /// Which adapter this is: "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// How many times the hot path's writer dropped the book it keeps because another
    /// connection committed (SQLite; also the metric `tollgate_store_book_reloads_total`):
    /// each costs a reload, so a count that grows with traffic names a write that goes
    /// around the writer. Always 0 on PostgreSQL, whose book lasts one batch.
    pub fn book_reloads(&self) -> u64 {
        let reloads = match &self.engine {
            Engine::Sqlite(adapter) => adapter.hot_writer().book_reloads(),
            Engine::Postgres(adapter) => adapter.hot_writer().book_reloads(),
        };
        reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every connection; calls made afterwards fail.
    pub async fn close(&self) {
        dispatch!(self.close())
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
        dispatch!(self.create_organization(org_id, name, default_workspace_id, now))
    }

    pub async fn organization(&self, org_id: &str) -> Result<Option<Organization>, StoreError> {
        dispatch!(self.organization(org_id))
    }

    pub async fn organization_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        dispatch!(self.organization_by_name(name))
    }

    /// Oldest first.
    pub async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        dispatch!(self.list_organizations())
    }

    /// A workspace name is unique within its organization, archived workspaces included.
    pub async fn create_workspace(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Workspace, TxError<NameTaken>> {
        dispatch!(self.create_workspace(org_id, workspace_id, name, now))
    }

    pub async fn workspace(&self, workspace_id: &str) -> Result<Option<Workspace>, StoreError> {
        dispatch!(self.workspace(workspace_id))
    }

    pub async fn workspace_by_name(&self, org_id: &str, name: &str) -> Result<Option<Workspace>, StoreError> {
        dispatch!(self.workspace_by_name(org_id, name))
    }

    /// The organization's workspaces, archived included: the default first, then by
    /// creation.
    pub async fn list_workspaces(&self, org_id: &str) -> Result<Vec<Workspace>, StoreError> {
        dispatch!(self.list_workspaces(org_id))
    }

    /// Every organization has one; an unknown organization is `StoreError::Invariant`.
    pub async fn default_workspace(&self, org_id: &str) -> Result<Workspace, StoreError> {
        dispatch!(self.default_workspace(org_id))
    }

    // Keys.

    /// Inserts an `Active` key. A duplicate id or secret hash is a `StoreError::Database`.
    pub async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        dispatch!(self.insert_key(key))
    }

    pub async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        dispatch!(self.key_by_hash(secret_hash))
    }

    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        dispatch!(self.key(key_id))
    }

    /// Newest first. `workspace_id` None = all of the org's keys of that kind.
    pub async fn list_keys(
        &self,
        org_id: &str,
        kind: KeyKind,
        workspace_id: Option<&str>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.list_keys(org_id, kind, workspace_id))
    }

    /// Returns false if no such key.
    pub async fn set_key_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        dispatch!(self.set_key_status(key_id, status))
    }

    /// Records a use of the key; never moves `last_used_at` backwards.
    pub async fn touch_key(&self, key_id: &str, now: Timestamp) -> Result<(), StoreError> {
        dispatch!(self.touch_key(key_id, now))
    }

    /// Rewrites the one row of `health_checks` and commits: whether the database takes
    /// writes now (for readiness checks).
    pub async fn record_health_check(&self, now: Timestamp) -> Result<(), StoreError> {
        dispatch!(self.record_health_check(now))
    }

    // Credit.

    /// Posts `amount` from the org's source account for the lot's kind to a new lot
    /// account (journal kind 'grant') and logs it ("credit.granted", by `lot.actor`), in one
    /// transaction. A programme on a non-promotional lot is a caller bug
    /// (`StoreError::Invariant`).
    pub async fn grant_lot(&self, lot: NewLot) -> Result<LotView, TxError<GrantRejection>> {
        dispatch!(self.grant_lot(lot))
    }

    /// The organization's lots, oldest grant first.
    pub async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, StoreError> {
        dispatch!(self.lots(org_id))
    }

    /// `available` and `held` from the core's `credit_balance(lots, now)`; `spent` and
    /// `expired` are what the spend and expired accounts were credited; `granted` is the sum
    /// of the lots' amounts. An unknown organization is `StoreError::Invariant`.
    pub async fn balance(&self, org_id: &str, now: Timestamp) -> Result<BalanceView, StoreError> {
        dispatch!(self.balance(org_id, now))
    }

    /// Reserves `amount` across the org's lots in drawdown order, all or nothing. First,
    /// in the same transaction, the month's spend (of `created_at`'s month: the org's over
    /// all workspaces, the reservation's workspace's, and its user's there) must leave room
    /// for `amount` under every limit in `spend_limits`, else `SpendLimitReached`; then the
    /// credit must cover it, else `InsufficientCredit`. A refusal writes nothing. On success
    /// the workspace's month counter (and its user's, if it has one) holds `amount` until
    /// the reservation ends. A non-positive amount is a caller bug (`StoreError::Invariant`).
    pub async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<Reservation, TxError<ReserveRejection>> {
        let (reserved, commit) = self.reserve_decided(reservation).await?;
        commit.committed().await?;
        Ok(reserved)
    }

    /// [`Store::reserve`], answered as soon as the writer's book has decided it, before its
    /// batch commits: the caller may start its upstream call at once, and awaits
    /// [`ReservationCommit::committed`] before anything reaches its client or it settles.
    /// If the batch then fails, the reservation runs again alone, and `committed` gives its
    /// own outcome (a refusal, or an error): there is then nothing to settle. A refusal
    /// decided at once is answered here, after its batch.
    ///
    /// A reservation that asks for it (`NewReservation::written_at_settlement`) may be held
    /// in the writer's book only (SQLite; `Reservation::held_in_memory`): its credit counts
    /// against every later admission at once, and its settlement writes it and ends it in
    /// one commit. If that settlement cannot be written, the hold is released and nothing
    /// is charged (`StoreError::Released`). Balances and lots show the hold meanwhile, as they show a written one.
    pub async fn reserve_decided(
        &self,
        reservation: NewReservation,
    ) -> Result<(Reservation, ReservationCommit), TxError<ReserveRejection>> {
        dispatch!(self.reserve(reservation))
    }

    /// Ends a pending reservation exactly once: settled when the cost is positive (one
    /// 'usage' journal row per lot charged), voided when it is zero; the rest is released,
    /// the spend counter of the month the reservation was made in (and its user's, if it
    /// has one) moves from held to settled, and the usage record is written, all in one
    /// transaction. An already ended reservation gives `already_ended: true` and writes
    /// nothing, not even the record. An unknown id, a negative cost or a record of another
    /// organization is `StoreError::Invariant`.
    pub async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        dispatch!(self.settle(settlement))
    }

    /// A usage record for a request that never reserved (refused, bad input after auth).
    pub async fn insert_usage_record(&self, record: UsageRecord) -> Result<(), StoreError> {
        dispatch!(self.insert_usage_record(record))
    }

    /// Oldest first, by when the request ended.
    pub async fn usage_records(&self, org_id: &str) -> Result<Vec<UsageRecord>, StoreError> {
        dispatch!(self.usage_records(org_id))
    }

    /// The organization's record of the request `request_id`, once it has ended.
    pub async fn usage_record(
        &self,
        org_id: &str,
        request_id: &str,
    ) -> Result<Option<UsageRecord>, StoreError> {
        dispatch!(self.usage_record(org_id, request_id))
    }

    /// Voids every pending reservation whose deadline <= now, recording it as `Abandoned`
    /// with zero tokens and cost. Returns how many.
    pub async fn reap_reservations(&self, now: Timestamp) -> Result<usize, StoreError> {
        dispatch!(self.reap_reservations(now))
    }

    /// Moves the deadline of each pending reservation in `reservation_ids` to `deadline`
    /// (never earlier than it was): the heartbeat of requests still running, so the reaper
    /// leaves their reservations alone. Returns how many moved.
    pub async fn extend_reservations(
        &self,
        reservation_ids: &[String],
        deadline: Timestamp,
    ) -> Result<usize, StoreError> {
        if reservation_ids.is_empty() {
            return Ok(0);
        }
        dispatch!(self.extend_reservations(reservation_ids, deadline))
    }

    /// Open reservations, of one organization or of all.
    pub async fn pending_reservation_count(&self, org_id: Option<&str>) -> Result<usize, StoreError> {
        dispatch!(self.pending_reservation_count(org_id))
    }

    /// Moves each expired lot's unreserved remainder to its org's expired account (journal
    /// kind 'expiry'), as the core's `expiry_amount` says, logging each ("credit.expired" by
    /// "system"). Returns how many lots moved.
    pub async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        dispatch!(self.expire_lots(now))
    }

    /// Recomputes every account's posted totals from the journal and its pending totals from
    /// the lines of open reservations, compares them with the stored totals, and checks that
    /// debits equal credits, posted and pending, per organization and overall. Also checks
    /// each lot against its grant, each reservation against its lines and each ended
    /// reservation against its usage transfers and its one usage record (an open one has
    /// none); each month's spend counters against the
    /// reservations made that month (held = open amounts, settled = charges); and each
    /// organization's cumulative purchases against its succeeded purchases and their lots.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        dispatch!(self.audit())
    }

    /// The operator's ledger check (`tollgate ledger check`): the `audit`, then the usage
    /// rollup against the usage records (`usage_rollup_problems`), in one report.
    pub async fn check_ledger(&self) -> Result<AuditReport, StoreError> {
        let mut report = self.audit().await?;
        report.problems.extend(self.usage_rollup_problems().await?);
        Ok(report)
    }

    /// Copies the SQLite database file `database` to `destination` with SQLite's online
    /// backup, while a server may keep writing it: one consistent snapshot, written beside
    /// `destination` and renamed into place once complete, checked and synced. It blocks;
    /// call it from a blocking thread. PostgreSQL has `pg_dump` instead.
    pub fn backup_sqlite(database: &Path, destination: &Path) -> Result<SqliteBackup, StoreError> {
        sqlite::backup::backup(database, destination)
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
        dispatch!(self.month_spend(org_id, workspace_id, now))
    }

    /// A user's spend in a workspace in the calendar month (UTC) of `now`: settled charges
    /// plus open reservations of the reservations their keys made there that month.
    pub async fn user_month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        dispatch!(self.user_month_spend(org_id, workspace_id, user_id, now))
    }

    /// What decides the organization's tier and limits; `None` if no such organization.
    pub async fn organization_billing(
        &self,
        org_id: &str,
        now: Timestamp,
    ) -> Result<Option<OrganizationBilling>, StoreError> {
        dispatch!(self.organization_billing(org_id, now))
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
        dispatch!(self.set_organization_spend_limit(org_id, limit, audit))
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
        dispatch!(self.set_organization_limit_set(org_id, limit_set, audit))
    }

    /// The workspace's own limits; an unknown workspace has none.
    pub async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, StoreError> {
        dispatch!(self.workspace_limits(workspace_id))
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
        dispatch!(self.set_workspace_limits(workspace_id, limits, audit))
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
        dispatch!(self.claim_purchase(purchase))
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
        dispatch!(self.complete_purchase(purchase_id, outcome, actor, now))
    }

    /// Applies a payment provider's event to a pending purchase, at most once per event id:
    /// the event's id is recorded in the same transaction as its effect, so a redelivered
    /// event (even concurrently) returns `None` and changes nothing. `Complete` ends the
    /// purchase as `complete_purchase` does (an already-ended purchase stays as it ended);
    /// `AttemptFailed` records the reason on a still-pending purchase. `Reverse` takes back
    /// part of a paid purchase (a refund or lost dispute) as `tollgate_core::refunds` plans
    /// it: from its lot what is still there, the rest recorded unrecovered, and cumulative
    /// purchases down by the amount reversed; the purchase must have succeeded.
    pub async fn complete_purchase_on_event(
        &self,
        event: &PaymentEvent,
        purchase_id: &str,
        effect: PaymentEventEffect,
        actor: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        dispatch!(self.complete_purchase_on_event(event, purchase_id, effect, actor))
    }

    pub async fn purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError> {
        dispatch!(self.purchase(purchase_id))
    }

    /// The purchase the provider's payment `reference` paid, if any.
    pub async fn purchase_by_payment_reference(
        &self,
        reference: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        dispatch!(self.purchase_by_payment_reference(reference))
    }

    /// A purchase's refunds and lost disputes, oldest first.
    pub async fn purchase_reversals(&self, purchase_id: &str) -> Result<Vec<PurchaseReversal>, StoreError> {
        dispatch!(self.purchase_reversals(purchase_id))
    }

    /// The organization's customer at the payment provider, if one was made.
    pub async fn payment_customer(&self, org_id: &str) -> Result<Option<PaymentCustomer>, StoreError> {
        dispatch!(self.payment_customer(org_id))
    }

    /// Records the organization's customer; `payment_method_id: None` keeps the saved one.
    pub async fn save_payment_customer(
        &self,
        customer: &PaymentCustomer,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.save_payment_customer(customer, now))
    }

    /// Newest first.
    pub async fn purchases(&self, org_id: &str) -> Result<Vec<Purchase>, StoreError> {
        dispatch!(self.purchases(org_id))
    }

    pub async fn purchase_by_key(
        &self,
        org_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        dispatch!(self.purchase_by_key(org_id, idempotency_key))
    }

    // Auto-reload.

    pub async fn auto_reload(&self, org_id: &str) -> Result<Option<AutoReload>, StoreError> {
        dispatch!(self.auto_reload(org_id))
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
        dispatch!(self.set_auto_reload(settings, audit, now))
    }

    /// Turns it off, recording `notice` (None clears it); audited ("autoreload.off") with the
    /// caller's entry. Returns false if none was set.
    pub async fn disable_auto_reload(
        &self,
        org_id: &str,
        notice: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self.disable_auto_reload(org_id, notice, audit))
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
        dispatch!(self.claim_auto_reload(org_id, now, stale_after))
    }

    /// Releases the claim; with Some(notice) also disables auto-reload and records the
    /// notice (audited "autoreload.disabled" by "system", the notice as the reason).
    pub async fn finish_auto_reload(
        &self,
        org_id: &str,
        disable_with_notice: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.finish_auto_reload(org_id, disable_with_notice, now))
    }

    // Audit log.

    /// Appends an entry as given.
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        dispatch!(self.record_audit(entry))
    }

    /// The organization's audit log, oldest first.
    pub async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self.audit_events(org_id))
    }
}

/// The façade over the directory queries.
impl Store {
    /// Inserts an `Active` key recording who created it.
    pub async fn insert_key_by(&self, key: NewKey, created_by: &CreatedBy) -> Result<KeyView, StoreError> {
        dispatch!(self.insert_key_by(key, created_by))
    }

    pub async fn key_view(&self, key_id: &str) -> Result<Option<KeyView>, StoreError> {
        dispatch!(self.key_view(key_id))
    }

    /// The organization's keys of `kind`, newest first.
    pub async fn key_views(&self, org_id: &str, kind: KeyKind) -> Result<Vec<KeyView>, StoreError> {
        dispatch!(self.key_views(org_id, kind))
    }

    /// Returns false if no such key.
    pub async fn rename_key(&self, key_id: &str, name: &str) -> Result<bool, StoreError> {
        dispatch!(self.rename_key(key_id, name))
    }

    pub async fn set_key_allowed_models(
        &self,
        key_id: &str,
        allowed_models: &tollgate_core::keys::AllowedModels,
    ) -> Result<bool, StoreError> {
        dispatch!(self.set_key_allowed_models(key_id, allowed_models))
    }

    /// Creates a workspace unless the name is taken (archived workspaces included) or the
    /// organization already has `max_active` active workspaces besides its Default.
    pub async fn create_workspace_capped(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
        max_active: usize,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        dispatch!(self.create_workspace_capped(org_id, workspace_id, name, now, max_active))
    }

    /// Renames an active workspace; the name stays unique within its organization.
    pub async fn rename_workspace(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        dispatch!(self.rename_workspace(workspace_id, name))
    }

    /// Archives an active workspace and archives every key in it, audited with the caller's
    /// entry (which must be filed under the workspace's organization), in one transaction.
    /// Returns the workspace and how many keys were archived.
    pub async fn archive_workspace(
        &self,
        workspace_id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(Workspace, u64), TxError<WorkspaceRejection>> {
        dispatch!(self.archive_workspace(workspace_id, now, audit))
    }

    /// Adds a user unless the email is already a member of the organization.
    pub async fn insert_user(&self, user: &UserRecord) -> Result<UserRecord, TxError<DirectoryRejection>> {
        dispatch!(self.insert_user(user))
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        dispatch!(self.user(user_id))
    }

    /// Oldest first.
    pub async fn users(&self, org_id: &str) -> Result<Vec<UserRecord>, StoreError> {
        dispatch!(self.users(org_id))
    }

    pub async fn set_user_role(&self, user_id: &str, role: OrgRole) -> Result<bool, StoreError> {
        dispatch!(self.set_user_role(user_id, role))
    }

    /// Removes the user and their workspace memberships, and archives their personal keys in
    /// the same transaction (each process stops accepting them within its key-cache TTL);
    /// keys they created stay.
    pub async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_user(user_id))
    }

    /// Invites an email unless it is a member already or has an unexpired pending invite.
    pub async fn insert_invite(
        &self,
        invite: &InviteRecord,
    ) -> Result<InviteRecord, TxError<DirectoryRejection>> {
        dispatch!(self.insert_invite(invite))
    }

    pub async fn invite(&self, invite_id: &str) -> Result<Option<InviteRecord>, StoreError> {
        dispatch!(self.invite(invite_id))
    }

    /// Oldest first.
    pub async fn invites(&self, org_id: &str) -> Result<Vec<InviteRecord>, StoreError> {
        dispatch!(self.invites(org_id))
    }

    pub async fn delete_invite(&self, invite_id: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_invite(invite_id))
    }

    /// Marks a pending, unexpired invite for `user.email` accepted and adds `user`, in one
    /// transaction.
    pub async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        dispatch!(self.accept_invite(invite_id, user))
    }

    /// Adds the member or changes their role. A user or workspace outside `org_id` is a
    /// `StoreError::Database` (foreign key), never a cross-tenant membership.
    pub async fn set_member(&self, org_id: &str, member: &MemberRecord) -> Result<MemberRecord, StoreError> {
        dispatch!(self.set_member(org_id, member))
    }

    pub async fn member(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<Option<MemberRecord>, StoreError> {
        dispatch!(self.member(workspace_id, user_id))
    }

    /// Explicit members, oldest first.
    pub async fn members(&self, workspace_id: &str) -> Result<Vec<MemberRecord>, StoreError> {
        dispatch!(self.members(workspace_id))
    }

    pub async fn delete_member(&self, workspace_id: &str, user_id: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_member(workspace_id, user_id))
    }
}

/// The façade over the report queries.
impl Store {
    /// Charged usage by hour (of the request's end) in `[from, to)`, one row per hour,
    /// workspace, key, model and context window, oldest first. `from` and `to` should be
    /// on hour boundaries.
    pub async fn usage_hourly(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        dispatch!(self.usage_hourly(org_id, from, to))
    }

    /// The same by minute, read from the usage records themselves (windows of a day at
    /// most, which the records' (org, ended_at) index serves).
    pub async fn usage_by_minute(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        dispatch!(self.usage_by_minute(org_id, from, to))
    }

    /// Charged usage by client session, read from the usage records themselves (the
    /// hourly rollup has no session dimension): one row per bucket of `width`, workspace,
    /// key, model, context window and session (`None` for requests sent without one), in
    /// `[from, to)`. A non-empty `session_ids` keeps only those sessions.
    /// A page of the organization's request log: its usage records matching `query`,
    /// newest first (`request_log.rs`).
    pub async fn request_log(
        &self,
        org_id: &str,
        query: &RequestLogQuery,
    ) -> Result<Vec<RequestLogEntry>, StoreError> {
        dispatch!(self.request_log(org_id, query))
    }

    pub async fn usage_by_session(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
        width: BucketWidth,
        session_ids: &[String],
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        dispatch!(self.usage_by_session(org_id, from, to, width, session_ids))
    }

    /// What the ledger posted to the organization's spend account for usage in
    /// `[from, to)`: the figure a cost report of the same window must equal.
    pub async fn settled_charges(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        dispatch!(self.settled_charges(org_id, from, to))
    }

    /// Recomputes the hourly rollup from the usage records and the reservations' charges;
    /// each disagreement is a problem. Empty means the reports read the truth.
    pub async fn usage_rollup_problems(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self.usage_rollup_problems())
    }
}

/// The façade over Message Batches (`batches.rs`). Their money is reserved and ended
/// through `reserve` and `settle`, like any request's; these methods keep the batches.
impl Store {
    /// Inserts the batch and its requests (in that order) in one transaction.
    pub async fn insert_message_batch(
        &self,
        batch: &NewMessageBatch,
        requests: &[NewBatchRequest],
    ) -> Result<(), StoreError> {
        dispatch!(self.insert_message_batch(batch, requests))
    }

    /// The workspace's batch with its request counts; another workspace's is `None`.
    pub async fn message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<Option<MessageBatch>, StoreError> {
        dispatch!(self.message_batch(workspace_id, batch_id))
    }

    /// Up to `limit` of the workspace's batches on `page`, newest first.
    pub async fn message_batches(
        &self,
        workspace_id: &str,
        page: &BatchPage,
        limit: u64,
    ) -> Result<Vec<MessageBatch>, StoreError> {
        dispatch!(self.message_batches(workspace_id, page, limit))
    }

    /// Starts canceling an in-progress batch and cancels its requests no runner holds a
    /// live claim on, returning those (their reservations are the caller's to void).
    /// `None` if the workspace has no such batch.
    pub async fn cancel_message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<UnrunBatchRequest>>, StoreError> {
        dispatch!(self.cancel_message_batch(workspace_id, batch_id, now))
    }

    /// Expires the unclaimed pending requests of unended batches past their expiry,
    /// returning them (their reservations are the caller's to void).
    pub async fn expire_message_batches(&self, now: Timestamp) -> Result<Vec<UnrunBatchRequest>, StoreError> {
        dispatch!(self.expire_message_batches(now))
    }

    /// Claims for `owner` until `lease_until` up to `limit` pending requests that no runner
    /// holds a live claim on, of in-progress batches not yet expired at `now`.
    pub async fn claim_batch_requests(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u64,
    ) -> Result<Vec<ClaimedBatchRequest>, StoreError> {
        dispatch!(self.claim_batch_requests(owner, now, lease_until, limit))
    }

    /// Claims for `owner` until `lease_until` the pending requests of one batch that go to
    /// one provider's own Batches API, when no runner holds a live claim on them; empty
    /// when there is none.
    pub async fn claim_upstream_batch_requests(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<ClaimedBatchRequest>, StoreError> {
        dispatch!(self.claim_upstream_batch_requests(owner, now, lease_until))
    }

    /// Writes the provider batch a claimed request went into, while `attempt` is still its
    /// claim; whether it was written.
    pub async fn record_upstream_batch(
        &self,
        request_id: &str,
        attempt: u64,
        upstream_batch_id: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self.record_upstream_batch(request_id, attempt, upstream_batch_id))
    }

    /// Moves the lease of `owner`'s live claims on these requests; how many it still holds.
    pub async fn extend_batch_claims(
        &self,
        owner: &str,
        request_ids: &[String],
        lease_until: Timestamp,
    ) -> Result<usize, StoreError> {
        if request_ids.is_empty() {
            return Ok(0);
        }
        dispatch!(self.extend_batch_claims(owner, request_ids, lease_until))
    }

    /// Ends a pending request with its result (then its batch, if nothing is left
    /// pending) while `attempt` is still its claim; false if it had ended already or
    /// another claim holds it.
    pub async fn end_batch_request(
        &self,
        request_id: &str,
        attempt: u64,
        state: BatchRequestState,
        result: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.end_batch_request(request_id, attempt, state, result, now))
    }

    /// Whether the claim `attempt` on the request is still its claim (none re-claimed it);
    /// if so, its lease moves to `lease_until` (the fence before its settlement).
    pub async fn fence_batch_claim(
        &self,
        request_id: &str,
        attempt: u64,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.fence_batch_claim(request_id, attempt, lease_until))
    }

    /// Marks ended every unended batch with no request left pending; how many.
    pub async fn end_finished_batches(&self, now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.end_finished_batches(None, now))
    }

    /// The batch's results in request order; `None` if the workspace has no such batch.
    pub async fn message_batch_results(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<Option<Vec<BatchResult>>, StoreError> {
        dispatch!(self.message_batch_results(workspace_id, batch_id))
    }

    /// Deletes an ended batch of the workspace with its requests.
    pub async fn delete_message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<BatchDeletion, StoreError> {
        dispatch!(self.delete_message_batch(workspace_id, batch_id))
    }

    /// Deletes the params and results of batches ended at or before `ended_by`, marking
    /// them archived at `now`; how many batches.
    pub async fn archive_message_batches(
        &self,
        ended_by: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        dispatch!(self.archive_message_batches(ended_by, now))
    }
}

/// The façade over stored responses of the Responses API (`stored_responses.rs`): kept per
/// workspace until they expire; an expired one is as absent as a deleted one.
impl Store {
    pub async fn insert_stored_response(&self, response: StoredResponse) -> Result<(), StoreError> {
        dispatch!(self.insert_stored_response(response))
    }

    /// The workspace's unexpired response; another workspace's is `None`.
    pub async fn stored_response(
        &self,
        workspace_id: &str,
        response_id: &str,
        now: Timestamp,
    ) -> Result<Option<StoredResponse>, StoreError> {
        dispatch!(self.stored_response(workspace_id, response_id, now))
    }

    /// Deletes the workspace's unexpired response; whether there was one.
    pub async fn delete_stored_response(
        &self,
        workspace_id: &str,
        response_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.delete_stored_response(workspace_id, response_id, now))
    }

    /// Deletes the responses expired at `now`; how many.
    pub async fn delete_expired_responses(&self, now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.delete_expired_responses(now))
    }
}

/// The façade over captured bodies (`captures.rs`): a workspace's capture settings and the
/// captures kept, read only within their organization.
impl Store {
    /// The workspace's capture settings; `None` captures nothing (the default).
    pub async fn capture_settings(&self, workspace_id: &str) -> Result<Option<CaptureSettings>, StoreError> {
        dispatch!(self.capture_settings(workspace_id))
    }

    /// Turns the workspace's capture on (or changes it) or off, audited with `audit` in
    /// the same transaction. The workspace must belong to `org_id` (the caller checked).
    pub async fn set_capture_settings(
        &self,
        org_id: &str,
        workspace_id: &str,
        settings: Option<&CaptureSettings>,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        dispatch!(self.set_capture_settings(org_id, workspace_id, settings, now, audit))
    }

    /// Keeps a capture, already redacted and cut to its cap.
    pub async fn insert_capture(&self, capture: &RequestCapture) -> Result<(), StoreError> {
        dispatch!(self.insert_capture(capture))
    }

    /// The organization's capture of the request; another organization's is `None`.
    pub async fn request_capture(
        &self,
        org_id: &str,
        request_id: &str,
    ) -> Result<Option<RequestCapture>, StoreError> {
        dispatch!(self.request_capture(org_id, request_id))
    }

    /// Deletes the captures past their retention at `now`; how many.
    pub async fn purge_captures(&self, now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.purge_captures(now))
    }
}

/// The façade over alerts (`alerts.rs`): destinations, thresholds, the claims that make an
/// alert fire once per crossing, and the deliveries' outbox.
impl Store {
    pub async fn insert_alert_destination(&self, destination: &AlertDestination) -> Result<(), StoreError> {
        dispatch!(self.insert_alert_destination(destination))
    }

    /// The organization's destinations, oldest first.
    pub async fn alert_destinations(&self, org_id: &str) -> Result<Vec<AlertDestination>, StoreError> {
        dispatch!(self.alert_destinations(org_id))
    }

    /// Whether the organization had that destination.
    pub async fn delete_alert_destination(
        &self,
        org_id: &str,
        destination_id: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self.delete_alert_destination(org_id, destination_id))
    }

    /// Sets the kinds a destination receives (`None`: every kind); `None` if the
    /// organization has no such destination.
    pub async fn set_alert_destination_kinds(
        &self,
        org_id: &str,
        destination_id: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<Option<AlertDestination>, StoreError> {
        dispatch!(self.set_alert_destination_kinds(org_id, destination_id, kinds))
    }

    /// `None` until the organization sets its thresholds.
    pub async fn alert_settings(&self, org_id: &str) -> Result<Option<AlertSettings>, StoreError> {
        dispatch!(self.alert_settings(org_id))
    }

    pub async fn set_alert_settings(
        &self,
        org_id: &str,
        settings: AlertSettings,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.set_alert_settings(org_id, settings, now))
    }

    /// Claims the alert and queues its deliveries if the claim is new: how many were
    /// queued, or `None` when the alert had fired already.
    pub async fn fire_alert(&self, alert: &NewAlert) -> Result<Option<u64>, StoreError> {
        dispatch!(self.fire_alert(alert))
    }

    /// Re-arms the organization's alerts of `kind`; how many claims were cleared.
    pub async fn rearm_alerts(&self, org_id: &str, kind: &str) -> Result<u64, StoreError> {
        dispatch!(self.rearm_alerts(org_id, kind))
    }

    /// Re-arms every organization's alert of `kind` on `subject`; how many claims were
    /// cleared.
    pub async fn rearm_alert_subject(&self, kind: &str, subject: &str) -> Result<u64, StoreError> {
        dispatch!(self.rearm_alert_subject(kind, subject))
    }

    /// The subjects of the standing claims of `kind`, each once.
    pub async fn alert_subjects(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self.alert_subjects(kind))
    }

    /// The organizations with charged requests for one of `models` since about `since`
    /// (by the hour), each once.
    pub async fn orgs_using_models(
        &self,
        models: &[String],
        since: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self.orgs_using_models(models, since))
    }

    /// Leases up to `limit` due deliveries to `owner` until `lease_until`.
    pub async fn lease_alert_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u64,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        dispatch!(self.lease_alert_deliveries(owner, now, lease_until, limit))
    }

    /// Records an attempt if its loop still holds the lease; whether it did.
    pub async fn record_alert_attempt(&self, record: &AttemptRecord) -> Result<bool, StoreError> {
        dispatch!(self.record_alert_attempt(record))
    }

    /// Active keys expiring after `now` and at or before `until`, soonest first.
    pub async fn keys_expiring(
        &self,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.keys_expiring(now, until))
    }

    /// The organization's newest `limit` deliveries with their attempts.
    pub async fn alert_deliveries(&self, org_id: &str, limit: u64) -> Result<Vec<AlertDelivery>, StoreError> {
        dispatch!(self.alert_deliveries(org_id, limit))
    }
}
