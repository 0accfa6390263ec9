//! `POST /v1/embeddings`: OpenAI's Embeddings on the same keys, limits and credit as the
//! other surfaces, for embeddings models only (`Model::embeddings`) on providers that embed
//! (`openai`; `gemini`, whose client translates; and the simulated model offline). The body
//! goes upstream untouched but for the model; the reply comes back as the upstream sent it.
//! Billed per input token: the reservation is bounded by the body's length
//! (`input_tokens_bound`, as every surface's), and the settlement is the upstream's
//! `usage.prompt_tokens` at the model's input price, through the same metered call as a chat
//! completion. Errors take OpenAI's envelope.

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;
use tollgate_core::pricing::input_tokens_bound;
use tollgate_upstream::Dialect;

use crate::GatewayState;
use crate::chat::{Received, invalid, json_object, rate_limit_headers, receive, requested_model};
use crate::error::ApiError;
use crate::messages::resolve_model;
use crate::metered::{Admission, ClientWire, Operation, admit_and_run};
use crate::routing::{ClientRequest, largest_body_bytes, plan_attempts};

pub(crate) async fn create_embedding(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let Received {
        request_id,
        caller,
        attribution,
        client_headers,
        bytes,
    } = receive(&state, request).await?;
    let body = json_object(&bytes)?;
    let model = requested_model(&body)?;
    // The rest of the input's shape (strings, token ids) is the upstream's to check.
    match body.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        None | Some(Value::Null) => {
            return Err(invalid("input", "Missing required parameter: 'input'."));
        }
        Some(_) => {
            return Err(invalid(
                "input",
                "'input' must be a string or a non-empty array of strings or token ids.",
            ));
        }
    }
    let resolved = resolve_model(&state, &caller, &model)?;
    let priced_at = state.tollgate.now();
    let attempts = plan_attempts(
        &state,
        &resolved,
        &ClientRequest {
            dialect: Dialect::OpenAi,
            body: &body,
            original: &bytes,
            stream: false,
            max_tokens: None,
            images: 0,
            anthropic_version: None,
            anthropic_beta: None,
            client_headers,
            query: None,
            priced_at,
            operation: Operation::Embed,
            files: None,
        },
        &request_id,
    )?;
    let (mut response, rate_limits) = admit_and_run(
        &state,
        Admission {
            caller: &caller,
            request_id: &request_id,
            model: resolved.model,
            input_tokens_bound: input_tokens_bound(largest_body_bytes(&bytes, &attempts), 0),
            attempts,
            body_bytes: bytes.len(),
            // Embeddings generate nothing: the reservation is the input's alone.
            output_tokens_bound: 0,
            images: 0,
            priced_at,
            multipliers: Default::default(),
            web_searches_max: 0,
            stream: false,
            client: ClientWire::Embeddings,
            requested_model: model,
            attribution,
            cacheable_prefixes: Default::default(),
            body: &bytes,
        },
    )
    .await?;
    rate_limit_headers(&rate_limits, state.tollgate.now(), response.headers_mut());
    Ok(response)
}
