//! The real Codex CLI (`@openai/codex`, pinned) in `codex exec` against a running tollgate,
//! configured only by a base URL and a key (a model provider with `wire_api = "responses"`,
//! in a fresh HOME/CODEX_HOME), sandbox and approvals off. Once on the simulated model,
//! with a round trip through Codex's shell tool (`exec_command`), and once through tollgate
//! to a fake Anthropic upstream; in each the credit spent is exactly what the ledger's
//! usage records say, and what Codex reports it used.
//!
//! The binary comes from `TOLLGATE_CODEX` when set; otherwise it is installed with npm into
//! `<workspace>/target/codex` on first use. `.ci/run` installs it before `cargo test`.

use std::process::Command;

use serde_json::Value;
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{TestApp, sonnet_cost, spawn_app};
use crate::sdk::npm_binary;

/// The version the suite pins; `.ci/run` installs the same one.
const CODEX_VERSION: &str = "0.171.0";

/// What one `codex exec --json` run printed: its JSON events, and everything for failures.
struct CodexRun {
    success: bool,
    events: Vec<Value>,
    output: String,
}

impl CodexRun {
    fn items(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|event| event["type"] == "item.completed" && event["item"]["type"] == kind)
            .map(|event| &event["item"])
            .collect()
    }

    /// Input and output tokens over the run's turns, as Codex counted them.
    fn tokens(&self) -> (i64, i64) {
        self.events
            .iter()
            .filter(|event| event["type"] == "turn.completed")
            .fold((0, 0), |(input, output), event| {
                (
                    input + event["usage"]["input_tokens"].as_i64().unwrap_or(0),
                    output + event["usage"]["output_tokens"].as_i64().unwrap_or(0),
                )
            })
    }
}

/// Runs `codex exec --json PROMPT` on `model` against `app`, with a fresh HOME and only a
/// model provider pointing at tollgate; the working directory is the fresh HOME.
async fn codex_exec(app: &TestApp, model: &str, prompt: &str) -> CodexRun {
    let base_url = format!("{}/v1", app.address);
    let api_key = app.api_key.clone();
    let model = model.to_owned();
    let prompt = prompt.to_owned();
    tokio::task::spawn_blocking(move || {
        let codex = npm_binary("TOLLGATE_CODEX", "@openai/codex", CODEX_VERSION, "codex", "codex")
            .unwrap_or_else(|error| panic!("Codex: {error}"));
        let home = tempfile::tempdir().expect("a HOME for Codex");
        let output = Command::new("timeout")
            .arg("240")
            .arg(&codex)
            .args([
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--sandbox",
                "danger-full-access",
            ])
            .args(["-c", "approval_policy=\"never\""])
            .args(["-c", "model_provider=\"tollgate\""])
            .args(["-c", "model_providers.tollgate.name=\"tollgate\""])
            .args(["-c", &format!("model_providers.tollgate.base_url=\"{base_url}\"")])
            .args(["-c", "model_providers.tollgate.env_key=\"TOLLGATE_API_KEY\""])
            .args(["-c", "model_providers.tollgate.wire_api=\"responses\""])
            .args(["-m", &model, &prompt])
            .current_dir(home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CODEX_HOME", home.path())
            .env("TOLLGATE_API_KEY", api_key)
            .env("NO_PROXY", "*")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("Codex starts");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        CodexRun {
            success: output.status.success(),
            events: stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .collect(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        }
    })
    .await
    .expect("the Codex task ran")
}

/// The credit spent equals the sum of the usage records' costs, and the ledger is clean.
async fn assert_charge_is_the_ledgers(app: &TestApp) -> i64 {
    app.wait_for_settlement().await;
    let (_, held, spent) = app.balance().await;
    assert_eq!(held, 0);
    let recorded: i64 = app
        .usage_records()
        .await
        .iter()
        .map(|record| record.cost.nanos())
        .sum();
    assert_eq!(spent, recorded);
    app.assert_ledger_clean().await;
    spent
}

#[tokio::test]
async fn codex_runs_a_shell_command_through_the_simulated_model() {
    let app = spawn_app().await;
    let run = codex_exec(&app, "claude-sonnet-4-6", "Use exec_command to print hello").await;
    assert!(run.success, "Codex failed:\n{}", run.output);
    let commands = run.items("command_execution");
    assert!(
        commands
            .iter()
            .any(|command| command["exit_code"] == 0 && command["aggregated_output"] == "hello\n"),
        "the simulated model's tool call ran:\n{}",
        run.output
    );
    assert!(!run.items("agent_message").is_empty(), "{}", run.output);
    // One request for the tool call, one for the answer after its result.
    let records = app.usage_records().await;
    assert!(records.len() >= 2, "{records:?}");
    let (input, output) = run.tokens();
    let spent = assert_charge_is_the_ledgers(&app).await;
    assert_eq!(
        spent,
        sonnet_cost(input, output),
        "Codex's count is what was charged"
    );
}

#[tokio::test]
async fn codex_answers_through_a_fake_anthropic_upstream() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "pong".into(),
        input_tokens: 2_000,
        output_tokens: 3,
        ..Reply::default()
    }));
    let run = codex_exec(&app, "fake-sonnet", "Reply with the word pong").await;
    assert!(run.success, "Codex failed:\n{}", run.output);
    let messages = run.items("agent_message");
    assert_eq!(
        messages.last().map(|message| &message["text"]),
        Some(&Value::from("pong")),
        "{}",
        run.output
    );
    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["model"], "claude-sonnet-4-6");
    assert!(
        sent.body["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty())
    );
    let requests = i64::try_from(app.fake.request_count()).expect("count");
    assert_eq!(run.tokens(), (2_000 * requests, 3 * requests));
    assert_eq!(
        assert_charge_is_the_ledgers(&app).await,
        requests * sonnet_cost(2_000, 3)
    );
}
