//! The Admin API's side of tollgate-edge's `Idempotency-Key` middleware: the caller is the
//! organization of the admin key the request presents (left in the extensions, so the
//! `Admin` extractor does not look the key up again), and a refusal or a kept handler's
//! error takes the Admin API's envelope. A request whose key is refused goes through
//! unguarded, for its handler to answer 401 or 403 as always.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tollgate_edge::{IdempotencyScope, Problem};
use tollgate_service::OrgAdmin;

use crate::AdminState;
use crate::error::ApiError;

impl IdempotencyScope for AdminState {
    async fn authority(&self, request: &mut Request) -> Option<OrgAdmin> {
        let presented = tollgate_edge::presented_key(request.headers()).map(|(key, _)| key.to_owned());
        let admin = self
            .tollgate
            .authenticate_admin_key(presented.as_deref())
            .await
            .ok()?;
        request.extensions_mut().insert(admin.clone());
        Some(admin)
    }

    fn refuse(&self, problem: Problem) -> Response {
        ApiError::from(problem).into_response()
    }

    fn rendered(&self, mut response: Response, request_id: Option<&str>) -> Response {
        match response.extensions_mut().remove::<ApiError>() {
            Some(error) => error.render(request_id.unwrap_or_default()),
            None => response,
        }
    }
}
