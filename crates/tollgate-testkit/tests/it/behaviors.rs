//! Each `Behavior`, and the order in which queued and default behaviours apply.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, FakeUpstream};

use crate::{event_names, messages_body, parse_sse, post_messages};

#[tokio::test]
async fn status_answers_with_the_matching_error_envelope() {
    let upstream = FakeUpstream::start().await;
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, error_type) in cases {
        upstream.set_behavior(Behavior::Status(status));
        for stream in [false, true] {
            let response = post_messages(&upstream, &messages_body(stream)).await;
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["content-type"], "application/json");
            let request_id = response.headers()["request-id"]
                .to_str()
                .expect("ascii request id")
                .to_owned();
            let envelope: Value = response.json().await.expect("JSON body");
            assert_eq!(envelope["type"], "error");
            assert_eq!(envelope["error"]["type"], error_type, "status {status}");
            assert!(envelope["error"]["message"].is_string());
            assert_eq!(envelope["request_id"], request_id.as_str());
        }
    }
}

#[tokio::test]
async fn pushed_behaviors_are_used_once_each_in_order_before_the_default() {
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Status(401));
    upstream.push_behavior(Behavior::Status(429));
    upstream.push_behavior(Behavior::Status(529));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post_messages(&upstream, &messages_body(false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [429, 529, 401, 401]);
    assert_eq!(upstream.request_count(), 4);
}

#[tokio::test]
async fn mid_stream_error_sends_deltas_then_an_error_event() {
    let upstream = FakeUpstream::start().await;
    upstream.push_behavior(Behavior::MidStreamError { deltas: 2 });
    let response = post_messages(&upstream, &messages_body(true)).await;
    assert_eq!(response.status(), 200, "the failure arrives after the headers");
    let events = parse_sse(&response.text().await.expect("stream body"));
    assert_eq!(
        event_names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[5].data,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    // Without a stream to break, the same behaviour is a plain 529.
    upstream.push_behavior(Behavior::MidStreamError { deltas: 2 });
    let response = post_messages(&upstream, &messages_body(false)).await;
    assert_eq!(response.status(), 529);
}

#[tokio::test]
async fn stall_goes_silent_after_the_deltas_then_finishes() {
    // Goal: idle-timeout tests can rely on headers and the first deltas arriving, then silence.
    let upstream = FakeUpstream::start().await;
    upstream.push_behavior(Behavior::Stall {
        deltas: 1,
        duration: Duration::from_millis(400),
    });
    let mut response = post_messages(&upstream, &messages_body(true)).await;
    let mut received = String::new();
    while !received.contains("event: content_block_delta") {
        let chunk = response
            .chunk()
            .await
            .expect("read chunk")
            .expect("chunk before the stall");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let during_stall = tokio::time::timeout(Duration::from_millis(150), response.chunk()).await;
    assert!(
        during_stall.is_err(),
        "nothing may arrive during the stall: {during_stall:?}"
    );

    while let Some(chunk) = response.chunk().await.expect("read chunk") {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = parse_sse(&received);
    assert_eq!(
        events
            .iter()
            .filter(|event| event.name == "content_block_delta")
            .count(),
        10
    );
    assert_eq!(events.last().expect("events").name, "message_stop");
    assert_eq!(upstream.streams_completed(), 1);
}

#[tokio::test]
async fn stall_without_stream_sends_headers_then_the_body_late() {
    let upstream = FakeUpstream::start().await;
    upstream.push_behavior(Behavior::Stall {
        deltas: 0,
        duration: Duration::from_millis(400),
    });
    let response = tokio::time::timeout(
        Duration::from_millis(200),
        post_messages(&upstream, &messages_body(false)),
    )
    .await
    .expect("headers arrive before the stall ends");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON body after the stall");
    assert_eq!(body["type"], "message");
}

#[tokio::test]
async fn hangup_drops_the_connection_after_recording_the_request() {
    let upstream = FakeUpstream::start().await;
    upstream.push_behavior(Behavior::Hangup);
    let client = crate::client();
    let result = client
        .post(format!("{}/v1/messages", upstream.base_url()))
        .json(&messages_body(false))
        .send()
        .await;
    let error = result.expect_err("no answer after a hangup");
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(upstream.requests().len(), 1);

    // The next request (on a fresh connection) gets the default behaviour again.
    let response = client
        .post(format!("{}/v1/messages", upstream.base_url()))
        .json(&messages_body(false))
        .send()
        .await
        .expect("send after hangup");
    assert_eq!(response.status(), 200);
}
