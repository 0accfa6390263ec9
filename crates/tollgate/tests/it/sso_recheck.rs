//! Single sign-on between sign-ins: people sign in through the test kit's OpenID Connect
//! provider (which hands out refresh tokens when `offline_access` is asked), then their
//! groups change at the provider, and the service's re-check (maintenance, on a manual
//! clock) asks the provider again. Losing the group, or being disabled there, ends the
//! person's Console sessions, personal keys (Claude Code's credential among them) and
//! Claude Code refreshes, and no one else's; a role change follows; a provider that is down
//! changes nothing. Also: a Claude Code refresh stops once the person's role no longer
//! reaches the key's workspace.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate_core::roles::OrgRole;
use tollgate_testkit::{FakeOidc, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OidcPerson};

use crate::helpers::{Options, TestApp, spawn_app_with};
use crate::sso::{session_works, sign_in, user_by_email};

/// An app on a manual clock whose Console signs in through `oidc`, re-checking groups
/// every 15 minutes.
async fn recheck_app(oidc: &FakeOidc) -> TestApp {
    let config = format!(
        r#"
        [console.sso]
        issuer = "{issuer}"
        client_id = "{OIDC_CLIENT_ID}"
        client_secret = "{OIDC_CLIENT_SECRET}"
        scopes = "openid email profile groups"
        allowed_email_domains = ["example.com"]
        recheck_minutes = 15
        [console.sso.groups."engineering"]
        role = "developer"
        [console.sso.groups."research"]
        role = "developer"
        workspaces = {{ "Research" = "workspace_developer" }}
        [console.sso.groups."finance"]
        role = "billing"
        "#,
        issuer = oidc.issuer(),
    );
    let app = spawn_app_with(Options {
        extra_config: Box::leak(config.into_boxed_str()),
        manual_clock: true,
        ..Options::default()
    })
    .await;
    app.tollgate
        .create_workspace(&app.org_id, "Research")
        .await
        .expect("the Research workspace");
    // The provider's tokens are checked against the app's clock, which the tests move on.
    oidc.issue_lifetime(6 * 3600);
    app
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A person signed in to the Console and to Claude Code.
struct SignedIn {
    email: String,
    session: String,
    access_token: String,
    refresh_token: String,
}

/// `email`, in `groups` at the provider, signs in to the Console through it and connects
/// Claude Code to `workspace`.
async fn signed_in(
    app: &TestApp,
    oidc: &FakeOidc,
    email: &str,
    groups: &[&str],
    workspace: &str,
) -> SignedIn {
    oidc.sign_in_as(OidcPerson::new(email, groups));
    let outcome = sign_in(app).await;
    assert_eq!(outcome.status, StatusCode::SEE_OTHER, "{}", outcome.body);
    let session = outcome.session.expect("a session");
    let user = app
        .tollgate
        .console_user(&session)
        .await
        .expect("session")
        .expect("signed in");
    let workspace = app
        .tollgate
        .workspace_named(&app.org_id, workspace)
        .await
        .expect("workspace");
    let grant = app
        .tollgate
        .start_device_login(&format!("client-{email}"))
        .await
        .expect("grant")
        .expect("not slowed down");
    app.tollgate
        .approve_device_login(&user, &grant.user_code, &workspace.id)
        .await
        .expect("approved");
    let tokens = app
        .tollgate
        .poll_device_login(grant.device_code.expose_secret())
        .await
        .expect("issued");
    SignedIn {
        email: email.to_owned(),
        session,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token.expose_secret().to_owned(),
    }
}

/// A Claude Code refresh over HTTP: the status and the JSON.
async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    let response = client()
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
        .send()
        .await
        .expect("token request");
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

async fn messages_status(app: &TestApp, bearer: &str) -> StatusCode {
    client()
        .post(app.url("/v1/messages"))
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
        .status()
}

impl TestApp {
    fn advance(&self, by: chrono::Duration) {
        self.clock.as_ref().expect("a manual clock").advance(by);
    }

    /// The next re-check round, once it is due, and then the key cache's bound.
    async fn recheck_round(&self) -> tollgate_service::SsoRecheckReport {
        self.advance(chrono::Duration::minutes(16));
        let report = self.tollgate.maintain().await.expect("maintenance").sso;
        self.advance(chrono::Duration::seconds(2));
        report
    }
}

/// Whether everything `person` signed in to still works: their Console session and their
/// Claude Code key. (The refresh is checked on its own: it uses the token up.)
async fn still_in(app: &TestApp, person: &SignedIn) -> (bool, StatusCode) {
    (
        session_works(app, &person.session).await,
        messages_status(app, &person.access_token).await,
    )
}

/// Goal: someone whose role no longer reaches the workspace a Claude Code sign-in was
/// approved for (their group that gave it is gone) gets `invalid_grant` at the next
/// refresh, though they are still in the organization.
#[tokio::test]
async fn a_claude_code_refresh_stops_once_the_persons_role_no_longer_reaches_its_workspace() {
    let oidc = FakeOidc::start().await;
    let app = recheck_app(&oidc).await;
    let ann = signed_in(&app, &oidc, "ann@example.com", &["research"], "Research").await;
    let (status, refreshed) = refresh(&app, &ann.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let next = refreshed["refresh_token"].as_str().expect("refresh").to_owned();

    // The research group is gone; engineering still lets her in, without Research.
    oidc.sign_in_as(OidcPerson::new("ann@example.com", &["engineering"]));
    let again = sign_in(&app).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);

    let (status, refused) = refresh(&app, &next).await;
    assert_eq!(
        (status, refused["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_grant")),
        "{refused}"
    );
}

/// Goal: losing the group at the provider ends, at the next re-check, the person's Console
/// session, their Claude Code key (within the key cache's bound) and its refresh, and leaves
/// a colleague whose groups still give access as they were.
#[tokio::test]
async fn losing_the_group_at_the_provider_ends_sessions_keys_and_refreshes_at_the_next_recheck() {
    let oidc = FakeOidc::start().await;
    let app = recheck_app(&oidc).await;
    let ann = signed_in(&app, &oidc, "ann@example.com", &["engineering"], "Default").await;
    let bob = signed_in(&app, &oidc, "bob@example.com", &["engineering"], "Default").await;
    assert_eq!(still_in(&app, &ann).await, (true, StatusCode::OK));

    oidc.set_groups(&ann.email, &["visitors"]);
    // Not yet due: nothing is asked.
    assert_eq!(
        app.tollgate.maintain().await.expect("maintenance").sso,
        tollgate_service::SsoRecheckReport::default()
    );
    let report = app.recheck_round().await;
    assert_eq!((report.checked, report.access_ended), (2, 1), "{report:?}");
    assert_eq!(oidc.refresh_requests(), 2, "each kept refresh token was used");

    assert_eq!(still_in(&app, &ann).await, (false, StatusCode::UNAUTHORIZED));
    assert_eq!(
        refresh(&app, &ann.refresh_token).await.1["error"],
        "invalid_grant"
    );
    assert_eq!(
        still_in(&app, &bob).await,
        (true, StatusCode::OK),
        "bob is untouched"
    );
    assert_eq!(refresh(&app, &bob.refresh_token).await.0, StatusCode::OK);

    let ann_user = user_by_email(&app, &ann.email).await.expect("still a user");
    assert!(
        app.tollgate
            .store()
            .user_deactivated_at(&ann_user.id)
            .await
            .expect("deactivation")
            .is_none(),
        "not deactivated: her group coming back lets her in again"
    );
    let audit = app.tollgate.audit_events(&app.org_id).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|entry| entry.action == "sso.access_ended" && entry.subject == ann_user.id),
        "{audit:?}"
    );
}

/// Goal: a person the provider disabled (it refuses their refresh with `invalid_grant`)
/// loses access as a lost group does; a colleague's role change follows their groups, and
/// the refresh tokens the provider rotates are kept, so later rounds keep working.
#[tokio::test]
async fn a_person_disabled_at_the_provider_loses_access_and_a_role_change_follows() {
    let oidc = FakeOidc::start().await;
    let app = recheck_app(&oidc).await;
    let ann = signed_in(&app, &oidc, "ann@example.com", &["engineering"], "Default").await;
    let bob = signed_in(&app, &oidc, "bob@example.com", &["engineering"], "Default").await;

    oidc.disable(&ann.email);
    oidc.set_groups(&bob.email, &["finance"]);
    let report = app.recheck_round().await;
    assert_eq!(
        (report.checked, report.access_ended, report.roles_changed),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(still_in(&app, &ann).await, (false, StatusCode::UNAUTHORIZED));
    assert_eq!(
        refresh(&app, &ann.refresh_token).await.1["error"],
        "invalid_grant"
    );
    let bob_user = user_by_email(&app, &bob.email).await.expect("bob");
    assert_eq!(bob_user.role, OrgRole::Billing);
    assert!(
        session_works(&app, &bob.session).await,
        "a role change keeps the session"
    );
    let audit = app.tollgate.audit_events(&app.org_id).await.expect("audit");
    assert!(
        audit.iter().any(|entry| entry.action == "sso.roles_changed"
            && entry.subject == bob_user.id
            && entry.details.contains("developer -> billing")),
        "{audit:?}"
    );

    // The provider rotated bob's refresh token; the next round uses the new one.
    oidc.set_groups(&bob.email, &["engineering"]);
    let report = app.recheck_round().await;
    assert_eq!((report.checked, report.roles_changed), (1, 1), "{report:?}");
    let bob_user = user_by_email(&app, &bob.email).await.expect("bob");
    assert_eq!(bob_user.role, OrgRole::Developer);
    assert_eq!(still_in(&app, &bob).await, (true, StatusCode::OK));
}

/// Goal: while the provider cannot answer, a re-check changes nothing (no one is locked out
/// because the provider is down), and the round after it is back applies what it says.
#[tokio::test]
async fn an_unreachable_provider_changes_nothing_until_it_answers() {
    let oidc = FakeOidc::start().await;
    let app = recheck_app(&oidc).await;
    let ann = signed_in(&app, &oidc, "ann@example.com", &["engineering"], "Default").await;
    let bob = signed_in(&app, &oidc, "bob@example.com", &["engineering"], "Default").await;

    oidc.set_groups(&ann.email, &[]);
    oidc.set_down(true);
    let report = app.recheck_round().await;
    assert_eq!(
        (report.checked, report.unchanged, report.access_ended),
        (2, 2, 0),
        "{report:?}"
    );
    assert_eq!(still_in(&app, &ann).await, (true, StatusCode::OK));
    assert_eq!(still_in(&app, &bob).await, (true, StatusCode::OK));

    oidc.set_down(false);
    let report = app.recheck_round().await;
    assert_eq!((report.checked, report.access_ended), (2, 1), "{report:?}");
    assert_eq!(still_in(&app, &ann).await, (false, StatusCode::UNAUTHORIZED));
    assert_eq!(still_in(&app, &bob).await, (true, StatusCode::OK));
}
