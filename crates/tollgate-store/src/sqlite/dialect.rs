//! SQLite's side of `Dialect`: reads go to the `query_only` readers, writes to the one
//! writer connection, a list of texts is spelled out one placeholder per text, and the
//! write lock a write transaction holds from its first statement stands in for every row
//! lock.

use std::time::Duration;

use sqlx::query::Query;
use sqlx::{Pool, Sqlite, SqliteConnection};

use crate::alerts::Alerts;
use crate::audit_log::AuditLog;
use crate::batches::Batches;
use crate::batching::WriterQueue;
use crate::captures::Captures;
use crate::console::ConsoleSignIn;
use crate::deactivations::Deactivations;
use crate::device_grants::DeviceGrants;
use crate::dialect::{BoundArguments, Dialect};
use crate::directory::Directory;
use crate::error::StoreError;
use crate::files::Files;
use crate::idempotency_keys::IdempotencyKeys;
use crate::ledger_audit::LedgerAudit;
use crate::limits::Limits;
use crate::payment_customers::PaymentCustomers;
use crate::purchases::Purchases;
use crate::reports::Reports;
use crate::request_log::RequestLog;
use crate::service_accounts::ServiceAccounts;
use crate::sqlite::{SqliteStore, SqliteTransaction, store_error};
use crate::sso::SsoAttempts;
use crate::sso_refresh::SsoRefreshTokens;
use crate::stored_responses::StoredResponses;

impl Dialect for SqliteStore {
    type Db = Sqlite;

    fn read_pool(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn write_pool(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    fn hot_writer(&self) -> &WriterQueue {
        &self.hot
    }

    async fn begin_read(&self) -> Result<SqliteTransaction, StoreError> {
        SqliteStore::begin_read(self).await
    }

    async fn begin_write(&self) -> Result<SqliteTransaction, StoreError> {
        SqliteStore::begin_write(self).await
    }

    fn busy_pause(_attempt: u32) -> Option<Duration> {
        None
    }

    /// Nothing to lock (`begin_write`'s `BEGIN IMMEDIATE` holds the whole database): only
    /// whether the organization exists.
    async fn lock_organization(connection: &mut SqliteConnection, org_id: &str) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)?;
        Ok(found.is_some())
    }

    async fn lock_organization_of_workspace(
        connection: &mut SqliteConnection,
        workspace_id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT org_id FROM workspaces WHERE id = $1")
            .bind(workspace_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)
    }

    async fn lock_organization_of_purchase(
        connection: &mut SqliteConnection,
        purchase_id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT org_id FROM purchases WHERE id = $1")
            .bind(purchase_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)
    }

    fn store_error(error: sqlx::Error) -> StoreError {
        store_error(error)
    }

    /// `$first, $first+1, …`: SQLite has no arrays. Nothing at all for no texts.
    fn and_any_of(column: &str, first: usize, count: usize) -> String {
        if count == 0 {
            return String::new();
        }
        let placeholders: Vec<String> = (first..first + count)
            .map(|number| format!("${number}"))
            .collect();
        format!(" AND {column} IN ({})", placeholders.join(", "))
    }

    /// `<column> IN ($first, $first+1, …)`: SQLite has no arrays.
    fn any_of(column: &str, first: usize, count: usize) -> String {
        let placeholders: Vec<String> = (first..first + count)
            .map(|number| format!("${number}"))
            .collect();
        format!("{column} IN ({})", placeholders.join(", "))
    }

    /// Well below SQLite's bound on a statement's parameters.
    fn texts_per_statement() -> usize {
        500
    }

    fn skip_locked() -> &'static str {
        ""
    }

    fn for_update() -> &'static str {
        ""
    }

    fn insertion_order() -> &'static str {
        "rowid"
    }

    fn month_of_millis(column: &str) -> String {
        format!("CAST(strftime('%Y%m', {column} / 1000, 'unixepoch') AS INTEGER)")
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn bind_any_of<'q>(
        query: Query<'q, Sqlite, BoundArguments<'q, Sqlite>>,
        texts: &'q [String],
    ) -> Query<'q, Sqlite, BoundArguments<'q, Sqlite>> {
        texts.iter().fold(query, |query, text| query.bind(text))
    }
}

impl Alerts for SqliteStore {}

impl AuditLog for SqliteStore {}

impl LedgerAudit for SqliteStore {}

impl Limits for SqliteStore {}

impl Directory for SqliteStore {}

impl Purchases for SqliteStore {}

impl Batches for SqliteStore {}

impl StoredResponses for SqliteStore {}

impl Files for SqliteStore {}

impl SsoAttempts for SqliteStore {}
impl SsoRefreshTokens for SqliteStore {}
impl Deactivations for SqliteStore {}
impl ServiceAccounts for SqliteStore {}
impl DeviceGrants for SqliteStore {}
impl PaymentCustomers for SqliteStore {}

impl Reports for SqliteStore {}

impl RequestLog for SqliteStore {}

impl Captures for SqliteStore {}

impl ConsoleSignIn for SqliteStore {}

impl IdempotencyKeys for SqliteStore {}
