//! What the usage and cost reports read: rows of the hourly rollup (`usage_hourly`, kept
//! by a trigger in the settlement's transaction), raw usage records cut into minutes for
//! minute-wide reports or by client session for reports by session, and the ledger's own
//! settled charges for a window, which a report must equal. Sums of money are added in Rust
//! (`rollup`), with checked arithmetic, never in SQL; `usage_rollup_problems` recomputes
//! the rollup from the records in one read snapshot.
//!
//! Written once for both backends over `Dialect`; each adapter's `reports` module only
//! forwards to it. The one clause the databases spell differently, the filter by session,
//! is the dialect's `and_any_of`.

use std::collections::BTreeMap;

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::BucketWidth;

use crate::admin_model::UsageRollupRow;
use crate::codec::millis;
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rollup::{
    CHARGED_STATUSES, HOUR_MILLIS, MINUTE_MILLIS, Rollup, add_record, bucket_millis, rollup_key,
    rollup_problems, sum_charges,
};
use crate::rows::{DbRow, charged_record_from_row, column, rollup_row_from_row, session_record_from_row};

/// The report queries, the same on every backend. The bounds name what they ask of the sqlx
/// driver; both drivers have it.
pub(crate) trait Reports: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'r> (i64,): FromRow<'r, <Self::Db as Database>::Row>,
{
    async fn usage_hourly(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        sqlx::query(
            "SELECT hour AS bucket, workspace_id, api_key_id, model, context_window, requests,
                    input_tokens, output_tokens, cache_creation_5m_input_tokens,
                    cache_creation_1h_input_tokens, cache_read_input_tokens, cost_nanos,
                    web_search_requests, cost_input_nanos, cost_output_nanos,
                    cost_cache_write_5m_nanos, cost_cache_write_1h_nanos, cost_cache_read_nanos,
                    cost_web_search_nanos
             FROM usage_hourly WHERE org_id = $1 AND hour >= $2 AND hour < $3
             ORDER BY hour",
        )
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(rollup_row_from_row)
        .collect()
    }

    async fn usage_by_minute(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT u.ended_at, u.workspace_id, COALESCE(u.api_key_id, '') AS api_key_id, u.model,
                    u.input_tokens, u.output_tokens, u.cache_creation_5m_input_tokens,
                    u.cache_creation_1h_input_tokens, u.cache_read_input_tokens,
                    u.cost_input_nanos, u.cost_output_nanos, u.cost_cache_write_5m_nanos,
                    u.cost_cache_write_1h_nanos, u.cost_cache_read_nanos, u.cost_web_search_nanos,
                    u.web_search_requests,
                    COALESCE(r.charged, 0) AS charged
             FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
             WHERE u.org_id = $1 AND u.ended_at >= $2 AND u.ended_at < $3
               AND u.status IN {CHARGED_STATUSES}"
        ))
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let mut grouped = Rollup::new();
        for row in &rows {
            add_record(&mut grouped, charged_record_from_row(row)?, MINUTE_MILLIS)?;
        }
        Ok(grouped.into_values().collect())
    }

    async fn usage_by_session(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
        width: BucketWidth,
        session_ids: &[String],
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        let only_sessions = Self::and_any_of("u.client_session_id", 4, session_ids.len());
        let sql = format!(
            "SELECT u.ended_at, u.workspace_id, COALESCE(u.api_key_id, '') AS api_key_id, u.model,
                    u.input_tokens, u.output_tokens, u.cache_creation_5m_input_tokens,
                    u.cache_creation_1h_input_tokens, u.cache_read_input_tokens,
                    u.cost_input_nanos, u.cost_output_nanos, u.cost_cache_write_5m_nanos,
                    u.cost_cache_write_1h_nanos, u.cost_cache_read_nanos, u.cost_web_search_nanos,
                    u.web_search_requests,
                    COALESCE(r.charged, 0) AS charged, u.client_session_id
             FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
             WHERE u.org_id = $1 AND u.ended_at >= $2 AND u.ended_at < $3
               AND u.status IN {CHARGED_STATUSES}{only_sessions}"
        );
        let query = sqlx::query(&sql).bind(org_id).bind(millis(from)).bind(millis(to));
        let rows = Self::bind_any_of(query, session_ids)
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        let mut grouped = Rollup::new();
        for row in &rows {
            add_record(&mut grouped, session_record_from_row(row)?, bucket_millis(width))?;
        }
        Ok(grouped.into_values().collect())
    }

    async fn settled_charges(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        let amounts: Vec<i64> = sqlx::query_scalar(
            "SELECT amount FROM transfers
             WHERE org_id = $1 AND kind = 'usage' AND created_at >= $2 AND created_at < $3",
        )
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        sum_charges(org_id, amounts)
    }

    async fn usage_rollup_problems(&self) -> Result<Vec<String>, StoreError> {
        let mut transaction = self.begin_read().await?;
        let records = sqlx::query(&format!(
            "SELECT u.org_id, u.ended_at, u.workspace_id, COALESCE(u.api_key_id, '') AS api_key_id,
                    u.model, u.input_tokens, u.output_tokens, u.cache_creation_5m_input_tokens,
                    u.cache_creation_1h_input_tokens, u.cache_read_input_tokens,
                    u.cost_input_nanos, u.cost_output_nanos, u.cost_cache_write_5m_nanos,
                    u.cost_cache_write_1h_nanos, u.cost_cache_read_nanos, u.cost_web_search_nanos,
                    u.web_search_requests,
                    COALESCE(r.charged, 0) AS charged
             FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
             WHERE u.status IN {CHARGED_STATUSES}"
        ))
        .fetch_all(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let stored = sqlx::query(
            "SELECT org_id, hour AS bucket, workspace_id, api_key_id, model, context_window,
                    requests, input_tokens, output_tokens, cache_creation_5m_input_tokens,
                    cache_creation_1h_input_tokens, cache_read_input_tokens, cost_nanos,
                    web_search_requests, cost_input_nanos, cost_output_nanos,
                    cost_cache_write_5m_nanos, cost_cache_write_1h_nanos, cost_cache_read_nanos,
                    cost_web_search_nanos
             FROM usage_hourly",
        )
        .fetch_all(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;

        let mut expected: BTreeMap<String, Rollup> = BTreeMap::new();
        for row in &records {
            let org_id: String = column(row, "org_id")?;
            add_record(
                expected.entry(org_id).or_default(),
                charged_record_from_row(row)?,
                HOUR_MILLIS,
            )?;
        }
        let mut found: BTreeMap<String, Rollup> = BTreeMap::new();
        for row in &stored {
            let org_id: String = column(row, "org_id")?;
            let rollup = rollup_row_from_row(row)?;
            found
                .entry(org_id)
                .or_default()
                .insert(rollup_key(&rollup), rollup);
        }
        Ok(rollup_problems(&expected, &found))
    }
}
