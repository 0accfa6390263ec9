//! The HTTP server itself: HTTP/1.1 and HTTP/2 with prior knowledge on one port, and a
//! shutdown that stops accepting but lets the requests in flight finish and be charged.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{message_body, parse_sse, spawn_app};

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_beside_http1() {
    let app = spawn_app().await;
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = http2
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("an HTTP/2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("request-id").is_some());
    let http1 = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(http1.version(), reqwest::Version::HTTP_11);
    assert_eq!(http1.status(), 200);
    assert_eq!(app.usage_records().await.len(), 2);
    app.assert_ledger_clean().await;
}

/// A request whose first segment could still be HTTP/2's preface ("P" of "PRI * HTTP/2.0")
/// is read until the server can tell, and served as the HTTP/1.1 it is.
#[tokio::test]
async fn an_http1_request_that_opens_like_http2s_preface_is_served() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    socket.write_all(b"P").await.expect("first byte");
    tokio::time::sleep(Duration::from_millis(50)).await;
    socket
        .write_all(b"UT /health HTTP/1.1\r\nhost: tollgate\r\nconnection: close\r\n\r\n")
        .await
        .expect("the rest");
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("request-id: req_"), "{answer}");
}

#[tokio::test]
async fn shutting_down_lets_a_stream_in_flight_finish_and_charges_it() {
    let mut app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        event_delay: Duration::from_millis(40),
        ..Reply::default()
    }));
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    app.shutdown
        .take()
        .expect("running")
        .send(())
        .expect("the server listens");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!app.server.is_finished(), "the server waits for the stream");
    let events = parse_sse(&response.text().await.expect("the stream runs to its end"));
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));
    tokio::time::timeout(Duration::from_secs(10), &mut app.server)
        .await
        .expect("the server stops once the stream is over")
        .expect("the server task");
    let refused = reqwest::Client::new().get(app.url("/health")).send().await;
    assert!(refused.is_err(), "no new connection after shutdown");
    let records = app.usage_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status.as_str(), "succeeded");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn shutting_down_does_not_wait_for_a_connection_that_sent_nothing() {
    let mut app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let _silent = tokio::net::TcpStream::connect(&address).await.expect("connect");
    // Served once before, then idle between requests: closed at shutdown too.
    let health = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    app.shutdown
        .take()
        .expect("running")
        .send(())
        .expect("the server listens");
    tokio::time::timeout(Duration::from_secs(10), &mut app.server)
        .await
        .expect("the server stops without waiting for idle connections")
        .expect("the server task");
}

/// Goal (#17): every response says what the gateway added: `server-timing` splits the time
/// until the response head into tollgate's own and the upstream's, for a message and for
/// a stream; a response with no upstream call (the Admin API) carries tollgate's alone.
#[tokio::test]
async fn every_response_says_what_the_gateway_added_in_server_timing() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        latency: Duration::from_millis(60),
        ..Reply::default()
    }));
    let timings = |response: &reqwest::Response| -> Vec<(String, f64)> {
        let header = response
            .headers()
            .get("server-timing")
            .expect("server-timing")
            .to_str()
            .expect("text");
        header
            .split(", ")
            .map(|metric| {
                let (name, duration) = metric.split_once(";dur=").expect("name;dur=milliseconds");
                (name.to_owned(), duration.parse().expect("milliseconds"))
            })
            .collect()
    };
    for body in [
        message_body("fake-sonnet"),
        json!({"stream": true, "model": "fake-sonnet", "max_tokens": 100,
               "messages": [{"role": "user", "content": "Hello there"}]}),
    ] {
        let started = tokio::time::Instant::now();
        let response = app.post_messages(&body).await;
        let round_trip_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(response.status(), 200);
        let timings = timings(&response);
        let names: Vec<&str> = timings.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["tollgate", "upstream"], "{timings:?}");
        assert!(timings[1].1 >= 60.0, "the upstream took its 60 ms: {timings:?}");
        // The two parts do not overlap: together they fit in the client's own round trip
        // (a timing comparison between them would only measure the machine's load).
        assert!(timings[0].1 >= 0.0, "{timings:?}");
        assert!(
            timings[0].1 + timings[1].1 <= round_trip_ms + 1.0,
            "{timings:?} within {round_trip_ms} ms"
        );
        let _ = response.bytes().await;
    }
    let admin = app
        .client
        .get(app.url("/v1/organizations/me"))
        .header("x-api-key", &app.admin_key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("admin request");
    assert_eq!(admin.status(), 200);
    let timings = timings(&admin);
    assert_eq!(timings.len(), 1, "{timings:?}");
    assert_eq!(timings[0].0, "tollgate");
    app.assert_ledger_clean().await;
}
