//! Translation round trips on recorded requests, replies and streams
//! (`tests/fixtures/`): each direction matches the expected translation, and going there
//! and back again loses nothing the two APIs can both say.

use serde_json::{Map, Value, json};
use tollgate_upstream::openai::MaxTokensField;
use tollgate_upstream::sse::SseEvent;

use crate::translate::reply::{chat_completion_to_message, message_to_chat_completion};
use crate::translate::request::{JSON_OBJECT_INSTRUCTION, chat_to_messages, messages_to_chat};
use crate::translate::stream::{ToChatChunks, ToMessageEvents};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn object(value: &Value) -> &Map<String, Value> {
    value.as_object().expect("an object")
}

/// A recorded SSE body as events (the test's own tiny parser: one `event:` and one
/// `data:` line per event is all the fixtures use).
fn sse_fixture(name: &str) -> Vec<SseEvent> {
    fixture(name)
        .split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut event = SseEvent {
                event: String::new(),
                data: String::new(),
            };
            for line in chunk.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.event = name.to_owned();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data = data.to_owned();
                }
            }
            event
        })
        .collect()
}

#[test]
fn a_chat_request_becomes_the_messages_request_and_back() {
    let chat = json_fixture("openai_chat_request.json");
    let messages = chat_to_messages(object(&chat), "claude-sonnet-4-6", 300).expect("translatable");
    assert_eq!(messages, json_fixture("expected_messages_from_chat_request.json"));
    let back = messages_to_chat(object(&messages), "claude-sonnet-4-6", MaxTokensField::MaxTokens)
        .expect("translatable");
    assert_eq!(back, chat, "the round trip keeps everything both APIs can say");
}

#[test]
fn a_messages_request_becomes_the_chat_request_and_back() {
    let messages = json_fixture("anthropic_messages_request.json");
    let chat =
        messages_to_chat(object(&messages), "gpt-4.1", MaxTokensField::MaxTokens).expect("translatable");
    assert_eq!(chat, json_fixture("expected_chat_from_messages_request.json"));
    let back = chat_to_messages(object(&chat), "house-model", 1024).expect("translatable");
    assert_eq!(
        back, messages,
        "the round trip keeps everything both APIs can say"
    );
    let reasoning =
        messages_to_chat(object(&messages), "o3", MaxTokensField::MaxCompletionTokens).expect("ok");
    assert_eq!(reasoning["max_completion_tokens"], 1024);
    assert!(reasoning.get("max_tokens").is_none());
}

#[test]
fn requests_that_cannot_be_said_in_the_other_api_are_refused() {
    let server_tool = json!({
        "model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    });
    let error =
        messages_to_chat(object(&server_tool), "gpt", MaxTokensField::MaxTokens).expect_err("refused");
    assert_eq!(error.param.as_deref(), Some("tools.0"));
    let audio = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
    ]}]});
    let error = chat_to_messages(object(&audio), "claude", 5).expect_err("refused");
    assert_eq!(error.param.as_deref(), Some("messages[0].content[0]"));
    let broken_arguments = json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{nope"}}]}
    ]});
    assert!(chat_to_messages(object(&broken_arguments), "claude", 5).is_err());
    let stream = json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let chat = messages_to_chat(object(&stream), "gpt", MaxTokensField::MaxTokens).expect("ok");
    assert_eq!(
        chat["stream_options"],
        json!({"include_usage": true}),
        "streams always ask for the usage that meters them"
    );
}

#[test]
fn a_message_reply_becomes_a_chat_completion_and_back() {
    let message = json_fixture("anthropic_message_reply.json");
    let completion = message_to_chat_completion(&message, "claude-sonnet-4-6", 1_767_225_600);
    assert_eq!(
        completion,
        json_fixture("expected_chat_completion_from_message.json")
    );
    let back = chat_completion_to_message(&completion, "claude-sonnet-4-6");
    assert_eq!(
        back, message,
        "the round trip keeps content, stop reason and usage"
    );
}

/// What an Anthropic SDK would make of an event stream: the final message.
fn fold_anthropic(events: &[SseEvent]) -> Value {
    let mut message = json!({});
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial_json: Vec<String> = Vec::new();
    for event in events {
        let data: Value = serde_json::from_str(&event.data).expect("json");
        match event.event.as_str() {
            "message_start" => {
                message["id"] = data["message"]["id"].clone();
                message["model"] = data["message"]["model"].clone();
                message["usage"] = data["message"]["usage"].clone();
            }
            "content_block_start" => {
                blocks.push(data["content_block"].clone());
                partial_json.push(String::new());
            }
            "content_block_delta" => {
                let index = usize::try_from(data["index"].as_u64().expect("index")).expect("small");
                match data["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        let text = format!(
                            "{}{}",
                            blocks[index]["text"].as_str().unwrap_or_default(),
                            data["delta"]["text"].as_str().expect("text")
                        );
                        blocks[index]["text"] = json!(text);
                    }
                    Some("input_json_delta") => {
                        partial_json[index].push_str(data["delta"]["partial_json"].as_str().expect("json"))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                for (key, value) in data["usage"].as_object().expect("usage") {
                    message["usage"][key] = value.clone();
                }
            }
            _ => {}
        }
    }
    for (block, json_text) in blocks.iter_mut().zip(partial_json) {
        if block["type"] == "tool_use" && !json_text.is_empty() {
            block["input"] = serde_json::from_str(&json_text).expect("complete tool input");
        }
    }
    message["content"] = Value::Array(blocks);
    message
}

/// What an OpenAI SDK would make of a chunk stream: text, tool calls, finish and usage.
fn fold_chat(events: &[SseEvent]) -> Value {
    let mut text = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    for event in events.iter().filter(|event| event.data != "[DONE]") {
        let chunk: Value = serde_json::from_str(&event.data).expect("json");
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let index = usize::try_from(call["index"].as_u64().expect("index")).expect("small");
            if calls.len() <= index {
                calls.push(json!({"id": call["id"], "name": call["function"]["name"], "arguments": ""}));
            }
            let arguments = format!(
                "{}{}",
                calls[index]["arguments"].as_str().unwrap_or_default(),
                call["function"]["arguments"].as_str().unwrap_or_default()
            );
            calls[index]["arguments"] = json!(arguments);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    json!({"text": text, "tool_calls": calls, "finish_reason": finish, "usage": usage})
}

#[test]
fn an_anthropic_stream_becomes_chat_chunks_and_back() {
    let events = sse_fixture("anthropic_stream_tool_use.sse");
    let mut to_chat = ToChatChunks::new("claude-sonnet-4-6", 1_767_225_600, true);
    let chunks: Vec<SseEvent> = events.iter().flat_map(|event| to_chat.translate(event)).collect();
    let expected: Vec<String> = fixture("expected_chat_chunks_from_anthropic_stream.jsonl")
        .lines()
        .map(str::to_owned)
        .collect();
    let got: Vec<Value> = chunks
        .iter()
        .map(|chunk| serde_json::from_str(&chunk.data).unwrap_or(json!(chunk.data)))
        .collect();
    let expected: Vec<Value> = expected
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or(json!(line)))
        .collect();
    assert_eq!(got, expected);
    assert!(
        chunks.iter().all(|chunk| chunk.event.is_empty()),
        "data lines only"
    );

    let mut to_messages = ToMessageEvents::new("claude-sonnet-4-6");
    let mut back: Vec<SseEvent> = chunks
        .iter()
        .flat_map(|chunk| to_messages.translate(chunk))
        .collect();
    back.extend(to_messages.finish());
    assert_eq!(
        back.last().map(|event| event.event.as_str()),
        Some("message_stop")
    );
    let original = fold_anthropic(&events);
    let round_trip = fold_anthropic(&back);
    assert_eq!(round_trip["content"], original["content"]);
    assert_eq!(round_trip["stop_reason"], original["stop_reason"]);
    assert_eq!(round_trip["id"], original["id"]);
    assert_eq!(round_trip["usage"]["output_tokens"], 31);
    assert_eq!(round_trip["usage"]["input_tokens"], 42);
    assert_eq!(round_trip["usage"]["cache_read_input_tokens"], 8);
}

#[test]
fn a_chat_stream_becomes_anthropic_events_and_back() {
    let chunks = sse_fixture("openai_stream_tool_call.sse");
    let mut to_messages = ToMessageEvents::new("house-model");
    let events: Vec<SseEvent> = chunks
        .iter()
        .flat_map(|chunk| to_messages.translate(chunk))
        .collect();
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(
        names
            .iter()
            .filter(|name| **name == "content_block_start")
            .count(),
        names.iter().filter(|name| **name == "content_block_stop").count(),
        "every block opened is closed"
    );
    let message = fold_anthropic(&events);
    let expected = json_fixture("expected_message_from_openai_stream.json");
    for key in ["id", "model", "content", "stop_reason", "usage"] {
        assert_eq!(message[key], expected[key], "{key}");
    }

    let mut to_chat = ToChatChunks::new("house-model", 1_767_225_600, true);
    let back: Vec<SseEvent> = events.iter().flat_map(|event| to_chat.translate(event)).collect();
    assert_eq!(back.last().map(|event| event.data.as_str()), Some("[DONE]"));
    let original = fold_chat(&chunks);
    let round_trip = fold_chat(&back);
    assert_eq!(round_trip["text"], original["text"]);
    assert_eq!(round_trip["tool_calls"], original["tool_calls"]);
    assert_eq!(round_trip["finish_reason"], original["finish_reason"]);
    assert_eq!(round_trip["usage"]["prompt_tokens"], 77);
    assert_eq!(round_trip["usage"]["completion_tokens"], 19);
    assert_eq!(round_trip["usage"]["prompt_tokens_details"]["cached_tokens"], 64);
}

#[test]
fn a_chat_stream_cut_before_finishing_gets_no_closing_events() {
    let mut to_messages = ToMessageEvents::new("m");
    let first = SseEvent {
        event: String::new(),
        data: json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}).to_string(),
    };
    assert!(!to_messages.translate(&first).is_empty());
    assert!(
        to_messages.finish().is_empty(),
        "no finish_reason: the stream is incomplete"
    );
    let mut finished = ToMessageEvents::new("m");
    finished.translate(&first);
    finished.translate(&SseEvent {
        event: String::new(),
        data: json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            .to_string(),
    });
    let closing = finished.finish();
    assert_eq!(
        closing.last().map(|event| event.event.as_str()),
        Some("message_stop")
    );
    assert!(closing.iter().any(|event| event.data.contains("\"max_tokens\"")));
}

#[test]
fn a_system_message_between_turns_stays_in_place_for_chat_and_joins_system_for_messages() {
    // Goal: Claude Code's mid-conversation system messages (a string, or text blocks with
    // cache breakpoints) reach an OpenAI-compatible upstream where they stand, while a Chat
    // Completions client's late system and developer messages reach Messages upstreams as
    // the top-level system prompt, in order, since Messages takes them between turns only
    // with a beta.
    let messages = json!({
        "model": "m", "max_tokens": 5,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [
                {"type": "text", "text": "The date is 2026-12-03."},
                {"type": "text", "text": "Mind the ledger.", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "pong?"}]},
        ],
    });
    let chat = messages_to_chat(object(&messages), "gpt", MaxTokensField::MaxTokens).expect("translatable");
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "The date is 2026-12-03.\n\nMind the ledger."},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "pong?"},
        ])
    );

    let chat = json!({"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Mind the ledger."}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "pong?"},
    ]});
    let messages = chat_to_messages(object(&chat), "claude", 5).expect("translatable");
    assert_eq!(
        messages["system"],
        json!([
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Mind the ledger."},
            {"type": "text", "text": "Be brief."},
        ])
    );
    assert_eq!(
        messages["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": "pong?"},
        ])
    );
}

#[test]
fn response_formats_become_output_config_or_a_closing_instruction() {
    // Goal: JSON modes are honoured, not dropped: a schema is Messages' `output_config.format`
    // (and back), `json_object` a closing system instruction, since Messages' JSON outputs
    // need a schema; a format neither API knows is refused.
    let chat = |format: Value| {
        json!({"model": "m", "response_format": format, "messages": [
            {"role": "system", "content": "You list colours."},
            {"role": "user", "content": "Three colours as JSON."},
        ]})
    };
    let json_object =
        chat_to_messages(object(&chat(json!({"type": "json_object"}))), "claude", 5).expect("ok");
    assert_eq!(
        json_object["system"],
        json!([
            {"type": "text", "text": "You list colours."},
            {"type": "text", "text": JSON_OBJECT_INSTRUCTION},
        ])
    );
    assert!(json_object.get("output_config").is_none());

    let schema = json!({
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
        "required": ["colours"],
        "additionalProperties": false,
    });
    let json_schema = chat(
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
    );
    let messages = chat_to_messages(object(&json_schema), "claude", 5).expect("ok");
    assert_eq!(
        messages["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    assert_eq!(
        messages["system"],
        json!([{"type": "text", "text": "You list colours."}])
    );
    let back = messages_to_chat(object(&messages), "m", MaxTokensField::MaxTokens).expect("ok");
    assert_eq!(back["response_format"], json_schema["response_format"]);

    let text = chat_to_messages(object(&chat(json!({"type": "text"}))), "claude", 5).expect("ok");
    assert!(text.get("output_config").is_none() && text["system"].as_array().map(Vec::len) == Some(1));
    for refused in [
        json!({"type": "grammar"}),
        json!({"type": "json_schema", "json_schema": {"name": "x"}}),
    ] {
        let error = chat_to_messages(object(&chat(refused.clone())), "claude", 5).expect_err("refused");
        assert_eq!(error.param.as_deref(), Some("response_format"), "{refused}");
    }
}
