//! The error envelopes of both surfaces. Handlers return `ApiError`; the request-id
//! middleware renders it for the surface the request came in on: Anthropic's
//! `{"type":"error","error":{"type":…,"message":…},"request_id":…}`, or OpenAI's
//! `{"error":{"message":…,"type":…,"param":…,"code":…}}` with OpenAI's statuses, so every
//! error, including the router's own 404 and 405, has the shape its client expects.
//! The error types, Anthropic's envelope and what a refused key is told are tollgate-edge's,
//! shared with the Admin API; this module adds the OpenAI surface, upstream refusals passed
//! through and the retry headers.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_core::spend::{SpendLimitReached, SpendScope};
use tollgate_edge::Problem;
use tollgate_service::{AuthRefusal, LimitScope, Metric, RateLimited, ServiceError};
use tollgate_upstream::UpstreamError;

/// How the client presented its key, which a refusal names.
pub(crate) use tollgate_edge::Credential;
/// The contract's error types, as both HTTP surfaces name them.
pub use tollgate_edge::ErrorKind;

/// An error on its way to the client.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    /// `retry-after`, in whole seconds, when retrying later will succeed.
    pub retry_after_seconds: Option<u64>,
    /// `error.details.error_code`, where the contract gives one.
    pub error_code: Option<&'static str>,
    /// How OpenAI's surface shows this error, where the mapping of `status` and `kind`
    /// would not say it right (low credit and spend limits are 429 `insufficient_quota`).
    /// Boxed: it is rare, and every `Result` carrying an `ApiError` pays for its size.
    pub openai: Option<Box<OpenAiError>>,
    /// The request field at fault: OpenAI's `param`.
    pub param: Option<String>,
    /// What the upstream answered, when this error is its refusal: passed on as it came.
    pub upstream: Option<Box<UpstreamAnswer>>,
    /// `x-should-retry`, where the error itself knows (otherwise the status decides).
    pub should_retry: Option<bool>,
    /// For tollgate's own rate-limit refusal: the `anthropic-ratelimit-*` group that refused
    /// (`requests`, `input-tokens`, `output-tokens`) and its limit, which the response's
    /// headers show as the message says.
    pub limited: Option<Box<(&'static str, u64)>>,
}

/// An upstream's refusal as the client gets it: the body verbatim when it is already in the
/// envelope of the client's surface (clients match its wording to decide on retries and
/// fallbacks), and the provider's retry and rate-limit headers.
#[derive(Clone, Debug)]
pub struct UpstreamAnswer {
    pub body: bytes::Bytes,
    /// Which surface's envelope `body` is in, if either's.
    pub envelope: Option<Surface>,
    pub headers: tollgate_upstream::PassedHeaders,
}

/// An error in OpenAI's terms: its status, `type` and `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

/// Which API a request speaks, and so which envelope its errors get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Anthropic's Messages API and everything else tollgate serves.
    Anthropic,
    /// OpenAI's Chat Completions and Responses (and `/v1/models` asked for by an OpenAI
    /// client).
    OpenAi,
}

impl Surface {
    /// `/v1/chat/…` and `/v1/responses…` are OpenAI's. `/v1/models` is both APIs' path: a request with
    /// Anthropic's `anthropic-version` or `x-api-key` header is Anthropic's, one with only
    /// `Authorization: Bearer` (what the `openai` SDKs send) is OpenAI's.
    pub fn of(path: &str, headers: &HeaderMap) -> Surface {
        if path.starts_with("/v1/chat/")
            || path == "/v1/completions"
            || path == "/v1/embeddings"
            || path == "/v1/responses"
            || path.starts_with("/v1/responses/")
        {
            return Surface::OpenAi;
        }
        let is_models = path == "/v1/models" || path.starts_with("/v1/models/");
        let anthropic_headers =
            headers.contains_key("anthropic-version") || headers.contains_key("x-api-key");
        if is_models && !anthropic_headers && headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Surface::OpenAi;
        }
        Surface::Anthropic
    }
}

pub const CREDIT_TOO_LOW: &str = "Your credit balance is too low to access the tollgate API. \
    Please go to Plans & Billing to upgrade or purchase credits.";

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after_seconds: None,
            error_code: None,
            openai: None,
            param: None,
            upstream: None,
            should_retry: None,
            limited: None,
        }
    }

    /// This error shown on OpenAI's surface as `status`, `kind` and `code`.
    pub fn with_openai(
        mut self,
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
    ) -> ApiError {
        self.openai = Some(Box::new(OpenAiError { status, kind, code }));
        self
    }

    /// Names the request field at fault (OpenAI's `param`).
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// OpenAI's status, `type` and `code` for this error.
    pub fn openai_error(&self) -> OpenAiError {
        if let Some(openai) = &self.openai {
            return **openai;
        }
        let (status, kind, code) = match self.kind {
            ErrorKind::InvalidRequest => (self.status, "invalid_request_error", None),
            ErrorKind::Authentication => (self.status, "invalid_request_error", Some("invalid_api_key")),
            ErrorKind::Permission => (self.status, "permission_error", None),
            ErrorKind::NotFound => (self.status, "invalid_request_error", Some("not_found")),
            ErrorKind::RequestTooLarge => (self.status, "invalid_request_error", Some("request_too_large")),
            ErrorKind::RateLimit => (self.status, "requests", Some("rate_limit_exceeded")),
            ErrorKind::Billing => (self.status, "billing_error", None),
            ErrorKind::Api => (self.status, "server_error", None),
            ErrorKind::Timeout => (self.status, "server_error", Some("timeout")),
            // OpenAI says "overloaded" with a 503; 529 is Anthropic's own status.
            ErrorKind::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("overloaded"),
            ),
        };
        OpenAiError { status, kind, code }
    }

    /// Renders OpenAI's envelope.
    pub fn to_openai_json(&self) -> serde_json::Value {
        let openai = self.openai_error();
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": openai.kind,
                "param": self.param,
                "code": openai.code,
            }
        })
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    /// A failure of ours: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError::from(Problem::internal(detail))
    }

    /// A dependency that is down (`what`: "rate-limit store", "database"): 503 with a
    /// message that names it, so a client and its operator know what to wait for. The
    /// detail goes to the log.
    pub fn unavailable(what: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError::from(Problem::unavailable(what, detail))
    }

    pub fn credit_too_low() -> ApiError {
        ApiError::invalid(CREDIT_TOO_LOW).with_openai(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
        )
    }

    /// Renders Anthropic's envelope for `request_id`.
    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        tollgate_edge::envelope(self.kind, &self.message, self.error_code, request_id)
    }

    /// What an upstream failure looks like to the client. Upstream client errors pass
    /// through; a provider that refuses our own credentials is our fault, not the client's.
    pub fn from_upstream(error: &UpstreamError) -> ApiError {
        match error {
            UpstreamError::Connect(detail) => {
                tracing::warn!(detail, "upstream unreachable");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Api,
                    "The upstream model provider could not be reached.",
                )
            }
            UpstreamError::Timeout(detail) => {
                tracing::warn!(detail, "upstream timed out");
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::Timeout,
                    "The upstream model provider timed out.",
                )
            }
            UpstreamError::Protocol(detail) => {
                ApiError::internal(format!("upstream protocol error: {detail}"))
            }
            UpstreamError::Status {
                status,
                body,
                headers,
            } => {
                if error.is_provider_account_problem() {
                    return ApiError::provider_account_problem(*status, body);
                }
                let value = serde_json::from_slice::<serde_json::Value>(body).ok();
                let envelope = value.as_ref().and_then(|value| {
                    let error = value.get("error").filter(|error| error.is_object())?;
                    error.get("message")?.as_str()?;
                    Some(
                        if value.get("type").and_then(serde_json::Value::as_str) == Some("error") {
                            Surface::Anthropic
                        } else {
                            Surface::OpenAi
                        },
                    )
                });
                // Anthropic's envelope, or OpenAI's (whose `type` may be absent or its own).
                let parsed = value.as_ref().and_then(|value| {
                    let error = value.get("error")?;
                    Some((
                        error
                            .get("type")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        error.get("message")?.as_str()?.to_owned(),
                    ))
                });
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let (kind, message) = match parsed {
                    Some((kind, message)) => (ErrorKind::from_wire(&kind), message),
                    None => (None, format!("The upstream model provider answered {status}.")),
                };
                let kind = kind.unwrap_or(match status.as_u16() {
                    404 => ErrorKind::NotFound,
                    413 => ErrorKind::RequestTooLarge,
                    429 => ErrorKind::RateLimit,
                    400..=499 => ErrorKind::InvalidRequest,
                    // OpenAI-compatible servers say "overloaded" with a 503.
                    503 | 529 => ErrorKind::Overloaded,
                    _ => ErrorKind::Api,
                });
                // An OpenAI-compatible upstream's 503 "overloaded" is Anthropic's 529.
                let status = if status == StatusCode::SERVICE_UNAVAILABLE && kind == ErrorKind::Overloaded {
                    StatusCode::from_u16(529).unwrap_or(status)
                } else {
                    status
                };
                let mut api_error = ApiError::new(status, kind, message);
                api_error.upstream = Some(Box::new(UpstreamAnswer {
                    body: body.clone(),
                    envelope,
                    headers: headers.clone(),
                }));
                api_error
            }
        }
    }

    /// The provider refused the gateway's own key, or its account there ran out of credit:
    /// the operator's problem, never shown to the client as theirs (a client with credit
    /// here must not read "your credit balance is too low"). A 502, which clients report as
    /// a server problem; not worth retrying until the operator acts, so `x-should-retry`
    /// says false. Logged loudly, with the provider's own words, for the operator.
    pub fn provider_account_problem(status: u16, body: &[u8]) -> ApiError {
        tracing::error!(
            status,
            body = %String::from_utf8_lossy(body),
            "the model provider refused the gateway's account: check the provider's API key and its credit balance"
        );
        let mut error = ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Api,
            "The model provider account behind this gateway needs attention from the gateway's operator \
             (the provider refused its credentials or its credit there is exhausted). \
             This request was not charged.",
        );
        error.should_retry = Some(false);
        error
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        if let Some(dependency) = error.unavailable_dependency() {
            return ApiError::unavailable(dependency, error);
        }
        match error {
            ServiceError::NotFound(message) => ApiError::not_found(message),
            ServiceError::Invalid(message) => ApiError::invalid(message),
            ServiceError::InsufficientCredit(_) => ApiError::credit_too_low(),
            ServiceError::SpendLimitReached(reached) => spend_limit_reached(&reached),
            ServiceError::RateLimited(limited) => rate_limited(&limited),
            ServiceError::ExceedsRateLimit(limited) => exceeds_rate_limit(&limited),
            ServiceError::Conflict(message) => ApiError::invalid(message),
            ServiceError::Payment(error) => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                ErrorKind::Billing,
                error.to_string(),
            ),
            // A limiter that is down was answered above, by `unavailable_dependency`.
            ServiceError::Unavailable(detail) | ServiceError::LimiterUnavailable(detail) => {
                ApiError::internal(detail)
            }
            ServiceError::TooManyConcurrentCalls { limit } => {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorKind::RateLimit,
                    format!(
                        "Number of concurrent connections has exceeded your rate limit of {limit}. \
                         Please try again later or reduce the number of concurrent requests."
                    ),
                );
                error.retry_after_seconds = Some(1);
                error
            }
            ServiceError::Store(error) => ApiError::internal(error),
        }
    }
}

/// What an admin key on the data plane is told.
const WRONG_KIND_MESSAGE: &str =
    "This is an admin key: it can only call the Admin API. Use an API key (sk-tg-api01-…) for this endpoint.";

impl ApiError {
    /// A refused key, named the way it came: "invalid x-api-key", or for a key sent as
    /// `Authorization: Bearer`, "Invalid bearer token".
    pub fn auth_refused(refusal: AuthRefusal, credential: Credential) -> ApiError {
        ApiError::from(tollgate_edge::refused(refusal, credential, WRONG_KIND_MESSAGE))
    }
}

impl From<AuthRefusal> for ApiError {
    fn from(refusal: AuthRefusal) -> ApiError {
        ApiError::auth_refused(refusal, Credential::ApiKeyHeader)
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> ApiError {
        let mut error = ApiError::new(problem.status, problem.kind, problem.message);
        error.retry_after_seconds = problem.retry_after_seconds;
        error
    }
}

impl IntoResponse for ApiError {
    /// The body is written by the request-id middleware, which knows the id.
    fn into_response(self) -> Response {
        tollgate_edge::deferred(self.status, self)
    }
}

impl ApiError {
    /// The error type an upstream failure is reported as, for usage records.
    pub fn from_upstream_kind(error: &UpstreamError) -> &'static str {
        match error {
            UpstreamError::Connect(_) => "upstream_unreachable",
            UpstreamError::Timeout(_) => "timeout_error",
            UpstreamError::Protocol(_) => "upstream_protocol_error",
            UpstreamError::Status { status: 529, .. } => "overloaded_error",
            UpstreamError::Status { status, .. } if *status >= 500 => "api_error",
            UpstreamError::Status { .. } => "upstream_refused",
        }
    }
}

fn metric_words(metric: Metric) -> &'static str {
    match metric {
        Metric::Requests => "requests per minute",
        Metric::InputTokens => "input tokens per minute",
        Metric::OutputTokens => "output tokens per minute",
        Metric::CountTokensRequests => "token-counting requests per minute",
    }
}

fn scope_words(limited: &RateLimited) -> String {
    match limited.scope {
        LimitScope::Organization => format!("your organization's ({})", limited.scope_id),
        LimitScope::Workspace => format!("your workspace's ({})", limited.scope_id),
    }
}

/// 429 with `retry-after`: the contract's rate-limit refusal, naming limit, model and scope.
fn rate_limited(limited: &RateLimited) -> ApiError {
    let retry_after = limited.retry_after_seconds.unwrap_or(1);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::RateLimit,
        format!(
            "This request would exceed {} rate limit of {} {} (model: {}). Please retry after {retry_after} seconds, \
             reduce the prompt length or the maximum tokens requested, or ask for a higher limit. \
             The anthropic-ratelimit-* response headers show current usage.",
            scope_words(limited),
            limited.per_minute,
            metric_words(limited.metric),
            limited.model,
        ),
    );
    error.retry_after_seconds = Some(retry_after);
    error.limited = Some(Box::new((
        match limited.metric {
            Metric::Requests | Metric::CountTokensRequests => "requests",
            Metric::InputTokens => "input-tokens",
            Metric::OutputTokens => "output-tokens",
        },
        limited.per_minute,
    )));
    let openai_kind = match limited.metric {
        Metric::Requests | Metric::CountTokensRequests => "requests",
        Metric::InputTokens | Metric::OutputTokens => "tokens",
    };
    error.with_openai(
        StatusCode::TOO_MANY_REQUESTS,
        openai_kind,
        Some("rate_limit_exceeded"),
    )
}

/// A request larger than the bucket can never be admitted: a 400 that says so.
fn exceeds_rate_limit(limited: &RateLimited) -> ApiError {
    ApiError::invalid(format!(
        "This request needs {} {} but {} limit is {} (model: {}), so it can never be admitted. \
         Shorten the prompt or ask for a higher limit.",
        limited.amount.unwrap_or_default(),
        metric_words(limited.metric).trim_end_matches(" per minute"),
        scope_words(limited),
        limited.per_minute,
        limited.model,
    ))
}

/// The contract's three spend-limit refusals (§3), exact in status, type and wording.
fn spend_limit_reached(reached: &SpendLimitReached) -> ApiError {
    let resets = reached.resets_at.format("%Y-%m-%d at %H:%M UTC");
    match reached.scope {
        SpendScope::Tier => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::RateLimit,
                format!(
                    "You have reached your API usage limits: your organization has crossed its monthly API usage \
                     threshold, set based on your organization's API tier. You will regain access on {resets}."
                ),
            );
            error.error_code = Some("enforced_spend_limit_reached");
            error
        }
        SpendScope::Organization => ApiError::invalid(format!(
            "You have reached your specified API usage limits. You will regain access on {resets}."
        )),
        SpendScope::Workspace => ApiError::invalid(format!(
            "You have reached your specified workspace API usage limits. You will regain access on {resets}."
        )),
        SpendScope::User => ApiError::invalid(format!(
            "You have reached your workspace's per-user monthly spend limit. You will regain access on {resets}."
        )),
    }
    // OpenAI reports a spent budget as 429 `insufficient_quota`, which its SDKs don't retry.
    .with_openai(
        StatusCode::TOO_MANY_REQUESTS,
        "insufficient_quota",
        Some(match reached.scope {
            SpendScope::Tier => "enforced_spend_limit_reached",
            SpendScope::Organization | SpendScope::Workspace | SpendScope::User => "spend_limit_reached",
        }),
    )
}
