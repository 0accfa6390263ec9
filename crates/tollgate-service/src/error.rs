//! What a use case can answer besides success: a refusal the caller can act on, or an
//! infrastructure failure. HTTP crates map these to their own envelopes.

use tollgate_core::ledger::InsufficientCredit;
use tollgate_core::spend::SpendLimitReached;
use tollgate_limiter::Metric;
use tollgate_store::StoreError;

use crate::payments::PaymentError;

/// Whose rate limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    Organization,
    Workspace,
}

/// A rate-limit refusal, with what the client needs to know to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub scope: LimitScope,
    pub scope_id: String,
    pub metric: Metric,
    pub per_minute: u64,
    pub model: String,
    /// When retrying succeeds (`None` for a request that can never fit).
    pub retry_after_seconds: Option<u64>,
    /// For a request larger than the bucket: what it asked for.
    pub amount: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The input is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    InsufficientCredit(#[from] InsufficientCredit),
    #[error(transparent)]
    SpendLimitReached(#[from] SpendLimitReached),
    #[error("rate limited: {0:?}")]
    RateLimited(RateLimited),
    /// The request is larger than the bucket itself: waiting will not help.
    #[error("the request exceeds a rate limit's capacity: {0:?}")]
    ExceedsRateLimit(RateLimited),
    /// The organization already has `limit` upstream calls in flight in this process.
    #[error("the organization has {limit} requests in flight, its limit")]
    TooManyConcurrentCalls { limit: usize },
    /// The same idempotency key was used for a different request.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    /// A dependency other than the store is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// The rate-limit store (Redis) did not answer: nothing was admitted or reserved.
    #[error("the rate-limit store is unavailable: {0}")]
    LimiterUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// The dependency that is down, named as both HTTP surfaces tell the client ("the
    /// database", "the rate-limit store"), if that is what went wrong: answered 503 with
    /// `retry-after` rather than 500.
    pub fn unavailable_dependency(&self) -> Option<&'static str> {
        match self {
            ServiceError::Store(error) if error.is_unavailable() => Some("database"),
            ServiceError::LimiterUnavailable(_) => Some("rate-limit store"),
            _ => None,
        }
    }
}

impl<E: Into<ServiceError>> From<tollgate_store::TxError<E>> for ServiceError {
    fn from(error: tollgate_store::TxError<E>) -> ServiceError {
        match error {
            tollgate_store::TxError::Rejected(rejection) => rejection.into(),
            tollgate_store::TxError::Store(store) => ServiceError::Store(store),
        }
    }
}

impl From<tollgate_store::NameTaken> for ServiceError {
    fn from(taken: tollgate_store::NameTaken) -> ServiceError {
        ServiceError::Invalid(taken.to_string())
    }
}

impl From<tollgate_store::GrantRejection> for ServiceError {
    fn from(rejection: tollgate_store::GrantRejection) -> ServiceError {
        ServiceError::Invalid(rejection.to_string())
    }
}

impl From<tollgate_store::IdempotencyKeyReused> for ServiceError {
    fn from(reused: tollgate_store::IdempotencyKeyReused) -> ServiceError {
        ServiceError::Conflict(format!("{reused}: use a new key for a different purchase"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_that_is_down_is_named() {
        let down = ServiceError::Store(StoreError::Unavailable("no connection within 2 s".into()));
        assert_eq!(down.unavailable_dependency(), Some("database"));
        let limiter = ServiceError::LimiterUnavailable("timeout".into());
        assert_eq!(limiter.unavailable_dependency(), Some("rate-limit store"));
        let bug = ServiceError::Store(StoreError::Invariant("a bug".into()));
        assert_eq!(bug.unavailable_dependency(), None);
    }
}
