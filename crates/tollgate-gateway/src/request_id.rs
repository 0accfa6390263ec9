//! Gives every request a `req_…` id, returns it in the `request-id` header, and renders
//! error envelopes (from handlers or from the router itself) with it.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::ids::IdKind;

use crate::error::{ApiError, ErrorKind};

/// The id of the request being served, for handlers that record it.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub String);

pub(crate) async fn middleware(mut request: Request, next: Next) -> Response {
    let request_id = tollgate_service::random::id(IdKind::Request);
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = next.run(request).await;
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        response = envelope(&error, &request_id);
    } else if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        let error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            "This method is not allowed on this path.",
        );
        response = envelope(&error, &request_id);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

fn envelope(error: &ApiError, request_id: &str) -> Response {
    let body = error.to_json(request_id).to_string();
    let mut response = (error.status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let headers = response.headers_mut();
    if let Some(seconds) = error.retry_after_seconds {
        headers.insert("retry-after", HeaderValue::from(seconds));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    } else if error.kind == ErrorKind::Overloaded {
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    } else if error.status == StatusCode::TOO_MANY_REQUESTS {
        // A spent monthly limit: retrying before the month turns cannot succeed.
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}
