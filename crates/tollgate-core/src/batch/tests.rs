use proptest::prelude::*;

use super::*;

#[test]
fn half_rounded_up() {
    assert_eq!(batch_rate(NanoUsd::from_nanos(0)), NanoUsd::from_nanos(0));
    assert_eq!(batch_rate(NanoUsd::from_nanos(1)), NanoUsd::from_nanos(1));
    assert_eq!(batch_rate(NanoUsd::from_nanos(3_000)), NanoUsd::from_nanos(1_500));
    assert_eq!(batch_rate(NanoUsd::from_nanos(3_001)), NanoUsd::from_nanos(1_501));
    assert_eq!(batch_rate(NanoUsd::MAX), NanoUsd::from_nanos(i64::MAX / 2 + 1));
}

proptest! {
    /// A cost below its bound stays below it at the Batch rate.
    #[test]
    fn the_bound_stays_a_bound(cost in 0_i64..i64::MAX, extra in 0_i64..1_000_000) {
        let bound = cost.saturating_add(extra);
        prop_assert!(batch_rate(NanoUsd::from_nanos(cost)) <= batch_rate(NanoUsd::from_nanos(bound)));
    }
}
