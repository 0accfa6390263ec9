//! The Redis backend against a live server (`TOLLGATE_TEST_REDIS_URL`, by default
//! `redis://127.0.0.1:6379`): it must answer exactly as embedded mode does for the same
//! instants, take all or nothing, stay within the limit when replicas race, and time
//! itself by Redis's clock by default. Every test uses its own random key prefix and
//! deletes its keys at the end.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tollgate_core::Timestamp;
use tollgate_core::ratelimit::WINDOW_NANOS;
use tollgate_limiter::{
    Demand, LimitRefusal, Limiter, LimiterError, Metric, RedisClock, RedisLimiter, RedisTimeouts,
};

use super::{SECOND_NANOS, START_NANOS, at, demand, key};

fn redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (or test run) uses.
fn unique_prefix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("tollgate-test:{:016x}:", hasher.finish())
}

async fn connect(prefix: &str, clock: RedisClock) -> Limiter {
    Limiter::redis(&redis_url(), prefix, clock)
        .await
        .expect("Redis is reachable")
}

/// Deletes every key under `prefix` (a debt can keep a key for years otherwise).
async fn delete_keys(prefix: &str) {
    let client = ::redis::Client::open(redis_url()).expect("a valid URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        ::redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut connection)
            .await
            .expect("DEL");
    }
}

async fn raw_get(key: &str) -> (Option<String>, i64) {
    let client = ::redis::Client::open(redis_url()).expect("a valid URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable");
    let value: Option<String> = ::redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("GET");
    let ttl_ms: i64 = ::redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    (value, ttl_ms)
}

/// Buckets with awkward limits (7 and 450,000 do not divide a minute evenly), one of them
/// in a scope whose id contains the key separator.
const LIMITS: [(&str, Metric, u64); 4] = [
    ("org_a", Metric::Requests, 5),
    ("org_a", Metric::InputTokens, 450_000),
    ("wrk:b", Metric::Requests, 7),
    ("wrk:b", Metric::OutputTokens, 3),
];

/// A demand on bucket `index` for `per_mille` ‰ of its limit (more than 1,000 exceeds it),
/// under its own limit or, with `tighter`, a limit of 1 or 2, and `credit_per_mille` ‰ of
/// it more on credit.
fn pick(index: usize, per_mille: u64, tighter: Option<u64>, credit_per_mille: u64) -> Demand {
    let (scope_id, metric, limit) = LIMITS[index];
    Demand {
        key: key(scope_id, metric),
        per_minute: tighter.unwrap_or(limit),
        amount: limit * per_mille / 1_000,
        credit: limit * credit_per_mille / 1_000,
    }
}

#[derive(Clone, Debug)]
enum Call {
    Admit(Vec<(usize, u64, Option<u64>, u64)>),
    Adjust(usize, i64),
    Peek(Vec<usize>),
}

fn call() -> impl Strategy<Value = Call> {
    let tighter = prop_oneof![6 => Just(None), 1 => (1_u64..=2).prop_map(Some)];
    let delta = prop_oneof![
        8 => -500_000_i64..=500_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ];
    let credit = prop_oneof![2 => Just(0_u64), 1 => 0_u64..=2_500];
    prop_oneof![
        5 => vec((0..LIMITS.len(), 0_u64..=1_200, tighter, credit), 1..4).prop_map(Call::Admit),
        2 => (0..LIMITS.len(), delta).prop_map(|(index, delta)| Call::Adjust(index, delta)),
        2 => vec(0..LIMITS.len(), 1..5).prop_map(Call::Peek),
    ]
}

/// A clock that mostly creeps and sometimes jumps past a window, and each call's instant
/// up to one window behind it.
fn timed_call() -> impl Strategy<Value = (i64, i64, Call)> {
    let wait = prop_oneof![3 => 0_i64..=2 * SECOND_NANOS, 1 => 0_i64..=2 * WINDOW_NANOS];
    let lag = prop_oneof![3 => Just(0_i64), 1 => 0_i64..=WINDOW_NANOS];
    (wait, lag, call())
}

#[test]
fn redis_answers_exactly_as_embedded_mode() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&vec(timed_call(), 1..=40), |calls| {
        runtime.block_on(async {
            let prefix = unique_prefix();
            let local = Limiter::local();
            let redis = connect(&prefix, RedisClock::Caller).await;
            let outcome = compare(&local, &redis, &calls).await;
            delete_keys(&prefix).await;
            outcome
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

async fn compare(local: &Limiter, redis: &Limiter, calls: &[(i64, i64, Call)]) -> Result<(), TestCaseError> {
    let mut clock_nanos = START_NANOS;
    for (wait, lag, call) in calls {
        clock_nanos += wait;
        let now = Timestamp::from_timestamp_nanos(clock_nanos - lag);
        match call {
            Call::Admit(picks) => {
                let demands: Vec<Demand> = picks
                    .iter()
                    .map(|&(index, per_mille, tighter, credit)| pick(index, per_mille, tighter, credit))
                    .collect();
                let expected = local.admit(&demands, now).await.expect("embedded");
                let actual = redis.admit(&demands, now).await.expect("Redis is available");
                prop_assert_eq!(actual, expected, "admit {:?} at {}", demands, now);
            }
            Call::Adjust(index, delta) => {
                let (scope_id, metric, limit) = LIMITS[*index];
                let bucket = key(scope_id, metric);
                local.adjust(&bucket, limit, *delta, now).await.expect("embedded");
                redis
                    .adjust(&bucket, limit, *delta, now)
                    .await
                    .expect("Redis is available");
            }
            Call::Peek(indexes) => {
                let demands: Vec<Demand> = indexes.iter().map(|&index| pick(index, 0, None, 0)).collect();
                let expected = local.peek(&demands, now).await.expect("embedded");
                let actual = redis.peek(&demands, now).await.expect("Redis is available");
                prop_assert_eq!(actual, expected, "peek {:?} at {}", demands, now);
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn buckets_are_stored_as_seconds_and_nanoseconds() {
    let prefix = unique_prefix();
    let limiter = connect(&prefix, RedisClock::Caller).await;
    let request = [demand("org:1", Metric::Requests, 60, 1)];
    limiter
        .admit(&request, at(SECOND_NANOS / 2))
        .await
        .expect("available")
        .expect("fresh");
    // One token of 60 a minute is one second; a minute more before the key expires.
    let (value, ttl_ms) = raw_get(&format!("{prefix}rl:org%3A1:sonnet-4:req")).await;
    let start_seconds = START_NANOS / SECOND_NANOS;
    assert_eq!(value, Some(format!("{} 500000000", start_seconds + 1)));
    assert!((59_000..=61_000).contains(&ttl_ms), "TTL {ttl_ms} ms");
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn a_refusal_takes_nothing_from_any_bucket() {
    let prefix = unique_prefix();
    let limiter = connect(&prefix, RedisClock::Caller).await;
    let request = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("org_1", Metric::InputTokens, 30_000, 1_000),
        demand("wrk_1", Metric::Requests, 2, 1),
    ];
    for expected_org in [49, 48] {
        let admitted = limiter
            .admit(&request, at(0))
            .await
            .expect("available")
            .expect("under every limit");
        assert_eq!(admitted.snapshots[0].remaining, expected_org);
    }
    let refusal = limiter
        .admit(&request, at(0))
        .await
        .expect("available")
        .expect_err("the workspace is exhausted");
    assert_eq!(
        refusal,
        LimitRefusal::Exhausted {
            key: key("wrk_1", Metric::Requests),
            per_minute: 2,
            retry_after_nanos: 30 * SECOND_NANOS
        }
    );
    let remaining: Vec<u64> = limiter
        .peek(&request, at(0))
        .await
        .expect("available")
        .iter()
        .map(|snapshot| snapshot.remaining)
        .collect();
    assert_eq!(remaining, vec![48, 28_000, 0]);
    // Too large for its bucket: refused before reaching Redis, nothing taken either.
    let too_large = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("org_1", Metric::InputTokens, 30_000, 30_001),
    ];
    assert_eq!(
        limiter.admit(&too_large, at(0)).await.expect("available"),
        Err(LimitRefusal::ExceedsCapacity {
            key: key("org_1", Metric::InputTokens),
            per_minute: 30_000,
            amount: 30_001
        })
    );
    let remaining: Vec<u64> = limiter
        .peek(&request, at(0))
        .await
        .expect("available")
        .iter()
        .map(|snapshot| snapshot.remaining)
        .collect();
    assert_eq!(remaining, vec![48, 28_000, 0]);
    delete_keys(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_one_bucket_stay_within_the_limit() {
    const PER_MINUTE: u64 = 60;
    let prefix = unique_prefix();
    let replicas = [
        connect(&prefix, RedisClock::Server).await,
        connect(&prefix, RedisClock::Server).await,
    ];
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..400)
        .map(|task| {
            let limiter = replicas[task % 2].clone();
            tokio::spawn(async move {
                let request = [demand("org_1", Metric::Requests, PER_MINUTE, 1)];
                limiter
                    .admit(&request, Timestamp::UNIX_EPOCH)
                    .await
                    .expect("Redis is available")
                    .is_ok()
            })
        })
        .collect();
    let mut admitted: u64 = 0;
    for task in tasks {
        if task.await.expect("the task finishes") {
            admitted += 1;
        }
    }
    let elapsed = started.elapsed();
    // Every admission ran on Redis's clock within `elapsed`: a full bucket of 60 plus one
    // token a second of refill since the first one, and not one more.
    let refill = elapsed
        .as_nanos()
        .div_ceil(1_000_000_000 * 60 / u128::from(PER_MINUTE));
    let bound = PER_MINUTE + u64::try_from(refill).expect("small");
    assert!(admitted >= PER_MINUTE, "{admitted} admitted");
    assert!(
        admitted <= bound,
        "{admitted} admitted in {elapsed:?}; at most {bound} allowed"
    );
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn the_server_clock_times_admissions() {
    let prefix = unique_prefix();
    let limiter = connect(&prefix, RedisClock::Server).await;
    let request = [demand("org_1", Metric::Requests, 2, 1)];
    // The caller's instant is ignored: the epoch would make every bucket look stale.
    let ignored = Timestamp::UNIX_EPOCH;
    let first = limiter
        .admit(&request, ignored)
        .await
        .expect("available")
        .expect("a fresh bucket admits");
    assert_eq!(first.snapshots[0].remaining, 1);
    // Thirty seconds after Redis's now (after 2020), not after the ignored epoch.
    assert!(
        first.snapshots[0].reset_at_nanos > 1_600_000_000 * SECOND_NANOS,
        "reset at {} ns",
        first.snapshots[0].reset_at_nanos
    );
    limiter
        .admit(&request, ignored)
        .await
        .expect("available")
        .expect("the second of two");
    let refusal = limiter
        .admit(&request, ignored)
        .await
        .expect("available")
        .expect_err("drained");
    let LimitRefusal::Exhausted {
        retry_after_nanos, ..
    } = refusal
    else {
        panic!("expected Exhausted, got {refusal:?}");
    };
    assert!(
        retry_after_nanos > 0 && retry_after_nanos <= WINDOW_NANOS,
        "retry after {retry_after_nanos} ns"
    );
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn an_invalid_url_is_unavailable() {
    let result = RedisLimiter::connect("not-a-url", "x:", RedisClock::Server).await;
    assert!(matches!(result, Err(LimiterError::Unavailable(_))));
}

/// The goal: a Redis that accepts connections and never answers (a hung server, a
/// black-holed network) fails a call within the configured timeout, not after the
/// connection manager's series of retries.
#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let timeouts = RedisTimeouts {
        timeout: std::time::Duration::from_millis(200),
        retry_after: std::time::Duration::from_secs(1),
    };
    let started = tokio::time::Instant::now();
    let result = RedisLimiter::connect_with(&url, "x:", RedisClock::Server, timeouts).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(LimiterError::Unavailable(_))));
    assert!(
        waited < std::time::Duration::from_millis(500),
        "waited {waited:?}"
    );
    held.abort();
}
