//! `POST /webhooks/stripe`: Stripe's signed events, answered as Stripe expects — 200 once
//! the event is recorded (or known, or not one tollgate acts on), 400 when the signature
//! or the body is refused, 409 when it is for a payment not known to be paid yet (a refund
//! ahead of its payment's own event), 500 when the store failed (Stripe retries all but
//! the 200s). The raw body is
//! what the signature covers, so it is read as bytes and parsed only after verification.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tollgate_service::{Tollgate, WebhookError};

pub(crate) fn router(tollgate: Tollgate) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(stripe))
        .with_state(tollgate)
}

async fn stripe(State(tollgate): State<Tollgate>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    match tollgate.stripe_webhook(&body, signature).await {
        Ok(outcome) => (
            StatusCode::OK,
            axum::Json(
                serde_json::json!({ "received": true, "outcome": format!("{outcome:?}").to_lowercase() }),
            ),
        )
            .into_response(),
        Err(WebhookError::NotStripe) => StatusCode::NOT_FOUND.into_response(),
        Err(error @ (WebhookError::Signature(_) | WebhookError::Malformed(_))) => {
            tracing::warn!(%error, "a Stripe webhook was refused");
            (StatusCode::BAD_REQUEST, error.to_string()).into_response()
        }
        Err(error @ WebhookError::NotYet(_)) => {
            tracing::info!(%error, "a Stripe webhook arrived before its payment; Stripe will retry");
            (StatusCode::CONFLICT, error.to_string()).into_response()
        }
        Err(WebhookError::Service(error)) => {
            tracing::error!(%error, "a Stripe webhook could not be applied");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
