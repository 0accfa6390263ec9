//! Integration tests of tollgate-limiter through its façade, `Limiter`: all-or-nothing
//! admission across scopes, exactness under concurrency, corrections, and bounded memory.
//! The Redis backend's own tests (against a live server) are in `redis`.

mod redis;

use tollgate_core::Timestamp;
use tollgate_core::ratelimit::{BucketSnapshot, WINDOW_NANOS};
use tollgate_limiter::{BucketKey, Demand, LimitRefusal, Limiter, LimiterError, Metric};

const SECOND_NANOS: i64 = 1_000_000_000;
const START_NANOS: i64 = 1_767_225_600 * SECOND_NANOS;

fn at(offset_nanos: i64) -> Timestamp {
    Timestamp::from_timestamp_nanos(START_NANOS + offset_nanos)
}

fn key(scope_id: &str, metric: Metric) -> BucketKey {
    BucketKey {
        scope_id: scope_id.to_owned(),
        model_class: "sonnet-4".to_owned(),
        metric,
    }
}

fn demand(scope_id: &str, metric: Metric, per_minute: u64, amount: u64) -> Demand {
    Demand {
        key: key(scope_id, metric),
        per_minute,
        amount,
        credit: 0,
    }
}

async fn admit(
    limiter: &Limiter,
    demands: &[Demand],
    now: Timestamp,
) -> Result<Vec<BucketSnapshot>, LimitRefusal> {
    limiter
        .admit(demands, now)
        .await
        .expect("the local limiter is available")
        .map(|admitted| admitted.snapshots)
}

async fn remaining(limiter: &Limiter, demands: &[Demand], now: Timestamp) -> Vec<u64> {
    let snapshots = limiter
        .peek(demands, now)
        .await
        .expect("the local limiter is available");
    snapshots.iter().map(|snapshot| snapshot.remaining).collect()
}

#[tokio::test]
async fn a_workspace_refusal_leaves_the_organization_bucket_untouched() {
    let limiter = Limiter::local();
    let request = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("wrk_1", Metric::Requests, 2, 1),
    ];
    for expected_org in [49, 48] {
        let snapshots = admit(&limiter, &request, at(0)).await.expect("under both limits");
        assert_eq!(snapshots[0].remaining, expected_org);
    }
    let refusal = admit(&limiter, &request, at(0))
        .await
        .expect_err("the workspace is exhausted");
    assert_eq!(
        refusal,
        LimitRefusal::Exhausted {
            key: key("wrk_1", Metric::Requests),
            per_minute: 2,
            retry_after_nanos: 30 * SECOND_NANOS
        }
    );
    assert_eq!(remaining(&limiter, &request, at(0)).await, vec![48, 0]);
    // Another workspace of the same organization still gets through.
    let other = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("wrk_2", Metric::Requests, 2, 1),
    ];
    assert!(admit(&limiter, &other, at(0)).await.is_ok());
    // Half a minute later the organization is full again and the workspace has one back.
    assert_eq!(
        remaining(&limiter, &request, at(30 * SECOND_NANOS)).await,
        vec![50, 1]
    );
}

#[tokio::test]
async fn a_request_larger_than_the_bucket_is_refused_for_good() {
    let limiter = Limiter::local();
    let request = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("org_1", Metric::InputTokens, 30_000, 30_001),
    ];
    let refusal = admit(&limiter, &request, at(0)).await.expect_err("too large");
    assert_eq!(
        refusal,
        LimitRefusal::ExceedsCapacity {
            key: key("org_1", Metric::InputTokens),
            per_minute: 30_000,
            amount: 30_001
        }
    );
    assert_eq!(remaining(&limiter, &request, at(0)).await, vec![50, 30_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_at_one_instant_get_exactly_the_limit() {
    let limiter = Limiter::local();
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let request = [demand("org_1", Metric::Requests, 50, 1)];
                limiter
                    .admit(&request, at(0))
                    .await
                    .expect("the local limiter is available")
                    .is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("the task finishes") {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50);
}

#[tokio::test]
async fn adjustments_correct_estimates_without_overfilling() {
    let limiter = Limiter::local();
    let output = [demand("org_1", Metric::OutputTokens, 8_000, 4_000)];
    let output_key = key("org_1", Metric::OutputTokens);
    admit(&limiter, &output, at(0)).await.expect("half the bucket");
    // The answer used 1,000 of the 4,000 estimated.
    limiter
        .adjust(&output_key, 8_000, 3_000, at(0))
        .await
        .expect("available");
    assert_eq!(remaining(&limiter, &output, at(0)).await, vec![7_000]);
    // Giving back more than was taken stops at full.
    limiter
        .adjust(&output_key, 8_000, 1_000_000, at(0))
        .await
        .expect("available");
    assert_eq!(remaining(&limiter, &output, at(0)).await, vec![8_000]);
    // Use beyond the estimate is taken without refusing, into debt.
    limiter
        .adjust(&output_key, 8_000, -12_000, at(0))
        .await
        .expect("available");
    assert_eq!(remaining(&limiter, &output, at(0)).await, vec![0]);
    let refusal = admit(&limiter, &output, at(0)).await.expect_err("in debt");
    assert_eq!(
        refusal,
        LimitRefusal::Exhausted {
            key: output_key,
            per_minute: 8_000,
            retry_after_nanos: WINDOW_NANOS
        }
    );
    assert!(admit(&limiter, &output, at(WINDOW_NANOS)).await.is_ok());
}

#[tokio::test]
async fn undoing_an_admission_restores_every_bucket() {
    let limiter = Limiter::local();
    let request = [
        demand("org_1", Metric::Requests, 50, 1),
        demand("org_1", Metric::InputTokens, 30_000, 1_200),
        demand("org_1", Metric::OutputTokens, 8_000, 1_024),
        demand("wrk_1", Metric::Requests, 20, 1),
    ];
    admit(&limiter, &request, at(0))
        .await
        .expect("room in every bucket");
    let before = remaining(&limiter, &request, at(0)).await;
    assert_eq!(before, vec![49, 28_800, 6_976, 19]);
    for taken in &request {
        let amount = i64::try_from(taken.amount).expect("small");
        limiter
            .adjust(&taken.key, taken.per_minute, amount, at(0))
            .await
            .expect("available");
    }
    assert_eq!(
        remaining(&limiter, &request, at(0)).await,
        vec![50, 30_000, 8_000, 20]
    );
}

#[tokio::test]
async fn admitted_snapshots_match_a_later_peek() {
    let limiter = Limiter::local();
    let request = [
        demand("org_1", Metric::Requests, 4_000, 1),
        demand("org_1", Metric::InputTokens, 450_000, 100_000),
    ];
    let snapshots = admit(&limiter, &request, at(0)).await.expect("room");
    assert_eq!(snapshots, limiter.peek(&request, at(0)).await.expect("available"));
    assert_eq!(
        snapshots[0],
        BucketSnapshot {
            limit: 4_000,
            remaining: 3_999,
            reset_at_nanos: START_NANOS + 15_000_000
        }
    );
    // 100,000 × 60 s / 450,000 is not whole nanoseconds: one token is held back for 1 ns.
    assert_eq!(snapshots[1].remaining, 349_999);
    assert_eq!(remaining(&limiter, &request, at(1)).await[1], 350_000);
}

#[tokio::test]
async fn demands_on_one_key_are_taken_together() {
    let limiter = Limiter::local();
    let twice = [
        demand("org_1", Metric::InputTokens, 50, 30),
        demand("org_1", Metric::InputTokens, 50, 30),
    ];
    let refusal = admit(&limiter, &twice, at(0)).await.expect_err("60 of 50");
    assert_eq!(
        refusal,
        LimitRefusal::ExceedsCapacity {
            key: key("org_1", Metric::InputTokens),
            per_minute: 50,
            amount: 60
        }
    );
    let smaller = [
        demand("org_1", Metric::InputTokens, 50, 20),
        demand("org_1", Metric::InputTokens, 50, 20),
    ];
    let snapshots = admit(&limiter, &smaller, at(0)).await.expect("40 of 50");
    assert_eq!(
        snapshots
            .iter()
            .map(|snapshot| snapshot.remaining)
            .collect::<Vec<u64>>(),
        vec![10, 10]
    );
}

#[tokio::test]
async fn idle_buckets_do_not_accumulate() {
    let limiter = Limiter::local();
    let Limiter::Local(local) = &limiter else {
        unreachable!("Limiter::local() is embedded");
    };
    for index in 0..3_000 {
        admit(
            &limiter,
            &[demand(&format!("org_{index}"), Metric::Requests, 50, 1)],
            at(0),
        )
        .await
        .expect("fresh");
    }
    assert!(local.tracked_buckets() > 1_000);
    // Three windows later every one of them is full; one busy key keeps writing.
    for _ in 0..3_000 {
        let later = at(3 * WINDOW_NANOS);
        limiter
            .adjust(&key("org_busy", Metric::OutputTokens), 8_000, -1, later)
            .await
            .expect("available");
    }
    assert_eq!(local.tracked_buckets(), 1);
}

#[tokio::test]
async fn an_instant_outside_the_nanosecond_range_is_an_error() {
    let limiter = Limiter::local();
    let far_future = Timestamp::from_timestamp(20_000_000_000, 0).expect("year 2603");
    let request = [demand("org_1", Metric::Requests, 50, 1)];
    assert!(matches!(
        limiter.admit(&request, far_future).await,
        Err(LimiterError::Unavailable(_))
    ));
    assert!(matches!(
        limiter.peek(&request, far_future).await,
        Err(LimiterError::Unavailable(_))
    ));
}
