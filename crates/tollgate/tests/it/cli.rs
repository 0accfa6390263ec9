//! The command line works on the same data as a server, and prints what scripts need.

use serde_json::Value;

fn tollgate(data_dir: &std::path::Path, arguments: &[&str]) -> (bool, String, String) {
    let output = crate::helpers::tollgate_command(data_dir)
        .args(arguments)
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
    let _schema = crate::helpers::cli_schema_guard(data_dir.path());
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

#[test]
fn billing_commands_buy_credit_set_limits_and_show_the_ladder() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let _schema = crate::helpers::cli_schema_guard(data_dir.path());
    let dir = data_dir.path();
    let run = |arguments: &[&str]| tollgate(dir, arguments);
    let json = |arguments: &[&str]| -> Value {
        let (ok, stdout, stderr) = run(arguments);
        assert!(ok, "{arguments:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{arguments:?}: {error}: {stdout}"))
    };

    assert_eq!(json(&["tiers", "--json"])["current"], "Evaluation");
    let (ok, stdout, stderr) = run(&[
        "credits",
        "purchase",
        "--amount",
        "5",
        "--card",
        "4242424242424242",
        "--idempotency-key",
        "k1",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tier: Tier 1"), "{stdout}");
    let (ok, _, _) = run(&[
        "credits",
        "purchase",
        "--amount",
        "5",
        "--card",
        "4242424242424242",
        "--idempotency-key",
        "k1",
    ]);
    assert!(ok, "a retried purchase succeeds without buying twice");
    assert_eq!(
        json(&["credits", "purchases", "--json"])
            .as_array()
            .expect("purchases")
            .len(),
        1
    );
    assert_eq!(
        json(&["tiers", "--json"])["cumulative_purchases_nanos"],
        5_000_000_000_i64
    );

    for (arguments, expected) in [
        (
            vec![
                "credits",
                "purchase",
                "--amount",
                "5",
                "--card",
                "4000000000000002",
            ],
            "declined",
        ),
        (
            vec![
                "credits",
                "purchase",
                "--amount",
                "6",
                "--card",
                "4242424242424242",
                "--idempotency-key",
                "k1",
            ],
            "idempotency key",
        ),
        (
            vec![
                "credits",
                "purchase",
                "--amount",
                "101",
                "--card",
                "4242424242424242",
            ],
            "at most $100.00",
        ),
        (
            vec!["limits", "set-org", "--spend-limit", "500"],
            "cannot exceed your current tier's cap",
        ),
        (
            vec!["limits", "set-org", "--limit-set", "nope"],
            "no limit set is named 'nope'",
        ),
        (
            vec![
                "credits",
                "grant",
                "--amount",
                "5",
                "--kind",
                "promotional",
                "--programme",
                "nope",
            ],
            "no programme",
        ),
    ] {
        let (ok, _, stderr) = run(&arguments);
        assert!(!ok, "{arguments:?} should fail");
        assert!(stderr.contains(expected), "{arguments:?}: {stderr}");
    }

    let (ok, _, stderr) = run(&["workspaces", "create", "batch"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&[
        "workspaces",
        "set-limits",
        "--workspace",
        "batch",
        "--spend-limit",
        "1000",
    ]);
    assert!(!ok && stderr.contains("cannot exceed"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "workspaces",
        "set-limits",
        "--workspace",
        "batch",
        "--spend-limit",
        "20",
        "--class",
        "sonnet",
        "--rpm",
        "10",
    ]);
    assert!(ok, "{stderr}");
    let limits = json(&["limits", "show", "--workspace", "batch", "--json"]);
    assert_eq!(limits["rate_limits"]["sonnet"]["requests_per_minute"], 10);
    assert_eq!(
        limits["rate_limits"]["opus"]["requests_per_minute"], 50,
        "other classes inherit"
    );
    assert_eq!(limits["monthly_spend_limit_nanos"], 20_000_000_000_i64);
    assert_eq!(
        json(&["workspaces", "list", "--json"])
            .as_array()
            .expect("workspaces")
            .len(),
        2
    );

    let (ok, _, stderr) = run(&["limits", "set-org", "--spend-limit", "50", "--reason", "budget"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = run(&[
        "autoreload",
        "set",
        "--threshold",
        "1",
        "--amount",
        "10",
        "--card",
        "4242424242424242",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(json(&["autoreload", "show", "--json"])["enabled"], true);
    let (ok, _, _) = run(&["autoreload", "off"]);
    assert!(ok);
    assert_eq!(json(&["autoreload", "show", "--json"])["enabled"], false);

    let audit = json(&["audit", "--json"]);
    let actions: Vec<&str> = audit
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["action"].as_str())
        .collect();
    for action in [
        "credit.granted",
        "credit.purchased",
        "limits.workspace",
        "limits.organization_spend_limit",
        "autoreload.set",
        "autoreload.off",
    ] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    assert!(
        audit
            .as_array()
            .expect("events")
            .iter()
            .any(|event| event["reason"] == "budget")
    );

    let (ok, stdout, stderr) = run(&["orgs", "create", "Acme"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("$5.00"), "{stdout}");
    assert_eq!(
        json(&["orgs", "list", "--json"]).as_array().expect("orgs").len(),
        2
    );
    assert_eq!(
        json(&["orgs", "show", "--org", "Acme", "--json"])["tier"],
        "Evaluation"
    );
    let (ok, _, stderr) = run(&["orgs", "create", "Acme"]);
    assert!(!ok && stderr.contains("already taken"), "{stderr}");
}
