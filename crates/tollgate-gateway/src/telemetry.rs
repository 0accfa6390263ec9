//! What the data plane records for `/metrics`, through the `metrics` facade (a no-op until
//! the binary installs a recorder): every model request once, when it ends, with its
//! outcome; its latencies; and each upstream attempt. The families are described once, in
//! the binary's `telemetry.rs`.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;
use tollgate_core::catalog::Deployment;
use tollgate_core::usage::TokenUsage;
use tollgate_service::{ApiCaller, ServiceError, UsageStatus};
use tollgate_upstream::{Dialect, UpstreamError};

use crate::error::ApiError;

/// One model request, as its metrics label it.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub(crate) route: &'static str,
    pub(crate) model: String,
    pub(crate) arrived: Instant,
    /// The request's span (`request_span`), which its tasks run in.
    pub(crate) span: tracing::Span,
}

impl Observed {
    /// The request ended with `outcome` (`provider`: the deployment that answered, or the
    /// last one tried) and the client got `status` (a stream's, at its head).
    pub(crate) fn ended(&self, provider: &str, status: StatusCode, outcome: &'static str) {
        self.span.record("tollgate.outcome", outcome);
        self.span.record("http.response.status_code", status.as_u16());
        metrics::counter!(
            "tollgate_requests_total",
            "route" => self.route,
            "model" => self.model.clone(),
            "provider" => provider.to_owned(),
            "status_class" => tollgate_edge::status_class(status),
            "outcome" => outcome
        )
        .increment(1);
        metrics::histogram!(
            "tollgate_request_duration_seconds",
            "route" => self.route,
            "model" => self.model.clone()
        )
        .record(self.arrived.elapsed());
    }

    /// The first byte of the answer is on its way to the client.
    pub(crate) fn first_byte(&self) {
        metrics::histogram!(
            "tollgate_time_to_first_byte_seconds",
            "route" => self.route,
            "model" => self.model.clone()
        )
        .record(self.arrived.elapsed());
    }

    /// Admission refused the request, or could not decide: nothing was called. Returns
    /// what the client is told.
    pub(crate) fn refused(&self, error: ServiceError) -> ApiError {
        let outcome = match &error {
            ServiceError::InsufficientCredit(_) => "refused_credit",
            ServiceError::SpendLimitReached(_)
            | ServiceError::RateLimited(_)
            | ServiceError::ExceedsRateLimit(_)
            | ServiceError::TooManyConcurrentCalls { .. } => "refused_limit",
            _ => "failed",
        };
        let error = ApiError::from(error);
        self.ended("", error.status, outcome);
        error
    }
}

/// The span of one model request, named and attributed by OpenTelemetry's GenAI semantic
/// conventions, with tollgate's own attributes: the organization, workspace, key,
/// reservation, cost and outcome (recorded as they are known). A debug-level span, made
/// only when the request's trace is sampled (`tollgate_edge::sampled`); none otherwise.
pub(crate) fn request_span(caller: &ApiCaller, model: &str, max_tokens: u64) -> tracing::Span {
    when_sampled(|| {
        tracing::debug_span!(
            "chat",
            otel.name = %format_args!("chat {model}"),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.system = tracing::field::Empty,
            gen_ai.request.model = model,
            gen_ai.request.max_tokens = max_tokens,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.usage.cache_read_input_tokens = tracing::field::Empty,
            gen_ai.usage.cache_creation_input_tokens = tracing::field::Empty,
            tollgate.organization_id = caller.org_id.as_str(),
            tollgate.workspace_id = caller.workspace_id.as_str(),
            tollgate.api_key_id = caller.key_id.as_str(),
            tollgate.reservation_id = tracing::field::Empty,
            tollgate.cost_nanousd = tracing::field::Empty,
            tollgate.outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        )
    })
}

/// The span of one call to a deployment, a child of the request's (none when the trace is
/// not sampled); the request's span takes the provider's system name.
pub(crate) fn upstream_span(deployment: &Deployment, dialect: Dialect) -> tracing::Span {
    if !tollgate_edge::sampled() {
        return tracing::Span::none();
    }
    let system = match dialect {
        Dialect::Anthropic => "anthropic",
        Dialect::OpenAi => "openai",
    };
    tracing::Span::current().record("gen_ai.system", system);
    tracing::debug_span!(
        "upstream",
        otel.kind = "client",
        gen_ai.system = system,
        tollgate.provider = deployment.provider.as_str(),
        tollgate.upstream_model = deployment.upstream_model.as_str(),
    )
}

/// The span `make` makes if the request's trace is sampled (`tollgate_edge::sampled`), else
/// none: the exporter's layer builds every span it is given, attributes and all, and drops
/// an unsampled one only at its end.
pub(crate) fn when_sampled(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tollgate_edge::sampled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The usage the settlement charges, on the request's span.
pub(crate) fn record_usage(span: &tracing::Span, usage: &TokenUsage) {
    span.record("gen_ai.usage.input_tokens", usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    span.record(
        "gen_ai.usage.cache_read_input_tokens",
        usage.cache_read_input_tokens,
    );
    span.record(
        "gen_ai.usage.cache_creation_input_tokens",
        usage
            .cache_creation_5m_input_tokens
            .saturating_add(usage.cache_creation_1h_input_tokens),
    );
}

/// A request's end as an outcome label.
pub(crate) fn outcome(status: UsageStatus) -> &'static str {
    match status {
        UsageStatus::Succeeded => "succeeded",
        UsageStatus::ClientDisconnected => "client_disconnected",
        _ => "failed",
    }
}

/// One call to a deployment: how long to its head (a stream's, its first content), and how
/// it went.
pub(crate) fn attempted(provider: &str, took: Duration, result: Result<(), &UpstreamError>) {
    let result = match result {
        Ok(()) => "ok",
        Err(error) => error_kind(error),
    };
    metrics::counter!(
        "tollgate_upstream_attempts_total",
        "provider" => provider.to_owned(),
        "result" => result
    )
    .increment(1);
    metrics::histogram!("tollgate_upstream_duration_seconds", "provider" => provider.to_owned()).record(took);
}

/// A failed deployment was put in cooldown and the next one tried.
pub(crate) fn failed_over(provider: &str) {
    metrics::counter!("tollgate_upstream_cooldowns_total", "provider" => provider.to_owned()).increment(1);
    metrics::counter!("tollgate_upstream_failovers_total", "provider" => provider.to_owned()).increment(1);
}

/// A failed deployment was put in cooldown with none left to try after it.
pub(crate) fn cooled_down(provider: &str) {
    metrics::counter!("tollgate_upstream_cooldowns_total", "provider" => provider.to_owned()).increment(1);
}

/// A failed attempt as alerts and the request log name it: the metrics' error kind, and the
/// status when there was one (`overloaded (529)`). Never the upstream's own text, which
/// may name its address.
pub(crate) fn failure_label(error: &UpstreamError) -> String {
    match error {
        UpstreamError::Status { status, .. } => format!("{} ({status})", error_kind(error)),
        _ => error_kind(error).to_owned(),
    }
}

fn error_kind(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::Status { status: 429, .. } => "rate_limited",
        UpstreamError::Status { status: 529, .. } => "overloaded",
        UpstreamError::Status { status, .. } if *status >= 500 => "server_error",
        UpstreamError::Status { .. } => "client_error",
        UpstreamError::Connect(_) => "connect",
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Protocol(_) => "protocol",
    }
}
