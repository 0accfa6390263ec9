//! The real Claude Code (`@anthropic-ai/claude-code`, pinned) in print mode against a
//! running tollgate, with its default settings: only `ANTHROPIC_BASE_URL` and
//! `ANTHROPIC_API_KEY` are set. Once on the simulated model, once through tollgate to a fake
//! Anthropic upstream that records what it receives, and in each way a user can be refused:
//! no credit, tollgate's own rate limit, the upstream's 429 and 529, and a problem with the
//! provider account behind the gateway.
//!
//! The binary comes from `TOLLGATE_CLAUDE_CODE` when set; otherwise it is installed with npm
//! into `<workspace>/target/claude-code` on first use, under a lock file so that concurrent
//! test processes install it once. `.ci/run` installs it before `cargo test`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{Options, TestApp, spawn_app, spawn_app_with};
use crate::sdk::npm_binary;

/// The version the suite pins; `.ci/run` installs the same one.
pub(crate) const CLAUDE_CODE_VERSION: &str = "2.1.197";

/// The model Claude Code asks for by default in this version.
const DEFAULT_MODEL: &str = "claude-opus-4-8";

/// Claude Code's `claude`: `TOLLGATE_CLAUDE_CODE`, or the workspace's pinned install.
pub(crate) fn claude_binary() -> Result<PathBuf, String> {
    npm_binary(
        "TOLLGATE_CLAUDE_CODE",
        "@anthropic-ai/claude-code",
        CLAUDE_CODE_VERSION,
        "claude-code",
        "claude",
    )
}

/// What one `claude -p` run printed, parsed.
struct ClaudeRun {
    success: bool,
    /// The `--output-format json` result (`{"type":"result","is_error":…,"result":…}`), or
    /// `Null` when it printed none.
    result: Value,
    output: String,
    elapsed: Duration,
}

impl ClaudeRun {
    /// What a user reads: the answer, or the error Claude Code reports.
    fn text(&self) -> String {
        self.result["result"]
            .as_str()
            .map_or_else(|| self.output.clone(), str::to_owned)
    }
}

/// Runs `claude -p PROMPT --output-format json` against `app` with a fresh HOME and only
/// the two variables a user sets, plus the switches that keep it off the network
/// (telemetry, updates, error reports).
async fn claude_print(app: &TestApp, prompt: &str) -> ClaudeRun {
    let base_url = app.address.clone();
    let api_key = app.api_key.clone();
    let prompt = prompt.to_owned();
    let started = tokio::time::Instant::now();
    let mut run = tokio::task::spawn_blocking(move || {
        let claude = claude_binary().unwrap_or_else(|error| panic!("Claude Code: {error}"));
        let home = tempfile::tempdir().expect("a HOME for Claude Code");
        let output = Command::new("timeout")
            .arg("240")
            .arg(&claude)
            .args(["-p", &prompt, "--output-format", "json"])
            .current_dir(home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("ANTHROPIC_BASE_URL", base_url)
            .env("ANTHROPIC_API_KEY", api_key)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("NO_PROXY", "*")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("Claude Code starts");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let result = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Value>(line).ok())
            .unwrap_or(Value::Null);
        ClaudeRun {
            success: output.status.success(),
            result,
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            elapsed: Duration::ZERO,
        }
    })
    .await
    .expect("the Claude Code task ran");
    run.elapsed = started.elapsed();
    run
}

/// The answer came back as a success, not as an error Claude Code reports.
fn assert_answered(run: &ClaudeRun, what: &str) {
    assert!(
        run.success && run.result["is_error"] == json!(false),
        "{what}: Claude Code failed:\n{}",
        run.output
    );
}

/// Routes Claude Code's default model to the fake upstream, at Opus prices.
const DEFAULT_MODEL_ON_FAKE: &str = r#"
    [models.claude-opus-4-8]
    class = "opus"
    provider = "fake"
    input = "5"
    output = "25"
"#;

/// The first thing a new user does: `claude -p` with nothing set but the base URL and the
/// key, on a fresh `tollgate serve` (the simulated model answers Claude Code's default
/// model through the catalogue's aliases). Its default model sends a mid-conversation
/// `system` message with the `mid-conversation-system-2026-04-07` beta (#23).
#[tokio::test]
async fn claude_code_with_its_defaults_completes_a_prompt_on_the_simulated_model() {
    let app = spawn_app().await;
    let (available_before, ..) = app.balance().await;
    let run = claude_print(&app, "Reply with the word pong").await;
    assert_answered(&run, "simulated model");
    assert!(!run.text().trim().is_empty(), "an empty answer: {}", run.output);
    app.wait_for_settlement().await;
    let (available_after, held, _) = app.balance().await;
    assert_eq!(held, 0);
    assert!(available_after < available_before, "the answer was charged");
    let records = app.usage_records().await;
    assert!(!records.is_empty());
    assert!(records.iter().all(|record| record.model == "claude-opus-4-6"));
    app.assert_ledger_clean().await;
}

/// Through tollgate to an Anthropic upstream: the answer is the upstream's, what Claude
/// Code sent reaches the upstream untouched (its betas, the body fields they pair with, the
/// mid-conversation system message, its query string and headers), and the charge is the
/// upstream's usage at the model's prices (#23).
#[tokio::test]
async fn claude_code_through_tollgate_reaches_the_upstream_untouched_and_is_charged_exactly() {
    let app = spawn_app_with(Options {
        extra_config: DEFAULT_MODEL_ON_FAKE,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "pong from upstream".to_owned(),
        input_tokens: 1_200,
        output_tokens: 7,
        cache_creation_input_tokens: 300,
        cache_read_input_tokens: 26_000,
        ..Reply::default()
    }));
    let (available_before, ..) = app.balance().await;
    let run = claude_print(&app, "Reply with the word pong").await;
    assert_answered(&run, "fake upstream");
    assert_eq!(run.text().trim(), "pong from upstream");

    let requests: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.path == "/v1/messages")
        .collect();
    assert!(!requests.is_empty());
    let first = &requests[0];
    let betas = first.header("anthropic-beta").expect("the betas are forwarded");
    assert!(
        betas.contains("mid-conversation-system-2026-04-07"),
        "betas: {betas}"
    );
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.query.as_deref(), Some("beta=true"));
    assert_eq!(
        first.header("x-api-key"),
        Some("provider-secret"),
        "the provider's key, never the client's"
    );
    assert!(first.header("authorization").is_none());
    let session_id = run.result["session_id"]
        .as_str()
        .expect("Claude Code's session id");
    assert_eq!(first.header("x-claude-code-session-id"), Some(session_id));
    assert!(
        first
            .header("user-agent")
            .is_some_and(|agent| agent.starts_with("claude-cli/")),
        "the client's user agent goes through"
    );
    let body = &first.body;
    assert_eq!(body["model"], DEFAULT_MODEL);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["role"].as_str())
        .collect();
    assert!(
        roles.contains(&"system"),
        "the mid-conversation system message: {roles:?}"
    );
    for field in ["tools", "system", "metadata", "thinking", "context_management"] {
        assert!(body.get(field).is_some(), "{field} is forwarded: {body}");
    }

    app.wait_for_settlement().await;
    let (available_after, held, _) = app.balance().await;
    assert_eq!(held, 0);
    // Opus prices per token in nano-USD: input 5,000, output 25,000; 5-minute cache
    // writes 1.25 × input, cache reads 0.1 × input.
    let one_request = 1_200 * 5_000 + 7 * 25_000 + 300 * 6_250 + 26_000 * 500;
    let charged = available_before - available_after;
    assert_eq!(
        charged,
        one_request * i64::try_from(requests.len()).expect("count")
    );
    let records = app.usage_records().await;
    assert_eq!(records.len(), requests.len());
    for record in &records {
        assert_eq!(
            record.attribution.session_id.as_ref().map(|label| label.as_str()),
            Some(session_id),
            "the usage record carries Claude Code's session"
        );
    }
    app.assert_ledger_clean().await;
}

/// No credit: Claude Code reports the balance in the API's own words and stops.
#[tokio::test]
async fn claude_code_without_credit_is_told_its_balance_is_too_low() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let run = claude_print(&app, "Reply with the word pong").await;
    assert!(
        !run.success || run.result["is_error"] == json!(true),
        "{}",
        run.output
    );
    assert!(
        run.text()
            .to_ascii_lowercase()
            .contains("credit balance is too low"),
        "what the user sees: {}",
        run.text()
    );
    eprintln!("credit too low, Claude Code shows: {}", run.text());
}

/// A tier whose Opus requests refill one a second: after 60 quick requests the bucket is
/// empty and tollgate answers 429 with `retry-after` and the `anthropic-ratelimit-*`
/// headers its message points to (#23 item 6).
const ONE_REQUEST_A_SECOND: &str = r#"
    [[tiers]]
    name = "Test"
    cumulative_purchases_usd = "0"
    count_tokens_requests_per_minute = 100000
    rate_limits.opus = { requests_per_minute = 60, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
    rate_limits.sonnet = { requests_per_minute = 100000, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
    rate_limits.haiku = { requests_per_minute = 100000, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
"#;

/// Rate limited by tollgate: Claude Code waits as told and succeeds with its retries on.
#[tokio::test]
async fn claude_code_rate_limited_by_tollgate_waits_and_succeeds() {
    let app = spawn_app_with(Options {
        contract_tiers: true,
        extra_config: ONE_REQUEST_A_SECOND,
        ..Options::default()
    })
    .await;
    let body = json!({
        "model": "claude-opus-4-6",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let mut refused = None;
    for _ in 0..200 {
        let response = app.post_messages(&body).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("the bucket empties");
    let headers = refused.headers().clone();
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["x-should-retry"], "true");
    assert_eq!(headers["anthropic-ratelimit-requests-limit"], "60");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    assert!(headers.contains_key("anthropic-ratelimit-requests-reset"));
    let message = refused.json::<Value>().await.expect("JSON")["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("anthropic-ratelimit-*"), "{message}");

    let run = claude_print(&app, "Reply with the word pong").await;
    assert_answered(&run, "rate limited");
    eprintln!("rate limited: Claude Code answered after {:?}", run.elapsed);
}

/// The upstream's 429, then its 529: each reaches Claude Code as retryable (the upstream's
/// own `retry-after`, `x-should-retry: true`), Claude Code retries and succeeds (#23 item 3).
#[tokio::test]
async fn claude_code_retries_an_upstream_429_and_529() {
    let app = spawn_app_with(Options {
        extra_config: DEFAULT_MODEL_ON_FAKE,
        ..Options::default()
    })
    .await;
    for status in [429, 529] {
        app.fake.push_behavior(Behavior::Status(status));
        let run = claude_print(&app, "Reply with the word pong").await;
        assert_answered(&run, &format!("upstream {status}"));
        eprintln!("upstream {status}: Claude Code answered after {:?}", run.elapsed);
    }
    app.wait_for_settlement().await;
    let records = app.usage_records().await;
    let failed = records
        .iter()
        .filter(|record| record.status == tollgate_service::UsageStatus::Failed)
        .count();
    assert_eq!(failed, 2, "each refusal is a failed, unbilled request");
    app.assert_ledger_clean().await;
}

/// The provider account behind the gateway is out of credit: the user, who has credit
/// here, is told the gateway's provider account needs attention, never that their own
/// balance is too low (#23 item 4).
#[tokio::test]
async fn claude_code_is_not_blamed_for_the_gateway_operators_provider_account() {
    let app = spawn_app_with(Options {
        extra_config: DEFAULT_MODEL_ON_FAKE,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Refuse {
        status: 400,
        error_type: "invalid_request_error".to_owned(),
        message: "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.".to_owned(),
    });
    let run = claude_print(&app, "Reply with the word pong").await;
    assert!(
        !run.success || run.result["is_error"] == json!(true),
        "{}",
        run.output
    );
    let text = run.text();
    assert!(text.contains("needs attention"), "what the user sees: {text}");
    assert!(
        !text.contains("credit balance is too low"),
        "what the user sees: {text}"
    );
    eprintln!("provider account problem, Claude Code shows: {text}");
}
