//! The data plane: Anthropic's Messages API (`/v1/messages`, `count_tokens`, Message
//! Batches), its Files API (`/v1/files`) and OpenAI's Chat Completions (`/v1/chat/completions`), Responses and
//! Embeddings (`/v1/embeddings`) over HTTP, `/v1/models` in both shapes, their wire JSON,
//! translation between them, routing and failover across deployments, SSE relay and both
//! error envelopes. The only crate of the gateway path that knows wire shapes; it
//! calls `tollgate-service` for every decision about keys and money and never touches the
//! database itself.

mod batches;
mod cache_prefix;
mod chat;
mod embeddings;
mod error;
mod file_sources;
mod files;
mod messages;
mod metered;
mod models;
mod request_id;
mod responses;
mod routing;
mod telemetry;
mod translate;
mod upstream_batches;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tollgate_core::catalog::{Catalog, Cooldowns};
use tollgate_service::Tollgate;
use tollgate_upstream::Provider;

pub use crate::batches::{BATCH_BODY_BYTES_MAX, BATCH_REQUESTS_MAX, BatchRunnerSettings, run_batches};
pub use crate::error::{ApiError, CREDIT_TOO_LOW, ErrorKind, OpenAiError, Surface};
pub use crate::messages::run_for_caller;
pub use crate::routing::watch_deployment_alerts;

/// Limits of the HTTP surface, from configuration.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Largest accepted request body (Messages: 32 MB).
    pub max_body_bytes: usize,
    /// How long to keep reading an upstream stream after its client went away, to learn
    /// the final usage.
    pub disconnect_drain: Duration,
    /// Providers (kind `anthropic`) whose Message Batches go to their own Batches API: a
    /// batch request whose first deployment is on one of them is run there.
    pub batch_providers: HashSet<String>,
}

impl Default for GatewaySettings {
    fn default() -> GatewaySettings {
        GatewaySettings {
            max_body_bytes: 32 * 1024 * 1024,
            disconnect_drain: Duration::from_secs(120),
            batch_providers: HashSet::new(),
        }
    }
}

/// What an upload's multipart body may carry beside its file (boundaries, part headers,
/// `expires_in_seconds`).
const UPLOAD_FRAMING_BYTES_MAX: usize = 1024 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub tollgate: Tollgate,
    pub catalog: Arc<Catalog>,
    /// Providers by their configured name.
    pub providers: Arc<HashMap<String, Provider>>,
    pub settings: GatewaySettings,
    /// Deployments passed over after failing, shared by every request of this process.
    pub cooldowns: Arc<Mutex<Cooldowns>>,
}

/// Readiness, beside `/health` (liveness: the process answers): 200 when the store takes a
/// write and the rate limiter answers, else 503 naming what failed (details in the log).
async fn ready(axum::extract::State(state): axum::extract::State<GatewayState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let readiness = state.tollgate.readiness().await;
    if readiness.is_ready() {
        return Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let mut failed = serde_json::Map::new();
    if let Err(detail) = &readiness.store {
        tracing::warn!(%detail, "not ready: the store does not take writes");
        failed.insert("store".into(), "the database does not take writes".into());
    }
    if let Err(detail) = &readiness.rate_limiter {
        tracing::warn!(%detail, "not ready: the rate limiter does not answer");
        failed.insert(
            "rate_limiter".into(),
            "the rate-limit store does not answer".into(),
        );
    }
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "unavailable", "failed": failed})),
    )
        .into_response()
}

/// The data-plane router, with request ids and error envelopes on every response.
pub fn router(state: GatewayState) -> Router {
    // An upload's body is its file and a little multipart framing; `upload_file` holds the
    // file itself to the configured maximum.
    let upload_body_max = state
        .tollgate
        .max_file_bytes()
        .ok()
        .and_then(|max| usize::try_from(max).ok())
        .map_or(state.settings.max_body_bytes, |max| {
            max.saturating_add(UPLOAD_FRAMING_BYTES_MAX)
        });
    Router::new()
        .route(
            "/v1/files",
            post(files::upload_file)
                .layer(axum::extract::DefaultBodyLimit::max(upload_body_max))
                .get(files::list_files),
        )
        .route(
            "/v1/files/{file_id}",
            get(files::file_metadata).delete(files::delete_file),
        )
        .route("/v1/files/{file_id}/content", get(files::file_content))
        .route("/v1/messages", post(messages::create_message))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route(
            "/v1/messages/batches",
            post(batches::create_batch).get(batches::list_batches),
        )
        .route(
            "/v1/messages/batches/{message_batch_id}",
            get(batches::retrieve_batch).delete(batches::delete_batch),
        )
        .route(
            "/v1/messages/batches/{message_batch_id}/cancel",
            post(batches::cancel_batch),
        )
        .route(
            "/v1/messages/batches/{message_batch_id}/results",
            get(batches::batch_results),
        )
        .route("/v1/chat/completions", post(chat::create_chat_completion))
        .route("/v1/embeddings", post(embeddings::create_embedding))
        .route("/v1/responses", post(responses::create_response))
        .route(
            "/v1/responses/{response_id}",
            get(responses::retrieve_response).delete(responses::delete_response),
        )
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model_id}", get(models::get_model))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        // Clients probe the base URL (`HEAD /`) before their first request.
        .route("/", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .fallback(|| async { ApiError::not_found("Not found: no endpoint has this path.") })
        .with_state(state)
        .layer(axum::middleware::from_fn(request_id::middleware))
}
