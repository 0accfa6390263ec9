//! Gives every Admin API request a `req_…` id, returns it in the `request-id` header, and
//! renders error envelopes (from handlers or from the router itself) with it.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::ids::IdKind;
use tollgate_service::clock::{Clock, SystemClock};

use crate::error::{ApiError, ErrorKind};

pub(crate) async fn middleware(request: Request, next: Next) -> Response {
    let request_id = tollgate_service::random::ordered_id(IdKind::Request, SystemClock.now());
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
    response
}
