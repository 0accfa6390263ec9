//! Shared mode: every bucket in one Redis server, each operation one Lua script (atomic on
//! the server), so several gateway replicas share their limits. See the crate docs for the
//! representation; in short, buckets are `"<seconds> <nanoseconds>"` strings, Rust computes
//! the intervals with the core and the scripts only add and compare (seconds, nanoseconds)
//! pairs, which stay exact in Lua's doubles.
//!
//! Script arguments: `ARGV[1]`, `ARGV[2]` are the caller's `now` as seconds and nanoseconds,
//! or two empty strings to read Redis's `TIME` instead. Replies are flat integer arrays
//! starting with the `now` used, as (seconds, nanoseconds); backlogs follow as pairs.

use std::fmt;
use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, ScriptInvocation};
use tollgate_core::ratelimit::{self, BucketSnapshot, BucketState, WINDOW_NANOS};

use crate::{Admitted, BucketKey, Demand, LimitRefusal, LimiterError, Merged, Metric, merge};

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
        let client = redis::Client::open(url).map_err(unavailable)?;
        let mut connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(RedisLimiter {
            connection,
            key_prefix: key_prefix.to_owned(),
            clock,
        })
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
        for entry in &merged {
            invocation.key(self.redis_key(entry.key));
            if entry.amount == 0 {
                // Always passes and is not written, as in the core.
                invocation.arg(0).arg(0).arg(0);
            } else {
                // 0 < amount <= per_minute: at most one window.
                let (seconds, nanos) = split(ratelimit::interval_rounded_up(entry.per_minute, entry.amount));
                invocation.arg(seconds).arg(nanos).arg(1);
            }
        }
        let reply = self.invoke(&invocation).await?;
        let (now, rest) = reply_now(&reply)?;
        let [admitted, pairs @ ..] = rest else {
            return Err(malformed_reply());
        };
        let backlogs = backlogs(pairs, merged.len())?;

        let window = i128::from(WINDOW_NANOS);
        let mut longest_wait: Option<(usize, i64)> = None;
        for (index, (entry, &backlog)) in merged.iter().zip(&backlogs).enumerate() {
            let overshoot = backlog - window;
            if entry.amount > 0 && overshoot > 0 {
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
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
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

/// KEYS: the merged demands' buckets. ARGV[3i], ARGV[3i+1], ARGV[3i+2]: bucket i's interval
/// (seconds, nanoseconds) and whether to take it (`1`) or only report (`0`, amount zero).
/// Reply: now, 1 if admitted (every taken bucket written) or 0 (nothing written), then each
/// bucket's backlog after taking.
const ADMIT_BODY: &str = r"
local admitted = 1
local reply = {now_s, now_n, 0}
for i = 1, #KEYS do
  local b_s, b_n = backlog(KEYS[i])
  if ARGV[3 * i + 2] == '1' then
    b_s, b_n = add(b_s, b_n, tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]))
    if b_s > WINDOW_SECONDS or (b_s == WINDOW_SECONDS and b_n > 0) then
      admitted = 0
    end
  end
  reply[2 * i + 2] = b_s
  reply[2 * i + 3] = b_n
end
if admitted == 1 then
  for i = 1, #KEYS do
    if ARGV[3 * i + 2] == '1' then
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
