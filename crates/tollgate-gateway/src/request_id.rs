//! Gives every request a `req_…` id, returns it in the `request-id` header (and, on
//! OpenAI's surface, in `x-request-id` as OpenAI does), and renders error envelopes (from
//! handlers or from the router itself) with it, in the envelope of the request's surface.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::ids::IdKind;
use tollgate_service::clock::{Clock, SystemClock};

use crate::error::{ApiError, ErrorKind, Surface};

/// The id of the request being served, for handlers that record it.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub String);

pub(crate) async fn middleware(mut request: Request, next: Next) -> Response {
    let request_id = tollgate_service::random::ordered_id(IdKind::Request, SystemClock.now());
    let surface = Surface::of(request.uri().path(), request.headers());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    request.extensions_mut().insert(surface);
    let response = next.run(request).await;
    stamp(response, &request_id, surface)
}

/// Renders an error the response carries in its surface's envelope and stamps the
/// request's id: what every response of the data plane gets on its way out.
pub(crate) fn stamp(mut response: Response, request_id: &str, surface: Surface) -> Response {
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        response = envelope(&error, request_id, surface);
    } else if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        let error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            "This method is not allowed on this path.",
        );
        response = envelope(&error, request_id, surface);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        if surface == Surface::OpenAi {
            response.headers_mut().insert("x-request-id", value.clone());
        }
        response.headers_mut().insert("request-id", value);
    }
    response
}

fn envelope(error: &ApiError, request_id: &str, surface: Surface) -> Response {
    let (status, body) = match surface {
        Surface::Anthropic => (error.status, error.to_json(request_id)),
        Surface::OpenAi => (error.openai_error().status, error.to_openai_json()),
    };
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let headers = response.headers_mut();
    if let Some(seconds) = error.retry_after_seconds {
        headers.insert("retry-after", HeaderValue::from(seconds));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    } else if error.kind == ErrorKind::Overloaded {
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        // A spent monthly limit or credit: retrying before money or the month arrives
        // cannot succeed.
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}
