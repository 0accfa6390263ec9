//! Tenants are isolated: every id-bearing route of the Admin API, read from the generated
//! OpenAPI document, is called with organization A's admin key on organization B's objects
//! and must answer 404 and change nothing. A route with a path parameter this test doesn't
//! know fails the test, so a new route can't ship unchecked. The OpenAPI document itself
//! must list every route the server answers.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tollgate_core::keys::KeyKind;

use crate::helpers::{TestApp, spawn_app};

/// Organization B, set up through its own admin key: a workspace, a key, a user who is a
/// member of the workspace, a service account that is one too, a pending invite, and a
/// request whose bodies its workspace captured.
struct OtherTenant {
    admin_key: String,
    ids: BTreeMap<&'static str, String>,
}

async fn as_key(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn other_tenant(app: &TestApp) -> OtherTenant {
    let (organization, admin_key) = app.other_organization_admin_key().await;
    let post = |path: &'static str, body: Value| {
        let admin_key = admin_key.clone();
        async move { as_key(app, &admin_key, reqwest::Method::POST, path, Some(body)).await }
    };
    let (_, workspace) = post("/v1/organizations/workspaces", json!({"name": "B secrets"})).await;
    let workspace_id = workspace["id"].as_str().expect("workspace").to_owned();
    let (_, key) = post(
        "/v1/organizations/api_keys",
        json!({"name": "B key", "workspace_id": workspace_id}),
    )
    .await;
    let (_, invite) = post(
        "/v1/organizations/invites",
        json!({"email": "b-user@example.com", "role": "developer"}),
    )
    .await;
    let operator = app.tollgate.operator_of(&organization, "test");
    let user = operator
        .accept_invite(invite["id"].as_str().expect("invite"), "B User")
        .await
        .expect("accepted");
    operator
        .set_member(
            &workspace_id,
            &user.id,
            tollgate_core::roles::WorkspaceRole::Developer,
        )
        .await
        .expect("member");
    let (_, pending) = post(
        "/v1/organizations/invites",
        json!({"email": "b-next@example.com", "role": "user"}),
    )
    .await;
    let capture_path = format!("/v1/organizations/workspaces/{workspace_id}/capture");
    let (status, _) = as_key(
        app,
        &admin_key,
        reqwest::Method::POST,
        &capture_path,
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "B captures its workspace's bodies");
    let caller = app
        .tollgate
        .create_key(KeyKind::Api, &organization.id, Some(&workspace_id), "B caller")
        .await
        .expect("B api key");
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", caller.secret.expose_secret())
        .header("anthropic-version", "2023-06-01")
        .json(&crate::helpers::message_body("fake-sonnet"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let _ = response.text().await;
    app.wait_for_capture(&organization.id, &request_id).await;
    let (_, destination) = post(
        "/v1/organizations/alert_destinations",
        json!({"channel": "email", "target": "b-alerts@example.com"}),
    )
    .await;
    let (status, service_account) = post(
        "/v1/organizations/service_accounts",
        json!({"name": "b-robot", "organization_role": "developer"}),
    )
    .await;
    assert_eq!(status, 200, "{service_account}");
    let service_account_id = service_account["id"].as_str().expect("svac").to_owned();
    let (status, membership) = as_key(
        app,
        &admin_key,
        reqwest::Method::POST,
        &format!("/v1/organizations/workspaces/{workspace_id}/service_accounts"),
        Some(json!({"service_account_id": service_account_id, "workspace_role": "workspace_developer"})),
    )
    .await;
    assert_eq!(status, 200, "{membership}");
    let (status, _) = post(
        "/v1/organizations/alert_settings",
        json!({"balance_threshold_amount": "250", "key_expiry_notice_days": 3}),
    )
    .await;
    assert_eq!(status, 200, "B sets its alert thresholds");
    let ids = BTreeMap::from([
        (
            "destination_id",
            destination["id"].as_str().expect("destination").to_owned(),
        ),
        ("workspace_id", workspace_id),
        ("api_key_id", key["id"].as_str().expect("key").to_owned()),
        ("user_id", user.id),
        ("service_account_id", service_account_id),
        ("invite_id", pending["id"].as_str().expect("invite").to_owned()),
        ("request_id", request_id),
    ]);
    OtherTenant { admin_key, ids }
}

/// A body every POST route accepts the shape of, so that a 404 can't hide behind a 400.
fn plausible_body(ids: &BTreeMap<&'static str, String>) -> Value {
    json!({
        "service_account_id": ids["service_account_id"],
        "workspace_id": ids["workspace_id"],
        "name": "hijacked",
        "status": "inactive",
        "role": "user",
        "workspace_role": "workspace_user",
        "user_id": ids["user_id"],
        "spend_limit_amount": "100",
        "rate_limits": [],
        "enabled": true,
    })
}

#[tokio::test]
async fn no_route_reaches_another_organizations_objects() {
    let app = spawn_app().await;
    let other = other_tenant(&app).await;
    let (_, before) = snapshot(&app, &other).await;

    let mut checked = 0;
    for (method, template) in tollgate_admin_api::routes() {
        if !template.contains('{') {
            continue;
        }
        let mut path = template.clone();
        for (name, id) in &other.ids {
            path = path.replace(&format!("{{{name}}}"), id);
        }
        assert!(
            !path.contains('{'),
            "{method} {template} has a path parameter the isolation test does not know: add it to `other_tenant`"
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = (method == reqwest::Method::POST).then(|| plausible_body(&other.ids));
        let (status, response) = as_key(&app, &app.admin_key, method.clone(), &path, body).await;
        assert_eq!(
            status, 404,
            "{method} {template} with A's key on B's object: {response}"
        );
        assert_eq!(
            response["error"]["type"], "not_found_error",
            "{method} {template}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "every id-bearing route was walked ({checked})");

    // Filters and lists never show B's objects either.
    let workspace_filter = format!(
        "/v1/organizations/api_keys?workspace_id={}",
        other.ids["workspace_id"]
    );
    let (status, _) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        &workspace_filter,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, users) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        "/v1/organizations/users",
        None,
    )
    .await;
    assert_eq!(users["data"], json!([]));
    // A's alert configuration is its own: B's destinations are not listed, B's thresholds
    // are not A's.
    let (_, destinations) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        "/v1/organizations/alert_destinations",
        None,
    )
    .await;
    assert_eq!(destinations["data"], json!([]));
    let (_, settings) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        "/v1/organizations/alert_settings",
        None,
    )
    .await;
    assert_eq!(settings["balance_threshold_amount"], Value::Null);
    // A's member of B's workspace, and B's user in A's (hidden) scope: both unknown.
    let (_, workspace) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::POST,
        "/v1/organizations/workspaces",
        Some(json!({"name": "A team"})),
    )
    .await;
    let members = format!(
        "/v1/organizations/workspaces/{}/members",
        workspace["id"].as_str().expect("id")
    );
    let (status, _) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::POST,
        &members,
        Some(json!({"user_id": other.ids["user_id"], "workspace_role": "workspace_user"})),
    )
    .await;
    assert_eq!(status, 404, "B's user can't join A's workspace");
    let (status, _) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::POST,
        &format!(
            "/v1/organizations/workspaces/{}/service_accounts",
            workspace["id"].as_str().expect("id")
        ),
        Some(json!({"service_account_id": other.ids["service_account_id"], "workspace_role": "workspace_user"})),
    )
    .await;
    assert_eq!(status, 404, "B's service account can't join A's workspace");
    let (status, _) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::POST,
        "/v1/organizations/api_keys",
        Some(json!({"name": "stolen", "service_account_id": other.ids["service_account_id"]})),
    )
    .await;
    assert_eq!(status, 404, "A can't mint a key for B's service account");
    let (_, accounts) = as_key(
        &app,
        &app.admin_key,
        reqwest::Method::GET,
        "/v1/organizations/service_accounts?include_archived=true",
        None,
    )
    .await;
    assert_eq!(accounts["data"], json!([]), "B's service accounts are not listed");

    let (_, after) = snapshot(&app, &other).await;
    assert_eq!(before, after, "nothing of B changed");
}

/// B's objects as B sees them.
async fn snapshot(app: &TestApp, other: &OtherTenant) -> (u16, Value) {
    let mut state = serde_json::Map::new();
    for path in [
        format!("/v1/organizations/workspaces/{}", other.ids["workspace_id"]),
        format!("/v1/organizations/api_keys/{}", other.ids["api_key_id"]),
        format!("/v1/organizations/users/{}", other.ids["user_id"]),
        format!("/v1/organizations/invites/{}", other.ids["invite_id"]),
        format!(
            "/v1/organizations/workspaces/{}/members/{}",
            other.ids["workspace_id"], other.ids["user_id"]
        ),
        format!(
            "/v1/organizations/workspaces/{}/limits",
            other.ids["workspace_id"]
        ),
        format!(
            "/v1/organizations/workspaces/{}/capture",
            other.ids["workspace_id"]
        ),
        format!("/v1/organizations/requests/{}/body", other.ids["request_id"]),
        "/v1/organizations/alert_destinations".to_owned(),
        "/v1/organizations/alert_settings".to_owned(),
        format!(
            "/v1/organizations/service_accounts/{}",
            other.ids["service_account_id"]
        ),
        format!(
            "/v1/organizations/workspaces/{}/service_accounts/{}",
            other.ids["workspace_id"], other.ids["service_account_id"]
        ),
    ] {
        let (status, body) = as_key(app, &other.admin_key, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        state.insert(path, body);
    }
    (200, Value::Object(state))
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route_the_server_answers() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1"))
    );

    // Everything the contract and the issue name is documented.
    let expected = [
        ("GET", "/v1/organizations/me"),
        ("GET", "/v1/organizations/workspaces"),
        ("POST", "/v1/organizations/workspaces"),
        ("GET", "/v1/organizations/workspaces/{workspace_id}"),
        ("POST", "/v1/organizations/workspaces/{workspace_id}"),
        ("POST", "/v1/organizations/workspaces/{workspace_id}/archive"),
        ("GET", "/v1/organizations/workspaces/{workspace_id}/members"),
        ("POST", "/v1/organizations/workspaces/{workspace_id}/members"),
        (
            "GET",
            "/v1/organizations/workspaces/{workspace_id}/members/{user_id}",
        ),
        (
            "POST",
            "/v1/organizations/workspaces/{workspace_id}/members/{user_id}",
        ),
        (
            "DELETE",
            "/v1/organizations/workspaces/{workspace_id}/members/{user_id}",
        ),
        ("GET", "/v1/organizations/api_keys"),
        ("POST", "/v1/organizations/api_keys"),
        ("GET", "/v1/organizations/api_keys/{api_key_id}"),
        ("POST", "/v1/organizations/api_keys/{api_key_id}"),
        ("GET", "/v1/organizations/users"),
        ("GET", "/v1/organizations/users/{user_id}"),
        ("POST", "/v1/organizations/users/{user_id}"),
        ("DELETE", "/v1/organizations/users/{user_id}"),
        ("GET", "/v1/organizations/invites"),
        ("POST", "/v1/organizations/invites"),
        ("GET", "/v1/organizations/invites/{invite_id}"),
        ("DELETE", "/v1/organizations/invites/{invite_id}"),
        ("GET", "/v1/organizations/usage_report/messages"),
        ("GET", "/v1/organizations/cost_report"),
        ("GET", "/v1/organizations/rate_limits"),
        ("GET", "/v1/organizations/workspaces/{workspace_id}/rate_limits"),
        ("GET", "/v1/organizations/credits"),
        ("GET", "/v1/organizations/credits/lots"),
        ("GET", "/v1/organizations/credits/purchases"),
        ("POST", "/v1/organizations/credits/purchases"),
        ("POST", "/v1/organizations/credits/grants"),
        ("GET", "/v1/organizations/tiers"),
        ("GET", "/v1/organizations/limits"),
        ("POST", "/v1/organizations/limits"),
        ("GET", "/v1/organizations/workspaces/{workspace_id}/limits"),
        ("POST", "/v1/organizations/workspaces/{workspace_id}/limits"),
        ("GET", "/v1/organizations/auto_reload"),
        ("POST", "/v1/organizations/auto_reload"),
        ("DELETE", "/v1/organizations/auto_reload"),
        ("GET", "/v1/organizations/audit_events"),
        ("GET", "/v1/organizations/requests"),
        ("GET", "/v1/organizations/requests/{request_id}/body"),
        ("GET", "/v1/organizations/workspaces/{workspace_id}/capture"),
        ("POST", "/v1/organizations/workspaces/{workspace_id}/capture"),
        ("GET", "/v1/organizations/alert_destinations"),
        ("POST", "/v1/organizations/alert_destinations"),
        ("POST", "/v1/organizations/alert_destinations/{destination_id}"),
        ("DELETE", "/v1/organizations/alert_destinations/{destination_id}"),
        ("GET", "/v1/organizations/alert_settings"),
        ("POST", "/v1/organizations/alert_settings"),
        ("GET", "/v1/organizations/alert_deliveries"),
        ("GET", "/v1/organizations/service_accounts"),
        ("POST", "/v1/organizations/service_accounts"),
        ("GET", "/v1/organizations/service_accounts/{service_account_id}"),
        ("POST", "/v1/organizations/service_accounts/{service_account_id}"),
        (
            "DELETE",
            "/v1/organizations/service_accounts/{service_account_id}",
        ),
        (
            "POST",
            "/v1/organizations/service_accounts/{service_account_id}/archive",
        ),
        (
            "GET",
            "/v1/organizations/service_accounts/{service_account_id}/workspaces",
        ),
        (
            "POST",
            "/v1/organizations/service_accounts/{service_account_id}/workspaces",
        ),
        (
            "GET",
            "/v1/organizations/workspaces/{workspace_id}/service_accounts",
        ),
        (
            "POST",
            "/v1/organizations/workspaces/{workspace_id}/service_accounts",
        ),
        (
            "GET",
            "/v1/organizations/workspaces/{workspace_id}/service_accounts/{service_account_id}",
        ),
        (
            "DELETE",
            "/v1/organizations/workspaces/{workspace_id}/service_accounts/{service_account_id}",
        ),
        ("GET", "/v1/openapi.json"),
    ];
    for (method, path) in expected {
        let operation = &document["paths"][path][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is missing from the document"
        );
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path} documents its answer"
        );
    }
    // And the server answers every documented route: behind authentication, so 401 without
    // a key, never the router's 404 or 405.
    let documented = tollgate_admin_api::routes();
    assert_eq!(
        documented.len(),
        expected.len(),
        "every documented route is named above"
    );
    for (method, template) in documented {
        if template == "/v1/openapi.json" {
            continue;
        }
        let path = template
            .replace("{workspace_id}", "wrkspc_01X")
            .replace("{user_id}", "user_01X")
            .replace("{api_key_id}", "apikey_01X")
            .replace("{invite_id}", "invite_01X")
            .replace("{service_account_id}", "svac_01X");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401, "{method} {template} is served");
    }
}
