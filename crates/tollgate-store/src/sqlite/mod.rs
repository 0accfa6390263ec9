//! The SQLite adapter: connection setup, the directory (organizations, workspaces, keys)
//! and usage records; what stays its own of the ledger (`ledger`: the hot path's forwards
//! to the writer, how accounts and journal rows are written), the monthly spend counters
//! (`spend`), the hot path's writer (`writer`) and backups (`backup`). The ledger's
//! scripts (`ledger`), its self-check (`ledger_audit`), limits, purchases and auto-reload,
//! the Admin API's directory and the audit log are written once and shared with
//! PostgreSQL.
//!
//! Writes go through a one-connection pool whose transactions start with `BEGIN
//! IMMEDIATE`, so a read-then-write transaction holds the write lock from its first read
//! and our own writers queue in-process instead of spinning on `SQLITE_BUSY`. Reads go
//! through a separate pool of `query_only` connections, which WAL lets run beside the
//! writer. Other processes writing the same file (the CLI) are covered by the busy timeout.
//! No sqlx type leaves this module tree.

pub(crate) mod backup;
mod dialect;
mod ledger;
mod spend;
mod writer;

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tollgate_core::Timestamp;
use tollgate_core::keys::KeyKind;
use tollgate_core::usage::Speed;

use crate::batching::WriterQueue;
use crate::codec::{allowed_models_text, attempts_to_sql, label_text};
pub(crate) use crate::codec::{count_to_sql, invariant, millis, timestamp_from_sql, truncate_to_millis};
use crate::directory::Directory;
use crate::error::{StoreError, TxError};
use crate::model::{KeyRecord, KeyStatus, NameTaken, NewKey, Organization, UsageRecord, Workspace};
pub(crate) use crate::rows::column;
use crate::rows::{
    KEY_COLUMNS, key_from_row, organization_from_row, usage_record_from_row, workspace_from_row,
};
use crate::rules::{DEFAULT_WORKSPACE_NAME, SYSTEM_ACCOUNT_KINDS};

/// How long a statement waits for another process's write lock before failing as `Busy`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent readers; WAL lets them all run beside the one writer.
const READER_CONNECTIONS: u32 = 4;

/// SQLite's primary result codes for lock contention (extended codes share the low byte).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

pub(crate) type SqliteTransaction = Transaction<'static, Sqlite>;

/// How a SQLite store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How stale the disk may be. Zero: every reservation and settlement batch is fsync'd
    /// before its callers are answered. Otherwise a batch's callers are answered once its
    /// commit is in the operating system (which a crash of this process cannot lose), and
    /// the log is fsync'd at most this long after: a power loss or a kernel crash loses at
    /// most the commits of the last `sync_interval` (and the fsync in progress), always the
    /// latest ones, never a charge without its reservation.
    pub sync_interval: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            sync_interval: std::time::Duration::from_millis(100),
        }
    }
}

/// The page size of a database this store creates (an existing file keeps its own). Every
/// commit writes each page it changed whole to the log, and a request changes a few rows in
/// a dozen tables and indexes: measured, 1 KiB pages carried 54 % more requests a second
/// than SQLite's default 4 KiB at one connection and 38 % more at 32 (BENCHMARKS.md).
const PAGE_SIZE: u32 = 1024;

#[derive(Clone)]
pub(crate) struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Reservations and settlements, group-committed on the writer thread.
    hot: WriterQueue,
}

impl SqliteStore {
    pub(crate) async fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let writer_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            // Money: a committed transaction survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(writer_options.clone())
            .await
            .map_err(store_error)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|error| StoreError::Migration(error.to_string()))?;
        // `query_only` makes a write through the reader pool an error instead of a second,
        // unserialised writer.
        let reader_options = writer_options.create_if_missing(false).pragma("query_only", "ON");
        let reader = SqlitePoolOptions::new()
            .max_connections(READER_CONNECTIONS)
            .connect_with(reader_options)
            .await
            .map_err(store_error)?;
        let hot = writer::start(path, options.sync_interval)?;
        Ok(SqliteStore { writer, reader, hot })
    }

    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A transaction that holds the database's write lock from its first statement.
    async fn begin_write(&self) -> Result<SqliteTransaction, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)
    }

    /// A read transaction: one consistent snapshot across several queries.
    async fn begin_read(&self) -> Result<SqliteTransaction, StoreError> {
        self.reader.begin().await.map_err(store_error)
    }

    // Organizations and workspaces.

    pub(crate) async fn create_organization(
        &self,
        org_id: &str,
        name: &str,
        default_workspace_id: &str,
        now: Timestamp,
    ) -> Result<Organization, TxError<NameTaken>> {
        let mut transaction = self.begin_write().await?;
        // The write lock is held, so nobody can take the name between check and insert.
        let taken = sqlx::query("SELECT 1 FROM organizations WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(TxError::Rejected(NameTaken(name.to_owned())));
        }
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(org_id)
            .bind(name)
            .bind(millis(now))
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        for kind in SYSTEM_ACCOUNT_KINDS {
            sqlx::query("INSERT INTO accounts (org_id, kind) VALUES (?, ?)")
                .bind(org_id)
                .bind(kind.as_str())
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
        }
        Self::insert_workspace(
            &mut transaction,
            org_id,
            default_workspace_id,
            DEFAULT_WORKSPACE_NAME,
            true,
            now,
        )
        .await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(Organization {
            id: org_id.to_owned(),
            name: name.to_owned(),
            created_at: truncate_to_millis(now)?,
        })
    }

    pub(crate) async fn organization(&self, org_id: &str) -> Result<Option<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations WHERE id = ?")
            .bind(org_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| organization_from_row(&row))
            .transpose()
    }

    pub(crate) async fn organization_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| organization_from_row(&row))
            .transpose()
    }

    pub(crate) async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?
            .iter()
            .map(organization_from_row)
            .collect()
    }

    pub(crate) async fn create_workspace(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Workspace, TxError<NameTaken>> {
        let mut transaction = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = ? AND name = ?")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(TxError::Rejected(NameTaken(name.to_owned())));
        }
        let workspace =
            Self::insert_workspace(&mut transaction, org_id, workspace_id, name, false, now).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(workspace)
    }

    pub(crate) async fn workspace(&self, workspace_id: &str) -> Result<Option<Workspace>, StoreError> {
        sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE id = ?",
        )
        .bind(workspace_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?
        .map(|row| workspace_from_row(&row))
        .transpose()
    }

    pub(crate) async fn workspace_by_name(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE org_id = ? AND name = ?",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?
        .map(|row| workspace_from_row(&row))
        .transpose()
    }

    pub(crate) async fn list_workspaces(&self, org_id: &str) -> Result<Vec<Workspace>, StoreError> {
        sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE org_id = ? ORDER BY is_default DESC, created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(workspace_from_row)
        .collect()
    }

    pub(crate) async fn default_workspace(&self, org_id: &str) -> Result<Workspace, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE org_id = ? AND is_default = 1",
        )
        .bind(org_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        match row {
            Some(row) => workspace_from_row(&row),
            None => Err(StoreError::Invariant(format!(
                "organization {org_id} has no default workspace"
            ))),
        }
    }

    // Keys.

    pub(crate) async fn record_health_check(&self, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO health_checks (slot, checked_at) VALUES (1, ?)
             ON CONFLICT (slot) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(millis(now))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        let expires_at = key.expires_at.map(truncate_to_millis).transpose()?;
        sqlx::query(
            "INSERT INTO api_keys
                (id, kind, org_id, workspace_id, name, secret_hash, hint, status, created_at, expires_at,
                 user_id, service_account_id, allowed_models)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(key.kind.as_str())
        .bind(&key.org_id)
        .bind(&key.workspace_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(&key.hint)
        .bind(KeyStatus::Active.as_str())
        .bind(millis(key.created_at))
        .bind(key.expires_at.map(millis))
        .bind(&key.user_id)
        .bind(&key.service_account_id)
        .bind(allowed_models_text(&key.allowed_models))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(KeyRecord {
            id: key.id,
            kind: key.kind,
            org_id: key.org_id,
            workspace_id: key.workspace_id,
            name: key.name,
            hint: key.hint,
            status: KeyStatus::Active,
            created_at: truncate_to_millis(key.created_at)?,
            last_used_at: None,
            expires_at,
            user_id: key.user_id,
            service_account_id: key.service_account_id,
            allowed_models: key.allowed_models,
        })
    }

    pub(crate) async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?
        .map(|row| key_from_row(&row))
        .transpose()
    }

    pub(crate) async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(key_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| key_from_row(&row))
            .transpose()
    }

    pub(crate) async fn list_keys(
        &self,
        org_id: &str,
        kind: KeyKind,
        workspace_id: Option<&str>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = match workspace_id {
            None => {
                sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = ? AND kind = ? ORDER BY created_at DESC, id DESC"))
                .bind(org_id)
                .bind(kind.as_str())
                .fetch_all(&self.reader)
                .await
            }
            Some(workspace_id) => {
                sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = ? AND kind = ? AND workspace_id = ? ORDER BY created_at DESC, id DESC"))
                .bind(org_id)
                .bind(kind.as_str())
                .bind(workspace_id)
                .fetch_all(&self.reader)
                .await
            }
        }
        .map_err(store_error)?;
        rows.iter().map(key_from_row).collect()
    }

    pub(crate) async fn set_key_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE api_keys SET status = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(key_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(result.rows_affected() > 0)
    }

    pub(crate) async fn touch_key(&self, key_id: &str, now: Timestamp) -> Result<(), StoreError> {
        // Never moves last-used backwards when two requests finish out of order.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = ?
             WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
        )
        .bind(millis(now))
        .bind(key_id)
        .bind(millis(now))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    // Usage records.

    pub(crate) async fn insert_usage_record(&self, record: UsageRecord) -> Result<(), StoreError> {
        let mut connection = self.writer.acquire().await.map_err(store_error)?;
        insert_usage_record(&mut connection, &record, None).await
    }

    pub(crate) async fn usage_records(&self, org_id: &str) -> Result<Vec<UsageRecord>, StoreError> {
        sqlx::query(
            "SELECT request_id, org_id, workspace_id, api_key_id, model, input_tokens,
                    output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
                    cache_read_input_tokens, cost_nanos, status, error_type, latency_ms,
                    started_at, ended_at, client_session_id, client_agent_id,
                    client_parent_agent_id, served_model, speed, multipliers, web_search_requests,
                    cost_input_nanos, cost_output_nanos, cost_cache_write_5m_nanos,
                    cost_cache_write_1h_nanos, cost_cache_read_nanos, cost_web_search_nanos,
                    upstream_attempts
             FROM usage_records WHERE org_id = ? ORDER BY ended_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(usage_record_from_row)
        .collect()
    }

    pub(crate) async fn usage_record(
        &self,
        org_id: &str,
        request_id: &str,
    ) -> Result<Option<UsageRecord>, StoreError> {
        sqlx::query(
            "SELECT request_id, org_id, workspace_id, api_key_id, model, input_tokens,
                    output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
                    cache_read_input_tokens, cost_nanos, status, error_type, latency_ms,
                    started_at, ended_at, client_session_id, client_agent_id,
                    client_parent_agent_id, served_model, speed, multipliers, web_search_requests,
                    cost_input_nanos, cost_output_nanos, cost_cache_write_5m_nanos,
                    cost_cache_write_1h_nanos, cost_cache_read_nanos, cost_web_search_nanos,
                    upstream_attempts
             FROM usage_records WHERE org_id = ? AND request_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(org_id)
        .bind(request_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?
        .map(|row| usage_record_from_row(&row))
        .transpose()
    }
}

async fn insert_usage_record(
    connection: &mut SqliteConnection,
    record: &UsageRecord,
    reservation_id: Option<&str>,
) -> Result<(), StoreError> {
    let usage = &record.usage;
    sqlx::query(
        "INSERT INTO usage_records
            (request_id, org_id, workspace_id, api_key_id, model, input_tokens, output_tokens,
             cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
             cache_read_input_tokens, cost_nanos, status, error_type, latency_ms, started_at,
             ended_at, reservation_id, client_session_id, client_agent_id, client_parent_agent_id,
             served_model, speed, multipliers, web_search_requests, cost_input_nanos,
             cost_output_nanos, cost_cache_write_5m_nanos, cost_cache_write_1h_nanos,
             cost_cache_read_nanos, cost_web_search_nanos, upstream_attempts)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?, ?)",
    )
    .bind(&record.request_id)
    .bind(&record.org_id)
    .bind(&record.workspace_id)
    .bind(&record.api_key_id)
    .bind(&record.model)
    .bind(count_to_sql(usage.input_tokens)?)
    .bind(count_to_sql(usage.output_tokens)?)
    .bind(count_to_sql(usage.cache_creation_5m_input_tokens)?)
    .bind(count_to_sql(usage.cache_creation_1h_input_tokens)?)
    .bind(count_to_sql(usage.cache_read_input_tokens)?)
    .bind(record.cost.nanos())
    .bind(record.status.as_str())
    .bind(&record.error_type)
    .bind(count_to_sql(record.latency_ms)?)
    .bind(millis(record.started_at))
    .bind(millis(record.ended_at))
    .bind(reservation_id)
    .bind(label_text(record.attribution.session_id.as_ref()))
    .bind(label_text(record.attribution.agent_id.as_ref()))
    .bind(label_text(record.attribution.parent_agent_id.as_ref()))
    .bind(&record.served_model)
    .bind(usage.speed.map(Speed::as_str))
    .bind(record.multipliers.label())
    .bind(count_to_sql(usage.web_search_requests)?)
    .bind(record.lines.input.nanos())
    .bind(record.lines.output.nanos())
    .bind(record.lines.cache_write_5m.nanos())
    .bind(record.lines.cache_write_1h.nanos())
    .bind(record.lines.cache_read.nanos())
    .bind(record.lines.web_search.nanos())
    .bind(attempts_to_sql(&record.upstream_attempts))
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Translates a driver error at the adapter boundary: lock contention is `Busy`, which
/// callers may retry; everything else is reported in words.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::PoolTimedOut => StoreError::Busy,
        sqlx::Error::Database(database_error) => {
            let primary_code = database_error
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .map(|code| code & 0xff);
            match primary_code {
                Some(SQLITE_BUSY | SQLITE_LOCKED) => StoreError::Busy,
                _ => StoreError::Database(error.to_string()),
            }
        }
        _ => StoreError::Database(error.to_string()),
    }
}
