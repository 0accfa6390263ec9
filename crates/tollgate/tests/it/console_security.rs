//! The Console against takeover and guessing, over plain HTTP: the setup link works once,
//! only the latest one works, and none works once an admin exists; sign-in attempts are
//! counted before the password is checked, so concurrent guesses cannot outrun the limit;
//! password checks beyond a cap are refused at once; and behind a trusted proxy each
//! client has its own limit while a forwarded address from anyone else is ignored.

use futures_util::future::join_all;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tollgate_service::PASSWORD_CHECKS_MAX;

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";
const WRONG_PASSWORD: &str = "not the password at all";
/// The service's limit of counted sign-in attempts per email in a window.
const ATTEMPTS_PER_EMAIL_MAX: usize = 10;
/// The service's limit of counted sign-in attempts per client address in a window.
const ATTEMPTS_PER_CLIENT_MAX: usize = 50;

/// An app whose clock stands still: sign-in attempts are counted in fixed 15-minute windows
/// of the service's clock, and a test that counts them must not straddle a window's end
/// (it did, at 21:45 one evening, and found its fiftieth guess counted in a fresh window).
fn window_held() -> Options {
    Options {
        manual_clock: true,
        ..Options::default()
    }
}

/// A client that shows redirects instead of following them: a sign-in that works answers
/// 303 with the session cookie.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

async fn sign_in(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, String) {
    let mut request = client
        .post(app.url("/console/sign-in"))
        .form(&[("email", email), ("password", password)]);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.expect("sign-in sent");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

async fn create_admin(app: &TestApp, email: &str) {
    app.tollgate
        .create_console_admin(&app.org_id, email, "Ada", PASSWORD)
        .await
        .expect("admin created");
}

async fn setup_page_status(app: &TestApp, token: &str) -> StatusCode {
    client()
        .get(app.url(&format!("/console/setup?token={token}")))
        .send()
        .await
        .expect("setup page")
        .status()
}

async fn redeem_setup(app: &TestApp, token: &str, email: &str) -> StatusCode {
    client()
        .post(app.url("/console/setup"))
        .form(&[
            ("token", token),
            ("email", email),
            ("name", "Mallory"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("setup sent")
        .status()
}

async fn admin_emails(app: &TestApp) -> Vec<String> {
    app.tollgate
        .store()
        .users(&app.org_id)
        .await
        .expect("users")
        .into_iter()
        .filter(|user| user.role == tollgate_core::roles::OrgRole::Admin)
        .map(|user| user.email)
        .collect()
}

#[tokio::test]
async fn two_starts_leave_only_the_latest_setup_link_valid() {
    let app = spawn_app().await;
    // Each `serve` start (on any replica) mints a link the way this does.
    let first = app.tollgate.console_setup_token().await.unwrap().expect("a link");
    let second = app.tollgate.console_setup_token().await.unwrap().expect("a link");
    assert_eq!(
        setup_page_status(&app, first.expose_secret()).await,
        StatusCode::NOT_FOUND,
        "the earlier link is dead once a newer one is minted"
    );
    assert_eq!(
        redeem_setup(&app, first.expose_secret(), "mallory@example.com").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        setup_page_status(&app, second.expose_secret()).await,
        StatusCode::OK
    );
    assert_eq!(
        redeem_setup(&app, second.expose_secret(), "ada@example.com").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(admin_emails(&app).await, vec!["ada@example.com".to_owned()]);
}

#[tokio::test]
async fn a_setup_link_minted_before_an_admin_exists_is_dead_after() {
    let app = spawn_app().await;
    let token = app.tollgate.console_setup_token().await.unwrap().expect("a link");
    // The operator creates the admin from the command line instead.
    create_admin(&app, "ada@example.com").await;
    assert_eq!(
        setup_page_status(&app, token.expose_secret()).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        redeem_setup(&app, token.expose_secret(), "mallory@example.com").await,
        StatusCode::BAD_REQUEST,
        "whoever reads the start's log cannot take the organization"
    );
    assert_eq!(admin_emails(&app).await, vec!["ada@example.com".to_owned()]);
    assert!(
        app.tollgate.console_setup_token().await.unwrap().is_none(),
        "no link is minted once an admin exists"
    );
}

#[tokio::test]
async fn a_setup_link_works_once() {
    let app = spawn_app().await;
    let token = app.tollgate.console_setup_token().await.unwrap().expect("a link");
    assert_eq!(
        redeem_setup(&app, token.expose_secret(), "ada@example.com").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        redeem_setup(&app, token.expose_secret(), "mallory@example.com").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(admin_emails(&app).await, vec!["ada@example.com".to_owned()]);
    assert!(app.tollgate.console_setup_token().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_outrun_the_sign_in_limit() {
    let app = spawn_app_with(window_held()).await;
    create_admin(&app, "ada@example.com").await;
    let client = client();
    let guesses = (0..200).map(|_| sign_in(&app, &client, "ada@example.com", WRONG_PASSWORD, None));
    let answers = join_all(guesses).await;
    let evaluated = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    eprintln!("of 200 concurrent guesses, {evaluated} were checked and {refused} refused");
    assert_eq!(evaluated + refused, 200, "every guess is checked or refused");
    assert!(
        evaluated <= ATTEMPTS_PER_EMAIL_MAX,
        "{evaluated} guesses were checked; the limit is {ATTEMPTS_PER_EMAIL_MAX}"
    );
    // Those refused for being too many at once were not counted. Guessing on in waves as
    // wide as the password checks allowed at once, each wave after the last has ended,
    // gets exactly as many checks as the limit allows in all: an attempt is counted before
    // its check, so a wave cannot all see room left for one.
    let mut evaluated = evaluated;
    loop {
        let wave =
            (0..PASSWORD_CHECKS_MAX).map(|_| sign_in(&app, &client, "ada@example.com", WRONG_PASSWORD, None));
        let answers = join_all(wave).await;
        let checked = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
            .count();
        evaluated += checked;
        assert!(
            evaluated <= ATTEMPTS_PER_EMAIL_MAX,
            "{evaluated} guesses were checked; the limit is {ATTEMPTS_PER_EMAIL_MAX}"
        );
        if checked == 0 {
            let (status, body) = &answers[0];
            assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
            assert!(body.contains("too many failed sign-ins"), "{body}");
            break;
        }
    }
    assert_eq!(evaluated, ATTEMPTS_PER_EMAIL_MAX);
    // The limit is reached: the right password is refused too until the window ends.
    let (status, body) = sign_in(&app, &client, "ada@example.com", PASSWORD, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("too many failed sign-ins"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_beyond_the_cap_are_refused_at_once() {
    // Every guess has its own email and (through the trusted proxy) its own client, so only
    // the cap on concurrent password checks stands in the way.
    let app = spawn_app_with(Options {
        extra_config: "[console]\ntrusted_proxies = \"127.0.0.1\"",
        ..Options::default()
    })
    .await;
    let client = client();
    let emails: Vec<String> = (0..200).map(|n| format!("user{n}@example.com")).collect();
    let addresses: Vec<String> = (0..200).map(|n| format!("198.51.100.{n}")).collect();
    let guesses = emails
        .iter()
        .zip(&addresses)
        .map(|(email, address)| sign_in(&app, &client, email, WRONG_PASSWORD, Some(address)));
    let answers = join_all(guesses).await;
    let evaluated = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::UNAUTHORIZED)
        .count();
    let busy: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, body)| body)
        .collect();
    eprintln!(
        "of 200 concurrent guesses, {evaluated} were checked and {} refused as busy",
        busy.len()
    );
    assert_eq!(evaluated + busy.len(), 200);
    assert!(!busy.is_empty(), "200 password checks at once were all run");
    // The refusal is the sign-in form, saying why.
    assert!(
        busy[0].contains("form") && busy[0].contains("too many sign-ins are being checked"),
        "{}",
        busy[0]
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let app = spawn_app_with(Options {
        extra_config: "[console]\ntrusted_proxies = \"127.0.0.0/8, ::1\"",
        ..window_held()
    })
    .await;
    create_admin(&app, "ada@example.com").await;
    let client = client();
    // One client guesses across many emails (under each email's own limit).
    for n in 0..ATTEMPTS_PER_CLIENT_MAX {
        let email = format!("guess{}@example.com", n % 6);
        let (status, _) = sign_in(&app, &client, &email, WRONG_PASSWORD, Some("203.0.113.7")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}");
    }
    let (status, _) = sign_in(
        &app,
        &client,
        "guess0@example.com",
        WRONG_PASSWORD,
        Some("203.0.113.7"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "that client is limited");
    // Another client behind the same proxy is not; the proxy's own hop is skipped.
    let (status, _) = sign_in(
        &app,
        &client,
        "ada@example.com",
        PASSWORD,
        Some("198.51.100.9, 127.0.0.1"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "another client signs in");
}

#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(window_held()).await;
    let client = client();
    for n in 0..ATTEMPTS_PER_CLIENT_MAX {
        let email = format!("guess{}@example.com", n % 6);
        let forged = format!("192.0.2.{n}");
        let (status, _) = sign_in(&app, &client, &email, WRONG_PASSWORD, Some(&forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {n}");
    }
    let (status, _) = sign_in(
        &app,
        &client,
        "guess0@example.com",
        WRONG_PASSWORD,
        Some("192.0.2.200"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "a made-up X-Forwarded-For does not make a new client"
    );
}
