//! The `Idempotency-Key` middleware of the control plane (#22), written once for the Admin
//! API and the Console's billing forms. A POST, PUT, PATCH or DELETE that carries the
//! header, from a caller its surface authenticates to an organization, claims the key in
//! that organization before its handler runs. The same request again (method, path and
//! body) gets the first answer back, marked `Idempotent-Replayed: true`, without running;
//! another request under the key is refused with 422, and a repeat while the first still
//! runs with 409. A 5xx is not kept: the key is given back, so the client may retry with it.
//!
//! The surface says who the caller is and how its refusals look (`IdempotencyScope`); the
//! rules are `tollgate_core::idempotency`'s and the claims tollgate-service's. The data
//! plane does not use it, and nothing here knows a surface's routes.

use std::future::Future;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_core::idempotency::{IdempotencyKey, KeyRefusal, RequestFingerprint, keeps_answer};
use tollgate_service::{IdempotencyTicket, IdempotentAnswer, IdempotentStart, OrgAdmin, ServiceError};
use tracing::Instrument;

use crate::error::{ErrorKind, Problem};
use crate::request_id::RequestId;

/// The header a client sends its key in.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header of a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The largest request body read under a key (axum's default body limit), and the largest
/// answer kept.
const BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// What the 422 says.
pub const MISMATCH_MESSAGE: &str = "Keys for idempotent requests can only be used with the same parameters \
     they were first used with. Try using a key other than the one used for the earlier request.";

/// What the 409 says.
pub const IN_FLIGHT_MESSAGE: &str =
    "A request with this Idempotency-Key is still being processed; retry after it completes.";

/// A surface's side of the middleware.
pub trait IdempotencyScope: Clone + Send + Sync + 'static {
    /// The organization-scoped handle the request acts with, from its credentials; `None`
    /// lets the request through unguarded, for its handler to refuse. It may leave what it
    /// found in the request's extensions for the handler.
    fn authority(&self, request: &mut Request) -> impl Future<Output = Option<OrgAdmin>> + Send;

    /// A refusal of the middleware's own, in the surface's shape.
    fn refuse(&self, problem: Problem) -> Response;

    /// The response as the client will get it: a handler's error still waiting in the
    /// extensions for the surface's middleware is rendered now (with the request's id), so
    /// that the answer kept is the answer sent.
    fn rendered(&self, response: Response, request_id: Option<&str>) -> Response;
}

/// The middleware; `from_fn_with_state(scope, idempotency::<Scope>)`, inside the
/// surface's request-id middleware.
pub async fn idempotency<S: IdempotencyScope>(
    State(scope): State<S>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_mutating(request.method()) {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let key = match value
        .to_str()
        .map_err(|_| KeyRefusal::NotPrintable)
        .and_then(IdempotencyKey::parse)
    {
        Ok(key) => key,
        Err(refusal) => {
            return scope.refuse(Problem::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::InvalidRequest,
                refusal.to_string(),
            ));
        }
    };
    let Some(admin) = scope.authority(&mut request).await else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_BYTES_MAX).await else {
        return scope.refuse(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTooLarge,
            "The request body could not be read whole; a request with an Idempotency-Key may carry at most 2 MiB.",
        ));
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |path| path.as_str());
    let fingerprint = RequestFingerprint::of(parts.method.as_str(), path, &body);
    let ticket = match admin.claim_idempotency_key(&key, &fingerprint).await {
        Ok(IdempotentStart::Proceed(ticket)) => ticket,
        Ok(IdempotentStart::Replay(answer)) => return replay(answer),
        Ok(IdempotentStart::Mismatch) => {
            return scope.refuse(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::InvalidRequest,
                MISMATCH_MESSAGE,
            ));
        }
        Ok(IdempotentStart::InFlight) => {
            return scope.refuse(Problem::new(
                StatusCode::CONFLICT,
                ErrorKind::InvalidRequest,
                IN_FLIGHT_MESSAGE,
            ));
        }
        Err(error) => return scope.refuse(failure(error)),
    };
    let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
    let request = Request::from_parts(parts, Body::from(body));
    // The handler and the end of the claim run to completion in tasks of their own: a
    // client that hangs up must not leave its key claimed, refused with 409 for a day, nor
    // a handler that panicked.
    let span = tracing::Span::current();
    let task_scope = scope.clone();
    let finishing = async move {
        let handled = tokio::spawn(next.run(request).instrument(tracing::Span::current())).await;
        match handled {
            Ok(response) => finish(&task_scope, &admin, ticket, response, request_id.as_deref()).await,
            Err(error) => {
                release(&admin, ticket).await;
                task_scope.refuse(Problem::internal(format!(
                    "the handler of a request with an Idempotency-Key failed: {error}"
                )))
            }
        }
    };
    match tokio::spawn(finishing.instrument(span)).await {
        Ok(response) => response,
        Err(error) => scope.refuse(Problem::internal(format!(
            "a request with an Idempotency-Key failed: {error}"
        ))),
    }
}

pub(crate) fn is_mutating(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// Keeps the handler's answer for the ticket's key (or gives the key back) and returns it.
async fn finish<S: IdempotencyScope>(
    scope: &S,
    admin: &OrgAdmin,
    ticket: IdempotencyTicket,
    response: Response,
    request_id: Option<&str>,
) -> Response {
    if !keeps_answer(response.status().as_u16()) {
        release(admin, ticket).await;
        return response;
    }
    let (parts, body) = scope.rendered(response, request_id).into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            release(admin, ticket).await;
            return scope.refuse(Problem::internal(format!(
                "the answer to a request with an Idempotency-Key could not be read: {error}"
            )));
        }
    };
    // Answers are JSON or HTML; one that is not text is not kept, and the key is given back.
    let answer = std::str::from_utf8(&bytes).ok().map(|text| IdempotentAnswer {
        status: parts.status.as_u16(),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        location: header_text(&parts.headers, header::LOCATION),
        body: text.to_owned(),
    });
    if let Err(error) = admin.finish_idempotent_request(ticket, answer.as_ref()).await {
        tracing::error!(%error, "the answer to a request with an Idempotency-Key could not be kept");
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn release(admin: &OrgAdmin, ticket: IdempotencyTicket) {
    if let Err(error) = admin.finish_idempotent_request(ticket, None).await {
        tracing::error!(%error, "an Idempotency-Key could not be given back");
    }
}

fn header_text(headers: &axum::http::HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The first answer again, marked as a replay.
pub(crate) fn replay(answer: IdempotentAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(answer.body)).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in [
        (header::CONTENT_TYPE, answer.content_type),
        (header::LOCATION, answer.location),
    ] {
        if let Some(value) = value.and_then(|text| HeaderValue::from_str(&text).ok()) {
            headers.insert(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// A claim the store could not make: a 503 naming the database when it is down, else a
/// generic 500.
fn failure(error: ServiceError) -> Problem {
    match error.unavailable_dependency() {
        Some(dependency) => Problem::unavailable(dependency, error),
        None => Problem::internal(error),
    }
}
