//! Tests for reading OpenAI usage and metering Chat Completions streams.

use serde_json::json;
use tollgate_core::usage::TokenUsage;

use crate::openai::{ChatUsageAccumulator, is_done, parse_usage};
use crate::sse::SseEvent;

fn chunk(data: serde_json::Value) -> SseEvent {
    SseEvent {
        event: "message".to_owned(),
        data: data.to_string(),
    }
}

#[test]
fn cached_prompt_tokens_are_cache_reads_not_input() {
    let usage = parse_usage(&json!({
        "prompt_tokens": 1_200,
        "completion_tokens": 80,
        "total_tokens": 1_280,
        "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30}
    }));
    assert_eq!(
        usage,
        TokenUsage {
            input_tokens: 176,
            output_tokens: 80,
            cache_read_input_tokens: 1_024,
            ..TokenUsage::default()
        }
    );
    let odd = parse_usage(&json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}));
    assert_eq!(
        (odd.input_tokens, odd.cache_read_input_tokens),
        (0, 5),
        "never more cached than prompt tokens"
    );
}

#[test]
fn a_stream_is_metered_from_its_usage_chunk() {
    let mut meter = ChatUsageAccumulator::default();
    let events = [
        chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
        ),
        chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}]}),
        ),
        chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": null}]}),
        ),
        chunk(
            json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null}),
        ),
        chunk(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})),
        SseEvent {
            event: "message".to_owned(),
            data: "[DONE]".to_owned(),
        },
    ];
    for (index, event) in events.iter().enumerate() {
        meter.observe(event);
        if index == 3 {
            assert!(meter.saw_finish() && !meter.saw_done());
            assert_eq!(meter.reported_usage(), None, "a null usage is no usage");
        }
    }
    assert!(is_done(&events[5]));
    assert!(meter.saw_done() && !meter.saw_error());
    assert_eq!(meter.generated_bytes(), 5 + 1 + 2);
    assert_eq!(
        meter.reported_usage(),
        Some(TokenUsage {
            input_tokens: 9,
            output_tokens: 4,
            ..TokenUsage::default()
        })
    );
}

#[test]
fn an_error_chunk_marks_the_stream_failed() {
    let mut meter = ChatUsageAccumulator::default();
    meter.observe(&chunk(
        json!({"error": {"message": "overloaded", "type": "server_error"}}),
    ));
    assert!(meter.saw_error());
    meter.observe(&chunk(json!({"not json": true})));
    let mut garbage = ChatUsageAccumulator::default();
    garbage.observe(&SseEvent {
        event: "message".to_owned(),
        data: "{not json".to_owned(),
    });
    assert!(!garbage.saw_error() && garbage.reported_usage().is_none());
}
