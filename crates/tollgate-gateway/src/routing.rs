//! From a resolved model to the attempts one request will make: the model's deployments
//! in routing order (`tollgate_core::catalog::route_order`, with the cooldowns in force and
//! a random number drawn from the request id), each with the body in its provider's dialect
//! and the prices it would charge. Writing the bodies here, before anything is reserved,
//! means a request that cannot be translated is refused without touching credit, and the
//! reservation can be bounded by the largest body any deployment will receive. An
//! embeddings request goes only to an embeddings model, and its body only changes model.

use std::sync::PoisonError;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tollgate_core::catalog::{ResolvedModel, route_order};
use tollgate_upstream::{Dialect, Provider, UpstreamRequest};

use crate::GatewayState;
use crate::error::ApiError;
use crate::file_sources::FileBodies;
use crate::metered::{Attempt, Operation};
use crate::translate::request::{chat_to_messages, messages_to_chat};

/// What the routing needs to know of the client's request.
pub(crate) struct ClientRequest<'a> {
    pub(crate) dialect: Dialect,
    pub(crate) body: &'a Map<String, Value>,
    /// The body as the client sent it, forwarded as is where nothing needs changing.
    pub(crate) original: &'a Bytes,
    pub(crate) stream: bool,
    /// The client's output limit, when it gave one.
    pub(crate) max_tokens: Option<u64>,
    pub(crate) images: u64,
    /// Pass-through for Anthropic upstreams, from an Anthropic client.
    pub(crate) anthropic_version: Option<String>,
    pub(crate) anthropic_beta: Option<String>,
    pub(crate) client_headers: HeaderMap,
    pub(crate) query: Option<String>,
    /// When the request counts as admitted for its prices: now, or its batch's creation.
    pub(crate) priced_at: tollgate_core::Timestamp,
    /// Generation (Messages, Chat Completions) or embeddings: only an embeddings model
    /// embeds, and it does nothing else.
    pub(crate) operation: Operation,
    /// Each provider's body, when a Messages request names files (`file_sources`).
    pub(crate) files: Option<&'a FileBodies>,
}

/// The request's attempts, in the order to try them.
pub(crate) fn plan_attempts(
    state: &GatewayState,
    resolved: &ResolvedModel<'_>,
    request: &ClientRequest<'_>,
    request_id: &str,
) -> Result<Vec<Attempt>, ApiError> {
    let model = &resolved.model;
    match (request.operation, model.embeddings) {
        (Operation::Embed, false) => return Err(no_embeddings(&model.id)),
        (Operation::Generate, true) => {
            return Err(ApiError::invalid(format!(
                "The model '{}' is an embeddings model: call POST /v1/embeddings.",
                model.id
            ))
            .with_param("model"));
        }
        (Operation::Embed, true) | (Operation::Generate, false) => {}
    }
    let deployments = &model.deployments;
    let now = state.tollgate.now();
    let order = {
        let cooldowns = state.cooldowns.lock().unwrap_or_else(PoisonError::into_inner);
        route_order(
            deployments,
            |deployment| cooldowns.is_cooling(deployment, now),
            random_from(request_id),
        )
    };
    let mut attempts = Vec::with_capacity(order.len());
    // Why a deployment was passed over for the files the request names, if all were.
    let mut files_refused = None;
    for index in order {
        let deployment = &deployments[index];
        let provider = state
            .providers
            .get(&deployment.provider)
            .cloned()
            .ok_or_else(|| {
                ApiError::internal(format!("no provider '{}' is configured", deployment.provider))
            })?;
        let upstream_model = resolved.upstream_model(deployment);
        let (client_body, original) = match request
            .files
            .and_then(|files| files.for_provider(&deployment.provider))
        {
            None => (request.body, request.original),
            Some(Ok(provider_body)) => (&provider_body.json, &provider_body.bytes),
            Some(Err(refused)) => {
                files_refused.get_or_insert_with(|| refused.clone());
                continue;
            }
        };
        let body = match request.operation {
            // The configuration puts embeddings models on providers that embed only.
            Operation::Embed if !provider.embeds() => return Err(no_embeddings(&model.id)),
            Operation::Embed => with_model(client_body, original, upstream_model)?,
            Operation::Generate => upstream_body(
                &provider,
                resolved,
                request,
                (client_body, original),
                upstream_model,
            )?,
        };
        let prices = deployment
            .prices
            .at(request.priced_at)
            .for_request(request.images)
            .ok_or_else(|| ApiError::invalid("The request carries too many images to price."))?;
        let same_dialect = request.dialect == provider.dialect();
        attempts.push(Attempt {
            operation: request.operation,
            deployment: deployment.clone(),
            request: UpstreamRequest {
                body,
                stream: request.stream,
                anthropic_version: request.anthropic_version.clone(),
                anthropic_beta: request.anthropic_beta.clone(),
                client_headers: if same_dialect {
                    request.client_headers.clone()
                } else {
                    HeaderMap::new()
                },
                // A query string means something only to the API it was written for.
                query: same_dialect.then(|| request.query.clone()).flatten(),
            },
            provider,
            prices,
        });
    }
    match files_refused {
        Some(refused) if attempts.is_empty() => Err(refused),
        _ => Ok(attempts),
    }
}

/// The body one provider gets: the client's bytes when nothing changes, else rewritten or
/// translated into the provider's dialect. `client_body` is the client's body, or the one
/// written for this provider's files, with its bytes.
fn upstream_body(
    provider: &Provider,
    resolved: &ResolvedModel<'_>,
    request: &ClientRequest<'_>,
    (client_body, original): (&Map<String, Value>, &Bytes),
    upstream_model: &str,
) -> Result<Bytes, ApiError> {
    let default_max_tokens = resolved.model.default_max_tokens;
    let body = match (request.dialect, provider) {
        (Dialect::Anthropic, Provider::OpenAi(client)) => {
            messages_to_chat(client_body, upstream_model, client.max_tokens_field())?
        }
        (
            Dialect::OpenAi,
            Provider::Simulated(_)
            | Provider::Anthropic(_)
            | Provider::Bedrock(_)
            | Provider::Vertex(_)
            | Provider::Gemini(_),
        ) => chat_to_messages(
            client_body,
            upstream_model,
            request.max_tokens.unwrap_or(default_max_tokens),
        )?,
        // The clouds take the same body; their clients move the model into the URL (and
        // Gemini's translates it).
        (
            Dialect::Anthropic,
            Provider::Simulated(_)
            | Provider::Anthropic(_)
            | Provider::Bedrock(_)
            | Provider::Vertex(_)
            | Provider::Gemini(_),
        ) => return with_model(client_body, original, upstream_model),
        (Dialect::OpenAi, Provider::OpenAi(client)) => {
            let mut body = client_body.clone();
            body.insert("model".into(), json!(upstream_model));
            // The output must be bounded for the reservation to be.
            if request.max_tokens.is_none() {
                body.insert(client.max_tokens_field().name().into(), json!(default_max_tokens));
            }
            // Streams are metered from the usage chunk, so always ask for it.
            if request.stream {
                let options = body.entry("stream_options").or_insert_with(|| json!({}));
                if !options.is_object() {
                    *options = json!({});
                }
                options["include_usage"] = json!(true);
            }
            Value::Object(body)
        }
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// The client's body with `upstream_model` as its model: its own bytes when it already
/// names it, so that everything else reaches the upstream exactly as sent.
pub(crate) fn with_model(
    body: &Map<String, Value>,
    original: &Bytes,
    upstream_model: &str,
) -> Result<Bytes, ApiError> {
    if body.get("model").and_then(Value::as_str) == Some(upstream_model) {
        return Ok(original.clone());
    }
    let mut body = body.clone();
    body.insert("model".into(), json!(upstream_model));
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// OpenAI's 400 for an embeddings request to a model that makes none.
fn no_embeddings(model: &str) -> ApiError {
    ApiError::invalid(format!("The model '{model}' does not support embeddings.")).with_param("model")
}

/// Routing's random number, from the request id (itself random): spreads traffic by
/// weight without another source of randomness. FNV-1a, stable across Rust versions.
fn random_from(request_id: &str) -> u64 {
    request_id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The largest body any attempt sends: what bounds the input tokens.
pub(crate) fn largest_body_bytes(original: &Bytes, attempts: &[Attempt]) -> usize {
    attempts
        .iter()
        .map(|attempt| attempt.request.body.len())
        .chain(std::iter::once(original.len()))
        .max()
        .unwrap_or(0)
}

/// Every `interval`, takes the deployments alerted as down by any replica (the standing
/// `deployment_down` claims) as this process's down set, so that a replica that never saw
/// a deployment fail still re-arms its alert at the deployment's next success here, and
/// one whose alert another replica re-armed goes down afresh at its next failure here.
/// Runs until the task is dropped.
pub async fn watch_deployment_alerts(state: GatewayState, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let labels = match state.tollgate.deployments_alerted_down().await {
            Ok(labels) => labels,
            Err(error) => {
                tracing::warn!(%error, "could not read which deployments are alerted as down");
                continue;
            }
        };
        let down = state
            .catalog
            .models()
            .iter()
            .flat_map(|model| &model.deployments)
            .map(tollgate_core::catalog::Deployment::key)
            .filter(|key| labels.contains(&key.label()))
            .collect();
        state
            .cooldowns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_down(down);
    }
}
