//! The Admin API's request ids: tollgate-edge's `identified` middleware, finished with the
//! Admin API's own envelope (the id, the header and the 405 are tollgate-edge's, shared
//! with the gateway).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

pub(crate) async fn middleware(request: Request, next: Next) -> Response {
    tollgate_edge::identified(request, next, |response, request_id, started| {
        tollgate_edge::stamp::<ApiError>(response, request_id, started, "admin", |error| {
            error.render(request_id)
        })
    })
    .await
}
