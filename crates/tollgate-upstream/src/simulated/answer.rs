//! What the simulated model answers with, decided from the request body alone: prose, a JSON
//! text, or a call to one of the request's tools with an input made up from its schema. The
//! rules are deterministic, and chosen so that an agent loop driven by the model ends:
//!
//! - `tool_choice` `{"type":"tool","name":…}` calls that tool; `{"type":"any"}` calls the
//!   tool the last user turn names, else the first tool. Forced choices always call one, as
//!   Anthropic's models do.
//! - `auto`, or no `tool_choice`, calls a tool only when the last turn is the user's, holds
//!   no `tool_result`, and its text names one of the tools as a whole, case-sensitive word
//!   (the earliest named wins). After a tool result the answer is always text, so a client
//!   that runs the tool and sends its result back gets a final answer on the next turn, and
//!   a plain prompt ("Reply with the word pong") gets text at once.
//! - `none`, or no custom tools: never a tool.
//! - Otherwise `output_config.format` (or the beta's `output_format`) of type `json_schema`
//!   gets a JSON text that fits the schema, a top-level system prompt whose last text asks
//!   for a "JSON object" gets `{"answer": …}` (how the gateway words OpenAI's `json_object`
//!   mode), and anything else gets prose.
//!
//! Made-up inputs fill only the required fields: `const`, `default` or the first `enum`
//! value where the schema gives one, else a simple value of the type. Strings are harmless
//! for the tools agents run: a command-like field gets `echo hello`, a path-like one
//! `/dev/null`. This module does no I/O.

use serde_json::{Map, Value, json};

use crate::UpstreamError;

/// What the model answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Prose,
    /// A JSON text: this value, or `None` for any JSON object (`{"answer": …}`).
    Json(Option<Value>),
    /// A call to the named tool with this input.
    ToolUse {
        name: String,
        input: Value,
    },
}

/// Nested schemas deeper than this (recursive `$ref`s) get `null` rather than a loop.
const SCHEMA_DEPTH_MAX: u32 = 16;

/// Chooses the answer for a body whose `messages` the caller has already validated.
pub(crate) fn choose(body: &Map<String, Value>) -> Result<Answer, UpstreamError> {
    if let Some(tool) = called_tool(body)? {
        let schema = tool.get("input_schema").unwrap_or(&Value::Null);
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        return Ok(Answer::ToolUse {
            name: name.to_owned(),
            input: value_for_schema(schema, schema, "", 0, true),
        });
    }
    let format = body
        .get("output_config")
        .and_then(|config| config.get("format"))
        .or_else(|| body.get("output_format"))
        .filter(|format| format.get("type").and_then(Value::as_str) == Some("json_schema"));
    if let Some(format) = format {
        let schema = format.get("schema").unwrap_or(&Value::Null);
        return Ok(Answer::Json(Some(value_for_schema(schema, schema, "", 0, true))));
    }
    if system_asks_for_a_json_object(body) {
        return Ok(Answer::Json(None));
    }
    Ok(Answer::Prose)
}

/// The tool definition the answer calls, if any (see the module's rules).
fn called_tool(body: &Map<String, Value>) -> Result<Option<&Value>, UpstreamError> {
    // Server tools (typed, such as web search) run on Anthropic's side; the simulation
    // cannot run them, so it never calls them.
    let tools: Vec<&Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|tool| matches!(tool.get("type").and_then(Value::as_str), None | Some("custom")))
        .filter(|tool| tool.get("name").and_then(Value::as_str).is_some())
        .collect();
    let choice = body.get("tool_choice").filter(|choice| !choice.is_null());
    let choice_type = choice
        .and_then(|choice| choice.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let named = last_user_text(body).and_then(|text| earliest_named_tool(&text, &tools));
    match choice_type {
        "none" => Ok(None),
        "tool" => {
            let name = choice
                .and_then(|choice| choice.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tool = tools
                .iter()
                .find(|tool| tool.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| {
                    UpstreamError::invalid_request(&format!(
                        "tool_choice.name: Tool '{name}' not found in tools"
                    ))
                })?;
            Ok(Some(tool))
        }
        "any" => match named.or_else(|| tools.first().copied()) {
            Some(tool) => Ok(Some(tool)),
            None => Err(UpstreamError::invalid_request(
                "tool_choice: tools are required when tool_choice is any",
            )),
        },
        _ => Ok(named),
    }
}

/// The text of the last turn when it is the user's and answers no tool call; `system`
/// messages between turns do not count as turns.
fn last_user_text(body: &Map<String, Value>) -> Option<String> {
    let last_turn = body
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) != Some("system"))?;
    if last_turn.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    match last_turn.get("content")? {
        Value::String(text) => Some(text.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_result") => return None,
                    Some("text") => {
                        text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default());
                        text.push('\n');
                    }
                    _ => {}
                }
            }
            Some(text)
        }
        _ => None,
    }
}

/// The tool whose name appears first in `text` as a whole word.
fn earliest_named_tool<'a>(text: &str, tools: &[&'a Value]) -> Option<&'a Value> {
    tools
        .iter()
        .filter_map(|tool| {
            let name = tool.get("name").and_then(Value::as_str)?;
            whole_word_position(text, name).map(|position| (position, *tool))
        })
        .min_by_key(|(position, _)| *position)
        .map(|(_, tool)| tool)
}

fn whole_word_position(text: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let is_word_character = |character: char| character.is_alphanumeric() || character == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word_character) && !after.is_some_and(is_word_character)
    })
}

fn system_asks_for_a_json_object(body: &Map<String, Value>) -> bool {
    let last_text = match body.get("system") {
        Some(Value::String(text)) => Some(text.as_str()),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .rev()
            .find(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .and_then(|block| block.get("text"))
            .and_then(Value::as_str),
        _ => None,
    };
    last_text.is_some_and(|text| text.to_lowercase().contains("json object"))
}

/// A simple value that satisfies `schema`; `root` resolves local `$ref`s, `name` is the
/// property the value is for, and `top` treats an untyped schema as an object (tool inputs
/// and JSON answers are objects).
pub(crate) fn value_for_schema(schema: &Value, root: &Value, name: &str, depth: u32, top: bool) -> Value {
    if depth > SCHEMA_DEPTH_MAX {
        return Value::Null;
    }
    let Some(schema_object) = schema.as_object() else {
        // A `true` or missing schema takes anything.
        return if top { json!({}) } else { json!("hello") };
    };
    for keyword in ["const", "default"] {
        if let Some(value) = schema_object.get(keyword) {
            return value.clone();
        }
    }
    if let Some(first) = schema_object
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    {
        return first.clone();
    }
    if let Some(reference) = schema_object.get("$ref").and_then(Value::as_str) {
        return match reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
        {
            Some(target) => value_for_schema(target, root, name, depth + 1, top),
            None => Value::Null,
        };
    }
    for keyword in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = schema_object.get(keyword).and_then(Value::as_array) {
            let option = options
                .iter()
                .find(|option| option.get("type").and_then(Value::as_str) != Some("null"))
                .or(options.first());
            if let Some(option) = option {
                return value_for_schema(option, root, name, depth + 1, top);
            }
        }
    }
    let declared_type = match schema_object.get("type") {
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .or(kinds.first().and_then(Value::as_str)),
        _ => None,
    };
    let kind = declared_type.unwrap_or(
        if top || schema_object.contains_key("properties") || schema_object.contains_key("required") {
            "object"
        } else if schema_object.contains_key("items") {
            "array"
        } else {
            "string"
        },
    );
    match kind {
        "object" => {
            let properties = schema_object.get("properties").and_then(Value::as_object);
            let mut object = Map::new();
            for required in schema_object
                .get("required")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
            {
                let property = properties
                    .and_then(|properties| properties.get(required))
                    .unwrap_or(&Value::Bool(true));
                object.insert(
                    required.to_owned(),
                    value_for_schema(property, root, required, depth + 1, false),
                );
            }
            Value::Object(object)
        }
        "array" => {
            let bound = |keyword: &str| schema_object.get(keyword).and_then(Value::as_u64);
            let count = bound("minItems")
                .unwrap_or(0)
                .max(1)
                .min(bound("maxItems").unwrap_or(u64::MAX));
            let items = schema_object.get("items").unwrap_or(&Value::Bool(true));
            Value::Array(
                (0..count)
                    .map(|_| value_for_schema(items, root, name, depth + 1, false))
                    .collect(),
            )
        }
        "integer" | "number" => number_for(schema_object),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => string_for(schema_object, name),
    }
}

/// 1, moved into `[minimum, maximum]` when the schema bounds it.
fn number_for(schema: &Map<String, Value>) -> Value {
    let bound = |keyword: &str| schema.get(keyword).and_then(Value::as_i64);
    let mut number: i64 = 1;
    if let Some(minimum) = bound("minimum") {
        number = number.max(minimum);
    }
    if let Some(minimum) = bound("exclusiveMinimum") {
        number = number.max(minimum.saturating_add(1));
    }
    if let Some(maximum) = bound("maximum") {
        number = number.min(maximum);
    }
    if let Some(maximum) = bound("exclusiveMaximum") {
        number = number.min(maximum.saturating_sub(1));
    }
    json!(number)
}

/// A harmless string for the property `name`, in the schema's format and length bounds.
fn string_for(schema: &Map<String, Value>, name: &str) -> Value {
    let name = name.to_lowercase();
    let format = schema.get("format").and_then(Value::as_str).unwrap_or_default();
    let mut text = match format {
        "uri" | "url" | "iri" => "https://example.com",
        "date-time" => "2026-01-01T00:00:00Z",
        "date" => "2026-01-01",
        "time" => "00:00:00Z",
        "email" => "user@example.com",
        "uuid" => "00000000-0000-4000-8000-000000000000",
        "ipv4" => "127.0.0.1",
        "ipv6" => "::1",
        _ if name.contains("command") || name == "cmd" || name == "script" => "echo hello",
        _ if name.contains("path") || name.contains("file") || name.contains("dir") => "/dev/null",
        _ if name.contains("url") || name.contains("uri") => "https://example.com",
        _ => "hello",
    }
    .to_owned();
    let length = |keyword: &str| {
        schema
            .get(keyword)
            .and_then(Value::as_u64)
            .and_then(|length| usize::try_from(length).ok())
    };
    if let Some(minimum) = length("minLength") {
        while text.chars().count() < minimum {
            text.push('o');
        }
    }
    if let Some(maximum) = length("maxLength") {
        text = text.chars().take(maximum).collect();
    }
    json!(text)
}
