//! Metrics: one Prometheus recorder per process, installed when `[observability]` asks for
//! metrics, and the `GET /metrics` route that renders it. Every crate records through the
//! `metrics` facade (a no-op until a recorder is installed); this module names and
//! describes every family once (`describe`), so `/metrics` documents itself, and sets the
//! histogram buckets.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use sha2::{Digest, Sha256};

use crate::config::TraceSettings;

/// Latency buckets in seconds: a tenth of a millisecond (the gateway's own overhead) to ten
/// minutes (a long stream).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Operations in one write batch.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Where `/metrics` is served, from `[observability]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MetricsEndpoint {
    /// Not served; nothing is recorded.
    #[default]
    Off,
    /// On the main listener, to a request bearing this token.
    Token(String),
    /// On its own listener, to anyone who reaches it.
    Listen(SocketAddr),
}

/// The process's recorder: installed on first use, then shared (tests start several
/// applications in one process).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("tollgate_store_write_batch_operations".to_owned()),
                        BATCH_SIZE_BUCKETS,
                    )
                })
                .expect("the bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only its own families"
                );
            }
            describe();
            process_collector().describe();
            handle
        })
        .clone()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The text a scrape gets: every family, the process's figures read now.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// Drains the histograms' pending samples now and then, as the exporter's own listener
/// would: without it they would wait for the next scrape.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            handle.run_upkeep();
        }
    })
}

/// The tracer provider exporting spans over OTLP (HTTP/protobuf), sampled by `settings`
/// unless the client's `traceparent` decided; also sets the W3C trace-context propagator.
/// Shut it down at exit, which sends what is still batched.
pub fn tracer_provider(settings: &TraceSettings) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&settings.endpoint)
        .with_timeout(Duration::from_secs(10))
        .with_headers(Default::default())
        .build()
        .context("cannot build the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(Resource::builder().with_service_name("tollgate").build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    /// SHA-256 of the token a scrape must bear, or `None` for an open listener.
    token_digest: Option<[u8; 32]>,
}

/// `GET /metrics`, bearing `Authorization: Bearer <token>` when `token` is set.
pub fn router(handle: PrometheusHandle, token: Option<&str>) -> Router {
    let scrape = Scrape {
        handle,
        token_digest: token.map(|token| Sha256::digest(token.as_bytes()).into()),
    };
    Router::new().route("/metrics", get(metrics)).with_state(scrape)
}

async fn metrics(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(expected) = scrape.token_digest {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| Sha256::digest(token.trim().as_bytes()));
        // Digests of equal length compared: the time taken says nothing of the token.
        if presented.is_none_or(|presented| presented.as_slice() != expected) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "the metrics token is missing or wrong\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&scrape.handle),
    )
        .into_response()
}

/// A family's kind, as `/metrics` declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Seconds unless the name says otherwise.
    Histogram,
}

/// Every family tollgate records, with its help text: the crates that record them name
/// them in their own `telemetry` modules, and this list describes them once (a test checks
/// the dashboard in `deploy/grafana/` uses no other).
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "tollgate_requests_total",
        Kind::Counter,
        "Model requests by route, model, provider, status class and outcome (succeeded, failed, refused_credit, refused_limit, client_disconnected)",
    ),
    (
        "tollgate_request_duration_seconds",
        Kind::Histogram,
        "A model request from arrival to its settlement, by route and model",
    ),
    (
        "tollgate_time_to_first_byte_seconds",
        Kind::Histogram,
        "From arrival to the first byte of the answer (a stream's first event), by route and model",
    ),
    (
        "tollgate_upstream_duration_seconds",
        Kind::Histogram,
        "An upstream call to its response head, by provider",
    ),
    (
        "tollgate_upstream_attempts_total",
        Kind::Counter,
        "Calls to upstream deployments by provider and result (ok, or the error's kind)",
    ),
    (
        "tollgate_upstream_failovers_total",
        Kind::Counter,
        "Deployments passed over for the next one after a failure, by provider",
    ),
    (
        "tollgate_upstream_cooldowns_total",
        Kind::Counter,
        "Deployments put in cooldown after a failure, by provider",
    ),
    (
        "tollgate_http_responses_total",
        Kind::Counter,
        "HTTP responses by surface (anthropic, openai, admin) and status class",
    ),
    (
        "tollgate_http_response_head_seconds",
        Kind::Histogram,
        "From a request's arrival to its response head, by surface",
    ),
    (
        "tollgate_overhead_seconds",
        Kind::Histogram,
        "Tollgate's own time in a proxied request: to the response head, less the upstream's, by surface",
    ),
    (
        "tollgate_tokens_total",
        Kind::Counter,
        "Tokens metered, by model and kind",
    ),
    (
        "tollgate_cost_nanousd_total",
        Kind::Counter,
        "Charged cost in nano-USD by model and organization (organizations beyond observability.metrics_max_organizations are \"other\")",
    ),
    (
        "tollgate_settlements_total",
        Kind::Counter,
        "Reservations ended by this process, by result (charged, voided, failed)",
    ),
    (
        "tollgate_reservations_open",
        Kind::Gauge,
        "Reservations of requests running in this process",
    ),
    (
        "tollgate_holds_placed_nanousd_total",
        Kind::Counter,
        "Credit held by reservations of requests run by this process, in nano-USD, as they began (less tollgate_holds_ended_nanousd_total: held now)",
    ),
    (
        "tollgate_holds_ended_nanousd_total",
        Kind::Counter,
        "Credit held by reservations of requests run by this process, in nano-USD, as they ended",
    ),
    (
        "tollgate_reaper_voids_total",
        Kind::Counter,
        "Reservations past their deadline voided by the reaper",
    ),
    (
        "tollgate_ratelimit_decisions_total",
        Kind::Counter,
        "Rate-limit admissions by metric, scope (organization, workspace) and decision (admitted, refused)",
    ),
    (
        "tollgate_spend_refusals_total",
        Kind::Counter,
        "Reservations refused, by reason (credit, spend_limit)",
    ),
    (
        "tollgate_auto_reloads_total",
        Kind::Counter,
        "Auto-reloads by result (succeeded, declined, failed)",
    ),
    (
        "tollgate_store_write_batch_operations",
        Kind::Histogram,
        "Reservations and settlements in one write batch, by backend",
    ),
    (
        "tollgate_store_write_batch_seconds",
        Kind::Histogram,
        "One write batch from its start to its commit, by backend",
    ),
    (
        "tollgate_store_write_batch_failures_total",
        Kind::Counter,
        "Write batches that failed and ran their operations alone, by backend",
    ),
    (
        "tollgate_store_book_reloads_total",
        Kind::Counter,
        "Times the SQLite writer dropped its in-memory book because another connection wrote, by backend",
    ),
    (
        "tollgate_redis_call_seconds",
        Kind::Histogram,
        "One rate-limit script call to Redis",
    ),
    (
        "tollgate_redis_errors_total",
        Kind::Counter,
        "Rate-limit calls to Redis that failed or were refused by the open breaker, by kind",
    ),
];

fn describe() {
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram if name.ends_with("_seconds") => describe_histogram!(name, Unit::Seconds, help),
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every metric name the dashboard's queries use, histogram series as their family.
    fn dashboard_families() -> BTreeSet<String> {
        let dashboard = include_str!("../../../deploy/grafana/tollgate.json");
        let mut families = BTreeSet::new();
        for (start, _) in dashboard.match_indices("tollgate_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            families.insert(family.to_owned());
        }
        families
    }

    #[test]
    fn the_dashboard_shows_every_family_and_no_other() {
        let described: BTreeSet<String> = FAMILIES.iter().map(|(name, ..)| (*name).to_owned()).collect();
        assert_eq!(dashboard_families(), described);
    }

    #[test]
    fn every_family_is_named_by_the_conventions() {
        for &(name, kind, help) in FAMILIES {
            assert!(name.starts_with("tollgate_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            match kind {
                Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
                Kind::Gauge => assert!(!name.ends_with("_total"), "{name}"),
                Kind::Histogram => assert!(
                    name.ends_with("_seconds") || name.ends_with("_operations"),
                    "{name}"
                ),
            }
        }
    }
}
