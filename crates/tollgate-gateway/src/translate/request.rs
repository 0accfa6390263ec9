//! Request bodies across dialects. Chat Completions → Messages: system and developer
//! messages, wherever they stand, become the top-level `system` in order (Messages takes
//! system messages between turns only with a beta the client did not ask for), tool calls
//! `tool_use` blocks, tool messages `tool_result` blocks in a user turn, image URLs image
//! blocks, a `json_schema` response format `output_config.format`, and `json_object` mode a
//! closing system instruction to answer with one JSON object (Messages has no schema-free
//! JSON mode). Messages → Chat Completions: the reverse, with a `system` message between
//! turns (the mid-conversation system beta) kept in place as a system message, and
//! `stream_options.include_usage` always on so the stream can be metered. Fields the other
//! dialect has no word for are dropped when they only tune sampling, and refused when
//! dropping them would change what the client gets (unknown response formats, server tools).

use serde_json::{Map, Value, json};
use tollgate_upstream::openai::MaxTokensField;

use crate::error::ApiError;

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).with_param(param)
}

/// The system instruction that stands for OpenAI's `json_object` response format.
pub(crate) const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single JSON object and nothing else: no text before or after it.";

/// Chat Completions → Messages, for an Anthropic upstream. `max_tokens` is the client's
/// limit or the model's default (Messages requires one).
pub(crate) fn chat_to_messages(
    chat: &Map<String, Value>,
    upstream_model: &str,
    max_tokens: u64,
) -> Result<Value, ApiError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    body.insert("max_tokens".into(), json!(max_tokens));
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let chat_messages = chat.get("messages").and_then(Value::as_array).map(Vec::as_slice);
    for (index, message) in chat_messages.unwrap_or_default().iter().enumerate() {
        let param = format!("messages[{index}]");
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                for text in texts_of(content, &param)? {
                    system.push(json!({"type": "text", "text": text}));
                }
            }
            "user" => {
                let blocks = match content {
                    Value::String(text) => vec![json!({"type": "text", "text": text})],
                    Value::Array(parts) => parts
                        .iter()
                        .enumerate()
                        .map(|(part_index, part)| user_part(part, &format!("{param}.content[{part_index}]")))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => {
                        return Err(invalid(
                            &param,
                            format!("{param}.content must be a string or a list of parts"),
                        ));
                    }
                };
                push_user_blocks(&mut messages, blocks, content.is_string());
            }
            "assistant" => {
                let mut blocks: Vec<Value> = texts_of(content, &param)?
                    .into_iter()
                    .filter(|text| !text.is_empty())
                    .map(|text| json!({"type": "text", "text": text}))
                    .collect();
                for (call_index, call) in message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let call_param = format!("{param}.tool_calls[{call_index}]");
                    let function = call.get("function").unwrap_or(&Value::Null);
                    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
                    let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or("");
                    let input: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments).map_err(|_| {
                            invalid(
                                &call_param,
                                format!("{call_param}.function.arguments is not valid JSON"),
                            )
                        })?
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": name,
                        "input": input,
                    }));
                }
                // Messages refuses an empty assistant turn; an empty one says nothing anyway.
                if !blocks.is_empty() {
                    messages.push(json!({"role": "assistant", "content": blocks}));
                }
            }
            "tool" => {
                let tool_use_id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&param, format!("{param}.tool_call_id: Field required")))?;
                let text = texts_of(content, &param)?.join("\n");
                let block = json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": text});
                push_user_blocks(&mut messages, vec![block], false);
            }
            other => {
                return Err(invalid(
                    &param,
                    format!(
                        "{param}.role '{other}' is not supported; use system, developer, user, assistant or tool"
                    ),
                ));
            }
        }
    }
    match chat.get("response_format") {
        None | Some(Value::Null) => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                system.push(json!({"type": "text", "text": JSON_OBJECT_INSTRUCTION}));
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|json_schema| json_schema.get("schema"))
                    .filter(|schema| schema.is_object())
                    .ok_or_else(|| {
                        invalid(
                            "response_format",
                            "response_format.json_schema.schema must be a JSON schema object",
                        )
                    })?;
                body.insert(
                    "output_config".into(),
                    json!({"format": {"type": "json_schema", "schema": schema}}),
                );
            }
            _ => {
                return Err(invalid(
                    "response_format",
                    "response_format.type must be text, json_object or json_schema",
                ));
            }
        },
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(stop) = chat.get("stop").filter(|stop| !stop.is_null()) {
        let sequences = match stop {
            Value::String(text) => vec![json!(text)],
            Value::Array(items) => items.clone(),
            _ => return Err(invalid("stop", "stop must be a string or a list of strings")),
        };
        body.insert("stop_sequences".into(), Value::Array(sequences));
    }
    if let Some(temperature) = chat.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0–2, Anthropic's 0–1; both default to 1, so values keep their
        // meaning and only the part Anthropic cannot take is cut.
        body.insert("temperature".into(), json!(temperature.clamp(0.0, 1.0)));
    }
    if let Some(top_p) = chat.get("top_p").filter(|top_p| top_p.is_number()) {
        body.insert("top_p".into(), top_p.clone());
    }
    if let Some(stream) = chat.get("stream").filter(|stream| stream.is_boolean()) {
        body.insert("stream".into(), stream.clone());
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(index, tool)| {
                let function = tool
                    .get("function")
                    .filter(|_| tool.get("type").and_then(Value::as_str).unwrap_or("function") == "function")
                    .ok_or_else(|| {
                        invalid(&format!("tools[{index}]"), "only function tools are supported")
                    })?;
                let mut converted = Map::new();
                converted.insert("name".into(), function.get("name").cloned().unwrap_or(json!("")));
                if let Some(description) = function.get("description") {
                    converted.insert("description".into(), description.clone());
                }
                converted.insert(
                    "input_schema".into(),
                    function
                        .get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                Ok(Value::Object(converted))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
    }
    let mut tool_choice = match chat.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(choice)) => Some(match choice.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("tool_choice '{other}' is not known"),
                ));
            }
        }),
        Some(choice) => match choice.get("function").and_then(|function| function.get("name")) {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => return Err(invalid("tool_choice", "tool_choice must name a function")),
        },
    };
    if chat.get("parallel_tool_calls") == Some(&Value::Bool(false)) && body.contains_key("tools") {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(Value::Object(body))
}

/// A user turn's blocks; tool results and the user's next words share one turn, as
/// Messages wants tool results first in the turn after the tool calls.
fn push_user_blocks(messages: &mut Vec<Value>, blocks: Vec<Value>, plain_text: bool) {
    let previous_is_tool_results = messages.last().is_some_and(|last| {
        last["role"] == "user"
            && last["content"]
                .as_array()
                .is_some_and(|content| content.iter().any(|block| block["type"] == "tool_result"))
    });
    if previous_is_tool_results
        && let Some(Value::Array(content)) = messages.last_mut().map(|last| &mut last["content"])
    {
        content.extend(blocks);
        return;
    }
    if plain_text && let [block] = blocks.as_slice() {
        messages.push(json!({"role": "user", "content": block["text"]}));
        return;
    }
    messages.push(json!({"role": "user", "content": blocks}));
}

/// The texts of a content value: a string, or text (and refusal) parts.
fn texts_of(content: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(part
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()),
                Some("refusal") => Ok(part
                    .get("refusal")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()),
                _ => Err(invalid(
                    param,
                    format!("{param}.content may hold only text parts here"),
                )),
            })
            .collect(),
        _ => Err(invalid(
            param,
            format!("{param}.content must be a string or a list of parts"),
        )),
    }
}

/// One part of a user message as a Messages block.
fn user_part(part: &Value, param: &str) -> Result<Value, ApiError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            Ok(json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or_default()}))
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|image| image.get("url").or(Some(image)))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(param, format!("{param}.image_url.url: Field required")))?;
            Ok(json!({"type": "image", "source": media_source(url)}))
        }
        Some("file") => {
            let data = part
                .get("file")
                .and_then(|file| file.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        param,
                        format!("{param}: only files given inline as file_data are supported"),
                    )
                })?;
            Ok(json!({"type": "document", "source": media_source(data)}))
        }
        other => Err(invalid(
            param,
            format!(
                "{param}: parts of type {} are not supported for this model",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

/// A `data:` URL as a base64 source, anything else as a URL source.
fn media_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "base64", "media_type": media_type, "data": data});
    }
    json!({"type": "url", "url": url})
}

/// Messages → Chat Completions, for an OpenAI-compatible upstream. Streams always ask for
/// usage, which the gateway meters (and hides from the client if it did not ask).
pub(crate) fn messages_to_chat(
    messages: &Map<String, Value>,
    upstream_model: &str,
    max_tokens_field: MaxTokensField,
) -> Result<Value, ApiError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    let mut chat_messages: Vec<Value> = Vec::new();
    match messages.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => chat_messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            chat_messages.push(json!({"role": "system", "content": system_text(blocks)}));
        }
        Some(_) => {
            return Err(invalid(
                "system",
                "system must be a string or a list of text blocks",
            ));
        }
    }
    for (index, message) in messages
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let param = format!("messages.{index}");
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        let blocks = match message.get("content") {
            Some(Value::String(text)) => {
                chat_messages.push(json!({"role": role, "content": text}));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => continue,
        };
        if role == "system" {
            // A system message between turns (Anthropic's mid-conversation system beta):
            // Chat Completions takes system messages anywhere, so it stays where it is.
            chat_messages.push(json!({"role": "system", "content": system_text(blocks)}));
            continue;
        }
        if role == "assistant" {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some("tool_use") => tool_calls.push(json!({
                        "id": block.get("id").cloned().unwrap_or(json!("")),
                        "type": "function",
                        "function": {
                            "name": block.get("name").cloned().unwrap_or(json!("")),
                            "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                        },
                    })),
                    // Thinking is the model's own; another provider cannot continue it.
                    _ => {}
                }
            }
            let mut converted = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
            if !tool_calls.is_empty() {
                converted["tool_calls"] = Value::Array(tool_calls);
            }
            chat_messages.push(converted);
            continue;
        }
        let mut parts = Vec::new();
        for (block_index, block) in blocks.iter().enumerate() {
            let block_param = format!("{param}.content.{block_index}");
            match block.get("type").and_then(Value::as_str) {
                Some("tool_result") => {
                    // Tool results answer the previous turn's calls, so they come first.
                    chat_messages.push(json!({
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(json!("")),
                        "content": tool_result_text(block.get("content")),
                    }));
                }
                Some("text") => parts
                    .push(json!({"type": "text", "text": block.get("text").cloned().unwrap_or(json!(""))})),
                Some("image") => parts.push(
                    json!({"type": "image_url", "image_url": {"url": source_url(block, &block_param)?}}),
                ),
                Some("document") => {
                    let source = block.get("source").unwrap_or(&Value::Null);
                    match source.get("type").and_then(Value::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": source.get("data").cloned().unwrap_or(json!(""))})),
                        _ => parts.push(json!({"type": "file", "file": {"filename": "document.pdf", "file_data": source_url(block, &block_param)?}})),
                    }
                }
                Some("thinking" | "redacted_thinking") => {}
                other => {
                    return Err(invalid(
                        &block_param,
                        format!(
                            "{block_param}: blocks of type {} are not supported for this model",
                            other.unwrap_or("(none)")
                        ),
                    ));
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        let content = match parts.as_slice() {
            [only] if only["type"] == "text" => only["text"].clone(),
            _ => Value::Array(parts),
        };
        chat_messages.push(json!({"role": "user", "content": content}));
    }
    body.insert("messages".into(), Value::Array(chat_messages));
    if let Some(max_tokens) = messages.get("max_tokens") {
        body.insert(max_tokens_field.name().into(), max_tokens.clone());
    }
    if let Some(stop) = messages.get("stop_sequences").filter(|stop| stop.is_array()) {
        body.insert("stop".into(), stop.clone());
    }
    if let Some(temperature) = messages
        .get("temperature")
        .filter(|temperature| temperature.is_number())
    {
        body.insert("temperature".into(), temperature.clone());
    }
    if let Some(top_p) = messages.get("top_p").filter(|top_p| top_p.is_number()) {
        body.insert("top_p".into(), top_p.clone());
    }
    if messages.get("stream") == Some(&Value::Bool(true)) {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = messages.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .enumerate()
            .map(|(index, tool)| {
                let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
                if kind != "custom" {
                    return Err(invalid(
                        &format!("tools.{index}"),
                        format!("tools.{index}: server tools ({kind}) are not supported for this model"),
                    ));
                }
                let mut function = Map::new();
                function.insert("name".into(), tool.get("name").cloned().unwrap_or(json!("")));
                if let Some(description) = tool.get("description") {
                    function.insert("description".into(), description.clone());
                }
                function.insert(
                    "parameters".into(),
                    tool.get("input_schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                );
                Ok(json!({"type": "function", "function": function}))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = messages.get("tool_choice").filter(|choice| choice.is_object()) {
        let converted = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(json!(""))}})
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice.type must be auto, any, tool or none",
                ));
            }
        };
        body.insert("tool_choice".into(), converted);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            body.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    let output_format = messages
        .get("output_config")
        .and_then(|config| config.get("format"))
        .or_else(|| messages.get("output_format"))
        .filter(|format| format.is_object());
    if let Some(format) = output_format {
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {
                        "name": "output",
                        "schema": format.get("schema").cloned().unwrap_or(json!({})),
                        "strict": true,
                    }}),
                );
            }
            _ => {
                return Err(invalid(
                    "output_config.format",
                    "output_config.format.type must be json_schema for this model",
                ));
            }
        }
    }
    if let Some(user) = messages
        .get("metadata")
        .and_then(|metadata| metadata.get("user_id"))
        .and_then(Value::as_str)
    {
        body.insert("user".into(), json!(user));
    }
    Ok(Value::Object(body))
}

/// System text blocks as one text, as OpenAI system messages are usually read; cache
/// breakpoints have no word in Chat Completions and are dropped.
fn system_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A tool result's content as text: OpenAI tool messages carry text only.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An image or document block's source as a URL (`data:` for base64 data).
fn source_url(block: &Value, param: &str) -> Result<String, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        )),
        Some("url") => Ok(source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()),
        _ => Err(invalid(
            param,
            format!("{param}.source: only base64 and url sources are supported for this model"),
        )),
    }
}
