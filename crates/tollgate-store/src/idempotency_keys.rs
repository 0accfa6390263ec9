//! Idempotency keys of the control plane (#22): one row per organization and key, holding
//! the request that claimed it (method, path, SHA-256 of the body), whether its answer is
//! in, and that answer (status, content type, location, body) to replay. A claim is an
//! insert that lands, or finds the key's row: the first request of a key is the one whose
//! insert landed, on any replica. A row past its expiry is taken over by the next claim as
//! if it were absent, and deleted by the maintenance pass otherwise. An answer is written,
//! and a claim given back, only by the claim that took the key (its `created_at`), so a
//! late finisher cannot touch a later claim of the same key. What a repeat gets is the
//! core's rule (`tollgate_core::idempotency`); no money lives here.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::idempotency::{FirstUse, RequestFingerprint};

use crate::Store;
use crate::codec::{millis, timestamp_from_sql, unknown_text};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::{DbRow, column};

/// A claim to make: this request takes the organization's key until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub org_id: String,
    pub key: String,
    pub request: RequestFingerprint,
    pub claimed_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An answer as kept for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotentAnswer {
    /// The HTTP status.
    pub status: u16,
    pub content_type: Option<String>,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    pub body: String,
}

/// A key's row as another claim found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request: RequestFingerprint,
    /// `Some` once the first request was answered.
    pub answer: Option<IdempotentAnswer>,
    pub claimed_at: Timestamp,
    pub expires_at: Timestamp,
}

impl IdempotencyRecord {
    pub fn first_use(&self) -> FirstUse {
        match self.answer {
            Some(_) => FirstUse::Answered,
            None => FirstUse::InFlight,
        }
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is this claim's.
    Claimed,
    /// The key is another request's, unexpired.
    Taken(IdempotencyRecord),
}

/// How often a claim looks again for a row that vanished between its insert and its read
/// (the first request released it meanwhile) before calling it contention.
const CLAIM_ATTEMPTS: usize = 3;

fn record_from_row(row: &impl DbRow) -> Result<IdempotencyRecord, StoreError> {
    let state: String = column(row, "state")?;
    let answer = match state.as_str() {
        "in_flight" => None,
        "done" => {
            let status: Option<i64> = column(row, "response_status")?;
            let status = status
                .and_then(|status| u16::try_from(status).ok())
                .ok_or_else(|| {
                    StoreError::Database(format!("answered idempotency key with status {status:?}"))
                })?;
            Some(IdempotentAnswer {
                status,
                content_type: column(row, "response_content_type")?,
                location: column(row, "response_location")?,
                body: column::<Option<String>>(row, "response_body")?.unwrap_or_default(),
            })
        }
        other => return Err(unknown_text("idempotency key state", other)),
    };
    Ok(IdempotencyRecord {
        request: RequestFingerprint {
            method: column(row, "method")?,
            path: column(row, "path")?,
            body_sha256: column(row, "body_sha256")?,
        },
        answer,
        claimed_at: timestamp_from_sql(column(row, "created_at")?)?,
        expires_at: timestamp_from_sql(column(row, "expires_at")?)?,
    })
}

/// The idempotency-key queries, the same on every backend.
pub(crate) trait IdempotencyKeys: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn claim_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            // The insert lands on an absent key, or takes over an expired row; a row that
            // still lives stays as it is, and the statement returns nothing.
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (org_id, idempotency_key, method, path, body_sha256, state,
                                               created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, 'in_flight', $6, $7)
                 ON CONFLICT (org_id, idempotency_key) DO UPDATE SET
                     method = excluded.method, path = excluded.path, body_sha256 = excluded.body_sha256,
                     state = 'in_flight', response_status = NULL, response_content_type = NULL,
                     response_location = NULL, response_body = NULL,
                     created_at = excluded.created_at, expires_at = excluded.expires_at
                 WHERE idempotency_keys.expires_at <= $6
                 RETURNING org_id",
            )
            .bind(claim.org_id.as_str())
            .bind(claim.key.as_str())
            .bind(claim.request.method.as_str())
            .bind(claim.request.path.as_str())
            .bind(claim.request.body_sha256.as_str())
            .bind(millis(claim.claimed_at))
            .bind(millis(claim.expires_at))
            .fetch_optional(self.write_pool())
            .await
            .map_err(Self::store_error)?;
            if claimed.is_some() {
                return Ok(ClaimOutcome::Claimed);
            }
            let row = sqlx::query(
                "SELECT method, path, body_sha256, state, response_status, response_content_type,
                        response_location, response_body, created_at, expires_at
                 FROM idempotency_keys WHERE org_id = $1 AND idempotency_key = $2",
            )
            .bind(claim.org_id.as_str())
            .bind(claim.key.as_str())
            .fetch_optional(self.write_pool())
            .await
            .map_err(Self::store_error)?;
            if let Some(row) = row {
                return Ok(ClaimOutcome::Taken(record_from_row(&row)?));
            }
        }
        Err(StoreError::Busy)
    }

    async fn answer_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        claimed_at: Timestamp,
        answer: &IdempotentAnswer,
    ) -> Result<bool, StoreError> {
        let written = sqlx::query(
            "UPDATE idempotency_keys
             SET state = 'done', response_status = $4, response_content_type = $5,
                 response_location = $6, response_body = $7
             WHERE org_id = $1 AND idempotency_key = $2 AND created_at = $3 AND state = 'in_flight'",
        )
        .bind(org_id)
        .bind(key)
        .bind(millis(claimed_at))
        .bind(i64::from(answer.status))
        .bind(answer.content_type.as_deref())
        .bind(answer.location.as_deref())
        .bind(answer.body.as_str())
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&written) == 1)
    }

    async fn release_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        claimed_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE org_id = $1 AND idempotency_key = $2 AND created_at = $3 AND state = 'in_flight'",
        )
        .bind(org_id)
        .bind(key)
        .bind(millis(claimed_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted) == 1)
    }

    async fn delete_expired_idempotency_keys(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted))
    }
}

/// The façade over idempotency keys.
impl Store {
    /// Claims the organization's key for a request, unless an unexpired row holds it: then
    /// that row, for the caller to judge the repeat. Of concurrent claims of one key, on any
    /// replica, exactly one gets `Claimed`.
    pub async fn claim_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        dispatch!(self.claim_idempotency_key(claim))
    }

    /// Keeps the answer of the claim made at `claimed_at`; false if that claim no longer
    /// holds the key (it was released, or expired and taken over).
    pub async fn answer_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        claimed_at: Timestamp,
        answer: &IdempotentAnswer,
    ) -> Result<bool, StoreError> {
        dispatch!(self.answer_idempotency_key(org_id, key, claimed_at, answer))
    }

    /// Gives back the unanswered claim made at `claimed_at`, so the key may be used again;
    /// false if that claim no longer holds the key.
    pub async fn release_idempotency_key(
        &self,
        org_id: &str,
        key: &str,
        claimed_at: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.release_idempotency_key(org_id, key, claimed_at))
    }

    /// Deletes the keys expired at `now`; how many.
    pub async fn delete_expired_idempotency_keys(&self, now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.delete_expired_idempotency_keys(now))
    }
}
