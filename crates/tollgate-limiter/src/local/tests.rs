//! Pruning must be invisible: a limiter that prunes as often as it can and one that never
//! prunes give the same answer to every call of a random workload, including callers whose
//! instants arrive up to a window out of order.

use proptest::collection::vec;
use proptest::prelude::*;
use tollgate_core::ratelimit::WINDOW_NANOS;

use crate::local::LocalLimiter;
use crate::{BucketKey, Demand, Metric};

const START_NANOS: i64 = 1_767_225_600_000_000_000;

/// Four buckets with awkward limits (7 and 450,000 do not divide a minute evenly).
const LIMITS: [(&str, Metric, u64); 4] = [
    ("org_a", Metric::Requests, 5),
    ("org_a", Metric::InputTokens, 450_000),
    ("wrk_b", Metric::Requests, 7),
    ("wrk_b", Metric::OutputTokens, 3),
];

fn key(index: usize) -> BucketKey {
    let (scope_id, metric, _) = LIMITS[index];
    BucketKey {
        scope_id: scope_id.to_owned(),
        model_class: "sonnet".to_owned(),
        metric,
    }
}

fn demand(index: usize, per_mille: u64) -> Demand {
    let per_minute = LIMITS[index].2;
    Demand {
        key: key(index),
        per_minute,
        amount: per_minute * per_mille / 1_000,
        credit: 0,
    }
}

#[derive(Clone, Debug)]
enum Call {
    Admit(Vec<(usize, u64)>),
    Adjust(usize, i64),
    Peek,
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        4 => vec((0..LIMITS.len(), 0_u64..=1_200), 1..4).prop_map(Call::Admit),
        2 => (0..LIMITS.len(), -500_000_i64..=500_000).prop_map(|(index, delta)| Call::Adjust(index, delta)),
        1 => Just(Call::Peek),
    ]
}

/// A clock that mostly creeps and sometimes jumps past several windows, and each call's
/// instant up to one window behind it.
fn timed_call() -> impl Strategy<Value = (i64, i64, Call)> {
    let wait = prop_oneof![3 => 0_i64..=2_000_000_000, 1 => 0_i64..=3 * WINDOW_NANOS];
    (wait, 0_i64..=WINDOW_NANOS, call())
}

proptest! {
    #[test]
    fn pruning_never_changes_an_answer(calls in vec(timed_call(), 1..200)) {
        let pruning = LocalLimiter::with_prune_interval(Some(1));
        let keeping = LocalLimiter::with_prune_interval(None);
        let all: Vec<Demand> = (0..LIMITS.len()).map(|index| demand(index, 0)).collect();
        let mut clock_nanos = START_NANOS;
        for (wait, lag, call) in calls {
            clock_nanos += wait;
            let now_nanos = clock_nanos - lag;
            match call {
                Call::Admit(picks) => {
                    let demands: Vec<Demand> = picks.iter().map(|&(index, per_mille)| demand(index, per_mille)).collect();
                    prop_assert_eq!(pruning.admit(&demands, now_nanos), keeping.admit(&demands, now_nanos));
                }
                Call::Adjust(index, delta) => {
                    pruning.adjust(&key(index), LIMITS[index].2, delta, now_nanos);
                    keeping.adjust(&key(index), LIMITS[index].2, delta, now_nanos);
                }
                Call::Peek => {}
            }
            prop_assert_eq!(pruning.peek(&all, now_nanos), keeping.peek(&all, now_nanos));
            prop_assert!(pruning.tracked_buckets() <= keeping.tracked_buckets());
        }
    }
}

#[test]
fn buckets_full_for_a_window_are_dropped() {
    let limiter = LocalLimiter::with_prune_interval(Some(1));
    let requests = demand(0, 200);
    assert!(
        limiter
            .admit(std::slice::from_ref(&requests), START_NANOS)
            .is_ok()
    );
    assert_eq!(limiter.tracked_buckets(), 1);
    // Full again 12 s later, but kept for a window after that.
    let output = demand(3, 1_000);
    assert!(
        limiter
            .admit(std::slice::from_ref(&output), START_NANOS + WINDOW_NANOS)
            .is_ok()
    );
    assert_eq!(limiter.tracked_buckets(), 2);
    assert!(
        limiter
            .admit(
                std::slice::from_ref(&output),
                START_NANOS + 2 * WINDOW_NANOS + 12_000_000_000
            )
            .is_ok()
    );
    assert_eq!(limiter.tracked_buckets(), 1);
}
