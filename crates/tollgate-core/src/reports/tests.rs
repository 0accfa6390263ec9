use chrono::{TimeZone, Utc};

use crate::Timestamp;
use crate::money::NanoUsd;
use crate::pricing::{ModelPrices, Multipliers, TokenPrice};
use crate::reports::{BucketWidth, ContextWindow, ReportWindow, TokenType, WindowError, split_cost};
use crate::usage::TokenUsage;

fn at(text: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("instant")
        .with_timezone(&Utc)
}

fn sonnet() -> ModelPrices {
    ModelPrices::from_input_output(
        TokenPrice::from_nanos_per_token(3_000),
        TokenPrice::from_nanos_per_token(15_000),
    )
}

#[test]
fn splits_at_each_hours_rates_add_up_without_an_adjustment() {
    // #18: a day whose cache-read price was halved at noon splits each hour's charge at the
    // rates then in force, so the sum has no "other" adjustment, and equals the charges.
    let before = sonnet();
    let after = ModelPrices {
        cache_read: TokenPrice::from_nanos_per_token(150),
        ..sonnet()
    };
    let usage = TokenUsage {
        input_tokens: 100,
        cache_read_input_tokens: 1_000,
        ..TokenUsage::default()
    };
    let morning_charge = before.cost(&usage, Multipliers::default()).expect("cost");
    let afternoon_charge = after.cost(&usage, Multipliers::default()).expect("cost");
    let morning = split_cost(Some(&before), &usage, morning_charge);
    let afternoon = split_cost(Some(&after), &usage, afternoon_charge);
    let day = morning.checked_add(&afternoon).expect("no overflow");
    assert_eq!(day.adjustment, NanoUsd::ZERO);
    assert_eq!(
        day.parts,
        vec![
            (TokenType::UncachedInput, NanoUsd::from_nanos(2 * 100 * 3_000)),
            (
                TokenType::CacheRead,
                NanoUsd::from_nanos(1_000 * 300 + 1_000 * 150)
            ),
        ]
    );
    let total = day
        .parts
        .iter()
        .try_fold(day.adjustment, |total, (_, amount)| total.checked_add(*amount));
    assert_eq!(total, morning_charge.checked_add(afternoon_charge));
    // Split once at the day's opening rates, the afternoon's cut would be an adjustment.
    let summed = TokenUsage {
        input_tokens: 200,
        cache_read_input_tokens: 2_000,
        ..TokenUsage::default()
    };
    let at_opening = split_cost(
        Some(&before),
        &summed,
        morning_charge.checked_add(afternoon_charge).expect("sum"),
    );
    assert_eq!(at_opening.adjustment, NanoUsd::from_nanos(-150_000));
}

#[test]
fn buckets_snap_to_utc_boundaries() {
    let instant = at("2026-03-14T15:09:26.535Z");
    assert_eq!(BucketWidth::Minute.snap(instant), at("2026-03-14T15:09:00Z"));
    assert_eq!(BucketWidth::Hour.snap(instant), at("2026-03-14T15:00:00Z"));
    assert_eq!(BucketWidth::Day.snap(instant), at("2026-03-14T00:00:00Z"));
    assert_eq!(
        BucketWidth::Day.snap(Utc.with_ymd_and_hms(2026, 3, 14, 0, 0, 0).unwrap()),
        at("2026-03-14T00:00:00Z")
    );
}

#[test]
fn a_window_holds_every_bucket_that_starts_before_its_end() {
    let window = ReportWindow::new(
        BucketWidth::Day,
        at("2026-03-01T10:00:00Z"),
        at("2026-03-04T00:00:00Z"),
        31,
    )
    .expect("window");
    assert_eq!(window.start(), at("2026-03-01T00:00:00Z"));
    assert_eq!(window.end(), at("2026-03-04T00:00:00Z"));
    assert_eq!(window.bucket_count(), 3);

    let partial = ReportWindow::new(
        BucketWidth::Day,
        at("2026-03-01T00:00:00Z"),
        at("2026-03-04T00:00:01Z"),
        31,
    )
    .expect("window");
    assert_eq!(partial.bucket_count(), 4, "the bucket holding the end counts");
}

#[test]
fn bad_windows_are_refused_with_a_reason() {
    let start = at("2026-03-01T00:00:00Z");
    assert_eq!(
        ReportWindow::new(BucketWidth::Hour, start, start, 168),
        Err(WindowError::EndNotAfterStart)
    );
    assert_eq!(
        ReportWindow::new(BucketWidth::Hour, start, at("2026-02-01T00:00:00Z"), 168),
        Err(WindowError::EndNotAfterStart)
    );
    assert_eq!(
        ReportWindow::new(BucketWidth::Minute, start, at("2026-03-02T00:00:01Z"), 1440),
        Err(WindowError::TooManyBuckets {
            buckets: 1441,
            width: "1m",
            max: 1440
        })
    );
}

#[test]
fn pages_walk_the_window_oldest_first_and_say_where_the_next_starts() {
    let window = ReportWindow::new(
        BucketWidth::Hour,
        at("2026-03-01T00:00:00Z"),
        at("2026-03-01T05:00:00Z"),
        168,
    )
    .expect("window");
    let (first, next) = window.page(None, 2);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].starting_at, at("2026-03-01T00:00:00Z"));
    assert_eq!(first[1].ending_at, at("2026-03-01T02:00:00Z"));
    assert_eq!(next, Some(at("2026-03-01T02:00:00Z")));
    let (second, next) = window.page(next, 2);
    assert_eq!(second[0].starting_at, at("2026-03-01T02:00:00Z"));
    let (last, next_after_last) = window.page(next, 2);
    assert_eq!(last.len(), 1);
    assert_eq!(next_after_last, None);
    assert_eq!(
        window.page(Some(at("2026-03-01T02:30:00Z")), 2),
        (Vec::new(), None),
        "a cursor off a boundary is no page"
    );
}

#[test]
fn a_charge_splits_exactly_into_its_token_types() {
    let usage = TokenUsage {
        input_tokens: 1_000,
        output_tokens: 200,
        cache_creation_5m_input_tokens: 100,
        cache_creation_1h_input_tokens: 0,
        cache_read_input_tokens: 50,
        ..TokenUsage::default()
    };
    let charged = sonnet().cost(&usage, Multipliers::default()).expect("cost");
    let split = split_cost(Some(&sonnet()), &usage, charged);
    assert_eq!(
        split.parts,
        vec![
            (TokenType::UncachedInput, NanoUsd::from_nanos(3_000_000)),
            (TokenType::Output, NanoUsd::from_nanos(3_000_000)),
            (TokenType::CacheRead, NanoUsd::from_nanos(15_000)),
            (TokenType::CacheCreation5m, NanoUsd::from_nanos(375_000)),
        ]
    );
    assert_eq!(split.adjustment, NanoUsd::ZERO);
}

#[test]
fn what_todays_prices_do_not_explain_goes_to_the_adjustment() {
    let usage = TokenUsage {
        input_tokens: 10,
        ..TokenUsage::default()
    };
    // Charged at an older price of 4,000 a token.
    let split = split_cost(Some(&sonnet()), &usage, NanoUsd::from_nanos(40_000));
    assert_eq!(
        split.parts,
        vec![(TokenType::UncachedInput, NanoUsd::from_nanos(30_000))]
    );
    assert_eq!(split.adjustment, NanoUsd::from_nanos(10_000));
    // A charge capped below the priced cost: the adjustment is negative.
    let capped = split_cost(Some(&sonnet()), &usage, NanoUsd::from_nanos(25_000));
    assert_eq!(capped.adjustment, NanoUsd::from_nanos(-5_000));
    // A model no longer priced: everything is adjustment.
    let unpriced = split_cost(None, &usage, NanoUsd::from_nanos(40_000));
    assert!(unpriced.parts.is_empty());
    assert_eq!(unpriced.adjustment, NanoUsd::from_nanos(40_000));
}

#[test]
fn long_contexts_are_over_200k_input_tokens_of_every_kind() {
    let mut usage = TokenUsage {
        input_tokens: 150_000,
        cache_read_input_tokens: 50_000,
        ..TokenUsage::default()
    };
    assert_eq!(ContextWindow::of(&usage), ContextWindow::UpTo200k);
    usage.cache_creation_1h_input_tokens = 1;
    assert_eq!(ContextWindow::of(&usage), ContextWindow::Over200k);
    assert_eq!(ContextWindow::parse("200k-1M"), Some(ContextWindow::Over200k));
}
