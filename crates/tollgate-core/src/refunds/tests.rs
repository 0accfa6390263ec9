use proptest::prelude::*;

use crate::money::NanoUsd;
use crate::refunds::{PurchaseReversals, ReversalClaim, ReversalKind, ReversalPlan, plan_reversal};

fn usd(value: i64) -> NanoUsd {
    NanoUsd::from_usd(value)
}

fn purchase(amount: i64, refunded: i64, disputed: i64, lot_available: i64) -> PurchaseReversals {
    PurchaseReversals {
        amount: usd(amount),
        refunded: usd(refunded),
        disputed: usd(disputed),
        lot_available: usd(lot_available),
    }
}

fn refund(total: i64) -> ReversalClaim {
    ReversalClaim::Refunded {
        refunded_total: usd(total),
    }
}

/// (reversed, recovered, unrecovered, refunded, disputed, capped) in whole dollars.
fn check(
    purchase: PurchaseReversals,
    claim: ReversalClaim,
    expected: Option<(i64, i64, i64, i64, i64, bool)>,
) {
    let plan = plan_reversal(purchase, claim);
    let expected =
        expected.map(
            |(reversed, recovered, unrecovered, refunded, disputed, capped)| ReversalPlan {
                kind: claim.kind(),
                reversed: usd(reversed),
                recovered: usd(recovered),
                unrecovered: usd(unrecovered),
                refunded: usd(refunded),
                disputed: usd(disputed),
                capped,
            },
        );
    assert_eq!(plan, expected, "{purchase:?} {claim:?}");
}

#[test]
fn a_full_refund_of_an_unspent_purchase_empties_its_lot() {
    check(
        purchase(25, 0, 0, 25),
        refund(25),
        Some((25, 25, 0, 25, 0, false)),
    );
}

#[test]
fn refunds_are_cumulative_so_each_event_reverses_only_what_its_total_adds() {
    check(
        purchase(25, 0, 0, 25),
        refund(10),
        Some((10, 10, 0, 10, 0, false)),
    );
    check(purchase(25, 10, 0, 15), refund(15), Some((5, 5, 0, 15, 0, false)));
    // The first event again, or arriving after the second: nothing new.
    check(purchase(25, 15, 0, 10), refund(10), None);
    check(purchase(25, 15, 0, 10), refund(15), None);
}

#[test]
fn what_was_spent_is_recorded_unrecovered_instead_of_taken_from_the_lot() {
    check(purchase(25, 0, 0, 5), refund(25), Some((25, 5, 20, 25, 0, false)));
    check(purchase(25, 0, 0, 0), refund(10), Some((10, 0, 10, 10, 0, false)));
}

#[test]
fn a_lost_dispute_reverses_its_amount_up_to_what_is_left_of_the_purchase() {
    let lost = |amount| ReversalClaim::DisputeLost {
        disputed: usd(amount),
    };
    check(purchase(25, 0, 0, 25), lost(25), Some((25, 25, 0, 0, 25, false)));
    // After a partial refund, a dispute of the whole charge reverses only the rest.
    check(purchase(25, 10, 0, 15), lost(25), Some((15, 15, 0, 10, 15, true)));
    check(purchase(25, 0, 25, 0), refund(5), None);
    assert_eq!(lost(1).kind(), ReversalKind::Dispute);
}

#[test]
fn kinds_round_trip_their_names() {
    for kind in ReversalKind::ALL {
        assert_eq!(ReversalKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(ReversalKind::parse("chargeback"), None);
}

proptest! {
    /// Whatever order and repetition refund totals arrive in, the purchase ends reversed by
    /// the largest total (capped at its amount), never more; what is recovered never
    /// exceeds what the lot had; nothing is lost between recovered and unrecovered.
    #[test]
    fn any_sequence_of_refund_totals_reverses_the_largest_once(
        amount in 1i64..1_000,
        spent in 0i64..1_000,
        totals in proptest::collection::vec(0i64..1_200, 1..8),
    ) {
        let amount = NanoUsd::from_nanos(amount);
        let mut state = PurchaseReversals {
            amount,
            refunded: NanoUsd::ZERO,
            disputed: NanoUsd::ZERO,
            lot_available: amount.checked_sub(NanoUsd::from_nanos(spent)).unwrap().max(NanoUsd::ZERO),
        };
        let lot_at_start = state.lot_available;
        let (mut recovered, mut unrecovered) = (NanoUsd::ZERO, NanoUsd::ZERO);
        for total in &totals {
            if let Some(plan) = plan_reversal(state, ReversalClaim::Refunded { refunded_total: NanoUsd::from_nanos(*total) }) {
                prop_assert!(plan.reversed.is_positive());
                prop_assert_eq!(plan.recovered.checked_add(plan.unrecovered), Some(plan.reversed));
                prop_assert!(plan.recovered <= state.lot_available);
                recovered = recovered.checked_add(plan.recovered).unwrap();
                unrecovered = unrecovered.checked_add(plan.unrecovered).unwrap();
                state.refunded = plan.refunded;
                state.lot_available = state.lot_available.checked_sub(plan.recovered).unwrap();
            }
        }
        let largest = NanoUsd::from_nanos(*totals.iter().max().unwrap()).min(amount);
        prop_assert_eq!(state.refunded, largest);
        prop_assert_eq!(recovered.checked_add(unrecovered), Some(largest));
        prop_assert!(recovered <= lot_at_start);
    }
}
