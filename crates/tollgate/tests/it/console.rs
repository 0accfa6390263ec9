//! The Console in a real browser: headless Debian Chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against the real server on a real port with a real database.
//! The goal is to walk the issue's flows as a person would — sign in, create a workspace,
//! create a key and use it from an HTTP client, buy credits and see the balance and tier
//! change, run a Workbench prompt and see usage and cost change — and to check that a user
//! without the billing role cannot reach billing and that a cross-site form post is
//! refused. Every page visited is saved as a PNG in `target/console-screenshots/` (and, on
//! PostgreSQL, in its `postgres/`).
//!
//! chromedriver must be installed (`apt-get install chromium chromium-driver`; `.ci/run`
//! does it): without it these tests fail, saying so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tollgate_core::roles::OrgRole;

use crate::helpers::{Options, TestApp, spawn_app_with};

const PASSWORD: &str = "correct horse battery staple";

/// A chromedriver process and a browser session on it; the process ends on drop.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start chromedriver ({error}): the Console's browser tests need Chromium and \
                     chromedriver; install them with `apt-get install -y chromium chromium-driver`"
                )
            });
        let mut ready = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start listening on port {port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1000"]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser { client, driver }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!("no element '{css}' on {}: {error}", self.url().await),
        }
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.expect("select");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks a form's submit button and waits until the browser has left the
    /// page that held it, so what is read next comes from the answer page.
    async fn submit(&self, css: &str) {
        let button = self.find(css).await;
        button.click().await.expect("click");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match button.is_enabled().await {
                // Chromium reports a node of a page it left as stale, or, caught during the
                // navigation, as an inspector error naming the document.
                Err(error)
                    if error.is_stale_element_reference()
                        || error.to_string().contains("does not belong to the document") =>
                {
                    return;
                }
                Err(error) => panic!("submitting '{css}': {error}"),
                Ok(_) if tokio::time::Instant::now() > deadline => {
                    panic!("submitting '{css}' left {} in place", self.url().await)
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_default()
    }

    async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.expect("resize");
    }

    /// Saves the page as `target/console-screenshots/NAME.png`.
    async fn shot(&self, name: &str) {
        let directory = screenshot_directory();
        std::fs::create_dir_all(&directory).expect("screenshot directory");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(directory.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn sign_in(&self, app: &TestApp, email: &str) {
        self.goto(&format!("{}/console/sign-in", app.address)).await;
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.submit("form.card button[type=submit]").await;
        self.find("main h1").await;
        assert!(
            self.url().await.ends_with("/console/overview"),
            "signed in: {}",
            self.url().await
        );
    }
}

fn screenshot_directory() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let directory = target.join("console-screenshots");
    match crate::BACKEND {
        crate::helpers::TestBackend::Sqlite => directory,
        crate::helpers::TestBackend::PostgresRedis => directory.join("postgres"),
    }
}

/// A dollar figure as the Console prints it ("$5.00", "$4.99987") in nano-dollars.
fn nanos(text: &str) -> i64 {
    tollgate_core::money::NanoUsd::parse_usd(text.trim().trim_start_matches('$'))
        .unwrap_or_else(|error| panic!("'{text}' is not an amount: {error}"))
        .nanos()
}

async fn console_app() -> TestApp {
    spawn_app_with(Options {
        contract_tiers: true,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_flows_work_in_a_real_browser() {
    let app = console_app().await;
    let browser = Browser::start().await;

    // First admin through the one-time setup link, as printed at first start.
    let token = app
        .tollgate
        .console_setup_token()
        .await
        .unwrap()
        .expect("no one can sign in yet, so there is a setup link");
    browser
        .goto(&format!(
            "{}/console/setup?token={}",
            app.address,
            token.expose_secret()
        ))
        .await;
    browser.shot("01-setup").await;
    browser.fill("#email", "ada@example.com").await;
    browser.fill("#name", "Ada").await;
    browser.fill("#password", PASSWORD).await;
    browser.submit("form.card button[type=submit]").await;
    browser.find("#balance").await;
    // The link works once.
    browser
        .goto(&format!(
            "{}/console/setup?token={}",
            app.address,
            token.expose_secret()
        ))
        .await;
    assert!(browser.source().await.contains("used already"));

    // Sign out, then in again with the password.
    browser.goto(&format!("{}/console/overview", app.address)).await;
    browser.submit("form.signout button").await;
    browser.find("#email").await;
    browser.shot("02-sign-in").await;
    browser.fill("#email", "ada@example.com").await;
    browser.fill("#password", "wrong password!").await;
    browser.submit("form.card button[type=submit]").await;
    assert!(browser.text(".problem").await.contains("not right"));
    browser.sign_in(&app, "ada@example.com").await;

    // Overview at a desktop and a phone width.
    let balance_before = nanos(&browser.text("#balance").await);
    let tier_before = browser.text("#tier").await;
    assert_eq!(balance_before, nanos("5.00"), "the starter credit");
    browser.shot("03-overview-1440").await;
    browser.resize(390, 844).await;
    browser.goto(&format!("{}/console/overview", app.address)).await;
    browser.find("#balance").await;
    browser.shot("04-overview-390").await;
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "no sideways scrolling at 390 px");
    browser.resize(1440, 1000).await;

    // A workspace.
    browser.goto(&format!("{}/console/workspaces", app.address)).await;
    browser.fill("#workspace-name", "Research").await;
    browser.submit("form.card button[type=submit]").await;
    browser.find("#workspace-spend").await;
    browser.shot("05-workspace-detail").await;
    browser.goto(&format!("{}/console/workspaces", app.address)).await;
    assert!(browser.text("#workspaces").await.contains("Research"));
    browser.shot("06-workspaces").await;
    let workspace = app
        .tollgate
        .workspace_named(&app.org_id, "Research")
        .await
        .expect("the workspace exists");

    // A key in it, used from a real HTTP client.
    browser.goto(&format!("{}/console/keys", app.address)).await;
    browser.fill("#key-name", "ci key").await;
    browser.select("#key-workspace", &workspace.id).await;
    browser.submit("section.card form button[type=submit]").await;
    let secret = browser
        .find("#new-key")
        .await
        .prop("value")
        .await
        .unwrap()
        .expect("the secret is shown");
    assert!(secret.starts_with("sk-tg-"), "{secret}");
    browser.shot("07-key-created").await;
    let response = app
        .client
        .post(format!("{}/v1/messages", app.address))
        .header("x-api-key", &secret)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hello from the key made in the Console"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    browser
        .goto(&format!(
            "{}/console/keys?workspace={}",
            app.address, workspace.id
        ))
        .await;
    let keys = browser.text("#keys").await;
    assert!(
        keys.contains("ci key") && keys.contains("ada@example.com"),
        "{keys}"
    );
    // One "never", the key's expiry: its last use is shown.
    assert_eq!(
        keys.matches("never").count(),
        1,
        "the key shows its last use and no expiry: {keys}"
    );
    browser.shot("08-keys").await;

    // Buy credits: the balance and the tier change.
    browser.goto(&format!("{}/console/billing", app.address)).await;
    browser.shot("09-billing").await;
    browser.fill("#amount", "50").await;
    browser.fill("#card", "4242424242424242").await;
    browser
        .submit("form[action='/console/billing/purchase'] button")
        .await;
    assert!(
        browser
            .text("#purchase-status")
            .await
            .contains("Payment received")
    );
    browser.shot("10-receipt").await;
    browser.goto(&format!("{}/console/overview", app.address)).await;
    let balance_after_purchase = nanos(&browser.text("#balance").await);
    let tier_after = browser.text("#tier").await;
    assert!(
        balance_after_purchase > balance_before + nanos("49"),
        "{balance_before} → {balance_after_purchase}"
    );
    assert_ne!(
        tier_before, tier_after,
        "buying $50 moves the organization up the ladder"
    );
    browser.shot("11-overview-after-purchase").await;
    browser.goto(&format!("{}/console/billing", app.address)).await;
    assert!(browser.text("#purchases").await.contains("succeeded"));
    assert!(browser.text("#lots").await.contains("purchase"));

    // The Workbench: streamed, metered, paid from the same balance.
    browser.goto(&format!("{}/console/usage", app.address)).await;
    let cost_before = nanos(&browser.text("#cost-total").await);
    browser.goto(&format!("{}/console/workbench", app.address)).await;
    browser.select("#wb-model", "claude-haiku-4-5").await;
    browser
        .fill("#wb-prompt", "Write one sentence about toll gates.")
        .await;
    browser.click("#wb-run").await;
    let cost = nanos(&browser.text("#wb-cost").await);
    assert!(cost > 0, "the run was charged");
    assert!(
        !browser.text("#wb-answer").await.is_empty(),
        "the answer streamed in"
    );
    let output_tokens = browser.text("#wb-output-tokens").await;
    assert_ne!(output_tokens, "0");
    browser
        .client
        .execute("document.getElementById('wb-result').scrollIntoView();", vec![])
        .await
        .unwrap();
    browser.shot("12-workbench").await;
    browser.goto(&format!("{}/console/overview", app.address)).await;
    let balance_after_run = nanos(&browser.text("#balance").await);
    assert_eq!(
        balance_after_run,
        balance_after_purchase - cost,
        "paid from the same balance"
    );
    browser
        .goto(&format!("{}/console/usage?group=key", app.address))
        .await;
    let cost_after = nanos(&browser.text("#cost-total").await);
    assert_eq!(cost_after, cost_before + cost, "the run shows in the cost report");
    assert!(
        browser.source().await.contains("Workbench"),
        "usage by key names the Workbench key"
    );
    browser.shot("13-usage-by-key").await;
    browser
        .goto(&format!("{}/console/usage?width=1h&group=model", app.address))
        .await;
    browser.shot("14-usage-hourly-by-model").await;
    let csv = browser.client.execute(
        "return fetch('/console/usage.csv?group=model').then(r => r.text());",
        vec![],
    );
    let csv = csv.await.unwrap();
    assert!(
        csv.as_str().unwrap_or_default().contains("claude-haiku-4-5"),
        "{csv}"
    );

    // Limits and members.
    browser.goto(&format!("{}/console/limits", app.address)).await;
    assert!(browser.text("#current-tier").await.contains(&tier_after));
    browser.shot("15-limits").await;
    browser.goto(&format!("{}/console/members", app.address)).await;
    browser.fill("#invite-email", "bo@example.com").await;
    browser.select("#invite-role", "developer").await;
    browser
        .submit("form[action='/console/members/invite'] button")
        .await;
    assert!(browser.text("#invites").await.contains("bo@example.com"));
    browser.shot("16-members").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_cross_site_posts_are_enforced() {
    let app = console_app().await;
    let organization = app.tollgate.organization_named("Default").await.unwrap();
    app.tollgate
        .create_console_admin(&organization.id, "ada@example.com", "Ada", PASSWORD)
        .await
        .unwrap();
    let operator = app.tollgate.operator_of(&organization, "test");
    let developer = operator
        .add_user("dev@example.com", "Dev", OrgRole::Developer)
        .await
        .unwrap();
    app.tollgate
        .set_console_password(&developer.id, PASSWORD)
        .await
        .unwrap();
    let browser = Browser::start().await;

    // A developer sees no Billing link, and the page itself refuses them.
    browser.sign_in(&app, "dev@example.com").await;
    let csrf = browser
        .find("form.signout input[name=csrf]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let navigation = browser.text("nav").await;
    assert!(!navigation.contains("Billing"), "{navigation}");
    assert!(navigation.contains("API keys"), "{navigation}");
    browser.goto(&format!("{}/console/billing", app.address)).await;
    assert!(browser.text("main").await.contains("Not allowed"));
    browser.shot("17-billing-refused-for-developer").await;
    let status = browser
        .client
        .execute(
            "return fetch('/console/billing/purchase', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, \
             body: 'csrf=' + arguments[0] + '&amount=10&card=4242424242424242&idempotency_key=dev-1'}).then(r => r.status);",
            vec![json!(csrf)],
        )
        .await
        .unwrap();
    assert_eq!(
        status,
        json!(403),
        "the server refuses the purchase too, not only the link"
    );
    assert!(operator.purchases().await.unwrap().is_empty());

    // A form on another site posting to the Console is refused, signed in or not.
    browser.goto(&format!("{}/console/overview", app.address)).await;
    browser.submit("form.signout button").await;
    browser.sign_in(&app, "ada@example.com").await;
    let attacker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let attacker_port = attacker.local_addr().unwrap().port();
    let target = format!("{}/console/workspaces", app.address);
    let page = format!(
        "<!doctype html><title>Win a prize</title><form id=f method=post action='{target}'>\
         <input name=name value=Evil><input name=csrf value=guess></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let attacker_app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let attacker_server = tokio::spawn(async move {
        let _ = axum::serve(attacker, attacker_app).await;
    });
    // `localhost` and `127.0.0.1` are different sites to the browser.
    browser.goto(&format!("http://localhost:{attacker_port}/")).await;
    let refused = browser.text("main").await;
    assert!(refused.contains("another site"), "{refused}");
    browser.shot("18-cross-site-post-refused").await;
    attacker_server.abort();
    assert!(
        app.tollgate.workspace_named(&app.org_id, "Evil").await.is_err(),
        "no workspace was created"
    );
}

/// Goal (#22): with Stripe, credit is bought in the browser on Stripe's own Checkout page
/// (the Console has no card field), and the balance changes only when Stripe's signed event
/// arrives: the buyer's return to the Console, a forged event and a stale one grant nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buying_credit_with_stripe_in_a_real_browser_credits_only_on_the_signed_event() {
    use tollgate_testkit::FakeStripe;

    use crate::stripe::{SECRET, of_type, stripe_app};

    let (app, stripe) = stripe_app().await;
    app.tollgate
        .create_console_admin(&app.org_id, "ada@example.com", "Ada", PASSWORD)
        .await
        .expect("admin");
    let browser = Browser::start().await;
    browser.sign_in(&app, "ada@example.com").await;
    let overview = format!("{}/console/overview", app.address);
    let balance = async || {
        browser.goto(&overview).await;
        nanos(&browser.text("#balance").await)
    };
    let before = balance().await;

    browser.goto(&format!("{}/console/billing", app.address)).await;
    assert!(
        !browser.source().await.contains("id=\"card\""),
        "no card field under Stripe"
    );
    browser.fill("#amount", "25").await;
    browser
        .submit("form[action='/console/billing/purchase'] button")
        .await;
    assert!(
        browser.url().await.starts_with(&stripe.base_url()),
        "on Stripe's page: {}",
        browser.url().await
    );
    assert_eq!(browser.text("#total").await, "Pay $25.00");
    browser.shot("stripe-01-checkout").await;
    browser.submit("#pay").await;
    // Back to the receipt at the configured public address (`public_url`), here served at
    // the test's own.
    let returned = browser.url().await;
    let receipt = returned
        .strip_prefix("https://console.example")
        .filter(|path| path.starts_with("/console/billing/receipts/"))
        .unwrap_or_else(|| panic!("sent back to the receipt: {returned}"))
        .to_owned();
    browser.goto(&format!("{}{receipt}", app.address)).await;
    assert!(
        browser
            .text("#purchase-status")
            .await
            .contains("Waiting for the payment to be confirmed")
    );
    browser.shot("stripe-02-returned").await;
    assert_eq!(balance().await, before, "the buyer's return grants nothing");

    let events = stripe.events();
    let completed = of_type(&events, "checkout.session.completed");
    let now = app.tollgate.now().timestamp();
    let url = app.webhook_url();
    assert_eq!(
        FakeStripe::deliver(&url, completed, "whsec_forged", now).await,
        400
    );
    assert_eq!(
        FakeStripe::deliver(&url, completed, SECRET, now - 3600).await,
        400
    );
    assert_eq!(balance().await, before, "a forged or stale event grants nothing");

    assert_eq!(app.deliver(completed).await, 200);
    assert_eq!(balance().await - before, nanos("25"));
    browser.shot("stripe-03-credited").await;
    assert_eq!(app.deliver(completed).await, 200, "a redelivery is acknowledged");
    assert_eq!(balance().await - before, nanos("25"), "and grants nothing more");
}

/// Single sign-on as a person does it: "Sign in with single sign-on", the provider, and back
/// to the overview; then each token the Console must not accept (for another application,
/// expired, a code used already, a state this browser did not start, an email outside the
/// allowed domains) lands on the sign-in page saying why, signed in as nobody new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_in_a_real_browser_signs_in_and_refuses_each_bad_token() {
    use tollgate_testkit::{FakeOidc, OidcPerson};

    let oidc = FakeOidc::start().await;
    let app = crate::sso::sso_app(&oidc, true).await;
    let browser = Browser::start().await;
    let sign_in_page = format!("{}/console/sign-in", app.address);
    let single_sign_on = async || {
        browser.goto(&sign_in_page).await;
        browser.submit("#sso").await;
        browser.find("main h1, h1").await;
    };

    oidc.sign_in_as(OidcPerson::new("grace@example.com", &["engineering"]));
    single_sign_on().await;
    assert!(
        browser.url().await.ends_with("/console/overview"),
        "signed in: {}",
        browser.url().await
    );
    browser.shot("sso-01-signed-in").await;

    let refused = async |label: &str, says: &str| {
        let problem = browser.text("p.problem").await;
        assert!(problem.contains(says), "{label}: '{problem}' says '{says}'");
        assert!(
            browser.url().await.contains("/console/sso/callback"),
            "{label}: {}",
            browser.url().await
        );
        assert!(
            browser.source().await.contains("Sign in with single sign-on"),
            "{label}: may try again"
        );
    };

    oidc.issue_for_audience(Some("another-application"));
    single_sign_on().await;
    refused("wrong audience", "issued for another application").await;
    browser.shot("sso-02-wrong-audience").await;
    oidc.issue_for_audience(None);

    oidc.issue_lifetime(-3600);
    single_sign_on().await;
    refused("expired", "has expired").await;
    oidc.issue_lifetime(300);

    oidc.replay_last_code();
    single_sign_on().await;
    refused("replayed code", "refused to complete").await;

    browser
        .goto(&format!(
            "{}/console/sso/callback?code=stolen&state=forged",
            app.address
        ))
        .await;
    refused("bad state", "start again").await;

    oidc.sign_in_as(OidcPerson::new("mallory@elsewhere.example", &["engineering"]));
    single_sign_on().await;
    refused("other domain", "this email domain").await;
    browser.shot("sso-03-other-domain").await;

    let users = app.tollgate.store().users(&app.org_id).await.expect("users");
    assert_eq!(
        users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(),
        vec!["grace@example.com"]
    );
}
