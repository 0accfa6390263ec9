//! The Admin API end to end: admin-key authentication, the organization, workspaces, API
//! keys with Anthropic's cursor pagination, users, invites, members and roles, and our
//! credit, limit, auto-reload and audit endpoints, each checked against the shapes of
//! Anthropic's published Admin API types.

use serde_json::{Value, json};
use tollgate_service::payments::TEST_CARD_OK;

use crate::helpers::{TestApp, message_body, spawn_app};

impl TestApp {
    pub(crate) async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .header("x-api-key", &self.admin_key)
            .header("anthropic-version", "2023-06-01")
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("x-api-key", &self.admin_key)
            .header("anthropic-version", "2023-06-01");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_send(reqwest::Method::POST, path, Some(body)).await
    }
}

fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn me_names_the_organization_of_the_admin_key() {
    let app = spawn_app().await;
    let (status, body) = app.admin_get("/v1/organizations/me").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": app.org_id, "type": "organization", "name": "Default"})
    );
}

#[tokio::test]
async fn only_admin_keys_open_the_admin_api_and_only_api_keys_the_messages_api() {
    let app = spawn_app().await;
    let without = app
        .client
        .get(app.url("/v1/organizations/me"))
        .send()
        .await
        .expect("sent");
    assert_eq!(without.status(), 401);
    assert!(without.headers().contains_key("request-id"));
    let body: Value = without.json().await.expect("json");
    assert_eq!(error_type(&body), "authentication_error");
    assert!(
        body["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_"))
    );

    let with_api_key = app
        .client
        .get(app.url("/v1/organizations/me"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(with_api_key.status(), 403);
    let body: Value = with_api_key.json().await.expect("json");
    assert_eq!(error_type(&body), "permission_error");

    let bearer = app
        .client
        .get(app.url("/v1/organizations/me"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(bearer.status(), 200, "Authorization: Bearer works too");

    let garbage = app
        .client
        .get(app.url("/v1/organizations/me"))
        .header("x-api-key", "sk-tg-admin01-nonsense")
        .send()
        .await
        .expect("sent");
    assert_eq!(garbage.status(), 401);

    let messages = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.admin_key)
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        messages.status(),
        403,
        "an admin key cannot call the Messages API"
    );
}

#[tokio::test]
async fn the_admin_api_reads_a_bearer_key_as_the_gateway_does() {
    // The scheme's name is case-insensitive (RFC 9110), and a refused bearer key is named
    // as the bearer token it came as, on both HTTP surfaces alike.
    let app = spawn_app().await;
    let lowercase = app
        .client
        .get(app.url("/v1/organizations/me"))
        .header("authorization", format!("bearer {}", app.admin_key))
        .send()
        .await
        .expect("sent");
    assert_eq!(lowercase.status(), 200, "a lowercase `bearer` scheme works");

    let unknown = app
        .client
        .get(app.url("/v1/organizations/me"))
        .bearer_auth("sk-tg-admin01-nonsense")
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 401);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(error_type(&body), "authentication_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Invalid bearer token"),
        "a refused bearer key is named as such: {message}"
    );
}

#[tokio::test]
async fn workspaces_are_created_listed_renamed_and_archived_with_their_keys() {
    let app = spawn_app().await;
    let (status, listed) = app.admin_get("/v1/organizations/workspaces").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"], json!([]), "the Default workspace is omitted");
    assert_eq!(listed["has_more"], false);
    assert_eq!(listed["first_id"], Value::Null);

    let (status, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Research"}))
        .await;
    assert_eq!(status, 200, "{workspace}");
    let id = workspace["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("wrkspc_"));
    assert_eq!(workspace["type"], "workspace");
    assert_eq!(workspace["name"], "Research");
    assert_eq!(workspace["archived_at"], Value::Null);
    assert!(
        workspace["display_color"]
            .as_str()
            .is_some_and(|color| color.starts_with('#'))
    );
    assert!(
        workspace["created_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );

    let (status, duplicate) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Research"}))
        .await;
    assert_eq!((status, error_type(&duplicate)), (400, "invalid_request_error"));

    let (status, renamed) = app
        .admin_post(
            &format!("/v1/organizations/workspaces/{id}"),
            json!({"name": "Science"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "Science");
    let (_, fetched) = app.admin_get(&format!("/v1/organizations/workspaces/{id}")).await;
    assert_eq!(fetched["name"], "Science");

    // A key created in the workspace by API works on the Messages API.
    let (status, created) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "science key", "workspace_id": id}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let secret = created["api_key_secret"]
        .as_str()
        .expect("secret once")
        .to_owned();
    assert_eq!(created["workspace_id"], id.as_str());
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &secret)
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let (status, archived) = app
        .admin_post(&format!("/v1/organizations/workspaces/{id}/archive"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(archived["archived_at"].is_string());
    let (_, key) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys/{}",
            created["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(
        key["status"], "archived",
        "archiving deactivates the workspace's keys"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let refused = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &secret)
        .json(&message_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);

    let (status, again) = app
        .admin_post(&format!("/v1/organizations/workspaces/{id}/archive"), json!({}))
        .await;
    assert_eq!((status, error_type(&again)), (400, "invalid_request_error"));
    let (status, _) = app
        .admin_post(
            &format!("/v1/organizations/workspaces/{id}"),
            json!({"name": "Again"}),
        )
        .await;
    assert_eq!(status, 400, "an archived workspace can't be renamed");
    let (_, active) = app.admin_get("/v1/organizations/workspaces").await;
    assert_eq!(active["data"], json!([]));
    let (_, all) = app
        .admin_get("/v1/organizations/workspaces?include_archived=true")
        .await;
    assert_eq!(all["data"][0]["id"], id.as_str());
}

#[tokio::test]
async fn api_keys_page_like_anthropics_lists_and_filter_by_workspace_and_status() {
    let app = spawn_app().await;
    let (_, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Keys"}))
        .await;
    let workspace_id = workspace["id"].as_str().expect("id").to_owned();
    let mut created = Vec::new();
    for n in 0..5 {
        let (status, key) = app
            .admin_post(
                "/v1/organizations/api_keys",
                json!({"name": format!("key {n}"), "workspace_id": workspace_id}),
            )
            .await;
        assert_eq!(status, 200);
        created.push(key["id"].as_str().expect("id").to_owned());
    }
    // Six keys: the first start's (Default workspace) and five here; newest first.
    let (_, first) = app.admin_get("/v1/organizations/api_keys?limit=2").await;
    assert_eq!(first["data"].as_array().expect("data").len(), 2);
    assert_eq!(first["has_more"], true);
    let key = &first["data"][0];
    assert_eq!(key["type"], "api_key");
    assert!(
        key["partial_key_hint"]
            .as_str()
            .is_some_and(|hint| hint.starts_with("sk-tg-api01-") && hint.contains("..."))
    );
    assert_eq!(key["expires_at"], Value::Null);
    assert_eq!(key["created_by"]["type"], "admin_key");
    assert!(key.get("api_key_secret").is_none(), "the secret is never listed");

    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/v1/organizations/api_keys?limit=2&after_id={after}"),
            None => "/v1/organizations/api_keys?limit=2".to_owned(),
        };
        let (_, page) = app.admin_get(&path).await;
        for key in page["data"].as_array().expect("data") {
            seen.push(key["id"].as_str().expect("id").to_owned());
        }
        if page["has_more"] == false {
            break;
        }
        after = page["last_id"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 6);
    let (_, before) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys?limit=2&before_id={}",
            seen[3]
        ))
        .await;
    let ids: Vec<&str> = before["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|key| key["id"].as_str())
        .collect();
    assert_eq!(ids, vec![seen[1].as_str(), seen[2].as_str()]);
    assert_eq!(before["has_more"], true);

    let (_, in_workspace) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys?workspace_id={workspace_id}&limit=100"
        ))
        .await;
    assert_eq!(in_workspace["data"].as_array().expect("data").len(), 5);
    let (_, default_key) = app
        .admin_get(&format!("/v1/organizations/api_keys/{}", seen[5]))
        .await;
    assert_eq!(
        default_key["workspace_id"],
        Value::Null,
        "the Default workspace is null"
    );
    assert_eq!(default_key["created_by"]["type"], "system");

    let (status, updated) = app
        .admin_post(
            &format!("/v1/organizations/api_keys/{}", created[0]),
            json!({"name": "renamed", "status": "inactive"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["status"], "inactive");
    let (_, inactive) = app.admin_get("/v1/organizations/api_keys?status=inactive").await;
    assert_eq!(inactive["data"].as_array().expect("data").len(), 1);
    let (_, expired) = app.admin_get("/v1/organizations/api_keys?status=expired").await;
    assert_eq!(expired["data"], json!([]));
    let (status, _) = app
        .admin_post(
            &format!("/v1/organizations/api_keys/{}", created[0]),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(status, 200, "an inactive key can be reactivated");
    let (status, _) = app
        .admin_post(
            &format!("/v1/organizations/api_keys/{}", created[0]),
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .admin_post(
            &format!("/v1/organizations/api_keys/{}", created[0]),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(
        (status, error_type(&body)),
        (400, "invalid_request_error"),
        "archiving is final"
    );
}

#[tokio::test]
async fn users_invites_members_and_roles_follow_the_console_rules() {
    let app = spawn_app().await;
    let (status, refused) = app
        .admin_post(
            "/v1/organizations/invites",
            json!({"email": "boss@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!((status, error_type(&refused)), (400, "invalid_request_error"));

    let (status, invite) = app
        .admin_post(
            "/v1/organizations/invites",
            json!({"email": "Dev@Example.com", "role": "developer"}),
        )
        .await;
    assert_eq!(status, 200, "{invite}");
    assert_eq!(invite["type"], "invite");
    assert_eq!(invite["email"], "dev@example.com");
    assert_eq!(invite["status"], "pending");
    let invite_id = invite["id"].as_str().expect("id").to_owned();
    assert!(invite_id.starts_with("invite_"));
    let invited_at =
        chrono::DateTime::parse_from_rfc3339(invite["invited_at"].as_str().expect("at")).expect("time");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(invite["expires_at"].as_str().expect("at")).expect("time");
    assert_eq!((expires_at - invited_at).num_days(), 21);
    let (status, _) = app
        .admin_post(
            "/v1/organizations/invites",
            json!({"email": "dev@example.com", "role": "user"}),
        )
        .await;
    assert_eq!(status, 400, "one pending invite per email");

    // The invitee accepts (a Console step; the service offers it).
    let organization = app.tollgate.organization_named("Default").await.expect("org");
    let operator = app.tollgate.operator_of(&organization, "test");
    let user = operator
        .accept_invite(&invite_id, "Dev Eloper")
        .await
        .expect("accepted");
    let (_, accepted) = app
        .admin_get(&format!("/v1/organizations/invites/{invite_id}"))
        .await;
    assert_eq!(accepted["status"], "accepted");

    let (status, listed) = app
        .admin_get("/v1/organizations/users?email=dev@example.com")
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], user.id.as_str());
    assert_eq!(listed["data"][0]["type"], "user");
    assert_eq!(listed["data"][0]["role"], "developer");
    assert!(listed["data"][0]["added_at"].is_string());
    let (_, developers) = app.admin_get("/v1/organizations/users?roles[]=developer").await;
    assert_eq!(
        developers["data"].as_array().map(Vec::len),
        Some(1),
        "{developers}"
    );
    let (_, billing) = app
        .admin_get("/v1/organizations/users?roles[]=billing&roles[]=user")
        .await;
    assert_eq!(billing["data"].as_array().map(Vec::len), Some(0), "{billing}");
    let (status, _) = app.admin_get("/v1/organizations/users?roles[]=wizard").await;
    assert_eq!(status, 400);
    let (status, promoted) = app
        .admin_post(
            &format!("/v1/organizations/users/{}", user.id),
            json!({"role": "billing"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(promoted["role"], "billing");
    let (status, _) = app
        .admin_post(
            &format!("/v1/organizations/users/{}", user.id),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 400, "admin is not granted through the API");

    let (_, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Team"}))
        .await;
    let workspace_id = workspace["id"].as_str().expect("id").to_owned();
    let members_path = format!("/v1/organizations/workspaces/{workspace_id}/members");
    let (_, members) = app.admin_get(&members_path).await;
    assert_eq!(
        members["data"],
        json!([{"type": "workspace_member", "user_id": user.id, "workspace_id": workspace_id, "workspace_role": "workspace_billing"}]),
        "org billing users are workspace_billing everywhere"
    );
    let (status, _) = app
        .admin_post(
            &members_path,
            json!({"user_id": user.id, "workspace_role": "workspace_user"}),
        )
        .await;
    assert_eq!(status, 400, "an inherited role can't be overridden");

    app.admin_post(
        &format!("/v1/organizations/users/{}", user.id),
        json!({"role": "user"}),
    )
    .await;
    let (status, body) = app
        .admin_post(
            &members_path,
            json!({"user_id": user.id, "workspace_role": "workspace_billing"}),
        )
        .await;
    assert_eq!(
        (status, error_type(&body)),
        (400, "invalid_request_error"),
        "workspace_billing is inherited only"
    );
    let (status, member) = app
        .admin_post(
            &members_path,
            json!({"user_id": user.id, "workspace_role": "workspace_developer"}),
        )
        .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["workspace_role"], "workspace_developer");
    let member_path = format!("{members_path}/{}", user.id);
    let (status, updated) = app
        .admin_post(&member_path, json!({"workspace_role": "workspace_admin"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["workspace_role"], "workspace_admin");
    let (_, fetched) = app.admin_get(&member_path).await;
    assert_eq!(fetched["workspace_role"], "workspace_admin");
    let (status, deleted) = app.admin_send(reqwest::Method::DELETE, &member_path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        deleted,
        json!({"id": user.id, "type": "workspace_member_deleted"})
    );
    let (status, _) = app.admin_get(&member_path).await;
    assert_eq!(status, 404);

    let (status, deleted) = app
        .admin_send(
            reqwest::Method::DELETE,
            &format!("/v1/organizations/users/{}", user.id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["type"], "user_deleted");
    let (status, _) = app
        .admin_get(&format!("/v1/organizations/users/{}", user.id))
        .await;
    assert_eq!(status, 404);

    let (_, other) = app
        .admin_post(
            "/v1/organizations/invites",
            json!({"email": "x@example.com", "role": "user"}),
        )
        .await;
    let other_id = other["id"].as_str().expect("id");
    let (_, invites) = app.admin_get("/v1/organizations/invites").await;
    assert_eq!(invites["data"].as_array().expect("data").len(), 2);
    let (status, deleted) = app
        .admin_send(
            reqwest::Method::DELETE,
            &format!("/v1/organizations/invites/{other_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["type"], "invite_deleted");
}

#[tokio::test]
async fn credits_tiers_limits_auto_reload_and_audit_read_and_write_in_cents() {
    let app = spawn_app().await;
    let (status, balance) = app.admin_get("/v1/organizations/credits").await;
    assert_eq!(status, 200);
    assert_eq!(balance["type"], "credit_balance");
    assert_eq!(
        balance["available_amount"], "500.00",
        "the $5 starter credit, in cents"
    );

    let (status, lot) = app
        .admin_post(
            "/v1/organizations/credits/grants",
            json!({"amount": "1250", "lot_kind": "promotional", "memo": "welcome"}),
        )
        .await;
    assert_eq!(status, 200, "{lot}");
    assert_eq!(lot["amount"], "1250.00");
    assert_eq!(lot["lot_kind"], "promotional");
    let (_, lots) = app.admin_get("/v1/organizations/credits/lots").await;
    assert_eq!(lots["data"].as_array().expect("lots").len(), 2);

    let (status, purchase) = app
        .admin_post(
            "/v1/organizations/credits/purchases",
            json!({"amount": "2500", "payment_method": TEST_CARD_OK, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(status, 200, "{purchase}");
    assert_eq!(purchase["status"], "succeeded");
    let (status, declined) = app
        .admin_post(
            "/v1/organizations/credits/purchases",
            json!({"amount": "2500", "payment_method": "4000000000000002"}),
        )
        .await;
    assert_eq!((status, error_type(&declined)), (402, "billing_error"));
    let (_, purchases) = app.admin_get("/v1/organizations/credits/purchases").await;
    assert_eq!(purchases["data"].as_array().expect("purchases").len(), 2);
    let (_, balance) = app.admin_get("/v1/organizations/credits").await;
    assert_eq!(balance["available_amount"], "4250.00");

    let (status, tiers) = app.admin_get("/v1/organizations/tiers").await;
    assert_eq!(status, 200);
    assert_eq!(tiers["cumulative_purchases_amount"], "2500.00");

    let (status, limits) = app
        .admin_post("/v1/organizations/limits", json!({"spend_limit_amount": "5000"}))
        .await;
    assert_eq!(status, 200, "{limits}");
    assert_eq!(limits["spend_limit_amount"], "5000.00");
    let (_, cleared) = app
        .admin_post("/v1/organizations/limits", json!({"spend_limit_amount": null}))
        .await;
    assert_eq!(cleared["spend_limit_amount"], Value::Null);

    let (_, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": "Limited"}))
        .await;
    let workspace_id = workspace["id"].as_str().expect("id");
    let (status, workspace_limits) = app
        .admin_post(
            &format!("/v1/organizations/workspaces/{workspace_id}/limits"),
            json!({"spend_limit_amount": "100", "rate_limits": [{"model_class": "sonnet", "requests_per_minute": 7}]}),
        )
        .await;
    assert_eq!(status, 200, "{workspace_limits}");
    assert_eq!(workspace_limits["spend_limit_amount"], "100.00");
    let (_, rate_limits) = app
        .admin_get(&format!(
            "/v1/organizations/workspaces/{workspace_id}/rate_limits"
        ))
        .await;
    let sonnet = rate_limits["data"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|group| {
            group["models"]
                .as_array()
                .is_some_and(|models| models.contains(&json!("claude-sonnet-4-6")))
        })
        .expect("a sonnet group");
    assert_eq!(sonnet["type"], "rate_limit");
    assert_eq!(sonnet["group_type"], "model_group");
    assert_eq!(
        sonnet["limits"][0],
        json!({"type": "requests_per_minute", "value": 7})
    );
    let (status, org_limits) = app.admin_get("/v1/organizations/rate_limits").await;
    assert_eq!(status, 200);
    assert_eq!(org_limits["next_page"], Value::Null);

    let (status, reload) = app
        .admin_post(
            "/v1/organizations/auto_reload",
            json!({"threshold_amount": "500", "amount": "2000", "payment_method": TEST_CARD_OK}),
        )
        .await;
    assert_eq!(status, 200, "{reload}");
    assert_eq!(reload["enabled"], true);
    assert_eq!(reload["payment_method_hint"], "…4242");
    let (status, off) = app
        .admin_send(reqwest::Method::DELETE, "/v1/organizations/auto_reload", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(off["enabled"], false);

    let (status, audit) = app.admin_get("/v1/organizations/audit_events?limit=1000").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["action"].as_str())
        .collect();
    for expected in [
        "credit.granted",
        "credit.purchased",
        "limits.organization_spend_limit",
        "limits.workspace",
        "autoreload.set",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let by_admin = audit["data"].as_array().expect("events").iter().any(|event| {
        event["actor"]
            .as_str()
            .is_some_and(|actor| actor.starts_with("admin_key:apikey_"))
    });
    assert!(by_admin, "changes made through the API name the admin key");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let app = spawn_app().await;
    for (path, status) in [
        ("/v1/organizations/workspaces/not-an-id", 404),
        ("/v1/organizations/workspaces/wrkspc_01Unknown", 404),
        ("/v1/organizations/api_keys/apikey_01Unknown", 404),
        ("/v1/organizations/users/user_01Unknown", 404),
        ("/v1/organizations/invites/invite_01Unknown", 404),
        ("/v1/organizations/api_keys?limit=0", 400),
        ("/v1/organizations/api_keys?limit=1001", 400),
        ("/v1/organizations/api_keys?limit=ten", 400),
        ("/v1/organizations/api_keys?after_id=a&before_id=b", 400),
        ("/v1/organizations/api_keys?after_id=apikey_01NotInTheList", 400),
        ("/v1/organizations/api_keys?status=lost", 400),
        ("/v1/organizations/usage_report/messages", 400),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-02T00:00:00Z&ending_at=2026-03-01T00:00:00Z",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=yesterday",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-01T00:00:00Z&bucket_width=1w",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-01T00:00:00Z&group_by[]=colour",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-01T00:00:00Z&limit=32",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-01T00:00:00Z&bucket_width=1m&ending_at=2026-03-20T00:00:00Z",
            400,
        ),
        (
            "/v1/organizations/usage_report/messages?starting_at=2026-03-01T00:00:00Z&page=page_bogus",
            400,
        ),
        (
            "/v1/organizations/cost_report?starting_at=2026-03-01T00:00:00Z&bucket_width=1h",
            400,
        ),
        (
            "/v1/organizations/cost_report?starting_at=2026-03-01T00:00:00Z&group_by[]=model",
            400,
        ),
    ] {
        let (got, body) = app.admin_get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        let expected = if status == 404 {
            "not_found_error"
        } else {
            "invalid_request_error"
        };
        assert_eq!(error_type(&body), expected, "{path}");
    }
    let malformed = app
        .client
        .post(app.url("/v1/organizations/workspaces"))
        .header("x-api-key", &app.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), 400);
    let (status, _) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": ""}))
        .await;
    assert_eq!(status, 400);
    let (status, body) = app
        .admin_send(reqwest::Method::PUT, "/v1/organizations/workspaces", None)
        .await;
    assert_eq!((status, error_type(&body)), (405, "invalid_request_error"));
    let (_, workspaces) = app.admin_get("/v1/organizations/workspaces").await;
    assert_eq!(workspaces["data"], json!([]), "nothing was created");
}
