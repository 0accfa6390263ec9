//! Body capture per workspace (#17): off by default; on, the request body as received and
//! the reply as delivered (JSON or the stream's SSE text) are kept, redacted before they are
//! written, cut to the cap and marked, read through the Admin API within the organization,
//! and purged by the maintenance loop at the end of their retention (the service's clock).

use serde_json::{Value, json};
use tollgate_service::{CapturedResponseKind, RequestCapture};

use crate::helpers::{Options, TestApp, message_body, spawn_app, spawn_app_with};

async fn capture_of(app: &TestApp, request_id: &str) -> RequestCapture {
    app.wait_for_capture(&app.org_id, request_id).await
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// A request carrying a secret at each documented path, and text that stays.
fn secret_body(stream: bool) -> Value {
    json!({
        "model": "fake-sonnet",
        "max_tokens": 100,
        "stream": stream,
        "system": "secret-system-prompt",
        "metadata": {"user_id": "secret-user"},
        "messages": [
            {"role": "user", "content": "secret-question"},
            {"role": "assistant", "content": [{"type": "text", "text": "secret-answer"}]},
            {"role": "user", "content": "secret-follow-up"},
        ],
    })
}

async fn turn_on(app: &TestApp, settings: Value) -> Value {
    let (status, body) = app
        .admin_post("/v1/organizations/workspaces/default/capture", settings)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Goal: a workspace that never turned capture on keeps nothing, and says so.
#[tokio::test]
async fn capture_is_off_by_default_and_keeps_nothing() {
    let app = spawn_app().await;
    let (status, settings) = app
        .admin_get("/v1/organizations/workspaces/default/capture")
        .await;
    assert_eq!(status, 200);
    assert_eq!(settings["enabled"], false);
    assert_eq!(settings["workspace_id"], Value::Null);
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let _ = response.text().await;
    app.wait_for_settlement().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        app.tollgate
            .store()
            .request_capture(&app.org_id, &id)
            .await
            .expect("read"),
        None
    );
    let (status, body) = app
        .admin_get(&format!("/v1/organizations/requests/{id}/body"))
        .await;
    assert_eq!(status, 404, "{body}");
}

/// Goal: with capture on, the non-streaming request's redacted paths never reach the
/// database (the row itself is read), the rest is kept as received, and the reply is kept
/// exactly as delivered; the Admin API shows the same.
#[tokio::test]
async fn a_captured_reply_is_kept_as_delivered_with_the_request_redacted_before_writing() {
    let app = spawn_app().await;
    let settings = turn_on(
        &app,
        json!({
            "enabled": true,
            "retention_days": 7,
            "redact_paths": ["system", "messages[*].content", "metadata.user_id"],
        }),
    )
    .await;
    assert_eq!(settings["enabled"], true);
    assert_eq!(settings["retention_days"], 7);
    assert_eq!(settings["body_bytes_max"], 65536);

    let response = app.post_messages(&secret_body(false)).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let delivered = response.text().await.expect("body");

    let capture = capture_of(&app, &id).await;
    assert!(
        !capture.request_body.contains("secret"),
        "{}",
        capture.request_body
    );
    let request: Value = serde_json::from_str(&capture.request_body).expect("JSON");
    assert_eq!(request["system"], "[redacted]");
    assert_eq!(request["metadata"]["user_id"], "[redacted]");
    assert_eq!(request["messages"][1]["content"], "[redacted]");
    assert_eq!(request["messages"][1]["role"], "assistant");
    assert_eq!(request["max_tokens"], 100);
    assert_eq!(capture.request_bytes, secret_body(false).to_string().len() as u64);
    assert!(!capture.request_truncated);
    assert_eq!(capture.response_kind, CapturedResponseKind::Json);
    assert_eq!(capture.response_body, delivered);
    assert!(!capture.response_truncated);
    assert_eq!(
        capture.workspace_id,
        app.caller_and_model("fake-sonnet").await.0.workspace_id
    );
    assert_eq!(
        capture.expires_at - capture.captured_at,
        chrono::Duration::days(7)
    );

    let (status, body) = app
        .admin_get(&format!("/v1/organizations/requests/{id}/body"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "request_capture");
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["workspace_id"], Value::Null);
    assert_eq!(body["response_kind"], "json");
    assert_eq!(body["response"]["body"], delivered.as_str());
    assert_eq!(body["request"]["truncated"], false);
    assert!(!body["request"]["body"].as_str().expect("text").contains("secret"));

    // Turned off: nothing more is kept; what was kept stays until it expires.
    turn_on(&app, json!({"enabled": false})).await;
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    let later = request_id(&response);
    let _ = response.text().await;
    app.wait_for_settlement().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let store = app.tollgate.store();
    assert_eq!(
        store.request_capture(&app.org_id, &later).await.expect("read"),
        None
    );
    assert!(
        store
            .request_capture(&app.org_id, &id)
            .await
            .expect("read")
            .is_some()
    );
}

/// Goal: a stream is kept as the SSE text the client received, event by event, with the
/// configured paths of each event's data redacted; over the cap it is cut and marked.
#[tokio::test]
async fn a_captured_stream_is_the_delivered_text_redacted_and_cut_at_the_cap() {
    let app = spawn_app().await;
    turn_on(&app, json!({"enabled": true, "redact_paths": ["delta.text"]})).await;
    let response = app.post_messages(&secret_body(true)).await;
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let delivered = response.text().await.expect("stream");
    let deltas = |text: &str| -> Vec<Value> {
        crate::helpers::parse_sse(text)
            .into_iter()
            .filter(|(name, _)| name == "content_block_delta")
            .map(|(_, data)| data["delta"]["text"].clone())
            .collect()
    };
    assert!(deltas(&delivered).len() > 1, "{delivered}");
    let capture = capture_of(&app, &id).await;
    assert_eq!(capture.response_kind, CapturedResponseKind::EventStream);
    assert_eq!(capture.response_bytes, delivered.len() as u64);
    assert!(!capture.response_truncated);
    assert!(capture.response_body.contains("event: message_stop"));
    let kept = deltas(&capture.response_body);
    assert_eq!(kept.len(), deltas(&delivered).len());
    assert!(
        kept.iter().all(|text| text == "[redacted]"),
        "{}",
        capture.response_body
    );
    // Only the deltas' text went: every event is still there, in order.
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("event: ").map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&capture.response_body), names(&delivered));

    turn_on(&app, json!({"enabled": true, "body_bytes_max": 100})).await;
    let response = app.post_messages(&secret_body(true)).await;
    let id = request_id(&response);
    let delivered = response.text().await.expect("stream");
    let capture = capture_of(&app, &id).await;
    assert!(capture.response_truncated && capture.request_truncated);
    assert_eq!(capture.response_body, delivered[..100]);
    assert_eq!(capture.response_bytes, delivered.len() as u64);
    assert_eq!(capture.request_body, secret_body(true).to_string()[..100]);
    let (_, body) = app
        .admin_get(&format!("/v1/organizations/requests/{id}/body"))
        .await;
    assert_eq!(body["response"]["truncated"], true);
    assert_eq!(body["response_kind"], "event_stream");
}

/// Goal: the maintenance loop deletes a capture once its retention has passed by the
/// service's clock, not before; lowering the retention applies to what is already kept.
#[tokio::test]
async fn captures_are_purged_at_the_end_of_their_retention() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    turn_on(&app, json!({"enabled": true, "retention_days": 3})).await;
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    let id = request_id(&response);
    let _ = response.text().await;
    capture_of(&app, &id).await;
    let store = app.tollgate.store();

    clock.advance(chrono::Duration::days(1));
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(report.captures_purged, 0);
    assert!(
        store
            .request_capture(&app.org_id, &id)
            .await
            .expect("read")
            .is_some()
    );

    // Now two days old: a retention of one day ends it at the next pass.
    clock.advance(chrono::Duration::days(1));
    turn_on(&app, json!({"enabled": true, "retention_days": 1})).await;
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert!(report.captures_purged <= 1, "{report:?}");
    assert_eq!(store.request_capture(&app.org_id, &id).await.expect("read"), None);
}

/// Goal: settings an admin gets wrong are refused with the reason, and change nothing.
#[tokio::test]
async fn bad_capture_settings_are_refused() {
    let app = spawn_app().await;
    for bad in [
        json!({"enabled": true, "retention_days": 0}),
        json!({"enabled": true, "body_bytes_max": 0}),
        json!({"enabled": true, "redact_paths": ["messages[x]"]}),
        json!({"enabled": true, "redact_paths": [""]}),
    ] {
        let (status, body) = app
            .admin_post("/v1/organizations/workspaces/default/capture", bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, settings) = app
        .admin_get("/v1/organizations/workspaces/default/capture")
        .await;
    assert_eq!(settings["enabled"], false);
}

/// Goal: an organization admin turns capture on in the Console, finds the request in the
/// log by its workspace and day, and reads its redacted bodies on the request's page.
#[tokio::test]
async fn the_console_sets_capture_and_shows_a_requests_bodies() {
    let app = spawn_app().await;
    let (client, cookie) = app.console_admin_session().await;
    let get = |path: String| {
        let request = client.get(app.url(&path)).header("cookie", &cookie);
        async move {
            let response = request.send().await.expect("page");
            (response.status().as_u16(), response.text().await.expect("html"))
        }
    };
    let (status, log) = get("/console/requests".to_owned()).await;
    assert_eq!(status, 200);
    assert!(
        log.contains("Body capture"),
        "an admin sees the Default workspace's form"
    );
    let csrf = log
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field")
        .to_owned();
    let saved = client
        .post(app.url("/console/workspaces/default/capture"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("enabled", "on"),
            ("retention_days", "2"),
            ("body_bytes_max", "4096"),
            ("redact_paths", "system\nmessages[*].content\n"),
        ])
        .send()
        .await
        .expect("saved");
    assert_eq!(saved.status(), 303);
    let (_, settings) = app
        .admin_get("/v1/organizations/workspaces/default/capture")
        .await;
    assert_eq!(settings["redact_paths"], json!(["system", "messages[*].content"]));
    assert_eq!(settings["retention_days"], 2);

    let response = app.post_messages(&secret_body(false)).await;
    let id = request_id(&response);
    let _ = response.text().await;
    let captured = capture_of(&app, &id).await;
    let workspace = app.caller_and_model("fake-sonnet").await.0.workspace_id;
    let today = captured.captured_at.format("%Y-%m-%d").to_string();
    let (status, found) = get(format!(
        "/console/requests?workspace={workspace}&from={today}&to={today}"
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        found.contains(&format!("href=\"/console/requests/{id}\"")),
        "{found}"
    );
    let (_, elsewhere) = get("/console/requests?workspace=wrkspc_none".to_owned()).await;
    assert!(!elsewhere.contains(&id));
    let (status, detail) = get(format!("/console/requests/{id}")).await;
    assert_eq!(status, 200);
    assert!(detail.contains("id=\"request-body\""), "{detail}");
    assert!(detail.contains("[redacted]"));
    assert!(!detail.contains("secret-question"));
    assert!(
        detail.contains("Hello from the fake upstream."),
        "the reply as delivered"
    );
    let (status, _) = get("/console/requests/req_unknown".to_owned()).await;
    assert_eq!(status, 404);
}
