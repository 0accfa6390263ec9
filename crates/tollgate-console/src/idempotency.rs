//! The Console's side of tollgate-edge's `Idempotency-Key` middleware, on the billing forms
//! (buying credit, auto-reload): the caller is the signed-in person, whose role must reach
//! billing changes (the session guard, which runs first, checked the session and its CSRF
//! token), and a refusal is an error page. A person whose role does not reach billing goes
//! through unguarded, for the page to refuse. A form's own `idempotency_key` field still
//! makes a purchase once by itself; the header makes the whole answer replay.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_edge::{IdempotencyScope, Problem};
use tollgate_service::{Access, ConsoleArea, ConsoleUser, OrgAdmin};

use crate::error::error_page;

/// The billing forms' scope: whoever may change billing, as the session guard found them.
#[derive(Clone, Copy)]
pub(crate) struct BillingChanges;

impl IdempotencyScope for BillingChanges {
    async fn authority(&self, request: &mut Request) -> Option<OrgAdmin> {
        let user = request.extensions().get::<ConsoleUser>()?;
        user.authority(ConsoleArea::Billing, Access::Change).ok().cloned()
    }

    fn refuse(&self, problem: Problem) -> Response {
        let title = if problem.status.is_server_error() {
            "Something went wrong"
        } else if problem.status == StatusCode::CONFLICT {
            "Still working on it"
        } else {
            "That did not work"
        };
        error_page(problem.status, title, &problem.message)
    }

    /// Console pages render their errors at once: the response is the answer.
    fn rendered(&self, response: Response, _request_id: Option<&str>) -> Response {
        response
    }
}
