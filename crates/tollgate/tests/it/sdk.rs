//! The official `openai` and `anthropic` Python SDKs against a running tollgate, streaming
//! and not: the scripts in `tests/sdk/` print one JSON object per case and these tests
//! check them, and the money they moved.
//!
//! The Python comes from `TOLLGATE_SDK_PYTHON` when set; otherwise a virtualenv at
//! `<workspace>/target/sdk-venv` is created (and the SDKs installed from PyPI) on first use,
//! under a lock file so that concurrent test processes create it once. `.ci/run` creates
//! it before `cargo test`, so CI needs PyPI only there. `npm_binary` does the same for the
//! npm-installed agents (Claude Code, Codex).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{TestApp, spawn_app, starter_nanos};

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|error| format!("{command:?} could not start: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

/// `tests/sdk/requirements.txt`: the SDKs' pinned versions.
fn sdk_requirements() -> PathBuf {
    workspace_root().join("crates/tollgate/tests/sdk/requirements.txt")
}

/// Whether `python` has every SDK at its pinned version.
fn has_both_sdks(python: &Path) -> bool {
    const CHECK: &str = "import sys, importlib.metadata as m\n\
        pins = [line.split('==') for line in open(sys.argv[1]).read().split() if '==' in line]\n\
        sys.exit(0 if pins and all(m.version(name) == version for name, version in pins) else 1)";
    python.exists()
        && Command::new(python)
            .args(["-c", CHECK])
            .arg(sdk_requirements())
            .output()
            .is_ok_and(|output| output.status.success())
}

/// A Python with both SDKs: `TOLLGATE_SDK_PYTHON`, or the workspace's virtualenv, created
/// under an exclusive lock on `target/sdk-venv.lock` if it is missing or incomplete.
fn sdk_python() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("TOLLGATE_SDK_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let target = workspace_root().join("target");
    let venv = target.join("sdk-venv");
    let python = venv.join("bin").join("python");
    if has_both_sdks(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(&target).map_err(|error| error.to_string())?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join("sdk-venv.lock"))
        .map_err(|error| format!("cannot open the venv lock: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot take the venv lock: {error}"))?;
    // Another process may have built it while this one waited.
    if !has_both_sdks(&python) {
        if !python.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(sdk_requirements()))?;
    }
    drop(lock);
    Ok(python)
}

/// Runs `tests/sdk/{script}` against `app` and returns its cases by name.
pub(crate) async fn run_script(app: &TestApp, script: &str) -> HashMap<String, Value> {
    run_script_with(app, script, &[]).await
}

/// `run_script` with more environment variables for the script.
pub(crate) async fn run_script_with(
    app: &TestApp,
    script: &str,
    environment: &[(&str, &str)],
) -> HashMap<String, Value> {
    let environment: Vec<(String, String)> = environment
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let base_url = app.address.clone();
    let api_key = app.api_key.clone();
    let output = tokio::task::spawn_blocking(move || {
        let python = sdk_python()?;
        run(Command::new(python)
            .arg(&script_path)
            .env("TOLLGATE_BASE_URL", base_url)
            .env("TOLLGATE_API_KEY", api_key)
            .envs(environment)
            // The SDKs must talk to loopback directly.
            .env("NO_PROXY", "*")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_BASE_URL"))
    })
    .await
    .expect("the script task ran");
    let output = output.unwrap_or_else(|error| panic!("{script}: {error}"));
    output
        .lines()
        .map(|line| {
            let case: Value =
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{script}: {line}: {error}"));
            (case["case"].as_str().expect("case name").to_owned(), case)
        })
        .collect()
}

pub(crate) fn int(case: &Value, field: &str) -> i64 {
    case[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {case}"))
}

#[tokio::test]
async fn the_openai_sdk_works_streaming_and_not() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "Hello from the OpenAI-compatible fake.".into(),
        input_tokens: 25,
        output_tokens: 9,
        ..Reply::default()
    }));
    let cases = run_script(&app, "openai_chat.py").await;

    let models = &cases["models"];
    assert_eq!(models["object"], "list");
    assert!(
        models["ids"]
            .as_array()
            .expect("ids")
            .contains(&Value::from("claude-sonnet-4-6"))
    );
    let chat = &cases["chat"];
    assert!(chat["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(chat["model"], "claude-sonnet-4-6");
    assert!(!chat["content"].as_str().expect("content").is_empty());
    assert!(matches!(chat["finish_reason"].as_str(), Some("stop" | "length")));
    let stream = &cases["chat_stream"];
    assert!(!stream["content"].as_str().expect("content").is_empty());
    assert!(
        int(stream, "completion_tokens") > 0,
        "the usage chunk arrived: {stream}"
    );
    let passthrough = &cases["passthrough_stream"];
    assert_eq!(passthrough["content"], "Hello from the OpenAI-compatible fake.");
    assert_eq!(passthrough["final"], "Hello from the OpenAI-compatible fake.");
    assert_eq!(
        (
            cases["bad_key"]["raised"].as_str(),
            int(&cases["bad_key"], "status")
        ),
        (Some("AuthenticationError"), 401)
    );
    assert_eq!(cases["bad_key"]["code"], "invalid_api_key");
    assert_eq!(cases["unknown_model"]["code"], "model_not_found");

    // Sonnet ($3/$15), Haiku 4.5 ($1/$5) and fake-gpt ($2/$8) per MTok, as each reported.
    let expected = int(chat, "prompt_tokens") * 3_000
        + int(chat, "completion_tokens") * 15_000
        + int(stream, "prompt_tokens") * 1_000
        + int(stream, "completion_tokens") * 5_000
        + 25 * 2_000
        + 9 * 8_000;
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - expected, 0, expected));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_anthropic_sdk_works_streaming_and_not() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "Translated from Chat Completions.".into(),
        input_tokens: 40,
        output_tokens: 6,
        ..Reply::default()
    }));
    let cases = run_script(&app, "anthropic_messages.py").await;

    assert_eq!(cases["models"]["ids"].as_array().expect("ids").len(), 3);
    assert_eq!(cases["models"]["has_more"], true);
    let message = &cases["message"];
    assert!(message["id"].as_str().expect("id").starts_with("msg_"));
    assert!(!message["text"].as_str().expect("text").is_empty());
    let stream = &cases["message_stream"];
    assert_eq!(
        stream["text"], stream["final_text"],
        "the stream adds up to the message"
    );
    assert!(int(stream, "output_tokens") > 0);
    let translated = &cases["translated_stream"];
    assert_eq!(translated["text"], "Translated from Chat Completions.");
    assert_eq!(translated["stop_reason"], "end_turn");
    assert_eq!(
        (int(translated, "input_tokens"), int(translated, "output_tokens")),
        (40, 6),
        "usage reaches the SDK through message_delta"
    );
    let tool_use = &cases["tool_use_stream"];
    assert_eq!(tool_use["stop_reason"], "tool_use");
    assert_eq!(tool_use["blocks"], json!(["tool_use"]));
    assert_eq!(tool_use["name"], "Bash");
    assert_eq!(
        tool_use["input"],
        json!({"command": "echo hello"}),
        "the SDK assembles the streamed input"
    );
    assert!(int(&cases["count_tokens"], "input_tokens") > 0);
    assert_eq!(int(&cases["bad_key"], "status"), 401);

    // Sonnet ($3/$15), Opus 4.6 via the claude-opus-4* alias ($5/$25), fake-gpt ($2/$8).
    let expected = int(message, "input_tokens") * 3_000
        + int(message, "output_tokens") * 15_000
        + int(stream, "input_tokens") * 5_000
        + int(stream, "output_tokens") * 25_000
        + 40 * 2_000
        + 6 * 8_000
        + int(tool_use, "input_tokens") * 3_000
        + int(tool_use, "output_tokens") * 15_000;
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - expected, 0, expected));
    app.assert_ledger_clean().await;
}

fn installed_version(binary: &PathBuf) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An npm package's command, pinned: the path in `env_var` when set, else `bin` of
/// `package@version` installed into `<workspace>/target/<directory>` on first use, under a
/// lock file so that concurrent test processes install it once.
pub(crate) fn npm_binary(
    env_var: &str,
    package: &str,
    version: &str,
    directory: &str,
    bin: &str,
) -> Result<PathBuf, String> {
    if let Some(binary) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(binary));
    }
    let prefix = workspace_root().join("target").join(directory);
    let binary = prefix.join("node_modules").join(".bin").join(bin);
    let is_pinned =
        |binary: &PathBuf| installed_version(binary).is_some_and(|installed| installed.contains(version));
    if is_pinned(&binary) {
        return Ok(binary);
    }
    std::fs::create_dir_all(&prefix).map_err(|error| error.to_string())?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(prefix.with_extension("lock"))
        .map_err(|error| format!("cannot open the install lock: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot take the install lock: {error}"))?;
    if !is_pinned(&binary) {
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("{package}@{version}")))?;
    }
    drop(lock);
    Ok(binary)
}
