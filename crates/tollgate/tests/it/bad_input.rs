//! Bad input gets the right status, error type and an actionable message, and leaves
//! every balance unchanged.

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, message_body, spawn_app, spawn_app_with, starter_nanos};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    assert!(
        response.headers().get("request-id").is_some(),
        "{path}: request-id on errors too"
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Name, method, path, key, body; expected status, error type and a part of the message.
type Case<'a> = (
    &'a str,
    reqwest::Method,
    &'a str,
    Option<&'a str>,
    Option<String>,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_costs_nothing() {
    let app = spawn_app().await;
    let valid = message_body("claude-sonnet-4-6").to_string();
    let well_formed_unknown =
        tollgate_core::keys::WellFormedKey::generate(tollgate_core::keys::KeyKind::Api, [1; 32]);
    let mut typo = app.api_key.clone();
    typo.replace_range(20..21, if &typo[20..21] == "a" { "b" } else { "a" });
    let post = reqwest::Method::POST;
    let key = Some(app.api_key.as_str());
    let cases: Vec<Case> = vec![
        ("no key", post.clone(), "/v1/messages", None, Some(valid.clone()), 401, "authentication_error", "x-api-key header is required"),
        ("foreign key", post.clone(), "/v1/messages", Some("sk-ant-api03-xyz"), Some(valid.clone()), 401, "authentication_error", "invalid x-api-key"),
        ("mistyped key", post.clone(), "/v1/messages", Some(&typo), Some(valid.clone()), 401, "authentication_error", "checksum"),
        ("unknown key", post.clone(), "/v1/messages", Some(well_formed_unknown.expose_secret()), Some(valid.clone()), 401, "authentication_error", "invalid x-api-key"),
        ("admin key", post.clone(), "/v1/messages", Some(&app.admin_key), Some(valid.clone()), 403, "permission_error", "admin key"),
        ("malformed json", post.clone(), "/v1/messages", key, Some("{\"model\":".into()), 400, "invalid_request_error", "not valid JSON"),
        ("no model", post.clone(), "/v1/messages", key, Some(json!({"max_tokens": 5, "messages": []}).to_string()), 400, "invalid_request_error", "model: Field required"),
        ("no max_tokens", post.clone(), "/v1/messages", key, Some(json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error", "max_tokens"),
        ("zero max_tokens", post.clone(), "/v1/messages", key, Some(json!({"model": "claude-sonnet-4-6", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error", "max_tokens"),
        ("no messages", post.clone(), "/v1/messages", key, Some(json!({"model": "claude-sonnet-4-6", "max_tokens": 5}).to_string()), 400, "invalid_request_error", "messages: Field required"),
        ("bad role", post.clone(), "/v1/messages", key, Some(json!({"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}).to_string()), 400, "invalid_request_error", "messages.0.role"),
        ("unknown model", post.clone(), "/v1/messages", key, Some(message_body("gpt-unknown").to_string()), 404, "not_found_error", "model: gpt-unknown"),
        ("wrong method", reqwest::Method::GET, "/v1/messages", key, None, 405, "invalid_request_error", "method"),
        ("wrong path", post.clone(), "/v1/messagez", key, Some(valid.clone()), 404, "not_found_error", "no endpoint"),
        ("count_tokens without model", post.clone(), "/v1/messages/count_tokens", key, Some(json!({"messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error", "model"),
        ("unknown model id", reqwest::Method::GET, "/v1/models/nope", key, None, 404, "not_found_error", "model: nope"),
        ("models limit", reqwest::Method::GET, "/v1/models?limit=0", key, None, 400, "invalid_request_error", "limit"),
    ];
    for (name, method, path, key, body, status, kind, message) in cases {
        let (got_status, envelope) = send(&app, method, path, key, body).await;
        assert_eq!(got_status, status, "{name}: {envelope}");
        assert_eq!(envelope["type"], "error", "{name}");
        assert_eq!(envelope["error"]["type"], kind, "{name}: {envelope}");
        let text = envelope["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{name}: '{text}' should mention '{message}'"
        );
    }
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    assert_eq!(app.fake.request_count(), 0, "nothing reached the upstream");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_the_cache_ttl() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_messages(&message_body("claude-haiku-4-5"))
            .await
            .status(),
        200
    );
    let keys = app
        .tollgate
        .keys(&app.org_id, tollgate_core::keys::KeyKind::Api, None)
        .await
        .expect("keys");
    app.tollgate
        .set_key_status(&keys[0].id, tollgate_service::KeyStatus::Archived)
        .await
        .expect("revoked");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let response = app.post_messages(&message_body("claude-haiku-4-5")).await;
    assert_eq!(response.status(), 401);
    let envelope: Value = response.json().await.expect("json");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .expect("message")
            .contains("archived")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_request_too_large() {
    let app = spawn_app_with(Options {
        extra_config: "",
        ..Options::default()
    })
    .await;
    let limit = app.config.gateway.max_body_bytes;
    let mut body = message_body("claude-sonnet-4-6");
    body["messages"][0]["content"] = json!("x".repeat(limit));
    let (status, envelope) = send(
        &app,
        reqwest::Method::POST,
        "/v1/messages",
        Some(&app.api_key),
        Some(body.to_string()),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(envelope["error"]["type"], "request_too_large");
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
}
