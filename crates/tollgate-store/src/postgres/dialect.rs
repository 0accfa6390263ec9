//! PostgreSQL's side of `Dialect`: one pool reads and writes, a read snapshot is a
//! REPEATABLE READ transaction, a list of texts is one array parameter, and a write
//! transaction locks the rows it is about to change (the organization's first).

use std::time::Duration;

use sqlx::query::Query;
use sqlx::{PgConnection, Pool, Postgres};

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
use crate::postgres::{
    PgStore, PgTransaction, busy_pause, lock_organization, lock_organization_of_workspace, store_error,
};
use crate::purchases::Purchases;
use crate::reports::Reports;
use crate::request_log::RequestLog;
use crate::service_accounts::ServiceAccounts;
use crate::sso::SsoAttempts;
use crate::sso_refresh::SsoRefreshTokens;
use crate::stored_responses::StoredResponses;

impl Dialect for PgStore {
    type Db = Postgres;

    fn read_pool(&self) -> &Pool<Postgres> {
        self.pool()
    }

    fn write_pool(&self) -> &Pool<Postgres> {
        self.pool()
    }

    fn hot_writer(&self) -> &WriterQueue {
        self.writer()
    }

    async fn begin_read(&self) -> Result<PgTransaction, StoreError> {
        PgStore::begin_read(self).await
    }

    async fn begin_write(&self) -> Result<PgTransaction, StoreError> {
        self.begin().await
    }

    fn busy_pause(attempt: u32) -> Option<Duration> {
        busy_pause(attempt)
    }

    async fn lock_organization(connection: &mut PgConnection, org_id: &str) -> Result<bool, StoreError> {
        lock_organization(connection, org_id).await
    }

    async fn lock_organization_of_workspace(
        connection: &mut PgConnection,
        workspace_id: &str,
    ) -> Result<Option<String>, StoreError> {
        lock_organization_of_workspace(connection, workspace_id).await
    }

    async fn lock_organization_of_purchase(
        connection: &mut PgConnection,
        purchase_id: &str,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT o.id FROM organizations o JOIN purchases p ON p.org_id = o.id
             WHERE p.id = $1 FOR UPDATE OF o",
        )
        .bind(purchase_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)
    }

    fn store_error(error: sqlx::Error) -> StoreError {
        store_error(error)
    }

    /// One `text[]` parameter, `$first`, whatever `count` is; empty keeps every text.
    fn and_any_of(column: &str, first: usize, _count: usize) -> String {
        format!(" AND (cardinality(${first}::text[]) = 0 OR {column} = ANY(${first}::text[]))")
    }

    /// One `text[]` parameter, `$first`, whatever `count` is.
    fn any_of(column: &str, first: usize, _count: usize) -> String {
        format!("{column} = ANY(${first}::text[])")
    }

    fn texts_per_statement() -> usize {
        usize::MAX
    }

    fn skip_locked() -> &'static str {
        " FOR UPDATE SKIP LOCKED"
    }

    fn for_update() -> &'static str {
        " FOR UPDATE"
    }

    fn insertion_order() -> &'static str {
        "seq"
    }

    fn month_of_millis(column: &str) -> String {
        format!("CAST(to_char(to_timestamp({column} / 1000) AT TIME ZONE 'UTC', 'YYYYMM') AS BIGINT)")
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn bind_any_of<'q>(
        query: Query<'q, Postgres, BoundArguments<'q, Postgres>>,
        texts: &'q [String],
    ) -> Query<'q, Postgres, BoundArguments<'q, Postgres>> {
        query.bind(texts)
    }
}

impl Alerts for PgStore {}

impl AuditLog for PgStore {}

impl LedgerAudit for PgStore {}

impl Limits for PgStore {}

impl Directory for PgStore {}

impl Purchases for PgStore {}

impl Batches for PgStore {}

impl StoredResponses for PgStore {}

impl Files for PgStore {}

impl SsoAttempts for PgStore {}
impl SsoRefreshTokens for PgStore {}
impl Deactivations for PgStore {}
impl ServiceAccounts for PgStore {}
impl DeviceGrants for PgStore {}
impl PaymentCustomers for PgStore {}

impl Reports for PgStore {}

impl RequestLog for PgStore {}

impl Captures for PgStore {}

impl ConsoleSignIn for PgStore {}

impl IdempotencyKeys for PgStore {}
