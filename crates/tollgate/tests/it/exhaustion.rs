//! What a client or a failing dependency can take from everyone else, and the bounds that
//! stop it: a request head that never completes, connections held without requests, a
//! connection count beyond the cap, oversized request heads, a rate-limit store (Redis)
//! that stops answering, a database that stops taking writes. Timeouts are configured small
//! here so that each bound shows within a second or two.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tollgate_testkit::Behavior;

use crate::helpers::{
    Options, TestApp, message_body, parse_sse, spawn_app, spawn_app_with, starter_nanos, test_redis_url,
};

/// `[server]` with one-second timeouts and room for three connections, and `patient-sonnet`
/// on the fake upstream with an upstream idle timeout longer than the stalls below.
const TIGHT_SERVER: &str = r#"
        [server]
        header_read_timeout_seconds = 1
        idle_timeout_seconds = 1
        max_connections = 3
        max_header_bytes = 16384
        [providers.patient]
        kind = "anthropic"
        base_url = "{fake}"
        api_key = "provider-secret"
        idle_timeout_seconds = 30
        [models.patient-sonnet]
        class = "sonnet"
        provider = "patient"
        upstream_model = "claude-sonnet-4-6"
        input = "3"
        output = "15"
"#;

async fn spawn_tight_app() -> TestApp {
    spawn_app_with(Options {
        extra_config: TIGHT_SERVER,
        ..Options::default()
    })
    .await
}

fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or resets it); how long that took.
async fn time_until_closed(socket: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0_u8; 4096];
    loop {
        match tokio::time::timeout(bound, socket.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {bound:?}"),
        }
    }
}

/// The goal: a client that sends part of a request head and then nothing (slowloris) is
/// let go after the header-read timeout; before, such connections stayed open for as long as
/// the client liked (≥ 45 s in the report). One that sends nothing at all goes too.
#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off_after_the_header_read_timeout() {
    let app = spawn_tight_app().await;
    let mut partial = TcpStream::connect(socket_address(&app)).await.expect("connect");
    partial
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: tollgate\r\nx-api-key: sk")
        .await
        .expect("part of a head");
    let mut silent = TcpStream::connect(socket_address(&app)).await.expect("connect");
    let partial_open = time_until_closed(&mut partial, Duration::from_secs(10)).await;
    let silent_open = time_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(
        partial_open >= Duration::from_millis(900) && partial_open < Duration::from_secs(3),
        "closed after {partial_open:?}"
    );
    assert!(
        silent_open < Duration::from_secs(3),
        "closed after {silent_open:?}"
    );
    let health = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
}

/// The goal: an HTTP/2 connection that opens (preface and settings) but sends no request
/// is closed too; hyper's header-read timeout covers only HTTP/1.1, and before, such a
/// connection was held for as long as the client liked.
#[tokio::test]
async fn an_http2_connection_without_requests_is_closed() {
    let app = spawn_tight_app().await;
    let mut socket = TcpStream::connect(socket_address(&app)).await.expect("connect");
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("the preface");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    socket
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    let open_for = time_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(open_for < Duration::from_secs(3), "closed after {open_for:?}");
}

/// The goal: a connection that stays idle between requests is closed, but a stream that
/// is silent for longer than every timeout is not cut: only a connection with nothing in
/// flight is idle.
#[tokio::test]
async fn a_silent_stream_outlives_the_timeouts_and_the_idle_connection_after_it_does_not() {
    let app = spawn_tight_app().await;
    app.fake.set_behavior(Behavior::Stall {
        deltas: 1,
        duration: Duration::from_millis(2_500),
    });
    let mut body = message_body("patient-sonnet");
    body["stream"] = json!(true);
    let body = body.to_string();
    let mut socket = TcpStream::connect(socket_address(&app)).await.expect("connect");
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: tollgate\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n{body}",
        key = app.api_key,
        length = body.len(),
    );
    socket.write_all(request.as_bytes()).await.expect("request");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains("message_stop") {
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buffer))
            .await
            .expect("the stream goes on")
            .expect("read");
        assert!(
            read > 0,
            "the connection was closed mid-stream after {:?}",
            started.elapsed()
        );
        received.extend_from_slice(&buffer[..read]);
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "the stall lasted");
    let idle_for = time_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(
        idle_for < Duration::from_secs(3),
        "idle connection closed after {idle_for:?}"
    );
    app.wait_for_settlement().await;
    let records = app.usage_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status.as_str(), "succeeded");
    app.assert_ledger_clean().await;
}

/// The goal: connections beyond `max_connections` are not taken in (so they cost no file
/// descriptor of ours) until one closes, and a client that waits is then served; before,
/// every connection was accepted until the process ran out of file descriptors.
#[tokio::test]
async fn beyond_the_connection_cap_a_request_waits_for_a_slot_and_is_served() {
    let app = spawn_tight_app().await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(socket_address(&app)).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let waiting = app
        .client
        .get(app.url("/health"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        waiting.is_err(),
        "not served while three idle connections fill the cap"
    );
    let served = app
        .client
        .get(app.url("/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once the idle connections are let go");
    assert_eq!(served.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "after {:?}",
        started.elapsed()
    );
    for mut socket in idle {
        time_until_closed(&mut socket, Duration::from_secs(5)).await;
    }
}

/// The goal: a request head over `max_header_bytes` gets 431 in the API's error envelope,
/// with a request id; before, any head up to hyper's ~400 KB buffer was taken in, and
/// beyond it the answer was a bare 431 with no body.
#[tokio::test]
async fn an_oversized_request_head_gets_431_in_the_envelope() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .header("x-padding", "a".repeat(20 * 1024))
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 431);
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|value| value.to_str().ok())
        .expect("a request id")
        .to_owned();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("16384 bytes")),
        "{body}"
    );
    // OpenAI's surface gets OpenAI's envelope.
    let chat = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.api_key)
        .header("x-padding", "a".repeat(20 * 1024))
        .json(&json!({"model": "claude-sonnet-4-6", "messages": []}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(chat.status(), 431);
    let body: Value = chat.json().await.expect("a JSON body");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Nothing was admitted or charged, and the next request is served.
    assert!(app.usage_records().await.is_empty());
    assert_eq!(
        app.post_messages(&message_body("claude-sonnet-4-6"))
            .await
            .status(),
        200
    );
}

/// A TCP proxy in front of the machine's Redis that can be made to stop answering: while
/// down it drops its connections and accepts new ones without ever forwarding a byte, as a
/// hung server or a black-holed network would (the worst case: nothing is refused, every
/// call waits).
struct SwitchableProxy {
    address: String,
    answering: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl SwitchableProxy {
    async fn start(upstream: String) -> SwitchableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let answering = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (flag, tasks) = (answering.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let forwarding = flag.load(Ordering::SeqCst);
                tasks.lock().expect("tasks").spawn(async move {
                    if !forwarding {
                        // Hold the connection, say nothing.
                        let _held = client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        SwitchableProxy {
            address,
            answering,
            connections,
        }
    }

    fn stop_answering(&self) {
        self.answering.store(false, Ordering::SeqCst);
        self.connections.lock().expect("tasks").abort_all();
    }

    fn answer_again(&self) {
        self.answering.store(true, Ordering::SeqCst);
        self.connections.lock().expect("tasks").abort_all();
    }
}

fn redis_host_port() -> String {
    let url = test_redis_url();
    url.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

/// The goal: with Redis gone silent, a request fails in well under a second with a 503
/// that names the rate-limit store (not a generic 500 after ~9.4 s, as before), later ones
/// fail at once while the breaker is open, readiness says what failed, and service comes
/// back by itself when Redis does.
#[tokio::test]
async fn a_silent_rate_limit_store_fails_fast_with_a_clear_error_and_recovers_alone() {
    let proxy = SwitchableProxy::start(redis_host_port()).await;
    let extra: &'static str = Box::leak(
        format!(
            r#"
            [limits]
            redis_url = "redis://{address}"
            redis_key_prefix = "{prefix}:"
            redis_timeout_millis = 200
            redis_retry_millis = 500
            "#,
            address = proxy.address,
            prefix = crate::helpers::unique_name("rl"),
        )
        .into_boxed_str(),
    );
    let app = spawn_app_with(Options {
        extra_config: extra,
        ..Options::default()
    })
    .await;
    let body = message_body("claude-sonnet-4-6");
    assert_eq!(app.post_messages(&body).await.status(), 200);
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    proxy.stop_answering();
    let mut slowest = Duration::ZERO;
    let mut last = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let response = app.post_messages(&body).await;
        last = started.elapsed();
        slowest = slowest.max(last);
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let error: Value = response.json().await.expect("the envelope");
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], "api_error");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("rate-limit store is unavailable"), "{message}");
    }
    assert!(
        slowest < Duration::from_millis(600),
        "slowest refusal took {slowest:?}"
    );
    assert!(
        last < Duration::from_millis(100),
        "with the breaker open: {last:?}"
    );
    let not_ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(not_ready.status(), 503);
    let report: Value = not_ready.json().await.expect("JSON");
    assert!(report["failed"]["rate_limiter"].is_string(), "{report}");
    assert!(report["failed"].get("store").is_none(), "{report}");
    // Liveness is not readiness.
    let live = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(live.status(), 200);

    proxy.answer_again();
    let back = Instant::now();
    loop {
        let response = app.post_messages(&body).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    // Every refused request left nothing behind; the served ones were charged.
    app.assert_ledger_clean().await;
}

/// A second connection to the app's SQLite file, after it has made the writes `event`
/// names fail as a full disk would, by the trigger `name` (which the test drops to heal).
async fn disk_full_for(app: &TestApp, name: &str, event: &str) -> sqlx::SqliteConnection {
    let database = format!("sqlite://{}", app.config.database_path().display());
    let mut side = <sqlx::SqliteConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("a second connection to the database file");
    sqlx::query(&format!(
        "CREATE TRIGGER {name} BEFORE {event}
         BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
    ))
    .execute(&mut side)
    .await
    .expect("trigger");
    side
}

/// The goal: `/health/ready` commits a write, so a database that cannot take writes (here
/// a trigger refuses them, as a full disk would) makes it 503 while `/health`, liveness,
/// stays 200; before, `/health` answered ok and nothing else was asked.
#[tokio::test]
async fn readiness_fails_while_the_store_cannot_write() {
    let app = spawn_app().await;
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("JSON"),
        json!({"status": "ok"})
    );

    let mut side = disk_full_for(&app, "health_checks_full", "UPDATE ON health_checks").await;
    let not_ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(not_ready.status(), 503);
    let report: Value = not_ready.json().await.expect("JSON");
    assert_eq!(report["status"], "unavailable");
    assert!(report["failed"]["store"].is_string(), "{report}");
    let live = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(live.status(), 200);

    sqlx::query("DROP TRIGGER health_checks_full")
        .execute(&mut side)
        .await
        .expect("drop trigger");
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
}

/// The goal: a request starts its upstream call once the writer's book has decided its
/// reservation, while the batch commits; if the reservation is then not written (here a
/// trigger refuses it, as a full disk would), the client gets the store's error and no
/// content, streaming or not, nothing is charged or held, and the rate-limit buckets get
/// back what the request took. Without the wait for the commit beside the upstream call,
/// the stream's content reached the client with nothing to charge it to.
#[tokio::test]
async fn a_reservation_decided_but_not_written_delivers_nothing() {
    let app = spawn_app().await;
    let mut side = disk_full_for(&app, "reservations_full", "INSERT ON reservations").await;
    let mut streaming = message_body("claude-sonnet-4-6");
    streaming["stream"] = json!(true);
    for body in [message_body("claude-sonnet-4-6"), streaming] {
        let response = app.post_messages(&body).await;
        assert_eq!(response.status(), 500, "{body}");
        let text = response.text().await.expect("the body");
        let error: Value = serde_json::from_str(&text).expect("an error envelope, not a stream");
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["error"]["type"], "api_error", "{text}");
        assert!(!text.contains("content_block"), "no content: {text}");
    }
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "nothing charged or held"
    );
    sqlx::query("DROP TRIGGER reservations_full")
        .execute(&mut side)
        .await
        .expect("drop trigger");
    let served = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(served.status(), 200);
    let headers = served.headers().clone();
    let _ = served.text().await;
    // Both failed requests gave their request back: only this one is counted.
    let limit: u64 = headers["anthropic-ratelimit-requests-limit"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let remaining: u64 = headers["anthropic-ratelimit-requests-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(limit - remaining, 1, "{headers:?}");
    app.wait_for_settlement().await;
    assert!(
        app.tollgate
            .store()
            .usage_records(&app.org_id)
            .await
            .unwrap()
            .len()
            == 1
    );
    app.assert_ledger_clean().await;
}

/// The goal: when its workspace captures bodies, a request whose reservation was decided
/// but not written keeps the capture of the error its client got, streaming or not, as
/// every other failed request does. Before, that capture was dropped.
#[tokio::test]
async fn a_reservation_not_written_keeps_the_capture_of_its_error() {
    let app = spawn_app().await;
    let (status, settings) = app
        .admin_post(
            "/v1/organizations/workspaces/default/capture",
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    let _side = disk_full_for(&app, "reservations_full", "INSERT ON reservations").await;
    let mut streaming = message_body("claude-sonnet-4-6");
    streaming["stream"] = json!(true);
    for body in [message_body("claude-sonnet-4-6"), streaming] {
        let response = app.post_messages(&body).await;
        assert_eq!(response.status(), 500, "{body}");
        let id = response.headers()["request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let delivered = response.text().await.expect("the body");
        let capture = app.wait_for_capture(&app.org_id, &id).await;
        assert_eq!(capture.response_body, delivered, "{body}");
        assert!(capture.request_body.contains("claude-sonnet-4-6"));
    }
}

/// The goal: one organization cannot hold more upstream calls at once than its cap; the
/// next gets 429 `rate_limit_error` with `retry-after`, costs nothing, and once a call ends
/// its slot is free again. Before, nothing counted calls in flight.
#[tokio::test]
async fn calls_in_flight_beyond_the_organizations_cap_get_429() {
    let app = spawn_app().await;
    app.tollgate.set_max_concurrent_calls_per_organization(2);
    app.fake.set_behavior(Behavior::Stall {
        deltas: 1,
        duration: Duration::from_millis(800),
    });
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let first = app.post_messages(&body).await;
    let second = app.post_messages(&body).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let refused = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.expect("the envelope");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("concurrent connections"), "{message}");
    // The streams run to their end; then there is room again.
    for stream in [first, second] {
        let events = parse_sse(&stream.text().await.expect("the stream ends"));
        assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));
    }
    // A slot is freed when its reservation has ended, just after the settlement commits.
    app.wait_for_settlement().await;
    let mut status = 0;
    for _ in 0..40 {
        status = app
            .post_messages(&message_body("claude-sonnet-4-6"))
            .await
            .status()
            .as_u16();
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    app.assert_ledger_clean().await;
}
