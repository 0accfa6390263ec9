//! Several `tollgate serve` processes on one PostgreSQL schema and one Redis key prefix,
//! the way replicas run behind a load balancer: one balance, one set of rate-limit buckets,
//! one key directory, and a reaper that cleans up after a replica that died.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::time::Instant;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Clock, SystemClock};
use tollgate_store::{PostgresOptions, Store};
use tollgate_testkit::{Behavior, FakeUpstream, Reply};

use crate::helpers::{SchemaGuard, shared_backend_config, test_database_url, unique_name};

/// One `tollgate serve` process; killed (SIGKILL) when dropped.
struct Replica {
    child: Child,
    address: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the first replica printed at first start.
struct FirstStart {
    api_key: String,
    admin_key: String,
}

/// A deployment: a config file shared by every replica, and the schema it lives in.
struct Cluster {
    config_path: std::path::PathBuf,
    schema: String,
    _schema_guard: SchemaGuard,
    _directory: tempfile::TempDir,
}

impl Cluster {
    /// `gateway` goes into the `[gateway]` table, `extra` after everything else.
    fn new(fake: &FakeUpstream, gateway: &str, extra: &str) -> Cluster {
        let directory = tempfile::tempdir().expect("temporary directory");
        let schema = unique_name("replicas");
        let config = format!(
            r#"
            listen = "127.0.0.1:0"
            {backend}
            [gateway]
            disconnect_drain_seconds = 1
            maintenance_interval_seconds = 1
            {gateway}
            [providers.fake]
            kind = "anthropic"
            base_url = "{base_url}"
            api_key = "provider-secret"
            connect_timeout_seconds = 2
            request_timeout_seconds = 60
            [models.fake-sonnet]
            class = "sonnet"
            provider = "fake"
            upstream_model = "claude-sonnet-4-6"
            input = "3"
            output = "15"
            {extra}
            "#,
            backend = shared_backend_config(&schema, &unique_name("rl"), false),
            base_url = fake.base_url(),
        );
        let config_path = directory.path().join("tollgate.toml");
        std::fs::write(&config_path, config).expect("write the config");
        Cluster {
            config_path,
            _schema_guard: SchemaGuard {
                schema: schema.clone(),
            },
            schema,
            _directory: directory,
        }
    }

    /// Starts three replicas, the first of which sets the organization up: them, their
    /// addresses and the keys of the first start.
    fn start_three(&self) -> ([Replica; 3], [String; 3], FirstStart) {
        let (first, keys) = self.start();
        let keys = keys.expect("the first replica sets the organization up");
        let (second, _) = self.start();
        let (third, _) = self.start();
        let addresses = [
            first.address.clone(),
            second.address.clone(),
            third.address.clone(),
        ];
        ([first, second, third], addresses, keys)
    }

    /// Starts one replica and waits until it listens; the first one also returns the keys
    /// of the first start.
    fn start(&self) -> (Replica, Option<FirstStart>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tollgate starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut api_key, mut admin_key) = (None, None);
        let address = loop {
            let line = lines
                .next()
                .expect("tollgate printed where it listens before exiting")
                .expect("read stdout");
            if let Some(key) = line.trim().strip_prefix("API key:") {
                api_key = Some(key.trim().to_owned());
            } else if let Some(key) = line.trim().strip_prefix("Admin key:") {
                admin_key = Some(key.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("tollgate is listening on ") {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let first_start = api_key
            .zip(admin_key)
            .map(|(api_key, admin_key)| FirstStart { api_key, admin_key });
        (Replica { child, address }, first_start)
    }

    async fn store(&self) -> Store {
        Store::open_postgres(&PostgresOptions {
            url: test_database_url(),
            max_connections: 4,
            schema: Some(self.schema.clone()),
            asynchronous_commit: true,
        })
        .await
        .expect("open the shared store")
    }
}

/// The starter grant, and one tier whose rate limits no test reaches: what credit and
/// spend limits allow is all that binds.
fn credit_and_an_open_tier(credit_usd: &str) -> String {
    let open = "{ requests_per_minute = 1000000, input_tokens_per_minute = 1000000000, output_tokens_per_minute = 1000000000 }";
    format!(
        r#"
        [credits]
        starter_grant_usd = "{credit_usd}"
        [[tiers]]
        name = "Test"
        cumulative_purchases_usd = "0"
        count_tokens_requests_per_minute = 1000
        rate_limits.opus = {open}
        rate_limits.sonnet = {open}
        rate_limits.haiku = {open}
        "#
    )
}

/// After a burst: nothing charged beyond `spent_at_most`, no hold left, the audit clean, and
/// the usage records adding up to the ledger's spend.
async fn assert_ledger_whole(store: &Store, org_id: &str, spent_at_most: NanoUsd) {
    let balance = store.balance(org_id, SystemClock.now()).await.expect("balance");
    assert!(
        balance.spent <= spent_at_most,
        "spent {:?} of {spent_at_most:?}",
        balance.spent
    );
    assert_eq!(
        store
            .pending_reservation_count(Some(org_id))
            .await
            .expect("count"),
        0,
        "a hold was left"
    );
    let report = store.audit().await.expect("audit");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let charged: i64 = store
        .usage_records(org_id)
        .await
        .expect("records")
        .iter()
        .map(|record| record.cost.nanos())
        .sum();
    assert_eq!(
        NanoUsd::from_nanos(charged),
        balance.spent,
        "usage records and ledger agree"
    );
}

/// Creates an API key in `workspace_id` through the Admin API of `replica`: (id, secret).
async fn create_key(
    client: &reqwest::Client,
    replica: &str,
    admin_key: &str,
    name: &str,
    workspace_id: &str,
) -> (String, String) {
    let created = admin_post(
        client,
        replica,
        admin_key,
        "api_keys",
        json!({"name": name, "workspace_id": workspace_id}),
    )
    .await;
    let field = |name: &str| created[name].as_str().expect("key field").to_owned();
    (field("id"), field("api_key_secret"))
}

/// The status of a `count_tokens` call, which authenticates (and caches the key) without
/// spending credit.
async fn count_tokens(client: &reqwest::Client, replica: &str, key: &str) -> u16 {
    client
        .post(format!("{replica}/v1/messages/count_tokens"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "fake-sonnet", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .expect("count_tokens")
        .status()
        .as_u16()
}

/// The one organization of a cluster's first start.
async fn the_organization(store: &Store) -> tollgate_store::Organization {
    store
        .list_organizations()
        .await
        .expect("organizations")
        .pop()
        .expect("one organization")
}

fn message(max_tokens: u64) -> Value {
    json!({
        "model": "fake-sonnet",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello"}],
    })
}

async fn post_message(client: &reqwest::Client, replica: &str, key: &str, body: &Value) -> u16 {
    client
        .post(format!("{replica}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

async fn admin_post(
    client: &reqwest::Client,
    replica: &str,
    admin_key: &str,
    path: &str,
    body: Value,
) -> Value {
    let response = client
        .post(format!("{replica}/v1/organizations/{path}"))
        .header("x-api-key", admin_key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("admin request");
    let status = response.status();
    let body: Value = response.json().await.expect("admin JSON");
    assert!(status.is_success(), "admin {path}: {status} {body}");
    body
}

/// Goal: three replicas on one database and one Redis act as one gateway. Concurrent
/// requests spread over all three never pass a workspace's low RPM limit by more than it
/// refills while the test runs, and never spend more than the organization's small credit;
/// afterwards the ledger balances and no hold is left; a spend limit lowered, or a key
/// revoked, through one replica is enforced by the others within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_balance_one_rate_limit_and_one_key_directory() {
    const CREDIT_USD: &str = "0.50";
    const LIMITED_RPM: u64 = 12;
    let fake = FakeUpstream::start().await;
    fake.set_behavior(Behavior::Ok(Reply {
        latency: Duration::from_millis(20),
        ..Reply::default()
    }));
    let cluster = Cluster::new(&fake, "", &credit_and_an_open_tier(CREDIT_USD));
    let (first, keys) = cluster.start();
    let keys = keys.expect("the first replica sets the organization up");
    let (second, none) = cluster.start();
    assert!(none.is_none(), "only one replica performs the first start");
    let (third, _) = cluster.start();
    let replicas = [
        first.address.clone(),
        second.address.clone(),
        third.address.clone(),
    ];
    let client = reqwest::Client::new();

    // A second workspace whose RPM limit is low, with its own key.
    let workspace = admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        "workspaces",
        json!({"name": "limited"}),
    )
    .await;
    let workspace_id = workspace["id"].as_str().expect("workspace id").to_owned();
    admin_post(
        &client,
        &replicas[1],
        &keys.admin_key,
        &format!("workspaces/{workspace_id}/limits"),
        json!({"rate_limits": [{"model_class": "sonnet", "requests_per_minute": LIMITED_RPM}]}),
    )
    .await;
    let store = cluster.store().await;
    let org = the_organization(&store).await;
    let (_, limited_key) = create_key(&client, &replicas[2], &keys.admin_key, "limited", &workspace_id).await;

    // Rate limit: 60 requests at once on the limited workspace, round-robin over the
    // replicas, with credit to spare. Redis keeps one bucket for all replicas, so at most
    // its capacity plus what refills during the run (LIMITED_RPM a minute) gets through;
    // nothing else is tolerated. With a full bucket and enough credit, at least the
    // capacity does.
    let started = Instant::now();
    let limited = join_all((0..60).map(|index| {
        let (client, replica, key) = (client.clone(), replicas[index % 3].clone(), limited_key.clone());
        async move { post_message(&client, &replica, &key, &message(5)).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let admitted = limited.iter().filter(|status| **status == 200).count() as u64;
    let refill = (LIMITED_RPM as f64 * elapsed.as_secs_f64() / 60.0).ceil() as u64;
    assert!(
        (LIMITED_RPM..=LIMITED_RPM + refill).contains(&admitted),
        "{admitted} admitted against {LIMITED_RPM} rpm over {elapsed:?}: {limited:?}"
    );
    assert!(
        limited.iter().all(|status| matches!(status, 200 | 429)),
        "{limited:?}"
    );

    // Limit changes: a third workspace's key works on every replica (which caches the
    // limits in force); a spend limit below what it has spent, set through one replica,
    // stops it on the others within 1 s.
    let switched = admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        "workspaces",
        json!({"name": "switched"}),
    )
    .await;
    let switched_id = switched["id"].as_str().expect("workspace id").to_owned();
    let (_, switched_key) =
        create_key(&client, &replicas[0], &keys.admin_key, "switched", &switched_id).await;
    for replica in &replicas {
        assert_eq!(
            post_message(&client, replica, &switched_key, &message(5)).await,
            200
        );
    }
    admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        &format!("workspaces/{switched_id}/limits"),
        json!({"spend_limit_amount": "0.01"}),
    )
    .await;
    // As with revocation below: checked once the limits cache's TTL (1 s) has passed.
    let changed_at = Instant::now();
    tokio::time::sleep_until(changed_at + Duration::from_millis(1_020)).await;
    for replica in &replicas[1..] {
        assert_ne!(
            post_message(&client, replica, &switched_key, &message(5)).await,
            200,
            "{replica} still admits {:?} after the spend limit was lowered",
            changed_at.elapsed()
        );
    }

    // Credit: 60 expensive requests at once on the default workspace, more than the rest of
    // the credit pays for. Some succeed, the rest are refused, none is charged beyond it.
    fake.set_behavior(Behavior::Ok(Reply {
        output_tokens: 2_000,
        latency: Duration::from_millis(20),
        ..Reply::default()
    }));
    let unlimited = join_all((0..60).map(|index| {
        let (client, replica, key) = (client.clone(), replicas[index % 3].clone(), keys.api_key.clone());
        async move { post_message(&client, &replica, &key, &message(2_000)).await }
    }))
    .await;
    assert!(unlimited.contains(&200), "{unlimited:?}");
    assert!(
        unlimited.contains(&400),
        "the credit should run out under this load: {unlimited:?}"
    );
    let credit = NanoUsd::parse_usd(CREDIT_USD).expect("credit");
    assert_ledger_whole(&store, &org.id, credit).await;

    // Revocation: warm every replica's key cache, revoke through the first, and time how
    // long the others keep accepting the key.
    let (doomed_id, doomed) =
        create_key(&client, &replicas[0], &keys.admin_key, "to revoke", &workspace_id).await;
    for replica in &replicas {
        assert_eq!(count_tokens(&client, replica, &doomed).await, 200);
    }
    admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        &format!("api_keys/{doomed_id}"),
        json!({"status": "inactive"}),
    )
    .await;
    // Every replica cached the key before the revocation, so a request sent once the
    // key-cache TTL (1 s) has passed since then reads the record again and is refused.
    // (Polling until then raced the bound: a request sent just inside the TTL could return
    // 200 and the next poll land past it, failing a replica that kept its promise.)
    let revoked_at = Instant::now();
    tokio::time::sleep_until(revoked_at + Duration::from_millis(1_020)).await;
    for replica in &replicas[1..] {
        assert_eq!(
            count_tokens(&client, replica, &doomed).await,
            401,
            "{replica} still accepts a key revoked {:?} ago",
            revoked_at.elapsed()
        );
    }
    store.close().await;
    drop((first, second, third));
}

/// Goal: a user removed through one replica loses their personal key on every replica
/// within the key-cache bound (1 s), though each had the key cached and accepted it just
/// before; the organization's workspace key goes on working everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_users_personal_key_stops_on_every_replica() {
    let fake = FakeUpstream::start().await;
    let cluster = Cluster::new(&fake, "", &credit_and_an_open_tier("5.00"));
    let (processes, replicas, keys) = cluster.start_three();
    let client = reqwest::Client::new();
    let store = cluster.store().await;
    let org = the_organization(&store).await;
    let user = store
        .insert_user(&tollgate_store::UserRecord {
            id: tollgate_service::random::id(tollgate_core::ids::IdKind::User),
            org_id: org.id.clone(),
            email: "leaver@example.com".to_owned(),
            name: "Leaver".to_owned(),
            role: tollgate_core::roles::OrgRole::Developer,
            added_at: SystemClock.now(),
        })
        .await
        .expect("user added");
    let created = admin_post(
        &client,
        &replicas[1],
        &keys.admin_key,
        "api_keys",
        json!({"name": "leaver's key", "user_id": user.id}),
    )
    .await;
    assert_eq!(created["key_type"], "personal");
    let path = format!("users/{}", user.id);
    stops_on_every_replica_when_deleted(&client, &replicas, &keys, &created, &path).await;
    store.close().await;
    drop(processes);
}

/// Goal: a service account deleted through one replica loses its key on every replica
/// within the key-cache bound (1 s), as a removed user's personal key does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_accounts_key_stops_on_every_replica() {
    let fake = FakeUpstream::start().await;
    let cluster = Cluster::new(&fake, "", &credit_and_an_open_tier("5.00"));
    let (processes, replicas, keys) = cluster.start_three();
    let client = reqwest::Client::new();
    let (client_used, second_replica, admin_key) = (&client, &replicas[1], &keys.admin_key);
    let post = |path: String, body: Value| async move {
        admin_post(client_used, second_replica, admin_key, &path, body).await
    };
    let account = post("service_accounts".to_owned(), json!({"name": "ci-deploy-bot"})).await;
    let account_id = account["id"].as_str().expect("id");
    let workspace = post("workspaces".to_owned(), json!({"name": "Robots"})).await;
    let workspace_id = workspace["id"].as_str().expect("id");
    post(
        format!("workspaces/{workspace_id}/service_accounts"),
        json!({"service_account_id": account_id, "workspace_role": "workspace_developer"}),
    )
    .await;
    let created = post(
        "api_keys".to_owned(),
        json!({"name": "robot key", "workspace_id": workspace_id, "service_account_id": account_id}),
    )
    .await;
    assert_eq!(created["key_type"], "service_account");
    let path = format!("service_accounts/{account_id}");
    stops_on_every_replica_when_deleted(&client, &replicas, &keys, &created, &path).await;
    drop(processes);
}

/// Checks that every replica accepts the just `created` key, then deletes `path` (the
/// account it is bound to) through the first replica and waits until every replica refuses
/// the key, failing after the key-cache bound and a margin; the workspace key stays.
async fn stops_on_every_replica_when_deleted(
    client: &reqwest::Client,
    replicas: &[String],
    keys: &FirstStart,
    created: &Value,
    path: &str,
) {
    let bound = created["api_key_secret"].as_str().expect("secret");
    for replica in replicas {
        assert_eq!(count_tokens(client, replica, bound).await, 200);
    }
    let response = client
        .delete(format!("{}/v1/organizations/{path}", replicas[0]))
        .header("x-api-key", &keys.admin_key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("delete the account");
    assert_eq!(response.status(), 200);
    let removed_at = Instant::now();
    for replica in replicas {
        while count_tokens(client, replica, bound).await != 401 {
            assert!(
                removed_at.elapsed() < Duration::from_millis(1_500),
                "{replica} still accepts a deleted account's key {:?} later",
                removed_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for replica in replicas {
        assert_eq!(count_tokens(client, replica, &keys.api_key).await, 200);
    }
}

/// Goal: a replica killed (SIGKILL) with requests in flight loses nothing and doubles
/// nothing. Its holds stay until the reaper bound (reservation TTL + one maintenance
/// interval), then a surviving replica's reaper voids each exactly once; the balance is
/// whole again and the ledger balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_of_a_killed_replica_are_released_by_the_survivors_reaper() {
    const IN_FLIGHT: usize = 8;
    const TTL_SECONDS: u64 = 3;
    let fake = FakeUpstream::start().await;
    let cluster = Cluster::new(&fake, &format!("reservation_ttl_seconds = {TTL_SECONDS}"), "");

    let (doomed, keys) = cluster.start();
    let keys = keys.expect("first start");
    let (survivor, _) = cluster.start();
    let client = reqwest::Client::new();
    let store = cluster.store().await;
    let org = the_organization(&store).await;

    // A request that completes on the survivor, then IN_FLIGHT stalled streams on the
    // replica about to die.
    assert_eq!(
        post_message(&client, &survivor.address, &keys.api_key, &message(20)).await,
        200
    );
    for _ in 0..IN_FLIGHT {
        fake.push_behavior(Behavior::Stall {
            deltas: 1,
            duration: Duration::from_secs(30),
        });
    }
    let mut streaming = message(20);
    streaming["stream"] = json!(true);
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, replica, key, body) = (
                client.clone(),
                doomed.address.clone(),
                keys.api_key.clone(),
                streaming.clone(),
            );
            tokio::spawn(async move { post_message(&client, &replica, &key, &body).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.request_count() < 1 + IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "the streams never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upstream call starts on the book's decision, beside the batch's commit: the
    // reservations are written soon after the streams reach the upstream, not before.
    while store
        .pending_reservation_count(Some(&org.id))
        .await
        .expect("count")
        < IN_FLIGHT
    {
        assert!(Instant::now() < deadline, "every stream in flight holds credit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store
            .pending_reservation_count(Some(&org.id))
            .await
            .expect("count"),
        IN_FLIGHT
    );
    let held = store.balance(&org.id, SystemClock.now()).await.expect("balance");
    assert!(held.held > NanoUsd::ZERO);

    let killed_at = Instant::now();
    drop(doomed);
    for task in in_flight {
        let _ = task.await;
    }

    // The reaper bound: the TTL, plus one maintenance interval for the survivor to look,
    // plus slack for a slow machine.
    let bound = Duration::from_secs(TTL_SECONDS + 1 + 5);
    while store
        .pending_reservation_count(Some(&org.id))
        .await
        .expect("count")
        > 0
    {
        assert!(
            killed_at.elapsed() < bound,
            "holds outlived the reaper bound {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let balance = store.balance(&org.id, SystemClock.now()).await.expect("balance");
    assert_eq!(balance.held, NanoUsd::ZERO);
    assert_eq!(
        balance.available.checked_add(balance.spent).expect("sum"),
        balance.granted,
        "available + spent = granted: nothing lost"
    );
    let records = store.usage_records(&org.id).await.expect("records");
    assert_eq!(
        records.len(),
        1 + IN_FLIGHT,
        "one record per request: nothing doubled"
    );
    let abandoned = records
        .iter()
        .filter(|record| record.status == tollgate_store::UsageStatus::Abandoned)
        .count();
    assert_eq!(abandoned, IN_FLIGHT);
    let report = store.audit().await.expect("audit");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // The survivor still serves.
    assert_eq!(
        post_message(&client, &survivor.address, &keys.api_key, &message(20)).await,
        200
    );
    store.close().await;
}

/// Goal (#21): three replicas, 1,000 requests at once, against a balance that pays for a
/// third of them, then against a workspace's monthly spend limit with credit to spare:
/// nothing is charged beyond the binding constraint, every request is answered as served or
/// refused in Anthropic's words, no hold is left, the audit is clean and the usage records
/// equal the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_three_replicas_never_overspend_credit_or_a_spend_limit() {
    const REQUESTS: usize = 1_000;
    // Each request costs about 3 cents (2,000 output tokens at $15/MTok).
    const CREDIT_USD: &str = "10";
    const SPEND_LIMIT_USD: &str = "5";
    const SPEND_LIMIT_CENTS: &str = "500";
    let fake = FakeUpstream::start().await;
    fake.set_behavior(Behavior::Ok(Reply {
        output_tokens: 2_000,
        latency: Duration::from_millis(20),
        ..Reply::default()
    }));
    let cluster = Cluster::new(&fake, "", &credit_and_an_open_tier(CREDIT_USD));
    let (first, keys) = cluster.start();
    let keys = keys.expect("the first replica sets the organization up");
    let (second, _) = cluster.start();
    let (third, _) = cluster.start();
    let replicas = [
        first.address.clone(),
        second.address.clone(),
        third.address.clone(),
    ];
    let client = reqwest::Client::new();
    let store = cluster.store().await;
    let org = the_organization(&store).await;
    let credit = NanoUsd::parse_usd(CREDIT_USD).expect("credit");

    let burst = async |key: &str| -> Vec<u16> {
        join_all((0..REQUESTS).map(|index| {
            let (client, replica, key) = (client.clone(), replicas[index % 3].clone(), key.to_owned());
            async move { post_message(&client, &replica, &key, &message(2_000)).await }
        }))
        .await
    };

    // Credit binds: about a third are served, the rest refused as Anthropic refuses them.
    let statuses = burst(&keys.api_key).await;
    let served = statuses.iter().filter(|status| **status == 200).count();
    assert!(
        statuses.iter().all(|status| matches!(status, 200 | 400)),
        "{statuses:?}"
    );
    assert!(
        (200..=400).contains(&served),
        "{served} of {REQUESTS} served on $10 of credit"
    );
    assert_ledger_whole(&store, &org.id, credit).await;

    // A workspace's monthly limit binds, with credit to spare.
    admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        "credits/grants",
        json!({"amount": "10000", "lot_kind": "promotional"}),
    )
    .await;
    let workspace = admin_post(
        &client,
        &replicas[1],
        &keys.admin_key,
        "workspaces",
        json!({"name": "capped"}),
    )
    .await;
    let workspace_id = workspace["id"].as_str().expect("workspace id").to_owned();
    admin_post(
        &client,
        &replicas[2],
        &keys.admin_key,
        &format!("workspaces/{workspace_id}/limits"),
        json!({"spend_limit_amount": SPEND_LIMIT_CENTS}),
    )
    .await;
    let (_, capped_key) = create_key(&client, &replicas[0], &keys.admin_key, "capped", &workspace_id).await;
    let statuses = burst(&capped_key).await;
    let served = statuses.iter().filter(|status| **status == 200).count();
    assert!(
        statuses.iter().all(|status| matches!(status, 200 | 400 | 429)),
        "{statuses:?}"
    );
    assert!(
        (100..=200).contains(&served),
        "{served} of {REQUESTS} served under a $5 limit"
    );
    let limit = NanoUsd::parse_usd(SPEND_LIMIT_USD).expect("limit");
    let spent_in_workspace: i64 = store
        .usage_records(&org.id)
        .await
        .expect("records")
        .iter()
        .filter(|record| record.workspace_id == workspace_id)
        .map(|record| record.cost.nanos())
        .sum();
    assert!(
        NanoUsd::from_nanos(spent_in_workspace) <= limit,
        "the workspace spent {spent_in_workspace} nanos under a limit of {limit:?}"
    );
    assert_ledger_whole(
        &store,
        &org.id,
        credit.saturating_add(NanoUsd::parse_usd("100").expect("amount")),
    )
    .await;
    store.close().await;
    drop((first, second, third));
}

/// Goal (#17): two replicas whose requests all cross one balance threshold deliver one
/// alert: each replica detects the crossing on its own settlements, and the claim in the
/// shared database lets one firing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_crossing_one_threshold_deliver_one_alert() {
    let fake = FakeUpstream::start().await;
    let webhook = tollgate_testkit::FakeWebhook::start().await;
    let extra = format!(
        "{}\n[alerts]\npoll_interval_millis = 20\n",
        credit_and_an_open_tier("5.00")
    );
    let cluster = Cluster::new(&fake, "", &extra);
    let (first, keys) = cluster.start();
    let keys = keys.expect("the first replica sets the organization up");
    let (second, _) = cluster.start();
    let replicas = [first.address.clone(), second.address.clone()];
    let client = reqwest::Client::new();
    admin_post(
        &client,
        &replicas[0],
        &keys.admin_key,
        "alert_destinations",
        json!({"channel": "webhook", "target": webhook.url()}),
    )
    .await;
    // Just under the $5.00 granted: every request's settlement leaves the balance below.
    admin_post(
        &client,
        &replicas[1],
        &keys.admin_key,
        "alert_settings",
        json!({"balance_threshold_amount": "499.99"}),
    )
    .await;

    let statuses = join_all((0..40).map(|index| {
        let (client, replica, key) = (client.clone(), replicas[index % 2].clone(), keys.api_key.clone());
        async move { post_message(&client, &replica, &key, &message(5)).await }
    }))
    .await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    let waited = Instant::now();
    while webhook.received().is_empty() {
        assert!(waited.elapsed() < Duration::from_secs(10), "no alert arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Time for a second delivery to show up, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = webhook.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let event: Value = serde_json::from_slice(&received[0].body).expect("json event");
    assert_eq!(event["type"], "balance_below_threshold");
    drop((first, second));
}

/// Goal (#17): one `deployment_down` alert per outage across replicas, and a deployment
/// that answers again on a replica that never saw it fail re-arms the alert there: the
/// next outage, seen only by that replica, alerts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_alerted_down_by_one_replica_is_re_armed_by_another() {
    let primary = FakeUpstream::start().await;
    let backup = FakeUpstream::start().await;
    let webhook = tollgate_testkit::FakeWebhook::start().await;
    let extra = format!(
        r#"{credit}
        [providers.backup]
        kind = "anthropic"
        base_url = "{backup}"
        api_key = "provider-secret"
        [models.routed]
        class = "sonnet"
        input = "3"
        output = "15"
        [[models.routed.deployments]]
        provider = "fake"
        upstream_model = "claude-sonnet-4-6"
        [[models.routed.deployments]]
        provider = "backup"
        upstream_model = "claude-sonnet-4-6"
        priority = 1
        [alerts]
        poll_interval_millis = 20
        "#,
        credit = credit_and_an_open_tier("5.00"),
        backup = backup.base_url(),
    );
    let cluster = Cluster::new(&primary, "", &extra);
    let (first, keys) = cluster.start();
    let keys = keys.expect("the first replica sets the organization up");
    let (second, _) = cluster.start();
    let client = reqwest::Client::new();
    admin_post(
        &client,
        &first.address,
        &keys.admin_key,
        "alert_destinations",
        json!({"channel": "webhook", "target": webhook.url()}),
    )
    .await;
    let routed = json!({
        "model": "routed",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Hello"}],
    });
    // The first replica sees the primary fail: one alert.
    primary.push_behavior(Behavior::Status(529));
    assert_eq!(
        post_message(&client, &first.address, &keys.api_key, &routed).await,
        200
    );
    wait_for_downs(&webhook, 1).await;
    // Both replicas' watch runs (every maintenance interval, 1 s): the second one answers
    // through the primary, which has come back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        post_message(&client, &second.address, &keys.api_key, &routed).await,
        200
    );
    // A new outage, seen by the second replica alone: a new alert.
    primary.push_behavior(Behavior::Status(503));
    assert_eq!(
        post_message(&client, &second.address, &keys.api_key, &routed).await,
        200
    );
    wait_for_downs(&webhook, 2).await;
    drop((first, second));
}

fn downs(webhook: &tollgate_testkit::FakeWebhook) -> usize {
    webhook
        .received()
        .iter()
        .filter(|received| {
            serde_json::from_slice::<Value>(&received.body).expect("json event")["type"] == "deployment_down"
        })
        .count()
}

/// Waits (bounded) for `count` `deployment_down` alerts, then a while for one more, which
/// must not come.
async fn wait_for_downs(webhook: &tollgate_testkit::FakeWebhook, count: usize) {
    let waited = Instant::now();
    while downs(webhook) < count {
        assert!(waited.elapsed() < Duration::from_secs(10), "no alert arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(downs(webhook), count, "{:?}", webhook.received());
}
