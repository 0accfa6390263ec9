//! The parts of a Messages request the gateway must understand; everything else in the
//! body passes through to the upstream untouched.

use bytes::Bytes;
use serde_json::Value;
use tollgate_core::pricing::Multipliers;

use crate::error::ApiError;

/// A validated Messages (or count_tokens) request.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub(crate) body: Value,
    pub(crate) model: String,
    /// `None` for count_tokens, which takes no `max_tokens`.
    pub(crate) max_tokens: Option<u64>,
    pub(crate) stream: bool,
    /// Image and document blocks anywhere in the messages or system prompt.
    pub(crate) media_blocks: usize,
    /// Image blocks alone, for providers that price images per unit.
    pub(crate) images: usize,
    /// What the request asks for that bills a multiple: fast mode (`speed: "fast"`) and
    /// data residency (an `inference_geo` other than `"global"`). Values of other types
    /// are left for the upstream to refuse.
    pub(crate) multipliers: Multipliers,
    /// The web searches the request's web search tools allow (`max_uses`), reserved for.
    /// A web search tool without `max_uses` adds nothing: its searches are not bounded.
    pub(crate) web_searches_max: u64,
}

/// Which endpoint is parsing: count_tokens takes no `max_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Messages,
    CountTokens,
}

impl MessagesRequest {
    pub(crate) fn parse(bytes: &Bytes, endpoint: Endpoint) -> Result<MessagesRequest, ApiError> {
        let body: Value = serde_json::from_slice(bytes)
            .map_err(|error| ApiError::invalid(format!("The request body is not valid JSON: {error}")))?;
        let object = body
            .as_object()
            .ok_or_else(|| ApiError::invalid("The request body must be a JSON object."))?;
        let model = match object.get("model") {
            None | Some(Value::Null) => return Err(ApiError::invalid("model: Field required")),
            Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
            Some(_) => return Err(ApiError::invalid("model: Input should be a non-empty string")),
        };
        let max_tokens = match (endpoint, object.get("max_tokens")) {
            (Endpoint::CountTokens, _) => None,
            (Endpoint::Messages, None | Some(Value::Null)) => {
                return Err(ApiError::invalid("max_tokens: Field required"));
            }
            (Endpoint::Messages, Some(value)) => match value.as_u64() {
                Some(max_tokens) if max_tokens >= 1 => Some(max_tokens),
                _ => {
                    return Err(ApiError::invalid(
                        "max_tokens: Input should be an integer greater than or equal to 1",
                    ));
                }
            },
        };
        let messages = match object.get("messages") {
            None | Some(Value::Null) => return Err(ApiError::invalid("messages: Field required")),
            Some(Value::Array(messages)) => messages,
            Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
        };
        if messages.is_empty() {
            return Err(ApiError::invalid("messages: at least one message is required"));
        }
        for (index, message) in messages.iter().enumerate() {
            check_message(index, message)?;
        }
        let stream = match object.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => return Err(ApiError::invalid("stream: Input should be a valid boolean")),
        };
        let media_blocks = count_media_blocks(messages) + object.get("system").map_or(0, count_media_in);
        let images = messages
            .iter()
            .filter_map(|message| message.get("content"))
            .map(count_images_in)
            .sum();
        let multipliers = Multipliers {
            batch: false,
            fast: object.get("speed").and_then(Value::as_str) == Some("fast"),
            geo: object
                .get("inference_geo")
                .and_then(Value::as_str)
                .is_some_and(Multipliers::is_residency_geo),
        };
        let web_searches_max = object
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|tool| {
                tool.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| kind.starts_with("web_search"))
            })
            .filter_map(|tool| tool.get("max_uses").and_then(Value::as_u64))
            .fold(0_u64, u64::saturating_add);
        Ok(MessagesRequest {
            model,
            max_tokens,
            stream,
            media_blocks,
            images,
            multipliers,
            web_searches_max,
            body,
        })
    }

    /// The body to send upstream: the client's bytes when the model id stays the same, so
    /// the common case costs no re-serialisation.
    pub(crate) fn upstream_body(&self, original: Bytes, upstream_model: &str) -> Result<Bytes, ApiError> {
        if upstream_model == self.model {
            return Ok(original);
        }
        let mut body = self.body.clone();
        if let Some(object) = body.as_object_mut() {
            object.insert("model".to_owned(), Value::String(upstream_model.to_owned()));
        }
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(ApiError::internal)
    }
}

/// The shape of one message, as far as billing needs it: a role the API knows and content
/// that is a string or a list of blocks (objects with a `type`), so that no request of a
/// shape the API does not define reaches a deployment that would answer (and bill) it
/// anyway. `system` is a role since `mid-conversation-system-2026-04-07`; the beta header
/// travels with the request, and the upstream decides. What a block holds is not checked:
/// block types are an open list.
fn check_message(index: usize, message: &Value) -> Result<(), ApiError> {
    match message.get("role").and_then(Value::as_str) {
        Some("user" | "assistant" | "system") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "messages.{index}.role: Input should be 'user', 'assistant' or 'system', not '{other}'"
            )));
        }
        None => {
            return Err(ApiError::invalid(format!(
                "messages.{index}.role: Field required"
            )));
        }
    }
    match message.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (block_index, block) in blocks.iter().enumerate() {
                let Some(block) = block.as_object() else {
                    return Err(ApiError::invalid(format!(
                        "messages.{index}.content.{block_index}: Input should be a valid dictionary or object to extract fields from"
                    )));
                };
                if !block.get("type").is_some_and(Value::is_string) {
                    return Err(ApiError::invalid(format!(
                        "messages.{index}.content.{block_index}.type: Field required"
                    )));
                }
            }
            Ok(())
        }
        None | Some(Value::Null) => Err(ApiError::invalid(format!(
            "messages.{index}.content: Field required"
        ))),
        Some(_) => Err(ApiError::invalid(format!(
            "messages.{index}.content: Input should be a string or a list of content blocks"
        ))),
    }
}

fn count_media_blocks(messages: &[Value]) -> usize {
    messages
        .iter()
        .filter_map(|message| message.get("content"))
        .map(count_media_in)
        .sum()
}

/// Counts `image` and `document` blocks, including those nested in tool results.
fn count_media_in(content: &Value) -> usize {
    match content {
        Value::Array(blocks) => blocks.iter().map(count_media_in).sum(),
        Value::Object(block) => {
            let own = match block.get("type").and_then(Value::as_str) {
                Some("image" | "document") => 1,
                _ => 0,
            };
            own + block.get("content").map_or(0, count_media_in)
        }
        _ => 0,
    }
}

/// Counts `image` blocks, including those nested in tool results.
fn count_images_in(content: &Value) -> usize {
    match content {
        Value::Array(blocks) => blocks.iter().map(count_images_in).sum(),
        Value::Object(block) => {
            usize::from(block.get("type").and_then(Value::as_str) == Some("image"))
                + block.get("content").map_or(0, count_images_in)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
