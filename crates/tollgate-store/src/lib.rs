//! Durable state of tollgate: organizations, workspaces, keys, the credit ledger and usage
//! records, behind one façade, `Store`.
//!
//! Every ledger method is a transaction script: begin, load rows, ask tollgate-core what
//! changes, write the returned totals, commit. The store never decides an amount of money
//! itself and never computes one in SQL; the audit's sums are the only exception, because
//! they are the check. Signatures mention only core types and the rows in `model`: no sqlx
//! type crosses this boundary, so a PostgreSQL adapter can sit behind the same façade and
//! pass the same conformance suite (`tests/it`).
//!
//! Timestamps are stored with millisecond precision; whatever is finer is dropped on write.

mod error;
mod model;
mod sqlite;

use std::path::Path;

use tollgate_core::Timestamp;
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::InsufficientCredit;

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
    /// account (journal kind 'grant').
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

    /// Reserves `amount` across the org's lots in drawdown order, all or nothing. A
    /// non-positive amount is a caller bug (`StoreError::Invariant`).
    pub async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<Reservation, TxError<InsufficientCredit>> {
        self.sqlite.reserve(reservation).await
    }

    /// Ends a pending reservation exactly once: settled when the cost is positive (one
    /// 'usage' journal row per lot charged), voided when it is zero; the rest is released
    /// and the usage record written, all in one transaction. An already ended reservation
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
    /// kind 'expiry'), as the core's `expiry_amount` says. Returns how many lots moved.
    pub async fn expire_lots(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.sqlite.expire_lots(now).await
    }

    /// Recomputes every account's posted totals from the journal and its pending totals from
    /// the lines of open reservations, compares them with the stored totals, and checks that
    /// debits equal credits, posted and pending, per organization and overall. Also checks
    /// each lot against its grant, each reservation against its lines and each ended
    /// reservation against its usage transfers.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.sqlite.audit().await
    }
}
