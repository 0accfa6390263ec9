use bytes::Bytes;
use serde_json::json;

use crate::chat::{ChatRequest, duration_text};

fn parse(body: serde_json::Value) -> Result<ChatRequest, (String, Option<String>)> {
    ChatRequest::parse(&Bytes::from(body.to_string())).map_err(|error| (error.message, error.param))
}

#[test]
fn reads_limits_streaming_and_media() {
    let request = parse(json!({
        "model": "gpt-4o",
        "max_tokens": 50,
        "max_completion_tokens": 80,
        "n": 2,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ],
        "logit_bias": {"50256": -100}
    }))
    .expect("valid");
    assert_eq!(request.model, "gpt-4o");
    assert_eq!(
        request.max_tokens,
        Some(80),
        "the larger of the two limits bounds the output"
    );
    assert_eq!(
        (request.choices, request.stream, request.include_usage),
        (2, true, true)
    );
    assert_eq!((request.media_parts, request.images), (2, 1));
    assert!(request.body.contains_key("logit_bias"), "unknown fields are kept");
    let minimal =
        parse(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).expect("valid");
    assert_eq!(
        (minimal.max_tokens, minimal.choices, minimal.stream),
        (None, 1, false)
    );
}

#[test]
fn names_the_parameter_at_fault() {
    let cases = [
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "m", "n": 0, "messages": [{"role": "user", "content": "x"}]}),
            "n",
        ),
        (
            json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            "stream",
        ),
    ];
    for (body, param) in cases {
        let (message, got) = parse(body.clone()).expect_err("invalid");
        assert_eq!(got.as_deref(), Some(param), "{body}: {message}");
    }
    assert!(ChatRequest::parse(&Bytes::from_static(b"{")).is_err());
}

#[test]
fn resets_read_like_openais() {
    assert_eq!(duration_text(0), "0ms");
    assert_eq!(duration_text(20_000_000), "20ms");
    assert_eq!(duration_text(1_000_000_000), "1s");
    assert_eq!(duration_text(1_500_000_000), "2s");
    assert_eq!(duration_text(360_000_000_000), "6m0s");
}
