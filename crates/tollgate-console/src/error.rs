//! The Console's one error type: what a page could not do, rendered as an HTML page with
//! the status it stands for. A 5xx's detail goes to the log only; the person sees a
//! generic message.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use tollgate_service::{Denied, ServiceError, SignInRefusal};

use crate::layout;

#[derive(Debug)]
pub(crate) enum PageError {
    /// The person's role does not reach this, or the request came from another site.
    Forbidden(String),
    NotFound(String),
    /// The form's input is wrong; the message says how.
    Invalid(String),
    /// Too many attempts, or too many at once; the message says when to try again.
    TooManyRequests(String),
    /// Something failed on our side; logged, never shown.
    Internal(String),
}

impl From<ServiceError> for PageError {
    fn from(error: ServiceError) -> PageError {
        match error {
            ServiceError::NotFound(message) => PageError::NotFound(message),
            ServiceError::Invalid(message) | ServiceError::Conflict(message) => PageError::Invalid(message),
            ServiceError::Payment(payment) => {
                PageError::Invalid(format!("The payment did not go through: {payment}"))
            }
            ServiceError::InsufficientCredit(refusal) => PageError::Invalid(refusal.to_string()),
            ServiceError::SpendLimitReached(refusal) => PageError::Invalid(refusal.to_string()),
            other @ (ServiceError::RateLimited(_)
            | ServiceError::ExceedsRateLimit(_)
            | ServiceError::Unavailable(_)
            | ServiceError::LimiterUnavailable(_)
            | ServiceError::TooManyConcurrentCalls { .. }
            | ServiceError::Store(_)) => PageError::Internal(other.to_string()),
        }
    }
}

impl From<Denied> for PageError {
    fn from(_: Denied) -> PageError {
        PageError::Forbidden("Your role does not give access to this page or action.".into())
    }
}

impl From<SignInRefusal> for PageError {
    fn from(refusal: SignInRefusal) -> PageError {
        match refusal {
            SignInRefusal::Service(error) => error.into(),
            refusal @ (SignInRefusal::TooManyAttempts | SignInRefusal::Busy) => {
                PageError::TooManyRequests(refusal.to_string())
            }
            refusal @ SignInRefusal::BadCredentials => PageError::Invalid(refusal.to_string()),
            refusal @ (SignInRefusal::PasswordsOff | SignInRefusal::Deactivated) => {
                PageError::Forbidden(refusal.to_string())
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::Forbidden(message) => (StatusCode::FORBIDDEN, "Not allowed", message),
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            PageError::Invalid(message) => (StatusCode::BAD_REQUEST, "That did not work", message),
            PageError::TooManyRequests(message) => (StatusCode::TOO_MANY_REQUESTS, "Too many tries", message),
            PageError::Internal(detail) => {
                tracing::error!(%detail, "a Console page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not finish this. Try again in a moment.".to_owned(),
                )
            }
        };
        error_page(status, title, &message)
    }
}

/// The page of an error: `title`, what went wrong, and the way back.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = layout::bare(
        title,
        html! {
            h1 { (title) }
            p role="alert" { (message) }
            p { a href="/console/overview" { "Back to the overview" } }
        },
    );
    (status, Html(body.into_string())).into_response()
}
