//! What an operator sees of the running gateway (#17): `/metrics` behind its token or on a
//! listener of its own, counting each request with its outcome, tokens and cost; and log
//! lines as JSON objects that name the request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use serde_json::{Value, json};
use tollgate::config::{Config, Overrides};

use crate::helpers::{
    GENEROUS_TIERS, Options, TestBackend, cli_schema_guard, message_body, spawn_app_with, tollgate_command,
};

const TOKEN: &str = "scrape-secret";

/// The value of the first sample of `family` whose labels include every one of `labels`.
fn sample(scrape: &str, family: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) || line.starts_with(&format!("{family} ")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Goal (#17): one request that succeeds and one refused for credit are each counted once
/// with their outcome, the charged one's cost appears under its organization to the
/// nano-dollar, and `/metrics` answers only a scrape bearing the token.
#[tokio::test]
async fn metrics_count_each_request_with_its_outcome_tokens_and_cost_behind_a_token() {
    let app = spawn_app_with(Options {
        // Enough for a small request's bound, not for one asking 1,000 output tokens.
        starter_grant_usd: "0.01",
        extra_config: "[observability]\nmetrics_token = \"scrape-secret\"",
        ..Options::default()
    })
    .await;
    let served = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(served.status(), 200);
    let refused = app
        .post_messages(&json!({
            "model": "fake-sonnet",
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "Hello there"}],
        }))
        .await;
    assert_eq!(refused.status(), 400, "refused for credit");

    let scrape = |token: Option<&str>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(scrape(None).await.expect("scrape").status(), 401);
    assert_eq!(scrape(Some("wrong")).await.expect("scrape").status(), 401);
    let response = scrape(Some(TOKEN)).await.expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.expect("body");

    let succeeded = [
        "route=\"/v1/messages\"",
        "model=\"fake-sonnet\"",
        "provider=\"fake\"",
        "status_class=\"2xx\"",
        "outcome=\"succeeded\"",
    ];
    assert!(
        sample(&text, "tollgate_requests_total", &succeeded).is_some(),
        "{text}"
    );
    let refused_credit = [
        "model=\"fake-sonnet\"",
        "status_class=\"4xx\"",
        "outcome=\"refused_credit\"",
    ];
    assert!(
        sample(&text, "tollgate_requests_total", &refused_credit).is_some(),
        "{text}"
    );
    // The fake upstream reports 10 input and 20 output tokens: $3 and $15 per MTok.
    let organization = format!("organization=\"{}\"", app.org_id);
    assert_eq!(
        sample(
            &text,
            "tollgate_cost_nanousd_total",
            &["model=\"fake-sonnet\"", &organization]
        ),
        Some(330_000.0)
    );
    for (family, labels) in [
        (
            "tollgate_tokens_total",
            vec!["kind=\"output\"", "model=\"fake-sonnet\""],
        ),
        ("tollgate_spend_refusals_total", vec!["reason=\"credit\""]),
        ("tollgate_settlements_total", vec!["result=\"charged\""]),
        (
            "tollgate_upstream_attempts_total",
            vec!["provider=\"fake\"", "result=\"ok\""],
        ),
        ("tollgate_overhead_seconds_count", vec!["surface=\"anthropic\""]),
        (
            "tollgate_time_to_first_byte_seconds_count",
            vec!["model=\"fake-sonnet\""],
        ),
        (
            "tollgate_request_duration_seconds_count",
            vec!["model=\"fake-sonnet\""],
        ),
        (
            "tollgate_http_responses_total",
            vec!["surface=\"anthropic\"", "status_class=\"2xx\""],
        ),
        (
            "tollgate_ratelimit_decisions_total",
            vec!["metric=\"requests\"", "decision=\"admitted\""],
        ),
        ("process_resident_memory_bytes", vec![]),
    ] {
        assert!(
            sample(&text, family, &labels).is_some(),
            "{family} {labels:?} in\n{text}"
        );
    }
    let backend = match crate::BACKEND {
        TestBackend::Sqlite => "backend=\"sqlite\"",
        TestBackend::PostgresRedis => "backend=\"postgres\"",
    };
    assert!(sample(&text, "tollgate_store_write_batch_operations_count", &[backend]).is_some());
    if crate::BACKEND == TestBackend::PostgresRedis {
        assert!(sample(&text, "tollgate_redis_call_seconds_count", &[]).is_some());
    }
    // Every family of ours in the scrape is one the binary describes.
    let described: Vec<&str> = tollgate::telemetry::FAMILIES
        .iter()
        .map(|(name, ..)| *name)
        .collect();
    for line in text.lines().filter(|line| line.starts_with("# TYPE tollgate_")) {
        let family = line.split_whitespace().nth(2).expect("a family name");
        assert!(described.contains(&family), "{family} is not described");
    }
    app.assert_ledger_clean().await;
}

/// Goal (#17): with `metrics_listen`, `/metrics` has a listener of its own, open to who
/// reaches it, and the main listener does not serve it.
#[tokio::test]
async fn metrics_listen_serves_metrics_on_a_listener_of_their_own() {
    let app = spawn_app_with(Options {
        extra_config: "[observability]\nmetrics_listen = \"127.0.0.1:0\"",
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    let response = app
        .client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains("# TYPE tollgate_requests_total counter"), "{text}");
    let main = app.client.get(app.url("/metrics")).send().await.expect("request");
    assert_eq!(main.status(), 404);
}

#[test]
fn metrics_are_either_on_their_own_listener_or_behind_a_token() {
    let parse =
        |file: &str| Config::parse(Some(file), &HashMap::new(), &Overrides::default()).expect("parses");
    let both = parse("[observability]\nmetrics_listen = \"127.0.0.1:9464\"\nmetrics_token = \"t\"");
    let error = both.metrics_endpoint().expect_err("refused").to_string();
    assert!(error.contains("not both"), "{error}");
    let bad = parse("[observability]\nmetrics_listen = \"everywhere\"");
    let error = bad.metrics_endpoint().expect_err("refused").to_string();
    assert!(error.contains("observability.metrics_listen"), "{error}");
    let bad = parse("[observability]\nlog_format = \"xml\"");
    let error = bad.log_format().expect_err("refused").to_string();
    assert!(error.contains("'text' or 'json'"), "{error}");
    let bad = parse("[observability]\notlp_endpoint = \"collector:4318\"");
    let error = bad.trace_settings().expect_err("refused").to_string();
    assert!(error.contains("observability.otlp_endpoint"), "{error}");
    for ratio in ["2", "-0.5", "most"] {
        let bad = parse(&format!(
            "[observability]\notlp_endpoint = \"http://collector:4318\"\ntrace_sample_ratio = \"{ratio}\""
        ));
        let error = bad.trace_settings().expect_err("refused").to_string();
        assert!(
            error.contains("observability.trace_sample_ratio"),
            "{ratio}: {error}"
        );
    }
    let good =
        parse("[observability]\notlp_endpoint = \"http://collector:4318/\"\ntrace_sample_ratio = \"0.01\"");
    let settings = good.trace_settings().expect("valid").expect("traces on");
    assert_eq!(settings.endpoint, "http://collector:4318/v1/traces");
}

/// `tollgate serve` on `data_dir` with `config` (one replica: rate limits in its memory)
/// and `environment`, once it listens: the process, its address and the API key its first
/// start printed.
fn serve(
    data_dir: &std::path::Path,
    config: &std::path::Path,
    environment: &[(&str, &str)],
    stderr: Stdio,
) -> (std::process::Child, String, String) {
    let mut child = tollgate_command(data_dir)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .env("TOLLGATE_LIMITS__ALLOW_LOCAL_LIMITS", "true")
        .envs(environment.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("tollgate starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut api_key = None;
    let address = loop {
        let line = stdout
            .next()
            .expect("tollgate prints where it listens")
            .expect("stdout");
        if let Some(key) = line.trim().strip_prefix("API key:") {
            api_key = Some(key.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("tollgate is listening on ") {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || stdout.for_each(drop));
    (
        child,
        address,
        api_key.expect("the first start prints the API key"),
    )
}

/// Goal (#17): `log_format = "json"` writes every log line as one JSON object, and a line
/// written while a request is served names its request id.
#[tokio::test]
async fn json_logs_are_one_object_a_line_and_name_the_request() {
    let data_dir = tempfile::tempdir().expect("data directory");
    let _schema = cli_schema_guard(data_dir.path());
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let config_path = data_dir.path().join("tollgate.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            listen = "127.0.0.1:0"
            [observability]
            log_format = "json"
            [providers.down]
            kind = "anthropic"
            base_url = "http://{dead}"
            api_key = "provider-secret"
            connect_timeout_seconds = 1
            [models.down-model]
            class = "sonnet"
            provider = "down"
            input = "3"
            output = "15"
            {GENEROUS_TIERS}
            "#
        ),
    )
    .expect("config written");
    let (mut child, address, api_key) = serve(data_dir.path(), &config_path, &[], Stdio::piped());
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/messages"))
        .header("x-api-key", &api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&message_body("down-model"))
        .send()
        .await
        .expect("request sent");
    assert!(response.status().is_server_error(), "{}", response.status());
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    child.kill().expect("stopped");
    child.wait().expect("exited");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    assert!(!lines.is_empty(), "the failed call is logged");
    let names_the_request = |line: &Value| {
        line["fields"]["request_id"] == request_id.as_str()
            || line["span"]["request_id"] == request_id.as_str()
    };
    assert!(lines.iter().any(names_the_request), "{request_id} in {stderr}");
    assert!(
        lines
            .iter()
            .all(|line| line["level"].is_string() && line["timestamp"].is_string())
    );
}

/// A Prometheus server on a free loopback port, scraping `target` every second; stopped on
/// drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _storage: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let storage = tempfile::tempdir().expect("storage directory");
        let config = storage.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config written");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start prometheus ({error}): this test needs Debian's `prometheus` package (`.ci/run` installs it)")
            });
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _storage: storage,
        }
    }

    /// The value of an instant `query`'s first sample once `done` holds for it (Prometheus
    /// needs a scrape or two first), or the last value seen after 30 s.
    async fn query_until(&self, query: &str, done: impl Fn(f64) -> bool) -> Option<f64> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            let answer = client
                .get(format!("{}/api/v1/query", self.url))
                .query(&[("query", query)])
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(body) = answer.json::<Value>().await
            {
                last = body["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|value| value.parse::<f64>().ok());
                if last.is_some_and(&done) {
                    return last;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Goal (#17): a real Prometheus scrapes a running tollgate; after known traffic its
/// series count the requests, and the cost it counted for the organization is the
/// ledger's spend to the nano-dollar.
#[tokio::test]
async fn a_real_prometheus_counts_the_requests_and_the_ledgers_cost() {
    let app = spawn_app_with(Options {
        extra_config: "[observability]\nmetrics_listen = \"127.0.0.1:0\"",
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.post_messages(&message_body("fake-sonnet")).await.status(),
            200
        );
    }
    let spent = app.balance().await.2;
    assert_eq!(spent, 3 * 330_000);
    let metrics = app.metrics_address.clone().expect("a metrics listener");
    let prometheus = Prometheus::start(metrics.trim_start_matches("http://"));
    let cost = format!(
        "sum(tollgate_cost_nanousd_total{{organization=\"{}\"}})",
        app.org_id
    );
    let counted = prometheus.query_until(&cost, |cost| cost == spent as f64).await;
    assert_eq!(counted, Some(spent as f64));
    // Other tests of this process count into the same registry: at least these three.
    let succeeded = prometheus
        .query_until(
            "sum(tollgate_requests_total{model=\"fake-sonnet\",outcome=\"succeeded\",job=\"tollgate\"})",
            |count| count >= 3.0,
        )
        .await;
    assert!(succeeded.is_some_and(|count| count >= 3.0), "{succeeded:?}");
    app.assert_ledger_clean().await;
}

/// Goal (#17): every request's record is searchable in the Admin API — by model, status,
/// request id and client session, a page at a time — with its tokens by kind, cost,
/// latency and error, so a disputed charge is found by the `request-id` its response had.
#[tokio::test]
async fn the_request_log_finds_each_request_by_what_a_dispute_names() {
    let app = crate::helpers::spawn_app().await;
    let charged = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", "session-one")
        .json(&message_body("fake-sonnet"))
        .send()
        .await
        .expect("sent");
    assert_eq!(charged.status(), 200);
    let charged_id = charged.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
    assert_eq!(
        app.post_chat(&crate::helpers::chat_body("fake-gpt"))
            .await
            .status(),
        200
    );
    // A bound of $6 against $5 of credit: refused, and recorded as such.
    let refused = app
        .post_messages(&json!({
            "model": "fake-sonnet",
            "max_tokens": 400_000,
            "messages": [{"role": "user", "content": "Hello there"}],
        }))
        .await;
    assert_eq!(refused.status(), 400);

    let (status, all) = app.admin_get("/v1/organizations/requests").await;
    assert_eq!(status, 200, "{all}");
    let data = all["data"].as_array().expect("data");
    assert_eq!(data.len(), 4);
    assert_eq!(data[0]["status"], "refused", "newest first");
    assert_eq!(all["has_more"], false);

    let (_, by_id) = app
        .admin_get(&format!("/v1/organizations/requests?request_id={charged_id}"))
        .await;
    let entry = &by_id["data"][0];
    assert_eq!(by_id["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["type"], "request_log_entry");
    assert_eq!(entry["request_id"], charged_id.as_str());
    assert_eq!(entry["model"], "fake-sonnet");
    assert_eq!(entry["status"], "succeeded");
    assert_eq!(entry["workspace_id"], Value::Null, "the Default workspace");
    assert_eq!(entry["session_id"], "session-one");
    assert_eq!(entry["usage"]["input_tokens"], 10);
    assert_eq!(entry["usage"]["output_tokens"], 20);
    assert_eq!(entry["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 0);
    // 10 × $3 + 20 × $15 per MTok = $0.00033: 0.033 cents.
    assert_eq!(entry["cost"], "0.033");
    assert!(
        entry["api_key_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("apikey_"))
    );

    for (filter, count) in [
        ("model=fake-gpt", 1),
        ("status=refused", 1),
        ("status=succeeded", 3),
        ("session_id=session-one", 1),
        ("model=fake-sonnet&status=succeeded", 2),
        ("starting_at=2099-01-01T00:00:00Z", 0),
    ] {
        let (status, page) = app
            .admin_get(&format!("/v1/organizations/requests?{filter}"))
            .await;
        assert_eq!(status, 200, "{filter}: {page}");
        assert_eq!(
            page["data"].as_array().map(Vec::len),
            Some(count),
            "{filter}: {page}"
        );
    }

    // Two pages of two, in order, with nothing repeated.
    let (_, first) = app.admin_get("/v1/organizations/requests?limit=2").await;
    assert_eq!(first["has_more"], true);
    let after = first["last_id"].as_str().expect("last_id");
    let (_, second) = app
        .admin_get(&format!("/v1/organizations/requests?limit=2&after_id={after}"))
        .await;
    assert_eq!(second["has_more"], false);
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|entry| entry["request_id"].as_str().expect("id").to_owned())
            .collect()
    };
    let mut paged = ids(&first);
    paged.extend(ids(&second));
    assert_eq!(paged, ids(&all));

    // Another organization's admin key sees none of it, whatever it names.
    let other = app.tollgate.create_organization("Tenant B").await.expect("org B");
    let other_key = app
        .tollgate
        .create_key(tollgate_core::keys::KeyKind::Admin, &other.id, None, "B admin")
        .await
        .expect("B admin key");
    for query in [String::new(), format!("?request_id={charged_id}")] {
        let response = app
            .client
            .get(app.url(&format!("/v1/organizations/requests{query}")))
            .header("x-api-key", other_key.secret.expose_secret())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.expect("json");
        assert_eq!(page["data"], json!([]), "{query}");
    }

    for bad in [
        "status=lost",
        "limit=0",
        "limit=1001",
        "after_id=page_x",
        "starting_at=yesterday",
    ] {
        let (status, body) = app.admin_get(&format!("/v1/organizations/requests?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
}

/// Goal (#17): with `otlp_endpoint` set, each request is one trace exported over OTLP: its
/// span continues the client's `traceparent`, carries the GenAI attributes and the
/// organization, key, reservation and cost, has children for admission, the upstream call
/// and settlement, and the upstream receives the trace as a child of tollgate's call.
#[tokio::test]
async fn traces_continue_the_clients_traceparent_with_genai_attributes() {
    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CLIENT_SPAN: &str = "00f067aa0ba902b7";
    let collector = tollgate_testkit::FakeOtlp::start().await;
    let upstream = tollgate_testkit::FakeUpstream::start().await;
    let data_dir = tempfile::tempdir().expect("data directory");
    let _schema = cli_schema_guard(data_dir.path());
    let config_path = data_dir.path().join("tollgate.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            listen = "127.0.0.1:0"
            [observability]
            otlp_endpoint = "{collector}"
            trace_sample_ratio = "0"
            [providers.fake]
            kind = "anthropic"
            base_url = "{upstream}"
            api_key = "provider-secret"
            [models.fake-sonnet]
            class = "sonnet"
            provider = "fake"
            upstream_model = "claude-sonnet-4-6"
            input = "3"
            output = "15"
            {GENEROUS_TIERS}
            "#,
            collector = collector.base_url(),
            upstream = upstream.base_url(),
        ),
    )
    .expect("config written");
    // Batched spans leave at once rather than after the default 5 s.
    let (mut child, address, api_key) = serve(
        data_dir.path(),
        &config_path,
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
        Stdio::inherit(),
    );
    // Sampled at 0 for traces tollgate starts: a request without `traceparent` exports
    // nothing, and makes no spans beyond its own.
    let unsampled = reqwest::Client::new()
        .post(format!("{address}/v1/messages"))
        .header("x-api-key", &api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&message_body("fake-sonnet"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(unsampled.status(), 200);
    // This one is kept because the client's `traceparent` says it was sampled.
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/messages"))
        .header("x-api-key", &api_key)
        .header("anthropic-version", "2023-06-01")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&message_body("fake-sonnet"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|span| span.trace_id == CLIENT_TRACE)
            .collect();
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        if [
            "request",
            "chat fake-sonnet",
            "admission",
            "upstream",
            "settlement",
        ]
        .iter()
        .all(|name| names.contains(name))
            || tokio::time::Instant::now() > deadline
        {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        collector.spans().iter().all(|span| span.trace_id == CLIENT_TRACE),
        "nothing of the unsampled trace is exported"
    );
    let named = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
    };
    let request = named("request");
    assert_eq!(
        request.parent_span_id, CLIENT_SPAN,
        "continues the client's trace"
    );
    assert_eq!(request.service, "tollgate");
    assert!(request.attributes["request_id"].starts_with("req_"));
    let chat = named("chat fake-sonnet");
    assert_eq!(chat.parent_span_id, request.span_id);
    let attribute = |key: &str| chat.attributes.get(key).map(String::as_str);
    assert_eq!(attribute("gen_ai.operation.name"), Some("chat"));
    assert_eq!(attribute("gen_ai.system"), Some("anthropic"));
    assert_eq!(attribute("gen_ai.request.model"), Some("fake-sonnet"));
    assert_eq!(attribute("gen_ai.usage.input_tokens"), Some("10"));
    assert_eq!(attribute("gen_ai.usage.output_tokens"), Some("20"));
    assert_eq!(attribute("tollgate.cost_nanousd"), Some("330000"));
    assert_eq!(attribute("tollgate.outcome"), Some("succeeded"));
    assert!(attribute("tollgate.organization_id").is_some_and(|id| id.starts_with("org_")));
    assert!(attribute("tollgate.api_key_id").is_some_and(|id| id.starts_with("apikey_")));
    assert!(attribute("tollgate.reservation_id").is_some_and(|id| !id.is_empty()));
    for child_name in ["admission", "upstream", "settlement"] {
        assert_eq!(named(child_name).parent_span_id, chat.span_id, "{child_name}");
    }
    let call = named("upstream");
    assert_eq!(
        call.attributes.get("tollgate.provider").map(String::as_str),
        Some("fake")
    );
    // The upstream's request is a child of tollgate's upstream span, in the client's trace.
    let forwarded = upstream.requests();
    let traceparent = forwarded[1]
        .header("traceparent")
        .expect("a traceparent upstream");
    assert_eq!(traceparent, format!("00-{CLIENT_TRACE}-{}-01", call.span_id));
}

/// Goal (#17): the Console's Requests page lists the request log to a signed-in admin,
/// narrowed by its filters, and refuses a position that is not one of the log's.
#[tokio::test]
async fn the_console_lists_the_request_log() {
    let app = crate::helpers::spawn_app().await;
    let served = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(served.status(), 200);
    let request_id = served.headers()["request-id"].to_str().expect("ascii").to_owned();
    let (client, cookie) = app.console_admin_session().await;
    let page = |query: &str| {
        client
            .get(app.url(&format!("/console/requests{query}")))
            .header("cookie", &cookie)
            .send()
    };
    let listed = page("").await.expect("page");
    assert_eq!(listed.status(), 200);
    let html = listed.text().await.expect("html");
    assert!(html.contains(&request_id), "{html}");
    assert!(
        html.contains("href=\"/console/requests\""),
        "the navigation names the page"
    );
    let none = page("?status=refused")
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(none.contains("No requests match."), "{none}");
    assert!(!none.contains(&request_id));
    let bad = page("?after=nowhere").await.expect("page");
    assert_eq!(bad.status(), 400);
}
