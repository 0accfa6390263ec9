//! Streams across dialects, one upstream event in, zero or more client events out.
//! `ToChatChunks` turns Anthropic's event sequence (`message_start`, content blocks,
//! `message_delta`, `message_stop`) into `chat.completion.chunk`s ending in `[DONE]`;
//! `ToMessageEvents` turns chunks into Anthropic's sequence, opening and closing a content
//! block whenever the chunks switch between text and a tool call. Both end with the
//! client's terminal event (`[DONE]`, `message_stop`), which the relay holds back until the
//! request is settled.

use std::collections::HashMap;

use serde_json::{Value, json};
use tollgate_core::usage::TokenUsage;
use tollgate_upstream::openai::is_done;
use tollgate_upstream::sse::{SseEvent, UsageAccumulator};

use crate::translate::{
    anthropic_error_type, anthropic_usage, chat_completion_id, finish_reason, message_id, openai_error_type,
    openai_usage, stop_reason,
};

/// The `data: [DONE]` that ends a Chat Completions stream.
pub(crate) fn done_event() -> SseEvent {
    SseEvent {
        event: String::new(),
        data: "[DONE]".to_owned(),
    }
}

fn data_event(data: &Value) -> SseEvent {
    SseEvent {
        event: String::new(),
        data: data.to_string(),
    }
}

fn named_event(name: &str, data: &Value) -> SseEvent {
    SseEvent {
        event: name.to_owned(),
        data: data.to_string(),
    }
}

/// Anthropic events → chat completion chunks.
pub(crate) struct ToChatChunks {
    id: String,
    model: String,
    created_unix_seconds: i64,
    include_usage: bool,
    usage: UsageAccumulator,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: HashMap<u64, u64>,
}

impl ToChatChunks {
    pub(crate) fn new(model: &str, created_unix_seconds: i64, include_usage: bool) -> ToChatChunks {
        ToChatChunks {
            id: "chatcmpl-tollgate".to_owned(),
            model: model.to_owned(),
            created_unix_seconds,
            include_usage,
            usage: UsageAccumulator::default(),
            tool_calls: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created_unix_seconds,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        data_event(&chunk)
    }

    pub(crate) fn translate(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        self.usage.observe(event);
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return Vec::new();
        };
        let kind = match event.event.as_str() {
            "" | "message" => data.get("type").and_then(Value::as_str).unwrap_or_default(),
            name => name,
        };
        match kind {
            "message_start" => {
                if let Some(id) = data.pointer("/message/id").and_then(Value::as_str) {
                    self.id = chat_completion_id(id);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool_index = u64::try_from(self.tool_calls.len()).unwrap_or(u64::MAX);
                        let block_index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool_calls.insert(block_index, tool_index);
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "id": block.get("id").cloned().unwrap_or(json!("")),
                                "type": "function",
                                "function": {"name": block.get("name").cloned().unwrap_or(json!("")), "arguments": ""},
                            }]}),
                            None,
                        )]
                    }
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(text) if !text.is_empty() => vec![self.chunk(json!({ "content": text }), None)],
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        vec![self.chunk(
                            json!({"content": delta.get("text").cloned().unwrap_or(json!(""))}),
                            None,
                        )]
                    }
                    Some("thinking_delta") => vec![self.chunk(
                        json!({"reasoning_content": delta.get("thinking").cloned().unwrap_or(json!(""))}),
                        None,
                    )],
                    Some("input_json_delta") => {
                        let block_index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let tool_index = self.tool_calls.get(&block_index).copied().unwrap_or(0);
                        vec![self.chunk(
                            json!({"tool_calls": [{
                                "index": tool_index,
                                "function": {"arguments": delta.get("partial_json").cloned().unwrap_or(json!(""))},
                            }]}),
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => match data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                Some(reason) => vec![self.chunk(json!({}), Some(finish_reason(reason)))],
                None => Vec::new(),
            },
            "message_stop" => {
                let mut events = Vec::new();
                if self.include_usage {
                    events.push(data_event(&json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created_unix_seconds,
                        "model": self.model,
                        "choices": [],
                        "usage": openai_usage(&self.usage.usage()),
                    })));
                }
                events.push(done_event());
                events
            }
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let anthropic_type = error.get("type").and_then(Value::as_str).unwrap_or("api_error");
                vec![data_event(&json!({"error": {
                    "message": error.get("message").cloned().unwrap_or(json!("The upstream failed.")),
                    "type": openai_error_type(anthropic_type),
                    "param": null,
                    "code": null,
                }}))]
            }
            // ping, content_block_stop and events from newer API versions.
            _ => Vec::new(),
        }
    }
}

/// The content block a Messages stream has open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenBlock {
    Text,
    /// A tool call, by its OpenAI index.
    Tool(u64),
}

/// Chat completion chunks → Anthropic events.
pub(crate) struct ToMessageEvents {
    model: String,
    started: bool,
    open: Option<OpenBlock>,
    /// The index the next content block gets; the open one is `next_index - 1`.
    next_index: u64,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
    ended: bool,
}

impl ToMessageEvents {
    pub(crate) fn new(model: &str) -> ToMessageEvents {
        ToMessageEvents {
            model: model.to_owned(),
            started: false,
            open: None,
            next_index: 0,
            finish_reason: None,
            usage: None,
            ended: false,
        }
    }

    fn close_block(&mut self, events: &mut Vec<SseEvent>) {
        if self.open.take().is_some() {
            let index = self.next_index.saturating_sub(1);
            events.push(named_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, block: OpenBlock, content_block: Value, events: &mut Vec<SseEvent>) -> u64 {
        self.close_block(events);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(block);
        events.push(named_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    fn start(&mut self, chunk_id: &str, events: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        events.push(named_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(chunk_id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                // Chat Completions reports usage only at the end; `message_delta` carries it.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    pub(crate) fn translate(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if self.ended {
            return events;
        }
        if is_done(event) {
            self.end(&mut events);
            return events;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return events;
        };
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            let openai_type = error
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("server_error");
            events.push(named_event(
                "error",
                &json!({"type": "error", "error": {
                    "type": anthropic_error_type(openai_type),
                    "message": error.get("message").cloned().unwrap_or(json!("The upstream failed.")),
                }}),
            ));
            return events;
        }
        self.start(
            chunk.get("id").and_then(Value::as_str).unwrap_or_default(),
            &mut events,
        );
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(tollgate_upstream::openai::parse_usage(usage));
        }
        let Some(choice) = chunk.get("choices").and_then(|choices| choices.get(0)) else {
            return events;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
        {
            let index = match self.open {
                Some(OpenBlock::Text) => self.next_index - 1,
                _ => self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""}), &mut events),
            };
            events.push(named_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let tool_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let function = call.get("function").unwrap_or(&Value::Null);
            let index = match self.open {
                Some(OpenBlock::Tool(open_index)) if open_index == tool_index && call.get("id").is_none() => {
                    self.next_index - 1
                }
                _ => self.open_block(
                    OpenBlock::Tool(tool_index),
                    json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(json!("")),
                        "name": function.get("name").cloned().unwrap_or(json!("")),
                        "input": {},
                    }),
                    &mut events,
                ),
            };
            if let Some(arguments) = function
                .get("arguments")
                .and_then(Value::as_str)
                .filter(|arguments| !arguments.is_empty())
            {
                events.push(named_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
            self.close_block(&mut events);
        }
        events
    }

    /// The stream ended without `[DONE]`: a server that stops after the finishing chunk
    /// still finished; one that stops before it did not, and gets no closing events.
    pub(crate) fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.ended && self.finish_reason.is_some() {
            self.end(&mut events);
        }
        events
    }

    fn end(&mut self, events: &mut Vec<SseEvent>) {
        self.ended = true;
        self.start("", events);
        self.close_block(events);
        let usage = anthropic_usage(&self.usage.unwrap_or_default());
        events.push(named_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self.finish_reason.as_deref().unwrap_or("stop")),
                    "stop_sequence": null,
                },
                "usage": usage,
            }),
        ));
        events.push(named_event("message_stop", &json!({"type": "message_stop"})));
    }
}
