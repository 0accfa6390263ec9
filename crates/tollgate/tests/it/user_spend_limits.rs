//! Per-user monthly spend limits end to end (#19): a workspace's limit on what each of its
//! users spends through their personal keys stops the user who runs away, not the team;
//! it is set and read with the workspace's other limits (Admin API), never above the
//! workspace's own limit, and every change is audited.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate_core::money::NanoUsd;
use tollgate_core::roles::OrgRole;
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{TestApp, chat_body, message_body, spawn_app};

const PER_USER_WORDS: &str = "You have reached your workspace's per-user monthly spend limit.";

/// Adds a user to the app's organization (the operator's way); their id.
async fn add_user(app: &TestApp, email: &str) -> String {
    let organization = app.tollgate.organization_named("Default").await.expect("org");
    app.tollgate
        .operator_of(&organization, "test")
        .add_user(email, "Dev Eloper", OrgRole::Developer)
        .await
        .expect("user added")
        .id
}

/// A key in `workspace_id` through the Admin API (`user_id`: a personal key): (id, secret).
async fn create_key(app: &TestApp, workspace_id: &str, user_id: Option<&str>) -> (String, String) {
    let mut body = json!({"name": "a key", "workspace_id": workspace_id});
    if let Some(user_id) = user_id {
        body["user_id"] = json!(user_id);
    }
    let (status, created) = app.admin_post("/v1/organizations/api_keys", body).await;
    assert_eq!(status, 200, "{created}");
    (
        created["id"].as_str().expect("id").to_owned(),
        created["api_key_secret"].as_str().expect("secret").to_owned(),
    )
}

/// `POST path` with `key` as each surface's clients send it.
async fn call(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let request = app.client.post(app.url(path)).json(body);
    let request = if path.starts_with("/v1/messages") {
        request
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else {
        request.bearer_auth(key)
    };
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn set_limits(app: &TestApp, workspace_id: &str, body: Value) -> (u16, Value) {
    app.admin_post(
        &format!("/v1/organizations/workspaces/{workspace_id}/limits"),
        body,
    )
    .await
}

/// Goal: the per-user limit is set and read with the workspace's limits, may not exceed
/// the workspace's own limit (nor, without one, the organization's), and each change is
/// in the audit log.
#[tokio::test]
async fn a_per_user_limit_is_set_with_the_workspaces_limits_never_above_them_and_audited() {
    let app = spawn_app().await;
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, "team")
        .await
        .expect("workspace");
    let (status, refused) = set_limits(
        &app,
        &workspace.id,
        json!({"spend_limit_amount": "100", "user_spend_limit_amount": "100.5"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("per-user spend limit cannot exceed the workspace's limit"),
        "{message}"
    );
    let (status, set) = set_limits(
        &app,
        &workspace.id,
        json!({"spend_limit_amount": "100", "user_spend_limit_amount": "25"}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["user_spend_limit_amount"], "25.00");
    let (status, read) = app
        .admin_get(&format!("/v1/organizations/workspaces/{}/limits", workspace.id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&read["spend_limit_amount"], &read["user_spend_limit_amount"]),
        (&json!("100.00"), &json!("25.00"))
    );
    // With no workspace limit, the organization's binds.
    app.tollgate
        .set_organization_spend_limit(&app.org_id, Some(NanoUsd::from_usd(2)), "test", None)
        .await
        .expect("below the tier cap");
    let (status, refused) = set_limits(&app, &workspace.id, json!({"user_spend_limit_amount": "201"})).await;
    assert_eq!(status, 400, "{refused}");
    let (status, set) = set_limits(&app, &workspace.id, json!({"user_spend_limit_amount": "200"})).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["spend_limit_amount"], Value::Null);
    let (status, cleared) = set_limits(&app, &workspace.id, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["user_spend_limit_amount"], Value::Null);

    let changes: Vec<String> = app
        .tollgate
        .audit_events(&app.org_id)
        .await
        .expect("audit log")
        .into_iter()
        .filter(|entry| entry.action == "limits.workspace" && entry.subject == workspace.id)
        .map(|entry| entry.details)
        .collect();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(changes[0].contains("per-user spend limit $0.25"), "{changes:?}");
    assert!(changes[1].contains("per-user spend limit $2"), "{changes:?}");
    assert!(changes[2].contains("no per-user spend limit"), "{changes:?}");
}

/// Goal: 100 requests at once by one user of a workspace with a per-user limit of a few
/// requests' cost: the user's spend (settled plus held) never exceeds the limit, at any
/// moment or at the end; the rest are refused in the per-user wording; a teammate and the
/// workspace's own key, racing alongside, are all served. Once the limit is lowered below
/// one request, each surface refuses the users in its own envelope and the workspace's
/// key is still served. The audit is clean and the usage records agree with the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_user_stops_at_the_per_user_limit_and_the_team_does_not() {
    let app = spawn_app().await;
    // Every answer costs about its whole bound: 100 output tokens at $15 a million.
    app.fake.set_behavior(Behavior::Ok(Reply {
        output_tokens: 100,
        ..Reply::default()
    }));
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, "team")
        .await
        .expect("workspace");
    let alice = add_user(&app, "alice@example.com").await;
    let bob = add_user(&app, "bob@example.com").await;
    let (alice_key_id, alice_key) = create_key(&app, &workspace.id, Some(&alice)).await;
    let (_, bob_key) = create_key(&app, &workspace.id, Some(&bob)).await;
    let (team_key_id, team_key) = create_key(&app, &workspace.id, None).await;
    // $1 for the workspace, 5 cents a user: six of these requests' bounds (about 0.8 cents,
    // most of it the input overhead at the dearest input price) held at once, or some
    // thirty of their charges (about 0.15 cents).
    let limit = NanoUsd::from_nanos(50_000_000);
    let (status, set) = set_limits(
        &app,
        &workspace.id,
        json!({"spend_limit_amount": "100", "user_spend_limit_amount": "5"}),
    )
    .await;
    assert_eq!(status, 200, "{set}");

    // A watcher reads Alice's spend (settled plus held) all through the burst.
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let store = app.tollgate.store().clone();
        let (org_id, workspace_id, alice) = (app.org_id.clone(), workspace.id.clone(), alice.clone());
        let now = app.tollgate.now();
        let running = running.clone();
        tokio::spawn(async move {
            let mut highest = NanoUsd::ZERO;
            while running.load(Ordering::Acquire) {
                let spent = store
                    .user_month_spend(&org_id, &workspace_id, &alice, now)
                    .await
                    .expect("spend");
                highest = highest.max(spent);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            highest
        })
    };
    let body = message_body("fake-sonnet");
    let runaway = (0..100).map(|_| call(&app, &alice_key, "/v1/messages", &body));
    let team = (0..3)
        .map(|_| call(&app, &bob_key, "/v1/messages", &body))
        .chain((0..10).map(|_| call(&app, &team_key, "/v1/messages", &body)));
    let (runaway, team) = tokio::join!(join_all(runaway), join_all(team));
    running.store(false, Ordering::Release);
    let highest = watcher.await.expect("watcher");
    assert!(highest <= limit, "Alice's spend reached {highest} of {limit}");

    let served = runaway.iter().filter(|(status, _)| *status == 200).count();
    for (status, envelope) in runaway.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 400, "{envelope}");
        assert_eq!(envelope["error"]["type"], "invalid_request_error");
        let message = envelope["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(PER_USER_WORDS), "{message}");
    }
    assert!(
        (1..100).contains(&served),
        "{served} of Alice's requests were served"
    );
    assert!(
        team.iter().all(|(status, _)| *status == 200),
        "the team is served: {team:?}"
    );
    app.wait_for_settlement().await;

    let alice_spend = app
        .tollgate
        .store()
        .user_month_spend(&app.org_id, &workspace.id, &alice, app.tollgate.now())
        .await
        .expect("spend");
    assert!(alice_spend <= limit, "{alice_spend}");
    let records = app.usage_records().await;
    let alices: Vec<_> = records
        .iter()
        .filter(|record| record.api_key_id.as_deref() == Some(alice_key_id.as_str()))
        .collect();
    let charged = alices
        .iter()
        .fold(NanoUsd::ZERO, |sum, record| sum.saturating_add(record.cost));
    assert_eq!(charged, alice_spend, "Alice's counter is what she was charged");
    assert_eq!(
        alices.iter().filter(|record| record.cost.is_positive()).count(),
        served
    );
    let all_charged = records
        .iter()
        .fold(NanoUsd::ZERO, |sum, record| sum.saturating_add(record.cost));
    assert_eq!(
        all_charged.nanos(),
        app.balance().await.2,
        "usage records = ledger"
    );
    let report = app.tollgate.store().check_ledger().await.expect("check");
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Lowered below one request's bound: both users are refused on every surface, in its
    // own envelope; the workspace's own key is not a user's and is served.
    let (status, set) = set_limits(
        &app,
        &workspace.id,
        json!({"spend_limit_amount": "100", "user_spend_limit_amount": "0.01"}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    for key in [&alice_key, &bob_key] {
        let (status, envelope) = call(&app, key, "/v1/messages", &body).await;
        assert_eq!(status, 400, "{envelope}");
        let message = envelope["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(PER_USER_WORDS), "{message}");
        let (status, envelope) = call(&app, key, "/v1/chat/completions", &chat_body("fake-sonnet")).await;
        assert_eq!(status, 429, "{envelope}");
        assert_eq!(envelope["error"]["type"], "insufficient_quota");
        assert_eq!(envelope["error"]["code"], "spend_limit_reached");
        let message = envelope["error"]["message"].as_str().expect("message");
        assert!(message.starts_with(PER_USER_WORDS), "{message}");
    }
    assert_eq!(call(&app, &team_key, "/v1/messages", &body).await.0, 200);
    app.wait_for_settlement().await;
    assert!(
        app.usage_records()
            .await
            .iter()
            .filter(|record| record.api_key_id.as_deref() == Some(team_key_id.as_str()))
            .all(|record| record.cost.is_positive()),
        "the workspace's key was charged for every request"
    );
    app.assert_ledger_clean().await;
}

/// Goal: the Console's workspace limits form sets and shows the per-user limit beside the
/// workspace's own, refuses one above it, and keeps it when a form without the field (an
/// older page) is posted.
#[tokio::test]
async fn the_consoles_workspace_limits_form_sets_the_per_user_limit() {
    let app = spawn_app().await;
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, "team")
        .await
        .expect("workspace");
    let (client, cookie) = app.console_admin_session().await;
    let page_path = format!("/console/workspaces/{}", workspace.id);
    let page = || async {
        let response = client
            .get(app.url(&page_path))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200);
        response.text().await.expect("html")
    };
    let html = page().await;
    assert!(
        html.contains("name=\"user_spend_limit\""),
        "the form has the field"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a csrf field")
        .to_owned();
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut form = vec![("csrf", csrf.clone())];
        form.extend(fields.into_iter().map(|(name, value)| (name, value.to_owned())));
        let request = client
            .post(app.url(&format!("{page_path}/limits")))
            .header("cookie", &cookie)
            .form(&form);
        async move { request.send().await.expect("posted").status().as_u16() }
    };
    assert_eq!(
        post(vec![("spend_limit", "1.00"), ("user_spend_limit", "0.25")]).await,
        303
    );
    let limits = app
        .tollgate
        .store()
        .workspace_limits(&workspace.id)
        .await
        .expect("limits");
    assert_eq!(
        (limits.spend_limit, limits.user_spend_limit),
        (Some(NanoUsd::from_usd(1)), Some(NanoUsd::from_nanos(250_000_000)))
    );
    let html = page().await;
    assert!(html.contains("Per-user spend limit"), "{html}");
    assert!(html.contains("value=\"0.25\""), "{html}");
    assert_eq!(
        post(vec![("spend_limit", "1.00"), ("user_spend_limit", "2")]).await,
        400,
        "above the workspace's limit"
    );
    assert_eq!(post(vec![("spend_limit", "1.00")]).await, 303);
    let limits = app
        .tollgate
        .store()
        .workspace_limits(&workspace.id)
        .await
        .expect("limits");
    assert_eq!(limits.user_spend_limit, Some(NanoUsd::from_nanos(250_000_000)));
    assert_eq!(
        post(vec![("spend_limit", "1.00"), ("user_spend_limit", "")]).await,
        303
    );
    let limits = app
        .tollgate
        .store()
        .workspace_limits(&workspace.id)
        .await
        .expect("limits");
    assert_eq!(limits.user_spend_limit, None);
}

/// Goal: a Message Batch made with a personal key is held to its user's limit at creation
/// (its whole bound at the Batch rate), refused in `/v1/messages`' per-user words and
/// moving no money.
#[tokio::test]
async fn a_batch_over_its_users_limit_is_refused_as_messages_are() {
    let app = spawn_app().await;
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, "team")
        .await
        .expect("workspace");
    let alice = add_user(&app, "alice@example.com").await;
    let (_, alice_key) = create_key(&app, &workspace.id, Some(&alice)).await;
    let (status, set) = set_limits(&app, &workspace.id, json!({"user_spend_limit_amount": "5"})).await;
    assert_eq!(status, 200, "{set}");
    // Ten requests of up to 10,000 output tokens: about 75 cents at the Batch rate.
    let batch = json!({
        "requests": (0..10).map(|index| json!({
            "custom_id": format!("item-{index}"),
            "params": {
                "model": "fake-sonnet",
                "max_tokens": 10_000,
                "messages": [{"role": "user", "content": format!("Question {index}")}],
            },
        })).collect::<Vec<_>>(),
    });
    let (status, refused) = call(&app, &alice_key, "/v1/messages/batches", &batch).await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.starts_with(PER_USER_WORDS), "{message}");
    assert_eq!(app.balance().await.1, 0, "nothing reserved");
    app.assert_ledger_clean().await;
}
