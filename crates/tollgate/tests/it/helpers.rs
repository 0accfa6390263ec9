//! `spawn_app`: the real application on port 0 with a fresh database, the built-in
//! simulated model, and a fake upstream server (Anthropic's and OpenAI's wire formats) for
//! the `fake-*` models; optionally more fake upstreams for routing and failover tests.
//!
//! The database is the test binary's `crate::BACKEND`: a SQLite file in a temporary
//! directory (`it`), or a fresh schema of the machine's PostgreSQL server with rate limits
//! in its Redis under a fresh key prefix (`it_postgres`). Both servers' addresses can be
//! changed with `TOLLGATE_TEST_DATABASE_URL` and `TOLLGATE_TEST_REDIS_URL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate::app::Application;
use tollgate::config::{Config, Overrides};
use tollgate_core::money::NanoUsd;
use tollgate_service::{Clock, ManualClock, SystemClock, Tollgate};
use tollgate_testkit::FakeUpstream;

pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
    pub(crate) api_key: String,
    pub(crate) admin_key: String,
    pub(crate) tollgate: Tollgate,
    pub(crate) fake: FakeUpstream,
    pub(crate) org_id: String,
    pub(crate) clock: Option<Arc<ManualClock>>,
    pub(crate) config: Config,
    /// The upstreams `Options::extra_fakes` asked for; `{fakeN}` in the extra config.
    pub(crate) extra_fakes: Vec<FakeUpstream>,
    /// Starts the server's shutdown; dropping it does too.
    pub(crate) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Ends when the server has shut down.
    pub(crate) server: tokio::task::JoinHandle<()>,
    /// `http://…` of the metrics listener, when `metrics_listen` is set.
    pub(crate) metrics_address: Option<String>,
    _schema: Option<SchemaGuard>,
    _data_dir: tempfile::TempDir,
}

/// A one-rung ladder with limits no test reaches by accident; tests of the limits
/// themselves use the contract's ladder (`contract_tiers`) or set their own.
pub(crate) const GENEROUS_TIERS: &str = r#"
        [[tiers]]
        name = "Test"
        cumulative_purchases_usd = "0"
        count_tokens_requests_per_minute = 100000
        rate_limits.opus = { requests_per_minute = 100000, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
        rate_limits.sonnet = { requests_per_minute = 100000, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
        rate_limits.haiku = { requests_per_minute = 100000, input_tokens_per_minute = 100000000, output_tokens_per_minute = 100000000 }
"#;

/// Where a test binary keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // Each test binary names one.
pub(crate) enum TestBackend {
    Sqlite,
    PostgresRedis,
}

const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

pub(crate) fn test_database_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

pub(crate) fn test_redis_url() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_TEST_REDIS_URL.to_owned())
}

/// A name no other test or test process uses: a PostgreSQL schema, a Redis key prefix.
pub(crate) fn unique_name(what: &str) -> String {
    format!(
        "it_{what}_{}_{:012x}",
        std::process::id(),
        rand::random::<u64>() >> 16
    )
}

/// The configuration that puts one app on `crate::BACKEND` (nothing for SQLite), and the
/// schema to drop afterwards.
pub(crate) fn backend_config(manual_clock: bool) -> (String, Option<SchemaGuard>) {
    match crate::BACKEND {
        TestBackend::Sqlite => (String::new(), None),
        TestBackend::PostgresRedis => {
            let schema = unique_name("db");
            let config = shared_backend_config(&schema, &unique_name("rl"), manual_clock);
            (config, Some(SchemaGuard { schema }))
        }
    }
}

/// `[database]` and `[limits]` for PostgreSQL schema `schema` and Redis keys under `prefix`.
pub(crate) fn shared_backend_config(schema: &str, prefix: &str, manual_clock: bool) -> String {
    format!(
        r#"
        [database]
        url = "{database}"
        schema = "{schema}"
        max_connections = 8
        [limits]
        redis_url = "{redis}"
        redis_key_prefix = "{prefix}:"
        redis_clock = "{clock}"
        "#,
        database = test_database_url(),
        redis = test_redis_url(),
        clock = if manual_clock { "caller" } else { "server" },
    )
}

/// Drops its PostgreSQL schema when the test ends, so runs leave nothing behind.
pub(crate) struct SchemaGuard {
    pub(crate) schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread
        // with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&test_database_url()).await?;
                // This blocks the test's runtime: a transaction a task of that runtime holds
                // open (a test that panicked mid-batch) would hold the schema's locks for
                // ever, and the test would hang instead of failing.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut connection)
                    .await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

/// The `tollgate` binary on `data_dir`, or (PostgreSQL) on a schema named after it.
pub(crate) fn tollgate_command(data_dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("DATABASE_URL");
    if crate::BACKEND == TestBackend::PostgresRedis {
        command
            .env("DATABASE_URL", test_database_url())
            .env("TOLLGATE_DATABASE__SCHEMA", cli_schema(data_dir));
    }
    command
}

/// Drops the schema `tollgate_command(data_dir)` uses, when the test ends.
pub(crate) fn cli_schema_guard(data_dir: &std::path::Path) -> Option<SchemaGuard> {
    (crate::BACKEND == TestBackend::PostgresRedis).then(|| SchemaGuard {
        schema: cli_schema(data_dir),
    })
}

fn cli_schema(data_dir: &std::path::Path) -> String {
    let name = data_dir
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    format!("it_cli_{name}")
}

pub(crate) struct Options {
    /// Use the built-in tier ladder instead of the generous test one.
    pub(crate) contract_tiers: bool,
    pub(crate) starter_grant_usd: &'static str,
    /// More configuration. `{fake}` and `{fake0}`, `{fake1}`, … stand for the base URLs of
    /// the fake upstreams, `{dead}` for a loopback address nothing listens on.
    pub(crate) extra_config: &'static str,
    pub(crate) manual_clock: bool,
    /// How many more fake upstreams to start.
    pub(crate) extra_fakes: usize,
    /// The `[gateway]` table's keys (other tables go in `extra_config`).
    pub(crate) gateway_config: &'static str,
    /// More placeholders of `extra_config` and their text (addresses of other fakes, paths).
    pub(crate) replacements: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            contract_tiers: false,
            starter_grant_usd: "5.00",
            extra_config: "",
            manual_clock: false,
            extra_fakes: 0,
            gateway_config: "disconnect_drain_seconds = 5",
            replacements: Vec::new(),
        }
    }
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub(crate) async fn spawn_app_with(options: Options) -> TestApp {
    let fake = FakeUpstream::start().await;
    let mut extra_fakes = Vec::new();
    for _ in 0..options.extra_fakes {
        extra_fakes.push(FakeUpstream::start().await);
    }
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let mut extra = options
        .extra_config
        .replace("{fake}", &fake.base_url())
        .replace("{dead}", &dead);
    for (index, extra_fake) in extra_fakes.iter().enumerate() {
        extra = extra.replace(&format!("{{fake{index}}}"), &extra_fake.base_url());
    }
    for (placeholder, text) in &options.replacements {
        extra = extra.replace(placeholder, text);
    }
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let (backend, schema) = backend_config(options.manual_clock);
    let file = format!(
        r#"
        listen = "127.0.0.1:0"
        {backend}
        [credits]
        starter_grant_usd = "{grant}"
        [gateway]
        {gateway}
        [providers.simulated]
        kind = "simulated"
        tokens_per_second = 0
        [providers.fake]
        kind = "anthropic"
        base_url = "{base_url}"
        api_key = "provider-secret"
        batches = "local"
        connect_timeout_seconds = 2
        idle_timeout_seconds = 1
        request_timeout_seconds = 5
        [models.fake-sonnet]
        class = "sonnet"
        provider = "fake"
        upstream_model = "claude-sonnet-4-6"
        input = "3"
        output = "15"
        web_search_per_thousand = "10"
        [providers.fake-openai]
        kind = "openai"
        base_url = "{base_url}/v1"
        api_key = "openai-provider-secret"
        connect_timeout_seconds = 2
        idle_timeout_seconds = 1
        request_timeout_seconds = 5
        [models.fake-gpt]
        class = "sonnet"
        provider = "fake-openai"
        upstream_model = "gpt-4o"
        input = "2"
        output = "8"
        [aliases]
        "fake-sonnet-*" = "fake-sonnet"
        {extra}
        {tiers}
        "#,
        tiers = if options.contract_tiers {
            ""
        } else {
            GENEROUS_TIERS
        },
        grant = options.starter_grant_usd,
        gateway = options.gateway_config,
        base_url = fake.base_url(),
    );
    let overrides = Overrides {
        data_dir: Some(data_dir.path().to_owned()),
        ..Overrides::default()
    };
    let config = Config::parse(Some(&file), &HashMap::new(), &overrides).expect("test configuration");
    let manual_clock = options
        .manual_clock
        .then(|| Arc::new(ManualClock::new(SystemClock.now())));
    let clock: Arc<dyn Clock> = match &manual_clock {
        Some(clock) => clock.clone(),
        None => Arc::new(SystemClock),
    };
    let mut application = Application::build_with_clock(&config, clock)
        .await
        .expect("application builds");
    let address = format!("http://{}", application.local_addr().expect("bound"));
    let metrics_address = application
        .metrics_addr()
        .map(|address| format!("http://{address}"));
    let first_start = application
        .take_first_start()
        .expect("a fresh database gets a first start");
    let tollgate = application.tollgate().clone();
    let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        application
            .run_until(async {
                let _ = shutdown_signal.await;
            })
            .await
            .expect("server runs");
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        api_key: first_start.api_key.secret.expose_secret().to_owned(),
        admin_key: first_start.admin_key.secret.expose_secret().to_owned(),
        tollgate,
        fake,
        org_id: first_start.organization.id,
        clock: manual_clock,
        config,
        extra_fakes,
        shutdown: Some(shutdown),
        server,
        metrics_address,
        _schema: schema,
        _data_dir: data_dir,
    }
}

impl TestApp {
    /// Shuts the app down (its background tasks end with it) and starts it again on the
    /// same database, configuration, clock and fake upstreams: a restart, or another
    /// replica taking over from one that died.
    pub(crate) async fn restart(mut self) -> TestApp {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.server).await.expect("the server shuts down");
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(clock) => clock.clone(),
            None => Arc::new(SystemClock),
        };
        let application = Application::build_with_clock(&self.config, clock)
            .await
            .expect("application builds again");
        self.address = format!("http://{}", application.local_addr().expect("bound"));
        self.metrics_address = application
            .metrics_addr()
            .map(|address| format!("http://{address}"));
        self.tollgate = application.tollgate().clone();
        let (shutdown, shutdown_signal) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(shutdown);
        self.server = tokio::spawn(async move {
            application
                .run_until(async {
                    let _ = shutdown_signal.await;
                })
                .await
                .expect("server runs");
        });
        self
    }
}

pub(crate) fn chat_body(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello there"}],
    })
}

/// Reads a Chat Completions SSE body into its `data:` payloads (`[DONE]` as a string).
pub(crate) fn parse_chat_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let data: String = chunk
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            serde_json::from_str(&data).unwrap_or(Value::String(data))
        })
        .collect()
}

pub(crate) fn message_body(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello there"}],
    })
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST /v1/chat/completions` as the `openai` SDKs send it: a bearer key, no
    /// Anthropic headers.
    pub(crate) async fn post_chat(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn post_messages(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/messages"))
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Balance as (available, held, spent) nano-USD.
    pub(crate) async fn balance(&self) -> (i64, i64, i64) {
        let balance = self.tollgate.balance(&self.org_id).await.expect("balance");
        (
            balance.available.nanos(),
            balance.held.nanos(),
            balance.spent.nanos(),
        )
    }

    /// The app's key as the service sees it, and a catalogue model: for tests that call
    /// `Tollgate::begin` themselves.
    pub(crate) async fn caller_and_model(
        &self,
        model: &str,
    ) -> (tollgate_service::ApiCaller, tollgate_core::catalog::Model) {
        let caller = self
            .tollgate
            .authenticate_api_key(Some(&self.api_key))
            .await
            .expect("authenticated");
        let catalog = self.config.catalog().expect("catalogue");
        let model = catalog.model(model).expect("model").clone();
        (caller, model)
    }

    /// The organization's usage records, oldest first.
    pub(crate) async fn usage_records(&self) -> Vec<tollgate_store::UsageRecord> {
        self.tollgate
            .store()
            .usage_records(&self.org_id)
            .await
            .expect("records")
    }

    /// Creates a Console admin (ada@example.com) and signs in over plain HTTP: a client that
    /// shows redirects, and the session's `cookie` header value.
    #[allow(dead_code)] // Not every test binary signs in.
    pub(crate) async fn console_admin_session(&self) -> (reqwest::Client, String) {
        const PASSWORD: &str = "correct horse battery staple";
        self.tollgate
            .create_console_admin(&self.org_id, "ada@example.com", "Ada", PASSWORD)
            .await
            .expect("admin created");
        let (status, cookie, _) = self.console_sign_in("ada@example.com", PASSWORD).await;
        assert_eq!(status, 303);
        (self.console_client(), cookie.expect("the session cookie"))
    }

    /// A client for Console pages: it shows redirects instead of following them.
    pub(crate) fn console_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// Signs in to the Console with a password: the status, the session cookie
    /// (`name=value`) when one started, and the page.
    pub(crate) async fn console_sign_in(&self, email: &str, password: &str) -> (u16, Option<String>, String) {
        let response = self
            .console_client()
            .post(self.url("/console/sign-in"))
            .form(&[("email", email), ("password", password)])
            .send()
            .await
            .expect("sign-in sent");
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.split(';').next())
            .map(str::to_owned);
        let status = response.status().as_u16();
        (status, cookie, response.text().await.expect("page"))
    }

    /// A second organization, "Tenant B", and the secret of an admin key of its own.
    pub(crate) async fn other_organization_admin_key(&self) -> (tollgate_service::Organization, String) {
        let organization = self
            .tollgate
            .create_organization("Tenant B")
            .await
            .expect("org B");
        let admin_key = self
            .tollgate
            .create_key(
                tollgate_core::keys::KeyKind::Admin,
                &organization.id,
                None,
                "B admin",
            )
            .await
            .expect("B admin key")
            .secret
            .expose_secret()
            .to_owned();
        (organization, admin_key)
    }

    pub(crate) async fn assert_ledger_clean(&self) {
        let report = self.tollgate.store().audit().await.expect("audit runs");
        assert!(report.problems.is_empty(), "ledger audit: {:?}", report.problems);
    }

    /// Waits (bounded) for the capture of an organization's request: it is written after
    /// the response.
    pub(crate) async fn wait_for_capture(
        &self,
        org_id: &str,
        request_id: &str,
    ) -> tollgate_service::RequestCapture {
        for _ in 0..200 {
            let capture = self.tollgate.store().request_capture(org_id, request_id).await;
            if let Some(capture) = capture.expect("read") {
                return capture;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no capture of {request_id} was written");
    }

    /// Waits (bounded) until no reservation is open: settlement of a request the client
    /// left runs after the client is gone.
    pub(crate) async fn wait_for_settlement(&self) {
        for _ in 0..200 {
            // Whole replies' reservations may be held in memory, out of the table's sight.
            if self.tollgate.running_request_count() == 0
                && self
                    .tollgate
                    .store()
                    .pending_reservation_count(Some(&self.org_id))
                    .await
                    .expect("count")
                    == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("a reservation stayed open");
    }
}

pub(crate) fn starter_nanos() -> i64 {
    NanoUsd::from_usd(5).nanos()
}

/// Sonnet prices in nano-USD per token: $3 input, $15 output per MTok.
pub(crate) fn sonnet_cost(input_tokens: i64, output_tokens: i64) -> i64 {
    input_tokens * 3_000 + output_tokens * 15_000
}

/// Reads an SSE body into (event name, data JSON) pairs.
pub(crate) fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut event = String::new();
            let mut data = String::new();
            for line in chunk.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                }
            }
            (event, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}
