//! Whole (non-streaming) replies across dialects: an Anthropic message as a chat
//! completion, and a chat completion as an Anthropic message. The `model` shown is the one
//! the client asked for; usage is the upstream's, in the client's terms.

use serde_json::{Map, Value, json};

use crate::translate::{
    anthropic_usage, chat_completion_id, finish_reason, message_id, openai_usage, stop_reason,
};

/// An Anthropic message (`/v1/messages` reply) as a chat completion.
pub(crate) fn message_to_chat_completion(message: &Value, model: &str, created_unix_seconds: i64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(json!("")),
                    "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            _ => {}
        }
    }
    let mut reply = Map::new();
    reply.insert("role".into(), json!("assistant"));
    reply.insert(
        "content".into(),
        if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    reply.insert("refusal".into(), Value::Null);
    if !tool_calls.is_empty() {
        reply.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !reasoning.is_empty() {
        // DeepSeek's name for it, which several OpenAI-compatible clients read.
        reply.insert("reasoning_content".into(), json!(reasoning));
    }
    let usage = message
        .get("usage")
        .map(tollgate_upstream::sse::parse_usage)
        .unwrap_or_default();
    json!({
        "id": chat_completion_id(message.get("id").and_then(Value::as_str).unwrap_or_default()),
        "object": "chat.completion",
        "created": created_unix_seconds,
        "model": model,
        "choices": [{
            "index": 0,
            "message": reply,
            "logprobs": null,
            "finish_reason": message.get("stop_reason").and_then(Value::as_str).map(finish_reason),
        }],
        "usage": openai_usage(&usage),
    })
}

/// A chat completion (its first choice) as an Anthropic message.
pub(crate) fn chat_completion_to_message(completion: &Value, model: &str) -> Value {
    let choice = completion
        .get("choices")
        .and_then(|choices| choices.get(0))
        .unwrap_or(&Value::Null);
    let reply = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = reply
        .get("content")
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in reply
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        // A model that wrote broken JSON still called the tool; keep what it wrote.
        let input = serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({ "arguments": arguments }));
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(json!("")),
            "name": function.get("name").cloned().unwrap_or(json!("")),
            "input": input,
        }));
    }
    let usage = completion
        .get("usage")
        .map(tollgate_upstream::openai::parse_usage)
        .unwrap_or_default();
    json!({
        "id": message_id(completion.get("id").and_then(Value::as_str).unwrap_or_default()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": choice.get("finish_reason").and_then(Value::as_str).map(stop_reason),
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    })
}
