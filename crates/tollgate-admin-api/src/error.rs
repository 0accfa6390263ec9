//! The Admin API's error envelope, Anthropic's shape:
//! `{"type":"error","error":{"type":…,"message":…},"request_id":…}`. Handlers return
//! `ApiError`; the request-id middleware renders it with the request's id, for the
//! router's own 405s too. 5xx details go to the log, never to the client. The error types,
//! the envelope and what a refused key is told are tollgate-edge's, shared with the
//! gateway; the envelope's OpenAPI schema is documented here.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_edge::{Credential, Problem};
use tollgate_service::{AuthRefusal, ServiceError};
use utoipa::ToSchema;

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
}

/// The envelope as documented in the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// Always `error`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) error: ErrorBody,
    pub(crate) request_id: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `billing_error` or `api_error`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after_seconds: None,
        }
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

    /// Anthropic's envelope for `request_id`.
    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        tollgate_edge::envelope(self.kind, &self.message, None, request_id)
    }

    /// The response the client gets, once the request's id is known.
    pub(crate) fn render(&self, request_id: &str) -> Response {
        let mut response = tollgate_edge::json_response(self.status, self.to_json(request_id).to_string());
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }

    /// A refused admin key, named the way it came: "invalid x-api-key", or for a key sent
    /// as `Authorization: Bearer`, "Invalid bearer token".
    pub fn auth_refused(refusal: AuthRefusal, credential: Credential) -> ApiError {
        ApiError::from(tollgate_edge::refused(refusal, credential, WRONG_KIND_MESSAGE))
    }
}

/// What an API key on the Admin API is told.
const WRONG_KIND_MESSAGE: &str = "This is an API key: the Admin API needs an admin key (sk-tg-admin01-…).";

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        if let Some(dependency) = error.unavailable_dependency() {
            return ApiError::from(Problem::unavailable(dependency, error));
        }
        match error {
            ServiceError::NotFound(message) => ApiError::not_found(message),
            ServiceError::Invalid(message) | ServiceError::Conflict(message) => ApiError::invalid(message),
            ServiceError::Payment(error) => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                ErrorKind::Billing,
                error.to_string(),
            ),
            error @ (ServiceError::InsufficientCredit(_)
            | ServiceError::SpendLimitReached(_)
            | ServiceError::RateLimited(_)
            | ServiceError::ExceedsRateLimit(_)
            | ServiceError::TooManyConcurrentCalls { .. }) => ApiError::invalid(error.to_string()),
            ServiceError::Unavailable(detail) | ServiceError::LimiterUnavailable(detail) => {
                ApiError::internal(detail)
            }
            ServiceError::Store(error) => ApiError::internal(error),
        }
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
