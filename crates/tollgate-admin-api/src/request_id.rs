//! Gives every Admin API request a `req_…` id, returns it in the `request-id` header, and
//! renders error envelopes (from handlers or from the router itself) with it. The id, the
//! header and the 405 are tollgate-edge's, shared with the gateway.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::ApiError;

pub(crate) async fn middleware(mut request: Request, next: Next) -> Response {
    let started = tollgate_edge::arrived();
    let request_id = tollgate_edge::new_request_id();
    let span = tollgate_edge::request_span(&request_id, request.headers());
    request
        .extensions_mut()
        .insert(tollgate_edge::RequestId(request_id.clone()));
    let response = next.run(request).instrument(span).await;
    tollgate_edge::stamp::<ApiError>(response, &request_id, started, "admin", |error| {
        error.render(&request_id)
    })
}
