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

/// #23 item 11: a stream whose head carries an `error` event, with no other deployment to
/// fail over to, reaches the client as the upstream sent it — a 200 and the `error` event —
/// not as an error status of the gateway's making (clients fall back to a non-streaming
/// request on the one and retry the other). Nothing is charged.
#[tokio::test]
async fn a_stream_that_opens_with_an_error_on_the_last_deployment_is_relayed_as_sent() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::MidStreamError { deltas: 0 });
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200, "the upstream's own status");
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping", "error"]);
    let (_, data) = events.last().expect("events");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
    assert_eq!(data["error"]["message"], "Overloaded");

    // The same through the Chat Completions surface on an OpenAI-compatible upstream.
    let mut chat = crate::helpers::chat_body("fake-gpt");
    chat["stream"] = json!(true);
    let response = app.post_chat(&chat).await;
    assert_eq!(response.status(), 200);
    let chunks = crate::helpers::parse_chat_sse(&response.text().await.expect("body"));
    assert_eq!(
        chunks.last().expect("chunks")["error"]["type"],
        "server_error",
        "{chunks:?}"
    );

    assert_untouched(&app).await;
    let records = app.usage_records().await;
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|record| record.status.as_str() == "failed" && record.cost.nanos() == 0),
        "{records:?}"
    );
}

/// #24 item 1: a client that leaves a stream long before its end, whose drain bound cuts the
/// upstream short, pays for what was generated — not the one output token Anthropic's
/// `message_start` reports. Here 400 bytes of text in ten deltas of ten tokens' worth each,
/// one every 400 ms; the client leaves after three deltas and the drain lasts 1 s.
#[tokio::test]
async fn a_client_that_leaves_a_long_stream_pays_for_what_passed_through() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        gateway_config: "disconnect_drain_seconds = 1",
        ..crate::helpers::Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "word ".repeat(80),
        input_tokens: 7,
        output_tokens: 200,
        event_delay: Duration::from_millis(400),
        ..Reply::default()
    }));
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(200);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    while received.matches("content_block_delta").count() < 6 {
        let chunk = stream.next().await.expect("a chunk").expect("bytes");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let delivered_text_bytes: usize = parse_sse(&received)
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| data["delta"]["text"].as_str().expect("text").len())
        .sum();
    assert!(
        delivered_text_bytes >= 120,
        "three deltas of 40 bytes were delivered"
    );
    app.wait_for_settlement().await;

    let records = app.usage_records().await;
    let record = &records[0];
    assert_eq!(record.status.as_str(), "client_disconnected");
    assert_eq!(record.error_type.as_deref(), Some("drain_bound_reached"));
    assert_eq!(record.usage.input_tokens, 7);
    let delivered_tokens = u64::try_from(delivered_text_bytes.div_ceil(4)).expect("small");
    assert!(
        record.usage.output_tokens >= delivered_tokens && record.usage.output_tokens < 200,
        "charged {} output tokens: at least the {delivered_tokens} delivered, less than the \
         whole answer (the drain was cut)",
        record.usage.output_tokens
    );
    let output_tokens = i64::try_from(record.usage.output_tokens).expect("small");
    let cost = sonnet_cost(7, output_tokens);
    assert_eq!(record.cost.nanos(), cost);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
    app.assert_ledger_clean().await;
}

/// A provider on the main fake upstream with room for long streams (the default test
/// provider's total timeout is 5 s).
const PATIENT: &str = r#"
    [providers.patient]
    kind = "anthropic"
    base_url = "{fake}"
    connect_timeout_seconds = 2
    idle_timeout_seconds = 2
    request_timeout_seconds = 30
    [models.patient-sonnet]
    class = "sonnet"
    provider = "patient"
    upstream_model = "claude-sonnet-4-6"
    input = "3"
    output = "15"
"#;

/// #24 item 2: a stream that outlives `reservation_ttl_seconds` keeps its reservation (the
/// heartbeat extends it at every maintenance pass) and is charged when it ends, instead of
/// being reaped while it runs and then served free. TTL 3 s, a pass every second, a stream
/// of about 7 s.
#[tokio::test]
async fn a_stream_that_outlives_the_reservation_ttl_is_still_charged() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        gateway_config: "disconnect_drain_seconds = 5
            reservation_ttl_seconds = 3
            maintenance_interval_seconds = 1",
        extra_config: PATIENT,
        ..crate::helpers::Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 10,
        output_tokens: 20,
        event_delay: Duration::from_millis(450),
        ..Reply::default()
    }));
    let mut body = message_body("patient-sonnet");
    body["stream"] = json!(true);
    let started = tokio::time::Instant::now();
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "the stream outlived the TTL twice"
    );
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));
    app.wait_for_settlement().await;

    let records = app.usage_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status.as_str(), "succeeded", "not reaped as abandoned");
    let cost = sonnet_cost(10, 20);
    assert_eq!(records[0].cost.nanos(), cost);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
    app.assert_ledger_clean().await;
}

/// Makes the real database refuse every change to a reservation — its settlement, its
/// void, its deadline, and a reservation written already ended (a hold kept in memory, which
/// its settlement writes) — as a full disk does, or lets it take them again. SQLite: a trigger
/// raising "database or disk is full"; PostgreSQL: one raising SQLSTATE 53100 (disk_full).
async fn refuse_settlements(app: &crate::helpers::TestApp, refuse: bool) {
    use sqlx::{Connection, Executor};
    match crate::BACKEND {
        crate::helpers::TestBackend::Sqlite => {
            let url = format!("sqlite://{}", app.config.database_path().display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("connect");
            let statement = if refuse {
                "CREATE TRIGGER disk_full BEFORE UPDATE ON reservations
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;
                 CREATE TRIGGER disk_full_ended BEFORE INSERT ON reservations
                 WHEN NEW.state <> 'pending'
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            } else {
                "DROP TRIGGER disk_full; DROP TRIGGER disk_full_ended"
            };
            connection.execute(statement).await.expect("trigger");
            connection.close().await.expect("close");
        }
        crate::helpers::TestBackend::PostgresRedis => {
            let mut connection = sqlx::PgConnection::connect(&crate::helpers::test_database_url())
                .await
                .expect("connect");
            let schema = &app.config.database.schema;
            let statement = if refuse {
                format!(
                    "CREATE FUNCTION {schema}.disk_full() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN IF TG_OP = 'UPDATE' OR NEW.state <> 'pending' THEN
                     RAISE EXCEPTION 'could not extend file: No space left on device'
                     USING ERRCODE = '53100'; END IF; RETURN NEW; END $$;
                     CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON {schema}.reservations
                     FOR EACH ROW EXECUTE FUNCTION {schema}.disk_full()"
                )
            } else {
                format!("DROP TRIGGER disk_full ON {schema}.reservations; DROP FUNCTION {schema}.disk_full()")
            };
            connection.execute(statement.as_str()).await.expect("trigger");
            connection.close().await.expect("close");
        }
    }
}

/// #24 item 3: when the settlement cannot be written (the disk is full), the client is not
/// told its request ended well — a stream ends in an `api_error` event instead of
/// `message_stop`, a message is a 500 — and the charge is kept in the data directory and
/// written, once, when the database takes writes again, before any reaper could void it.
/// A message whose credit was held in memory (SQLite) is not charged at all (#21).
#[tokio::test]
async fn a_settlement_the_database_refuses_is_an_error_and_is_written_later() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        gateway_config: "disconnect_drain_seconds = 5
            maintenance_interval_seconds = 1",
        ..crate::helpers::Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 10,
        output_tokens: 20,
        ..Reply::default()
    }));
    refuse_settlements(&app, true).await;

    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "api_error");

    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 500);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "api_error");
    // SQLite holds a whole reply's credit in memory: its refused settlement releases it and
    // charges nothing. Where holds are written, it waits as the stream's does.
    let kept = match crate::BACKEND {
        crate::helpers::TestBackend::Sqlite => 1,
        crate::helpers::TestBackend::PostgresRedis => 2,
    };

    // Both charges wait, durably; the reservations stay held (maintenance passes run every
    // second meanwhile, and must neither void them nor fail on them).
    assert_eq!(app.tollgate.pending_settlement_count(), kept);
    let file = app
        .config
        .data_dir
        .join(tollgate_service::PENDING_SETTLEMENTS_FILE);
    assert_eq!(
        std::fs::read_to_string(&file)
            .expect("pending file")
            .lines()
            .count(),
        kept
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, held, spent) = app.balance().await;
    assert!(held > 0 && spent == 0, "held {held}, spent {spent}");

    refuse_settlements(&app, false).await;
    app.wait_for_settlement().await;
    let cost = sonnet_cost(10, 20);
    let kept_cost = i64::try_from(kept).expect("small") * cost;
    assert_eq!(app.balance().await, (starter_nanos() - kept_cost, 0, kept_cost));
    let records = app.usage_records().await;
    assert_eq!(records.len(), kept);
    assert!(
        records
            .iter()
            .all(|record| record.status.as_str() == "succeeded" && record.cost.nanos() == cost),
        "{records:?}"
    );
    assert_eq!(app.tollgate.pending_settlement_count(), 0);
    assert!(!file.exists(), "nothing left pending");
    assert_eq!(app.tollgate.settle_pending().await, 0, "written once");
    assert_eq!(app.balance().await, (starter_nanos() - kept_cost, 0, kept_cost));
    app.assert_ledger_clean().await;
}
