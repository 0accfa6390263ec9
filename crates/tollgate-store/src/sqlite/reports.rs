//! What the usage and cost reports read: rows of the hourly rollup (`usage_hourly`, kept
//! by a trigger in the settlement's transaction), raw usage records cut into minutes for
//! minute-wide reports, and the ledger's own settled charges for a window, which a report
//! must equal. Sums of money are added here in Rust, with checked arithmetic, never in SQL;
//! `usage_rollup_problems` recomputes the rollup from the records.

use std::collections::BTreeMap;

use sqlx::sqlite::SqliteRow;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::ContextWindow;
use tollgate_core::usage::TokenUsage;

use crate::Store;
use crate::admin_model::UsageRollupRow;
use crate::error::StoreError;
use crate::sqlite::{
    SqliteStore, column, count_from_sql, millis, store_error, timestamp_from_sql, unknown_text,
};

const MINUTE_MILLIS: i64 = 60_000;
const HOUR_MILLIS: i64 = 3_600_000;

/// Statuses whose usage is billed, as the rollup trigger counts them.
const CHARGED_STATUSES: &str = "('succeeded', 'client_disconnected')";

/// The key of one rollup row: bucket, workspace, key, model, context window.
type RollupKey = (i64, String, String, String, ContextWindow);

impl SqliteStore {
    async fn usage_hourly(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        sqlx::query(
            "SELECT hour AS bucket, workspace_id, api_key_id, model, context_window, requests,
                    input_tokens, output_tokens, cache_creation_5m_input_tokens,
                    cache_creation_1h_input_tokens, cache_read_input_tokens, cost_nanos
             FROM usage_hourly WHERE org_id = ? AND hour >= ? AND hour < ?
             ORDER BY hour",
        )
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
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
                    COALESCE(r.charged, 0) AS charged
             FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
             WHERE u.org_id = ? AND u.ended_at >= ? AND u.ended_at < ?
               AND u.status IN {CHARGED_STATUSES}"
        ))
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        let mut grouped: BTreeMap<RollupKey, UsageRollupRow> = BTreeMap::new();
        for row in &rows {
            add_record(&mut grouped, row, MINUTE_MILLIS)?;
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
             WHERE org_id = ? AND kind = 'usage' AND created_at >= ? AND created_at < ?",
        )
        .bind(org_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?;
        amounts.into_iter().try_fold(NanoUsd::ZERO, |total, amount| {
            total
                .checked_add(NanoUsd::from_nanos(amount))
                .ok_or_else(|| StoreError::Database(format!("the settled charges of {org_id} overflow")))
        })
    }

    async fn usage_rollup_problems(&self) -> Result<Vec<String>, StoreError> {
        let mut transaction = self.begin_read().await?;
        let records = sqlx::query(&format!(
            "SELECT u.org_id, u.ended_at, u.workspace_id, COALESCE(u.api_key_id, '') AS api_key_id,
                    u.model, u.input_tokens, u.output_tokens, u.cache_creation_5m_input_tokens,
                    u.cache_creation_1h_input_tokens, u.cache_read_input_tokens,
                    COALESCE(r.charged, 0) AS charged
             FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
             WHERE u.status IN {CHARGED_STATUSES}"
        ))
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;
        let stored = sqlx::query(
            "SELECT org_id, hour AS bucket, workspace_id, api_key_id, model, context_window,
                    requests, input_tokens, output_tokens, cache_creation_5m_input_tokens,
                    cache_creation_1h_input_tokens, cache_read_input_tokens, cost_nanos
             FROM usage_hourly",
        )
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;

        let mut expected: BTreeMap<String, BTreeMap<RollupKey, UsageRollupRow>> = BTreeMap::new();
        for row in &records {
            let org_id: String = column(row, "org_id")?;
            add_record(expected.entry(org_id).or_default(), row, HOUR_MILLIS)?;
        }
        let mut problems = Vec::new();
        let mut found: BTreeMap<String, BTreeMap<RollupKey, UsageRollupRow>> = BTreeMap::new();
        for row in &stored {
            let org_id: String = column(row, "org_id")?;
            let rollup = rollup_row_from_row(row)?;
            found
                .entry(org_id)
                .or_default()
                .insert(rollup_key(&rollup), rollup);
        }
        for (org_id, rows) in &expected {
            for (key, row) in rows {
                let stored = found.get(org_id).and_then(|rows| rows.get(key));
                if stored != Some(row) {
                    problems.push(format!(
                        "usage rollup of {org_id} at {key:?}: stored {stored:?}, recomputed {row:?}"
                    ));
                }
            }
        }
        for (org_id, rows) in &found {
            for key in rows.keys() {
                if expected.get(org_id).and_then(|rows| rows.get(key)).is_none() {
                    problems.push(format!(
                        "usage rollup of {org_id} at {key:?} has no usage records"
                    ));
                }
            }
        }
        Ok(problems)
    }
}

fn rollup_key(row: &UsageRollupRow) -> RollupKey {
    (
        millis(row.bucket_start),
        row.workspace_id.clone(),
        row.api_key_id.clone().unwrap_or_default(),
        row.model.clone(),
        row.context_window,
    )
}

/// Adds one usage record to its bucket of `width_millis`.
fn add_record(
    grouped: &mut BTreeMap<RollupKey, UsageRollupRow>,
    row: &SqliteRow,
    width_millis: i64,
) -> Result<(), StoreError> {
    let ended_at: i64 = column(row, "ended_at")?;
    let usage = usage_from_row(row)?;
    let charged = NanoUsd::from_nanos(column(row, "charged")?);
    let api_key_id: String = column(row, "api_key_id")?;
    let bucket = ended_at - ended_at.rem_euclid(width_millis);
    let record = UsageRollupRow {
        bucket_start: timestamp_from_sql(bucket)?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: Some(api_key_id).filter(|id| !id.is_empty()),
        model: column(row, "model")?,
        context_window: ContextWindow::of(&usage),
        requests: 1,
        usage,
        charged,
    };
    let key = rollup_key(&record);
    match grouped.get_mut(&key) {
        Some(total) => add_into(total, &record)?,
        None => {
            grouped.insert(key, record);
        }
    }
    Ok(())
}

/// Adds `row`'s counts and charge into `total`, checked.
pub(crate) fn add_into(total: &mut UsageRollupRow, row: &UsageRollupRow) -> Result<(), StoreError> {
    let overflow = || StoreError::Database("a usage total overflows".to_owned());
    let add = |left: u64, right: u64| left.checked_add(right).ok_or_else(overflow);
    total.requests = add(total.requests, row.requests)?;
    total.usage = TokenUsage {
        input_tokens: add(total.usage.input_tokens, row.usage.input_tokens)?,
        output_tokens: add(total.usage.output_tokens, row.usage.output_tokens)?,
        cache_creation_5m_input_tokens: add(
            total.usage.cache_creation_5m_input_tokens,
            row.usage.cache_creation_5m_input_tokens,
        )?,
        cache_creation_1h_input_tokens: add(
            total.usage.cache_creation_1h_input_tokens,
            row.usage.cache_creation_1h_input_tokens,
        )?,
        cache_read_input_tokens: add(
            total.usage.cache_read_input_tokens,
            row.usage.cache_read_input_tokens,
        )?,
    };
    total.charged = total.charged.checked_add(row.charged).ok_or_else(overflow)?;
    Ok(())
}

fn usage_from_row(row: &SqliteRow) -> Result<TokenUsage, StoreError> {
    Ok(TokenUsage {
        input_tokens: count_from_sql(column(row, "input_tokens")?)?,
        output_tokens: count_from_sql(column(row, "output_tokens")?)?,
        cache_creation_5m_input_tokens: count_from_sql(column(row, "cache_creation_5m_input_tokens")?)?,
        cache_creation_1h_input_tokens: count_from_sql(column(row, "cache_creation_1h_input_tokens")?)?,
        cache_read_input_tokens: count_from_sql(column(row, "cache_read_input_tokens")?)?,
    })
}

fn rollup_row_from_row(row: &SqliteRow) -> Result<UsageRollupRow, StoreError> {
    let window: String = column(row, "context_window")?;
    let api_key_id: String = column(row, "api_key_id")?;
    Ok(UsageRollupRow {
        bucket_start: timestamp_from_sql(column(row, "bucket")?)?,
        workspace_id: column(row, "workspace_id")?,
        api_key_id: Some(api_key_id).filter(|id| !id.is_empty()),
        model: column(row, "model")?,
        context_window: ContextWindow::parse(&window)
            .ok_or_else(|| unknown_text("context window", &window))?,
        requests: count_from_sql(column(row, "requests")?)?,
        usage: usage_from_row(row)?,
        charged: NanoUsd::from_nanos(column(row, "cost_nanos")?),
    })
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
        self.sqlite.usage_hourly(org_id, from, to).await
    }

    /// The same by minute, read from the usage records themselves (windows of a day at
    /// most, which the records' (org, ended_at) index serves).
    pub async fn usage_by_minute(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRollupRow>, StoreError> {
        self.sqlite.usage_by_minute(org_id, from, to).await
    }

    /// What the ledger posted to the organization's spend account for usage in
    /// `[from, to)`: the figure a cost report of the same window must equal.
    pub async fn settled_charges(
        &self,
        org_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        self.sqlite.settled_charges(org_id, from, to).await
    }

    /// Recomputes the hourly rollup from the usage records and the reservations' charges;
    /// each disagreement is a problem. Empty means the reports read the truth.
    pub async fn usage_rollup_problems(&self) -> Result<Vec<String>, StoreError> {
        self.sqlite.usage_rollup_problems().await
    }
}
