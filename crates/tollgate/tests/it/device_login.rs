//! Claude Code's `/login` against tollgate, end to end: the exchanges Claude Code's gateway
//! protocol makes (metadata, an empty device authorization, polling, refresh), the person's
//! browser step through the Console and the test kit's OpenID Connect provider, and then the
//! real Claude Code (pinned) running a prompt on the credential it keeps, refreshing it at
//! the gateway first. The `/login` screen itself needs a terminal and a machine-wide policy
//! file, so the test plays the client's part of the sign-in and hands the real client what
//! it stores after one; every request it sends is the one Claude Code sends.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate_testkit::{FakeOidc, OidcPerson};

use crate::helpers::TestApp;
use crate::sso::{location, set_cookie, sso_app};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `POST /oauth/token` with a form, as Claude Code sends it: the status and the JSON.
async fn token(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client()
        .post(app.url("/oauth/token"))
        .form(form)
        .send()
        .await
        .expect("token request");
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

/// The person's part in the browser: open the verification link, sign in through the
/// identity provider, come back to the device page and approve the code for the first
/// workspace offered. The page shown at the end.
async fn approve_in_the_browser(app: &TestApp, link: &str, user_code: &str) -> String {
    let browser = client();
    let to_sign_in = browser.get(link).send().await.expect("verification link");
    assert_eq!(
        to_sign_in.status(),
        StatusCode::SEE_OTHER,
        "signed out: to sign-in"
    );
    let sign_in_page = browser
        .get(app.url(&location(&to_sign_in)))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("html");
    let sso_link = sign_in_page
        .split("id=\"sso\"")
        .nth(1)
        .and_then(|rest| rest.split("href=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("the single sign-on link")
        .replace("&amp;", "&");
    assert!(
        sso_link.contains("next="),
        "it returns to the device page: {sso_link}"
    );
    let start = browser.get(app.url(&sso_link)).send().await.expect("start");
    let cookies = ["tollgate_sso_state", "tollgate_sso_next"]
        .map(|name| format!("{name}={}", set_cookie(&start, name).expect(name)))
        .join("; ");
    let at_provider = browser.get(location(&start)).send().await.expect("provider");
    let callback = browser
        .get(location(&at_provider))
        .header("cookie", &cookies)
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), StatusCode::SEE_OTHER);
    let back_to = location(&callback);
    assert_eq!(back_to, format!("/console/device?user_code={user_code}"));
    let session = format!(
        "__Host-tollgate_session={}",
        set_cookie(&callback, "__Host-tollgate_session").expect("a session")
    );
    let page = browser
        .get(app.url(&back_to))
        .header("cookie", &session)
        .send()
        .await
        .expect("device page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains(&format!("value=\"{user_code}\"")),
        "the code is filled in"
    );
    let field = |name: &str| {
        page.split(&format!("name=\"{name}\""))
            .nth(1)
            .and_then(|rest| rest.split("value=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {name} on {page}"))
            .to_owned()
    };
    let (csrf, workspace_id) = (field("csrf"), field("workspace_id"));
    browser
        .post(app.url("/console/device"))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("user_code", user_code),
            ("workspace_id", workspace_id.as_str()),
        ])
        .send()
        .await
        .expect("approve")
        .text()
        .await
        .expect("html")
}

async fn messages_status(app: &TestApp, bearer: &str) -> reqwest::Response {
    client()
        .post(app.url("/v1/messages?beta=true"))
        .bearer_auth(bearer)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "claude-opus-4-8",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hello"}],
        }))
        .send()
        .await
        .expect("messages")
}

/// Runs the real Claude Code's `claude -p` in a HOME that holds what its `/login` keeps
/// after signing in to `app`: the gateway's trust pin and the credential. Its stdout and
/// stderr, whether it succeeded, and the credential file afterwards.
async fn claude_on_the_signed_in_credential(
    app: &TestApp,
    access: &str,
    refresh: &str,
) -> (bool, String, Value) {
    let home = tempfile::tempdir().expect("a HOME for Claude Code");
    let cwd = home.path().to_string_lossy().into_owned();
    std::fs::write(
        home.path().join(".claude.json"),
        json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "lastOnboardingVersion": crate::claude_code::CLAUDE_CODE_VERSION,
            "projects": {cwd: {"hasTrustDialogAccepted": true}},
        })
        .to_string(),
    )
    .expect("claude.json");
    std::fs::create_dir_all(home.path().join(".claude")).expect(".claude");
    let credentials = home.path().join(".claude/.credentials.json");
    // Within five minutes of its expiry, so Claude Code refreshes it at the gateway first.
    let expires_at = tollgate_service::Clock::now(&tollgate_service::SystemClock).timestamp_millis() + 60_000;
    std::fs::write(
        &credentials,
        json!({
            "gatewayTrust": {"127.0.0.1": "http-loopback"},
            "enterpriseGateway": {
                "url": app.address,
                "jwt": access,
                "expiresAt": expires_at,
                "tokenEndpoint": app.url("/oauth/token"),
                "idpRefreshToken": refresh,
            },
        })
        .to_string(),
    )
    .expect("credentials");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).expect("0600");
    }
    let home_path = home.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let claude =
            crate::claude_code::claude_binary().unwrap_or_else(|error| panic!("Claude Code: {error}"));
        Command::new("timeout")
            .arg("240")
            .arg(&claude)
            .args(["-p", "Reply with the word pong", "--output-format", "json"])
            .current_dir(&home_path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home_path)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("NO_PROXY", "*")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("Claude Code starts")
    })
    .await
    .expect("the Claude Code task ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = std::fs::read_to_string(&credentials)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (output.status.success(), text, stored)
}

/// Goal: a developer signs Claude Code in through the organization's identity provider and
/// it gets a credential of their own: a personal key in the workspace they chose, issued
/// once, refreshed with a one-use refresh token (the last access token stopping), used by
/// the real Claude Code after it refreshes it itself, and cut off, refresh and all, when the
/// person is deactivated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_signs_in_through_the_identity_provider_with_a_key_of_the_persons_own() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, false).await;
    oidc.sign_in_as(OidcPerson::new("dev@example.com", &["engineering"]));

    let metadata: Value = client()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(
        metadata["device_authorization_endpoint"],
        app.url("/oauth/device_authorization")
    );
    assert_eq!(metadata["token_endpoint"], app.url("/oauth/token"));

    // Claude Code's request: an empty form.
    let grant: Value = client()
        .post(app.url("/oauth/device_authorization"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "0")
        .send()
        .await
        .expect("device authorization")
        .json()
        .await
        .expect("json");
    let device_code = grant["device_code"].as_str().expect("device_code").to_owned();
    let user_code = grant["user_code"].as_str().expect("user_code").to_owned();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX: {user_code}");
    assert_eq!(grant["interval"], 5);
    let poll = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", device_code.as_str()),
    ];
    assert_eq!(
        token(&app, &poll).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "authorization_pending", "error_description": "waiting for the sign-in in the browser"})
        )
    );
    assert_eq!(
        token(&app, &poll).await.1["error"],
        "slow_down",
        "polled again at once"
    );

    let link = grant["verification_uri_complete"]
        .as_str()
        .expect("complete link");
    let approved = approve_in_the_browser(&app, link, &user_code).await;
    assert!(approved.contains("Claude Code is connected"), "{approved}");

    let (status, issued) = token(&app, &poll).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 3600);
    let access = issued["access_token"].as_str().expect("access").to_owned();
    let refresh = issued["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(
        token(&app, &poll).await.1["error"],
        "expired_token",
        "issued once"
    );

    let dev = app
        .tollgate
        .store()
        .users(&app.org_id)
        .await
        .expect("users")
        .into_iter()
        .find(|user| user.email == "dev@example.com")
        .expect("provisioned by single sign-on");
    let keys = app
        .tollgate
        .store()
        .list_keys(&app.org_id, tollgate_core::keys::KeyKind::Api, None)
        .await
        .expect("keys");
    let key = keys
        .iter()
        .find(|key| key.user_id.as_deref() == Some(dev.id.as_str()))
        .expect("a personal key of the developer");
    assert_eq!(key.name, tollgate_service::DEVICE_KEY_NAME);
    assert!(key.expires_at.is_some(), "it expires unless refreshed");
    assert_eq!(messages_status(&app, &access).await.status(), StatusCode::OK);

    let settings = client()
        .get(app.url("/managed/settings"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("settings");
    assert_eq!(settings.status(), StatusCode::NO_CONTENT, "no policy to push");

    // A refresh: the next access token, the last one stops, and a refresh token works once.
    let (status, refreshed) = token(
        &app,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let access = refreshed["access_token"].as_str().expect("access").to_owned();
    let refresh_next = refreshed["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, again) = token(
        &app,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, again["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_grant"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let stopped = messages_status(&app, issued["access_token"].as_str().expect("first")).await;
    assert_eq!(stopped.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        stopped.headers()["x-should-retry"],
        "false",
        "Claude Code stops at once"
    );

    // The real Claude Code on what its /login keeps: it refreshes near expiry, reads the
    // settings, and answers on the developer's key.
    let (success, output, stored) = claude_on_the_signed_in_credential(&app, &access, &refresh_next).await;
    assert!(success, "Claude Code failed:\n{output}");
    let kept = &stored["enterpriseGateway"];
    assert_ne!(
        kept["jwt"],
        json!(access),
        "it refreshed the token at the gateway: {stored}"
    );
    assert_ne!(
        kept["idpRefreshToken"],
        json!(refresh_next),
        "and took the next refresh token"
    );
    app.wait_for_settlement().await;
    let records = app.usage_records().await;
    assert!(records.len() >= 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|record| record.api_key_id.as_deref() == Some(key.id.as_str())),
        "every request billed to the developer's own key"
    );

    // Deactivated: the key stops at once (within the key cache) and no refresh works.
    let latest_access = kept["jwt"].as_str().expect("jwt").to_owned();
    let latest_refresh = kept["idpRefreshToken"].as_str().expect("refresh").to_owned();
    app.tollgate
        .store()
        .deactivate_user(&dev.id, app.tollgate.now())
        .await
        .expect("deactivated");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        messages_status(&app, &latest_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, refused) = token(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &latest_refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_grant"))
    );
    app.assert_ledger_clean().await;
}

/// Goal: one client address cannot flood the grants table: past its allowance in the window,
/// starting a sign-in is refused with RFC 8628's `slow_down` and a `retry-after`.
#[tokio::test]
async fn a_client_starting_sign_ins_without_end_is_slowed_down() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, false).await;
    let start = async || {
        client()
            .post(app.url("/oauth/device_authorization"))
            .send()
            .await
            .expect("device authorization")
    };
    for _ in 0..30 {
        assert_eq!(start().await.status(), StatusCode::OK);
    }
    let refused = start().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "slow_down");
}
