//! Failed requests are never charged: upstream errors, connection failures, timeouts and
//! streams that end in an error release the whole reservation. A client that leaves
//! mid-stream is charged for what was generated.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{message_body, parse_sse, sonnet_cost, spawn_app, starter_nanos};

async fn assert_untouched(app: &crate::helpers::TestApp) {
    app.wait_for_settlement().await;
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "a failed request costs nothing"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_uncharged() {
    let app = spawn_app().await;
    for (status, kind) in [
        (529, "overloaded_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
        (429, "rate_limit_error"),
    ] {
        app.fake.set_behavior(Behavior::Status(status));
        for stream in [false, true] {
            let mut body = message_body("fake-sonnet");
            body["stream"] = json!(stream);
            let response = app.post_messages(&body).await;
            assert_eq!(response.status().as_u16(), status);
            assert!(response.headers().get("request-id").is_some());
            let envelope: Value = response.json().await.expect("json");
            assert_eq!(envelope["type"], "error");
            assert_eq!(envelope["error"]["type"], kind);
            assert!(envelope["request_id"].as_str().expect("id").starts_with("req_"));
        }
    }
    assert_untouched(&app).await;
    let records = app.usage_records().await;
    assert_eq!(records.len(), 8, "every request leaves a usage record");
    assert!(
        records
            .iter()
            .all(|record| record.status.as_str() == "failed" && record.cost.nanos() == 0)
    );
}

#[tokio::test]
async fn upstream_hangup_is_an_api_error_and_uncharged() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Hangup);
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert!(response.status().is_server_error());
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["type"], "error");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_mid_stream_error_event_releases_the_reservation() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::MidStreamError { deltas: 2 });
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200, "the stream had started");
    let events = parse_sse(&response.text().await.expect("body"));
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_stalled_stream_times_out_uncharged_with_an_error_event() {
    let app = spawn_app().await;
    // The fake provider's idle timeout is 1 s.
    app.fake.set_behavior(Behavior::Stall {
        deltas: 1,
        duration: Duration::from_secs(3),
    });
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    let events = parse_sse(&response.text().await.expect("body"));
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "timeout_error");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_stalled_message_times_out_with_504() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        latency: Duration::from_secs(7),
        ..Reply::default()
    }));
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 504);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "timeout_error");
    assert_untouched(&app).await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_charged_what_was_generated() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 300,
        output_tokens: 50,
        event_delay: Duration::from_millis(40),
        ..Reply::default()
    }));
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a first chunk").expect("bytes");
    assert!(!first.is_empty(), "content was delivered before leaving");
    drop(stream);
    app.wait_for_settlement().await;
    // The gateway drained the upstream to its end and charged its final usage, no more.
    let cost = sonnet_cost(300, 50);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
    let records = app.usage_records().await;
    assert_eq!(records[0].status.as_str(), "client_disconnected");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streaming_call_is_charged_the_upstreams_usage() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 100,
        output_tokens: 10,
        latency: Duration::from_millis(300),
        ..Reply::default()
    }));
    let request = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .timeout(Duration::from_millis(100))
        .json(&message_body("fake-sonnet"))
        .send()
        .await;
    assert!(request.is_err(), "the client timed out");
    app.wait_for_settlement().await;
    let cost = sonnet_cost(100, 10);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
}
