//! The PostgreSQL adapter: several replicas share one database, so every guard that SQLite
//! gets from its single writer is a row lock here. Connection setup, the directory
//! (organizations, workspaces, keys) and usage records live in this file; the other files
//! are what stays its own beside `sqlite/`'s: the ledger's writes of accounts and journal
//! rows (`ledger`), the monthly spend counters (`spend`) and the hot path's batching
//! writer (`writer`).
//!
//! Transactions run at READ COMMITTED and take row locks (`SELECT … FOR UPDATE`) on what
//! they are about to change, always in the same order (organization row first, then
//! accounts by id), so concurrent transaction scripts queue instead of deadlocking. What
//! PostgreSQL still aborts (serialization failures, deadlocks) is `StoreError::Busy`, and
//! `retrying` runs the whole script again: every script commits or rolls back as a whole,
//! so a retry can never apply twice. No sqlx type leaves this module tree.

mod dialect;
mod ledger;
mod spend;
mod writer;

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tollgate_core::Timestamp;
use tollgate_core::attribution::{Attribution, ClientLabel};
use tollgate_core::keys::KeyKind;
use tollgate_core::usage::Speed;

use crate::batching::WriterQueue;
use crate::codec::{allowed_models_text, attempts_to_sql, label_text};
pub(crate) use crate::codec::{
    check_rows_written, count_to_sql, invariant, millis, timestamp_from_sql, truncate_to_millis,
};
use crate::directory::Directory;
use crate::error::{StoreError, TxError};
use crate::model::{KeyRecord, KeyStatus, NameTaken, NewKey, Organization, UsageRecord, Workspace};
pub(crate) use crate::rows::column;
use crate::rows::{
    KEY_COLUMNS, key_from_row, organization_from_row, usage_record_from_row, workspace_from_row,
};
use crate::rules::{DEFAULT_WORKSPACE_NAME, SYSTEM_ACCOUNT_KINDS};

/// How a PostgreSQL store connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// Connections in this process's pool.
    pub max_connections: u32,
    /// Tables live in this schema (created if missing); None = the server's default
    /// `search_path`. Tests give each store its own.
    pub schema: Option<String>,
    /// The hot path's batches commit with `synchronous_commit = off`: answered once the
    /// server has the commit (a crash of this replica loses nothing), flushed to the
    /// server's disk within three `wal_writer_delay`s (a crash of the server, or a power
    /// loss, loses at most those, always the latest commits). False: the server's setting.
    pub asynchronous_commit: bool,
}

/// How many times `retrying` runs a transaction script that PostgreSQL aborted for
/// contention before reporting `Busy`.
const MAX_ATTEMPTS: u32 = 8;
/// How long a connection may be waited for, connecting included, before the call fails as
/// `Unavailable`: a server that is down fails each request after this long, not after a
/// minute of retries. Longer than any wait for a free connection of a healthy pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

// SQLSTATEs that mean "run the transaction again".
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
const LOCK_NOT_AVAILABLE: &str = "55P03";

pub(crate) type PgTransaction = Transaction<'static, Postgres>;

#[derive(Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
    /// Reservations and settlements, batched (`writer`).
    writer: WriterQueue,
}

impl PgStore {
    pub(crate) async fn open(options: &PostgresOptions) -> Result<PgStore, StoreError> {
        let mut connect: PgConnectOptions = options
            .url
            .parse()
            .map_err(|error| StoreError::Database(format!("bad database URL: {error}")))?;
        if let Some(schema) = &options.schema {
            if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(StoreError::Database(format!("bad schema name '{schema}'")));
            }
            let mut bootstrap = PgConnection::connect_with(&connect).await.map_err(store_error)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut bootstrap)
                .await
                .map_err(store_error)?;
            bootstrap.close().await.map_err(store_error)?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(store_error)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migration(error.to_string()))?;
        let writer = writer::start(pool.clone(), options.asynchronous_commit);
        Ok(PgStore { pool, writer })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await
    }

    pub(crate) async fn record_health_check(&self, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO health_checks (slot, checked_at) VALUES (1, $1)
             ON CONFLICT (slot) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn begin(&self) -> Result<PgTransaction, StoreError> {
        self.pool.begin().await.map_err(store_error)
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn writer(&self) -> &WriterQueue {
        &self.writer
    }

    /// A read-only transaction on one snapshot, for reads of several queries that must agree.
    pub(crate) async fn begin_read(&self) -> Result<PgTransaction, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(store_error)
    }

    // Organizations and workspaces.

    pub(crate) async fn create_organization(
        &self,
        org_id: &str,
        name: &str,
        default_workspace_id: &str,
        now: Timestamp,
    ) -> Result<Organization, TxError<NameTaken>> {
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            // The UNIQUE name decides a race: a second creator of the name waits for the
            // first to commit, then inserts nothing.
            let inserted = sqlx::query(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(org_id)
            .bind(name)
            .bind(millis(now))
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
            if inserted.rows_affected() == 0 {
                return Err(TxError::Rejected(NameTaken(name.to_owned())));
            }
            for kind in SYSTEM_ACCOUNT_KINDS {
                sqlx::query("INSERT INTO accounts (org_id, kind) VALUES ($1, $2)")
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
            Ok(())
        })
        .await?;
        Ok(Organization {
            id: org_id.to_owned(),
            name: name.to_owned(),
            created_at: truncate_to_millis(now)?,
        })
    }

    pub(crate) async fn organization(&self, org_id: &str) -> Result<Option<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| organization_from_row(&row))
            .transpose()
    }

    pub(crate) async fn organization_by_name(&self, name: &str) -> Result<Option<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| organization_from_row(&row))
            .transpose()
    }

    pub(crate) async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM organizations ORDER BY created_at, id")
            .fetch_all(&self.pool)
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
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            // Held to commit, so nobody can take the name between check and insert.
            lock_organization(&mut transaction, org_id).await?;
            let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = $1 AND name = $2")
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
        })
        .await
    }

    pub(crate) async fn workspace(&self, workspace_id: &str) -> Result<Option<Workspace>, StoreError> {
        sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
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
             FROM workspaces WHERE org_id = $1 AND name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| workspace_from_row(&row))
        .transpose()
    }

    pub(crate) async fn list_workspaces(&self, org_id: &str) -> Result<Vec<Workspace>, StoreError> {
        sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE org_id = $1 ORDER BY is_default DESC, created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?
        .iter()
        .map(workspace_from_row)
        .collect()
    }

    pub(crate) async fn default_workspace(&self, org_id: &str) -> Result<Workspace, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, is_default, created_at, archived_at
             FROM workspaces WHERE org_id = $1 AND is_default",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
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

    pub(crate) async fn insert_key(&self, key: NewKey) -> Result<KeyRecord, StoreError> {
        let expires_at = key.expires_at.map(truncate_to_millis).transpose()?;
        sqlx::query(
            "INSERT INTO api_keys
                (id, kind, org_id, workspace_id, name, secret_hash, hint, status, created_at, expires_at,
                 user_id, service_account_id, allowed_models)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
        .execute(&self.pool)
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
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| key_from_row(&row))
        .transpose()
    }

    pub(crate) async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
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
                sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND kind = $2 ORDER BY created_at DESC, id DESC"))
                .bind(org_id)
                .bind(kind.as_str())
                .fetch_all(&self.pool)
                .await
            }
            Some(workspace_id) => {
                sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND kind = $2 AND workspace_id = $3 ORDER BY created_at DESC, id DESC"))
                .bind(org_id)
                .bind(kind.as_str())
                .bind(workspace_id)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(store_error)?;
        rows.iter().map(key_from_row).collect()
    }

    pub(crate) async fn set_key_status(&self, key_id: &str, status: KeyStatus) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE api_keys SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(key_id)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(result.rows_affected() > 0)
    }

    pub(crate) async fn touch_key(&self, key_id: &str, now: Timestamp) -> Result<(), StoreError> {
        // Never moves last-used backwards when two requests finish out of order.
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(millis(now))
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    // Usage records.

    pub(crate) async fn insert_usage_record(&self, record: UsageRecord) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(store_error)?;
        insert_usage_record_in(&mut connection, &record, None).await
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
             FROM usage_records WHERE org_id = $1 ORDER BY ended_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
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
             FROM usage_records WHERE org_id = $1 AND request_id = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(org_id)
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?
        .map(|row| usage_record_from_row(&row))
        .transpose()
    }
}

/// Writes a usage record; a settlement passes its reservation so the rollup trigger can
/// read what was charged.
pub(crate) async fn insert_usage_record_in(
    connection: &mut PgConnection,
    record: &UsageRecord,
    reservation_id: Option<&str>,
) -> Result<(), StoreError> {
    insert_usage_records_in(connection, &[(record, reservation_id)]).await
}

/// Writes usage records, in order, in one statement.
pub(crate) async fn insert_usage_records_in(
    connection: &mut PgConnection,
    records: &[(&UsageRecord, Option<&str>)],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let text_of = |pick: fn(&UsageRecord) -> &str| -> Vec<&str> {
        records.iter().map(|(record, _)| pick(record)).collect()
    };
    let count_of = |pick: fn(&UsageRecord) -> u64| -> Result<Vec<i64>, StoreError> {
        records
            .iter()
            .map(|(record, _)| count_to_sql(pick(record)))
            .collect()
    };
    let integer_of = |pick: fn(&UsageRecord) -> i64| -> Vec<i64> {
        records.iter().map(|(record, _)| pick(record)).collect()
    };
    let label_of = |pick: fn(&Attribution) -> Option<&ClientLabel>| -> Vec<Option<&str>> {
        records
            .iter()
            .map(|(record, _)| label_text(pick(&record.attribution)))
            .collect()
    };
    let inserted = sqlx::query(
        "INSERT INTO usage_records
            (request_id, org_id, workspace_id, api_key_id, model, input_tokens, output_tokens,
             cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
             cache_read_input_tokens, cost_nanos, status, error_type, latency_ms, started_at,
             ended_at, reservation_id, client_session_id, client_agent_id, client_parent_agent_id,
             served_model, speed, multipliers, web_search_requests, cost_input_nanos,
             cost_output_nanos, cost_cache_write_5m_nanos, cost_cache_write_1h_nanos,
             cost_cache_read_nanos, cost_web_search_nanos, upstream_attempts)
         SELECT r.request_id, r.org_id, r.workspace_id, r.api_key_id, r.model, r.input_tokens,
                r.output_tokens, r.cache_creation_5m, r.cache_creation_1h, r.cache_read, r.cost_nanos,
                r.status, r.error_type, r.latency_ms, r.started_at, r.ended_at, r.reservation_id,
                r.client_session_id, r.client_agent_id, r.client_parent_agent_id, r.served_model,
                r.speed, r.multipliers, r.web_search_requests, r.cost_input, r.cost_output,
                r.cost_cache_write_5m, r.cost_cache_write_1h, r.cost_cache_read, r.cost_web_search,
                r.upstream_attempts
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::text[], $13::text[], $14::bigint[], $15::bigint[], $16::bigint[],
                     $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],
                     $23::text[], $24::bigint[], $25::bigint[], $26::bigint[], $27::bigint[],
                     $28::bigint[], $29::bigint[], $30::bigint[], $31::text[])
              WITH ORDINALITY
              AS r (request_id, org_id, workspace_id, api_key_id, model, input_tokens, output_tokens,
                    cache_creation_5m, cache_creation_1h, cache_read, cost_nanos, status, error_type,
                    latency_ms, started_at, ended_at, reservation_id, client_session_id,
                    client_agent_id, client_parent_agent_id, served_model, speed, multipliers,
                    web_search_requests, cost_input, cost_output, cost_cache_write_5m,
                    cost_cache_write_1h, cost_cache_read, cost_web_search, upstream_attempts, n)
         ORDER BY r.n",
    )
    .bind(text_of(|record| &record.request_id))
    .bind(text_of(|record| &record.org_id))
    .bind(text_of(|record| &record.workspace_id))
    .bind(
        records
            .iter()
            .map(|(record, _)| record.api_key_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(text_of(|record| &record.model))
    .bind(count_of(|record| record.usage.input_tokens)?)
    .bind(count_of(|record| record.usage.output_tokens)?)
    .bind(count_of(|record| record.usage.cache_creation_5m_input_tokens)?)
    .bind(count_of(|record| record.usage.cache_creation_1h_input_tokens)?)
    .bind(count_of(|record| record.usage.cache_read_input_tokens)?)
    .bind(integer_of(|record| record.cost.nanos()))
    .bind(text_of(|record| record.status.as_str()))
    .bind(
        records
            .iter()
            .map(|(record, _)| record.error_type.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(count_of(|record| record.latency_ms)?)
    .bind(integer_of(|record| millis(record.started_at)))
    .bind(integer_of(|record| millis(record.ended_at)))
    .bind(
        records
            .iter()
            .map(|(_, reservation_id)| *reservation_id)
            .collect::<Vec<_>>(),
    )
    .bind(label_of(|attribution| attribution.session_id.as_ref()))
    .bind(label_of(|attribution| attribution.agent_id.as_ref()))
    .bind(label_of(|attribution| attribution.parent_agent_id.as_ref()))
    .bind(
        records
            .iter()
            .map(|(record, _)| record.served_model.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(record, _)| record.usage.speed.map(Speed::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(record, _)| record.multipliers.label())
            .collect::<Vec<_>>(),
    )
    .bind(count_of(|record| record.usage.web_search_requests)?)
    .bind(integer_of(|record| record.lines.input.nanos()))
    .bind(integer_of(|record| record.lines.output.nanos()))
    .bind(integer_of(|record| record.lines.cache_write_5m.nanos()))
    .bind(integer_of(|record| record.lines.cache_write_1h.nanos()))
    .bind(integer_of(|record| record.lines.cache_read.nanos()))
    .bind(integer_of(|record| record.lines.web_search.nanos()))
    .bind(
        records
            .iter()
            .map(|(record, _)| attempts_to_sql(&record.upstream_attempts))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    check_rows_written(inserted.rows_affected(), records.len(), "usage records")
}

/// Runs a transaction script until it is not aborted for contention (`StoreError::Busy`),
/// at most `MAX_ATTEMPTS` times, with a short growing pause between attempts: the rule
/// every script follows, `dialect::retrying`.
pub(crate) async fn retrying<T, E, F, Fut>(script: F) -> Result<T, E>
where
    E: crate::dialect::Contended,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    crate::dialect::retrying::<PgStore, T, E, F, Fut>(script).await
}

/// The pause before running again a script that contention aborted on its `attempt`-th
/// run; `None` once it has had `MAX_ATTEMPTS`.
pub(crate) fn busy_pause(attempt: u32) -> Option<Duration> {
    (attempt < MAX_ATTEMPTS).then(|| Duration::from_millis(u64::from(attempt) * 5))
}

/// Locks an organization's row, the per-organization lock every write transaction that
/// checks before it writes takes first. False if there is no such organization.
pub(crate) async fn lock_organization(
    connection: &mut PgConnection,
    org_id: &str,
) -> Result<bool, StoreError> {
    let locked = sqlx::query("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE")
        .bind(org_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    Ok(locked.is_some())
}

/// Locks the row of the organization a workspace belongs to and names it; None if there is
/// no such workspace.
pub(crate) async fn lock_organization_of_workspace(
    connection: &mut PgConnection,
    workspace_id: &str,
) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT o.id FROM organizations o JOIN workspaces w ON w.org_id = o.id
         WHERE w.id = $1 FOR UPDATE OF o",
    )
    .bind(workspace_id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(store_error)
}

/// Translates a driver error at the adapter boundary: contention PostgreSQL resolved by
/// aborting us is `Busy`, which callers (and `retrying`) may retry; no connection within
/// the acquire timeout, or a connection lost, is `Unavailable`, which is not retried here
/// (each attempt would wait as long again); everything else is reported in words.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::Database(database_error) => match database_error.code().as_deref() {
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED | LOCK_NOT_AVAILABLE) => StoreError::Busy,
            _ => StoreError::Database(error.to_string()),
        },
        _ => StoreError::Database(error.to_string()),
    }
}
