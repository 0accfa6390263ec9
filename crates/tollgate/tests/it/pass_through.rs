//! A gateway forwards open lists (#23): what a client sends reaches an Anthropic upstream
//! as it came (headers, betas, body fields, message shapes, the query), an upstream's
//! refusal reaches the client as the upstream wrote it (status, wording, retry and
//! rate-limit headers), and only what billing and routing need is checked. One test per
//! rule, against the fake upstream.

use serde_json::{Value, json};
use tollgate_testkit::Behavior;

use crate::helpers::{TestApp, message_body, spawn_app, starter_nanos};

async fn post_with(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/messages?beta=true"))
        .header("x-api-key", &app.api_key)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

/// Headers are an open list: every one but the client's credentials and the connection's
/// own reaches the upstream as sent, `anthropic-version` and `anthropic-beta` included,
/// whatever their values (the newest SDKs send `2026-10-21`).
#[tokio::test]
async fn client_headers_reach_the_upstream_as_sent() {
    let app = spawn_app().await;
    let response = post_with(
        &app,
        &message_body("fake-sonnet"),
        &[
            ("anthropic-version", "2026-10-21"),
            ("anthropic-beta", "some-future-beta-2027-01-01,another-beta"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("x-claude-code-session-id", "session-1"),
            ("x-unknown-header", "kept"),
            ("user-agent", "claude-cli/9.9.9 (external, cli)"),
            ("cookie", "secret=1"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let requests = app.fake.requests();
    let received = requests.last().expect("the upstream was called");
    for (name, value) in [
        ("anthropic-version", "2026-10-21"),
        ("anthropic-beta", "some-future-beta-2027-01-01,another-beta"),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("x-claude-code-session-id", "session-1"),
        ("x-unknown-header", "kept"),
        ("user-agent", "claude-cli/9.9.9 (external, cli)"),
        ("x-api-key", "provider-secret"),
    ] {
        assert_eq!(received.header(name), Some(value), "{name}");
    }
    assert_eq!(received.header("cookie"), None);
    assert_eq!(received.query.as_deref(), Some("beta=true"));
}

/// Body fields and message shapes pass untouched: a mid-conversation `system` message, block
/// types and fields the gateway has never heard of, unknown top-level fields.
#[tokio::test]
async fn bodies_reach_the_upstream_byte_for_byte() {
    let app = spawn_app().await;
    let body = json!({
        "model": "fake-sonnet",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "user", "content": [{"type": "future_block", "payload": {"x": 1}}]},
        ],
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
        "a_field_from_2027": [1, 2, 3],
    });
    let response = post_with(
        &app,
        &body,
        &[("anthropic-beta", "mid-conversation-system-2026-04-07")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let requests = app.fake.requests();
    let received = requests.last().expect("the upstream was called");
    // Only the model id changes: `fake-sonnet` is served as `claude-sonnet-4-6` upstream.
    let mut expected = body;
    expected["model"] = json!("claude-sonnet-4-6");
    assert_eq!(received.body, expected);
}

/// An upstream 429 reaches the client as written, with its `retry-after` and rate-limit
/// headers and `x-should-retry: true` (it sent none), but nothing else of the provider's
/// answer (its organization id). A 529 is retryable too (#23 item 3).
#[tokio::test]
async fn upstream_429_and_529_keep_their_wording_and_retry_headers() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Status(429));
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["x-should-retry"], "true");
    assert_eq!(headers["anthropic-ratelimit-requests-limit"], "50");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    assert!(headers.get("anthropic-organization-id").is_none());
    assert!(headers.get("request-id").is_some());
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(
        envelope["error"]["message"],
        "Number of requests has exceeded your rate limit."
    );
    assert!(
        envelope["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_fake")),
        "the upstream's body, byte for byte: {envelope}"
    );

    app.fake.set_behavior(Behavior::Status(529));
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 529);
    assert_eq!(response.headers()["x-should-retry"], "true");
    app.wait_for_settlement().await;
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "refusals cost nothing"
    );
}

/// The operator's provider account is not the user's: a provider that refuses the
/// gateway's key, or whose credit there ran out, is a 502 that says so, never the user's
/// "credit balance is too low" or "invalid x-api-key" (#23 item 4).
#[tokio::test]
async fn the_providers_account_problems_are_not_the_users() {
    let app = spawn_app().await;
    let cases = [
        Behavior::Status(401),
        Behavior::Status(403),
        Behavior::Refuse {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            message: "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.".to_owned(),
        },
    ];
    for behavior in cases {
        let label = format!("{behavior:?}");
        app.fake.set_behavior(behavior);
        for stream in [false, true] {
            let mut body = message_body("fake-sonnet");
            body["stream"] = json!(stream);
            let response = app.post_messages(&body).await;
            assert_eq!(response.status(), 502, "{label}");
            assert_eq!(response.headers()["x-should-retry"], "false", "{label}");
            let envelope: Value = response.json().await.expect("json");
            assert_eq!(envelope["error"]["type"], "api_error", "{label}");
            let message = envelope["error"]["message"].as_str().expect("message");
            assert!(message.contains("needs attention"), "{label}: {message}");
            assert!(!message.contains("credit balance"), "{label}: {message}");
        }
    }
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
}

/// A second deployment serves a request whose first deployment's account is refused.
#[tokio::test]
async fn a_refused_provider_account_fails_over() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra_fakes: 1,
        extra_config: r#"
            [providers.second]
            kind = "anthropic"
            base_url = "{fake0}"
            [models.two-accounts]
            class = "sonnet"
            input = "3"
            output = "15"
            [[models.two-accounts.deployments]]
            provider = "fake"
            upstream_model = "claude-sonnet-4-6"
            priority = 0
            [[models.two-accounts.deployments]]
            provider = "second"
            upstream_model = "claude-sonnet-4-6"
            priority = 1
        "#,
        ..crate::helpers::Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Status(401));
    let response = app.post_messages(&message_body("two-accounts")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.extra_fakes[0].request_count(), 1);
}

/// A key sent as `Authorization: Bearer` is named as a bearer token when refused, and the
/// scheme's name is case-insensitive (#23 item 6).
#[tokio::test]
async fn a_bad_bearer_key_is_not_called_an_x_api_key() {
    let app = spawn_app().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = app
            .client
            .post(app.url("/v1/messages"))
            .header("authorization", format!("{scheme} sk-ant-api03-not-ours"))
            .json(&message_body("claude-sonnet-4-6"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
        let envelope: Value = response.json().await.expect("json");
        let message = envelope["error"]["message"].as_str().expect("message");
        assert!(message.starts_with("Invalid bearer token"), "{scheme}: {message}");
        assert!(!message.contains("x-api-key"), "{scheme}: {message}");
    }
    let good = app
        .client
        .post(app.url("/v1/messages"))
        .header("authorization", format!("BEARER {}", app.api_key))
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(good.status(), 200);
}

/// Model discovery as Claude Code does it: `HEAD /`, then `GET /v1/models?limit=1000` with
/// either credential, in Anthropic's shape with the fields the newer SDKs declare; an
/// alias answers under its own id (#23 items 2 and 8).
#[tokio::test]
async fn models_are_discovered_as_clients_expect() {
    let app = spawn_app().await;
    let head = app.client.head(app.url("/")).send().await.expect("sent");
    assert_eq!(head.status(), 200);

    for auth in ["x-api-key", "bearer"] {
        let mut request = app
            .client
            .get(app.url("/v1/models?limit=1000"))
            .header("anthropic-version", "2023-06-01");
        request = if auth == "x-api-key" {
            request.header("x-api-key", &app.api_key)
        } else {
            request.bearer_auth(&app.api_key)
        };
        let list: Value = request.send().await.expect("sent").json().await.expect("json");
        let sonnet = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|model| model["id"] == "claude-sonnet-4-6")
            .expect("listed");
        assert_eq!(sonnet["type"], "model", "{auth}");
        assert_eq!(sonnet["max_tokens"], 64_000, "{auth}");
        assert_eq!(sonnet["max_input_tokens"], 200_000, "{auth}");
        assert_eq!(sonnet["lifecycle"], "active", "{auth}");
        assert_eq!(sonnet["line"], "sonnet", "{auth}");
        assert_eq!(list["has_more"], false);
    }

    let alias: Value = app
        .client
        .get(app.url("/v1/models/claude-opus-4-8"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(alias["id"], "claude-opus-4-8", "{alias}");
}

/// A `max_tokens` above the model's limit is refused in the provider's words, not
/// reported as a balance too low (#24).
#[tokio::test]
async fn a_huge_max_tokens_names_the_models_limit() {
    let app = spawn_app().await;
    let mut body = message_body("claude-sonnet-4-6");
    body["max_tokens"] = json!(10_000_000);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(
        envelope["error"]["message"],
        "max_tokens: 10000000 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-6"
    );
}

/// Content as nested arrays is no shape the API defines: refused before any model answers
/// (and bills) it (#24).
#[tokio::test]
async fn content_of_a_shape_the_api_does_not_define_is_refused_uncharged() {
    let app = spawn_app().await;
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [["nested", "arrays"]]}],
    });
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("messages.0.content.0:")),
        "{envelope}"
    );
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    assert!(app.usage_records().await.is_empty());
}
