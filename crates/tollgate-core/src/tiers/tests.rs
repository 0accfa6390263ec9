use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::money::NanoUsd;
use crate::tiers::{LadderError, LimitSet, RateLimits, Tier, TierLadder};

fn tier(name: &str, threshold_usd: i64, rpm: u64) -> Tier {
    Tier {
        limits: LimitSet {
            name: name.to_owned(),
            monthly_spend_limit: Some(NanoUsd::from_usd(threshold_usd * 10 + 10)),
            max_single_purchase: Some(NanoUsd::from_usd(100)),
            rate_limits: BTreeMap::from([(
                "sonnet".to_owned(),
                RateLimits {
                    requests_per_minute: rpm,
                    input_tokens_per_minute: rpm * 100,
                    output_tokens_per_minute: rpm * 10,
                },
            )]),
            count_tokens_requests_per_minute: rpm * 2,
        },
        cumulative_purchases_min: NanoUsd::from_usd(threshold_usd),
    }
}

fn contract_ladder() -> TierLadder {
    TierLadder::new(vec![
        tier("Evaluation", 0, 5),
        tier("Tier 1", 5, 50),
        tier("Tier 2", 40, 1_000),
        tier("Tier 3", 200, 2_000),
        tier("Tier 4", 400, 4_000),
    ])
    .expect("valid ladder")
}

#[test]
fn tiers_advance_at_their_thresholds() {
    let ladder = contract_ladder();
    let name = |usd: &str| {
        ladder
            .tier_for(NanoUsd::parse_usd(usd).expect("amount"))
            .limits
            .name
            .clone()
    };
    assert_eq!(name("0"), "Evaluation");
    assert_eq!(name("4.999999999"), "Evaluation");
    assert_eq!(name("5"), "Tier 1");
    assert_eq!(name("39.99"), "Tier 1");
    assert_eq!(name("40"), "Tier 2");
    assert_eq!(name("400"), "Tier 4");
    assert_eq!(name("1000000"), "Tier 4");
    assert_eq!(
        ladder.next_after("Tier 1").map(|tier| tier.limits.name.as_str()),
        Some("Tier 2")
    );
    assert!(ladder.next_after("Tier 4").is_none());
}

#[test]
fn a_ladder_must_start_free_and_climb() {
    assert_eq!(TierLadder::new(vec![]), Err(LadderError::Empty));
    assert!(matches!(
        TierLadder::new(vec![tier("a", 5, 1)]),
        Err(LadderError::FirstTierNotFree(_))
    ));
    assert!(matches!(
        TierLadder::new(vec![tier("a", 0, 1), tier("b", 0, 2)]),
        Err(LadderError::NotAscending(_))
    ));
    assert!(matches!(
        TierLadder::new(vec![tier("a", 0, 1), tier("a", 5, 2)]),
        Err(LadderError::DuplicateName(_))
    ));
}

#[test]
fn an_uplift_only_raises_limits() {
    let base = tier("Tier 1", 5, 50).limits;
    let mut programme = tier("startup", 0, 1_000).limits;
    programme
        .rate_limits
        .get_mut("sonnet")
        .expect("sonnet")
        .output_tokens_per_minute = 1;
    programme.monthly_spend_limit = None;
    let uplifted = base.uplift(&programme);
    let sonnet = uplifted.rate_limits["sonnet"];
    assert_eq!(sonnet.requests_per_minute, 1_000);
    assert_eq!(
        sonnet.output_tokens_per_minute, 500,
        "the base's higher limit stays"
    );
    assert_eq!(
        uplifted.monthly_spend_limit, None,
        "no cap is the most generous cap"
    );
}

proptest! {
    /// Tiers never go down as cumulative purchases grow.
    #[test]
    fn the_ladder_is_monotonic(first in 0..1_000_i64, second in 0..1_000_i64) {
        let ladder = contract_ladder();
        let (low, high) = (first.min(second), first.max(second));
        let position = |usd: i64| {
            let name = &ladder.tier_for(NanoUsd::from_usd(usd)).limits.name;
            ladder.tiers().iter().position(|tier| &tier.limits.name == name)
        };
        prop_assert!(position(low) <= position(high));
    }
}
