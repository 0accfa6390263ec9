use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use crate::Timestamp;
use crate::money::NanoUsd;
use crate::pricing::{
    CostLines, ModelPrices, Multiplier, MultiplierParseError, Multipliers, PriceSchedule, PriceScheduleError,
    PromptTier, TokenPrice,
};
use crate::reports::{TokenType, split_charge};
use crate::usage::{Speed, TokenUsage};

fn price(text: &str) -> TokenPrice {
    TokenPrice::parse_usd_per_mtok(text).expect("valid price")
}

fn sonnet() -> ModelPrices {
    ModelPrices::from_input_output(price("3"), price("15"))
}

/// `prices` on a model that takes `inference_geo` (Opus 4.6 and the models after it).
fn resident(prices: ModelPrices) -> ModelPrices {
    ModelPrices {
        data_residency: true,
        ..prices
    }
}

/// Sonnet 4.5 with its 1M context window: above 200K prompt tokens, $6 / $22.50, cache
/// writes $7.50 / $12, cache reads $0.60.
fn sonnet_long_context() -> ModelPrices {
    ModelPrices {
        prompt_tiers: vec![PromptTier {
            above_prompt_tokens: 200_000,
            input: Some(price("6")),
            output: Some(price("22.50")),
            cache_write_5m: Some(price("7.50")),
            cache_write_1h: Some(price("12")),
            cache_read: Some(price("0.60")),
        }],
        ..sonnet()
    }
}

/// Opus 4.6: $5 / $25, fast mode 6 ×.
fn opus_fast() -> ModelPrices {
    ModelPrices {
        fast_multiplier: Some(Multiplier::new(6, 1)),
        ..ModelPrices::from_input_output(price("5"), price("25"))
    }
}

/// Haiku 5.5: $0.10 / $0.50 (cache reads $0.01) up to 100K prompt tokens, 5 × above.
fn haiku_5_5() -> ModelPrices {
    ModelPrices {
        prompt_tiers: vec![PromptTier {
            above_prompt_tokens: 100_000,
            input: Some(price("0.50")),
            output: Some(price("2.50")),
            cache_write_5m: Some(price("0.625")),
            cache_write_1h: Some(price("1")),
            cache_read: Some(price("0.05")),
        }],
        ..ModelPrices::with_cache_prices(price("0.10"), price("0.50"), None, None, Some(price("0.01")))
    }
}

fn at(text: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

fn usage(input: u64, output: u64, write_5m: u64, write_1h: u64, read: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_5m_input_tokens: write_5m,
        cache_creation_1h_input_tokens: write_1h,
        cache_read_input_tokens: read,
        ..TokenUsage::default()
    }
}

const NONE: Multipliers = Multipliers {
    batch: false,
    fast: false,
    geo: false,
};

#[test]
fn derives_the_contract_cache_prices() {
    // The contract's table: Sonnet $3 / $15, cache writes $3.75 and $6, cache reads $0.30.
    let prices = sonnet();
    assert_eq!(prices.cache_write_5m, price("3.75"));
    assert_eq!(prices.cache_write_1h, price("6"));
    assert_eq!(prices.cache_read, price("0.30"));
    let opus = ModelPrices::from_input_output(price("5"), price("25"));
    assert_eq!(opus.cache_write_5m, price("6.25"));
    assert_eq!(opus.cache_read, price("0.50"));
}

#[test]
fn derived_prices_round_up_and_given_ones_win() {
    // #18: $0.15 input derives a 5-minute write of 187.5 nanos per token; it was refused,
    // and is now billed 188 (never under the contract's 1.25 ×).
    let (input, output) = (price("0.15"), price("0.6"));
    let derived = ModelPrices::from_input_output(input, output);
    assert_eq!(
        [derived.cache_write_5m, derived.cache_write_1h, derived.cache_read].map(TokenPrice::nanos_per_token),
        [188, 300, 15]
    );
    let tiny = ModelPrices::from_input_output(price("0.001"), output);
    assert_eq!(
        [tiny.cache_write_5m, tiny.cache_write_1h, tiny.cache_read].map(TokenPrice::nanos_per_token),
        [2, 2, 1],
        "1.25 and 0.1 nanos round up to 2 and 1"
    );
    let given = ModelPrices::with_cache_prices(
        input,
        output,
        Some(price("0.19")),
        Some(price("0.31")),
        Some(price("0.075")),
    );
    assert_eq!(
        [given.cache_write_5m, given.cache_write_1h, given.cache_read],
        [price("0.19"), price("0.31"), price("0.075")]
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
    let usage = usage(1_000, 500, 200, 100, 10_000);
    // 1000×3000 + 500×15000 + 200×3750 + 100×6000 + 10000×300 nano-USD.
    let expected = 3_000_000 + 7_500_000 + 750_000 + 600_000 + 3_000_000;
    assert_eq!(sonnet().cost(&usage, NONE), Some(NanoUsd::from_nanos(expected)));
}

/// One published example: what the request used, and what Anthropic's pricing page says
/// it costs.
struct Example {
    name: &'static str,
    prices: ModelPrices,
    usage: TokenUsage,
    requested: Multipliers,
    expected_nanos: i64,
}

#[test]
fn anthropic_published_examples_to_the_nano_dollar() {
    let million = 1_000_000;
    let examples = [
        Example {
            name: "1-hour cache writes at their own rate ($6), never the 5-minute one ($3.75)",
            prices: sonnet(),
            usage: usage(0, 0, 0, million, 0),
            requested: NONE,
            expected_nanos: 6_000_000_000,
        },
        Example {
            name: "prompt caching: a 5-minute write, then reads at 0.1 × ($3.75 + 10 × $0.30)",
            prices: sonnet(),
            usage: usage(0, 0, million, 0, 10 * million),
            requested: NONE,
            expected_nanos: 3_750_000_000 + 3_000_000_000,
        },
        Example {
            name: "long context: 200K prompt tokens exactly stay at the base rates",
            prices: sonnet_long_context(),
            usage: usage(200_000, 1_000, 0, 0, 0),
            requested: NONE,
            expected_nanos: 200_000 * 3_000 + 1_000 * 15_000,
        },
        Example {
            name: "long context: above 200K every token is at $6 / $22.50, output included",
            prices: sonnet_long_context(),
            usage: usage(250_000, 1_000, 0, 0, 0),
            requested: NONE,
            expected_nanos: 250_000 * 6_000 + 1_000 * 22_500,
        },
        Example {
            name: "long context: the prompt counts cache reads and writes",
            prices: sonnet_long_context(),
            usage: usage(100_000, 0, 50_000, 0, 60_000),
            requested: NONE,
            expected_nanos: 100_000 * 6_000 + 50_000 * 7_500 + 60_000 * 600,
        },
        Example {
            name: "batch: 50 % of input and output ($1.50 / $7.50)",
            prices: sonnet(),
            usage: usage(million, million, 0, 0, 0),
            requested: Multipliers { batch: true, ..NONE },
            expected_nanos: 1_500_000_000 + 7_500_000_000,
        },
        Example {
            name: "batch stacks with cache prices (5-minute write $1.875, read $0.15)",
            prices: sonnet(),
            usage: usage(0, 0, million, 0, million),
            requested: Multipliers { batch: true, ..NONE },
            expected_nanos: 1_875_000_000 + 150_000_000,
        },
        Example {
            name: "data residency: 1.1 × on every kind (Sonnet 5.5: $2.20 / $11 / $0.22)",
            prices: resident(ModelPrices::from_input_output(price("2"), price("10"))),
            usage: usage(million, million, 0, 0, million),
            requested: Multipliers { geo: true, ..NONE },
            expected_nanos: 2_200_000_000 + 11_000_000_000 + 220_000_000,
        },
        Example {
            name: "fast mode: Opus 4.6 at 6 × ($30 / $150)",
            prices: opus_fast(),
            usage: usage(million, million, 0, 0, 0),
            requested: Multipliers { fast: true, ..NONE },
            expected_nanos: 30_000_000_000 + 150_000_000_000,
        },
        Example {
            name: "fast mode on a model without it is billed at standard rates",
            prices: sonnet(),
            usage: usage(million, 0, 0, 0, 0),
            requested: Multipliers { fast: true, ..NONE },
            expected_nanos: 3_000_000_000,
        },
        Example {
            name: "Haiku 5.5: 100K prompt tokens at $0.10",
            prices: haiku_5_5(),
            usage: usage(100_000, 1_000, 0, 0, 0),
            requested: NONE,
            expected_nanos: 100_000 * 100 + 1_000 * 500,
        },
        Example {
            name: "Haiku 5.5: one token more and the whole request is at 5 ×",
            prices: haiku_5_5(),
            usage: usage(100_001, 1_000, 0, 0, 0),
            requested: NONE,
            expected_nanos: 100_001 * 500 + 1_000 * 2_500,
        },
        Example {
            name: "web search: $10 per 1,000 searches, not discounted by batch",
            prices: ModelPrices {
                web_search_per_thousand: NanoUsd::from_usd(10),
                ..sonnet()
            },
            usage: TokenUsage {
                web_search_requests: 3,
                ..usage(1_000, 0, 0, 0, 0)
            },
            requested: Multipliers { batch: true, ..NONE },
            expected_nanos: 1_500_000 + 30_000_000,
        },
    ];
    for example in examples {
        assert_eq!(
            example.prices.cost(&example.usage, example.requested),
            Some(NanoUsd::from_nanos(example.expected_nanos)),
            "{}",
            example.name
        );
    }
}

#[test]
fn multipliers_stack_exactly_and_round_up_once() {
    // Goal: 6 × 1.1 × 0.5 = 3.3 on one token of 1 nano is 3.3 nanos, billed 4: one rounding
    // of the exact product, not a rounding per factor (which would give 6, 7, then 4).
    let one_nano = ModelPrices {
        fast_multiplier: Some(Multiplier::new(6, 1)),
        data_residency: true,
        ..ModelPrices::from_input_output(price("0.001"), price("0.001"))
    };
    let everything = Multipliers {
        batch: true,
        fast: true,
        geo: true,
    };
    let charge = one_nano
        .charge(&usage(1, 0, 0, 0, 0), everything)
        .expect("charge");
    assert_eq!(charge.cost, NanoUsd::from_nanos(4));
    assert_eq!(charge.applied, everything, "the charge says which applied");
    assert_eq!(
        one_nano.cost(&usage(10, 0, 0, 0, 0), everything),
        Some(NanoUsd::from_nanos(33))
    );
    // The upstream's `usage.speed` decides over the request: a fast request served at
    // standard speed is billed at standard rates.
    let standard = TokenUsage {
        speed: Some(Speed::Standard),
        ..usage(10, 0, 0, 0, 0)
    };
    let charge = one_nano.charge(&standard, everything).expect("charge");
    assert!(!charge.applied.fast);
    assert_eq!(
        charge.cost,
        NanoUsd::from_nanos(6),
        "10 × 1.1 × 0.5 = 5.5, billed 6"
    );
    let served_fast = TokenUsage {
        speed: Some(Speed::Fast),
        ..usage(10, 0, 0, 0, 0)
    };
    assert!(one_nano.charge(&served_fast, NONE).expect("charge").applied.fast);
}

/// #18: data residency follows where the upstream says inference ran
/// (`usage.inference_geo`), and only models that take `inference_geo` bill a request's
/// own ask when the upstream says nothing.
#[test]
fn data_residency_follows_the_upstreams_report() {
    let asked = Multipliers { geo: true, ..NONE };
    let reported = |resident| TokenUsage {
        resident,
        ..usage(1_000, 100, 0, 0, 0)
    };
    let standard = 1_000 * 5_000 + 100 * 25_000;
    let residency = standard * 11 / 10;
    let cases = [
        (
            "asked, silent upstream, model offers it",
            resident(opus_fast()),
            asked,
            None,
            residency,
        ),
        (
            "asked, upstream ran it globally",
            resident(opus_fast()),
            asked,
            Some(false),
            standard,
        ),
        (
            "not asked, upstream kept it in one geography (its default)",
            resident(opus_fast()),
            NONE,
            Some(true),
            residency,
        ),
        (
            "asked of a model without inference_geo, silent upstream",
            ModelPrices {
                data_residency: false,
                ..opus_fast()
            },
            asked,
            None,
            standard,
        ),
        (
            "a model without the flag, upstream says resident",
            ModelPrices {
                data_residency: false,
                ..opus_fast()
            },
            NONE,
            Some(true),
            residency,
        ),
    ];
    for (name, prices, requested, resident, expected) in cases {
        let charge = prices.charge(&reported(resident), requested).expect("priced");
        assert_eq!(charge.cost, NanoUsd::from_nanos(expected), "{name}");
        assert_eq!(
            charge.applied.geo,
            expected == residency,
            "{name}: the record says so"
        );
    }
    // A model that offers residency is reserved for at its rate even when the request
    // does not ask: the provider's default geography may apply.
    assert_eq!(
        resident(opus_fast()).cost_bound(1_000, 100, NONE),
        opus_fast().cost_bound(1_000, 100, asked)
    );
    let plain = sonnet().cost_bound(1_000, 100, NONE);
    assert_eq!(
        plain,
        NanoUsd::from_nanos(1_000 * 6_000 + 100 * 15_000),
        "the dearest input kind"
    );
    assert_eq!(
        sonnet().cost_bound(1_000, 100, asked),
        NanoUsd::from_nanos(plain.nanos() * 11 / 10),
        "asked of any model: reserved, since the upstream may report it"
    );
}

#[test]
fn declared_web_searches_are_reserved_for() {
    // Goal: a request whose web search tools allow 5 searches reserves $0.05 for them, so
    // that its charge is not capped below their price.
    let prices = ModelPrices {
        web_search_per_thousand: NanoUsd::from_usd(10),
        ..sonnet()
    };
    let usage = TokenUsage {
        web_search_requests: 5,
        ..usage(1_000, 100, 0, 0, 0)
    };
    let bound = prices
        .cost_bound(1_000, 100, NONE)
        .checked_add(prices.web_search_bound(5))
        .expect("no overflow");
    assert_eq!(prices.web_search_bound(5), NanoUsd::from_nanos(50_000_000));
    assert!(prices.cost(&usage, NONE).expect("cost") <= bound);
    let odd = ModelPrices {
        web_search_per_thousand: NanoUsd::from_nanos(1_001),
        ..sonnet()
    };
    assert_eq!(odd.web_search_bound(1), NanoUsd::from_nanos(2), "rounded up");
}

#[test]
fn multipliers_parse_as_exact_fractions() {
    assert_eq!(Multiplier::parse("1.1"), Ok(Multiplier::new(11, 10)));
    assert_eq!(Multiplier::parse("6"), Ok(Multiplier::new(6, 1)));
    assert_eq!(Multiplier::parse("0.5"), Ok(Multiplier::BATCH));
    assert_eq!(
        Multiplier::parse("0"),
        Err(MultiplierParseError::NotPositive("0".to_owned()))
    );
    assert!(Multiplier::parse("-2").is_err());
    assert!(Multiplier::parse("2x").is_err());
    let all = Multipliers {
        batch: true,
        fast: true,
        geo: true,
    };
    assert_eq!(all.label(), "batch,fast,geo");
    assert_eq!(Multipliers::parse_label(&all.label()), Some(all));
    assert_eq!(Multipliers::parse_label(""), Some(NONE));
    assert_eq!(Multipliers::parse_label("turbo"), None);
    assert!(Multipliers::is_residency_geo("us"));
    assert!(!Multipliers::is_residency_geo("global"));
}

#[test]
fn a_schedule_prices_a_request_at_the_rate_in_force_when_admitted() {
    // Sonnet 5.5's cache reads were halved on 2026-10-07, from $0.20 to $0.10.
    let before = ModelPrices::from_input_output(price("2"), price("10"));
    let after = ModelPrices {
        cache_read: price("0.10"),
        ..before.clone()
    };
    let schedule = PriceSchedule::new(vec![
        (at("2026-09-29T00:00:00Z"), before.clone()),
        (at("2026-10-07T00:00:00Z"), after.clone()),
    ])
    .expect("schedule");
    assert_eq!(schedule.at(at("2026-10-06T23:59:59.999Z")), &before);
    assert_eq!(schedule.at(at("2026-10-07T00:00:00Z")), &after);
    assert_eq!(schedule.at(at("2027-01-01T00:00:00Z")), &after);
    assert_eq!(
        schedule.at(at("2020-01-01T00:00:00Z")),
        &before,
        "the first entry prices what came before it"
    );
    assert_eq!(
        PriceSchedule::constant(before.clone()).at(at("2026-10-07T00:00:00Z")),
        &before
    );
    assert_eq!(PriceSchedule::new(vec![]), Err(PriceScheduleError::Empty));
    assert_eq!(
        PriceSchedule::new(vec![(at("2026-10-07T00:30:00Z"), before.clone())]),
        Err(PriceScheduleError::NotOnTheHour(at("2026-10-07T00:30:00Z")))
    );
    assert_eq!(
        PriceSchedule::new(vec![
            (at("2026-10-07T00:00:00Z"), before.clone()),
            (Utc.with_ymd_and_hms(2026, 10, 7, 0, 0, 0).unwrap(), after),
        ]),
        Err(PriceScheduleError::OutOfOrder(at("2026-10-07T00:00:00Z")))
    );
}

#[test]
fn the_bound_takes_the_higher_tier_when_the_prompt_could_reach_it() {
    let prices = sonnet_long_context();
    // Up to 200K input tokens the dearest input kind is the base 1-hour write ($6).
    assert_eq!(
        prices.cost_bound(200_000, 1_000, NONE),
        NanoUsd::from_nanos(200_000 * 6_000 + 1_000 * 15_000)
    );
    // One more and it is the tier's ($12), with the tier's output.
    assert_eq!(
        prices.cost_bound(200_001, 1_000, NONE),
        NanoUsd::from_nanos(200_001 * 12_000 + 1_000 * 22_500)
    );
    assert_eq!(
        opus_fast().cost_bound(1, 1, Multipliers { fast: true, ..NONE }),
        NanoUsd::from_nanos((10_000 + 25_000) * 6),
        "a request that asks for fast mode reserves its rates"
    );
}

fn usage_strategy() -> impl Strategy<Value = TokenUsage> {
    (
        0..400_000_u64,
        0..200_000_u64,
        0..400_000_u64,
        0..400_000_u64,
        0..400_000_u64,
        0..50_u64,
    )
        .prop_map(|(input, output, write_5m, write_1h, read, searches)| TokenUsage {
            web_search_requests: searches,
            ..usage(input, output, write_5m, write_1h, read)
        })
}

fn multipliers_strategy() -> impl Strategy<Value = Multipliers> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(batch, fast, geo)| Multipliers {
        batch,
        fast,
        geo,
    })
}

fn prices_strategy() -> impl Strategy<Value = ModelPrices> {
    prop_oneof![
        Just(sonnet()),
        Just(sonnet_long_context()),
        Just(opus_fast()),
        Just(haiku_5_5()),
        Just(ModelPrices {
            prompt_tiers: sonnet_long_context().prompt_tiers,
            ..opus_fast()
        }),
        Just(resident(sonnet())),
    ]
}

proptest! {
    /// The reservation bound covers the real cost of any usage within the token bounds,
    /// under any tier and multipliers, served at the speed asked for or at standard speed
    /// (web searches aside: they are not bounded before the request ends).
    #[test]
    fn cost_bound_covers_every_split_of_input(
        usage in usage_strategy(),
        prices in prices_strategy(),
        requested in multipliers_strategy(),
        served_standard in any::<bool>(),
        reported in prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
    ) {
        // An upstream reports residency only where it was asked for or is the model's
        // (the provider's default geography); a report elsewhere is beyond any bound.
        let reported = reported.filter(|&resident| {
            !resident || requested.geo || prices.data_residency
        });
        let usage = TokenUsage {
            web_search_requests: 0,
            speed: served_standard.then_some(Speed::Standard),
            resident: reported,
            ..usage
        };
        let bound = prices.cost_bound(usage.prompt_tokens(), usage.output_tokens, requested);
        let cost = prices.cost(&usage, requested).expect("no overflow at these sizes");
        prop_assert!(cost <= bound, "cost {cost} above bound {bound}");
    }

    /// Cost is monotone: one more token of any kind, or one more search, never costs less.
    #[test]
    fn cost_is_monotone(
        usage in usage_strategy(),
        prices in prices_strategy(),
        requested in multipliers_strategy(),
        kind in 0..6_usize,
    ) {
        let mut more = usage;
        match kind {
            0 => more.input_tokens += 1,
            1 => more.output_tokens += 1,
            2 => more.cache_creation_5m_input_tokens += 1,
            3 => more.cache_creation_1h_input_tokens += 1,
            4 => more.cache_read_input_tokens += 1,
            _ => more.web_search_requests += 1,
        }
        let prices = ModelPrices { web_search_per_thousand: NanoUsd::from_usd(10), ..prices };
        prop_assert!(prices.cost(&usage, requested) <= prices.cost(&more, requested));
    }

    /// A charge's lines add up to its cost (less the per-request charge) exactly, under any
    /// tier and multipliers, and each is within one nano-dollar of its exact share; so the
    /// report's split of it has no adjustment.
    #[test]
    fn cost_lines_add_up_to_the_charge(
        usage in usage_strategy(),
        prices in prices_strategy(),
        requested in multipliers_strategy(),
    ) {
        let prices = ModelPrices { web_search_per_thousand: NanoUsd::from_usd(10), ..prices };
        let charge = prices.charge(&usage, requested).expect("no overflow at these sizes");
        prop_assert_eq!(charge.lines.total(), Some(charge.cost));
        let split = split_charge(Some(&prices), &usage, &charge.lines, charge.cost);
        prop_assert_eq!(split.adjustment, NanoUsd::ZERO);
        let rates = prices.rates(usage.prompt_tokens());
        let factor = [(charge.applied.fast, prices.fast_multiplier), (charge.applied.geo, Some(Multiplier::DATA_RESIDENCY)), (charge.applied.batch, Some(Multiplier::BATCH))]
            .into_iter()
            .filter_map(|(applied, factor)| factor.filter(|_| applied))
            .fold(Multiplier::ONE, |left, right| left.checked_mul(right).expect("fits"));
        let exact_input = i128::from(rates.input.nanos_per_token()) * i128::from(usage.input_tokens)
            * i128::from(factor.numerator());
        let input = i128::from(charge.lines.input.nanos()) * i128::from(factor.denominator());
        prop_assert!(input >= exact_input && input < exact_input + i128::from(factor.denominator()),
            "input line {} off its exact share", charge.lines.input);
    }

    /// Under a dated schedule (two entries of any prices, tiers and fast mode), a request
    /// admitted at any instant is priced exactly at the entry in force then: its cost is
    /// that entry's, its bound (at the same instant) is never below it, and one more token
    /// never costs less.
    #[test]
    fn dated_prices_bound_and_cost_agree_at_every_instant(
        usage in usage_strategy(),
        first in prices_strategy(),
        second in prices_strategy(),
        requested in multipliers_strategy(),
        hours in 0..96_i64,
    ) {
        let change = at("2026-10-07T00:00:00Z");
        let schedule = PriceSchedule::new(vec![
            (at("2026-10-05T00:00:00Z"), first.clone()),
            (change, second.clone()),
        ])
        .expect("schedule");
        let admitted = at("2026-10-05T00:00:00Z") + chrono::Duration::hours(hours);
        let prices = schedule.at(admitted);
        prop_assert_eq!(prices, if admitted < change { &first } else { &second });
        let usage = TokenUsage { web_search_requests: 0, speed: None, ..usage };
        let cost = prices.cost(&usage, requested).expect("no overflow at these sizes");
        let bound = prices.cost_bound(usage.prompt_tokens(), usage.output_tokens, requested);
        prop_assert!(cost <= bound, "cost {cost} above bound {bound} at {admitted}");
        let more = TokenUsage { output_tokens: usage.output_tokens + 1, ..usage };
        prop_assert!(prices.cost(&more, requested) >= Some(cost));
    }

    /// Without tiers or multipliers, cost is additive: two requests cost what their summed
    /// usage costs (nothing is rounded).
    #[test]
    fn cost_is_additive(first in usage_strategy(), second in usage_strategy()) {
        let prices = sonnet();
        let summed = TokenUsage {
            web_search_requests: first.web_search_requests + second.web_search_requests,
            ..usage(
                first.input_tokens + second.input_tokens,
                first.output_tokens + second.output_tokens,
                first.cache_creation_5m_input_tokens + second.cache_creation_5m_input_tokens,
                first.cache_creation_1h_input_tokens + second.cache_creation_1h_input_tokens,
                first.cache_read_input_tokens + second.cache_read_input_tokens,
            )
        };
        let separate = prices.cost(&first, NONE).and_then(|a| prices.cost(&second, NONE).and_then(|b| a.checked_add(b)));
        prop_assert_eq!(separate, prices.cost(&summed, NONE));
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
    let usage = usage(1_000, 100, 0, 0, 0);
    let tokens = 1_000 * 3_000 + 100 * 15_000;
    assert_eq!(
        prices.cost(&usage, NONE),
        Some(NanoUsd::from_nanos(tokens + 2_000_000)),
        "the flat charge applies; images are not counted until folded in"
    );
    let three_images = prices.for_request(3).expect("no overflow");
    assert_eq!(three_images.per_image, NanoUsd::ZERO);
    assert_eq!(three_images.per_request, NanoUsd::from_nanos(32_000_000));
    assert_eq!(
        three_images.cost(&usage, NONE),
        Some(NanoUsd::from_nanos(tokens + 32_000_000))
    );
    assert_eq!(
        three_images.for_request(5),
        Some(three_images.clone()),
        "folding twice adds nothing"
    );
    // The bound prices input at the dearest kind (1-hour cache writes, $6).
    assert_eq!(
        three_images.cost_bound(1_000, 100, NONE),
        NanoUsd::from_nanos(1_000 * 6_000 + 100 * 15_000 + 32_000_000),
        "the bound carries the flat charges too"
    );
    assert_eq!(
        sonnet().cost(&TokenUsage::default(), NONE),
        Some(NanoUsd::ZERO),
        "token-only prices have no flat charge"
    );
    let huge = ModelPrices {
        per_image: NanoUsd::MAX,
        ..sonnet()
    };
    assert_eq!(huge.for_request(2), None, "overflow is refused, not wrapped");
}

/// Goal: the report's split by token type uses the rates the charge applied, so a
/// long-context request, a fast one, a data-residency one and a batch one each split to
/// their charge exactly with no "Other Charges", and web searches are their own line.
#[test]
fn the_split_uses_the_rates_applied_with_no_other_charges() {
    let searching = ModelPrices {
        web_search_per_thousand: NanoUsd::from_usd(10),
        ..sonnet_long_context()
    };
    let long_prompt = TokenUsage {
        web_search_requests: 3,
        ..usage(150_001, 1_001, 30_000, 20_000, 10_000)
    };
    let fast = TokenUsage {
        speed: Some(Speed::Fast),
        ..usage(1_234, 567, 0, 0, 89)
    };
    let cases = [
        (searching.clone(), long_prompt, NONE),
        (opus_fast(), fast, Multipliers { fast: true, ..NONE }),
        (
            resident(sonnet()),
            usage(333, 77, 11, 0, 5),
            Multipliers { geo: true, ..NONE },
        ),
        (
            resident(haiku_5_5()),
            usage(101_333, 7, 1, 1, 1),
            Multipliers {
                batch: true,
                geo: true,
                ..NONE
            },
        ),
    ];
    for (prices, usage, requested) in cases {
        let charge = prices.charge(&usage, requested).expect("priced");
        let split = split_charge(Some(&prices), &usage, &charge.lines, charge.cost);
        assert_eq!(split.adjustment, NanoUsd::ZERO, "{usage:?} {requested:?}");
        let parts = split
            .parts
            .iter()
            .try_fold(split.web_search, |sum, (_, amount)| sum.checked_add(*amount));
        assert_eq!(parts, Some(charge.cost), "{usage:?} {requested:?}");
    }
    // The long prompt's web searches: 3 at $10 per thousand, $0.03, on their own line; its
    // input at the long-context $6, not the base $3.
    let charge = searching.charge(&long_prompt, NONE).expect("priced");
    assert_eq!(charge.lines.web_search, NanoUsd::from_nanos(30_000_000));
    assert_eq!(charge.lines.input, NanoUsd::from_nanos(150_001 * 6_000));
    let split = split_charge(Some(&searching), &long_prompt, &charge.lines, charge.cost);
    assert_eq!(split.web_search, NanoUsd::from_nanos(30_000_000));
    assert_eq!(
        split.parts[0],
        (TokenType::UncachedInput, NanoUsd::from_nanos(150_001 * 6_000))
    );
    // Usage recorded without lines is split at the base rates, the rest an adjustment.
    let legacy = split_charge(Some(&searching), &long_prompt, &CostLines::default(), charge.cost);
    assert!(legacy.adjustment.is_positive());
    assert_eq!(legacy.web_search, NanoUsd::ZERO);
}

/// Goal: the one rounding up of a charge goes to the lines with the largest remainders, so
/// that the lines add up to it: 3 input and 1 output tokens at $1 and $1 (1,000 nanos each)
/// and the Batch rate with data residency (0.55 ×) are 1,650 + 550 nanos exactly; at 0.5 ×
/// alone on 1 + 1 tokens of 1,001 nanos each, 500.5 + 500.5 round up to 1,001, split
/// 501 + 500.
#[test]
fn the_rounding_up_goes_to_the_largest_remainders() {
    let one_dollar = resident(ModelPrices::from_input_output(price("1"), price("1")));
    let charge = one_dollar
        .charge(
            &usage(3, 1, 0, 0, 0),
            Multipliers {
                batch: true,
                geo: true,
                ..NONE
            },
        )
        .expect("priced");
    assert_eq!(
        (charge.cost, charge.lines.input, charge.lines.output),
        (
            NanoUsd::from_nanos(2_200),
            NanoUsd::from_nanos(1_650),
            NanoUsd::from_nanos(550)
        )
    );
    let odd = ModelPrices::from_input_output(price("1.001"), price("1.001"));
    let charge = odd
        .charge(&usage(1, 1, 0, 0, 0), Multipliers { batch: true, ..NONE })
        .expect("priced");
    assert_eq!(
        (charge.cost, charge.lines.input, charge.lines.output),
        (
            NanoUsd::from_nanos(1_001),
            NanoUsd::from_nanos(501),
            NanoUsd::from_nanos(500)
        )
    );
}
