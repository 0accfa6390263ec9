//! The `req_…` id of every request, returned in the `request-id` header, with the
//! `server-timing` header (tollgate's own time and, where a handler called one, the
//! upstream's), and the step that
//! renders an error on the way out: a handler's error rides in the response's extensions
//! until the surface's middleware, which knows the id, writes its envelope. It must not
//! choose an envelope: the surface passes its own renderer.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tollgate_core::ids::IdKind;
use tollgate_service::clock::{Clock, SystemClock};
use tracing::Instrument;

use crate::error::Problem;

/// A fresh request id, ordered by time.
pub fn new_request_id() -> String {
    tollgate_service::random::ordered_id(IdKind::Request, SystemClock.now())
}

/// The request's id, which `identified` puts in the request's extensions for the layers and
/// handlers inside it (the idempotency middleware renders a kept error with it; handlers
/// record it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id `identified` gave `request` (empty outside it).
    pub fn of(request: &Request) -> String {
        request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default()
    }
}

/// Every surface's request-id middleware: notes when the request arrived, gives it a fresh
/// id (in its extensions and its tracing span), runs it, and hands the response, the id and
/// the arrival to `finish`: the surface's own `stamp` with its own envelope. What differs
/// between the surfaces is only `finish`.
pub async fn identified(
    mut request: Request,
    next: Next,
    finish: impl FnOnce(Response, &str, Instant) -> Response,
) -> Response {
    let started = arrived();
    let request_id = new_request_id();
    let span = crate::trace::request_span(&request_id, request.headers());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let response = next.run(request).instrument(span).await;
    finish(response, &request_id, started)
}

/// A response with `status` that carries `error` for the middleware to render.
pub fn deferred<E: Clone + Send + Sync + 'static>(status: StatusCode, error: E) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(error);
    response
}

/// When a request arrived, for `stamp`'s `server-timing`.
pub fn arrived() -> Instant {
    Instant::now()
}

/// How long the upstream took to answer (to its response head, for a stream), put in the
/// response's extensions by the handler that called it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTime(pub Duration);

/// Renders the error the response carries (a handler's `E`, or the router's own 405) with
/// `render`, and stamps the `request-id` and `server-timing` headers (`started`: when the
/// request arrived): what every response gets on its way out. Counts the response in the
/// metrics of its `surface` (`anthropic`, `openai`, `admin`).
pub fn stamp<E>(
    mut response: Response,
    request_id: &str,
    started: Instant,
    surface: &'static str,
    render: impl FnOnce(&E) -> Response,
) -> Response
where
    E: From<Problem> + Clone + Send + Sync + 'static,
{
    let upstream = response.extensions().get::<UpstreamTime>().copied();
    let error = response.extensions_mut().remove::<E>().or_else(|| {
        (response.status() == StatusCode::METHOD_NOT_ALLOWED).then(|| E::from(Problem::method_not_allowed()))
    });
    if let Some(error) = error {
        response = render(&error);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", value);
    }
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&server_timing(elapsed, upstream)) {
        response.headers_mut().insert("server-timing", value);
    }
    observe(surface, response.status(), elapsed, upstream);
    response
}

/// The response in `/metrics`: counted by surface and status class, its time to the head,
/// and, for a proxied request, tollgate's share of that time.
fn observe(surface: &'static str, status: StatusCode, elapsed: Duration, upstream: Option<UpstreamTime>) {
    metrics::counter!(
        "tollgate_http_responses_total",
        "surface" => surface,
        "status_class" => status_class(status)
    )
    .increment(1);
    metrics::histogram!("tollgate_http_response_head_seconds", "surface" => surface).record(elapsed);
    if let Some(UpstreamTime(upstream)) = upstream {
        metrics::histogram!("tollgate_overhead_seconds", "surface" => surface)
            .record(elapsed.saturating_sub(upstream));
    }
}

/// A status's class as metrics label it: `2xx`, `4xx`, ….
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `tollgate;dur=0.21, upstream;dur=812.40`: milliseconds until the response head, split
/// into tollgate's own and the upstream's.
pub fn server_timing(total: Duration, upstream: Option<UpstreamTime>) -> String {
    let millis = |duration: Duration| duration.as_micros() as f64 / 1_000.0;
    match upstream {
        Some(UpstreamTime(upstream)) => format!(
            "tollgate;dur={:.2}, upstream;dur={:.2}",
            millis(total.saturating_sub(upstream)),
            millis(upstream)
        ),
        None => format!("tollgate;dur={:.2}", millis(total)),
    }
}
