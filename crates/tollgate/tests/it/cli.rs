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
fn a_bad_config_is_reported_once_on_one_line() {
    // #18: a $0.15 input with every cache price set was refused, and the refusal printed
    // twice with no newline between; now it loads, derived prices rounding up, and a model
    // with no price is refused once, on one line.
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let _schema = crate::helpers::cli_schema_guard(data_dir.path());
    let dir = data_dir.path();
    let config = dir.join("tollgate.toml");
    let model =
        "[models.mini]\nclass = \"sonnet\"\nprovider = \"simulated\"\ninput = \"0.15\"\noutput = \"0.6\"\n";
    let run = |text: &str| {
        std::fs::write(&config, text).expect("config written");
        tollgate(dir, &["--config", &config.to_string_lossy(), "migrate"])
    };

    let (ok, _, stderr) = run(&format!(
        "{model}cache_write_5m = \"0.19\"\ncache_write_1h = \"0.31\"\ncache_read = \"0.075\"\n"
    ));
    assert!(ok, "explicit cache prices load: {stderr}");

    let (ok, _, stderr) = run(model);
    assert!(
        ok,
        "a derived cache price rounds up to whole nano-dollars: {stderr}"
    );

    let (ok, _, stderr) = run(&model.replace("input = \"0.15\"\n", ""));
    assert!(!ok);
    assert_eq!(stderr.matches("has no price").count(), 1, "{stderr:?}");
    assert!(stderr.contains("models.mini"), "{stderr:?}");
    assert!(
        stderr.starts_with("error: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "one line: {stderr:?}"
    );

    let (ok, _, stderr) = run("listen = \n");
    assert!(!ok);
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr:?}");
    assert!(
        stderr.ends_with('\n') && !stderr.ends_with("\n\n"),
        "one trailing newline: {stderr:?}"
    );
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
    let purchases = json(&["credits", "purchases", "--json"]);
    let purchases = purchases.as_array().expect("purchases");
    assert_eq!(purchases.len(), 1);
    for field in ["refunded_nanos", "disputed_nanos", "unrecovered_nanos"] {
        assert_eq!(purchases[0][field], 0, "{field} in {}", purchases[0]);
    }
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
    // Each user's limit in the workspace: never above the workspace's own.
    let (ok, _, stderr) = run(&[
        "workspaces",
        "set-limits",
        "--workspace",
        "batch",
        "--user-spend-limit",
        "21",
    ]);
    assert!(!ok && stderr.contains("cannot exceed"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "workspaces",
        "set-limits",
        "--workspace",
        "batch",
        "--user-spend-limit",
        "5",
    ]);
    assert!(ok, "{stderr}");
    let workspaces = json(&["workspaces", "list", "--json"]);
    let workspaces = workspaces.as_array().expect("workspaces");
    assert_eq!(workspaces.len(), 2);
    let batch = workspaces
        .iter()
        .find(|workspace| workspace["name"] == "batch")
        .expect("batch");
    assert_eq!(batch["user_spend_limit_nanos"], 5_000_000_000_i64);
    assert_eq!(batch["spend_limit_nanos"], 20_000_000_000_i64, "kept");

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

/// Goal: `tollgate ledger check` passes a clean ledger (exit 0, `{"ok":true}`) and fails a
/// tampered one (exit non-zero), naming the account whose total no longer matches the
/// journal, on SQLite and PostgreSQL alike.
#[tokio::test]
async fn ledger_check_passes_a_clean_ledger_and_names_a_tampered_account() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let schema = crate::helpers::cli_schema_guard(data_dir.path());
    let dir = data_dir.path();
    if schema.is_none() {
        let (ok, _, stderr) = tollgate(dir, &["ledger", "check"]);
        assert!(
            !ok && stderr.contains("no database at"),
            "a check of nothing does not pass: {stderr}"
        );
    }
    let (ok, _, stderr) = tollgate(
        dir,
        &["credits", "grant", "--amount", "12.50", "--kind", "purchase"],
    );
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = tollgate(dir, &["ledger", "check", "--json"]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(
        report["accounts_checked"].as_u64().expect("count") >= 4,
        "{report}"
    );
    let (ok, stdout, stderr) = tollgate(dir, &["ledger", "check"]);
    assert!(ok && stdout.starts_with("ledger clean"), "{stdout}{stderr}");

    let account_id = tamper(
        dir,
        schema.as_ref(),
        "UPDATE accounts SET credits_posted = credits_posted + 1
         WHERE id = (SELECT MIN(id) FROM accounts WHERE kind = 'lot') RETURNING id",
    )
    .await;
    let named = format!("account {account_id} (lot of ");
    let (ok, stdout, stderr) = tollgate(dir, &["ledger", "check", "--json"]);
    assert!(!ok, "a tampered ledger fails the check");
    assert!(stderr.contains("the ledger check found"), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["ok"], false);
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with(&named) && problem.contains("credits_posted")),
        "{problems:?}"
    );
    let (ok, stdout, _) = tollgate(dir, &["ledger", "check"]);
    assert!(!ok && stdout.contains(&named), "{stdout}");
}

/// Goal: `tollgate backup` copies the database of a server that is taking requests, and
/// the copy is a whole ledger: restored into a fresh data directory (the file copied in
/// as `tollgate.sqlite`), it checks clean and holds the usage record of every request
/// answered 200 before the backup began. On PostgreSQL the command refuses and points to
/// `pg_dump`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_charge() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        starter_grant_usd: "100.00",
        ..crate::helpers::Options::default()
    })
    .await;
    let backup_dir = tempfile::tempdir().expect("temporary directory");
    let backup_file = backup_dir.path().join("tollgate-backup.sqlite");
    let backup_arguments = ["backup", "--to", backup_file.to_str().expect("utf-8 path")];
    if crate::BACKEND == crate::helpers::TestBackend::PostgresRedis {
        let (ok, _, stderr) = tollgate(&app.config.data_dir, &backup_arguments);
        assert!(!ok && stderr.contains("pg_dump"), "{stderr}");
        assert!(!backup_file.exists());
        return;
    }

    const CLIENTS: usize = 8;
    const WARM_UP_REQUESTS: usize = 300;
    let backup_started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = app.client.clone();
        let url = app.url("/v1/messages");
        let api_key = app.api_key.clone();
        let (backup_started, stop, answered) = (backup_started.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let (mut before, mut during) = (Vec::new(), 0_usize);
            while !stop.load(Ordering::SeqCst) {
                let response = client
                    .post(&url)
                    .header("x-api-key", &api_key)
                    .header("anthropic-version", "2023-06-01")
                    .json(&crate::helpers::message_body("claude-haiku-4-5"))
                    .send()
                    .await
                    .expect("request sent");
                assert_eq!(response.status(), 200);
                let request_id = response.headers()["request-id"]
                    .to_str()
                    .expect("ascii")
                    .to_owned();
                response.bytes().await.expect("body");
                answered.fetch_add(1, Ordering::SeqCst);
                if backup_started.load(Ordering::SeqCst) {
                    during += 1;
                } else {
                    before.push(request_id);
                }
            }
            (before, during)
        }));
    }
    for _ in 0..600 {
        if answered.load(Ordering::SeqCst) >= WARM_UP_REQUESTS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    backup_started.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let data_dir = app.config.data_dir.clone();
    let arguments = backup_arguments.map(str::to_owned);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        tollgate(&data_dir, &arguments)
    })
    .await
    .expect("backup joined");
    let backup_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (mut acknowledged, mut during) = (Vec::new(), 0);
    for client in clients {
        let (before, answered_during) = client.await.expect("client joined");
        acknowledged.extend(before);
        during += answered_during;
    }
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("backed up"), "{stdout}");
    assert!(during > 0, "the server answered requests while the backup ran");

    let restored = tempfile::tempdir().expect("temporary directory");
    let restored_file = restored.path().join("tollgate.sqlite");
    std::fs::copy(&backup_file, &restored_file).expect("restore by copying the file");
    let (ok, stdout, stderr) = tollgate(restored.path(), &["ledger", "check", "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["ok"], true, "{report}");

    let store = tollgate_store::Store::open_sqlite(&restored_file, tollgate_store::SqliteOptions::default())
        .await
        .expect("the restored database opens");
    let records: std::collections::HashSet<String> = store
        .usage_records(&app.org_id)
        .await
        .expect("records")
        .into_iter()
        .map(|record| record.request_id)
        .collect();
    store.close().await;
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|request_id| !records.contains(*request_id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged charges missing from the backup: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    assert!(records.len() <= acknowledged.len() + during + CLIENTS);
    eprintln!(
        "backup under load: {} bytes in {backup_time:?}; {} requests answered before it began, \
         {during} while it ran; {} usage records in the backup",
        std::fs::metadata(&backup_file).expect("backup file").len(),
        acknowledged.len(),
        records.len()
    );

    // The check covers the usage records and their rollup too.
    tamper(
        restored.path(),
        None,
        "UPDATE usage_hourly SET requests = requests + 1
         WHERE hour = (SELECT MIN(hour) FROM usage_hourly) RETURNING requests",
    )
    .await;
    tamper(
        restored.path(),
        None,
        "DELETE FROM usage_records WHERE id = (SELECT MIN(id) FROM usage_records) RETURNING id",
    )
    .await;
    let (ok, stdout, _) = tollgate(restored.path(), &["ledger", "check", "--json"]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("usage rollup of"), "{stdout}");
    assert!(
        stdout.contains("has 0 usage records but should have 1"),
        "{stdout}"
    );
}

/// Runs one tampering statement that returns a number (`RETURNING`) on the database the
/// CLI uses for `data_dir`: its SQLite file, or its PostgreSQL schema.
async fn tamper(
    data_dir: &std::path::Path,
    schema: Option<&crate::helpers::SchemaGuard>,
    statement: &str,
) -> i64 {
    use sqlx::Connection;
    match schema {
        None => {
            let url = format!("sqlite://{}", data_dir.join("tollgate.sqlite").display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("connect");
            let value = sqlx::query_scalar(statement)
                .fetch_one(&mut connection)
                .await
                .expect("tamper");
            connection.close().await.expect("close");
            value
        }
        Some(guard) => {
            let mut connection = sqlx::PgConnection::connect(&crate::helpers::test_database_url())
                .await
                .expect("connect");
            sqlx::query(&format!("SET search_path TO {}", guard.schema))
                .execute(&mut connection)
                .await
                .expect("schema");
            let value = sqlx::query_scalar(statement)
                .fetch_one(&mut connection)
                .await
                .expect("tamper");
            connection.close().await.expect("close");
            value
        }
    }
}
