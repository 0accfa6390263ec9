//! A Messages body as a `generateContent` body: `system` (and system turns) becomes
//! `systemInstruction`, user and assistant turns `user` and `model` contents, text, base64
//! images and documents, `tool_use` and `tool_result` blocks `functionCall` and
//! `functionResponse` parts, tools `functionDeclarations` (their JSON Schema as
//! `parametersJsonSchema`, which takes it whole), and the sampling fields
//! `generationConfig`. Like the gateway's translations it drops what only tunes (cache
//! breakpoints, metadata, earlier turns' thinking, which another model cannot continue) and
//! refuses with Anthropic's 400 what it cannot say without changing the answer (server
//! tools, URL sources, unknown blocks). A tool use's id gives back the call's id and the
//! thought signature it carries; for Gemini 3, a model turn whose calls carry none (they were
//! made by another model) is marked with Google's documented `SIGNATURE_SKIPPED`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::UpstreamError;
use crate::gemini::{SIGNATURE_SKIPPED, split_signed_id};

/// A Messages body taken apart for Gemini: the model its URL names and the body to send.
#[derive(Debug)]
pub(crate) struct GeminiCall {
    pub(crate) model: String,
    pub(crate) body: Value,
}

/// Translates a Messages body. A body that is not a JSON object with a string model, or
/// that says something Gemini has no word for, is refused as Anthropic would refuse it.
pub(crate) fn to_generate_content(body: &[u8]) -> Result<GeminiCall, UpstreamError> {
    let Ok(Value::Object(messages)) = serde_json::from_slice::<Value>(body) else {
        return Err(UpstreamError::invalid_request(
            "The request body is not a JSON object.",
        ));
    };
    let Some(Value::String(model)) = messages.get("model") else {
        return Err(UpstreamError::invalid_request("model: Field required"));
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    let mut gemini = Map::new();
    let mut instruction_parts = match messages.get("system") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => vec![json!({"text": text})],
        Some(Value::Array(blocks)) => system_parts(blocks),
        Some(_) => {
            return Err(UpstreamError::invalid_request(
                "system: Input should be a string or a list of text blocks",
            ));
        }
    };
    let turns = messages
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let tool_names = tool_names(turns);
    let mut contents: Vec<Value> = Vec::new();
    for (index, turn) in turns.iter().enumerate() {
        let param = format!("messages.{index}");
        let role = match turn.get("role").and_then(Value::as_str) {
            Some("user") => "user",
            Some("assistant") => "model",
            Some("system") => {
                // A system turn (the mid-conversation system beta): Gemini has one system
                // instruction, so it joins it.
                if let Some(Value::Array(blocks)) = turn.get("content") {
                    instruction_parts.extend(system_parts(blocks));
                } else if let Some(Value::String(text)) = turn.get("content") {
                    instruction_parts.push(json!({"text": text}));
                }
                continue;
            }
            _ => {
                return Err(UpstreamError::invalid_request(&format!(
                    "{param}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        let parts = match turn.get("content") {
            Some(Value::String(text)) => vec![json!({"text": text})],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .enumerate()
                .filter_map(|(block_index, block)| {
                    part(block, &format!("{param}.content.{block_index}"), &tool_names).transpose()
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(UpstreamError::invalid_request(&format!(
                    "{param}.content: Input should be a string or a list of blocks"
                )));
            }
        };
        if parts.is_empty() {
            continue;
        }
        // Gemini wants turns to alternate; consecutive turns of one role become one.
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(last_parts) = last["parts"].as_array_mut() {
                    last_parts.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    if model.starts_with("gemini-3") {
        mark_unsigned_calls(&mut contents);
    }
    gemini.insert("contents".into(), Value::Array(contents));
    if !instruction_parts.is_empty() {
        gemini.insert("systemInstruction".into(), json!({"parts": instruction_parts}));
    }
    if let Some(tools) = function_declarations(&messages)? {
        gemini.insert("tools".into(), json!([{"functionDeclarations": tools}]));
    }
    if let Some(tool_config) = tool_config(&messages)? {
        gemini.insert("toolConfig".into(), tool_config);
    }
    let generation_config = generation_config(&messages)?;
    if !generation_config.is_empty() {
        gemini.insert("generationConfig".into(), Value::Object(generation_config));
    }
    Ok(GeminiCall {
        model,
        body: Value::Object(gemini),
    })
}

/// The text blocks of a `system` as parts; cache breakpoints have no word in Gemini.
/// Gemini 3 refuses a model turn whose function calls carry no thought signature; where
/// none of a turn's calls has one (only the first of parallel calls ever does), the first is
/// given `SIGNATURE_SKIPPED`. Turns with a signature are left as they are.
fn mark_unsigned_calls(contents: &mut [Value]) {
    for content in contents.iter_mut().filter(|content| content["role"] == "model") {
        let Some(parts) = content.get_mut("parts").and_then(Value::as_array_mut) else {
            continue;
        };
        let calls = || parts.iter().filter(|part| part.get("functionCall").is_some());
        if calls().any(|part| part.get("thoughtSignature").is_some()) {
            continue;
        }
        if let Some(first) = parts.iter_mut().find(|part| part.get("functionCall").is_some()) {
            first["thoughtSignature"] = json!(SIGNATURE_SKIPPED);
        }
    }
}

fn system_parts(blocks: &[Value]) -> Vec<Value> {
    blocks
        .iter()
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .map(|text| json!({"text": text}))
        .collect()
}

/// Every `tool_use` id of the conversation with its tool's name: a `functionResponse`
/// names the function it answers, where a `tool_result` names only the call's id.
fn tool_names(turns: &[Value]) -> HashMap<String, String> {
    turns
        .iter()
        .filter_map(|turn| turn.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
        .filter_map(|block| {
            Some((
                block.get("id")?.as_str()?.to_owned(),
                block.get("name")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// One content block as a part; `None` for blocks dropped on purpose.
fn part(
    block: &Value,
    param: &str,
    tool_names: &HashMap<String, String>,
) -> Result<Option<Value>, UpstreamError> {
    let text_of = |value: &Value| value.get("text").and_then(Value::as_str).map(str::to_owned);
    let converted = match block.get("type").and_then(Value::as_str) {
        Some("text") => json!({"text": text_of(block).unwrap_or_default()}),
        Some("image") => inline_data(block, param)?,
        Some("document") => {
            let source = block.get("source").unwrap_or(&Value::Null);
            if source.get("type").and_then(Value::as_str) == Some("text") {
                json!({"text": source.get("data").and_then(Value::as_str).unwrap_or_default()})
            } else {
                inline_data(block, param)?
            }
        }
        Some("tool_use") => {
            let mut call = Map::new();
            call.insert("name".into(), block.get("name").cloned().unwrap_or(json!("")));
            call.insert(
                "args".into(),
                block
                    .get("input")
                    .filter(|input| input.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            );
            let mut part = Map::new();
            if let Some(id) = block.get("id").and_then(Value::as_str) {
                let (id, signature) = split_signed_id(id);
                call.insert("id".into(), json!(id));
                if let Some(signature) = signature {
                    part.insert("thoughtSignature".into(), json!(signature));
                }
            }
            part.insert("functionCall".into(), Value::Object(call));
            Value::Object(part)
        }
        Some("tool_result") => {
            let id = block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(name) = tool_names.get(id) else {
                return Err(UpstreamError::invalid_request(&format!(
                    "{param}: tool_result block(s) provided for tool_use id {id} without a matching tool_use block"
                )));
            };
            let mut texts = Vec::new();
            match block.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => texts.push(text.clone()),
                Some(Value::Array(blocks)) => {
                    for (index, inner) in blocks.iter().enumerate() {
                        match inner.get("type").and_then(Value::as_str) {
                            Some("text") => texts.push(text_of(inner).unwrap_or_default()),
                            _ => {
                                return Err(UpstreamError::invalid_request(&format!(
                                    "{param}.content.{index}: only text tool results are supported for this model"
                                )));
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(UpstreamError::invalid_request(&format!(
                        "{param}.content: Input should be a string or a list of blocks"
                    )));
                }
            }
            let field = if block.get("is_error") == Some(&Value::Bool(true)) {
                "error"
            } else {
                "result"
            };
            let (id, _) = split_signed_id(id);
            json!({"functionResponse": {"id": id, "name": name, "response": {field: texts.join("\n")}}})
        }
        // Thinking is the model's own; another provider cannot continue it.
        Some("thinking" | "redacted_thinking") => return Ok(None),
        other => {
            return Err(UpstreamError::invalid_request(&format!(
                "{param}: blocks of type {} are not supported for this model",
                other.unwrap_or("(none)")
            )));
        }
    };
    Ok(Some(converted))
}

/// An image or document with base64 data as `inlineData`; Gemini fetches no URLs.
fn inline_data(block: &Value, param: &str) -> Result<Value, UpstreamError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    if source.get("type").and_then(Value::as_str) != Some("base64") {
        return Err(UpstreamError::invalid_request(&format!(
            "{param}.source: only base64 sources are supported for this model"
        )));
    }
    Ok(json!({"inlineData": {
        "mimeType": source.get("media_type").and_then(Value::as_str).unwrap_or("application/octet-stream"),
        "data": source.get("data").and_then(Value::as_str).unwrap_or_default(),
    }}))
}

/// Client tools as function declarations; a server tool (web search, code execution, …)
/// is refused, since Gemini's own differ.
fn function_declarations(messages: &Map<String, Value>) -> Result<Option<Vec<Value>>, UpstreamError> {
    let Some(tools) = messages.get("tools").and_then(Value::as_array) else {
        return Ok(None);
    };
    let declarations = tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
            if kind != "custom" {
                return Err(UpstreamError::invalid_request(&format!(
                    "tools.{index}: server tools ({kind}) are not supported for this model"
                )));
            }
            let mut declaration = Map::new();
            declaration.insert("name".into(), tool.get("name").cloned().unwrap_or(json!("")));
            if let Some(description) = tool.get("description").filter(|text| text.is_string()) {
                declaration.insert("description".into(), description.clone());
            }
            declaration.insert(
                "parametersJsonSchema".into(),
                tool.get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"})),
            );
            Ok(Value::Object(declaration))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!declarations.is_empty()).then_some(declarations))
}

/// `tool_choice` as `toolConfig.functionCallingConfig`.
fn tool_config(messages: &Map<String, Value>) -> Result<Option<Value>, UpstreamError> {
    let Some(choice) = messages.get("tool_choice").filter(|choice| choice.is_object()) else {
        return Ok(None);
    };
    let config = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!({"mode": "AUTO"}),
        Some("any") => json!({"mode": "ANY"}),
        Some("none") => json!({"mode": "NONE"}),
        Some("tool") => json!({
            "mode": "ANY",
            "allowedFunctionNames": [choice.get("name").cloned().unwrap_or(json!(""))],
        }),
        _ => {
            return Err(UpstreamError::invalid_request(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
            ));
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

/// The output limit, sampling, stop sequences, extended thinking and a JSON schema for the
/// answer, as `generationConfig`.
fn generation_config(messages: &Map<String, Value>) -> Result<Map<String, Value>, UpstreamError> {
    let mut config = Map::new();
    for (from, to) in [
        ("max_tokens", "maxOutputTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
    ] {
        if let Some(value) = messages.get(from).filter(|value| value.is_number()) {
            config.insert(to.into(), value.clone());
        }
    }
    if let Some(stop) = messages
        .get("stop_sequences")
        .filter(|stop| stop.as_array().is_some_and(|stop| !stop.is_empty()))
    {
        config.insert("stopSequences".into(), stop.clone());
    }
    if let Some(thinking) = messages.get("thinking").filter(|thinking| thinking.is_object())
        && thinking.get("type").and_then(Value::as_str) == Some("enabled")
    {
        let mut thinking_config = json!({"includeThoughts": true});
        if let Some(budget) = thinking.get("budget_tokens").filter(|budget| budget.is_number()) {
            thinking_config["thinkingBudget"] = budget.clone();
        }
        config.insert("thinkingConfig".into(), thinking_config);
    }
    let output_format = messages
        .get("output_config")
        .and_then(|output| output.get("format"))
        .or_else(|| messages.get("output_format"))
        .filter(|format| format.is_object());
    if let Some(format) = output_format {
        if format.get("type").and_then(Value::as_str) != Some("json_schema") {
            return Err(UpstreamError::invalid_request(
                "output_config.format.type: Input should be 'json_schema'",
            ));
        }
        config.insert("responseMimeType".into(), json!("application/json"));
        config.insert(
            "responseJsonSchema".into(),
            format.get("schema").cloned().unwrap_or_else(|| json!({})),
        );
    }
    Ok(config)
}
