//! Shared mode: every bucket in one Redis server, each operation one Lua script (atomic on
//! the server), so several gateway replicas share their limits. See the crate docs for the
//! representation; in short, buckets are `"<seconds> <nanoseconds>"` strings, Rust computes
//! the intervals with the core and the scripts only add and compare (seconds, nanoseconds)
//! pairs, which stay exact in Lua's doubles.
//!
//! Script arguments: `ARGV[1]`, `ARGV[2]` are the caller's `now` as seconds and nanoseconds,
//! or two empty strings to read Redis's `TIME` instead. Replies are flat integer arrays
//! starting with the `now` used, as (seconds, nanoseconds); backlogs follow as pairs.
//!
//! A dead or stalled Redis must not hold requests: every call (reconnecting included) is
//! bounded by [`RedisTimeouts::timeout`], and after a run of calls without an answer the
//! [`Breaker`] refuses calls at once for [`RedisTimeouts::retry_after`] before it lets one
//! probe through. A Redis that comes back is used again without a restart.

use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, ScriptInvocation};
use tokio::time::Instant;
use tollgate_core::ratelimit::{self, BucketSnapshot, BucketState, WINDOW_NANOS};

use crate::breaker::{Breaker, Passage};
use crate::{Admitted, BucketKey, Demand, LimitRefusal, LimiterError, Merged, Metric, merge};

/// How long a call to Redis may take, and how long Redis is left alone once it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisTimeouts {
    /// Bound of one call, connecting or reconnecting included.
    pub timeout: Duration,
    /// How long calls are refused at once after Redis stopped answering.
    pub retry_after: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> RedisTimeouts {
        RedisTimeouts {
            timeout: Duration::from_millis(500),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Whose clock a [`RedisLimiter`] reads `now` from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisClock {
    /// Redis's own clock (`TIME`): one clock for every replica, whatever their skew. The
    /// `now` passed to [`crate::Limiter`]'s methods is ignored, and snapshots' instants are
    /// on Redis's clock.
    #[default]
    Server,
    /// The `now` passed to each call, sent along with the script: for tests and simulations
    /// with an injected clock. Replicas must then have synchronized clocks.
    Caller,
}

/// Buckets in a Redis server, shared by every `RedisLimiter` on the same server and key
/// prefix; clones share one connection.
#[derive(Clone)]
pub struct RedisLimiter {
    /// Multiplexed and reconnecting: a broken connection fails the calls in flight (as
    /// [`LimiterError::Unavailable`]) and the next call reconnects.
    connection: ConnectionManager,
    key_prefix: String,
    clock: RedisClock,
    timeouts: RedisTimeouts,
    breaker: Arc<Mutex<Breaker>>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RedisLimiter")
            .field("key_prefix", &self.key_prefix)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connects to the Redis server at `url` (`redis://[:password@]host[:port][/db]`) and
    /// checks it answers a `PING`. Every key starts with `key_prefix`, so several
    /// deployments can share one server; limiters with the same server and prefix share
    /// their buckets. The scripts are loaded on first use (and again after a server
    /// restart).
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        clock: RedisClock,
    ) -> Result<RedisLimiter, LimiterError> {
        RedisLimiter::connect_with(url, key_prefix, clock, RedisTimeouts::default()).await
    }

    /// [`RedisLimiter::connect`] with the given bounds on waiting for Redis.
    pub async fn connect_with(
        url: &str,
        key_prefix: &str,
        clock: RedisClock,
        timeouts: RedisTimeouts,
    ) -> Result<RedisLimiter, LimiterError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        // One connection attempt per call: the breaker, not the manager's own retries,
        // decides when to try again, so no call waits through a series of attempts.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.timeout))
            .set_response_timeout(Some(timeouts.timeout))
            .set_number_of_retries(0);
        let connecting = async {
            let mut connection = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<()>(&mut connection).await?;
            Ok::<_, RedisError>(connection)
        };
        let connection = tokio::time::timeout(timeouts.timeout, connecting)
            .await
            .map_err(|_| timed_out(timeouts.timeout))?
            .map_err(unavailable)?;
        Ok(RedisLimiter {
            connection,
            key_prefix: key_prefix.to_owned(),
            clock,
            timeouts,
            breaker: Arc::new(Mutex::new(Breaker::new(timeouts.retry_after))),
        })
    }

    /// Whether Redis answers a `PING` now (through the breaker: an open one is a no).
    pub async fn ping(&self) -> Result<(), LimiterError> {
        let mut connection = self.connection.clone();
        self.guarded(async move { redis::cmd("PING").query_async::<()>(&mut connection).await })
            .await
    }

    pub(crate) async fn admit(
        &self,
        demands: &[Demand],
        now_nanos: i64,
    ) -> Result<Result<Admitted, LimitRefusal>, LimiterError> {
        let (merged, merged_index) = merge(demands);
        // The first demand larger than its bucket is refused before any I/O, as
        // `ratelimit::admit` would (it checks capacity before any state).
        if let Some(entry) = merged.iter().find(|entry| entry.amount > entry.per_minute) {
            return Ok(Err(LimitRefusal::ExceedsCapacity {
                key: entry.key.clone(),
                per_minute: entry.per_minute,
                amount: entry.amount,
            }));
        }
        if merged.is_empty() {
            return Ok(Ok(Admitted {
                snapshots: Vec::new(),
            }));
        }

        let mut invocation = ADMIT.prepare_invoke();
        self.push_now(&mut invocation, now_nanos);
        // Per bucket, the intervals of what must fit and of what is taken (with the credit),
        // as sent, or `None` for a bucket that takes nothing.
        let intervals: Vec<Option<(i128, i128)>> = merged.iter().map(admission_intervals).collect();
        for (entry, interval) in merged.iter().zip(&intervals) {
            invocation.key(self.redis_key(entry.key));
            match interval {
                // Always passes and is not written, as in the core.
                None => invocation.arg(0).arg(0).arg(0).arg(0).arg(0),
                Some((required, taken)) => {
                    let (required_seconds, required_nanos) = split(*required);
                    let (taken_seconds, taken_nanos) = split(*taken);
                    invocation
                        .arg(required_seconds)
                        .arg(required_nanos)
                        .arg(taken_seconds)
                        .arg(taken_nanos)
                        .arg(1)
                }
            };
        }
        let reply = self.invoke(&invocation).await?;
        let (now, rest) = reply_now(&reply)?;
        let [admitted, pairs @ ..] = rest else {
            return Err(malformed_reply());
        };
        let backlogs = backlogs(pairs, merged.len())?;

        let window = i128::from(WINDOW_NANOS);
        let mut longest_wait: Option<(usize, i64)> = None;
        for (index, (interval, &backlog)) in intervals.iter().zip(&backlogs).enumerate() {
            let Some((required, taken)) = interval else {
                continue;
            };
            // The script replies with the backlog after taking; the check was on what must fit.
            let overshoot = backlog - taken + required - window;
            if overshoot > 0 {
                let retry_after_nanos = saturate(overshoot);
                if longest_wait.is_none_or(|(_, longest)| retry_after_nanos > longest) {
                    longest_wait = Some((index, retry_after_nanos));
                }
            }
        }
        match (longest_wait, *admitted) {
            (None, 1) => {
                let snapshots = demands
                    .iter()
                    .zip(&merged_index)
                    .map(|(demand, &index)| snapshot(now, backlogs[index], demand.per_minute))
                    .collect();
                Ok(Ok(Admitted { snapshots }))
            }
            (Some((index, retry_after_nanos)), 0) => {
                let entry: &Merged<'_> = &merged[index];
                Ok(Err(LimitRefusal::Exhausted {
                    key: entry.key.clone(),
                    per_minute: entry.per_minute,
                    retry_after_nanos,
                }))
            }
            _ => Err(LimiterError::Unavailable(
                "Redis admission script disagrees with its own backlogs".to_owned(),
            )),
        }
    }

    pub(crate) async fn adjust(
        &self,
        key: &BucketKey,
        per_minute: u64,
        delta_refund: i64,
        now_nanos: i64,
    ) -> Result<(), LimiterError> {
        // The core leaves the state as it is for either; no need to ask Redis.
        if delta_refund == 0 || per_minute == 0 {
            return Ok(());
        }
        let amount = delta_refund.unsigned_abs();
        let (operation, interval) = if delta_refund > 0 {
            ("refund", ratelimit::interval_rounded_down(per_minute, amount))
        } else {
            ("charge", ratelimit::interval_rounded_up(per_minute, amount))
        };
        let (seconds, nanos) = split(interval);
        let mut invocation = ADJUST.prepare_invoke();
        self.push_now(&mut invocation, now_nanos);
        invocation
            .key(self.redis_key(key))
            .arg(operation)
            .arg(seconds)
            .arg(nanos);
        self.invoke(&invocation).await?;
        Ok(())
    }

    pub(crate) async fn peek(
        &self,
        demands: &[Demand],
        now_nanos: i64,
    ) -> Result<Vec<BucketSnapshot>, LimiterError> {
        if demands.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = PEEK.prepare_invoke();
        self.push_now(&mut invocation, now_nanos);
        for demand in demands {
            invocation.key(self.redis_key(&demand.key));
        }
        let reply = self.invoke(&invocation).await?;
        let (now, pairs) = reply_now(&reply)?;
        let backlogs = backlogs(pairs, demands.len())?;
        Ok(demands
            .iter()
            .zip(backlogs)
            .map(|(demand, backlog)| snapshot(now, backlog, demand.per_minute))
            .collect())
    }

    fn push_now(&self, invocation: &mut ScriptInvocation<'_>, now_nanos: i64) {
        match self.clock {
            RedisClock::Server => invocation.arg("").arg(""),
            RedisClock::Caller => invocation
                .arg(now_nanos.div_euclid(NANOS_PER_SECOND))
                .arg(now_nanos.rem_euclid(NANOS_PER_SECOND)),
        };
    }

    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Vec<i64>, LimiterError> {
        // Clones share the multiplexed connection; the clone is only for `&mut`.
        let mut connection = self.connection.clone();
        self.guarded(invocation.invoke_async(&mut connection)).await
    }

    /// Runs one call to Redis through the breaker, bounded by the timeout, and tells the
    /// breaker how it went. A reply of any kind is an answer; only silence, a refused or
    /// lost connection count as failures.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, RedisError>>) -> Result<T, LimiterError> {
        let passage = self.breaker().request(Instant::now());
        if let Passage::Refused(remaining) = passage {
            metrics::counter!("tollgate_redis_errors_total", "kind" => "breaker_open").increment(1);
            return Err(LimiterError::Unavailable(format!(
                "Redis stopped answering; not asked again for another {} ms",
                remaining.as_millis()
            )));
        }
        let called = Instant::now();
        let outcome = tokio::time::timeout(self.timeouts.timeout, call).await;
        metrics::histogram!("tollgate_redis_call_seconds").record(called.elapsed());
        match &outcome {
            Ok(Ok(_)) => self.breaker().succeeded(),
            Ok(Err(error)) if !no_answer(error) => self.breaker().succeeded(),
            Ok(Err(_)) | Err(_) => self.breaker().failed(Instant::now()),
        }
        let error_kind = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(error)) if no_answer(error) => Some("no_answer"),
            Ok(Err(_)) => Some("error_reply"),
            Err(_) => Some("timeout"),
        };
        if let Some(kind) = error_kind {
            metrics::counter!("tollgate_redis_errors_total", "kind" => kind).increment(1);
        }
        match outcome {
            Ok(reply) => reply.map_err(unavailable),
            Err(_) => Err(timed_out(self.timeouts.timeout)),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker's state is valid after any panic: each method leaves it whole.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn redis_key(&self, key: &BucketKey) -> String {
        format!(
            "{}rl:{}:{}:{}",
            self.key_prefix,
            escape(&key.scope_id),
            escape(&key.model_class),
            metric_token(key.metric)
        )
    }
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

// The scripts compare backlogs with a window of 60 whole seconds.
const _: () = assert!(WINDOW_NANOS == 60 * NANOS_PER_SECOND);

/// Largest interval sent to a script: 2⁶⁴ ns exceeds any distance between two `i64`
/// instants, so clamping a larger one changes no result (a refund still stops at `now`, a
/// charge still saturates), and its seconds stay exact in a double.
const INTERVAL_MAX: i128 = 1 << 64;

/// Shared by every script: reads `now`, and the arithmetic on (seconds, nanoseconds) pairs
/// with nanoseconds in `0..1e9`. Seconds stay below ~5·10¹⁰, far inside the 2⁵³ that Lua's
/// doubles hold exactly.
const PRELUDE: &str = r"
local BILLION = 1000000000
local WINDOW_SECONDS = 60
-- i64::MAX nanoseconds: the latest instant a state can hold.
local MAX_S, MAX_N = 9223372036, 854775807

local now_s, now_n
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now_s, now_n = tonumber(time[1]), tonumber(time[2]) * 1000
else
  now_s, now_n = tonumber(ARGV[1]), tonumber(ARGV[2])
end

local function add(a_s, a_n, b_s, b_n)
  local s, n = a_s + b_s, a_n + b_n
  if n >= BILLION then
    return s + 1, n - BILLION
  end
  return s, n
end

local function sub(a_s, a_n, b_s, b_n)
  local s, n = a_s - b_s, a_n - b_n
  if n < 0 then
    return s - 1, n + BILLION
  end
  return s, n
end

-- tat - now (negative when full), or nil for an absent bucket (full).
local function ahead(key)
  local value = redis.call('GET', key)
  if not value then
    return nil
  end
  local s, n = string.match(value, '^(%-?%d+) (%d+)$')
  if not s then
    error('malformed rate-limit bucket ' .. key)
  end
  return sub(tonumber(s), tonumber(n), now_s, now_n)
end

-- max(tat - now, 0).
local function backlog(key)
  local s, n = ahead(key)
  if not s or s < 0 then
    return 0, 0
  end
  return s, n
end

-- Stores tat = now + backlog (backlog >= 0; saturated at i64::MAX), kept until it has
-- been full for a minute.
local function store(key, b_s, b_n)
  local s, n = add(now_s, now_n, b_s, b_n)
  if s > MAX_S or (s == MAX_S and n > MAX_N) then
    s, n = MAX_S, MAX_N
    b_s, b_n = sub(s, n, now_s, now_n)
  end
  local ttl_ms = b_s * 1000 + math.ceil(b_n / 1000000) + WINDOW_SECONDS * 1000
  redis.call('SET', key, string.format('%d %d', s, n), 'PX', string.format('%d', ttl_ms))
end
";

/// KEYS: the merged demands' buckets. ARGV[5i-2] to ARGV[5i+2]: bucket i's interval of what
/// must fit and interval of what is taken (each as seconds, nanoseconds), and whether to take
/// (`1`) or only report (`0`, nothing to take). Reply: now, 1 if admitted (every taken bucket
/// written) or 0 (nothing written), then each bucket's backlog after taking.
const ADMIT_BODY: &str = r"
local admitted = 1
local reply = {now_s, now_n, 0}
for i = 1, #KEYS do
  local b_s, b_n = backlog(KEYS[i])
  local arg = 5 * i - 2
  if ARGV[arg + 4] == '1' then
    local r_s, r_n = add(b_s, b_n, tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]))
    if r_s > WINDOW_SECONDS or (r_s == WINDOW_SECONDS and r_n > 0) then
      admitted = 0
    end
    b_s, b_n = add(b_s, b_n, tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]))
  end
  reply[2 * i + 2] = b_s
  reply[2 * i + 3] = b_n
end
if admitted == 1 then
  for i = 1, #KEYS do
    if ARGV[5 * i + 2] == '1' then
      store(KEYS[i], reply[2 * i + 2], reply[2 * i + 3])
    end
  end
end
reply[3] = admitted
return reply
";

/// KEYS[1]: the bucket. ARGV[3]: `refund` or `charge`; ARGV[4], ARGV[5]: the interval.
/// A refund leaves a full bucket as it is and otherwise stops at full (`ratelimit::refund`);
/// a charge never refuses (`ratelimit::charge_unconditionally`). Reply: now.
const ADJUST_BODY: &str = r"
local key = KEYS[1]
local i_s, i_n = tonumber(ARGV[4]), tonumber(ARGV[5])
local a_s, a_n = ahead(key)
if ARGV[3] == 'refund' then
  if not a_s or a_s < 0 or (a_s == 0 and a_n == 0) then
    return {now_s, now_n}
  end
  local b_s, b_n = sub(a_s, a_n, i_s, i_n)
  if b_s < 0 then
    b_s, b_n = 0, 0
  end
  store(key, b_s, b_n)
else
  if not a_s or a_s < 0 then
    a_s, a_n = 0, 0
  end
  local b_s, b_n = add(a_s, a_n, i_s, i_n)
  store(key, b_s, b_n)
end
return {now_s, now_n}
";

/// KEYS: the buckets. Reply: now, then each bucket's backlog.
const PEEK_BODY: &str = r"
local reply = {now_s, now_n}
for i = 1, #KEYS do
  local b_s, b_n = backlog(KEYS[i])
  reply[2 * i + 1] = b_s
  reply[2 * i + 2] = b_n
end
return reply
";

static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PRELUDE}{ADMIT_BODY}")));
static ADJUST: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PRELUDE}{ADJUST_BODY}")));
static PEEK: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PRELUDE}{PEEK_BODY}")));

/// The intervals a merged demand sends to the admission script, as the script will see them
/// (clamped): of what must fit, and of what is taken with the credit. `None` when it takes
/// nothing, which the core leaves as it is (a zero limit takes no credit).
fn admission_intervals(entry: &Merged<'_>) -> Option<(i128, i128)> {
    let taken = entry.amount.saturating_add(entry.credit);
    if taken == 0 || entry.per_minute == 0 {
        return None;
    }
    let as_sent = |interval: i128| {
        let (seconds, nanos) = split(interval);
        join(seconds, nanos)
    };
    Some((
        // amount <= per_minute: at most one window.
        as_sent(ratelimit::interval_rounded_up(entry.per_minute, entry.amount)),
        as_sent(ratelimit::interval_rounded_up(entry.per_minute, taken)),
    ))
}

/// Splits a non-negative interval into (seconds, nanoseconds), clamped to [`INTERVAL_MAX`].
fn split(interval: i128) -> (i64, i64) {
    let clamped = interval.clamp(0, INTERVAL_MAX);
    let nanos_per_second = i128::from(NANOS_PER_SECOND);
    let seconds = i64::try_from(clamped / nanos_per_second).unwrap_or(i64::MAX);
    let nanos = i64::try_from(clamped % nanos_per_second).unwrap_or(0);
    (seconds, nanos)
}

/// (seconds, nanoseconds) as nanoseconds.
fn join(seconds: i64, nanos: i64) -> i128 {
    i128::from(seconds) * i128::from(NANOS_PER_SECOND) + i128::from(nanos)
}

/// The `now` a script used, and the rest of its reply.
fn reply_now(reply: &[i64]) -> Result<(i64, &[i64]), LimiterError> {
    let [seconds, nanos, rest @ ..] = reply else {
        return Err(malformed_reply());
    };
    let now = i64::try_from(join(*seconds, *nanos))
        .map_err(|_| LimiterError::Unavailable("Redis's clock is outside the nanosecond range".to_owned()))?;
    Ok((now, rest))
}

/// `count` backlogs from (seconds, nanoseconds) pairs.
fn backlogs(pairs: &[i64], count: usize) -> Result<Vec<i128>, LimiterError> {
    if pairs.len() != 2 * count {
        return Err(malformed_reply());
    }
    Ok(pairs.chunks_exact(2).map(|pair| join(pair[0], pair[1])).collect())
}

/// The snapshot of a bucket whose backlog at `now` is `backlog` (its `tat` is
/// `now + backlog`, or earlier when the backlog is zero, which the snapshot cannot tell).
fn snapshot(now: i64, backlog: i128, per_minute: u64) -> BucketSnapshot {
    let state = BucketState {
        tat_nanos: saturate(i128::from(now) + backlog),
    };
    ratelimit::snapshot(state, per_minute, now)
}

/// Clamps to the i64 range, as the core does.
fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// A short, stable token per metric: part of every key, so never to be renamed.
fn metric_token(metric: Metric) -> &'static str {
    match metric {
        Metric::Requests => "req",
        Metric::InputTokens => "in",
        Metric::OutputTokens => "out",
        Metric::CountTokensRequests => "ctreq",
    }
}

/// Percent-escapes `%` and `:` so that ids containing the separator cannot collide.
fn escape(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains([':', '%']) {
        std::borrow::Cow::Owned(id.replace('%', "%25").replace(':', "%3A"))
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

/// Whether a failed call means Redis did not answer (rather than answering an error).
fn no_answer(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

fn timed_out(timeout: Duration) -> LimiterError {
    LimiterError::Unavailable(format!("Redis did not answer within {} ms", timeout.as_millis()))
}

fn unavailable(error: RedisError) -> LimiterError {
    LimiterError::Unavailable(format!("Redis: {error}"))
}

fn malformed_reply() -> LimiterError {
    LimiterError::Unavailable("malformed reply from a Redis rate-limit script".to_owned())
}

#[cfg(test)]
mod tests {
    use super::{INTERVAL_MAX, escape, join, split};

    #[test]
    fn intervals_split_exactly_and_clamp() {
        assert_eq!(split(60_000_000_000), (60, 0));
        assert_eq!(split(1_234_567_891), (1, 234_567_891));
        assert_eq!(join(split(INTERVAL_MAX).0, split(INTERVAL_MAX).1), INTERVAL_MAX);
        assert_eq!(split(INTERVAL_MAX * 1_000), split(INTERVAL_MAX));
    }

    #[test]
    fn separators_in_ids_are_escaped() {
        assert_eq!(escape("org_1"), "org_1");
        assert_eq!(escape("a:b%"), "a%3Ab%25");
    }
}
