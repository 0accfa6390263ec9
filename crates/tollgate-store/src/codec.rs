//! Conversions every adapter shares: timestamps as unix milliseconds, token counts as
//! signed database integers, and the two ways a stored value or a caller can be wrong.

use tollgate_core::Timestamp;
use tollgate_core::attribution::ClientLabel;
use tollgate_core::catalog::UpstreamAttempt;
use tollgate_core::keys::AllowedModels;

use crate::error::StoreError;

/// An invariant violation: logged loudly here, then returned so the caller rolls back.
pub(crate) fn invariant(message: String) -> StoreError {
    tracing::error!(%message, "ledger invariant violated; rolling the transaction back");
    StoreError::Invariant(message)
}

/// A set-based write that touched other than one row per item: an invariant violation, so
/// the transaction rolls back rather than write some of them (or one twice).
pub(crate) fn check_rows_written(written: u64, expected: usize, what: &str) -> Result<(), StoreError> {
    if usize::try_from(written).ok() != Some(expected) {
        return Err(invariant(format!("{written} of {expected} {what} were written")));
    }
    Ok(())
}

pub(crate) fn unknown_text(what: &str, text: &str) -> StoreError {
    StoreError::Database(format!("unknown {what} '{text}' in the database"))
}

/// Timestamps are stored as unix milliseconds; anything finer is dropped.
pub(crate) fn millis(instant: Timestamp) -> i64 {
    instant.timestamp_millis()
}

pub(crate) fn timestamp_from_sql(unix_millis: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_millis(unix_millis)
        .ok_or_else(|| StoreError::Database(format!("timestamp {unix_millis} ms is out of range")))
}

/// The instant as it will read back from the database.
pub(crate) fn truncate_to_millis(instant: Timestamp) -> Result<Timestamp, StoreError> {
    timestamp_from_sql(millis(instant))
}

pub(crate) fn count_to_sql(count: u64) -> Result<i64, StoreError> {
    i64::try_from(count)
        .map_err(|_| StoreError::Database(format!("count {count} does not fit a database integer")))
}

pub(crate) fn count_from_sql(count: i64) -> Result<u64, StoreError> {
    u64::try_from(count).map_err(|_| StoreError::Database(format!("negative count {count} in the database")))
}

/// A client label as its nullable text column holds it.
pub(crate) fn label_text(label: Option<&ClientLabel>) -> Option<&str> {
    label.map(ClientLabel::as_str)
}

/// A row that could not be read as the shared queries expect.
pub(crate) fn store_decode(error: sqlx::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

/// A request's upstream attempts as stored (migration 0020): one line each, the deployment
/// and, for a failure, a tab and the error; NULL for a request that called no upstream.
pub(crate) fn attempts_to_sql(attempts: &[UpstreamAttempt]) -> Option<String> {
    if attempts.is_empty() {
        return None;
    }
    let lines: Vec<String> = attempts
        .iter()
        .map(|attempt| {
            // A provider's name is configuration: keep it from breaking the lines.
            let deployment = attempt.deployment.replace(['\t', '\n', '\r'], " ");
            match &attempt.error {
                Some(error) => format!("{deployment}\t{}", error.replace(['\t', '\n', '\r'], " ")),
                None => deployment,
            }
        })
        .collect();
    Some(lines.join("\n"))
}

pub(crate) fn attempts_from_sql(text: Option<&str>) -> Vec<UpstreamAttempt> {
    text.unwrap_or_default()
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once('\t') {
            Some((deployment, error)) => UpstreamAttempt {
                deployment: deployment.to_owned(),
                error: Some(error.to_owned()),
            },
            None => UpstreamAttempt {
                deployment: line.to_owned(),
                error: None,
            },
        })
        .collect()
}

/// A key's allowed models as stored: comma-separated (an entry has no comma), NULL for all.
pub(crate) fn allowed_models_text(allowed: &AllowedModels) -> Option<String> {
    (!allowed.allows_all()).then(|| allowed.entries().join(","))
}

pub(crate) fn allowed_models_from_text(text: Option<String>) -> AllowedModels {
    AllowedModels::from_stored(
        text.unwrap_or_default()
            .split(',')
            .filter(|entry| !entry.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}
