//! Anthropic wire shapes the fake emits: the non-streaming message, the SSE event sequence,
//! error envelopes and the token count. It only serializes; choosing what to send is the
//! handlers' job.
//!
//! Shapes are typed structs borrowing from the reply rather than `serde_json::Value` trees,
//! because they are built on every benchmark request.

#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde::Serialize;

/// Most `content_block_delta` events a successful stream is split into.
const DELTAS_MAX: usize = 10;

/// One answer, with `output_tokens` already capped by the request's `max_tokens`.
#[derive(Debug)]
pub(crate) struct MessageReply<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) model: &'a str,
    pub(crate) text: &'a str,
    pub(crate) usage: Usage,
    pub(crate) stop_reason: &'static str,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Usage {
    pub(crate) input_tokens: u64,
    pub(crate) cache_creation_input_tokens: u64,
    pub(crate) cache_read_input_tokens: u64,
    pub(crate) output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_tool_use: Option<ServerToolUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) speed: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) inference_geo: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct ServerToolUse {
    pub(crate) web_search_requests: u64,
}

/// The non-streaming `/v1/messages` body.
pub(crate) fn message_json(reply: &MessageReply<'_>) -> Bytes {
    to_json_bytes(&Message {
        id: reply.message_id,
        kind: "message",
        role: "assistant",
        model: reply.model,
        content: &[ContentBlock::Text { text: reply.text }],
        stop_reason: Some(reply.stop_reason),
        stop_sequence: None,
        usage: reply.usage,
    })
}

/// The full SSE sequence of a successful stream, one encoded event per element.
pub(crate) fn stream_events(reply: &MessageReply<'_>) -> Vec<Bytes> {
    let output_tokens = reply.usage.output_tokens;
    let pieces = split_text(reply.text, delta_count(output_tokens));
    let mut events = stream_head(reply, pieces.len() + 3);
    events.extend(pieces.into_iter().map(text_delta_event));
    events.push(sse_event(&StreamEvent::ContentBlockStop { index: 0 }));
    events.push(sse_event(&StreamEvent::MessageDelta {
        delta: MessageDeltaBody {
            stop_reason: reply.stop_reason,
            stop_sequence: None,
        },
        usage: OutputUsage { output_tokens },
    }));
    events.push(sse_event(&StreamEvent::MessageStop));
    events
}

/// A stream that fails after `deltas` deltas with an `overloaded_error` event.
pub(crate) fn failing_stream_events(reply: &MessageReply<'_>, deltas: usize) -> Vec<Bytes> {
    let pieces = split_text(reply.text, deltas);
    let mut events = stream_head(reply, pieces.len() + 1);
    events.extend(pieces.into_iter().map(text_delta_event));
    events.push(sse_event(&StreamEvent::Error {
        error: ErrorBody {
            kind: "overloaded_error",
            message: "Overloaded",
        },
    }));
    events
}

/// Index in `stream_events` of the first event after the head and `deltas` deltas: where a
/// stall pauses the stream.
pub(crate) fn stall_event_index(reply: &MessageReply<'_>, deltas: usize) -> usize {
    STREAM_HEAD_EVENTS + deltas.min(delta_count(reply.usage.output_tokens))
}

/// How many deltas a successful stream with `output_tokens` has: one per token, at most
/// `DELTAS_MAX`, and at least one so the text always arrives.
pub(crate) fn delta_count(output_tokens: u64) -> usize {
    usize::try_from(output_tokens)
        .unwrap_or(usize::MAX)
        .clamp(1, DELTAS_MAX)
}

/// `{"type":"error","error":{...},"request_id":...}` for an HTTP error status.
pub(crate) fn error_envelope_json(status: u16, request_id: &str) -> Bytes {
    let (kind, message) = error_kind(status);
    error_envelope_with_message_json(kind, message, request_id)
}

pub(crate) fn error_envelope_with_message_json(kind: &str, message: &str, request_id: &str) -> Bytes {
    to_json_bytes(&ErrorEnvelope {
        kind: "error",
        error: ErrorBody { kind, message },
        request_id,
    })
}

/// The Anthropic error type and a representative message for an HTTP status (contract §6).
pub(crate) fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        401 => ("authentication_error", "invalid x-api-key"),
        402 => ("billing_error", "Your credit card was declined."),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => ("not_found_error", "The requested resource could not be found."),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit.",
        ),
        500 => ("api_error", "Internal server error"),
        504 => ("timeout_error", "Request timed out"),
        529 => ("overloaded_error", "Overloaded"),
        // 400 and every 4xx the contract doesn't name.
        400..=499 => ("invalid_request_error", "Invalid request."),
        _ => ("api_error", "Internal server error"),
    }
}

/// The `/v1/chat/completions` body for a reply: OpenAI's shape, with usage.
pub(crate) fn chat_completion_json(reply: &MessageReply<'_>) -> Bytes {
    let usage = &reply.usage;
    to_json_bytes(&serde_json::json!({
        "id": chat_id(reply.message_id),
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text, "refusal": null},
            "logprobs": null,
            "finish_reason": chat_finish_reason(reply.stop_reason),
        }],
        "usage": chat_usage(usage),
    }))
}

/// The chunks of a successful Chat Completions stream, ending in `data: [DONE]`; the usage
/// chunk is sent only when the request asked for it (`include_usage`).
pub(crate) fn chat_stream_events(reply: &MessageReply<'_>, include_usage: bool) -> Vec<Bytes> {
    let pieces = split_text(reply.text, delta_count(reply.usage.output_tokens));
    let mut events = vec![chat_chunk(
        reply,
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )];
    events.extend(
        pieces
            .into_iter()
            .map(|piece| chat_chunk(reply, serde_json::json!({ "content": piece }), None)),
    );
    events.push(chat_chunk(
        reply,
        serde_json::json!({}),
        Some(chat_finish_reason(reply.stop_reason)),
    ));
    if include_usage {
        events.push(data_event(&serde_json::json!({
            "id": chat_id(reply.message_id),
            "object": "chat.completion.chunk",
            "created": 1_767_225_600,
            "model": reply.model,
            "choices": [],
            "usage": chat_usage(&reply.usage),
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A Chat Completions stream that fails after `deltas` deltas with an error chunk.
pub(crate) fn failing_chat_stream_events(reply: &MessageReply<'_>, deltas: usize) -> Vec<Bytes> {
    let pieces = split_text(reply.text, deltas);
    let mut events = vec![chat_chunk(
        reply,
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )];
    events.extend(
        pieces
            .into_iter()
            .map(|piece| chat_chunk(reply, serde_json::json!({ "content": piece }), None)),
    );
    events.push(data_event(&serde_json::json!({
        "error": {"message": "The server is overloaded.", "type": "server_error", "param": null, "code": null}
    })));
    events
}

/// OpenAI's `{"error":{…}}` envelope for an HTTP error status.
pub(crate) fn openai_error_json(status: u16) -> Bytes {
    let (kind, message) = error_kind(status);
    let kind = match kind {
        "invalid_request_error" | "not_found_error" | "request_too_large" => "invalid_request_error",
        "rate_limit_error" => "requests",
        "authentication_error" => "invalid_request_error",
        _ => "server_error",
    };
    to_json_bytes(&serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    }))
}

fn chat_id(message_id: &str) -> String {
    format!("chatcmpl-{}", message_id.trim_start_matches("msg_"))
}

fn chat_finish_reason(stop_reason: &str) -> &'static str {
    if stop_reason == "max_tokens" {
        "length"
    } else {
        "stop"
    }
}

fn chat_usage(usage: &Usage) -> serde_json::Value {
    let prompt_tokens = usage.input_tokens + usage.cache_read_input_tokens;
    serde_json::json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
    })
}

fn chat_chunk(reply: &MessageReply<'_>, delta: serde_json::Value, finish_reason: Option<&str>) -> Bytes {
    data_event(&serde_json::json!({
        "id": chat_id(reply.message_id),
        "object": "chat.completion.chunk",
        "created": 1_767_225_600,
        "model": reply.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    }))
}

fn data_event(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The `/v1/messages/count_tokens` body.
pub(crate) fn count_tokens_json(input_tokens: u64) -> Bytes {
    to_json_bytes(&CountTokens { input_tokens })
}

/// Splits `text` into exactly `pieces` runs of characters of near-equal length, in order;
/// runs are empty when the text has fewer characters than `pieces`.
pub(crate) fn split_text(text: &str, pieces: usize) -> Vec<&str> {
    let char_count = text.chars().count();
    // Byte offset of every char boundary, including the end, so piece `i` can be sliced
    // from char boundaries without re-walking the text.
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(offset, _)| offset)
        .chain(std::iter::once(text.len()))
        .collect();
    (0..pieces)
        .map(|piece| {
            let start_char = piece * char_count / pieces;
            let end_char = (piece + 1) * char_count / pieces;
            &text[boundaries[start_char]..boundaries[end_char]]
        })
        .collect()
}

/// `message_start`, `content_block_start` and `ping`.
const STREAM_HEAD_EVENTS: usize = 3;

/// `later_events` only sizes the vector: how many events the caller appends after the head.
fn stream_head(reply: &MessageReply<'_>, later_events: usize) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(STREAM_HEAD_EVENTS + later_events);
    events.push(sse_event(&StreamEvent::MessageStart {
        message: Message {
            id: reply.message_id,
            kind: "message",
            role: "assistant",
            model: reply.model,
            content: &[],
            stop_reason: None,
            stop_sequence: None,
            // Anthropic reports input and cache counts up front and a token or so of output;
            // the real output count arrives in `message_delta`.
            usage: Usage {
                output_tokens: reply.usage.output_tokens.min(1),
                ..reply.usage
            },
        },
    }));
    events.push(sse_event(&StreamEvent::ContentBlockStart {
        index: 0,
        content_block: ContentBlock::Text { text: "" },
    }));
    events.push(sse_event(&StreamEvent::Ping));
    events
}

fn text_delta_event(text: &str) -> Bytes {
    sse_event(&StreamEvent::ContentBlockDelta {
        index: 0,
        delta: Delta::TextDelta { text },
    })
}

fn sse_event(event: &StreamEvent<'_>) -> Bytes {
    let mut buffer = Vec::with_capacity(160);
    buffer.extend_from_slice(b"event: ");
    buffer.extend_from_slice(event.name().as_bytes());
    buffer.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut buffer, event).expect("serializing a plain struct into a Vec cannot fail");
    buffer.extend_from_slice(b"\n\n");
    Bytes::from(buffer)
}

fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("serializing a plain struct into a Vec cannot fail"))
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [ContentBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text { text: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart {
        message: Message<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: OutputUsage,
    },
    MessageStop,
    Error {
        error: ErrorBody<'a>,
    },
}

impl StreamEvent<'_> {
    /// The SSE `event:` name, which Anthropic keeps equal to the JSON `type`.
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct CountTokens {
    input_tokens: u64,
}
