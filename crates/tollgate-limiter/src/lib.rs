//! Admission state for rate limits: owns the token buckets of every (scope, model class,
//! metric) and applies all-or-nothing admission, corrections and peeks to them. Embedded
//! mode keeps the buckets in process memory, which is right for one process; a Redis
//! backend for scale-out will sit behind the same `Limiter` API and the same core math.
//!
//! The arithmetic lives in `tollgate_core::ratelimit`; this crate only stores states and
//! applies the core's decisions under a lock. It must not hold money or talk to the
//! database, and its signatures mention only core types and its own.

use std::fmt;

use tollgate_core::Timestamp;
use tollgate_core::ratelimit::BucketSnapshot;

mod local;

pub use crate::local::LocalLimiter;

/// What a bucket counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Requests,
    InputTokens,
    OutputTokens,
    CountTokensRequests,
}

impl fmt::Display for Metric {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Metric::Requests => "requests",
            Metric::InputTokens => "input tokens",
            Metric::OutputTokens => "output tokens",
            Metric::CountTokensRequests => "count_tokens requests",
        })
    }
}

/// One bucket: a scope (organization or workspace id), a model class and a metric.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// An organization or workspace id.
    pub scope_id: String,
    pub model_class: String,
    pub metric: Metric,
}

/// A demand for `amount` from the bucket `key`, whose limit is `per_minute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub key: BucketKey,
    pub per_minute: u64,
    pub amount: u64,
}

/// Every demand was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// One per demand, in the same order, after taking.
    pub snapshots: Vec<BucketSnapshot>,
}

/// Why a request was not admitted; nothing was taken from any bucket.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// Not enough in the bucket now; retrying `retry_after_nanos` later succeeds if nobody
    /// else takes the tokens first. Of several exhausted buckets, the longest wait is named.
    #[error(
        "{} rate limit of {per_minute} per minute for {} ({}) exhausted; retry after {retry_after_nanos} ns",
        .key.metric, .key.scope_id, .key.model_class
    )]
    Exhausted {
        key: BucketKey,
        per_minute: u64,
        retry_after_nanos: i64,
    },
    /// The demand is larger than the bucket: no wait helps.
    #[error(
        "{amount} {} exceed the rate limit of {per_minute} per minute for {} ({})",
        .key.metric, .key.scope_id, .key.model_class
    )]
    ExceedsCapacity {
        key: BucketKey,
        per_minute: u64,
        amount: u64,
    },
}

/// The limiter could not decide. Embedded mode only fails on an instant outside the
/// nanosecond range (before 1677 or after 2262); the Redis backend will fail on I/O.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

/// The façade the service holds; one variant per backend.
#[derive(Clone, Debug)]
pub enum Limiter {
    Local(LocalLimiter),
}

impl Limiter {
    /// An empty in-process limiter (embedded mode).
    pub fn local() -> Limiter {
        Limiter::Local(LocalLimiter::default())
    }

    /// Takes every demand or none (`tollgate_core::ratelimit::admit` under one lock).
    /// Demands on the same key are taken together: their amounts add up and the lowest
    /// limit applies.
    pub async fn admit(
        &self,
        demands: &[Demand],
        now: Timestamp,
    ) -> Result<Result<Admitted, LimitRefusal>, LimiterError> {
        let now_nanos = nanos(now)?;
        match self {
            Limiter::Local(local) => Ok(local.admit(demands, now_nanos)),
        }
    }

    /// Gives `delta_refund` tokens back to a bucket (never past full), or takes
    /// `-delta_refund` more without refusing when it is negative. Used to correct estimates
    /// at settlement and to undo an admission when a later check (credit, spend limit)
    /// refuses the request.
    pub async fn adjust(
        &self,
        key: &BucketKey,
        per_minute: u64,
        delta_refund: i64,
        now: Timestamp,
    ) -> Result<(), LimiterError> {
        let now_nanos = nanos(now)?;
        match self {
            Limiter::Local(local) => local.adjust(key, per_minute, delta_refund, now_nanos),
        }
        Ok(())
    }

    /// The buckets as they are, without taking (amounts are ignored): for response headers
    /// and `limits show`.
    pub async fn peek(
        &self,
        demands: &[Demand],
        now: Timestamp,
    ) -> Result<Vec<BucketSnapshot>, LimiterError> {
        let now_nanos = nanos(now)?;
        match self {
            Limiter::Local(local) => Ok(local.peek(demands, now_nanos)),
        }
    }
}

fn nanos(now: Timestamp) -> Result<i64, LimiterError> {
    now.timestamp_nanos_opt()
        .ok_or_else(|| LimiterError::Unavailable(format!("{now} is outside the nanosecond clock range")))
}
