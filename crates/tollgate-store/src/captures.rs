//! Captured request and response bodies (issue #17): a workspace's capture settings and
//! the captures themselves, one per request id, scoped to an organization and workspace.
//! The store keeps what it is given: redaction and the size cap are applied by the
//! service before a capture reaches it (`tollgate_service::capture`), so no redacted value
//! is ever written here. Reads always name the organization, so a capture never leaves it.
//!
//! Written once for both backends over `Dialect`. The audit entry of a settings change is
//! written in the same transaction as the change.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::audit_log::AuditLog;
use crate::codec::store_decode;
use crate::codec::{count_from_sql, count_to_sql, millis, timestamp_from_sql, unknown_text};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::AuditEntry;
use crate::rows::DbRow;

/// How a workspace captures bodies; a workspace without settings captures nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Days a capture is kept; at least 1.
    pub retention_days: u32,
    /// The most of each body kept, in bytes; at least 1.
    pub body_bytes_max: u64,
    /// JSON paths whose values are replaced before anything is written, as configured.
    pub redact_paths: Vec<String>,
}

/// What the response of a captured request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturedResponseKind {
    /// One JSON document (a reply or an error envelope).
    Json,
    /// The SSE text delivered to the client.
    EventStream,
}

impl CapturedResponseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CapturedResponseKind::Json => "json",
            CapturedResponseKind::EventStream => "event_stream",
        }
    }

    fn parse(text: &str) -> Result<CapturedResponseKind, StoreError> {
        match text {
            "json" => Ok(CapturedResponseKind::Json),
            "event_stream" => Ok(CapturedResponseKind::EventStream),
            other => Err(unknown_text("captured response kind", other)),
        }
    }
}

/// One captured request: its bodies already redacted and cut to the cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCapture {
    pub org_id: String,
    pub workspace_id: String,
    pub request_id: String,
    pub captured_at: Timestamp,
    pub expires_at: Timestamp,
    pub request_body: String,
    /// The request body's size as received.
    pub request_bytes: u64,
    /// Whether `request_body` was cut at the workspace's size cap.
    pub request_truncated: bool,
    pub response_kind: CapturedResponseKind,
    pub response_body: String,
    /// The response body's size as delivered.
    pub response_bytes: u64,
    /// Whether `response_body` was cut at the workspace's size cap.
    pub response_truncated: bool,
}

const MILLIS_A_DAY: i64 = 86_400_000;

fn capture_from_row(row: &impl DbRow) -> Result<RequestCapture, StoreError> {
    Ok(RequestCapture {
        org_id: row.text("org_id").map_err(store_decode)?,
        workspace_id: row.text("workspace_id").map_err(store_decode)?,
        request_id: row.text("request_id").map_err(store_decode)?,
        captured_at: timestamp_from_sql(row.integer("captured_at").map_err(store_decode)?)?,
        expires_at: timestamp_from_sql(row.integer("expires_at").map_err(store_decode)?)?,
        request_body: row.text("request_body").map_err(store_decode)?,
        request_bytes: count_from_sql(row.integer("request_bytes").map_err(store_decode)?)?,
        request_truncated: row.integer("request_truncated").map_err(store_decode)? != 0,
        response_kind: CapturedResponseKind::parse(&row.text("response_kind").map_err(store_decode)?)?,
        response_body: row.text("response_body").map_err(store_decode)?,
        response_bytes: count_from_sql(row.integer("response_bytes").map_err(store_decode)?)?,
        response_truncated: row.integer("response_truncated").map_err(store_decode)? != 0,
    })
}

/// The capture queries, the same on every backend.
pub(crate) trait Captures: Dialect + AuditLog
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    /// The workspace's capture settings; `None` when it captures nothing (the default).
    async fn capture_settings(&self, workspace_id: &str) -> Result<Option<CaptureSettings>, StoreError> {
        let row = sqlx::query(
            "SELECT retention_days, body_bytes_max, redact_paths FROM capture_settings
             WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let redact_paths: String = row.text("redact_paths").map_err(store_decode)?;
        Ok(Some(CaptureSettings {
            retention_days: u32::try_from(row.integer("retention_days").map_err(store_decode)?)
                .map_err(|_| unknown_text("retention_days", "out of range"))?,
            body_bytes_max: count_from_sql(row.integer("body_bytes_max").map_err(store_decode)?)?,
            redact_paths: redact_paths.lines().map(str::to_owned).collect(),
        }))
    }

    /// Turns the workspace's capture on with `settings` (moving the expiry of the captures
    /// it already keeps to the new retention), or off with `None` (captures kept stay until
    /// they expire). Audited with `audit` in the same transaction.
    async fn set_capture_settings(
        &self,
        org_id: &str,
        workspace_id: &str,
        settings: Option<&CaptureSettings>,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        match settings {
            Some(settings) => {
                let redact_paths = settings.redact_paths.join("\n");
                sqlx::query(
                    "INSERT INTO capture_settings (workspace_id, org_id, retention_days,
                                                   body_bytes_max, redact_paths, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (workspace_id) DO UPDATE SET
                         retention_days = excluded.retention_days,
                         body_bytes_max = excluded.body_bytes_max,
                         redact_paths = excluded.redact_paths,
                         updated_at = excluded.updated_at",
                )
                .bind(workspace_id)
                .bind(org_id)
                .bind(i64::from(settings.retention_days))
                .bind(count_to_sql(settings.body_bytes_max)?)
                .bind(redact_paths.as_str())
                .bind(millis(now))
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
                sqlx::query(
                    "UPDATE request_captures SET expires_at = captured_at + $1
                     WHERE org_id = $2 AND workspace_id = $3",
                )
                .bind(i64::from(settings.retention_days) * MILLIS_A_DAY)
                .bind(org_id)
                .bind(workspace_id)
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            }
            None => {
                sqlx::query("DELETE FROM capture_settings WHERE workspace_id = $1 AND org_id = $2")
                    .bind(workspace_id)
                    .bind(org_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
            }
        }
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)
    }

    /// Keeps a capture; a request id already captured keeps its first.
    async fn insert_capture(&self, capture: &RequestCapture) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO request_captures (org_id, request_id, workspace_id, captured_at, expires_at,
                                           request_body, request_bytes, request_truncated,
                                           response_kind, response_body, response_bytes,
                                           response_truncated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (org_id, request_id) DO NOTHING",
        )
        .bind(capture.org_id.as_str())
        .bind(capture.request_id.as_str())
        .bind(capture.workspace_id.as_str())
        .bind(millis(capture.captured_at))
        .bind(millis(capture.expires_at))
        .bind(capture.request_body.as_str())
        .bind(count_to_sql(capture.request_bytes)?)
        .bind(i64::from(capture.request_truncated))
        .bind(capture.response_kind.as_str())
        .bind(capture.response_body.as_str())
        .bind(count_to_sql(capture.response_bytes)?)
        .bind(i64::from(capture.response_truncated))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    /// The organization's capture of `request_id`; another organization's is `None`.
    async fn request_capture(
        &self,
        org_id: &str,
        request_id: &str,
    ) -> Result<Option<RequestCapture>, StoreError> {
        sqlx::query("SELECT * FROM request_captures WHERE org_id = $1 AND request_id = $2")
            .bind(org_id)
            .bind(request_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .as_ref()
            .map(capture_from_row)
            .transpose()
    }

    /// Deletes the captures whose retention ended at or before `now`; how many.
    async fn purge_captures(&self, now: Timestamp) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM request_captures WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&purged))
    }
}
