//! Tests of the rate-limit math: worked examples first, then properties over random
//! limits, states and workloads (the limit is never exceeded, retry-after is exact,
//! admission is all-or-nothing, snapshots agree with admission).

use proptest::collection::vec;
use proptest::prelude::*;

use crate::ratelimit::{
    BucketDemand, BucketSnapshot, BucketState, Refusal, WINDOW_NANOS, admit, charge_unconditionally,
    interval_rounded_up, refund, snapshot,
};

const SECOND_NANOS: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z, a realistic `now`.
const NOW_NANOS: i64 = 1_767_225_600 * SECOND_NANOS;

fn state(tat_nanos: i64) -> BucketState {
    BucketState { tat_nanos }
}

fn demand(state: BucketState, per_minute: u64, amount: u64) -> BucketDemand {
    BucketDemand {
        state,
        per_minute,
        amount,
        credit: 0,
    }
}

/// Admits one demand alone, returning its new state.
fn admit_one(
    state: BucketState,
    per_minute: u64,
    amount: u64,
    now_nanos: i64,
) -> Result<BucketState, Refusal> {
    admit(&[demand(state, per_minute, amount)], now_nanos).map(|states| states[0])
}

#[test]
fn a_fifty_rpm_bucket_admits_fifty_then_refills_one_every_1200_ms() {
    let mut bucket = BucketState::default();
    for _ in 0..50 {
        bucket = admit_one(bucket, 50, 1, NOW_NANOS).expect("within the burst");
    }
    assert_eq!(
        admit_one(bucket, 50, 1, NOW_NANOS),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 1_200_000_000
        })
    );
    let one_later = NOW_NANOS + 1_200_000_000;
    assert_eq!(
        admit_one(bucket, 50, 1, one_later - 1).map(|_| ()),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 1
        })
    );
    bucket = admit_one(bucket, 50, 1, one_later).expect("one token refilled");
    assert_eq!(
        snapshot(bucket, 50, one_later),
        BucketSnapshot {
            limit: 50,
            remaining: 0,
            reset_at_nanos: NOW_NANOS + WINDOW_NANOS + 1_200_000_000
        }
    );
    assert_eq!(snapshot(bucket, 50, one_later + 30 * SECOND_NANOS).remaining, 25);
}

#[test]
fn exceeds_capacity_takes_precedence_over_exhausted() {
    let empty = state(NOW_NANOS + WINDOW_NANOS);
    let demands = [
        demand(empty, 100, 1),
        demand(BucketState::default(), 100, 101),
        demand(BucketState::default(), 5, 6),
    ];
    assert_eq!(
        admit(&demands, NOW_NANOS),
        Err(Refusal::ExceedsCapacity { index: 1 })
    );
    assert_eq!(
        admit_one(BucketState::default(), 100, 100, NOW_NANOS).map(|_| ()),
        Ok(())
    );
}

#[test]
fn among_exhausted_buckets_the_longest_wait_is_named() {
    // Requests: one token short by 1.2 s; input tokens: 3,000 short by 6 s.
    let requests = demand(state(NOW_NANOS + WINDOW_NANOS), 50, 1);
    let input_tokens = demand(state(NOW_NANOS + 54 * SECOND_NANOS), 30_000, 6_000);
    let refusal = admit(&[requests, input_tokens], NOW_NANOS);
    assert_eq!(
        refusal,
        Err(Refusal::Exhausted {
            index: 1,
            retry_after_nanos: 6 * SECOND_NANOS
        })
    );
    let states = admit(&[requests, input_tokens], NOW_NANOS + 6 * SECOND_NANOS).expect("both refilled");
    assert_eq!(
        states,
        vec![
            state(NOW_NANOS + WINDOW_NANOS + 1_200_000_000),
            state(NOW_NANOS + 66 * SECOND_NANOS)
        ]
    );
}

#[test]
fn a_zero_limit_admits_nothing_but_zero() {
    let fresh = BucketState::default();
    assert_eq!(
        admit_one(fresh, 0, 1, NOW_NANOS),
        Err(Refusal::ExceedsCapacity { index: 0 })
    );
    assert_eq!(admit_one(fresh, 0, 0, NOW_NANOS), Ok(fresh));
    assert_eq!(
        snapshot(fresh, 0, NOW_NANOS),
        BucketSnapshot {
            limit: 0,
            remaining: 0,
            reset_at_nanos: NOW_NANOS
        }
    );
    assert_eq!(
        refund(state(NOW_NANOS + 5), 0, 10, NOW_NANOS),
        state(NOW_NANOS + 5)
    );
    assert_eq!(charge_unconditionally(fresh, 0, 10, NOW_NANOS), fresh);
}

#[test]
fn a_zero_amount_passes_an_empty_bucket_unchanged() {
    let empty = state(NOW_NANOS + 2 * WINDOW_NANOS);
    assert_eq!(
        admit(
            &[demand(empty, 10, 0), demand(BucketState::default(), 10, 3)],
            NOW_NANOS
        )
        .map(|states| states[0]),
        Ok(empty)
    );
}

#[test]
fn charging_past_empty_puts_the_bucket_in_debt() {
    let indebted = charge_unconditionally(BucketState::default(), 10, 20, NOW_NANOS);
    assert_eq!(indebted, state(NOW_NANOS + 2 * WINDOW_NANOS));
    assert_eq!(
        snapshot(indebted, 10, NOW_NANOS),
        BucketSnapshot {
            limit: 10,
            remaining: 0,
            reset_at_nanos: NOW_NANOS + 2 * WINDOW_NANOS
        }
    );
    // Zero tokens after one window, one token 6 s later.
    assert_eq!(
        admit_one(indebted, 10, 1, NOW_NANOS),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 66 * SECOND_NANOS
        })
    );
}

#[test]
fn a_refund_gives_tokens_back_but_never_past_full() {
    let after_estimate = admit_one(BucketState::default(), 8_000, 4_000, NOW_NANOS).expect("half the bucket");
    assert_eq!(snapshot(after_estimate, 8_000, NOW_NANOS).remaining, 4_000);
    let corrected = refund(after_estimate, 8_000, 3_000, NOW_NANOS);
    assert_eq!(snapshot(corrected, 8_000, NOW_NANOS).remaining, 7_000);
    assert_eq!(refund(corrected, 8_000, 1_000_000, NOW_NANOS), state(NOW_NANOS));
    // A full bucket stays exactly as it was, even if `tat` is long past.
    assert_eq!(
        refund(BucketState::default(), 8_000, 5, NOW_NANOS),
        BucketState::default()
    );
}

#[test]
fn rounding_is_conservative_when_the_interval_is_not_whole_nanoseconds() {
    // 7 per minute: one token every 8,571,428,571.43 ns, rounded up to ...572 when taken.
    let after_one = admit_one(BucketState::default(), 7, 1, NOW_NANOS).expect("full bucket");
    assert_eq!(after_one, state(NOW_NANOS + 8_571_428_572));
    // Six whole tokens would need 51,428,571,428.57 ns of the 51,428,571,428 left: not yet.
    assert_eq!(snapshot(after_one, 7, NOW_NANOS).remaining, 5);
    assert_eq!(
        admit_one(after_one, 7, 6, NOW_NANOS),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 1
        })
    );
    assert_eq!(snapshot(after_one, 7, NOW_NANOS + 1).remaining, 6);
    // Giving the token back rounds down, so the bucket is full again one nanosecond later.
    assert_eq!(refund(after_one, 7, 1, NOW_NANOS), state(NOW_NANOS + 1));
}

fn per_minute_any() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1_u64),
        Just(7),
        Just(50),
        Just(8_000),
        Just(90_000),
        Just(450_000),
        1_u64..=2_000_000,
        // More than one token per nanosecond.
        Just(180_000_000_007),
        Just(u64::MAX),
    ]
}

/// Limits of at most one token per nanosecond.
fn per_minute_realistic() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1_u64),
        Just(7),
        Just(50),
        Just(8_000),
        Just(90_000),
        Just(450_000),
        1_u64..=2_000_000,
        Just(60_000_000_000)
    ]
}

fn token_interval_nanos(per_minute: u64) -> i64 {
    i64::try_from(interval_rounded_up(per_minute, 1)).expect("at most one window")
}

/// An instant and a bucket state around it: full, partly empty or in debt.
fn now_and_state() -> impl Strategy<Value = (i64, BucketState)> {
    (
        0_i64..=4_000_000_000_000_000_000,
        -2 * WINDOW_NANOS..=3 * WINDOW_NANOS,
    )
        .prop_map(|(now_nanos, offset)| (now_nanos, state(now_nanos + offset)))
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Admit(u64),
    Refund(u64),
}

/// A limit, a start, an initial state and a busy workload at non-decreasing times: each
/// step waits up to two token intervals, then takes (or gives back) some tokens.
fn workload() -> impl Strategy<Value = (u64, i64, BucketState, Vec<(i64, Step)>)> {
    (per_minute_any(), now_and_state()).prop_flat_map(|(per_minute, (start_nanos, initial))| {
        let wait = 0..=2 * token_interval_nanos(per_minute);
        let amount = prop_oneof![Just(1_u64), 1..=per_minute, Just(per_minute)];
        let step = prop_oneof![
            4 => amount.clone().prop_map(Step::Admit),
            1 => amount.prop_map(Step::Refund),
        ];
        (
            Just(per_minute),
            Just(start_nanos),
            Just(initial),
            vec((wait, step), 1..60),
        )
    })
}

/// Runs a workload, returning each step's time and tokens taken (negative: given back).
fn run(
    per_minute: u64,
    start_nanos: i64,
    initial: BucketState,
    steps: &[(i64, Step)],
) -> Vec<(i64, i128, bool)> {
    let mut bucket = initial;
    let mut now_nanos = start_nanos;
    let mut events = Vec::new();
    for &(wait, step) in steps {
        now_nanos += wait;
        match step {
            Step::Admit(amount) => {
                if let Ok(taken) = admit_one(bucket, per_minute, amount, now_nanos) {
                    bucket = taken;
                    events.push((now_nanos, i128::from(amount), true));
                }
            }
            Step::Refund(amount) => {
                bucket = refund(bucket, per_minute, amount, now_nanos);
                events.push((now_nanos, -i128::from(amount), false));
            }
        }
    }
    events
}

proptest! {
    /// The limit is never exceeded: between any two admissions at t0 <= t1, the tokens taken
    /// (net of refunds in between) are at most per_minute + per_minute × (t1 − t0) / 60 s,
    /// exactly, with no rounding slack.
    #[test]
    fn admitted_tokens_never_exceed_the_continuous_bucket((per_minute, start_nanos, initial, steps) in workload()) {
        let events = run(per_minute, start_nanos, initial, &steps);
        let window = i128::from(WINDOW_NANOS);
        for (first, &(first_nanos, _, first_is_admission)) in events.iter().enumerate() {
            if !first_is_admission {
                continue;
            }
            let mut net_taken = 0_i128;
            for &(last_nanos, taken, last_is_admission) in &events[first..] {
                net_taken += taken;
                if !last_is_admission {
                    continue;
                }
                let elapsed = i128::from(last_nanos - first_nanos);
                let allowed = i128::from(per_minute) * window + i128::from(per_minute) * elapsed;
                prop_assert!(net_taken * window <= allowed, "{net_taken} tokens in {elapsed} ns at {per_minute}/min");
            }
        }
    }

    /// The stored state is never looser than an exact continuous bucket given the same
    /// admitted demands and refunds: its `tat` (scaled by the limit to stay in integers, so
    /// token intervals are exact) is never ahead of the stored one.
    #[test]
    fn the_state_is_never_looser_than_the_exact_bucket((per_minute, start_nanos, initial, steps) in workload()) {
        let window = i128::from(WINDOW_NANOS);
        let limit = i128::from(per_minute);
        let mut bucket = initial;
        let mut exact_tat_scaled = i128::from(initial.tat_nanos) * limit;
        let mut now_nanos = start_nanos;
        for (wait, step) in steps {
            now_nanos += wait;
            let now_scaled = i128::from(now_nanos) * limit;
            match step {
                Step::Admit(amount) => {
                    if let Ok(taken) = admit_one(bucket, per_minute, amount, now_nanos) {
                        bucket = taken;
                        exact_tat_scaled = exact_tat_scaled.max(now_scaled) + i128::from(amount) * window;
                    }
                }
                Step::Refund(amount) => {
                    bucket = refund(bucket, per_minute, amount, now_nanos);
                    if exact_tat_scaled > now_scaled {
                        exact_tat_scaled = (exact_tat_scaled - i128::from(amount) * window).max(now_scaled);
                    }
                }
            }
            prop_assert!(i128::from(bucket.tat_nanos) * limit >= exact_tat_scaled, "looser than exact at {now_nanos}: {bucket:?}");
        }
    }

    /// A refused demand retried exactly `retry_after_nanos` later succeeds, and one
    /// nanosecond earlier it still fails.
    #[test]
    fn retry_after_is_exact_for_one_bucket((now_nanos, bucket) in now_and_state(), per_minute in per_minute_any(), fraction in 1_u64..=1_000) {
        let amount = (per_minute / 1_000).saturating_mul(fraction).clamp(1, per_minute);
        if let Err(refusal) = admit_one(bucket, per_minute, amount, now_nanos) {
            let Refusal::Exhausted { index: 0, retry_after_nanos } = refusal else {
                return Err(TestCaseError::fail(format!("unexpected {refusal:?}")));
            };
            prop_assert!(retry_after_nanos > 0);
            prop_assert!(admit_one(bucket, per_minute, amount, now_nanos + retry_after_nanos).is_ok());
            prop_assert_eq!(
                admit_one(bucket, per_minute, amount, now_nanos + retry_after_nanos - 1),
                Err(Refusal::Exhausted { index: 0, retry_after_nanos: 1 })
            );
        }
    }

    /// Over several buckets, retrying after the reported wait succeeds for all of them, and
    /// the named bucket is one that could not go a nanosecond sooner.
    #[test]
    fn retry_after_is_exact_for_several_buckets(
        now_nanos in 0_i64..=4_000_000_000_000_000_000,
        buckets in vec((-2 * WINDOW_NANOS..=3 * WINDOW_NANOS, per_minute_realistic(), 0_u64..=1_000), 1..6),
    ) {
        let demands: Vec<BucketDemand> = buckets
            .iter()
            .map(|&(offset, per_minute, per_mille)| {
                let amount = u64::try_from(u128::from(per_minute) * u128::from(per_mille) / 1_000).expect("at most the limit");
                demand(state(now_nanos + offset), per_minute, amount)
            })
            .collect();
        if let Err(refusal) = admit(&demands, now_nanos) {
            let Refusal::Exhausted { index, retry_after_nanos } = refusal else {
                return Err(TestCaseError::fail(format!("unexpected {refusal:?}")));
            };
            prop_assert!(admit(&demands, now_nanos + retry_after_nanos).is_ok());
            let named = demands[index];
            prop_assert!(admit_one(named.state, named.per_minute, named.amount, now_nanos + retry_after_nanos - 1).is_err());
        }
    }

    /// All-or-nothing: admission over several buckets succeeds exactly when each bucket
    /// alone would, with the same new states; otherwise it names a bucket that refuses
    /// alone, returns no state, and its input is untouched. The function is pure.
    #[test]
    fn admission_is_all_or_nothing(
        now_nanos in 0_i64..=4_000_000_000_000_000_000,
        buckets in vec((-2 * WINDOW_NANOS..=3 * WINDOW_NANOS, per_minute_realistic(), 0_u64..=1_100), 1..6),
    ) {
        let demands: Vec<BucketDemand> = buckets
            .iter()
            .map(|&(offset, per_minute, per_mille)| {
                let amount = u64::try_from(u128::from(per_minute) * u128::from(per_mille) / 1_000).expect("fits");
                demand(state(now_nanos + offset), per_minute, amount)
            })
            .collect();
        let before = demands.clone();
        let together = admit(&demands, now_nanos);
        prop_assert_eq!(&demands, &before);
        prop_assert_eq!(&admit(&demands, now_nanos), &together);
        let alone: Vec<Result<BucketState, Refusal>> =
            demands.iter().map(|d| admit_one(d.state, d.per_minute, d.amount, now_nanos)).collect();
        match together {
            Ok(states) => {
                let expected: Vec<BucketState> = alone.iter().map(|result| result.expect("every bucket admits")).collect();
                prop_assert_eq!(states, expected);
            }
            Err(Refusal::ExceedsCapacity { index }) => {
                prop_assert_eq!(alone[index], Err(Refusal::ExceedsCapacity { index: 0 }));
                let earlier_exceeds = alone[..index].iter().any(|result| matches!(result, Err(Refusal::ExceedsCapacity { .. })));
                prop_assert!(!earlier_exceeds, "an earlier demand exceeds its capacity");
            }
            Err(Refusal::Exhausted { index, retry_after_nanos }) => {
                prop_assert_eq!(alone[index], Err(Refusal::Exhausted { index: 0, retry_after_nanos }));
                for result in &alone {
                    if let Err(Refusal::Exhausted { retry_after_nanos: other, .. }) = result {
                        prop_assert!(*other <= retry_after_nanos);
                    }
                }
            }
        }
    }

    /// A fresh bucket admits exactly `per_minute` tokens at once and not one more.
    #[test]
    fn a_fresh_bucket_admits_exactly_its_limit(now_nanos in 0_i64..=4_000_000_000_000_000_000, per_minute in per_minute_any()) {
        let fresh = BucketState::default();
        let emptied = admit_one(fresh, per_minute, per_minute, now_nanos).expect("a full bucket");
        prop_assert_eq!(emptied, state(now_nanos + WINDOW_NANOS));
        let one_more = admit_one(emptied, per_minute, 1, now_nanos);
        prop_assert!(matches!(one_more, Err(Refusal::Exhausted { .. })), "one more after the limit: {:?}", one_more);
        if let Some(more) = per_minute.checked_add(1) {
            prop_assert_eq!(admit_one(fresh, per_minute, more, now_nanos), Err(Refusal::ExceedsCapacity { index: 0 }));
        }
    }

    /// One token at a time, a fresh bucket admits its limit when the interval is whole
    /// nanoseconds, and never more than its limit.
    #[test]
    fn a_fresh_bucket_admits_at_most_its_limit_one_by_one(now_nanos in 0_i64..=4_000_000_000_000_000_000, per_minute in 1_u64..=3_000) {
        let mut bucket = BucketState::default();
        let mut admitted = 0_u64;
        while let Ok(taken) = admit_one(bucket, per_minute, 1, now_nanos) {
            bucket = taken;
            admitted += 1;
            prop_assert!(admitted <= per_minute);
        }
        if WINDOW_NANOS.unsigned_abs().is_multiple_of(per_minute) {
            prop_assert_eq!(admitted, per_minute);
        }
    }

    /// A refund never makes a bucket fuller than full, never takes tokens, and leaves a
    /// full bucket as it was.
    #[test]
    fn a_refund_never_overfills((now_nanos, bucket) in now_and_state(), per_minute in per_minute_any(), amount in prop_oneof![1_u64..=1_000_000, Just(u64::MAX)]) {
        let refunded = refund(bucket, per_minute, amount, now_nanos);
        let after = snapshot(refunded, per_minute, now_nanos);
        prop_assert!(after.remaining <= after.limit);
        prop_assert!(after.remaining >= snapshot(bucket, per_minute, now_nanos).remaining);
        prop_assert!(refunded.tat_nanos <= bucket.tat_nanos);
        if bucket.tat_nanos <= now_nanos {
            prop_assert_eq!(refunded, bucket);
        } else {
            prop_assert!(refunded.tat_nanos >= now_nanos);
        }
    }

    /// After taking `n` from a full bucket, `limit − n` remain, less the one token that
    /// rounding holds back for a nanosecond when n × 60 s / limit is not whole nanoseconds.
    #[test]
    fn remaining_after_taking_from_a_full_bucket(
        now_nanos in 0_i64..=4_000_000_000_000_000_000,
        full_since in 0_i64..=WINDOW_NANOS,
        per_minute in per_minute_realistic(),
        per_mille in 1_u64..=1_000,
    ) {
        let amount = u64::try_from(u128::from(per_minute) * u128::from(per_mille) / 1_000).expect("fits").max(1);
        let taken = admit_one(state(now_nanos - full_since), per_minute, amount, now_nanos).expect("a full bucket");
        let whole = (u128::from(amount) * 60_000_000_000).is_multiple_of(u128::from(per_minute));
        let held_back = u64::from(!whole);
        prop_assert_eq!(snapshot(taken, per_minute, now_nanos).remaining, per_minute - amount - held_back);
        // A nanosecond later the held-back token is back (below one token per nanosecond).
        if per_minute < WINDOW_NANOS.unsigned_abs() {
            prop_assert_eq!(snapshot(taken, per_minute, now_nanos + 1).remaining, per_minute - amount);
        }
    }

    /// `remaining` is exactly the largest amount admission accepts now, and the bucket is
    /// full at `reset_at_nanos`.
    #[test]
    fn snapshots_agree_with_admission((now_nanos, bucket) in now_and_state(), per_minute in per_minute_any()) {
        let seen = snapshot(bucket, per_minute, now_nanos);
        prop_assert_eq!(seen.limit, per_minute);
        prop_assert!(seen.remaining <= per_minute);
        if seen.remaining > 0 {
            prop_assert!(admit_one(bucket, per_minute, seen.remaining, now_nanos).is_ok());
        }
        if seen.remaining < per_minute {
            prop_assert!(admit_one(bucket, per_minute, seen.remaining + 1, now_nanos).is_err());
        }
        prop_assert_eq!(seen.reset_at_nanos, bucket.tat_nanos.max(now_nanos));
        prop_assert_eq!(snapshot(bucket, per_minute, seen.reset_at_nanos).remaining, per_minute);
    }

    /// Charging takes exactly what admission would have, but without refusing.
    #[test]
    fn charging_matches_admission_when_there_is_room((now_nanos, bucket) in now_and_state(), per_minute in per_minute_any(), amount in 1_u64..=1_000) {
        let charged = charge_unconditionally(bucket, per_minute, amount, now_nanos);
        if let Ok(admitted) = admit_one(bucket, per_minute, amount, now_nanos) {
            prop_assert_eq!(charged, admitted);
        }
        prop_assert!(charged.tat_nanos > bucket.tat_nanos.max(now_nanos));
    }
}

// Credit: tokens taken without having to fit (input expected to be read from a prompt
// cache), given back or charged at settlement.

fn demand_on_credit(state: BucketState, per_minute: u64, amount: u64, credit: u64) -> BucketDemand {
    BucketDemand {
        state,
        per_minute,
        amount,
        credit,
    }
}

#[test]
fn a_cached_request_waits_only_for_its_uncached_input() {
    // Tier 1: 30,000 input tokens a minute, one every 2 ms. The first request writes the
    // cache: all of its 28,000 tokens count.
    let per_minute = 30_000;
    let first = admit_one(BucketState::default(), per_minute, 28_000, NOW_NANOS).expect("full bucket");
    let second_at = NOW_NANOS + 1_350_000_000;
    // Taken whole, the second would wait ~51 s, though 27,500 of its tokens are cache reads.
    assert_eq!(
        admit_one(first, per_minute, 28_000, second_at),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 50_650_000_000
        })
    );
    // With the expected cache read on credit, only 500 tokens must fit: admitted at once,
    // and the bucket goes into debt by what it took on credit.
    let second = admit(&[demand_on_credit(first, per_minute, 500, 27_500)], second_at).expect("500 fit")[0];
    assert_eq!(second, state(second_at + 54_650_000_000 + 56_000_000_000));
    assert_eq!(snapshot(second, per_minute, second_at).remaining, 0);
    // A third request is admitted only once the bucket is out of debt, even on credit alone.
    assert_eq!(
        admit(&[demand_on_credit(second, per_minute, 0, 27_500)], second_at),
        Err(Refusal::Exhausted {
            index: 0,
            retry_after_nanos: 50_650_000_000
        })
    );
    // Settlement: the upstream read 27,500 from its cache, so they are given back. The
    // bucket is where taking the 500 actual tokens alone would have left it.
    let settled = refund(second, per_minute, 27_500, second_at);
    assert_eq!(settled, state(second_at + 54_650_000_000 + 1_000_000_000));
    assert_eq!(snapshot(settled, per_minute, second_at).remaining, 2_175);
    // Had the cache missed, nothing would be given back: the debt is repaid by waiting.
    assert_eq!(
        snapshot(second, per_minute, second_at + 51_000_000_000).remaining,
        175
    );
}

#[test]
fn a_credit_larger_than_the_bucket_is_admitted_on_its_amount() {
    // A long cached conversation on a small limit: 60,000 tokens expected from the cache,
    // 2,000 new. Only the 2,000 must fit; the credit's debt is repaid at settlement.
    let admitted = admit(
        &[demand_on_credit(BucketState::default(), 30_000, 2_000, 60_000)],
        NOW_NANOS,
    )
    .expect("2,000 fit")[0];
    assert_eq!(admitted, state(NOW_NANOS + 124 * SECOND_NANOS));
    assert_eq!(
        refund(admitted, 30_000, 60_000, NOW_NANOS),
        state(NOW_NANOS + 4 * SECOND_NANOS)
    );
    // The amount alone decides capacity.
    assert_eq!(
        admit(
            &[demand_on_credit(BucketState::default(), 30_000, 30_001, 0)],
            NOW_NANOS
        ),
        Err(Refusal::ExceedsCapacity { index: 0 })
    );
    // A zero limit takes no credit (and refuses any amount).
    assert_eq!(
        admit(&[demand_on_credit(BucketState::default(), 0, 0, 5)], NOW_NANOS),
        Ok(vec![BucketState::default()])
    );
}

/// One request of a credit workload: what must fit, what is taken on credit, and the
/// actual count (at most both together).
#[derive(Clone, Copy, Debug)]
enum CreditStep {
    Request {
        amount: u64,
        credit: u64,
        actual: u64,
    },
    /// Settles the in-flight request at this index (modulo how many there are).
    Settle(usize),
}

/// Requests with credits up to twice the limit, settled in any order, at non-decreasing
/// times.
fn credit_workload() -> impl Strategy<Value = (u64, i64, BucketState, Vec<(i64, CreditStep)>)> {
    (per_minute_realistic(), now_and_state()).prop_flat_map(|(per_minute, (start_nanos, initial))| {
        let interval = token_interval_nanos(per_minute);
        let wait = prop_oneof![4 => 0..=2 * interval, 1 => 0..=WINDOW_NANOS];
        let tokens = prop_oneof![Just(0_u64), Just(1), 0..=per_minute, Just(per_minute)];
        let credit = prop_oneof![Just(0_u64), 0..=per_minute, 0..=2 * per_minute];
        let request = (tokens, credit, 0_u32..=100).prop_map(|(amount, credit, per_cent)| {
            let taken = amount + credit;
            let actual = match per_cent {
                0..=30 => taken,
                31..=60 => amount,
                _ => taken * u64::from(per_cent) / 100,
            };
            CreditStep::Request {
                amount,
                credit,
                actual,
            }
        });
        let step = prop_oneof![3 => request, 2 => any::<usize>().prop_map(CreditStep::Settle)];
        (
            Just(per_minute),
            Just(start_nanos),
            Just(initial),
            vec((wait, step), 1..60),
        )
    })
}

#[derive(Clone, Copy, Debug)]
enum CreditEvent {
    Admitted {
        actual: u64,
        credit: u64,
    },
    /// Tokens given back at settlement to the request admitted as event `admitted_event`.
    GivenBack {
        amount: u64,
        admitted_event: usize,
    },
}

proptest! {
    /// The bound stated in the module docs: between any two admissions at t0 <= t1, the
    /// actual tokens of the requests admitted (the first through the last) are at most
    /// per_minute + per_minute × (t1 − t0) / 60 s + K + R, where K is the largest credit
    /// of one of them (the debt one admission may take) and R what was given back in between
    /// to requests admitted before the first; exactly, but for one nanosecond of refill
    /// lost to rounding the credit's interval up.
    #[test]
    fn actual_tokens_admitted_on_credit_stay_within_the_bound((per_minute, start_nanos, initial, steps) in credit_workload()) {
        let window = i128::from(WINDOW_NANOS);
        let limit = i128::from(per_minute);
        let mut bucket = initial;
        let mut now_nanos = start_nanos;
        let mut in_flight: Vec<(usize, u64, u64)> = Vec::new();
        let mut events: Vec<(i64, CreditEvent)> = Vec::new();
        for (wait, step) in steps {
            now_nanos += wait;
            match step {
                CreditStep::Request { amount, credit, actual } => {
                    let demand = demand_on_credit(bucket, per_minute, amount, credit);
                    if let Ok(states) = admit(&[demand], now_nanos) {
                        bucket = states[0];
                        // A demand that takes something leaves a debt of at most its credit
                        // (and a nanosecond); one that takes nothing leaves the state alone.
                        let backlog = i128::from(bucket.tat_nanos) - i128::from(now_nanos);
                        prop_assert!(demand.taken() == 0 || backlog * limit <= (limit + i128::from(credit)) * window + limit, "backlog {backlog} ns after taking {credit} on credit");
                        in_flight.push((events.len(), demand.taken(), actual));
                        events.push((now_nanos, CreditEvent::Admitted { actual, credit }));
                    }
                }
                CreditStep::Settle(pick) => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let (admitted_event, taken, actual) = in_flight.swap_remove(pick % in_flight.len());
                    bucket = refund(bucket, per_minute, taken - actual, now_nanos);
                    events.push((now_nanos, CreditEvent::GivenBack { amount: taken - actual, admitted_event }));
                }
            }
        }
        for (first, &(first_nanos, first_event)) in events.iter().enumerate() {
            if !matches!(first_event, CreditEvent::Admitted { .. }) {
                continue;
            }
            let mut actual_sum = 0_i128;
            let mut credit_max = 0_i128;
            let mut given_back_before = 0_i128;
            for &(last_nanos, event) in &events[first..] {
                match event {
                    CreditEvent::GivenBack { amount, admitted_event } => {
                        if admitted_event < first {
                            given_back_before += i128::from(amount);
                        }
                    }
                    CreditEvent::Admitted { actual, credit } => {
                        actual_sum += i128::from(actual);
                        credit_max = credit_max.max(i128::from(credit));
                        let elapsed = i128::from(last_nanos - first_nanos);
                        let allowed = (limit + credit_max + given_back_before) * window + limit * elapsed + limit;
                        prop_assert!(
                            actual_sum * window <= allowed,
                            "{actual_sum} actual tokens in {elapsed} ns at {per_minute}/min, largest credit {credit_max}, given back {given_back_before}"
                        );
                    }
                }
            }
        }
    }

    /// Credit never changes whether a demand is admitted, only what it takes: with and
    /// without it, the same demand gets the same answer, and the states differ by exactly
    /// the credit's interval.
    #[test]
    fn credit_decides_nothing_but_what_is_taken((now_nanos, bucket) in now_and_state(), per_minute in per_minute_realistic(), per_mille in 0_u64..=1_100, credit in 1_u64..=3_000_000) {
        let amount = per_minute * per_mille / 1_000;
        let without = admit(&[demand(bucket, per_minute, amount)], now_nanos);
        let with = admit(&[demand_on_credit(bucket, per_minute, amount, credit)], now_nanos);
        match (without, with) {
            (Ok(plain), Ok(on_credit)) => {
                let start = bucket.tat_nanos.max(now_nanos);
                prop_assert_eq!(i128::from(on_credit[0].tat_nanos), i128::from(start) + interval_rounded_up(per_minute, amount + credit));
                prop_assert!(on_credit[0].tat_nanos >= plain[0].tat_nanos);
            }
            (Err(plain), Err(on_credit)) => prop_assert_eq!(plain, on_credit),
            // Only a zero amount may differ: without credit it passes whatever the debt.
            (Ok(_), Err(Refusal::Exhausted { .. })) => prop_assert_eq!(amount, 0),
            (without, with) => prop_assert!(false, "{:?} without credit, {:?} with", without, with),
        }
    }
}
