//! `stream_usage`: never below what the upstream reported, at least what was seen
//! generated (up to the output limit), never above the output limit of its own accord.

use proptest::prelude::*;

use crate::usage::{StreamMeasure, TokenUsage, output_tokens_estimate, stream_usage};

fn usage() -> impl Strategy<Value = TokenUsage> {
    (
        0..10_000_u64,
        0..10_000_u64,
        0..1_000_u64,
        0..1_000_u64,
        0..1_000_u64,
    )
        .prop_map(
            |(input_tokens, output_tokens, five_minute, one_hour, cache_read)| TokenUsage {
                input_tokens,
                output_tokens,
                cache_creation_5m_input_tokens: five_minute,
                cache_creation_1h_input_tokens: one_hour,
                cache_read_input_tokens: cache_read,
                ..TokenUsage::default()
            },
        )
}

#[test]
fn the_estimate_is_four_bytes_a_token_rounded_up() {
    assert_eq!(output_tokens_estimate(0), 0);
    assert_eq!(output_tokens_estimate(1), 1);
    assert_eq!(output_tokens_estimate(4), 1);
    assert_eq!(output_tokens_estimate(5), 2);
    assert_eq!(output_tokens_estimate(u64::MAX), u64::MAX / 4 + 1);
}

#[test]
fn a_stream_cut_after_message_start_is_charged_what_it_generated() {
    // Anthropic's `message_start` reports one output token; 396 bytes of text followed.
    let reported = TokenUsage {
        input_tokens: 7,
        output_tokens: 1,
        ..TokenUsage::default()
    };
    let measure = StreamMeasure {
        reported: Some(reported),
        final_count: false,
        generated_bytes: 396,
    };
    assert_eq!(
        stream_usage(measure, 50, 200),
        TokenUsage {
            output_tokens: 99,
            ..reported
        }
    );
    assert_eq!(
        stream_usage(measure, 50, 60).output_tokens,
        60,
        "capped by the output limit"
    );
    let silent = StreamMeasure {
        reported: None,
        ..measure
    };
    assert_eq!(
        stream_usage(silent, 50, 200),
        TokenUsage {
            input_tokens: 50,
            output_tokens: 99,
            ..TokenUsage::default()
        },
        "no usage at all: the admission's input estimate"
    );
    assert_eq!(
        stream_usage(StreamMeasure::default(), 50, 200),
        TokenUsage::default(),
        "nothing reported, nothing generated"
    );
}

proptest! {
    #[test]
    fn charged_usage_is_bounded_by_what_was_reported_seen_and_allowed(
        reported in proptest::option::of(usage()),
        final_count in any::<bool>(),
        generated_bytes in 0..200_000_u64,
        input_tokens_estimate in 0..10_000_u64,
        output_tokens_max in 1..20_000_u64,
    ) {
        let measure = StreamMeasure { reported, final_count, generated_bytes };
        let charged = stream_usage(measure, input_tokens_estimate, output_tokens_max);
        let observed = output_tokens_estimate(generated_bytes).min(output_tokens_max);
        if let Some(reported) = reported {
            // Never below the upstream's own figures; input as reported.
            prop_assert!(charged.output_tokens >= reported.output_tokens);
            prop_assert_eq!(TokenUsage { output_tokens: 0, ..charged }, TokenUsage { output_tokens: 0, ..reported });
            if final_count {
                prop_assert_eq!(charged, reported);
            } else {
                prop_assert!(charged.output_tokens >= observed);
            }
            if reported.output_tokens <= output_tokens_max {
                prop_assert!(charged.output_tokens <= output_tokens_max);
            }
        } else {
            prop_assert_eq!(charged.output_tokens, observed);
            prop_assert!(charged.output_tokens <= output_tokens_max);
            let input = if generated_bytes == 0 { 0 } else { input_tokens_estimate };
            prop_assert_eq!(charged.input_tokens, input);
            prop_assert_eq!(charged.total_tokens(), input + observed);
        }
    }
}
