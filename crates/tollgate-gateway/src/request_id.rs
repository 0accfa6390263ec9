//! Gives every request a `req_…` id, returns it in the `request-id` header (and, on
//! OpenAI's surface, in `x-request-id` as OpenAI does), and renders error envelopes (from
//! handlers or from the router itself) with it, in the envelope of the request's surface.
//! The id, the header, the middleware's steps and the 405 are tollgate-edge's, shared with
//! the Admin API; only the envelope is the surface's.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use tollgate_service::clock::{Clock, SystemClock};

use crate::error::{ApiError, ErrorKind, Surface};
use crate::messages::set_rate_limit_group;

pub(crate) async fn middleware(mut request: Request, next: Next) -> Response {
    let surface = Surface::of(request.uri().path(), request.headers());
    request.extensions_mut().insert(surface);
    tollgate_edge::identified(request, next, move |response, request_id, started| {
        stamp(response, request_id, started, surface)
    })
    .await
}

/// Renders an error the response carries in its surface's envelope and stamps the
/// request's id: what every response of the data plane gets on its way out.
pub(crate) fn stamp(
    response: Response,
    request_id: &str,
    started: tokio::time::Instant,
    surface: Surface,
) -> Response {
    let label = match surface {
        Surface::Anthropic => "anthropic",
        Surface::OpenAi => "openai",
    };
    let mut response = tollgate_edge::stamp::<ApiError>(response, request_id, started, label, |error| {
        envelope(error, request_id, surface)
    });
    if surface == Surface::OpenAi
        && let Ok(value) = HeaderValue::from_str(request_id)
    {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn envelope(error: &ApiError, request_id: &str, surface: Surface) -> Response {
    let status = match surface {
        Surface::Anthropic => error.status,
        Surface::OpenAi => error.openai_error().status,
    };
    // An upstream's refusal in the client's own envelope goes through byte for byte.
    let body = match &error.upstream {
        Some(upstream) if upstream.envelope == Some(surface) => upstream.body.clone(),
        _ => Bytes::from(match surface {
            Surface::Anthropic => error.to_json(request_id).to_string(),
            Surface::OpenAi => error.to_openai_json().to_string(),
        }),
    };
    let mut response = tollgate_edge::json_response(status, body);
    let headers = response.headers_mut();
    for (name, value) in error.upstream.iter().flat_map(|upstream| &upstream.headers) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    if let Some(seconds) = error.retry_after_seconds {
        headers.insert("retry-after", HeaderValue::from(seconds));
        if let Some((group, limit)) = error.limited.as_deref() {
            let wait = chrono::Duration::seconds(i64::try_from(seconds.min(86_400)).unwrap_or(86_400));
            set_rate_limit_group(headers, group, *limit, 0, SystemClock.now() + wait);
        }
    }
    if !headers.contains_key("x-should-retry")
        && let Some(should_retry) = should_retry(error, status)
    {
        let value = if should_retry { "true" } else { "false" };
        headers.insert("x-should-retry", HeaderValue::from_static(value));
    }
    response
}

/// `x-should-retry` where the upstream did not say: what the error knows of itself; else
/// true when waiting helps (a `retry-after`, an overload, an upstream's 429 or 5xx, as it
/// would be retried called directly); else false for a 429 of a spent monthly limit or
/// credit, which no retry before money or the month arrives can pass, and for our own 401
/// and 403; else nothing.
fn should_retry(error: &ApiError, status: StatusCode) -> Option<bool> {
    let retryable = error.retry_after_seconds.is_some()
        || error.kind == ErrorKind::Overloaded
        || (error.upstream.is_some()
            && (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()));
    // A key or permission we refused stays refused: without this, clients that retry 401s
    // (Claude Code does, ten times) keep knocking.
    let refused_here =
        error.upstream.is_none() && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    error.should_retry.or_else(|| {
        (retryable || status == StatusCode::TOO_MANY_REQUESTS || refused_here).then_some(retryable)
    })
}
