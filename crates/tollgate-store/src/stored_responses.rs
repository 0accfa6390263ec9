//! Stored responses of the Responses API: kept per workspace until they expire, read and
//! deleted only within their workspace. Their input items and Response object are wire JSON
//! kept as text, never read here; no money lives here.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::codec::{millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A response as it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The whole conversation the response answered, as a JSON list of input items.
    pub input_items: String,
    /// The Response object, as JSON text.
    pub response: String,
}

fn stored_response_from_row(row: &impl DbRow) -> Result<StoredResponse, StoreError> {
    Ok(StoredResponse {
        id: row.text("id").map_err(store_decode)?,
        org_id: row.text("org_id").map_err(store_decode)?,
        workspace_id: row.text("workspace_id").map_err(store_decode)?,
        api_key_id: row.text("api_key_id").map_err(store_decode)?,
        created_at: timestamp_from_sql(row.integer("created_at").map_err(store_decode)?)?,
        expires_at: timestamp_from_sql(row.integer("expires_at").map_err(store_decode)?)?,
        input_items: row.text("input_items").map_err(store_decode)?,
        response: row.text("response").map_err(store_decode)?,
    })
}

/// How a response is kept; the writers run it in their batches (the SQLite writer with its
/// own driver, which numbers `$n` placeholders as written).
pub(crate) const INSERT_STORED_RESPONSE: &str =
    "INSERT INTO stored_responses (id, org_id, workspace_id, api_key_id, created_at, expires_at,
                                   input_items, response)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The stored-response queries, the same on every backend.
pub(crate) trait StoredResponses: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    /// Keeps a response: through the hot path's writer, in its next batch
    /// (`WriterQueue::store_response` says why).
    async fn insert_stored_response(&self, response: StoredResponse) -> Result<(), StoreError> {
        self.hot_writer().store_response(response).await
    }

    async fn stored_response(
        &self,
        workspace_id: &str,
        response_id: &str,
        now: Timestamp,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, workspace_id, api_key_id, created_at, expires_at, input_items, response
             FROM stored_responses WHERE id = $1 AND workspace_id = $2 AND expires_at > $3",
        )
        .bind(response_id)
        .bind(workspace_id)
        .bind(millis(now))
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        row.as_ref().map(stored_response_from_row).transpose()
    }

    async fn delete_stored_response(
        &self,
        workspace_id: &str,
        response_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM stored_responses WHERE id = $1 AND workspace_id = $2 AND expires_at > $3 RETURNING id",
        )
        .bind(response_id)
        .bind(workspace_id)
        .bind(millis(now))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(deleted.is_some())
    }

    async fn delete_expired_responses(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM stored_responses WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted))
    }
}
