//! The data plane: Anthropic's Messages API (`/v1/messages`, `count_tokens`) and OpenAI's
//! Chat Completions (`/v1/chat/completions`) over HTTP, `/v1/models` in both shapes, their
//! wire JSON, translation between them, routing and failover across deployments, SSE relay
//! and both error envelopes. The only crate of the gateway path that knows wire shapes; it
//! calls `tollgate-service` for every decision about keys and money and never touches the
//! database itself.

mod chat;
mod error;
mod messages;
mod metered;
mod models;
mod request_id;
mod routing;
mod translate;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tollgate_core::catalog::{Catalog, Cooldowns};
use tollgate_service::Tollgate;
use tollgate_upstream::Provider;

pub use crate::error::{ApiError, CREDIT_TOO_LOW, ErrorKind, OpenAiError, Surface};
pub use crate::messages::run_for_caller;

/// Limits of the HTTP surface, from configuration.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Largest accepted request body (Messages: 32 MB).
    pub max_body_bytes: usize,
    /// How long to keep reading an upstream stream after its client went away, to learn
    /// the final usage.
    pub disconnect_drain: Duration,
}

impl Default for GatewaySettings {
    fn default() -> GatewaySettings {
        GatewaySettings {
            max_body_bytes: 32 * 1024 * 1024,
            disconnect_drain: Duration::from_secs(120),
        }
    }
}

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

/// The data-plane router, with request ids and error envelopes on every response.
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/v1/messages", post(messages::create_message))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/chat/completions", post(chat::create_chat_completion))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model_id}", get(models::get_model))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::not_found("Not found: no endpoint has this path.") })
        .with_state(state)
        .layer(axum::middleware::from_fn(request_id::middleware))
}
