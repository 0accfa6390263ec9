//! The command line works on the same data as a server, and prints what scripts need.

use std::process::Command;

use serde_json::Value;

fn tollgate(data_dir: &std::path::Path, arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(arguments)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .expect("tollgate runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn keys_and_credits_commands_work_on_a_fresh_data_directory() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path();
    let (ok, stdout, stderr) = tollgate(dir, &["keys", "create", "--workspace", "Default", "--name", "ci"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("First start"),
        "the first command sets up the Default organization"
    );
    let secret = stdout.trim();
    assert!(
        secret.starts_with("sk-tg-api01-") && !secret.contains(' '),
        "the secret alone on stdout: {stdout}"
    );

    let (ok, stdout, _) = tollgate(dir, &["credits", "balance", "--org", "Default", "--json"]);
    assert!(ok);
    let balance: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(balance["available_nanos"], 5_000_000_000_i64);
    assert_eq!(balance["held_nanos"], 0);
    assert_eq!(balance["spent_nanos"], 0);

    let (ok, stdout, stderr) = tollgate(
        dir,
        &[
            "credits", "grant", "--org", "Default", "--amount", "12.50", "--kind", "purchase",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("$12.50"));
    let (_, stdout, _) = tollgate(dir, &["credits", "balance", "--json"]);
    let balance: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(balance["available_nanos"], 17_500_000_000_i64);
    let (_, stdout, _) = tollgate(dir, &["credits", "lots", "--json"]);
    let lots: Value = serde_json::from_str(&stdout).expect("json");
    let purchase = lots
        .as_array()
        .expect("lots")
        .iter()
        .find(|lot| lot["kind"] == "purchase")
        .expect("purchase lot");
    assert!(
        purchase["expires_at"].is_string(),
        "purchases expire a year after purchase"
    );

    for (arguments, expected) in [
        (
            vec!["credits", "grant", "--amount", "0", "--kind", "purchase"],
            "positive",
        ),
        (
            vec!["credits", "grant", "--amount", "-3", "--kind", "promotional"],
            "positive",
        ),
        (
            vec!["credits", "grant", "--amount", "abc", "--kind", "purchase"],
            "--amount",
        ),
        (
            vec!["credits", "grant", "--amount", "5", "--kind", "starter"],
            "starter",
        ),
        (
            vec!["credits", "balance", "--org", "Nope"],
            "no organization is named 'Nope'",
        ),
        (
            vec!["keys", "create", "--workspace", "Nope"],
            "no workspace is named 'Nope'",
        ),
    ] {
        let (ok, _, stderr) = tollgate(dir, &arguments);
        assert!(!ok, "{arguments:?} should fail");
        assert!(
            stderr.to_lowercase().contains(&expected.to_lowercase()),
            "{arguments:?}: {stderr}"
        );
    }

    let (ok, stdout, _) = tollgate(dir, &["keys", "list", "--json"]);
    assert!(ok);
    let keys: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(keys.as_array().expect("keys").len(), 2);
    assert!(!stdout.contains(secret), "secrets are never listed");
    let key_id = keys[0]["id"].as_str().expect("id").to_owned();
    let (ok, _, stderr) = tollgate(dir, &["keys", "revoke", &key_id]);
    assert!(ok, "{stderr}");
    let (_, stdout, _) = tollgate(dir, &["keys", "list", "--json"]);
    assert!(stdout.contains("archived"));
}
