//! Routing and failover across deployments: a model served by a primary and a backup
//! upstream. Before any byte reached the client, a connection failure, a 5xx, a 529 or a
//! stream that opens with an overloaded error moves the request to the next deployment;
//! after bytes were sent it never does. Whatever happens, one client request is charged at
//! most once, at the prices of the deployment that answered, and a failing deployment is
//! passed over until its cooldown (on the service's clock) ends.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{Options, TestApp, chat_body, message_body, parse_sse, spawn_app_with, starter_nanos};

/// `routed`: the primary (`{fake0}`, Anthropic's API, Sonnet prices) first, the backup
/// (`{fake1}`, an OpenAI-compatible server at its own prices) second.
const ROUTED: &str = r#"
    [providers.primary]
    kind = "anthropic"
    base_url = "{fake0}"
    connect_timeout_seconds = 2
    idle_timeout_seconds = 1
    request_timeout_seconds = 5
    cooldown_seconds = 30
    [providers.backup]
    kind = "openai"
    base_url = "{fake1}/v1"
    connect_timeout_seconds = 2
    idle_timeout_seconds = 1
    request_timeout_seconds = 5
    [providers.nowhere]
    kind = "anthropic"
    base_url = "{dead}"
    connect_timeout_seconds = 1
    [models.routed]
    class = "sonnet"
    input = "3"
    output = "15"
    [[models.routed.deployments]]
    provider = "primary"
    upstream_model = "claude-sonnet-4-6"
    [[models.routed.deployments]]
    provider = "backup"
    upstream_model = "gpt-4o"
    priority = 1
    input = "1"
    output = "2"
    [models.unreachable-first]
    class = "sonnet"
    input = "3"
    output = "15"
    [[models.unreachable-first.deployments]]
    provider = "nowhere"
    [[models.unreachable-first.deployments]]
    provider = "primary"
    priority = 1
"#;

fn reply() -> Reply {
    Reply {
        text: "Served.".into(),
        input_tokens: 1_000,
        output_tokens: 100,
        ..Reply::default()
    }
}

/// 1,000 input and 100 output tokens at the primary's ($3/$15) or the backup's ($1/$2) prices.
const PRIMARY_COST: i64 = 1_000 * 3_000 + 100 * 15_000;
const BACKUP_COST: i64 = 1_000 * 1_000 + 100 * 2_000;

async fn spawn_routed(manual_clock: bool) -> TestApp {
    let app = spawn_app_with(Options {
        extra_config: ROUTED,
        extra_fakes: 2,
        manual_clock,
        ..Options::default()
    })
    .await;
    app.extra_fakes[0].set_behavior(Behavior::Ok(reply()));
    app.extra_fakes[1].set_behavior(Behavior::Ok(reply()));
    app
}

fn requests(app: &TestApp) -> (usize, usize) {
    (
        app.extra_fakes[0].request_count(),
        app.extra_fakes[1].request_count(),
    )
}

async fn spent(app: &TestApp) -> i64 {
    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    assert_eq!((held, available + spent), (0, starter_nanos()));
    spent
}

async fn records(app: &TestApp) -> Vec<(String, i64)> {
    app.tollgate
        .store()
        .usage_records(&app.org_id)
        .await
        .expect("records")
        .into_iter()
        .map(|record| (record.status.as_str().to_owned(), record.cost.nanos()))
        .collect()
}

#[tokio::test]
async fn each_failure_before_any_byte_moves_to_the_backup_and_charges_once() {
    let failures = [
        ("529", Behavior::Status(529)),
        ("500", Behavior::Status(500)),
        ("503", Behavior::Status(503)),
        ("hang-up", Behavior::Hangup),
        ("stream opens overloaded", Behavior::MidStreamError { deltas: 0 }),
    ];
    for (name, failure) in failures {
        for stream in [false, true] {
            let app = spawn_routed(false).await;
            app.extra_fakes[0].set_behavior(failure.clone());
            let mut body = message_body("routed");
            body["stream"] = json!(stream);
            let response = app.post_messages(&body).await;
            assert_eq!(response.status(), 200, "{name}, stream {stream}");
            if stream {
                let events = parse_sse(&response.text().await.expect("body"));
                assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));
                assert!(
                    events.iter().all(|(name, _)| name != "error"),
                    "{name}: {events:?}"
                );
            } else {
                let message: Value = response.json().await.expect("json");
                assert_eq!(message["content"][0]["text"], "Served.", "{name}");
            }
            assert_eq!(requests(&app), (1, 1), "{name}, stream {stream}: one try each");
            assert_eq!(
                spent(&app).await,
                BACKUP_COST,
                "{name}, stream {stream}: charged once, at the backup's prices"
            );
            assert_eq!(records(&app).await, [("succeeded".to_owned(), BACKUP_COST)]);
            app.assert_ledger_clean().await;
        }
    }
}

#[tokio::test]
async fn an_unreachable_deployment_fails_over() {
    let app = spawn_routed(false).await;
    let response = app.post_chat(&chat_body("unreachable-first")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(requests(&app), (1, 0));
    assert_eq!(spent(&app).await, PRIMARY_COST);
}

#[tokio::test]
async fn client_errors_and_failures_after_the_first_byte_never_fail_over() {
    let app = spawn_routed(false).await;
    app.extra_fakes[0].set_behavior(Behavior::Status(400));
    let refused = app.post_messages(&message_body("routed")).await;
    assert_eq!(refused.status(), 400, "another deployment would refuse it too");
    assert_eq!(requests(&app), (1, 0));

    app.extra_fakes[0].set_behavior(Behavior::MidStreamError { deltas: 2 });
    let mut body = message_body("routed");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200, "the stream had started");
    let events = parse_sse(&response.text().await.expect("body"));
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("error"));
    assert_eq!(requests(&app), (2, 0), "bytes were sent: no second try");
    assert_eq!(spent(&app).await, 0, "failed requests are not charged");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn when_every_deployment_fails_the_last_error_is_shown_uncharged() {
    let app = spawn_routed(false).await;
    app.extra_fakes[0].set_behavior(Behavior::Status(529));
    app.extra_fakes[1].set_behavior(Behavior::Status(500));
    let response = app.post_messages(&message_body("routed")).await;
    assert_eq!(response.status(), 500);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "api_error");
    let chat = app.post_chat(&chat_body("routed")).await;
    assert_eq!(chat.status(), 500);
    let envelope: Value = chat.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "server_error");
    assert_eq!(spent(&app).await, 0);
    assert_eq!(
        records(&app).await,
        [("failed".to_owned(), 0), ("failed".to_owned(), 0)],
        "one usage record per client request, not per try"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_failing_deployment_cools_down_on_the_service_clock() {
    let app = spawn_routed(true).await;
    let clock = app.clock.clone().expect("manual clock");
    app.extra_fakes[0].push_behavior(Behavior::Status(529));
    assert_eq!(app.post_messages(&message_body("routed")).await.status(), 200);
    assert_eq!(requests(&app), (1, 1));

    // Cooling: the primary is passed over although it would answer now.
    assert_eq!(app.post_messages(&message_body("routed")).await.status(), 200);
    assert_eq!(requests(&app), (1, 2));
    clock.advance(chrono::Duration::seconds(29));
    assert_eq!(app.post_chat(&chat_body("routed")).await.status(), 200);
    assert_eq!(requests(&app), (1, 3));

    // Cooled down: the primary is first again.
    clock.advance(chrono::Duration::seconds(2));
    assert_eq!(app.post_messages(&message_body("routed")).await.status(), 200);
    assert_eq!(requests(&app), (2, 3));
    assert_eq!(spent(&app).await, 3 * BACKUP_COST + PRIMARY_COST);
    app.assert_ledger_clean().await;
}

/// Goal (#17): after a failover, the request log shows the deployment that answered and
/// each failed attempt with its deployment and error, in the Admin API and on the
/// Console's request page; a request that needed no failover shows its one deployment.
#[tokio::test]
async fn the_request_log_shows_the_deployment_and_the_failed_attempts_after_a_failover() {
    let app = spawn_routed(false).await;
    app.extra_fakes[0].push_behavior(Behavior::Status(529));
    let failed_over = app.post_messages(&message_body("routed")).await;
    assert_eq!(failed_over.status(), 200);
    let failed_over_id = failed_over.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let _ = failed_over.text().await;
    app.wait_for_settlement().await;

    let (status, log) = app
        .admin_get(&format!("/v1/organizations/requests?request_id={failed_over_id}"))
        .await;
    assert_eq!(status, 200, "{log}");
    let entry = &log["data"][0];
    assert_eq!(entry["upstream_deployment"], "backup/gpt-4o", "{entry}");
    assert_eq!(entry["failed_attempts_count"], 1);
    assert_eq!(
        entry["upstream_attempts"],
        json!([
            {"deployment": "primary/claude-sonnet-4-6", "error": "overloaded (529)"},
            {"deployment": "backup/gpt-4o", "error": null},
        ])
    );

    // The primary cools down; the next request goes straight to the backup.
    assert_eq!(app.post_messages(&message_body("routed")).await.status(), 200);
    app.wait_for_settlement().await;
    let (_, log) = app.admin_get("/v1/organizations/requests?limit=1").await;
    let entry = &log["data"][0];
    assert_eq!(entry["upstream_deployment"], "backup/gpt-4o");
    assert_eq!(entry["failed_attempts_count"], 0);
    assert_eq!(entry["upstream_attempts"].as_array().map(Vec::len), Some(1));

    let (client, cookie) = app.console_admin_session().await;
    let detail = client
        .get(app.url(&format!("/console/requests/{failed_over_id}")))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(detail.status(), 200);
    let detail = detail.text().await.expect("html");
    let deployment = detail
        .split("id=\"deployment\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next());
    assert_eq!(deployment, Some("backup/gpt-4o"), "{detail}");
    assert!(
        detail.contains("<code>primary/claude-sonnet-4-6</code>: overloaded (529)"),
        "{detail}"
    );
}
