//! Admission state for rate limits: owns the token buckets of every (scope, model class,
//! metric) and applies all-or-nothing admission, corrections and peeks to them. Two
//! backends sit behind the same [`Limiter`] API and the same core math:
//!
//! - [`LocalLimiter`] (embedded mode) keeps the buckets in process memory, which is right
//!   for one process.
//! - [`RedisLimiter`] keeps them in one Redis server shared by several gateway replicas, so
//!   that N replicas admit the limit once rather than N times. Every admission is one Lua
//!   script over every bucket of every scope, atomic on the server and timed by the
//!   server's clock (`TIME`), so replicas with skewed clocks still agree.
//!
//! The arithmetic lives in `tollgate_core::ratelimit`; this crate only stores states and
//! applies the core's decisions atomically (under a lock, or inside a script). It must not
//! hold money or talk to the database, and its signatures mention only core types and its
//! own.
//!
//! # The Redis representation
//!
//! A bucket's state is its GCRA `tat` in integer nanoseconds since the epoch (~1.7·10¹⁸),
//! but Lua numbers are doubles, exact only up to 2⁵³ ≈ 9·10¹⁵. So a bucket is stored as the
//! string `"<seconds> <nanoseconds>"` (`tat` split with floor division, nanoseconds in
//! `0..10⁹`), both parts small enough to be exact, under the key
//! `{prefix}rl:{scope_id}:{model_class}:{metric}` (`:` and `%` in the ids are
//! percent-escaped; the metric is a short token: `req`, `in`, `out`, `ctreq`). An absent key
//! is a full bucket; every write sets a TTL of the bucket's backlog plus a minute, so a key
//! disappears once it has been full for a window, like an in-process bucket being pruned.
//!
//! Rust does whatever needs wide integers, with the core's own functions: it merges demands
//! on one key, refuses `ExceedsCapacity` before any I/O, and computes each demand's emission
//! interval (`interval_rounded_up` / `interval_rounded_down`; at most one window when the
//! amount fits the limit, sent as a seconds/nanoseconds pair too; for admission, one of what
//! must fit and one of what is taken, credit included). The script only adds and compares
//! such pairs: it reads `now`, computes each bucket's backlog `max(tat − now, 0)` plus what
//! must fit, takes from every bucket only if none exceeds one window, and returns `now` and
//! the backlogs after taking. Rust then rebuilds `tat = now + backlog` and derives
//! snapshots and retry-afters with the core, so results are identical to embedded mode's
//! for the same `now` (which the tests check with [`RedisClock::Caller`]).
//!
//! All keys of one admission are touched by one script, so the server must be a single
//! Redis (or a primary with replicas), not a Redis Cluster; Redis 5 or later.

use std::fmt;

use tollgate_core::Timestamp;
use tollgate_core::ratelimit::BucketSnapshot;

mod breaker;
mod local;
mod redis_backend;

pub use crate::local::LocalLimiter;
pub use crate::redis_backend::{RedisClock, RedisLimiter, RedisTimeouts};

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

/// A demand for `amount` from the bucket `key`, whose limit is `per_minute`, and for
/// `credit` more taken without having to fit (`tollgate_core::ratelimit::BucketDemand`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub key: BucketKey,
    pub per_minute: u64,
    pub amount: u64,
    /// Taken on credit: expected back at settlement (input expected from a prompt cache).
    pub credit: u64,
}

impl Demand {
    /// Everything the demand takes when admitted: `amount + credit` (saturating).
    pub fn taken(&self) -> u64 {
        self.amount.saturating_add(self.credit)
    }
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
/// nanosecond range (before 1677 or after 2262); the Redis backend also fails when Redis
/// cannot be reached or answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

/// The façade the service holds; one variant per backend.
#[derive(Clone, Debug)]
pub enum Limiter {
    Local(LocalLimiter),
    Redis(RedisLimiter),
}

impl Limiter {
    /// An empty in-process limiter (embedded mode).
    pub fn local() -> Limiter {
        Limiter::Local(LocalLimiter::default())
    }

    /// A limiter over the Redis server at `url` (`redis://[:password@]host[:port][/db]`),
    /// shared with every other limiter that uses the same server and `key_prefix`. See
    /// [`RedisLimiter::connect`].
    pub async fn redis(url: &str, key_prefix: &str, clock: RedisClock) -> Result<Limiter, LimiterError> {
        Ok(Limiter::Redis(
            RedisLimiter::connect(url, key_prefix, clock).await?,
        ))
    }

    /// Takes every demand or none (`tollgate_core::ratelimit::admit` under one lock, or in
    /// one Redis script). Demands on the same key are taken together: their amounts add up
    /// and the lowest limit applies. With [`RedisClock::Server`], `now` is Redis's clock
    /// rather than the one passed in (which must still be in the nanosecond range).
    pub async fn admit(
        &self,
        demands: &[Demand],
        now: Timestamp,
    ) -> Result<Result<Admitted, LimitRefusal>, LimiterError> {
        let now_nanos = nanos(now)?;
        match self {
            Limiter::Local(local) => Ok(local.admit(demands, now_nanos)),
            Limiter::Redis(redis) => redis.admit(demands, now_nanos).await,
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
            Limiter::Local(local) => {
                local.adjust(key, per_minute, delta_refund, now_nanos);
                Ok(())
            }
            Limiter::Redis(redis) => redis.adjust(key, per_minute, delta_refund, now_nanos).await,
        }
    }

    /// Whether the limiter can decide now: embedded mode always can; Redis must answer a
    /// `PING` (while its breaker is open, it cannot). For readiness checks.
    pub async fn check(&self) -> Result<(), LimiterError> {
        match self {
            Limiter::Local(_) => Ok(()),
            Limiter::Redis(redis) => redis.ping().await,
        }
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
            Limiter::Redis(redis) => redis.peek(demands, now_nanos).await,
        }
    }
}

fn nanos(now: Timestamp) -> Result<i64, LimiterError> {
    now.timestamp_nanos_opt()
        .ok_or_else(|| LimiterError::Unavailable(format!("{now} is outside the nanosecond clock range")))
}

/// Demands on one key, added up.
struct Merged<'a> {
    key: &'a BucketKey,
    per_minute: u64,
    amount: u64,
    credit: u64,
}

/// Merges demands on the same key into one: taken separately, each would see the old
/// state and only the last write would stick. Returns the merged demands in order of first
/// appearance and, for each demand, the index of its merged one.
fn merge(demands: &[Demand]) -> (Vec<Merged<'_>>, Vec<usize>) {
    let mut merged: Vec<Merged<'_>> = Vec::with_capacity(demands.len());
    let merged_index = demands
        .iter()
        .map(
            |demand| match merged.iter().position(|entry| entry.key == &demand.key) {
                Some(index) => {
                    let entry = &mut merged[index];
                    entry.per_minute = entry.per_minute.min(demand.per_minute);
                    entry.amount = entry.amount.saturating_add(demand.amount);
                    entry.credit = entry.credit.saturating_add(demand.credit);
                    index
                }
                None => {
                    merged.push(Merged {
                        key: &demand.key,
                        per_minute: demand.per_minute,
                        amount: demand.amount,
                        credit: demand.credit,
                    });
                    merged.len() - 1
                }
            },
        )
        .collect();
    (merged, merged_index)
}
