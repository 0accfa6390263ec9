//! A `kill -9` of `tollgate serve` loses nothing it acknowledged, whatever the SQLite
//! writer defers: a settlement is in the database (the operating system's copy of it, which
//! outlives the process) before its client is answered.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tollgate_core::money::NanoUsd;

use crate::helpers::{GENEROUS_TIERS, message_body, tollgate_command};

/// `tollgate serve` as a child process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// Starts the server on `data_dir` with `config` and waits until it listens.
    fn start(data_dir: &Path, config: &Path) -> Server {
        let mut child = tollgate_command(data_dir)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tollgate starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("tollgate printed where it listens before exiting")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("tollgate is listening on ") {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, address }
    }

    /// SIGKILL, and waits until the process is gone.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL sent");
        let status = self.child.wait().expect("the server exits");
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `tollgate` command on `data_dir` with `config`; its stdout, if it succeeded.
fn tollgate(data_dir: &Path, config: &Path, arguments: &[&str]) -> String {
    let output = tollgate_command(data_dir)
        .arg("--config")
        .arg(config)
        .args(arguments)
        .output()
        .expect("tollgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{arguments:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn tollgate_json(data_dir: &Path, config: &Path, arguments: &[&str]) -> Value {
    let stdout = tollgate(data_dir, config, arguments);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{arguments:?}: {error}: {stdout}"))
}

/// `tollgate credits balance` in nano-USD: (available, held, spent, expired).
fn balance(data_dir: &Path, config: &Path) -> (i64, i64, i64, i64) {
    let balance = tollgate_json(data_dir, config, &["credits", "balance", "--json"]);
    let field = |name: &str| balance[name].as_i64().expect("nano-USD");
    (
        field("available_nanos"),
        field("held_nanos"),
        field("spent_nanos"),
        field("expired_nanos"),
    )
}

fn assert_ledger_clean(data_dir: &Path, config: &Path) {
    let report = tollgate_json(data_dir, config, &["ledger", "check", "--json"]);
    assert_eq!(report["ok"], true, "{report}");
}

/// Every usage record in the SQLite file of `data_dir`, by request id: (status, cost).
async fn usage_records(data_dir: &Path) -> HashMap<String, Vec<(String, i64)>> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", data_dir.join("tollgate.sqlite").display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT request_id, status, cost_nanos FROM usage_records")
            .fetch_all(&mut connection)
            .await
            .expect("usage records");
    connection.close().await.expect("close");
    let mut records: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for (request_id, status, cost) in rows {
        records.entry(request_id).or_default().push((status, cost));
    }
    records
}

/// The request's charge: its one usage record, which must be a success with a cost.
fn charge_of(records: &HashMap<String, Vec<(String, i64)>>, request_id: &str) -> i64 {
    match records.get(request_id).map(Vec::as_slice) {
        Some([(status, cost)]) if status == "succeeded" && *cost > 0 => *cost,
        other => panic!("acknowledged request {request_id}: usage records {other:?}"),
    }
}

async fn post_message(
    client: &reqwest::Client,
    address: &str,
    api_key: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{address}/v1/messages"))
        .header("x-api-key", api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&message_body("claude-haiku-4-5"))
        .send()
        .await
}

/// A 200's `request-id`: the id its usage record carries.
fn acknowledged_id(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 200, "every answer is a success");
    response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Goal: every request answered 200 before a `kill -9` of the server (default durability
/// settings, SQLite) has exactly one usage record after it, a success with a positive
/// cost, and the charges are in the balance; the ledger checks clean. The requests in flight
/// at the kill (whole replies, whose credit SQLite holds in memory until their settlement)
/// left no hold and no record behind. Restarted on the same data, the server serves, its
/// reaper finds nothing to void, and the balance is whole: available + spent = granted,
/// spent = the usage records' costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_keeps_every_charge_it_acknowledged() {
    const CLIENTS: usize = 8;
    const LOAD: Duration = Duration::from_millis(1500);
    const MIN_ACKNOWLEDGED: usize = 50;
    const TTL_SECONDS: u64 = 3;
    let test_started = Instant::now();
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path();
    let config = dir.join("tollgate.toml");
    // A short reservation TTL, so the restarted server's reaper comes within the test.
    std::fs::write(
        &config,
        format!(
            r#"
            listen = "127.0.0.1:0"
            [gateway]
            reservation_ttl_seconds = {TTL_SECONDS}
            maintenance_interval_seconds = 1
            [providers.simulated]
            kind = "simulated"
            tokens_per_second = 0
            {GENEROUS_TIERS}
            "#
        ),
    )
    .expect("write the config");
    let api_key = tollgate(
        dir,
        &config,
        &["keys", "create", "--workspace", "Default", "--name", "durability"],
    )
    .trim()
    .to_owned();
    tollgate(
        dir,
        &config,
        &["credits", "grant", "--amount", "20", "--kind", "purchase"],
    );
    let granted = NanoUsd::from_usd(5 + 20).nanos();

    let mut server = Server::start(dir, &config);
    let client = reqwest::Client::new();
    // Clients send until the server is gone, so the kill lands on requests in flight.
    let killing = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, address, api_key) = (client.clone(), server.address.clone(), api_key.clone());
            let (killing, answered) = (killing.clone(), answered.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                loop {
                    match post_message(&client, &address, &api_key).await {
                        Ok(response) => {
                            acknowledged.push(acknowledged_id(&response));
                            answered.fetch_add(1, Ordering::SeqCst);
                            // The kill may cut the body; the 200 was already an answer.
                            let _ = response.bytes().await;
                        }
                        Err(error) => {
                            assert!(killing.load(Ordering::SeqCst), "failed before the kill: {error}");
                            // A refused connection began after the kill; anything else was
                            // in flight.
                            return (acknowledged, !error.is_connect());
                        }
                    }
                }
            })
        })
        .collect();
    let load_started = Instant::now();
    while load_started.elapsed() < LOAD || answered.load(Ordering::SeqCst) < MIN_ACKNOWLEDGED {
        assert!(
            load_started.elapsed() < Duration::from_secs(10),
            "only {} requests answered",
            answered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killing.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    server.kill();
    let (mut acknowledged, mut in_flight) = (Vec::new(), 0);
    for task in clients {
        let (ids, was_in_flight) = task.await.expect("client joined");
        acknowledged.extend(ids);
        in_flight += usize::from(was_in_flight);
    }
    let acknowledged_set: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(
        acknowledged_set.len(),
        acknowledged.len(),
        "request ids are unique"
    );

    // The dead server's data, as it was left.
    assert_ledger_clean(dir, &config);
    let records = usage_records(dir).await;
    let acknowledged_cost: i64 = acknowledged.iter().map(|id| charge_of(&records, id)).sum();
    let (available, held, spent, expired) = balance(dir, &config);
    assert!(
        acknowledged_cost <= spent,
        "acknowledged charges {acknowledged_cost} are spent ({spent})"
    );
    assert_eq!(available + held + spent + expired, granted, "nothing lost");
    assert_eq!(
        held, 0,
        "the requests in flight at the kill held their credit in memory only"
    );

    // Restarted on the same data: it serves, and its reaper ends what the kill cut short.
    let server = Server::start(dir, &config);
    let response = post_message(&client, &server.address, &api_key)
        .await
        .expect("the restarted server answers");
    let last = acknowledged_id(&response);
    response.bytes().await.expect("body");
    let bound = Duration::from_secs(TTL_SECONDS + 1 + 5);
    let held_at_kill = held;
    let (available, spent, expired) = loop {
        let (available, held, spent, expired) = balance(dir, &config);
        if held == 0 {
            break (available, spent, expired);
        }
        assert!(
            killed_at.elapsed() < bound,
            "holds outlived the reaper bound {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);

    assert_ledger_clean(dir, &config);
    let records = usage_records(dir).await;
    for id in acknowledged.iter().chain([&last]) {
        charge_of(&records, id);
    }
    let unacknowledged: Vec<_> = records
        .iter()
        .filter(|(id, _)| !acknowledged_set.contains(id) && **id != last)
        .collect();
    assert!(
        unacknowledged.len() <= CLIENTS,
        "at most one request per client was unanswered: {unacknowledged:?}"
    );
    for (id, entries) in &unacknowledged {
        // Settled before the kill but never answered (charged once), or voided.
        assert!(
            matches!(entries.as_slice(), [(status, cost)]
                if (status == "succeeded" && *cost > 0) || (status == "abandoned" && *cost == 0)),
            "request {id} in flight at the kill: usage records {entries:?}"
        );
    }
    let voided = unacknowledged
        .iter()
        .filter(|(_, entries)| entries[0].0 == "abandoned")
        .count();
    let recorded: i64 = records.values().flatten().map(|(_, cost)| cost).sum();
    assert_eq!(
        spent, recorded,
        "spent is the usage records' costs: nothing charged twice"
    );
    assert_eq!(available + spent + expired, granted, "nothing lost");
    eprintln!(
        "kill -9 under load: {} requests acknowledged and found charged once, {in_flight} \
         cut off in flight, {held_at_kill} nano-USD held at the kill; of the unanswered \
         requests {} were settled before it and {voided} voided by the reaper; {:?} in all",
        acknowledged.len(),
        unacknowledged.len() - voided,
        test_started.elapsed()
    );
}

/// Goal: a Message Batch survives a `kill -9` of the server mid-batch. Restarted on the
/// same data, the runner takes over the requests the dead one held once their leases lapse,
/// the batch completes, and every request is charged exactly once (one usage record each,
/// at the Batch rate), with nothing left reserved.
#[tokio::test]
async fn a_batch_completes_after_a_kill_and_charges_each_request_once() {
    const REQUESTS: usize = 8;
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path();
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            listen = "127.0.0.1:0"
            [batches]
            concurrency = 2
            lease_seconds = 2
            [providers.simulated]
            kind = "simulated"
            tokens_per_second = 40
            {GENEROUS_TIERS}
            "#
        ),
    )
    .expect("write the config");
    let api_key = tollgate(
        dir,
        &config,
        &["keys", "create", "--workspace", "Default", "--name", "batches"],
    )
    .trim()
    .to_owned();
    let client = reqwest::Client::new();
    let get_batch = |address: String, batch_id: String| {
        let (client, api_key) = (client.clone(), api_key.clone());
        async move {
            client
                .get(format!("{address}/v1/messages/batches/{batch_id}"))
                .header("x-api-key", api_key)
                .send()
                .await
                .expect("retrieve")
                .json::<Value>()
                .await
                .expect("batch JSON")
        }
    };

    let mut server = Server::start(dir, &config);
    let requests: Vec<Value> = (0..REQUESTS)
        .map(|index| {
            serde_json::json!({
                "custom_id": format!("item-{index}"),
                "params": {
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 40,
                    "messages": [{"role": "user", "content": format!("Tell me about {index}.")}],
                },
            })
        })
        .collect();
    let created: Value = client
        .post(format!("{}/v1/messages/batches", server.address))
        .header("x-api-key", &api_key)
        .json(&serde_json::json!({ "requests": requests }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("batch JSON");
    let batch_id = created["id"].as_str().expect("id").to_owned();
    // Killed once some requests finished and others are running.
    let started = Instant::now();
    loop {
        let batch = get_batch(server.address.clone(), batch_id.clone()).await;
        if batch["request_counts"]["succeeded"].as_u64().unwrap_or(0) >= 2 {
            assert_ne!(batch["processing_status"], "ended", "killed mid-batch: {batch}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the batch did not progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();

    let server = Server::start(dir, &config);
    let ended = loop {
        let batch = get_batch(server.address.clone(), batch_id.clone()).await;
        if batch["processing_status"] == "ended" {
            break batch;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the batch did not end: {batch}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended["request_counts"]["succeeded"], REQUESTS as u64, "{ended}");
    drop(server);

    let records = usage_records(dir).await;
    assert_eq!(
        records.len(),
        REQUESTS,
        "one request id per batch request: {records:?}"
    );
    let charged: i64 = records
        .keys()
        .map(|request_id| charge_of(&records, request_id))
        .sum();
    let (_, held, spent, _) = balance(dir, &config);
    assert_eq!(
        (held, spent),
        (0, charged),
        "each request charged once, nothing held"
    );
    assert_ledger_clean(dir, &config);
}
