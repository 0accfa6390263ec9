//! `POST /v1/chat/completions`: OpenAI's Chat Completions on the same keys, limits and
//! credit as the Messages API. Authenticate, validate the few fields the gateway must read,
//! route, reserve, call the upstream (`metered`), settle. Errors take OpenAI's envelope
//! (the request-id middleware renders them for this path), and responses carry OpenAI's
//! `x-ratelimit-*` headers.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use tollgate_core::Timestamp;
use tollgate_core::attribution::Attribution;
use tollgate_core::pricing::input_tokens_bound;
use tollgate_core::ratelimit::BucketSnapshot;
use tollgate_service::{ApiCaller, RateLimitView};
use tollgate_upstream::Dialect;

use crate::GatewayState;
use crate::error::ApiError;
use crate::messages::{
    attribution_of, authenticate, check_max_tokens, forwarded_headers, read_body, resolve_model,
};
use crate::metered::{Admission, ClientWire, Operation, admit_and_run};
use crate::routing::{ClientRequest, largest_body_bytes, plan_attempts};
use tollgate_edge::RequestId;

/// The parts of a Chat Completions request the gateway must understand; the rest passes
/// through to OpenAI-compatible upstreams and is translated for Anthropic ones.
#[derive(Debug)]
pub(crate) struct ChatRequest {
    pub(crate) body: Map<String, Value>,
    pub(crate) model: String,
    /// `max_completion_tokens`, else `max_tokens`; `None` when the client set neither.
    pub(crate) max_tokens: Option<u64>,
    /// How many choices to generate: output is bounded by `n` times the limit.
    pub(crate) choices: u64,
    pub(crate) stream: bool,
    /// `stream_options.include_usage`: the client wants the final usage chunk.
    pub(crate) include_usage: bool,
    /// Image, audio and file parts: each may cost up to a media block's tokens.
    pub(crate) media_parts: usize,
    /// Image parts alone, for providers that price images per unit.
    pub(crate) images: usize,
}

pub(crate) fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).with_param(param)
}

/// An OpenAI request body: a JSON object, or OpenAI's 400.
pub(crate) fn json_object(bytes: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::invalid(format!(
            "We could not parse the JSON body of your request: {error}"
        ))
    })?;
    match body {
        Value::Object(body) => Ok(body),
        _ => Err(ApiError::invalid("The request body must be a JSON object.")),
    }
}

/// The `model` of an OpenAI request body, or OpenAI's 400 naming it.
pub(crate) fn requested_model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => Ok(model.clone()),
        None | Some(Value::Null) => Err(invalid("model", "you must provide a model parameter")),
        Some(_) => Err(invalid("model", "model must be a non-empty string")),
    }
}

impl ChatRequest {
    pub(crate) fn parse(bytes: &Bytes) -> Result<ChatRequest, ApiError> {
        let body = json_object(bytes)?;
        let model = requested_model(&body)?;
        let messages = match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => messages,
            Some(Value::Array(_)) => {
                return Err(invalid("messages", "messages must hold at least one message"));
            }
            None | Some(Value::Null) => {
                return Err(invalid("messages", "Missing required parameter: 'messages'."));
            }
            Some(_) => return Err(invalid("messages", "messages must be an array")),
        };
        let mut media_parts = 0;
        let mut images = 0;
        for (index, message) in messages.iter().enumerate() {
            match message.get("role").and_then(Value::as_str) {
                Some("system" | "developer" | "user" | "assistant" | "tool") => {}
                Some(other) => {
                    return Err(invalid(
                        &format!("messages[{index}].role"),
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'."
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        &format!("messages[{index}].role"),
                        format!("Missing required parameter: 'messages[{index}].role'."),
                    ));
                }
            }
            match message.get("content") {
                None | Some(Value::Null | Value::String(_)) => {}
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image_url") => {
                                media_parts += 1;
                                images += 1;
                            }
                            Some("input_audio" | "file") => media_parts += 1,
                            _ => {}
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        &format!("messages[{index}].content"),
                        "content must be a string or an array of content parts",
                    ));
                }
            }
        }
        let limit = |name: &str| -> Result<Option<u64>, ApiError> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => match value.as_u64() {
                    Some(limit) if limit >= 1 => Ok(Some(limit)),
                    _ => Err(invalid(name, format!("{name} must be an integer of at least 1"))),
                },
            }
        };
        let max_tokens = limit("max_completion_tokens")?.max(limit("max_tokens")?);
        let choices = limit("n")?.unwrap_or(1);
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err(invalid("stream", "stream must be a boolean")),
        };
        let include_usage = body
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(ChatRequest {
            model,
            max_tokens,
            choices,
            stream,
            include_usage,
            media_parts,
            images,
            body,
        })
    }
}

/// What a handler of OpenAI's surface reads first (`receive`).
pub(crate) struct Received {
    pub(crate) request_id: String,
    /// The caller behind the key, refused before the body is read.
    pub(crate) caller: ApiCaller,
    pub(crate) attribution: Attribution,
    /// The client's headers that go upstream as they came (`forwarded_headers`).
    pub(crate) client_headers: HeaderMap,
    pub(crate) bytes: Bytes,
}

/// Reads what a handler of OpenAI's surface needs first, authenticating before the body.
pub(crate) async fn receive(state: &GatewayState, request: Request) -> Result<Received, ApiError> {
    let request_id = RequestId::of(&request);
    let caller = authenticate(state, request.headers()).await?;
    let attribution = attribution_of(request.headers());
    let client_headers = forwarded_headers(request.headers());
    let bytes = read_body(state, request).await?;
    Ok(Received {
        request_id,
        caller,
        attribution,
        client_headers,
        bytes,
    })
}

pub(crate) async fn create_chat_completion(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = receive(&state, request).await?;
    let parsed = ChatRequest::parse(&received.bytes)?;
    let client = ClientWire::ChatCompletions {
        include_usage: parsed.include_usage,
    };
    serve_chat(&state, received, parsed, client).await
}

/// Routes, admits and runs a parsed Chat Completions request (`received.bytes` is its body),
/// answering in `client`'s shape with OpenAI's rate-limit headers: what Chat Completions and
/// the Responses API share.
pub(crate) async fn serve_chat(
    state: &GatewayState,
    received: Received,
    parsed: ChatRequest,
    client: ClientWire,
) -> Result<Response, ApiError> {
    let Received {
        request_id,
        caller,
        attribution,
        client_headers,
        bytes,
    } = received;
    let (request_id, caller, bytes) = (request_id.as_str(), &caller, &bytes);
    let max_tokens_param = match client {
        ClientWire::Responses(_) => "max_output_tokens",
        _ => "max_tokens",
    };
    let resolved = resolve_model(state, caller, &parsed.model)?;
    let has_anthropic_deployment = resolved.model.deployments.iter().any(|deployment| {
        state
            .providers
            .get(&deployment.provider)
            .is_some_and(|provider| provider.dialect() == Dialect::Anthropic)
    });
    if parsed.choices > 1 && has_anthropic_deployment {
        return Err(invalid(
            "n",
            "This model generates one choice per request; set n to 1.",
        ));
    }
    check_max_tokens(&resolved, parsed.max_tokens).map_err(|error| error.with_param(max_tokens_param))?;
    let images = u64::try_from(parsed.images).unwrap_or(u64::MAX);
    let priced_at = state.tollgate.now();
    let attempts = plan_attempts(
        state,
        &resolved,
        &ClientRequest {
            dialect: Dialect::OpenAi,
            body: &parsed.body,
            original: bytes,
            stream: parsed.stream,
            max_tokens: parsed.max_tokens,
            images,
            anthropic_version: None,
            anthropic_beta: None,
            client_headers,
            query: None,
            priced_at,
            operation: Operation::Generate,
            files: None,
        },
        request_id,
    )?;
    let input_bound = input_tokens_bound(largest_body_bytes(bytes, &attempts), parsed.media_parts);
    let output_limit = parsed.max_tokens.unwrap_or(resolved.model.default_max_tokens);
    let output_bound = output_limit.saturating_mul(parsed.choices);
    let (mut response, rate_limits) = admit_and_run(
        state,
        Admission {
            caller,
            request_id,
            model: resolved.model,
            attempts,
            body_bytes: bytes.len(),
            input_tokens_bound: input_bound,
            output_tokens_bound: output_bound,
            images,
            priced_at,
            // Chat Completions has no fast mode or data residency of Anthropic's.
            multipliers: Default::default(),
            web_searches_max: 0,
            stream: parsed.stream,
            client,
            requested_model: parsed.model.clone(),
            attribution,
            cacheable_prefixes: Default::default(),
            body: bytes,
        },
    )
    .await?;
    rate_limit_headers(&rate_limits, state.tollgate.now(), response.headers_mut());
    Ok(response)
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest scope;
/// resets are durations from now, as OpenAI writes them (`1s`, `6m0s`, `20ms`).
pub(crate) fn rate_limit_headers(view: &RateLimitView, now: Timestamp, headers: &mut HeaderMap) {
    let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    for (name, snapshot) in [("requests", view.requests), ("tokens", view.tokens())] {
        let BucketSnapshot {
            limit,
            remaining,
            reset_at_nanos,
        } = snapshot;
        let reset = duration_text(reset_at_nanos.saturating_sub(now_nanos).max(0));
        for (kind, value) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", reset),
        ] {
            if let (Ok(header_name), Ok(value)) = (
                header::HeaderName::try_from(format!("x-ratelimit-{kind}-{name}")),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(header_name, value);
            }
        }
    }
}

/// A duration in OpenAI's header style: milliseconds below a second, else whole seconds
/// (rounded up) with minutes when there are any.
pub(crate) fn duration_text(nanos: i64) -> String {
    if nanos < 1_000_000_000 {
        return format!("{}ms", (nanos + 999_999) / 1_000_000);
    }
    let seconds = (nanos + 999_999_999) / 1_000_000_000;
    if seconds < 60 {
        format!("{seconds}s")
    } else {
        format!("{}m{}s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests;
