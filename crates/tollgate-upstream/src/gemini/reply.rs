//! Gemini's answers as Anthropic's: a `GenerateContentResponse` as a Messages reply, and a
//! `streamGenerateContent` stream (each chunk a `GenerateContentResponse` of its own, the
//! usage complete on the last) as the Messages event sequence, translated chunk by chunk
//! without buffering. Text parts become text blocks, thought parts thinking blocks,
//! `functionCall` parts `tool_use` blocks, `finishReason` the `stop_reason`, and
//! `usageMetadata` the usage (`gemini::parse_usage`). A stream that ends before a
//! `finishReason` is cut, and ends in a `Protocol` error; an error chunk becomes Anthropic's
//! `error` event.

use std::collections::VecDeque;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_core::usage::TokenUsage;

use crate::error::anthropic_error_type;
use crate::gemini::{parse_usage, signed_id};
use crate::sse::SseEvent;
use crate::{EventStream, UpstreamError};

/// A whole `generateContent` reply as a Messages reply, with its usage. A reply without
/// `usageMetadata` cannot be billed, and is a `Protocol` error.
pub(crate) fn message(reply: &Value, model: &str) -> Result<(Value, TokenUsage), UpstreamError> {
    let Some(usage_metadata) = reply.get("usageMetadata").filter(|usage| usage.is_object()) else {
        return Err(UpstreamError::Protocol(
            "generateContent reply has no usageMetadata".to_owned(),
        ));
    };
    let usage = parse_usage(usage_metadata);
    let response_id = response_id(reply);
    let mut content: Vec<Value> = Vec::new();
    let mut tool_calls = 0_usize;
    for part in parts(reply) {
        match part_kind(part) {
            Some(PartKind::Text(text)) => match content.last_mut() {
                Some(last) if last["type"] == "text" => {
                    let joined = format!("{}{text}", last["text"].as_str().unwrap_or_default());
                    last["text"] = json!(joined);
                }
                _ => content.push(json!({"type": "text", "text": text})),
            },
            Some(PartKind::Thought(text)) => match content.last_mut() {
                Some(last) if last["type"] == "thinking" => {
                    let joined = format!("{}{text}", last["thinking"].as_str().unwrap_or_default());
                    last["thinking"] = json!(joined);
                }
                _ => content.push(json!({"type": "thinking", "thinking": text, "signature": ""})),
            },
            Some(PartKind::FunctionCall {
                id,
                name,
                args,
                signature,
            }) => {
                content.push(json!({
                    "type": "tool_use",
                    "id": tool_use_id(id, signature, &response_id, tool_calls),
                    "name": name,
                    "input": args,
                }));
                tool_calls += 1;
            }
            None => {}
        }
    }
    let message = json!({
        "id": format!("msg_{response_id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish_reason(reply), blocked(reply), tool_calls > 0),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    });
    Ok((message, usage))
}

/// A `streamGenerateContent?alt=sse` stream as Anthropic's events, as they arrive.
pub(crate) fn message_events(chunks: EventStream, model: String) -> EventStream {
    let state = (chunks, StreamTranslator::new(model), VecDeque::new(), false);
    let events = futures_util::stream::unfold(
        state,
        |(mut chunks, mut translator, mut ready, mut ended)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok(event), (chunks, translator, ready, ended)));
                }
                if ended {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => match translator.chunk(&chunk) {
                        Ok(Step::Events(events)) => ready.extend(events),
                        Ok(Step::Failed(error_event)) => {
                            ready.push_back(error_event);
                            ended = true;
                        }
                        Err(error) => return Some((Err(error), (chunks, translator, ready, true))),
                    },
                    Some(Err(error)) => return Some((Err(error), (chunks, translator, ready, true))),
                    None => {
                        ended = true;
                        match translator.finish() {
                            Ok(events) => ready.extend(events),
                            Err(error) => return Some((Err(error), (chunks, translator, ready, true))),
                        }
                    }
                }
            }
        },
    );
    Box::pin(events)
}

/// What one chunk of a stream made.
pub(crate) enum Step {
    Events(Vec<SseEvent>),
    /// The chunk was Gemini's error: Anthropic's `error` event, the stream's last.
    Failed(SseEvent),
}

/// The block a stream has open, which the next part may continue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
}

/// Turns a stream's chunks into Anthropic's events: `message_start` on the first chunk,
/// a block per run of text or thought parts and per function call, and at the end the
/// `message_delta` with the stop reason and the last chunk's usage, then `message_stop`.
pub(crate) struct StreamTranslator {
    model: String,
    response_id: Option<String>,
    open_block: Option<OpenBlock>,
    next_index: u64,
    tool_calls: usize,
    finish_reason: Option<String>,
    blocked: bool,
    usage: Option<TokenUsage>,
}

impl StreamTranslator {
    pub(crate) fn new(model: String) -> StreamTranslator {
        StreamTranslator {
            model,
            response_id: None,
            open_block: None,
            next_index: 0,
            tool_calls: 0,
            finish_reason: None,
            blocked: false,
            usage: None,
        }
    }

    /// The events of one chunk. Data that is not JSON is a `Protocol` error.
    pub(crate) fn chunk(&mut self, chunk: &SseEvent) -> Result<Step, UpstreamError> {
        let data: Value = serde_json::from_str(&chunk.data)
            .map_err(|error| UpstreamError::Protocol(format!("stream chunk is not JSON: {error}")))?;
        if let Some(error) = data.get("error").filter(|error| error.is_object()) {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok())
                .unwrap_or(500);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The model failed while streaming.");
            let event = json!({
                "type": "error",
                "error": {"type": anthropic_error_type(status), "message": message},
            });
            return Ok(Step::Failed(anthropic_event(event)));
        }
        if let Some(usage) = data.get("usageMetadata").filter(|usage| usage.is_object()) {
            self.usage = Some(parse_usage(usage));
        }
        let mut events = Vec::new();
        if self.response_id.is_none() {
            let response_id = response_id(&data);
            let usage = self.usage.unwrap_or_default();
            events.push(anthropic_event(json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_{response_id}"),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": anthropic_usage(&TokenUsage {
                        output_tokens: 0,
                        ..usage
                    }),
                },
            })));
            self.response_id = Some(response_id);
        }
        for part in parts(&data) {
            match part_kind(part) {
                Some(PartKind::Text(text)) => self.delta(OpenBlock::Text, text, &mut events),
                Some(PartKind::Thought(text)) => self.delta(OpenBlock::Thinking, text, &mut events),
                Some(PartKind::FunctionCall {
                    id,
                    name,
                    args,
                    signature,
                }) => {
                    self.close_block(&mut events);
                    let index = self.next_index;
                    self.next_index += 1;
                    let response_id = self.response_id.as_deref().unwrap_or_default();
                    let id = tool_use_id(id, signature, response_id, self.tool_calls);
                    self.tool_calls += 1;
                    events.push(anthropic_event(json!({
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                    })));
                    events.push(anthropic_event(json!({
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args.to_string()},
                    })));
                    events.push(anthropic_event(
                        json!({"type": "content_block_stop", "index": index}),
                    ));
                }
                None => {}
            }
        }
        if let Some(reason) = finish_reason(&data) {
            self.finish_reason = Some(reason.to_owned());
        }
        self.blocked |= blocked(&data);
        Ok(Step::Events(events))
    }

    /// The closing events, once the stream has ended. A stream that never said why it
    /// finished was cut.
    pub(crate) fn finish(&mut self) -> Result<Vec<SseEvent>, UpstreamError> {
        if self.response_id.is_none() || (self.finish_reason.is_none() && !self.blocked) {
            return Err(UpstreamError::Protocol(
                "the stream ended before a finishReason".to_owned(),
            ));
        }
        let mut events = Vec::new();
        self.close_block(&mut events);
        let stop_reason = stop_reason(self.finish_reason.as_deref(), self.blocked, self.tool_calls > 0);
        events.push(anthropic_event(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": anthropic_usage(&self.usage.unwrap_or_default()),
        })));
        events.push(anthropic_event(json!({"type": "message_stop"})));
        Ok(events)
    }

    /// Text or thinking for the open block of that kind, opening it (and closing another)
    /// first when needed.
    fn delta(&mut self, kind: OpenBlock, text: &str, events: &mut Vec<SseEvent>) {
        if text.is_empty() {
            return;
        }
        if self.open_block != Some(kind) {
            self.close_block(events);
            let block = match kind {
                OpenBlock::Text => json!({"type": "text", "text": ""}),
                OpenBlock::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            };
            events.push(anthropic_event(json!({
                "type": "content_block_start",
                "index": self.next_index,
                "content_block": block,
            })));
            self.open_block = Some(kind);
        }
        let delta = match kind {
            OpenBlock::Text => json!({"type": "text_delta", "text": text}),
            OpenBlock::Thinking => json!({"type": "thinking_delta", "thinking": text}),
        };
        events.push(anthropic_event(json!({
            "type": "content_block_delta",
            "index": self.next_index,
            "delta": delta,
        })));
    }

    fn close_block(&mut self, events: &mut Vec<SseEvent>) {
        if self.open_block.take().is_some() {
            events.push(anthropic_event(
                json!({"type": "content_block_stop", "index": self.next_index}),
            ));
            self.next_index += 1;
        }
    }
}

enum PartKind<'a> {
    Text(&'a str),
    Thought(&'a str),
    FunctionCall {
        id: Option<String>,
        name: &'a str,
        args: Value,
        /// The part's `thoughtSignature`, carried in the tool-use id (`signed_id`).
        signature: Option<&'a str>,
    },
}

/// What a part says that a Messages reply can carry; `None` for the rest (thought
/// signatures alone, code execution, inline media).
fn part_kind(part: &Value) -> Option<PartKind<'_>> {
    if let Some(call) = part.get("functionCall") {
        return Some(PartKind::FunctionCall {
            signature: part.get("thoughtSignature").and_then(Value::as_str),
            id: call.get("id").and_then(Value::as_str).map(str::to_owned),
            name: call.get("name").and_then(Value::as_str).unwrap_or_default(),
            args: call
                .get("args")
                .filter(|args| args.is_object())
                .cloned()
                .unwrap_or_else(|| json!({})),
        });
    }
    let text = part.get("text").and_then(Value::as_str)?;
    if part.get("thought") == Some(&Value::Bool(true)) {
        Some(PartKind::Thought(text))
    } else {
        Some(PartKind::Text(text))
    }
}

/// The first candidate's parts: tollgate asks for one candidate.
fn parts(reply: &Value) -> &[Value] {
    reply
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn finish_reason(reply: &Value) -> Option<&str> {
    reply
        .pointer("/candidates/0/finishReason")
        .and_then(Value::as_str)
}

/// Whether the prompt itself was blocked (`promptFeedback.blockReason`): no candidate.
fn blocked(reply: &Value) -> bool {
    reply
        .pointer("/promptFeedback/blockReason")
        .is_some_and(|reason| !reason.is_null())
}

/// A `finishReason` as a `stop_reason`. A natural stop with function calls is `tool_use`;
/// a stop sequence reads as `STOP` too, and so as `end_turn`.
pub(crate) fn stop_reason(finish_reason: Option<&str>, blocked: bool, called_tools: bool) -> &'static str {
    if blocked {
        return "refusal";
    }
    match finish_reason {
        Some("MAX_TOKENS") => "max_tokens",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
            | "LANGUAGE",
        ) => "refusal",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// The reply's `responseId`, kept to the characters Anthropic's ids use.
fn response_id(reply: &Value) -> String {
    let id: String = reply
        .get("responseId")
        .and_then(Value::as_str)
        .unwrap_or("gemini")
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '-' {
                character
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() { "gemini".to_owned() } else { id }
}

/// A function call's tool-use id: the id Gemini gave it, or else one unique within its reply
/// (`call_index`), carrying the call's thought signature (`signed_id`).
fn tool_use_id(id: Option<String>, signature: Option<&str>, response_id: &str, call_index: usize) -> String {
    let id = id.unwrap_or_else(|| format!("toolu_{response_id}_{call_index}"));
    signed_id(&id, signature)
}

/// Our token kinds as the Messages `usage` the gateway meters and the client reads.
fn anthropic_usage(usage: &TokenUsage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    })
}

/// An Anthropic event named by its own `type`.
fn anthropic_event(data: Value) -> SseEvent {
    SseEvent {
        event: data["type"].as_str().unwrap_or("message").to_owned(),
        data: data.to_string(),
    }
}
