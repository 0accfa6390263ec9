//! Tests for the SSE parser, the encoder and usage metering.

use bytes::Bytes;
use futures_util::StreamExt;
use tollgate_core::usage::{Speed, TokenUsage};

use crate::UpstreamError;
use crate::sse::{SseEvent, UsageAccumulator, parse_event_stream, parse_usage};

fn event(name: &str, data: &str) -> SseEvent {
    SseEvent {
        event: name.to_owned(),
        data: data.to_owned(),
    }
}

async fn parse_chunks(chunks: Vec<Vec<u8>>) -> Vec<Result<SseEvent, UpstreamError>> {
    let bytes = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|chunk| Ok::<_, UpstreamError>(Bytes::from(chunk))),
    );
    parse_event_stream(bytes).collect().await
}

async fn parse_ok(chunks: Vec<Vec<u8>>) -> Vec<SseEvent> {
    parse_chunks(chunks)
        .await
        .into_iter()
        .map(|item| item.expect("no transport error was injected"))
        .collect()
}

/// Every line ending, a comment, a byte-order mark, multi-line data, an unnamed event,
/// a multi-byte character and a field without a value.
const MIXED_STREAM: &[u8] = b"\xEF\xBB\xBF: keep-alive comment\n\
event: message_start\r\n\
data: {\"a\":1}\r\n\
\r\n\
event:ping\rdata:{}\r\r\
data: line one\n\
data:  two spaces\n\
id: 7\n\
\n\
event: content_block_delta\n\
data: caf\xC3\xA9\n\
data\n\
\n\
event: dangling\n\
\n\
event: incomplete\n\
data: never dispatched\n";

fn mixed_stream_events() -> Vec<SseEvent> {
    vec![
        event("message_start", "{\"a\":1}"),
        event("ping", "{}"),
        event("message", "line one\n two spaces"),
        event("content_block_delta", "café\n"),
    ]
}

#[tokio::test]
async fn parses_the_same_events_however_the_bytes_are_split() {
    // Goal: chunk boundaries at any byte, including inside `\r\n`, a UTF-8 character or the
    // byte-order mark, never change the events.
    let expected = mixed_stream_events();
    assert_eq!(parse_ok(vec![MIXED_STREAM.to_vec()]).await, expected);
    for split in 0..=MIXED_STREAM.len() {
        let (head, tail) = MIXED_STREAM.split_at(split);
        let events = parse_ok(vec![head.to_vec(), tail.to_vec()]).await;
        assert_eq!(events, expected, "split at byte {split}");
    }
    let one_byte_chunks = MIXED_STREAM.iter().map(|byte| vec![*byte]).collect();
    assert_eq!(parse_ok(one_byte_chunks).await, expected);
}

#[tokio::test]
async fn a_trailing_carriage_return_ends_the_line_at_end_of_stream() {
    let events = parse_ok(vec![b"data: x\n\r".to_vec()]).await;
    assert_eq!(events, vec![event("message", "x")]);
}

#[tokio::test]
async fn a_transport_error_comes_after_the_events_already_received() {
    let bytes = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"event: ping\ndata: {}\n\nevent: mess")),
        Err(UpstreamError::Timeout("idle".to_owned())),
        Ok(Bytes::from_static(b"age_stop\ndata: {}\n\n")),
    ]);
    let items: Vec<_> = parse_event_stream(bytes).collect().await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().ok(), Some(&event("ping", "{}")));
    assert!(matches!(items[1], Err(UpstreamError::Timeout(_))));
}

#[tokio::test]
async fn encoded_events_parse_back_to_themselves() {
    let events = vec![
        event("message_start", "{\"type\":\"message_start\"}"),
        event("message", "first\nsecond\n\nfourth"),
        event("ping", ""),
    ];
    let encoded: Vec<u8> = events
        .iter()
        .flat_map(|event| event.to_bytes().to_vec())
        .collect();
    assert_eq!(
        events[0].to_bytes(),
        Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n")
    );
    assert_eq!(parse_ok(vec![encoded]).await, events);
}

#[test]
fn parse_usage_counts_all_cache_writes_as_5m_without_a_split() {
    let usage = parse_usage(&serde_json::json!({
        "input_tokens": 12,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 40,
        "output_tokens": 5,
    }));
    let expected = TokenUsage {
        input_tokens: 12,
        output_tokens: 5,
        cache_creation_5m_input_tokens: 300,
        cache_creation_1h_input_tokens: 0,
        cache_read_input_tokens: 40,
        ..TokenUsage::default()
    };
    assert_eq!(usage, expected);
}

#[test]
fn parse_usage_uses_the_cache_creation_split_when_present() {
    let usage = parse_usage(&serde_json::json!({
        "input_tokens": 12,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "cache_read_input_tokens": null,
        "output_tokens": 5,
        "service_tier": "standard",
    }));
    let expected = TokenUsage {
        input_tokens: 12,
        output_tokens: 5,
        cache_creation_5m_input_tokens: 100,
        cache_creation_1h_input_tokens: 200,
        cache_read_input_tokens: 0,
        ..TokenUsage::default()
    };
    assert_eq!(usage, expected);
}

#[test]
fn parse_usage_reads_web_searches_and_the_speed_that_served() {
    // #18: web searches are billed per search, and fast mode by the speed that served.
    let usage = parse_usage(&serde_json::json!({
        "input_tokens": 12,
        "output_tokens": 5,
        "server_tool_use": {"web_search_requests": 3},
        "speed": "fast",
    }));
    assert_eq!((usage.web_search_requests, usage.speed), (3, Some(Speed::Fast)));
    let unknown = parse_usage(&serde_json::json!({"input_tokens": 1, "speed": "warp"}));
    assert_eq!((unknown.web_search_requests, unknown.speed), (0, None));
    // A stream reports them on `message_start` and again, final, on `message_delta`.
    let mut accumulator = UsageAccumulator::default();
    accumulator.observe(&event(
        "message_start",
        r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1,"speed":"standard"}}}"#,
    ));
    accumulator.observe(&event(
        "message_delta",
        r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9,"server_tool_use":{"web_search_requests":2}}}"#,
    ));
    let usage = accumulator.usage();
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.web_search_requests,
            usage.speed
        ),
        (10, 9, 2, Some(Speed::Standard))
    );
    assert_eq!(accumulator.served_model(), Some("m"), "the model that served");
}

#[test]
fn parse_usage_reads_where_inference_ran() {
    // #18: data residency is billed as the upstream reports it (`usage.inference_geo`).
    let resident = parse_usage(&serde_json::json!({"input_tokens": 1, "inference_geo": "us"}));
    assert_eq!(resident.resident, Some(true));
    let global = parse_usage(&serde_json::json!({"input_tokens": 1, "inference_geo": "global"}));
    assert_eq!(global.resident, Some(false));
    let silent = parse_usage(&serde_json::json!({"input_tokens": 1, "inference_geo": null}));
    assert_eq!(silent.resident, None);
    // On a stream, `message_start` says it and a later `message_delta` without it keeps it.
    let mut accumulator = UsageAccumulator::default();
    accumulator.observe(&event(
        "message_start",
        r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":10,"output_tokens":1,"inference_geo":"us"}}}"#,
    ));
    accumulator.observe(&event(
        "message_delta",
        r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
    ));
    assert_eq!(accumulator.usage().resident, Some(true));
}

#[test]
fn accumulator_meters_a_stream_that_fails_midway() {
    // Goal: `message_start` sets usage, `message_delta` replaces the cumulative fields it
    // carries (keeping the 5m/1h split when the total is unchanged), and the flags follow
    // the events that arrived.
    let stream = [
        event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":300,"cache_read_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":1}}}"#,
        ),
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        event("ping", r#"{"type": "ping"}"#),
        event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        ),
        event(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"input_tokens":25,"cache_creation_input_tokens":300,"cache_read_input_tokens":1000,"output_tokens":17}}"#,
        ),
        event(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ];
    let mut accumulator = UsageAccumulator::default();
    assert!(!accumulator.saw_content());
    for event in &stream[..3] {
        accumulator.observe(event);
    }
    assert!(!accumulator.saw_content());
    assert_eq!(accumulator.usage().output_tokens, 1);
    for event in &stream[3..] {
        accumulator.observe(event);
    }
    let expected = TokenUsage {
        input_tokens: 25,
        output_tokens: 17,
        cache_creation_5m_input_tokens: 100,
        cache_creation_1h_input_tokens: 200,
        cache_read_input_tokens: 1000,
        ..TokenUsage::default()
    };
    assert_eq!(accumulator.usage(), expected);
    assert!(accumulator.saw_content());
    assert!(accumulator.saw_error());
    assert!(!accumulator.saw_message_stop());

    // A later delta with a changed total and no split falls back to counting it all as 5m.
    accumulator.observe(&event(
        "message_delta",
        r#"{"type":"message_delta","delta":{},"usage":{"cache_creation_input_tokens":350,"output_tokens":20}}"#,
    ));
    accumulator.observe(&event("message_stop", r#"{"type":"message_stop"}"#));
    let usage = accumulator.usage();
    assert_eq!(
        (
            usage.cache_creation_5m_input_tokens,
            usage.cache_creation_1h_input_tokens,
            usage.output_tokens
        ),
        (350, 0, 20)
    );
    assert!(accumulator.saw_message_stop());
}

#[test]
fn accumulator_reads_the_kind_from_data_when_the_event_is_unnamed() {
    let mut accumulator = UsageAccumulator::default();
    accumulator.observe(&event("message", r#"{"type":"message_stop"}"#));
    accumulator.observe(&event("message_delta", "not json"));
    assert!(accumulator.saw_message_stop());
    assert_eq!(accumulator.usage(), TokenUsage::default());
}

#[test]
fn accumulator_counts_generated_bytes_and_knows_when_the_final_usage_came() {
    // Goal: text, thinking and tool-input deltas count (unescaped), signatures don't; the
    // usage of `message_start` is reported but not final; a `message_delta` with output is.
    let mut accumulator = UsageAccumulator::default();
    assert_eq!(accumulator.reported_usage(), None);
    accumulator.observe(&event(
        "message_start",
        r#"{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
    ));
    for delta in [
        r#"{"type":"text_delta","text":"Hello\n"}"#,
        r#"{"type":"thinking_delta","thinking":"é"}"#,
        r#"{"type":"input_json_delta","partial_json":"{\"a\":"}"#,
        r#"{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}"#,
    ] {
        accumulator.observe(&event(
            "content_block_delta",
            &format!(r#"{{"type":"content_block_delta","index":0,"delta":{delta}}}"#),
        ));
    }
    assert_eq!(accumulator.generated_bytes(), 6 + 2 + 5);
    assert_eq!(
        accumulator.reported_usage().map(|usage| usage.output_tokens),
        Some(1)
    );
    assert!(!accumulator.saw_final_usage());
    accumulator.observe(&event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
    ));
    assert!(accumulator.saw_final_usage());
    assert_eq!(
        accumulator.reported_usage().map(|usage| usage.output_tokens),
        Some(4)
    );
}
