//! Streaming answers: the exact SSE event order, usage accounting and disconnect detection.

use std::time::Duration;

use serde_json::json;
use tollgate_testkit::{Behavior, FakeUpstream, Reply};

use crate::{event_names, eventually, messages_body, parse_sse, post_messages};

#[tokio::test]
async fn stream_follows_anthropic_event_order_with_cumulative_usage() {
    // Goal: a gateway parsing this stream sees what it would see from Anthropic.
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Ok(Reply {
        cache_creation_input_tokens: 3,
        cache_read_input_tokens: 4,
        ..Reply::default()
    }));
    let response = post_messages(&upstream, &messages_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("request-id"));
    let events = parse_sse(&response.text().await.expect("stream body"));

    let mut expected_names = vec!["message_start", "content_block_start", "ping"];
    expected_names.extend(["content_block_delta"; 10]);
    expected_names.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(event_names(&events), expected_names);
    for event in &events {
        assert_eq!(
            event.data["type"],
            event.name.as_str(),
            "JSON type matches the event name"
        );
    }

    let message = &events[0].data["message"];
    assert_eq!(message["model"], "claude-test-1");
    assert_eq!(message["content"], json!([]));
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 1})
    );
    let text: String = events
        .iter()
        .filter(|event| event.name == "content_block_delta")
        .map(|event| event.data["delta"]["text"].as_str().expect("text_delta"))
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    assert_eq!(
        events[14].data,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 20}})
    );
    assert_eq!(upstream.streams_completed(), 1);
    assert_eq!(upstream.streams_disconnected(), 0);
}

#[tokio::test]
async fn stream_caps_output_at_max_tokens() {
    let upstream = FakeUpstream::start().await;
    let mut body = messages_body(true);
    body["max_tokens"] = json!(3);
    let events = parse_sse(
        &post_messages(&upstream, &body)
            .await
            .text()
            .await
            .expect("stream body"),
    );
    let deltas = events
        .iter()
        .filter(|event| event.name == "content_block_delta")
        .count();
    assert_eq!(deltas, 3, "one delta per output token below ten");
    let message_delta = events
        .iter()
        .find(|event| event.name == "message_delta")
        .expect("message_delta");
    assert_eq!(message_delta.data["delta"]["stop_reason"], "max_tokens");
    assert_eq!(message_delta.data["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn client_going_away_mid_stream_is_counted_as_disconnected() {
    // Goal: tests of the gateway's cancellation can observe that it closed the upstream stream.
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Ok(Reply {
        event_delay: Duration::from_millis(20),
        ..Reply::default()
    }));
    let mut response = post_messages(&upstream, &messages_body(true)).await;
    let first_chunk = response.chunk().await.expect("read chunk").expect("first chunk");
    assert!(first_chunk.starts_with(b"event: message_start\n"));
    drop(response);

    eventually("the dropped stream to be counted", || {
        upstream.streams_disconnected() == 1
    })
    .await;
    assert_eq!(upstream.streams_completed(), 0);
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    // Goal: an upstream client configured for h2c works against the fake too.
    let upstream = FakeUpstream::start().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("build h2c client");
    let response = client
        .post(format!("{}/v1/messages", upstream.base_url()))
        .json(&messages_body(true))
        .send()
        .await
        .expect("send over h2c");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let events = parse_sse(&response.text().await.expect("stream body"));
    assert_eq!(events.last().expect("events").name, "message_stop");
}
