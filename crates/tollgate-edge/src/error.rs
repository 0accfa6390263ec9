//! The contract's error types and Anthropic's envelope,
//! `{"type":"error","error":{"type":…,"message":…[,"details":…]},"request_id":…}`, as
//! both HTTP surfaces render it. It must not know a surface's own shapes (OpenAI's
//! envelope, an upstream's body passed through): those stay with the surface.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The error types of the contract's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Billing,
    Api,
    Timeout,
    Overloaded,
}

impl ErrorKind {
    const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidRequest,
        ErrorKind::Authentication,
        ErrorKind::Permission,
        ErrorKind::NotFound,
        ErrorKind::RequestTooLarge,
        ErrorKind::RateLimit,
        ErrorKind::Billing,
        ErrorKind::Api,
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Billing => "billing_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Overloaded => "overloaded_error",
        }
    }

    /// The kind an envelope's `error.type` names, if it is one of the contract's.
    pub fn from_wire(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// An error the edge itself decides (a refused key, the router's 405): what the client is
/// told, for each surface to carry in its own `ApiError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    /// `retry-after`, in whole seconds, when retrying later will succeed.
    pub retry_after_seconds: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// A failure of ours: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Problem {
        tracing::error!(%detail, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Api,
            "Internal server error",
        )
    }

    /// A dependency that is down (`what`: "rate-limit store", "database"): 503 with a
    /// message that names it and `retry-after`, so a client and its operator know what to
    /// wait for. The detail goes to the log.
    pub fn unavailable(what: &str, detail: impl std::fmt::Display) -> Problem {
        tracing::error!(%detail, "the {what} is unavailable");
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Api,
            format!("The {what} is unavailable, so requests cannot be processed right now; retry shortly."),
        );
        problem.retry_after_seconds = Some(1);
        problem
    }

    /// The router's own 405, in the envelope like every other error.
    pub fn method_not_allowed() -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            "This method is not allowed on this path.",
        )
    }
}

/// Anthropic's envelope for `request_id`; `error_code` becomes `error.details.error_code`,
/// where the contract gives one.
pub fn envelope(
    kind: ErrorKind,
    message: &str,
    error_code: Option<&str>,
    request_id: &str,
) -> serde_json::Value {
    let mut error = serde_json::json!({"type": kind.as_str(), "message": message});
    if let Some(code) = error_code {
        error["details"] = serde_json::json!({ "error_code": code });
    }
    serde_json::json!({
        "type": "error",
        "error": error,
        "request_id": request_id,
    })
}

/// A JSON body with `status`, as every rendered error goes out.
pub fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
