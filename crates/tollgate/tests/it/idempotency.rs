//! `Idempotency-Key` on the control plane (#22), end to end: a mutating Admin API call or
//! Console billing form sent again under its key replays the first answer (marked
//! `Idempotent-Replayed: true`) and changes nothing more; another request under the key is a
//! 422 and a repeat while the first still runs a 409; keys belong to their organization; a
//! 5xx is not kept, so the client may retry; a key lives 24 hours.

use std::sync::Arc;

use serde_json::Value;
use tollgate_core::idempotency::{IdempotencyKey, RequestFingerprint};
use tollgate_service::IdempotentStart;
use tollgate_service::payments::TEST_CARD_OK;

use crate::helpers::{Options, TestApp, TestBackend, spawn_app, spawn_app_with};

/// One answer as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    replayed: bool,
    request_id: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> (String, String) {
        let body = self.json();
        (
            body["error"]["type"].as_str().unwrap_or_default().to_owned(),
            body["error"]["message"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// Sends `body` (JSON text, byte for byte) with `admin_key` and, if given, `key`.
async fn send(
    app: &TestApp,
    admin_key: &str,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("x-api-key", admin_key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let replayed = match header("idempotent-replayed").as_str() {
        "" => false,
        "true" => true,
        other => panic!("Idempotent-Replayed: {other}"),
    };
    let request_id = header("request-id");
    Answer {
        status: response.status().as_u16(),
        replayed,
        request_id,
        body: response.text().await.expect("body"),
    }
}

async fn post(app: &TestApp, path: &str, key: &str, body: &str) -> Answer {
    send(app, &app.admin_key, reqwest::Method::POST, path, Some(key), body).await
}

/// The names of the organization's workspaces but the Default one.
async fn workspace_names(app: &TestApp, org_id: &str) -> Vec<String> {
    let mut names: Vec<String> = app
        .tollgate
        .store()
        .list_workspaces(org_id)
        .await
        .expect("workspaces")
        .into_iter()
        .filter(|workspace| workspace.name != "Default")
        .map(|workspace| workspace.name)
        .collect();
    names.sort();
    names
}

const WORKSPACES: &str = "/v1/organizations/workspaces";

#[tokio::test]
async fn the_same_request_under_its_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let first = post(&app, WORKSPACES, "create-research", r#"{"name":"Research"}"#).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed, "a first answer is not a replay");
    let again = post(&app, WORKSPACES, "create-research", r#"{"name":"Research"}"#).await;
    assert_eq!(again.status, 200);
    assert!(again.replayed);
    assert_eq!(again.body, first.body, "the first answer, byte for byte");
    assert!(again.request_id.starts_with("req_"));
    assert_ne!(
        again.request_id, first.request_id,
        "the replay is a request of its own"
    );
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Research"]);

    // A refusal is an answer too: kept, and replayed with its envelope as first sent.
    let refused = post(&app, WORKSPACES, "again-research", r#"{"name":"Research"}"#).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error().0, "invalid_request_error");
    assert_eq!(refused.json()["request_id"], refused.request_id.as_str());
    let refused_again = post(&app, WORKSPACES, "again-research", r#"{"name":"Research"}"#).await;
    assert_eq!((refused_again.status, refused_again.replayed), (400, true));
    assert_eq!(refused_again.body, refused.body);

    // Without a key, or on a read, nothing is kept.
    let (status, _) = app
        .admin_post(WORKSPACES, serde_json::json!({"name": "Keyless"}))
        .await;
    assert_eq!(status, 200);
    let read = send(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        "/v1/organizations/me",
        Some("create-research"),
        "",
    )
    .await;
    assert_eq!(
        (read.status, read.replayed),
        (200, false),
        "a GET ignores the key"
    );
}

#[tokio::test]
async fn another_request_under_a_used_key_is_refused_with_422() {
    let app = spawn_app().await;
    let first = post(&app, WORKSPACES, "key-1", r#"{"name":"Alpha"}"#).await;
    assert_eq!(first.status, 200);
    for (path, body) in [
        (WORKSPACES, r#"{"name":"Beta"}"#),
        (WORKSPACES, r#"{"name": "Alpha"}"#),
        ("/v1/organizations/api_keys", r#"{"name":"Alpha"}"#),
    ] {
        let other = post(&app, path, "key-1", body).await;
        assert_eq!(other.status, 422, "{path} {body}: {}", other.body);
        assert!(!other.replayed);
        let (kind, message) = other.error();
        assert_eq!(kind, "invalid_request_error");
        assert!(
            message.starts_with(
                "Keys for idempotent requests can only be used with the same parameters they were first used with."
            ),
            "{message}"
        );
        assert_eq!(other.json()["request_id"], other.request_id.as_str());
    }
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Alpha"]);
}

#[tokio::test]
async fn a_key_over_255_characters_is_refused_with_400() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    let refused = post(&app, WORKSPACES, &long, r#"{"name":"Long"}"#).await;
    assert_eq!(refused.status, 400);
    let (kind, message) = refused.error();
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("at most 255 characters"), "{message}");
    let longest = post(&app, WORKSPACES, &"k".repeat(255), r#"{"name":"Long"}"#).await;
    assert_eq!(longest.status, 200);
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Long"]);
}

#[tokio::test]
async fn a_repeat_while_the_first_request_runs_is_refused_with_409() {
    let app = spawn_app().await;
    let body = r#"{"name":"Slow"}"#;
    // The first request, as it stands while its handler runs: its key claimed, no answer.
    let admin = app
        .tollgate
        .authenticate_admin_key(Some(&app.admin_key))
        .await
        .expect("admin");
    let key = IdempotencyKey::parse("slow-1").expect("key");
    let fingerprint = RequestFingerprint::of("POST", WORKSPACES, body.as_bytes());
    let IdempotentStart::Proceed(ticket) = admin
        .claim_idempotency_key(&key, &fingerprint)
        .await
        .expect("claim")
    else {
        panic!("the key is new");
    };
    let repeat = post(&app, WORKSPACES, "slow-1", body).await;
    assert_eq!(repeat.status, 409, "{}", repeat.body);
    let (kind, message) = repeat.error();
    assert_eq!(kind, "invalid_request_error");
    assert_eq!(
        message,
        "A request with this Idempotency-Key is still being processed; retry after it completes."
    );
    assert!(workspace_names(&app, &app.org_id).await.is_empty());

    // Another request under it is still a mismatch, whatever the first one's state.
    let other = post(&app, WORKSPACES, "slow-1", r#"{"name":"Other"}"#).await;
    assert_eq!(other.status, 422);

    // The first gives its key back (as after a 5xx): the retry runs.
    admin
        .finish_idempotent_request(ticket, None)
        .await
        .expect("released");
    let retry = post(&app, WORKSPACES, "slow-1", body).await;
    assert_eq!((retry.status, retry.replayed), (200, false), "{}", retry.body);
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Slow"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_repeats_of_one_key_create_once() {
    let app = Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            post(&app, WORKSPACES, "race-1", r#"{"name":"Racing"}"#).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let firsts: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.status == 200 && !answer.replayed)
        .collect();
    assert_eq!(firsts.len(), 1, "{answers:#?}");
    for answer in &answers {
        match (answer.status, answer.replayed) {
            (200, false) => {}
            (200, true) => assert_eq!(answer.body, firsts[0].body),
            (409, false) => {}
            other => panic!("unexpected answer {other:?}: {}", answer.body),
        }
    }
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Racing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_sent_again_under_its_key_buys_once() {
    let app = Arc::new(spawn_app().await);
    let (available_before, _, _) = app.balance().await;
    let body = format!(r#"{{"amount":"2500","payment_method":"{TEST_CARD_OK}"}}"#);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let app = Arc::clone(&app);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            post(&app, "/v1/organizations/credits/purchases", "buy-25", &body).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let again = post(&app, "/v1/organizations/credits/purchases", "buy-25", &body).await;
    assert_eq!((again.status, again.replayed), (200, true), "{}", again.body);
    assert_eq!(again.json()["status"], "succeeded");
    for answer in &answers {
        assert!(
            matches!((answer.status, answer.replayed), (200, _) | (409, false)),
            "{answer:?}"
        );
        if answer.status == 200 {
            assert_eq!(answer.body, again.body, "every 200 is the one purchase");
        }
    }
    let purchases = app.tollgate.purchases(&app.org_id).await.expect("purchases");
    assert_eq!(purchases.len(), 1, "one purchase");
    assert_eq!(
        purchases[0].idempotency_key, "buy-25",
        "the header is the purchase's own key when the body names none"
    );
    let (available_after, _, _) = app.balance().await;
    assert_eq!(
        available_after - available_before,
        tollgate_core::money::NanoUsd::from_usd(25).nanos(),
        "credited once"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn keys_belong_to_their_organization() {
    let app = spawn_app().await;
    let (organization, other_admin_key) = app.other_organization_admin_key().await;
    let body = r#"{"name":"Shared name"}"#;
    let ours = post(&app, WORKSPACES, "shared-key", body).await;
    let theirs = send(
        &app,
        &other_admin_key,
        reqwest::Method::POST,
        WORKSPACES,
        Some("shared-key"),
        body,
    )
    .await;
    assert_eq!((ours.status, ours.replayed), (200, false));
    assert_eq!(
        (theirs.status, theirs.replayed),
        (200, false),
        "another organization's key of the same text is its own: {}",
        theirs.body
    );
    assert_ne!(ours.json()["id"], theirs.json()["id"]);
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Shared name"]);
    assert_eq!(workspace_names(&app, &organization.id).await, ["Shared name"]);

    // A key refused for lack of a valid admin key claims nothing.
    let unauthenticated = send(
        &app,
        "sk-tg-admin01-nonsense",
        reqwest::Method::POST,
        WORKSPACES,
        Some("unclaimed"),
        body,
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    let first = post(&app, WORKSPACES, "unclaimed", r#"{"name":"Later"}"#).await;
    assert_eq!((first.status, first.replayed), (200, false));
}

/// Runs `sql` on the app's database behind its back.
async fn execute_raw(app: &TestApp, sql: &str) {
    use sqlx::{ConnectOptions, Connection};
    match crate::BACKEND {
        TestBackend::Sqlite => {
            let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.config.database_path())
                .busy_timeout(std::time::Duration::from_secs(5))
                .connect()
                .await
                .expect("SQLite connection");
            sqlx::query(sql).execute(&mut connection).await.expect(sql);
            connection.close().await.expect("closed");
        }
        TestBackend::PostgresRedis => {
            let mut connection = sqlx::PgConnection::connect(&app.config.database.url)
                .await
                .expect("PostgreSQL connection");
            let schema = &app.config.database.schema;
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut connection)
                .await
                .expect("search path");
            sqlx::query(sql).execute(&mut connection).await.expect(sql);
            connection.close().await.expect("closed");
        }
    }
}

#[tokio::test]
async fn a_5xx_is_not_kept_and_the_key_may_be_retried() {
    let app = spawn_app().await;
    let path = "/v1/organizations/alert_destinations";
    let body = r#"{"channel":"email","target":"ops@example.com"}"#;
    // The table the handler writes is gone for a moment: the handler fails on our side.
    execute_raw(
        &app,
        "ALTER TABLE alert_destinations RENAME TO alert_destinations_away",
    )
    .await;
    let failed = post(&app, path, "alert-1", body).await;
    execute_raw(
        &app,
        "ALTER TABLE alert_destinations_away RENAME TO alert_destinations",
    )
    .await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(failed.error().0, "api_error");
    assert!(!failed.replayed);

    let retry = post(&app, path, "alert-1", body).await;
    assert_eq!((retry.status, retry.replayed), (200, false), "{}", retry.body);
    let again = post(&app, path, "alert-1", body).await;
    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(again.body, retry.body);
    let destinations = app
        .tollgate
        .store()
        .alert_destinations(&app.org_id)
        .await
        .expect("destinations");
    assert_eq!(destinations.len(), 1);
}

#[tokio::test]
async fn a_key_expires_after_24_hours() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let first = post(&app, WORKSPACES, "daily", r#"{"name":"Monday"}"#).await;
    assert_eq!(first.status, 200);
    clock.advance(chrono::Duration::hours(23));
    let within = post(&app, WORKSPACES, "daily", r#"{"name":"Tuesday"}"#).await;
    assert_eq!(within.status, 422, "{}", within.body);
    clock.advance(chrono::Duration::hours(1));
    let after = post(&app, WORKSPACES, "daily", r#"{"name":"Tuesday"}"#).await;
    assert_eq!(
        (after.status, after.replayed),
        (200, false),
        "an expired key is as if never used: {}",
        after.body
    );
    assert_eq!(workspace_names(&app, &app.org_id).await, ["Monday", "Tuesday"]);
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(report.idempotency_keys_expired, 0, "the key in use is kept");
}

#[tokio::test]
async fn a_console_purchase_sent_again_under_its_key_buys_once() {
    let app = spawn_app().await;
    let (client, cookie) = app.console_admin_session().await;
    let billing = client
        .get(app.url("/console/billing"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .expect("billing page");
    assert_eq!(billing.status(), 200);
    let html = billing.text().await.expect("html");
    let field = |name: &str| {
        html.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("the form's {name}"))
            .to_owned()
    };
    let (csrf, form_key) = (field("csrf"), field("idempotency_key"));
    let buy = |amount: &'static str| {
        client
            .post(app.url("/console/billing/purchase"))
            .header(reqwest::header::COOKIE, &cookie)
            .header("idempotency-key", "console-buy-1")
            .form(&[
                ("csrf", csrf.as_str()),
                ("idempotency_key", form_key.as_str()),
                ("amount", amount),
                ("card", TEST_CARD_OK),
            ])
            .send()
    };
    let first = buy("10").await.expect("bought");
    assert_eq!(first.status(), 303);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let receipt = first.headers()["location"].to_str().expect("location").to_owned();
    assert!(receipt.starts_with("/console/billing/receipts/"), "{receipt}");

    let again = buy("10").await.expect("sent again");
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], receipt.as_str(), "the same receipt");

    let other = buy("20").await.expect("another amount");
    assert_eq!(other.status(), 422);
    let page = other.text().await.expect("html");
    assert!(
        page.contains("Keys for idempotent requests can only be used with the same parameters"),
        "{page}"
    );
    let purchases = app.tollgate.purchases(&app.org_id).await.expect("purchases");
    assert_eq!(purchases.len(), 1, "one purchase");
}
