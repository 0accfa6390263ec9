//! Claude Code's `/login` against tollgate, end to end, two ways. First the test plays the
//! client's part of the sign-in over HTTP, sending every request Claude Code's gateway
//! protocol sends (metadata, an empty device authorization, polling, refresh), with the
//! person's browser step through the Console and the test kit's OpenID Connect provider; the
//! real Claude Code (pinned) then runs a prompt on the credential it keeps, refreshing it at
//! the gateway first. Then the real Claude Code signs in itself: its `/login` screen runs in
//! a terminal (tmux) inside a private mount namespace whose `/etc` is an overlay holding the
//! organization's policy file (`/etc/claude-code/managed-settings.json`, the only switch to
//! gateway sign-in on Linux), so the machine's `/etc` and the Claude Code tests running
//! beside it never see it. That needs root (for `unshare` and `mount`) and tmux.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// Writes what a HOME needs for Claude Code to start straight into work in `project`:
/// onboarding done (else it checks its connection to Anthropic and stops offline) and the
/// folder trusted (else a dialog waits), plus `credentials` as its `.credentials.json`.
fn seed_claude_home(home: &Path, project: &Path, credentials: &Value) {
    std::fs::write(
        home.join(".claude.json"),
        json!({
            "hasCompletedOnboarding": true,
            "theme": "dark",
            "lastOnboardingVersion": crate::claude_code::CLAUDE_CODE_VERSION,
            "projects": {project.to_string_lossy(): {"hasTrustDialogAccepted": true}},
        })
        .to_string(),
    )
    .expect("claude.json");
    std::fs::create_dir_all(home.join(".claude")).expect(".claude");
    let path = home.join(".claude/.credentials.json");
    std::fs::write(&path, credentials.to_string()).expect("credentials");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("0600");
}

/// The credential file Claude Code keeps in `home`, or `Null` when there is none.
fn stored_credentials(home: &Path) -> Value {
    std::fs::read_to_string(home.join(".claude/.credentials.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// The variables every Claude Code run here gets, and no others: they keep it off the
/// network (telemetry, updates, error reports).
fn quiet_claude_env(command: &mut Command, home: &Path) {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("NO_PROXY", "*");
}

/// Runs the real Claude Code's `claude -p` in `project` with `home`, with no policy file:
/// it restores the gateway session from the credential file alone. Its stdout and stderr,
/// and whether it succeeded.
async fn claude_print_in(home: &Path, project: &Path) -> (bool, String) {
    let (home, project) = (home.to_owned(), project.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        let claude =
            crate::claude_code::claude_binary().unwrap_or_else(|error| panic!("Claude Code: {error}"));
        let mut command = Command::new("timeout");
        command
            .arg("240")
            .arg(&claude)
            .args(["-p", "Reply with the word pong", "--output-format", "json"])
            .current_dir(&project)
            .stdin(std::process::Stdio::null());
        quiet_claude_env(&mut command, &home);
        command.output().expect("Claude Code starts")
    })
    .await
    .expect("the Claude Code task ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
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
    // Within five minutes of its expiry, so Claude Code refreshes it at the gateway first.
    let expires_at = tollgate_service::Clock::now(&tollgate_service::SystemClock).timestamp_millis() + 60_000;
    seed_claude_home(
        home.path(),
        home.path(),
        &json!({
            "gatewayTrust": {"127.0.0.1": "http-loopback"},
            "enterpriseGateway": {
                "url": app.address,
                "jwt": access,
                "expiresAt": expires_at,
                "tokenEndpoint": app.url("/oauth/token"),
                "idpRefreshToken": refresh,
            },
        }),
    );
    let (success, text) = claude_print_in(home.path(), home.path()).await;
    (success, text, stored_credentials(home.path()))
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

    let (dev, key) = device_key_of(&app, "dev@example.com").await;
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

/// The developer `email` and their personal key from a Claude Code sign-in.
async fn device_key_of(
    app: &TestApp,
    email: &str,
) -> (tollgate_store::UserRecord, tollgate_store::KeyRecord) {
    let dev = app
        .tollgate
        .store()
        .users(&app.org_id)
        .await
        .expect("users")
        .into_iter()
        .find(|user| user.email == email)
        .expect("provisioned by single sign-on");
    let key = app
        .tollgate
        .store()
        .list_keys(&app.org_id, tollgate_core::keys::KeyKind::Api, None)
        .await
        .expect("keys")
        .into_iter()
        .find(|key| key.user_id.as_deref() == Some(dev.id.as_str()))
        .expect("a personal key of the developer");
    (dev, key)
}

/// Goal: the real Claude Code signs in through its own `/login` screen, as a developer's one
/// does when the organization's policy points it at the gateway: it finds the gateway's
/// endpoints, shows a code and opens the browser on it, the person signs in through the
/// identity provider and approves the code, and Claude Code, polling, keeps a credential
/// that is a personal key of that developer, on which it then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_code_signs_in_on_its_own_login_screen() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, false).await;
    oidc.sign_in_as(OidcPerson::new("dev@example.com", &["engineering"]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);

    let login = LoginScreen::start(&app.address);
    login
        .wait_until(deadline, "the gateway screen, set by the policy", |screen| {
            (screen.contains("Press Enter to connect") && screen.contains(&app.address)).then_some(())
        })
        .await;
    login.press("Enter");
    let link = login
        .wait_until(deadline, "Claude Code to open the browser", |_| {
            login.browser_link()
        })
        .await;
    let user_code = link
        .split_once("user_code=")
        .and_then(|(_, rest)| rest.split('&').next())
        .unwrap_or_else(|| panic!("no user_code in the link Claude Code opened: {link}"))
        .to_owned();
    login
        .wait_until(deadline, "the code to confirm, on the screen", |screen| {
            screen.contains(&user_code).then_some(())
        })
        .await;
    let approved = approve_in_the_browser(&app, &link, &user_code).await;
    assert!(approved.contains("Claude Code is connected"), "{approved}");
    login
        .wait_until(deadline, "the sign-in to finish", |screen| {
            screen.contains("Connected to Cloud gateway.").then_some(())
        })
        .await;
    let stored = login
        .wait_until(deadline, "the credential file", |_| {
            let stored = stored_credentials(&login.home());
            stored["enterpriseGateway"]["jwt"].is_string().then_some(stored)
        })
        .await;
    login.end();

    let kept = &stored["enterpriseGateway"];
    assert_eq!(kept["url"], json!(app.address), "{stored}");
    assert_eq!(kept["tokenEndpoint"], json!(app.url("/oauth/token")), "{stored}");
    assert!(kept["idpRefreshToken"].is_string(), "it can refresh: {stored}");
    let jwt = kept["jwt"].as_str().expect("jwt");
    let (_, key) = device_key_of(&app, "dev@example.com").await;
    assert_eq!(key.name, tollgate_service::DEVICE_KEY_NAME);
    assert_eq!(messages_status(&app, jwt).await.status(), StatusCode::OK);

    // Without the policy file now: the credential alone brings it back to the gateway.
    let (success, output) = claude_print_in(&login.home(), &login.project()).await;
    assert!(success, "Claude Code failed:\n{output}");
    app.wait_for_settlement().await;
    let records = app.usage_records().await;
    assert!(records.len() >= 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|record| record.api_key_id.as_deref() == Some(key.id.as_str())),
        "every request billed to the developer's own key"
    );
    app.assert_ledger_clean().await;
}

/// Written on the terminal when Claude Code ends, so a wait stops at once and says so.
const CLAUDE_CODE_ENDED: &str = "tollgate-test: Claude Code ended";

/// Run by `unshare` in a new mount namespace: lays an overlay over `/etc` whose writable
/// layer (on a tmpfs, as overlayfs wants) holds the policy file, then runs the rest of its
/// arguments. Arguments: the overlay's mount point, the policy JSON, the command.
const NAMESPACE_SCRIPT: &str = r#"
overlay=$1 policy=$2
shift 2
mount -t tmpfs tollgate-login "$overlay"
mkdir -p "$overlay/upper/claude-code" "$overlay/work"
printf '%s' "$policy" > "$overlay/upper/claude-code/managed-settings.json"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$overlay/upper,workdir=$overlay/work" /etc
exec "$@"
"#;

/// The real Claude Code's `/login` screen in a tmux terminal, inside a private mount
/// namespace whose `/etc/claude-code/managed-settings.json` sends it to a gateway. Its
/// `BROWSER` writes down the link it is given. Dropping it ends the terminal, Claude Code
/// and, with its last process, the namespace.
struct LoginScreen {
    /// HOME, the project folder, tmux's socket, the browser's log, the overlay's mount point.
    _dir: tempfile::TempDir,
    /// The directory's path with symbolic links resolved, as Claude Code sees its project.
    root: PathBuf,
}

impl LoginScreen {
    /// Starts `claude /login` for the gateway at `gateway_url`, with a fresh HOME that has
    /// this gateway's trust pinned already (for plain http on loopback the pin is a fixed
    /// word), so the next screen is the gateway's.
    fn start(gateway_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the sign-in");
        let root = dir.path().canonicalize().expect("the directory's path");
        let screen = Self { _dir: dir, root };
        for folder in [screen.home(), screen.project(), screen.path("etc-overlay")] {
            std::fs::create_dir_all(folder).expect("a folder");
        }
        seed_claude_home(
            &screen.home(),
            &screen.project(),
            &json!({"gatewayTrust": {"127.0.0.1": "http-loopback"}}),
        );
        let claude =
            crate::claude_code::claude_binary().unwrap_or_else(|error| panic!("Claude Code: {error}"));
        write_script(
            &screen.path("browser"),
            &format!(
                "printf '%s\\n' \"$1\" >> '{}'\n",
                screen.path("browser.log").display()
            ),
        );
        write_script(
            &screen.path("login"),
            &format!(
                "cd '{}'\nexport TERM=xterm-256color\n'{}' /login 2>'{}'\necho \"{CLAUDE_CODE_ENDED}: $?\"\nexec sleep 600\n",
                screen.project().display(),
                claude.display(),
                screen.path("claude.stderr").display(),
            ),
        );
        let tmux_missing = Command::new("tmux").arg("-V").output().is_err();
        assert!(
            !tmux_missing,
            "tmux is needed to run Claude Code's /login in a terminal (.ci/run installs it)"
        );
        let policy = json!({"forceLoginMethod": "gateway", "forceLoginGatewayUrl": gateway_url});
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-euc",
                NAMESPACE_SCRIPT,
                "sh",
            ])
            .arg(screen.path("etc-overlay"))
            .arg(policy.to_string())
            .args(["tmux", "-u", "-f", "/dev/null", "-S"])
            .arg(screen.path("tmux.sock"))
            .args(["new-session", "-d", "-s", "login", "-x", "200", "-y", "50"])
            .arg(screen.path("login"));
        quiet_claude_env(&mut command, &screen.home());
        command
            .env("BROWSER", screen.path("browser"))
            .env("LANG", "C.UTF-8");
        let started = command.output().unwrap_or_else(|error| {
            panic!("`unshare` (util-linux) runs Claude Code's /login in a private mount namespace: {error}")
        });
        assert!(
            started.status.success(),
            "could not start Claude Code's /login in a private mount namespace with an overlay on \
             /etc; this test needs root (or CAP_SYS_ADMIN) for `unshare --mount` and `mount`: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        screen
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn project(&self) -> PathBuf {
        self.path("project")
    }

    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-u").arg("-S").arg(self.path("tmux.sock"));
        command
    }

    /// The terminal's text as shown, wrapped lines joined; `None` once the terminal is gone.
    fn screen(&self) -> Option<String> {
        let output = tokio::task::block_in_place(|| {
            self.tmux()
                .args(["capture-pane", "-p", "-J", "-t", "login"])
                .output()
                .expect("tmux runs")
        });
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn press(&self, key: &str) {
        let sent = self.tmux().args(["send-keys", "-t", "login", key]).status();
        assert!(sent.is_ok_and(|status| status.success()), "pressed {key}");
    }

    /// The link Claude Code gave its browser, once it has.
    fn browser_link(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.path("browser.log")).ok()?;
        log.lines().next().map(str::to_owned)
    }

    /// Polls the screen until `found` returns something, given the screen's words without
    /// the boxes around them (so text the screen wraps inside a box still matches). Fails
    /// with the screen and Claude Code's stderr at `deadline` or when Claude Code ends.
    async fn wait_until<T>(
        &self,
        deadline: tokio::time::Instant,
        waiting_for: &str,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> T {
        loop {
            let screen = self.screen().unwrap_or_else(|| {
                panic!(
                    "the terminal ended while waiting for {waiting_for}: {}",
                    self.stderr()
                )
            });
            let words = screen
                .chars()
                .map(|char| {
                    if ('\u{2500}'..='\u{257f}').contains(&char) {
                        ' '
                    } else {
                        char
                    }
                })
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(value) = found(&words) {
                return value;
            }
            if words.contains(CLAUDE_CODE_ENDED) || tokio::time::Instant::now() >= deadline {
                panic!(
                    "waiting for {waiting_for}, Claude Code's /login shows:\n{screen}\nits stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("claude.stderr")).unwrap_or_default()
    }

    /// Ends the terminal and Claude Code in it.
    fn end(&self) {
        // An error here means it has ended already.
        let _ = self.tmux().arg("kill-server").output();
    }
}

impl Drop for LoginScreen {
    fn drop(&mut self) {
        self.end();
    }
}

/// Writes an executable `sh` script.
fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("a script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("0755");
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

/// Goal: what the sign-in endpoints are sent wrong is refused in OAuth's words, and a code
/// nobody issued is neither shown as waiting nor approved.
#[tokio::test]
async fn bad_sign_in_requests_are_refused_and_an_unknown_code_is_never_approved() {
    let oidc = FakeOidc::start().await;
    let app = sso_app(&oidc, true).await;
    for (form, status, error) in [
        (
            vec![("grant_type", "password")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (vec![], StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (
            vec![("grant_type", DEVICE_GRANT)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![("grant_type", "refresh_token")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![("grant_type", DEVICE_GRANT), ("device_code", "never-issued")],
            StatusCode::BAD_REQUEST,
            "expired_token",
        ),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", "never-issued")],
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        ),
    ] {
        let (got, body) = token(&app, &form).await;
        assert_eq!((got, body["error"].clone()), (status, json!(error)), "{form:?}");
    }
    let settings = client()
        .get(app.url("/managed/settings"))
        .send()
        .await
        .expect("settings");
    assert_eq!(settings.status(), StatusCode::UNAUTHORIZED, "settings need a key");
    assert_eq!(settings.headers()["x-should-retry"], "false");

    let (browser, cookie) = app.console_admin_session().await;
    let page = browser
        .get(app.url("/console/device?user_code=bcdf-ghjk"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("device page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("value=\"BCDF-GHJK\""), "the typed code, normalized");
    assert!(page.contains("That code is unknown"), "{page}");
    let field = |name: &str| {
        page.split(&format!("name=\"{name}\""))
            .nth(1)
            .and_then(|rest| rest.split("value=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .expect(name)
            .to_owned()
    };
    let approve = browser
        .post(app.url("/console/device"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", field("csrf").as_str()),
            ("user_code", "BCDF-GHJK"),
            ("workspace_id", field("workspace_id").as_str()),
        ])
        .send()
        .await
        .expect("approve");
    assert_eq!(approve.status(), StatusCode::NOT_FOUND);
}
