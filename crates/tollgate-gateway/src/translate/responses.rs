//! OpenAI's Responses API over Chat Completions, both ways: a Responses request (its
//! `instructions`, `input` items, function and custom tools, `text.format`) as a Chat
//! Completions body, which `request` then carries to an Anthropic upstream where needed; a
//! chat completion as a Response object; and a stream of completion chunks as the Responses
//! event sequence (`response.created` … `response.completed`). Chat Completions is the
//! pivot, so no second translator to Messages exists.
//!
//! What Chat Completions cannot say is handled as OpenAI's own models do what they ignore:
//! `reasoning` is accepted and not forwarded (no upstream here takes it from this path),
//! `reasoning` input items (a previous turn's thoughts) are dropped, and hosted tools
//! (`web_search`, `file_search`, …) are dropped from `tools`: tollgate runs no tool of its
//! own. Input items it cannot carry at all (`item_reference`, hosted tools' calls) are
//! refused with a 400 naming the item.

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use tollgate_upstream::openai::is_done;
use tollgate_upstream::sse::SseEvent;

use crate::error::ApiError;

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).with_param(param)
}

/// What a Response object repeats of its request, and the ids it was given: known before
/// the upstream is called, shared by the JSON reply and the stream's events.
#[derive(Clone, Debug)]
pub(crate) struct ResponseFrame {
    pub(crate) id: String,
    pub(crate) created_at: i64,
    pub(crate) model: String,
    /// The request's fields a Response echoes, as the client sent them.
    pub(crate) echo: Map<String, Value>,
    /// Names of the client's `custom` tools, whose calls are `custom_tool_call` items.
    pub(crate) custom_tools: HashSet<String>,
}

/// Fields a Response object echoes from its request.
const ECHOED: [&str; 13] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
];

/// What OpenAI shows for an echoed field the request left out.
fn echo_default(name: &str) -> Value {
    match name {
        "metadata" => json!({}),
        "parallel_tool_calls" | "store" => json!(true),
        "reasoning" => json!({"effort": null, "summary": null}),
        "temperature" | "top_p" => json!(1.0),
        "text" => json!({"format": {"type": "text"}}),
        "tool_choice" => json!("auto"),
        "tools" => json!([]),
        _ => Value::Null,
    }
}

impl ResponseFrame {
    pub(crate) fn new(id: String, created_at: i64, request: &Map<String, Value>) -> ResponseFrame {
        let mut echo = Map::new();
        for name in ECHOED {
            let value = request.get(name).filter(|value| !value.is_null()).cloned();
            echo.insert(name.to_owned(), value.unwrap_or_else(|| echo_default(name)));
        }
        echo.insert("truncation".into(), json!("disabled"));
        let custom_tools = request
            .get("tools")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|tool| tool["type"] == "custom")
            .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
            .collect();
        ResponseFrame {
            id,
            created_at,
            model: request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            echo,
            custom_tools,
        }
    }

    /// The Response object at `status`, with its output and usage so far.
    pub(crate) fn response(&self, status: &str, output: &[Value], usage: Option<&Value>) -> Value {
        let mut response = Map::new();
        response.insert("id".into(), json!(self.id));
        response.insert("object".into(), json!("response"));
        response.insert("created_at".into(), json!(self.created_at));
        response.insert("status".into(), json!(status));
        response.insert("error".into(), Value::Null);
        response.insert(
            "incomplete_details".into(),
            if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
        );
        response.insert("model".into(), json!(self.model));
        response.insert("output".into(), Value::Array(output.to_vec()));
        response.insert("usage".into(), usage.cloned().unwrap_or(Value::Null));
        for (name, value) in &self.echo {
            response.insert(name.clone(), value.clone());
        }
        Value::Object(response)
    }

    /// A tool call as its output item: `custom_tool_call` for a custom tool (its input is the
    /// `input` argument of the function that stands for it), else `function_call`.
    fn call_item(&self, call_id: &str, name: &str, arguments: &str) -> Value {
        let unique = call_id.strip_prefix("call_").unwrap_or(call_id);
        if self.custom_tools.contains(name) {
            let input = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|arguments| arguments.get("input").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| arguments.to_owned());
            return json!({
                "type": "custom_tool_call",
                "id": format!("ctc_{unique}"),
                "call_id": call_id,
                "name": name,
                "input": input,
                "status": "completed",
            });
        }
        json!({
            "type": "function_call",
            "id": format!("fc_{unique}"),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        })
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.id.strip_prefix("resp_").unwrap_or(&self.id))
    }
}

/// A Responses request as a Chat Completions body. `history` is the conversation a
/// `previous_response_id` names (its input and output items, oldest first), put before
/// this request's input; the previous request's instructions are not carried over, as
/// OpenAI documents. Returns the body and this request's input as items, which a stored
/// response keeps for the next turn.
pub(crate) fn responses_to_chat(
    request: &Map<String, Value>,
    history: &[Value],
) -> Result<(Map<String, Value>, Vec<Value>), ApiError> {
    let mut chat = Map::new();
    let model = request.get("model").cloned().unwrap_or(Value::Null);
    chat.insert("model".into(), model);
    let mut messages = Vec::new();
    match request.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(instructions)) => {
            messages.push(json!({"role": "system", "content": instructions}));
        }
        Some(_) => return Err(invalid("instructions", "instructions must be a string")),
    }
    let input = match request.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![json!({"type": "message", "role": "user", "content": text})],
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(invalid(
                "input",
                "input must be a string or a list of input items",
            ));
        }
    };
    if input.is_empty() && history.is_empty() {
        return Err(invalid("input", "Missing required parameter: 'input'."));
    }
    for (index, item) in history.iter().chain(&input).enumerate() {
        let param = if index < history.len() {
            "previous_response_id".to_owned()
        } else {
            format!("input[{}]", index - history.len())
        };
        item_to_chat(item, &param, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(limit) = request.get("max_output_tokens").filter(|limit| !limit.is_null()) {
        if limit.as_u64().is_none_or(|limit| limit < 1) {
            return Err(invalid(
                "max_output_tokens",
                "max_output_tokens must be an integer of at least 1",
            ));
        }
        chat.insert("max_completion_tokens".into(), limit.clone());
    }
    for name in ["temperature", "top_p", "parallel_tool_calls", "stream", "user"] {
        if let Some(value) = request.get(name).filter(|value| !value.is_null()) {
            chat.insert(name.into(), value.clone());
        }
    }
    let tools = tools_to_chat(request.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        chat.insert("tools".into(), Value::Array(tools));
    }
    match request.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(choice)) if has_tools || choice == "none" => {
            chat.insert("tool_choice".into(), json!(choice));
        }
        Some(Value::String(_)) => {}
        Some(choice) => match (choice["type"].as_str(), choice["name"].as_str()) {
            (Some("function" | "custom"), Some(name)) => {
                chat.insert(
                    "tool_choice".into(),
                    json!({"type": "function", "function": {"name": name}}),
                );
            }
            // Hosted tools and allowed-tools lists: as free a choice as `auto`.
            _ if has_tools => {
                chat.insert("tool_choice".into(), json!("auto"));
            }
            _ => {}
        },
    }
    if let Some(format) = request.get("text").and_then(|text| text.get("format")) {
        match format["type"].as_str() {
            None | Some("text") => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut json_schema = Map::new();
                for name in ["name", "schema", "strict", "description"] {
                    if let Some(value) = format.get(name) {
                        json_schema.insert(name.into(), value.clone());
                    }
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": json_schema}),
                );
            }
            Some(_) => {
                return Err(invalid(
                    "text.format.type",
                    "text.format.type must be text, json_object or json_schema",
                ));
            }
        }
    }
    Ok((chat, input))
}

/// Function tools as Chat Completions' function tools; a custom tool (free-form input) as a
/// function taking one string, `input`. Hosted tools are dropped (see the module doc).
fn tools_to_chat(tools: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "tools must be a list")),
    };
    let mut converted = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        let param = format!("tools[{index}]");
        match tool["type"].as_str() {
            Some("function") => {
                let name = tool["name"].as_str().ok_or_else(|| {
                    invalid(&format!("{param}.name"), "Missing required parameter: 'name'.")
                })?;
                let mut function = Map::new();
                function.insert("name".into(), json!(name));
                if let Some(description) = tool.get("description").filter(|value| !value.is_null()) {
                    function.insert("description".into(), description.clone());
                }
                function.insert(
                    "parameters".into(),
                    tool.get("parameters")
                        .filter(|value| value.is_object())
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                if let Some(strict) = tool.get("strict").filter(|value| value.is_boolean()) {
                    function.insert("strict".into(), strict.clone());
                }
                converted.push(json!({"type": "function", "function": function}));
            }
            Some("custom") => {
                let name = tool["name"].as_str().ok_or_else(|| {
                    invalid(&format!("{param}.name"), "Missing required parameter: 'name'.")
                })?;
                let description = tool["description"].as_str().unwrap_or_default();
                converted.push(json!({"type": "function", "function": {
                    "name": name,
                    "description": description,
                    "parameters": {
                        "type": "object",
                        "properties": {"input": {"type": "string", "description": "The tool's whole input, as free-form text."}},
                        "required": ["input"],
                    },
                }}));
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    &format!("{param}.type"),
                    "Missing required parameter: 'type'.",
                ));
            }
        }
    }
    Ok(converted)
}

/// The text of a message's content: a string, or its text parts joined.
fn content_parts_to_chat(content: &Value, param: &str) -> Result<Value, ApiError> {
    let parts = match content {
        Value::String(_) => return Ok(content.clone()),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                &format!("{param}.content"),
                "content must be a string or a list of content parts",
            ));
        }
    };
    let mut converted = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{index}]");
        match part["type"].as_str() {
            Some("input_text" | "output_text" | "text" | "summary_text") => {
                converted.push(json!({"type": "text", "text": part["text"].as_str().unwrap_or_default()}));
            }
            Some("refusal") => {
                converted.push(json!({"type": "text", "text": part["refusal"].as_str().unwrap_or_default()}));
            }
            Some("input_image") => match part["image_url"].as_str() {
                Some(url) => {
                    let mut image_url = json!({"url": url});
                    if let Some(detail) = part["detail"].as_str() {
                        image_url["detail"] = json!(detail);
                    }
                    converted.push(json!({"type": "image_url", "image_url": image_url}));
                }
                None => {
                    return Err(invalid(
                        &part_param,
                        "input_image parts need an image_url here; file_id is not supported",
                    ));
                }
            },
            Some("input_file") => match part["file_data"].as_str() {
                Some(data) => converted.push(json!({"type": "file", "file": {
                    "file_data": data,
                    "filename": part["filename"].as_str().unwrap_or("file"),
                }})),
                None => {
                    return Err(invalid(
                        &part_param,
                        "input_file parts need file_data here; file_id and file_url are not supported",
                    ));
                }
            },
            other => {
                return Err(invalid(
                    &part_param,
                    format!(
                        "content part type '{}' is not supported",
                        other.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(Value::Array(converted))
}

/// A tool's output (a string, or content parts) as a tool message's text.
fn tool_output_text(output: &Value) -> String {
    match output {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Adds a tool call to the assistant message that ends `messages`, or to a new one.
fn push_tool_call(messages: &mut Vec<Value>, call: Value) {
    if let Some(last) = messages.last_mut()
        && last["role"] == "assistant"
        && let Some(object) = last.as_object_mut()
    {
        let calls = object.entry("tool_calls").or_insert_with(|| json!([]));
        if let Some(calls) = calls.as_array_mut() {
            calls.push(call);
            return;
        }
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

fn item_to_chat(item: &Value, param: &str, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let kind = item["type"]
        .as_str()
        .or_else(|| item.get("role").map(|_| "message"))
        .unwrap_or_default();
    let call_id = || {
        item["call_id"].as_str().map(str::to_owned).ok_or_else(|| {
            invalid(
                &format!("{param}.call_id"),
                "Missing required parameter: 'call_id'.",
            )
        })
    };
    match kind {
        "message" => {
            let role = match item["role"].as_str() {
                Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
                Some(other) => {
                    return Err(invalid(
                        &format!("{param}.role"),
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'user', 'assistant', 'system', and 'developer'."
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        &format!("{param}.role"),
                        "Missing required parameter: 'role'.",
                    ));
                }
            };
            let content = content_parts_to_chat(item.get("content").unwrap_or(&Value::Null), param)?;
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => push_tool_call(
            messages,
            json!({
                "id": call_id()?,
                "type": "function",
                "function": {
                    "name": item["name"].as_str().unwrap_or_default(),
                    "arguments": item["arguments"].as_str().unwrap_or("{}"),
                },
            }),
        ),
        "custom_tool_call" => push_tool_call(
            messages,
            json!({
                "id": call_id()?,
                "type": "function",
                "function": {
                    "name": item["name"].as_str().unwrap_or_default(),
                    "arguments": json!({"input": item["input"].as_str().unwrap_or_default()}).to_string(),
                },
            }),
        ),
        "function_call_output" | "custom_tool_call_output" => messages.push(json!({
            "role": "tool",
            "tool_call_id": call_id()?,
            "content": tool_output_text(item.get("output").unwrap_or(&Value::Null)),
        })),
        // A previous turn's reasoning: the upstream keeps no state to give it back to.
        "reasoning" => {}
        other => {
            return Err(invalid(
                param,
                format!("input items of type '{other}' are not supported by this gateway"),
            ));
        }
    }
    Ok(())
}

/// Chat Completions' usage as a Response's.
pub(crate) fn responses_usage(chat_usage: &Value) -> Value {
    let number = |pointer: &str| chat_usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let input_tokens = number("/prompt_tokens");
    let output_tokens = number("/completion_tokens");
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": number("/prompt_tokens_details/cached_tokens")},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": number("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": input_tokens + output_tokens,
    })
}

fn output_message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    })
}

fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A whole chat completion as a Response object.
pub(crate) fn chat_completion_to_response(completion: &Value, frame: &ResponseFrame) -> Value {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|text| !text.is_empty()) {
        output.push(output_message(&frame.message_id(), text, "completed"));
    }
    for call in message["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        output.push(frame.call_item(
            call["id"].as_str().unwrap_or_default(),
            call["function"]["name"].as_str().unwrap_or_default(),
            call["function"]["arguments"].as_str().unwrap_or_default(),
        ));
    }
    let status = if choice["finish_reason"] == "length" {
        "incomplete"
    } else {
        "completed"
    };
    let usage = completion
        .get("usage")
        .filter(|usage| usage.is_object())
        .map(responses_usage);
    frame.response(status, &output, usage.as_ref())
}

/// The item a stream has open.
#[derive(Debug)]
enum OpenItem {
    Text {
        output_index: usize,
        text: String,
    },
    Call {
        chat_index: u64,
        output_index: usize,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Chat completion chunks → Responses events, each named by its `type` and numbered.
pub(crate) struct ToResponseEvents {
    frame: ResponseFrame,
    sequence_number: u64,
    started: bool,
    open: Option<OpenItem>,
    output: Vec<Value>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    ended: bool,
    /// The final Response (`response.completed` or `response.incomplete`), once sent.
    completed: Option<Value>,
}

impl ToResponseEvents {
    pub(crate) fn new(frame: ResponseFrame) -> ToResponseEvents {
        ToResponseEvents {
            frame,
            sequence_number: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish_reason: None,
            usage: None,
            ended: false,
            completed: None,
        }
    }

    /// The final Response, once the stream has ended well.
    pub(crate) fn completed(&self) -> Option<&Value> {
        self.completed.as_ref()
    }

    /// An event of `kind` with `fields`, numbered in sequence.
    pub(crate) fn event(&mut self, kind: &str, fields: Value) -> SseEvent {
        let mut data = json!({"type": kind});
        if let (Some(data), Value::Object(fields)) = (data.as_object_mut(), fields) {
            data.extend(fields);
        }
        data["sequence_number"] = json!(self.sequence_number);
        self.sequence_number += 1;
        SseEvent {
            event: kind.to_owned(),
            data: data.to_string(),
        }
    }

    fn start(&mut self, events: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.frame.response("in_progress", &[], None);
        events.push(self.event("response.created", json!({"response": response})));
        events.push(self.event("response.in_progress", json!({"response": response})));
    }

    /// Closes the open item with its `done` events and keeps it for the final output.
    fn close(&mut self, events: &mut Vec<SseEvent>) {
        match self.open.take() {
            None => {}
            Some(OpenItem::Text { output_index, text }) => {
                let item_id = self.frame.message_id();
                let at = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let mut fields = at.clone();
                fields["text"] = json!(text);
                fields["logprobs"] = json!([]);
                events.push(self.event("response.output_text.done", fields));
                let mut fields = at;
                fields["part"] = output_text_part(&text);
                events.push(self.event("response.content_part.done", fields));
                let item = output_message(&item_id, &text, "completed");
                events.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                ));
                self.output.push(item);
            }
            Some(OpenItem::Call {
                output_index,
                call_id,
                name,
                arguments,
                ..
            }) => {
                let item = self.frame.call_item(&call_id, &name, &arguments);
                let item_id = item["id"].clone();
                if item["type"] == "custom_tool_call" {
                    events.push(self.event(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": item_id, "output_index": output_index, "input": item["input"]}),
                    ));
                } else {
                    events.push(self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": output_index, "name": name, "arguments": arguments}),
                    ));
                }
                events.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                ));
                self.output.push(item);
            }
        }
    }

    fn text_delta(&mut self, delta: &str, events: &mut Vec<SseEvent>) {
        if !matches!(self.open, Some(OpenItem::Text { .. })) {
            self.close(events);
            let output_index = self.output.len();
            let item_id = self.frame.message_id();
            let mut item = output_message(&item_id, "", "in_progress");
            item["content"] = json!([]);
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            ));
            events.push(self.event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": output_text_part("")}),
            ));
            self.open = Some(OpenItem::Text {
                output_index,
                text: String::new(),
            });
        }
        let Some(OpenItem::Text { output_index, text }) = &mut self.open else {
            return;
        };
        text.push_str(delta);
        let output_index = *output_index;
        let item_id = self.frame.message_id();
        events.push(self.event(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": delta, "logprobs": []}),
        ));
    }

    fn tool_call_delta(&mut self, call: &Value, events: &mut Vec<SseEvent>) {
        let chat_index = call["index"].as_u64().unwrap_or(0);
        let is_open =
            matches!(&self.open, Some(OpenItem::Call { chat_index: open, .. }) if *open == chat_index);
        if !is_open {
            self.close(events);
            let output_index = self.output.len();
            let call_id = call["id"].as_str().unwrap_or_default().to_owned();
            let name = call["function"]["name"].as_str().unwrap_or_default().to_owned();
            let mut item = self.frame.call_item(&call_id, &name, "");
            item["status"] = json!("in_progress");
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": output_index, "item": item}),
            ));
            self.open = Some(OpenItem::Call {
                chat_index,
                output_index,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        let Some(delta) = call["function"]["arguments"]
            .as_str()
            .filter(|delta| !delta.is_empty())
        else {
            return;
        };
        let Some(OpenItem::Call {
            output_index,
            call_id,
            name,
            arguments,
            ..
        }) = &mut self.open
        else {
            return;
        };
        arguments.push_str(delta);
        let output_index = *output_index;
        // A custom tool's input arrives wrapped in JSON; it is sent whole when the call ends.
        if self.frame.custom_tools.contains(name.as_str()) {
            return;
        }
        let item_id = self.frame.call_item(call_id, name, "")["id"].clone();
        events.push(self.event(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
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
            self.fail(error, &mut events);
            return events;
        }
        self.start(&mut events);
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage = Some(responses_usage(usage));
        }
        for choice in chunk["choices"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|text| !text.is_empty()) {
                self.text_delta(text, &mut events);
            }
            for call in delta["tool_calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                self.tool_call_delta(call, &mut events);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        events
    }

    /// Closing events for an upstream that ended without `[DONE]` but had finished.
    pub(crate) fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.ended && self.finish_reason.is_some() {
            self.end(&mut events);
        }
        events
    }

    fn end(&mut self, events: &mut Vec<SseEvent>) {
        self.start(events);
        self.close(events);
        self.ended = true;
        let (status, kind) = if self.finish_reason.as_deref() == Some("length") {
            ("incomplete", "response.incomplete")
        } else {
            ("completed", "response.completed")
        };
        let response = self.frame.response(status, &self.output, self.usage.as_ref());
        self.completed = Some(response.clone());
        events.push(self.event(kind, json!({"response": response})));
    }

    /// An upstream's error inside the stream: OpenAI's `error` event, then `response.failed`.
    fn fail(&mut self, error: &Value, events: &mut Vec<SseEvent>) {
        self.start(events);
        self.ended = true;
        events.push(self.error_event(error));
        let mut response = self.frame.response("failed", &self.output, self.usage.as_ref());
        response["error"] = json!({
            "code": error["code"].as_str().unwrap_or("server_error"),
            "message": error["message"].as_str().unwrap_or("The upstream failed."),
        });
        events.push(self.event("response.failed", json!({"response": response})));
    }

    /// OpenAI's `error` event for an error in OpenAI's envelope (its `error` member).
    pub(crate) fn error_event(&mut self, error: &Value) -> SseEvent {
        self.event(
            "error",
            json!({
                "code": error.get("code").filter(|code| !code.is_null()).or(error.get("type")).cloned().unwrap_or(Value::Null),
                "message": error["message"].as_str().unwrap_or("The upstream failed."),
                "param": error.get("param").cloned().unwrap_or(Value::Null),
            }),
        )
    }
}

/// Whether an event ends a Responses stream that went well.
pub(crate) fn is_terminal(event: &SseEvent) -> bool {
    matches!(event.event.as_str(), "response.completed" | "response.incomplete")
}

#[cfg(test)]
mod tests;
