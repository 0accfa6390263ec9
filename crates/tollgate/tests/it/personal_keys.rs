//! Key kinds end to end (#19): personal keys, bound to a user and refused once the user is
//! removed (within the key-cache bound), and the models a key may call, refused in each
//! surface's envelope, for Message Batches too; the Admin API and the Console show both.

use serde_json::{Value, json};
use tollgate_core::roles::OrgRole;

use crate::helpers::{Options, TestApp, chat_body, message_body, spawn_app, spawn_app_with};

/// Adds a user to the app's organization directly (the operator's way); their id.
async fn add_user(app: &TestApp, email: &str) -> String {
    let organization = app.tollgate.organization_named("Default").await.expect("org");
    app.tollgate
        .operator_of(&organization, "test")
        .add_user(email, "Dev Eloper", OrgRole::Developer)
        .await
        .expect("user added")
        .id
}

/// Creates an API key through the Admin API with `fields` besides its name: the key object
/// with its secret.
async fn create_key(app: &TestApp, fields: Value) -> Value {
    let mut body = json!({"name": "a key"});
    body.as_object_mut()
        .expect("object")
        .extend(fields.as_object().expect("object").clone());
    let (status, created) = app.admin_post("/v1/organizations/api_keys", body).await;
    assert_eq!(status, 200, "{created}");
    created
}

pub(crate) fn secret(created: &Value) -> String {
    created["api_key_secret"].as_str().expect("secret").to_owned()
}

/// `POST path` with `key` the way each surface's clients send it: `x-api-key` for
/// Anthropic's paths, a bearer token for OpenAI's.
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

/// Moves the app's manual clock past the key-cache TTL, so every cached key record is read
/// again.
pub(crate) fn past_the_key_cache(app: &TestApp) {
    let clock = app.clock.as_ref().expect("manual clock");
    clock.advance(chrono::Duration::milliseconds(
        i64::try_from(app.config.gateway.key_cache_ttl_millis).expect("ttl") + 1,
    ));
}

/// Goal: a personal key names its user and works until the user is removed; from the next
/// read of the key record (at most one key-cache TTL later) it is refused with a 401
/// `authentication_error`, and the Admin API shows it archived, still naming its owner.
#[tokio::test]
async fn a_removed_users_personal_key_is_refused_after_the_key_cache_bound() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let user_id = add_user(&app, "dev@example.com").await;
    let created = create_key(&app, json!({"user_id": user_id})).await;
    assert_eq!(created["key_type"], "personal");
    assert_eq!(created["linked_account"], json!({"id": user_id, "type": "user"}));
    assert_eq!(created["allowed_models"], json!([]));
    let key = secret(&created);
    let shared = create_key(&app, json!({})).await;
    assert_eq!(shared["key_type"], "workspace");
    assert_eq!(shared["linked_account"], Value::Null);

    let (_, listed) = app
        .admin_get(&format!("/v1/organizations/api_keys?user_id={user_id}"))
        .await;
    let ids: Vec<&Value> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|key| &key["id"])
        .collect();
    assert_eq!(ids, vec![&created["id"]], "the user's personal keys only");
    let (status, refused) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "nobody's", "user_id": "user_01NoSuchUser"}),
        )
        .await;
    assert_eq!(status, 404, "{refused}");

    let body = message_body("fake-sonnet");
    assert_eq!(call(&app, &key, "/v1/messages", &body).await.0, 200);
    assert_eq!(
        call(&app, &key, "/v1/chat/completions", &chat_body("fake-sonnet"))
            .await
            .0,
        200
    );

    let (status, _) = app
        .admin_send(
            reqwest::Method::DELETE,
            &format!("/v1/organizations/users/{user_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    past_the_key_cache(&app);

    let (status, refused) = call(&app, &key, "/v1/messages", &body).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"]["type"], "authentication_error");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("archived")),
        "{refused}"
    );
    let (status, refused) = call(&app, &key, "/v1/chat/completions", &chat_body("fake-sonnet")).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_api_key");
    assert_eq!(
        call(&app, &secret(&shared), "/v1/messages", &body).await.0,
        200,
        "a workspace key stays"
    );

    let (_, archived) = app
        .admin_get(&format!(
            "/v1/organizations/api_keys/{}",
            created["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(archived["status"], "archived");
    assert_eq!(archived["key_type"], "personal");
    assert_eq!(archived["linked_account"]["id"], user_id.as_str());
}

/// Goal: a key with allowed models calls them by id or alias, and any other model is
/// refused with 403 `permission_error` before anything is reserved: in Anthropic's envelope
/// on `/v1/messages` (and `count_tokens`, and for a Message Batch naming it), in OpenAI's on
/// Chat Completions and Responses; `/v1/models` lists only its models. Changing the list
/// takes effect within the key-cache TTL.
#[tokio::test]
async fn a_key_calls_only_its_allowed_models_in_each_surfaces_envelope() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let (status, refused) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "typo", "allowed_models": ["fake-sonet"]}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    let created = create_key(&app, json!({"allowed_models": ["fake-sonnet"]})).await;
    assert_eq!(created["allowed_models"], json!(["fake-sonnet"]));
    let key = secret(&created);
    let balance_before = app.balance().await;
    let models: Value = app
        .client
        .get(app.url("/v1/models"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let ids: Vec<&Value> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|model| &model["id"])
        .collect();
    assert_eq!(ids, vec!["fake-sonnet"], "the key sees only its models");

    assert_eq!(
        call(&app, &key, "/v1/messages", &message_body("fake-sonnet"))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, &key, "/v1/messages", &message_body("fake-sonnet-20991231"))
            .await
            .0,
        200,
        "an alias of an allowed model is that model"
    );
    let spent = app.balance().await;

    let (status, refused) = call(&app, &key, "/v1/messages", &message_body("fake-gpt")).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"]["type"], "permission_error");
    assert!(refused["request_id"].is_string(), "{refused}");
    let count = json!({"model": "fake-gpt", "messages": [{"role": "user", "content": "Hi"}]});
    let (status, refused) = call(&app, &key, "/v1/messages/count_tokens", &count).await;
    assert_eq!(
        (status, &refused["error"]["type"]),
        (403, &json!("permission_error"))
    );

    for (path, body) in [
        ("/v1/chat/completions", chat_body("fake-gpt")),
        (
            "/v1/responses",
            json!({"model": "fake-gpt", "input": "Hello there"}),
        ),
    ] {
        let (status, refused) = call(&app, &key, path, &body).await;
        assert_eq!(status, 403, "{path}: {refused}");
        assert!(
            refused.get("type").is_none(),
            "{path}: OpenAI's envelope: {refused}"
        );
        assert_eq!(refused["error"]["type"], "permission_error", "{path}");
        assert_eq!(refused["error"]["param"], "model", "{path}");
    }

    let batch = json!({"requests": [
        {"custom_id": "allowed", "params": message_body("fake-sonnet")},
        {"custom_id": "refused", "params": message_body("fake-gpt")},
    ]});
    let (status, refused) = call(&app, &key, "/v1/messages/batches", &batch).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["type"], "permission_error");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("requests.1.params")),
        "{refused}"
    );
    assert_eq!(app.balance().await, spent, "a refusal reserves nothing");
    assert_ne!(spent, balance_before);

    let (status, updated) = app
        .admin_post(
            &format!(
                "/v1/organizations/api_keys/{}",
                created["id"].as_str().expect("id")
            ),
            json!({"allowed_models": []}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["allowed_models"], json!([]));
    past_the_key_cache(&app);
    assert_eq!(
        call(&app, &key, "/v1/chat/completions", &chat_body("fake-gpt"))
            .await
            .0,
        200
    );
}

/// The Console's API keys page, signed in with `cookie`.
pub(crate) async fn keys_page(app: &TestApp, client: &reqwest::Client, cookie: &str) -> String {
    let response = client
        .get(app.url("/console/keys"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(response.status(), 200);
    response.text().await.expect("html")
}

/// Goal: the Console's key list shows each key's type, linked account and models, and an
/// admin creates a personal key with allowed models there; the Admin API shows the same.
#[tokio::test]
async fn the_console_creates_a_personal_key_and_shows_its_linked_account() {
    let app = spawn_app().await;
    let (client, cookie) = app.console_admin_session().await;
    let (_, users) = app
        .admin_get("/v1/organizations/users?email=ada@example.com")
        .await;
    let ada = users["data"][0]["id"].as_str().expect("ada's id").to_owned();
    let html = keys_page(&app, &client, &cookie).await;
    assert!(html.contains("Linked account"), "the list has the column");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let created = client
        .post(app.url("/console/keys"))
        .header(reqwest::header::COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "ada's laptop"),
            ("workspace", "default"),
            ("user", ada.as_str()),
            ("models", "fake-sonnet, claude-sonnet-4-6"),
        ])
        .send()
        .await
        .expect("created");
    assert_eq!(created.status(), 200);
    assert!(created.text().await.expect("html").contains("sk-tg-api01-"));

    let html = keys_page(&app, &client, &cookie).await;
    let row = html
        .split("<tr>")
        .find(|row| row.contains("ada&#39;s laptop") || row.contains("ada's laptop"))
        .expect("the new key's row");
    assert!(row.contains("personal"), "{row}");
    assert!(row.contains("ada@example.com"), "{row}");
    assert!(row.contains("fake-sonnet, claude-sonnet-4-6"), "{row}");

    let (_, listed) = app.admin_get("/v1/organizations/api_keys").await;
    let key = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|key| key["name"] == "ada's laptop")
        .expect("listed");
    assert_eq!(key["key_type"], "personal");
    assert_eq!(key["linked_account"], json!({"id": ada, "type": "user"}));
    assert_eq!(key["allowed_models"], json!(["fake-sonnet", "claude-sonnet-4-6"]));
    let first_start_key = listed["data"]
        .as_array()
        .expect("data")
        .last()
        .expect("first key");
    assert_eq!(first_start_key["key_type"], "workspace");
}

/// The query of a report window over today (UTC), one daily bucket.
pub(crate) fn today_window(app: &TestApp) -> String {
    let today = tollgate_core::reports::BucketWidth::Day.snap(app.tollgate.now());
    format!(
        "starting_at={}&ending_at={}",
        today.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (today + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Goal: the usage and cost reports grouped by `account_id` attribute a personal key's
/// usage to its user (still after the user is removed) and a workspace key's to nobody;
/// the groups add up to the ungrouped report.
#[tokio::test]
async fn reports_group_usage_and_cost_by_the_user_of_a_personal_key() {
    let app = spawn_app().await;
    let user_id = add_user(&app, "dev@example.com").await;
    let personal = secret(&create_key(&app, json!({"user_id": user_id})).await);
    for key in [&personal, &personal, &app.api_key] {
        assert_eq!(
            call(&app, key, "/v1/messages", &message_body("fake-sonnet"))
                .await
                .0,
            200
        );
    }
    let (status, _) = app
        .admin_send(
            reqwest::Method::DELETE,
            &format!("/v1/organizations/users/{user_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let window = today_window(&app);
    let (status, usage) = app
        .admin_get(&format!(
            "/v1/organizations/usage_report/messages?{window}&bucket_width=1d&group_by[]=account_id"
        ))
        .await;
    assert_eq!(status, 200, "{usage}");
    let results = usage["data"][0]["results"].as_array().expect("results");
    let output_of = |account: Value| -> u64 {
        results
            .iter()
            .filter(|result| result["account_id"] == account)
            .map(|result| result["output_tokens"].as_u64().expect("tokens"))
            .sum()
    };
    assert_eq!(results.len(), 2, "{usage}");
    let (user_output, other_output) = (output_of(json!(user_id)), output_of(Value::Null));
    assert!(user_output > 0 && other_output > 0, "{usage}");
    assert_eq!(user_output, 2 * other_output, "two requests against one, alike");

    let (status, cost) = app
        .admin_get(&format!(
            "/v1/organizations/cost_report?{window}&group_by[]=account_id"
        ))
        .await;
    assert_eq!(status, 200, "{cost}");
    let results = cost["data"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{cost}");
    assert!(
        results
            .iter()
            .any(|result| result["account_id"] == json!(user_id)),
        "{cost}"
    );
    assert!(
        results.iter().any(|result| result.get("account_id").is_none()),
        "a workspace key's cost has no account: {cost}"
    );
}

/// Goal: an admin deactivates a member in the Console: the member's sessions end at once,
/// their password no longer signs them in (saying why), and their personal key is refused
/// from the next read of its record; reactivated, they sign in again, but the key stays
/// archived. An admin cannot deactivate themself.
#[tokio::test]
async fn a_deactivated_user_is_signed_out_and_kept_out_until_reactivated() {
    const PASSWORD: &str = "a developer's long password";
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let user_id = add_user(&app, "dev@example.com").await;
    app.tollgate
        .set_console_password(&user_id, PASSWORD)
        .await
        .expect("password");
    let key = secret(&create_key(&app, json!({"user_id": user_id})).await);
    let body = message_body("fake-sonnet");
    assert_eq!(call(&app, &key, "/v1/messages", &body).await.0, 200);
    let (status, session, _) = app.console_sign_in("dev@example.com", PASSWORD).await;
    assert_eq!(status, 303);
    let session = session.expect("the developer's session");
    let overview = async |cookie: &str| {
        app.console_client()
            .get(app.url("/console/overview"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .expect("overview")
            .status()
    };
    assert_eq!(overview(&session).await, 200);

    let (client, admin) = app.console_admin_session().await;
    let members = async || {
        client
            .get(app.url("/console/members"))
            .header(reqwest::header::COOKIE, &admin)
            .send()
            .await
            .expect("members")
            .text()
            .await
            .expect("html")
    };
    let html = members().await;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let post = async |path: String| {
        client
            .post(app.url(&path))
            .header(reqwest::header::COOKIE, &admin)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .expect("posted")
            .status()
    };
    assert!(html.contains(&format!("/console/members/{user_id}/deactivate")));
    let (_, users) = app
        .admin_get("/v1/organizations/users?email=ada@example.com")
        .await;
    let ada = users["data"][0]["id"].as_str().expect("ada").to_owned();
    assert_eq!(
        post(format!("/console/members/{ada}/deactivate")).await,
        400,
        "not yourself"
    );

    assert_eq!(post(format!("/console/members/{user_id}/deactivate")).await, 303);
    assert!(members().await.contains("Deactivated"), "the list says so");
    assert_eq!(overview(&session).await, 303, "the session ended at once");
    let (status, cookie, page) = app.console_sign_in("dev@example.com", PASSWORD).await;
    assert_eq!(status, 403, "{page}");
    assert!(cookie.is_none());
    assert!(page.contains("your account is deactivated"), "{page}");
    past_the_key_cache(&app);
    let (status, refused) = call(&app, &key, "/v1/messages", &body).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["type"], "authentication_error");

    assert_eq!(post(format!("/console/members/{user_id}/reactivate")).await, 303);
    let (status, _, page) = app.console_sign_in("dev@example.com", PASSWORD).await;
    assert_eq!(status, 303, "signs in again: {page}");
    assert_eq!(
        call(&app, &key, "/v1/messages", &body).await.0,
        401,
        "the personal key stays archived"
    );
    app.assert_ledger_clean().await;
}
