//! What the data plane records for `/metrics`, through the `metrics` facade (a no-op until
//! the binary installs a recorder): every model request once, when it ends, with its
//! outcome; its latencies; and each upstream attempt. The families are described once, in
//! the binary's `telemetry.rs`.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;
use tollgate_service::{ServiceError, UsageStatus};
use tollgate_upstream::UpstreamError;

use crate::error::ApiError;

/// One model request, as its metrics label it.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub(crate) route: &'static str,
    pub(crate) model: String,
    pub(crate) arrived: Instant,
}

impl Observed {
    /// The request ended with `outcome` (`provider`: the deployment that answered, or the
    /// last one tried) and the client got `status` (a stream's, at its head).
    pub(crate) fn ended(&self, provider: &str, status: StatusCode, outcome: &'static str) {
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
