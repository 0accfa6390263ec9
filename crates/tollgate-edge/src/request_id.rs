//! The `req_…` id of every request, returned in the `request-id` header, and the step that
//! renders an error on the way out: a handler's error rides in the response's extensions
//! until the surface's middleware, which knows the id, writes its envelope. It must not
//! choose an envelope: the surface passes its own renderer.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tollgate_core::ids::IdKind;
use tollgate_service::clock::{Clock, SystemClock};

use crate::error::Problem;

/// A fresh request id, ordered by time.
pub fn new_request_id() -> String {
    tollgate_service::random::ordered_id(IdKind::Request, SystemClock.now())
}

/// A response with `status` that carries `error` for the middleware to render.
pub fn deferred<E: Clone + Send + Sync + 'static>(status: StatusCode, error: E) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(error);
    response
}

/// Renders the error the response carries (a handler's `E`, or the router's own 405) with
/// `render`, and stamps the `request-id` header: what every response gets on its way out.
pub fn stamp<E>(mut response: Response, request_id: &str, render: impl FnOnce(&E) -> Response) -> Response
where
    E: From<Problem> + Clone + Send + Sync + 'static,
{
    let error = response.extensions_mut().remove::<E>().or_else(|| {
        (response.status() == StatusCode::METHOD_NOT_ALLOWED).then(|| E::from(Problem::method_not_allowed()))
    });
    if let Some(error) = error {
        response = render(&error);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}
