//! Tests for the simulated model: determinism, limits, stop sequences and event order.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::simulated::{Simulated, SimulatedConfig};
use crate::sse::{SseEvent, UsageAccumulator};
use crate::{UpstreamError, UpstreamReply, UpstreamRequest};

fn request(body: &Value, stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        body: Bytes::from(body.to_string()),
        stream,
        anthropic_version: None,
        anthropic_beta: None,
        query: None,
    }
}

fn body(max_tokens: u64) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "Tell me about ledgers."},
            {"role": "assistant", "content": [{"type": "text", "text": "Which kind?"}]},
            {"role": "user", "content": [{"type": "text", "text": "Double-entry ones."}]},
        ],
    })
}

fn unpaced() -> Simulated {
    Simulated::new(SimulatedConfig { tokens_per_second: 0 })
}

async fn message(simulated: &Simulated, body: &Value) -> (Value, tollgate_core::usage::TokenUsage) {
    match simulated.messages(request(body, false)).await {
        Ok(UpstreamReply::Message { body, usage }) => {
            let value = serde_json::from_slice(&body).expect("the reply is JSON");
            (value, usage)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn events(simulated: &Simulated, body: &Value) -> Vec<SseEvent> {
    match simulated.messages(request(body, true)).await {
        Ok(UpstreamReply::Stream(stream)) => {
            stream
                .map(|event| event.expect("simulated streams do not fail"))
                .collect()
                .await
        }
        other => panic!("expected a stream, got {other:?}"),
    }
}

fn text_of(reply: &Value) -> &str {
    reply["content"][0]["text"].as_str().expect("a text block")
}

#[tokio::test]
async fn replies_depend_only_on_the_request() {
    let simulated = unpaced();
    let (first, first_usage) = message(&simulated, &body(1000)).await;
    let (second, second_usage) = message(&unpaced(), &body(1000)).await;
    assert_eq!(text_of(&first), text_of(&second));
    assert_eq!(first_usage, second_usage);
    assert_ne!(first["id"], second["id"]);
    let id = first["id"].as_str().expect("an id");
    assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");

    let mut other_body = body(1000);
    other_body["messages"][2]["content"][0]["text"] = json!("Single-entry ones.");
    let (other, _) = message(&simulated, &other_body).await;
    assert_ne!(text_of(&first), text_of(&other));

    assert_eq!(first["type"], "message");
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["model"], "claude-sonnet-4-5");
    assert_eq!(first["stop_reason"], "end_turn");
    assert_eq!(first["stop_sequence"], Value::Null);
    assert_eq!(first["usage"]["output_tokens"], first_usage.output_tokens);
    assert_eq!(first["usage"]["input_tokens"], first_usage.input_tokens);
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    assert!((20..=300).contains(&first_usage.output_tokens));
    // "You are terse." + 3 message texts = 14 + 22 + 11 + 18 = 65 bytes -> 17, + 3 x 3.
    assert_eq!(first_usage.input_tokens, 26);
    let count = simulated
        .count_tokens(request(&body(1000), false))
        .expect("a valid body");
    assert_eq!(count, 26);
}

#[tokio::test]
async fn max_tokens_caps_the_reply_to_a_prefix() {
    let simulated = unpaced();
    let (full, _) = message(&simulated, &body(1000)).await;
    let (capped, usage) = message(&simulated, &body(7)).await;
    assert_eq!(usage.output_tokens, 7);
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert!(text_of(&full).starts_with(text_of(&capped)));
    assert_eq!(text_of(&capped).split_whitespace().count(), 7);
}

#[tokio::test]
async fn a_stop_sequence_cuts_the_reply_before_it() {
    let simulated = unpaced();
    let (full, full_usage) = message(&simulated, &body(1000)).await;
    let full_text = text_of(&full);
    let words: Vec<&str> = full_text.split(' ').collect();
    let stop = format!(" {}", words[10]);
    let cut_at = full_text.find(&stop).expect("the word is in the text");

    let mut stopped_body = body(1000);
    stopped_body["stop_sequences"] = json!(["never appears ~~", stop]);
    let (stopped, usage) = message(&simulated, &stopped_body).await;
    assert_eq!(text_of(&stopped), &full_text[..cut_at]);
    assert_eq!(stopped["stop_reason"], "stop_sequence");
    assert_eq!(stopped["stop_sequence"], json!(stop));
    // The tokens before the cut plus the one that completed the stop sequence.
    assert!(usage.output_tokens <= 11 && usage.output_tokens < full_usage.output_tokens);
}

#[tokio::test]
async fn streams_follow_anthropics_event_order_and_match_the_message() {
    let simulated = unpaced();
    let (reply, usage) = message(&simulated, &body(1000)).await;
    let events = events(&simulated, &body(1000)).await;
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    let deltas = names.len() - 6;
    assert!(deltas >= 1);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start: Value = serde_json::from_str(&events[0].data).expect("JSON");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    let text: String = events[3..3 + deltas]
        .iter()
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).expect("JSON");
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(text, text_of(&reply));
    let message_delta: Value = serde_json::from_str(&events[names.len() - 2].data).expect("JSON");
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");

    let mut accumulator = UsageAccumulator::default();
    events.iter().for_each(|event| accumulator.observe(event));
    assert_eq!(accumulator.usage(), usage);
    assert!(accumulator.saw_message_stop() && accumulator.saw_content() && !accumulator.saw_error());
}

#[tokio::test(start_paused = true)]
async fn streams_are_paced_at_tokens_per_second() {
    let simulated = Simulated::new(SimulatedConfig {
        tokens_per_second: 100,
    });
    let started = tokio::time::Instant::now();
    let events = events(&simulated, &body(50)).await;
    assert_eq!(events.len(), 6 + 10); // 50 tokens in deltas of 100 / 20 = 5.
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(500));

    let started = tokio::time::Instant::now();
    let (_, usage) = message(&simulated, &body(50)).await;
    assert_eq!(usage.output_tokens, 50);
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(500));
}

#[tokio::test]
async fn malformed_bodies_get_an_invalid_request_envelope() {
    let simulated = unpaced();
    let cases = [
        json!([1, 2]),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": []}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]}),
        json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 5, "stop_sequences": [1], "messages": [{"role": "user", "content": "hi"}]}),
    ];
    for case in cases {
        let Err(UpstreamError::Status { status, body }) = simulated.messages(request(&case, false)).await
        else {
            panic!("{case} was accepted");
        };
        assert_eq!(status, 400);
        let envelope: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(envelope["type"], "error");
        assert_eq!(envelope["error"]["type"], "invalid_request_error", "{case}");
    }
    let not_json = UpstreamRequest {
        body: Bytes::from_static(b"{\"model\":"),
        ..request(&json!({}), false)
    };
    assert!(matches!(
        simulated.count_tokens(not_json),
        Err(UpstreamError::Status { status: 400, .. })
    ));
}

#[test]
fn input_tokens_never_exceed_the_body_bound() {
    // Goal: the gateway reserves credit for body bytes + 512 input tokens; tiny messages with
    // many per-message overheads and blocks whose JSON is re-serialized must stay under it.
    let simulated = unpaced();
    let many_empty: Vec<Value> = (0..500).map(|_| json!({"role": "user", "content": ""})).collect();
    let image = json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ok"}]},
        {"type": "tool_use", "id": "t", "name": "read", "input": {"path": 1e2}},
    ]});
    for body in [
        json!({"model": "m", "messages": many_empty}),
        json!({"model": "m", "messages": [image], "tools": [{"name": "read", "input_schema": {}}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    ] {
        let upstream_request = request(&body, false);
        let bound = upstream_request.body.len() as u64 + 512;
        let count = simulated.count_tokens(upstream_request).expect("valid");
        assert!((1..=bound).contains(&count), "{count} > {bound}");
    }
}
