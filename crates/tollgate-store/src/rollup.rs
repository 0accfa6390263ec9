//! Backend-neutral arithmetic of the usage reports: usage records cut into buckets and
//! summed with checked arithmetic (never in SQL), and the comparison of the stored hourly
//! rollup with one recomputed from the records. The adapters only read the rows.

use std::collections::BTreeMap;

use tollgate_core::money::NanoUsd;
use tollgate_core::reports::{BucketWidth, ContextWindow};
use tollgate_core::usage::TokenUsage;

use crate::admin_model::UsageRollupRow;
use crate::codec::{millis, timestamp_from_sql};
use crate::error::StoreError;

pub(crate) const MINUTE_MILLIS: i64 = 60_000;
pub(crate) const HOUR_MILLIS: i64 = 3_600_000;
const DAY_MILLIS: i64 = 86_400_000;

/// The width of a report bucket in milliseconds (UTC days start at multiples of a day).
pub(crate) fn bucket_millis(width: BucketWidth) -> i64 {
    match width {
        BucketWidth::Minute => MINUTE_MILLIS,
        BucketWidth::Hour => HOUR_MILLIS,
        BucketWidth::Day => DAY_MILLIS,
    }
}

/// Statuses whose usage is billed, as the rollup trigger counts them.
pub(crate) const CHARGED_STATUSES: &str = "('succeeded', 'client_disconnected')";

/// The key of one rollup row: bucket, workspace, key, model, context window, and the
/// client session (always `None` in the hourly rollup, which has no session dimension).
pub(crate) type RollupKey = (i64, String, String, String, ContextWindow, Option<String>);

/// Rollup rows by their key.
pub(crate) type Rollup = BTreeMap<RollupKey, UsageRollupRow>;

/// One charged usage record, as the reports read it.
pub(crate) struct ChargedRecord {
    pub(crate) ended_at: i64,
    pub(crate) workspace_id: String,
    /// Empty for a request made without a key, as the rollup stores it.
    pub(crate) api_key_id: String,
    pub(crate) model: String,
    pub(crate) usage: TokenUsage,
    pub(crate) charged: NanoUsd,
    pub(crate) lines: tollgate_core::pricing::CostLines,
    /// Only read by the reports by session.
    pub(crate) session_id: Option<String>,
}

pub(crate) fn rollup_key(row: &UsageRollupRow) -> RollupKey {
    (
        millis(row.bucket_start),
        row.workspace_id.clone(),
        row.api_key_id.clone().unwrap_or_default(),
        row.model.clone(),
        row.context_window,
        row.session_id.clone(),
    )
}

/// Adds one usage record to its bucket of `width_millis`.
pub(crate) fn add_record(
    grouped: &mut Rollup,
    record: ChargedRecord,
    width_millis: i64,
) -> Result<(), StoreError> {
    let bucket = record.ended_at - record.ended_at.rem_euclid(width_millis);
    let row = UsageRollupRow {
        bucket_start: timestamp_from_sql(bucket)?,
        workspace_id: record.workspace_id,
        api_key_id: Some(record.api_key_id).filter(|id| !id.is_empty()),
        model: record.model,
        context_window: ContextWindow::of(&record.usage),
        requests: 1,
        usage: record.usage,
        charged: record.charged,
        lines: record.lines,
        session_id: record.session_id,
    };
    let key = rollup_key(&row);
    match grouped.get_mut(&key) {
        Some(total) => add_into(total, &row)?,
        None => {
            grouped.insert(key, row);
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
        web_search_requests: add(total.usage.web_search_requests, row.usage.web_search_requests)?,
        speed: None,
        resident: None,
    };
    total.charged = total.charged.checked_add(row.charged).ok_or_else(overflow)?;
    total.lines = total.lines.checked_add(row.lines).ok_or_else(overflow)?;
    Ok(())
}

/// The sum of an organization's settled charges, checked.
pub(crate) fn sum_charges(org_id: &str, amounts: Vec<i64>) -> Result<NanoUsd, StoreError> {
    amounts.into_iter().try_fold(NanoUsd::ZERO, |total, amount| {
        total
            .checked_add(NanoUsd::from_nanos(amount))
            .ok_or_else(|| StoreError::Database(format!("the settled charges of {org_id} overflow")))
    })
}

/// Where the stored rollup (`found`) differs from the one recomputed from the records
/// (`expected`), both by organization, in words.
pub(crate) fn rollup_problems(
    expected: &BTreeMap<String, Rollup>,
    found: &BTreeMap<String, Rollup>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (org_id, rows) in expected {
        for (key, row) in rows {
            let stored = found.get(org_id).and_then(|rows| rows.get(key));
            if stored != Some(row) {
                problems.push(format!(
                    "usage rollup of {org_id} at {key:?}: stored {stored:?}, recomputed {row:?}"
                ));
            }
        }
    }
    for (org_id, rows) in found {
        for key in rows.keys() {
            if expected.get(org_id).and_then(|rows| rows.get(key)).is_none() {
                problems.push(format!(
                    "usage rollup of {org_id} at {key:?} has no usage records"
                ));
            }
        }
    }
    problems
}
