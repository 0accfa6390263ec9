//! Single sign-on to the Console over plain HTTP, against the test kit's OpenID Connect
//! provider (a real server: discovery, JWKS with two keys, authorization and token
//! endpoints): a person in a mapped group is provisioned with the roles their groups give
//! and follows them at each sign-in; every bad sign-in is refused without a session or a
//! user; a rotated key is picked up; losing the group ends the person's sessions; and with
//! password sign-in off, passwords, setup links and invites sign nobody in. The same flows
//! in a real browser are in `console`.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_testkit::{FakeOidc, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OidcPerson};

use crate::helpers::{Options, TestApp, spawn_app_with};

/// An app whose Console signs in through `oidc`, with password sign-in as `passwords` says.
pub(crate) async fn sso_app(oidc: &FakeOidc, passwords: bool) -> TestApp {
    let config = format!(
        r#"
        [console.sso]
        issuer = "{issuer}"
        client_id = "{OIDC_CLIENT_ID}"
        client_secret = "{OIDC_CLIENT_SECRET}"
        scopes = "openid email profile groups"
        allowed_email_domains = ["example.com"]
        password_sign_in = {passwords}
        [console.sso.groups."admins"]
        role = "admin"
        [console.sso.groups."engineering"]
        role = "developer"
        workspaces = {{ "Default" = "workspace_developer" }}
        [console.sso.groups."finance"]
        role = "billing"
        "#,
        issuer = oidc.issuer(),
    );
    spawn_app_with(Options {
        extra_config: Box::leak(config.into_boxed_str()),
        ..Options::default()
    })
    .await
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The value a response's `Set-Cookie` gives `name`, if it sets one.
pub(crate) fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|text| text.split(';').next()?.split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.to_owned())
}

/// How a sign-in through the provider ended.
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// The Console session's token, when one started.
    pub(crate) session: Option<String>,
}

/// Walks the flow a browser does: start, the provider's authorization, the callback with
/// the state cookie; `tamper` may change the callback's address and the cookie first.
async fn sign_in_with(app: &TestApp, tamper: impl FnOnce(String, String) -> (String, String)) -> Outcome {
    let client = client();
    let start = client
        .get(app.url("/console/sso/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(
        start.status(),
        StatusCode::SEE_OTHER,
        "start redirects to the provider"
    );
    let state_cookie = set_cookie(&start, "tollgate_sso_state").expect("the state is bound to the browser");
    let authorize = client.get(location(&start)).send().await.expect("authorization");
    let callback = location(&authorize);
    assert!(
        callback.starts_with(&app.url("/console/sso/callback")),
        "the provider sends the browser back: {callback}"
    );
    let (callback, state_cookie) = tamper(callback, state_cookie);
    let response = client
        .get(&callback)
        .header("cookie", format!("tollgate_sso_state={state_cookie}"))
        .send()
        .await
        .expect("callback");
    let status = response.status();
    let session = set_cookie(&response, "__Host-tollgate_session").filter(|token| !token.is_empty());
    if status == StatusCode::SEE_OTHER {
        assert_eq!(location(&response), "/console/overview");
    }
    Outcome {
        status,
        body: response.text().await.expect("body"),
        session,
    }
}

pub(crate) async fn sign_in(app: &TestApp) -> Outcome {
    sign_in_with(app, |callback, cookie| (callback, cookie)).await
}

/// Whether a session token still opens the overview.
pub(crate) async fn session_works(app: &TestApp, token: &str) -> bool {
    let response = client()
        .get(app.url("/console/overview"))
        .header("cookie", format!("__Host-tollgate_session={token}"))
        .send()
        .await
        .expect("overview");
    response.status() == StatusCode::OK
}

pub(crate) async fn user_by_email(app: &TestApp, email: &str) -> Option<tollgate_store::UserRecord> {
    app.tollgate
        .store()
        .users(&app.org_id)
        .await
        .expect("users")
        .into_iter()
        .find(|user| user.email == email)
}

async fn default_workspace_role(app: &TestApp, user_id: &str) -> Option<WorkspaceRole> {
    let workspace = app
        .tollgate
        .workspace_named(&app.org_id, "Default")
        .await
        .expect("the Default workspace");
    app.tollgate
        .store()
        .member(&workspace.id, user_id)
        .await
        .expect("member")
        .map(|member| member.role)
}

#[tokio::test]
async fn a_person_in_a_mapped_group_is_provisioned_with_the_roles_their_groups_give() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, true).await;
    oidc.sign_in_as(OidcPerson::new("Grace@Example.com", &["engineering", "unmapped"]));

    let outcome = sign_in(&app).await;
    assert_eq!(outcome.status, StatusCode::SEE_OTHER, "{}", outcome.body);
    let session = outcome.session.expect("a session started");
    assert!(session_works(&app, &session).await);
    let user = user_by_email(&app, "grace@example.com")
        .await
        .expect("provisioned on the spot");
    assert_eq!(user.role, OrgRole::Developer);
    assert_eq!(user.name, "Grace");
    assert_eq!(
        default_workspace_role(&app, &user.id).await,
        Some(WorkspaceRole::Developer),
        "the group's workspace role"
    );

    // Groups change at the provider: the roles follow at the next sign-in, on the same user.
    oidc.sign_in_as(OidcPerson::new("grace@example.com", &["finance"]));
    let outcome = sign_in(&app).await;
    assert_eq!(outcome.status, StatusCode::SEE_OTHER, "{}", outcome.body);
    let again = user_by_email(&app, "grace@example.com")
        .await
        .expect("the same user");
    assert_eq!(again.id, user.id);
    assert_eq!(again.role, OrgRole::Billing);
    assert_eq!(
        default_workspace_role(&app, &user.id).await,
        None,
        "no explicit membership the groups no longer give"
    );
    assert_eq!(
        app.tollgate
            .store()
            .users(&app.org_id)
            .await
            .expect("users")
            .len(),
        1,
        "one person, one user"
    );
}

#[tokio::test]
async fn every_bad_sign_in_is_refused_without_a_session_or_a_user() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, true).await;
    let person = OidcPerson::new("eve@example.com", &["engineering"]);
    oidc.sign_in_as(person.clone());

    let refused = async |label: &str, outcome: Outcome, status: StatusCode, says: &str| {
        assert_eq!(outcome.status, status, "{label}: {}", outcome.body);
        assert!(outcome.session.is_none(), "{label}: no session");
        assert!(
            outcome.body.contains(says),
            "{label}: says '{says}': {}",
            outcome.body
        );
    };

    oidc.issue_for_audience(Some("another-application"));
    refused(
        "wrong audience",
        sign_in(&app).await,
        StatusCode::UNAUTHORIZED,
        "issued for another application",
    )
    .await;
    oidc.issue_for_audience(None);

    oidc.issue_lifetime(-3600);
    refused(
        "expired",
        sign_in(&app).await,
        StatusCode::UNAUTHORIZED,
        "has expired",
    )
    .await;
    oidc.issue_lifetime(300);

    oidc.issue_as(Some("https://impostor.example"));
    refused(
        "wrong issuer",
        sign_in(&app).await,
        StatusCode::UNAUTHORIZED,
        "another identity provider",
    )
    .await;
    oidc.issue_as(None);

    // A state the server never issued, with a cookie to match it.
    let forged = sign_in_with(&app, |callback, _| {
        let mut url = reqwest::Url::parse(&callback).expect("callback URL");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "state" { "forged".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        (url.to_string(), "forged".to_owned())
    })
    .await;
    refused("forged state", forged, StatusCode::UNAUTHORIZED, "start again").await;
    // The right state, in a browser that did not start the attempt.
    let unbound = sign_in_with(&app, |callback, _| (callback, "another-browser".to_owned())).await;
    refused("unbound state", unbound, StatusCode::UNAUTHORIZED, "start again").await;

    oidc.sign_in_as(OidcPerson::new("eve@elsewhere.example", &["engineering"]));
    refused(
        "other domain",
        sign_in(&app).await,
        StatusCode::FORBIDDEN,
        "this email domain",
    )
    .await;

    oidc.sign_in_as(OidcPerson {
        email_verified: false,
        ..person.clone()
    });
    refused(
        "unverified",
        sign_in(&app).await,
        StatusCode::UNAUTHORIZED,
        "not verified",
    )
    .await;

    oidc.sign_in_as(OidcPerson::new("eve@example.com", &["visitors"]));
    refused(
        "no mapped group",
        sign_in(&app).await,
        StatusCode::FORBIDDEN,
        "none of your groups",
    )
    .await;

    // A code that was already exchanged, handed out again to a fresh attempt.
    oidc.sign_in_as(person);
    let first = sign_in(&app).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    oidc.replay_last_code();
    refused(
        "replayed code",
        sign_in(&app).await,
        StatusCode::UNAUTHORIZED,
        "refused to complete",
    )
    .await;

    let eve = user_by_email(&app, "eve@example.com").await.expect("eve");
    app.tollgate
        .store()
        .deactivate_user(&eve.id, app.tollgate.now())
        .await
        .expect("deactivated");
    refused(
        "deactivated",
        sign_in(&app).await,
        StatusCode::FORBIDDEN,
        "deactivated",
    )
    .await;
    assert!(
        !session_works(&app, &first.session.expect("session")).await,
        "signed out"
    );

    let users = app.tollgate.store().users(&app.org_id).await.expect("users");
    assert_eq!(
        users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(),
        vec!["eve@example.com"],
        "only the one good sign-in made a user"
    );
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_and_a_lost_group_ends_every_session() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, true).await;
    oidc.sign_in_as(OidcPerson::new("lin@example.com", &["engineering"]));
    let first = sign_in(&app).await.session.expect("signed in");

    oidc.rotate_key();
    let second = sign_in(&app).await;
    assert_eq!(
        second.status,
        StatusCode::SEE_OTHER,
        "the new key is fetched: {}",
        second.body
    );
    let second = second.session.expect("signed in under the new key");
    assert!(session_works(&app, &first).await && session_works(&app, &second).await);

    oidc.sign_in_as(OidcPerson::new("lin@example.com", &[]));
    let refused = sign_in(&app).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(!session_works(&app, &first).await, "the first session ended");
    assert!(!session_works(&app, &second).await, "the second session ended");
}

#[tokio::test]
async fn with_password_sign_in_off_only_single_sign_on_lets_anyone_in() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, false).await;
    app.tollgate
        .create_console_admin(
            &app.org_id,
            "ada@example.com",
            "Ada",
            "correct horse battery staple",
        )
        .await
        .expect("an admin with a password");

    let page = client()
        .get(app.url("/console/sign-in"))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("/console/sso/start"),
        "the page offers single sign-on"
    );
    assert!(!page.contains("id=\"password\""), "and no password field");

    let response = client()
        .post(app.url("/console/sign-in"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await
        .expect("sign-in");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("password sign-in is turned off")
    );
    assert!(
        app.tollgate
            .console_setup_token()
            .await
            .expect("setup token")
            .is_none(),
        "no setup link is minted"
    );
    let invite = app
        .tollgate
        .accept_console_invite("inv_anything", "Mallory", "correct horse battery staple")
        .await
        .expect_err("no invite signs anyone in with a password");
    assert!(
        invite.to_string().contains("password sign-in is turned off"),
        "{invite}"
    );

    oidc.sign_in_as(OidcPerson::new("ada@example.com", &["admins"]));
    let outcome = sign_in(&app).await;
    assert_eq!(outcome.status, StatusCode::SEE_OTHER, "{}", outcome.body);
    assert!(session_works(&app, &outcome.session.expect("session")).await);
}

/// Goal: a new person signing in from several tabs at once is one user, and every tab is
/// signed in (the sign-ins that lose the race to add them find the one that won).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_of_one_person_make_one_user() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, true).await;
    oidc.sign_in_as(OidcPerson::new("ida@example.com", &["engineering"]));
    let outcomes = futures_util::future::join_all((0..6).map(|_| sign_in(&app))).await;
    for outcome in &outcomes {
        assert_eq!(outcome.status, StatusCode::SEE_OTHER, "{}", outcome.body);
    }
    let users = app.tollgate.store().users(&app.org_id).await.expect("users");
    assert_eq!(users.len(), 1, "{users:?}");
}
