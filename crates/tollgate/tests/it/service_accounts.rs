//! Service accounts end to end (#19): created, listed, read, changed and archived through
//! the Admin API, audited; their keys, made only in a workspace they belong to, call the
//! Messages API, are attributed to them in the usage and cost reports, and are refused
//! within the key-cache bound once the account is deleted or leaves the key's workspace.
//! Another organization's admin key sees and changes none of it.

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, message_body, spawn_app, spawn_app_with};
use crate::personal_keys::{keys_page, past_the_key_cache, secret, today_window};

const ACCOUNTS: &str = "/v1/organizations/service_accounts";

async fn create_account(app: &TestApp, name: &str) -> String {
    let (status, created) = app
        .admin_post(
            ACCOUNTS,
            json!({"name": name, "description": "deploys", "organization_role": "developer"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

async fn create_workspace(app: &TestApp, name: &str) -> String {
    let (status, workspace) = app
        .admin_post("/v1/organizations/workspaces", json!({"name": name}))
        .await;
    assert_eq!(status, 200, "{workspace}");
    workspace["id"].as_str().expect("id").to_owned()
}

async fn add_to_workspace(app: &TestApp, workspace_id: &str, account_id: &str) {
    let (status, membership) = app
        .admin_post(
            &format!("/v1/organizations/workspaces/{workspace_id}/service_accounts"),
            json!({"service_account_id": account_id, "workspace_role": "workspace_developer"}),
        )
        .await;
    assert_eq!(status, 200, "{membership}");
    assert_eq!(
        membership,
        json!({
            "type": "service_account_workspace_member",
            "service_account_id": account_id,
            "workspace_id": workspace_id,
            "workspace_role": "workspace_developer",
            "implicit": false,
        })
    );
}

/// A key of the account in the workspace: the key object with its secret.
async fn create_key(app: &TestApp, workspace_id: &str, account_id: &str) -> Value {
    let (status, created) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "robot key", "workspace_id": workspace_id, "service_account_id": account_id}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    created
}

async fn message(app: &TestApp, key: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&message_body("fake-sonnet"))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Goal: an account is created in Anthropic's shape, listed (archived ones only when
/// asked), read, changed (description and role, never to admin, never its name) and
/// deleted (archived, then unchangeable); names are slugs unique in the organization, and
/// each change is in the audit log.
#[tokio::test]
async fn a_service_account_is_created_listed_read_updated_and_deleted() {
    let app = spawn_app().await;
    let (status, created) = app
        .admin_post(
            ACCOUNTS,
            json!({"name": "ci-deploy-bot", "description": "deploys"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("svac_01"), "{id}");
    assert_eq!(created["type"], "service_account");
    assert_eq!(created["name"], "ci-deploy-bot");
    assert_eq!(created["description"], "deploys");
    assert_eq!(created["organization_role"], "developer", "the default role");
    assert_eq!(created["archived_at"], Value::Null);

    for (body, why) in [
        (json!({"name": "ci-deploy-bot"}), "a taken name"),
        (json!({"name": "CI Bot"}), "not a slug"),
        (
            json!({"name": "boss", "organization_role": "admin"}),
            "the admin role",
        ),
        (
            json!({"name": "odd", "organization_role": "owner"}),
            "no such role",
        ),
    ] {
        let (status, refused) = app.admin_post(ACCOUNTS, body).await;
        assert_eq!(status, 400, "{why}: {refused}");
        assert_eq!(refused["error"]["type"], "invalid_request_error", "{why}");
    }
    let other = create_account(&app, "nightly-evals").await;

    let (status, read) = app.admin_get(&format!("{ACCOUNTS}/{id}")).await;
    assert_eq!((status, &read), (200, &created));
    let (status, listed) = app.admin_get(&format!("{ACCOUNTS}?limit=1")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"], json!([created]));
    assert_eq!(listed["has_more"], true);
    let (_, next) = app
        .admin_get(&format!(
            "{ACCOUNTS}?limit=1&after_id={}",
            listed["last_id"].as_str().expect("last_id")
        ))
        .await;
    assert_eq!(next["data"][0]["id"], other.as_str());

    let (status, updated) = app
        .admin_post(
            &format!("{ACCOUNTS}/{id}"),
            json!({"description": "ships releases", "organization_role": "user"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["description"], "ships releases");
    assert_eq!(updated["organization_role"], "user");
    assert_eq!(updated["name"], "ci-deploy-bot");
    let (status, refused) = app
        .admin_post(&format!("{ACCOUNTS}/{id}"), json!({"organization_role": "admin"}))
        .await;
    assert_eq!(status, 400, "{refused}");

    let (status, deleted) = app
        .admin_send(reqwest::Method::DELETE, &format!("{ACCOUNTS}/{id}"), None)
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "type": "service_account_deleted"}));
    let (_, archived) = app.admin_get(&format!("{ACCOUNTS}/{id}")).await;
    assert!(archived["archived_at"].is_string(), "{archived}");
    let (status, _) = app
        .admin_post(&format!("{ACCOUNTS}/{id}"), json!({"description": "again"}))
        .await;
    assert_eq!(status, 400, "an archived account can't be changed");
    let (status, again) = app
        .admin_post(&format!("{ACCOUNTS}/{id}/archive"), json!({}))
        .await;
    assert_eq!(status, 200, "archiving again changes nothing");
    assert_eq!(again["archived_at"], archived["archived_at"]);

    let (_, live) = app.admin_get(ACCOUNTS).await;
    let live_ids: Vec<&Value> = live["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(live_ids, vec![&json!(other)]);
    let (_, all) = app.admin_get(&format!("{ACCOUNTS}?include_archived=true")).await;
    assert_eq!(all["data"].as_array().expect("data").len(), 2);

    let (_, audit) = app.admin_get("/v1/organizations/audit_events").await;
    let actions: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|event| event["subject"] == json!(id))
        .map(|event| {
            (
                event["action"].as_str().expect("action"),
                event["subject"].as_str().expect("subject"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("service_account.create", id.as_str()),
            ("service_account.update", id.as_str()),
            ("service_account.archive", id.as_str()),
        ]
    );
}

/// Goal: a key bound to an account is made only in a workspace the account belongs to,
/// shows its kind and account, calls the Messages API, and is refused with a 401 from the
/// next read of its record (within the key-cache bound) once the account is deleted; the
/// account's other keys go with it, and nobody else's.
#[tokio::test]
async fn a_service_accounts_key_works_in_its_workspace_until_the_account_is_deleted() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let account = create_account(&app, "ci-deploy-bot").await;
    let workspace = create_workspace(&app, "Robots").await;
    let elsewhere = create_workspace(&app, "Humans").await;

    for (workspace_id, why) in [
        (Some(&elsewhere), "a workspace it is not in"),
        (None, "the Default workspace"),
    ] {
        let (status, refused) = app
            .admin_post(
                "/v1/organizations/api_keys",
                json!({"name": "k", "workspace_id": workspace_id, "service_account_id": account}),
            )
            .await;
        assert_eq!(status, 400, "{why}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains("does not belong")),
            "{refused}"
        );
    }
    let (status, _) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "k", "service_account_id": "svac_01NoSuchAccount"}),
        )
        .await;
    assert_eq!(status, 404);

    add_to_workspace(&app, &workspace, &account).await;
    let created = create_key(&app, &workspace, &account).await;
    assert_eq!(created["key_type"], "service_account");
    assert_eq!(
        created["linked_account"],
        json!({"id": account, "type": "service_account"})
    );
    assert_eq!(created["workspace_id"], workspace.as_str());
    let key = secret(&created);
    let second = secret(&create_key(&app, &workspace, &account).await);
    let (_, listed) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys?service_account_id={account}"
        ))
        .await;
    assert_eq!(listed["data"].as_array().expect("data").len(), 2, "{listed}");

    let (status, reply) = message(&app, &key).await;
    assert_eq!(status, 200, "{reply}");

    let (status, _) = app
        .admin_send(reqwest::Method::DELETE, &format!("{ACCOUNTS}/{account}"), None)
        .await;
    assert_eq!(status, 200);
    past_the_key_cache(&app);
    for key in [&key, &second] {
        let (status, refused) = message(&app, key).await;
        assert_eq!(status, 401, "{refused}");
        assert_eq!(refused["error"]["type"], "authentication_error");
    }
    assert_eq!(message(&app, &app.api_key).await.0, 200, "a workspace key stays");
    let (_, archived) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys/{}",
            created["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(archived["status"], "archived");
    assert_eq!(archived["linked_account"]["id"], account.as_str());

    let (status, refused) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "k", "workspace_id": workspace, "service_account_id": account}),
        )
        .await;
    assert_eq!(status, 400, "an archived account gets no keys: {refused}");
}

/// Goal: an account joins workspaces from either side and lists them; its role can't change
/// to one it could not hold there; removing it from a workspace archives its keys there
/// (refused within the key-cache bound) and lists it there no more, while its keys in its
/// other workspaces work.
#[tokio::test]
async fn removing_a_service_account_from_a_workspace_stops_its_keys_there() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let account = create_account(&app, "ci-deploy-bot").await;
    let leaving = create_workspace(&app, "Old team").await;
    let staying = create_workspace(&app, "New team").await;
    add_to_workspace(&app, &leaving, &account).await;
    let (status, joined) = app
        .admin_post(
            &format!("{ACCOUNTS}/{account}/workspaces"),
            json!({"workspace_id": staying, "workspace_role": "workspace_user"}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["workspace_role"], "workspace_user");
    let (_, workspaces) = app.admin_get(&format!("{ACCOUNTS}/{account}/workspaces")).await;
    let roles: std::collections::BTreeSet<(String, String)> = workspaces["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|member| {
            (
                member["workspace_id"].to_string(),
                member["workspace_role"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (
                json!(leaving).to_string(),
                json!("workspace_developer").to_string()
            ),
            (json!(staying).to_string(), json!("workspace_user").to_string()),
        ]
        .into_iter()
        .collect()
    );
    let (status, refused) = app
        .admin_post(
            &format!("{ACCOUNTS}/{account}"),
            json!({"organization_role": "billing"}),
        )
        .await;
    assert_eq!(
        status, 400,
        "a billing role is billing in every workspace: {refused}"
    );
    let left_key = secret(&create_key(&app, &leaving, &account).await);
    let kept_key = secret(&create_key(&app, &staying, &account).await);
    assert_eq!(message(&app, &left_key).await.0, 200);

    let members = format!("/v1/organizations/workspaces/{leaving}/service_accounts");
    let (_, listed) = app.admin_get(&members).await;
    assert_eq!(listed["data"][0]["service_account_id"], account.as_str());
    let (status, removed) = app
        .admin_send(reqwest::Method::DELETE, &format!("{members}/{account}"), None)
        .await;
    assert_eq!(status, 200, "{removed}");
    let (status, _) = app.admin_get(&format!("{members}/{account}")).await;
    assert_eq!(status, 404);
    let (_, listed) = app.admin_get(&members).await;
    assert_eq!(listed["data"], json!([]));

    past_the_key_cache(&app);
    assert_eq!(message(&app, &left_key).await.0, 401);
    assert_eq!(message(&app, &kept_key).await.0, 200);
}

/// Goal: the usage and cost reports grouped by `account_id` (or `service_account_id`)
/// attribute a service account's key's usage to the account, and a workspace key's to no
/// account.
#[tokio::test]
async fn reports_attribute_usage_to_the_service_account_of_a_key() {
    let app = spawn_app().await;
    let account = create_account(&app, "ci-deploy-bot").await;
    let workspace = create_workspace(&app, "Robots").await;
    add_to_workspace(&app, &workspace, &account).await;
    let key = secret(&create_key(&app, &workspace, &account).await);
    for key in [&key, &key, &app.api_key] {
        assert_eq!(message(&app, key).await.0, 200);
    }

    let window = today_window(&app);
    for group in ["account_id", "service_account_id"] {
        let (status, usage) = app
            .admin_get(&format!(
                "/v1/organizations/usage_report/messages?{window}&bucket_width=1d&group_by[]={group}"
            ))
            .await;
        assert_eq!(status, 200, "{usage}");
        let results = usage["data"][0]["results"].as_array().expect("results");
        assert_eq!(results.len(), 2, "{usage}");
        let output_of = |account: Value| -> u64 {
            results
                .iter()
                .filter(|result| result["service_account_id"] == account)
                .map(|result| result["output_tokens"].as_u64().expect("tokens"))
                .sum()
        };
        let (robot, other) = (output_of(json!(account)), output_of(Value::Null));
        assert!(robot > 0 && other > 0, "{usage}");
        assert_eq!(robot, 2 * other, "two requests against one, alike");
        assert!(
            results.iter().all(|result| result["account_id"].is_null()),
            "no user is named: {usage}"
        );
    }
    let (_, ungrouped) = app
        .admin_get(&format!(
            "/v1/organizations/usage_report/messages?{window}&bucket_width=1d"
        ))
        .await;
    assert_eq!(
        ungrouped["data"][0]["results"][0]["service_account_id"],
        Value::Null,
        "named only when grouped"
    );

    let (status, cost) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=service_account_id"
        ))
        .await;
    assert_eq!(status, 200, "{cost}");
    let results = cost["data"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{cost}");
    assert!(
        results
            .iter()
            .any(|result| result["service_account_id"] == json!(account)),
        "{cost}"
    );
    assert!(
        results
            .iter()
            .any(|result| result.get("service_account_id").is_none()),
        "{cost}"
    );
}

/// Goal: another organization's admin key can neither see nor change an account, its
/// memberships or its keys: every call answers 404 as for an unknown id, and nothing
/// changes.
#[tokio::test]
async fn another_organizations_admin_key_cannot_see_or_touch_a_service_account() {
    let app = spawn_app().await;
    let account = create_account(&app, "ci-deploy-bot").await;
    let workspace = create_workspace(&app, "Robots").await;
    add_to_workspace(&app, &workspace, &account).await;
    let key = secret(&create_key(&app, &workspace, &account).await);
    let (_, before) = app.admin_get(&format!("{ACCOUNTS}/{account}")).await;

    let (_, other_key) = app.other_organization_admin_key().await;
    let as_other = |method: reqwest::Method, path: String, body: Option<Value>| {
        let request = app
            .client
            .request(method, app.url(&path))
            .header("x-api-key", &other_key);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let member = format!("/v1/organizations/workspaces/{workspace}/service_accounts/{account}");
    for (method, path, body) in [
        (reqwest::Method::GET, format!("{ACCOUNTS}/{account}"), None),
        (
            reqwest::Method::POST,
            format!("{ACCOUNTS}/{account}"),
            Some(json!({"description": "mine now"})),
        ),
        (reqwest::Method::DELETE, format!("{ACCOUNTS}/{account}"), None),
        (
            reqwest::Method::POST,
            format!("{ACCOUNTS}/{account}/archive"),
            Some(json!({})),
        ),
        (reqwest::Method::GET, member.clone(), None),
        (reqwest::Method::DELETE, member.clone(), None),
        (
            reqwest::Method::POST,
            "/v1/organizations/api_keys".to_owned(),
            Some(json!({"name": "stolen", "service_account_id": account})),
        ),
    ] {
        let (status, refused) = as_other(method.clone(), path.clone(), body).await;
        assert_eq!(status, 404, "{method} {path}: {refused}");
        assert_eq!(refused["error"]["type"], "not_found_error", "{method} {path}");
    }
    let (status, listed) = as_other(
        reqwest::Method::GET,
        format!("{ACCOUNTS}?include_archived=true"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"], json!([]));

    let (_, after) = app.admin_get(&format!("{ACCOUNTS}/{account}")).await;
    assert_eq!(before, after, "nothing changed");
    assert_eq!(app.admin_get(&member).await.0, 200);
    assert_eq!(message(&app, &key).await.0, 200, "its key still works");
}

/// Goal: the Console's API keys page shows a service account's key as such, naming the
/// account, beside the workspace keys.
#[tokio::test]
async fn the_console_shows_a_service_accounts_key_and_its_account() {
    let app = spawn_app().await;
    let account = create_account(&app, "ci-deploy-bot").await;
    let workspace = create_workspace(&app, "Robots").await;
    add_to_workspace(&app, &workspace, &account).await;
    let created = create_key(&app, &workspace, &account).await;
    let (client, cookie) = app.console_admin_session().await;
    let html = keys_page(&app, &client, &cookie).await;
    let row = html
        .split("<tr>")
        .find(|row| row.contains(created["partial_key_hint"].as_str().expect("hint")))
        .expect("the key's row");
    assert!(row.contains("<td>service_account</td>"), "{row}");
    assert!(row.contains("<td>ci-deploy-bot</td>"), "{row}");
    assert!(
        html.contains("<td>workspace</td>"),
        "the workspace keys stay as they are"
    );
}
