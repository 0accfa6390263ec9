//! The Admin API's error envelope, Anthropic's shape:
//! `{"type":"error","error":{"type":…,"message":…},"request_id":…}`. Handlers return
//! `ApiError`; the request-id middleware renders it with the request's id, for the
//! router's own 405s too. 5xx details go to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_service::{AuthRefusal, ServiceError};
use utoipa::ToSchema;

/// The error types the Admin API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    Billing,
    Api,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Billing => "billing_error",
            ErrorKind::Api => "api_error",
        }
    }
}

/// An error on its way to the client.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
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
        tracing::error!(%detail, "internal error in the Admin API");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Api,
            "Internal server error",
        )
    }

    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "type": "error",
            "error": {"type": self.kind.as_str(), "message": self.message},
            "request_id": request_id,
        })
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
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
            | ServiceError::ExceedsRateLimit(_)) => ApiError::invalid(error.to_string()),
            ServiceError::Unavailable(detail) => ApiError::internal(detail),
            ServiceError::Store(error) => ApiError::internal(error),
        }
    }
}

impl From<AuthRefusal> for ApiError {
    fn from(refusal: AuthRefusal) -> ApiError {
        let unauthorized =
            |message: String| ApiError::new(StatusCode::UNAUTHORIZED, ErrorKind::Authentication, message);
        match refusal {
            AuthRefusal::Missing => unauthorized("x-api-key header is required".into()),
            AuthRefusal::Malformed(reason) => unauthorized(format!("invalid x-api-key: {reason}")),
            AuthRefusal::Unknown => unauthorized("invalid x-api-key".into()),
            AuthRefusal::NotActive(status) => {
                unauthorized(format!("invalid x-api-key: this key is {status}"))
            }
            AuthRefusal::WrongKind(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorKind::Permission,
                "This is an API key: the Admin API needs an admin key (sk-tg-admin01-…).",
            ),
            AuthRefusal::Store(error) => ApiError::internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    /// The body is written by the request-id middleware, which knows the id.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}
