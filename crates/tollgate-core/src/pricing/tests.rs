use proptest::prelude::*;

use crate::money::NanoUsd;
use crate::pricing::{InexactCachePrices, ModelPrices, TokenPrice};
use crate::usage::TokenUsage;

fn price(text: &str) -> TokenPrice {
    TokenPrice::parse_usd_per_mtok(text).expect("valid price")
}

fn sonnet() -> ModelPrices {
    ModelPrices::from_input_output(price("3"), price("15")).expect("exact cache prices")
}

#[test]
fn derives_the_contract_cache_prices() {
    // The contract's table: Sonnet $3 / $15, cache writes $3.75 and $6, cache reads $0.30.
    let prices = sonnet();
    assert_eq!(prices.cache_write_5m, price("3.75"));
    assert_eq!(prices.cache_write_1h, price("6"));
    assert_eq!(prices.cache_read, price("0.30"));
    let opus = ModelPrices::from_input_output(price("5"), price("25")).expect("exact");
    assert_eq!(opus.cache_write_5m, price("6.25"));
    assert_eq!(opus.cache_read, price("0.50"));
}

#[test]
fn given_cache_prices_win_and_only_derived_ones_must_be_exact() {
    // #18: $0.15 input derives a 5-minute write of 187.5 nanos per token.
    let (input, output) = (price("0.15"), price("0.6"));
    let given = ModelPrices::with_cache_prices(
        input,
        output,
        Some(price("0.19")),
        Some(price("0.31")),
        Some(price("0.075")),
    )
    .expect("nothing derived");
    assert_eq!(
        [given.cache_write_5m, given.cache_write_1h, given.cache_read],
        [price("0.19"), price("0.31"), price("0.075")]
    );
    let partly = ModelPrices::with_cache_prices(input, output, Some(price("0.19")), None, None)
        .expect("2x and 0.1x of 150 nanos are whole");
    assert_eq!(
        [partly.cache_write_5m, partly.cache_write_1h, partly.cache_read],
        [price("0.19"), price("0.30"), price("0.015")]
    );
    assert_eq!(
        ModelPrices::with_cache_prices(input, output, None, None, None),
        Err(InexactCachePrices(vec!["cache_write_5m"]))
    );
    assert_eq!(ModelPrices::from_input_output(input, output), None);
    assert_eq!(
        ModelPrices::with_cache_prices(price("0.001"), output, None, Some(price("1")), None),
        Err(InexactCachePrices(vec!["cache_write_5m", "cache_read"]))
    );
}

#[test]
fn one_dollar_per_mtok_is_a_thousand_nanos_per_token() {
    assert_eq!(price("1").nanos_per_token(), 1_000);
    assert_eq!(price("0.001").nanos_per_token(), 1);
    assert!(TokenPrice::parse_usd_per_mtok("0.0001").is_err());
    assert!(TokenPrice::parse_usd_per_mtok("-1").is_err());
}

#[test]
fn costs_each_token_kind_at_its_price() {
    let usage = TokenUsage {
        input_tokens: 1_000,
        output_tokens: 500,
        cache_creation_5m_input_tokens: 200,
        cache_creation_1h_input_tokens: 100,
        cache_read_input_tokens: 10_000,
    };
    // 1000×3000 + 500×15000 + 200×3750 + 100×6000 + 10000×300 nano-USD.
    let expected = 3_000_000 + 7_500_000 + 750_000 + 600_000 + 3_000_000;
    assert_eq!(sonnet().cost(&usage), Some(NanoUsd::from_nanos(expected)));
}

fn usage_strategy() -> impl Strategy<Value = TokenUsage> {
    (
        0..2_000_000_u64,
        0..200_000_u64,
        0..2_000_000_u64,
        0..2_000_000_u64,
        0..2_000_000_u64,
    )
        .prop_map(|(input, output, write_5m, write_1h, read)| TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_5m_input_tokens: write_5m,
            cache_creation_1h_input_tokens: write_1h,
            cache_read_input_tokens: read,
        })
}

proptest! {
    /// The reservation bound covers the real cost of any usage within the token bounds.
    #[test]
    fn cost_bound_covers_every_split_of_input(usage in usage_strategy()) {
        let prices = sonnet();
        let input_max = usage.rate_limited_input_tokens() + usage.cache_read_input_tokens;
        let bound = prices.cost_bound(input_max, usage.output_tokens);
        let cost = prices.cost(&usage).expect("no overflow at these sizes");
        prop_assert!(cost <= bound, "cost {cost} above bound {bound}");
    }

    /// Cost is additive: two requests cost what their summed usage costs.
    #[test]
    fn cost_is_additive(first in usage_strategy(), second in usage_strategy()) {
        let prices = sonnet();
        let summed = TokenUsage {
            input_tokens: first.input_tokens + second.input_tokens,
            output_tokens: first.output_tokens + second.output_tokens,
            cache_creation_5m_input_tokens: first.cache_creation_5m_input_tokens + second.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: first.cache_creation_1h_input_tokens + second.cache_creation_1h_input_tokens,
            cache_read_input_tokens: first.cache_read_input_tokens + second.cache_read_input_tokens,
        };
        let separate = prices.cost(&first).and_then(|a| prices.cost(&second).and_then(|b| a.checked_add(b)));
        prop_assert_eq!(separate, prices.cost(&summed));
    }
}

#[test]
fn per_request_and_per_image_charges_fold_into_the_cost() {
    // A provider that bills $0.002 a call and $0.01 an image on top of its tokens.
    let prices = ModelPrices {
        per_request: NanoUsd::parse_usd("0.002").expect("amount"),
        per_image: NanoUsd::parse_usd("0.01").expect("amount"),
        ..sonnet()
    };
    let usage = TokenUsage {
        input_tokens: 1_000,
        output_tokens: 100,
        ..TokenUsage::default()
    };
    let tokens = 1_000 * 3_000 + 100 * 15_000;
    assert_eq!(
        prices.cost(&usage),
        Some(NanoUsd::from_nanos(tokens + 2_000_000)),
        "the flat charge applies; images are not counted until folded in"
    );
    let three_images = prices.for_request(3).expect("no overflow");
    assert_eq!(three_images.per_image, NanoUsd::ZERO);
    assert_eq!(three_images.per_request, NanoUsd::from_nanos(32_000_000));
    assert_eq!(
        three_images.cost(&usage),
        Some(NanoUsd::from_nanos(tokens + 32_000_000))
    );
    assert_eq!(
        three_images.for_request(5),
        Some(three_images),
        "folding twice adds nothing"
    );
    // The bound prices input at the dearest kind (1-hour cache writes, $6).
    assert_eq!(
        three_images.cost_bound(1_000, 100),
        NanoUsd::from_nanos(1_000 * 6_000 + 100 * 15_000 + 32_000_000),
        "the bound carries the flat charges too"
    );
    assert_eq!(
        sonnet().cost(&TokenUsage::default()),
        Some(NanoUsd::ZERO),
        "token-only prices have no flat charge"
    );
    let huge = ModelPrices {
        per_image: NanoUsd::MAX,
        ..sonnet()
    };
    assert_eq!(huge.for_request(2), None, "overflow is refused, not wrapped");
}
