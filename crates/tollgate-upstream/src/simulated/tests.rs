//! Tests for the simulated model: determinism, limits, stop sequences, event order, system
//! messages between turns, tool calls under each `tool_choice`, JSON outputs and pings.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::simulated::{Simulated, SimulatedConfig};
use crate::sse::{SseEvent, UsageAccumulator};
use crate::{UpstreamError, UpstreamReply, UpstreamRequest};

fn request(body: &Value, stream: bool) -> UpstreamRequest {
    UpstreamRequest {
        body: Bytes::from(body.to_string()),
        stream,
        anthropic_version: None,
        anthropic_beta: None,
        client_headers: Default::default(),
        query: None,
    }
}

fn body(max_tokens: u64) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": max_tokens,
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "Tell me about ledgers."},
            {"role": "assistant", "content": [{"type": "text", "text": "Which kind?"}]},
            {"role": "user", "content": [{"type": "text", "text": "Double-entry ones."}]},
        ],
    })
}

fn unpaced() -> Simulated {
    Simulated::new(SimulatedConfig { tokens_per_second: 0 })
}

async fn message(simulated: &Simulated, body: &Value) -> (Value, tollgate_core::usage::TokenUsage) {
    match simulated.messages(request(body, false)).await {
        Ok(UpstreamReply::Message { body, usage }) => {
            let value = serde_json::from_slice(&body).expect("the reply is JSON");
            (value, usage)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn events(simulated: &Simulated, body: &Value) -> Vec<SseEvent> {
    match simulated.messages(request(body, true)).await {
        Ok(UpstreamReply::Stream(stream)) => {
            stream
                .map(|event| event.expect("simulated streams do not fail"))
                .collect()
                .await
        }
        other => panic!("expected a stream, got {other:?}"),
    }
}

fn text_of(reply: &Value) -> &str {
    reply["content"][0]["text"].as_str().expect("a text block")
}

#[tokio::test]
async fn replies_depend_only_on_the_request() {
    let simulated = unpaced();
    let (first, first_usage) = message(&simulated, &body(1000)).await;
    let (second, second_usage) = message(&unpaced(), &body(1000)).await;
    assert_eq!(text_of(&first), text_of(&second));
    assert_eq!(first_usage, second_usage);
    assert_ne!(first["id"], second["id"]);
    let id = first["id"].as_str().expect("an id");
    assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");

    let mut other_body = body(1000);
    other_body["messages"][2]["content"][0]["text"] = json!("Single-entry ones.");
    let (other, _) = message(&simulated, &other_body).await;
    assert_ne!(text_of(&first), text_of(&other));

    assert_eq!(first["type"], "message");
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["model"], "claude-sonnet-4-5");
    assert_eq!(first["stop_reason"], "end_turn");
    assert_eq!(first["stop_sequence"], Value::Null);
    assert_eq!(first["usage"]["output_tokens"], first_usage.output_tokens);
    assert_eq!(first["usage"]["input_tokens"], first_usage.input_tokens);
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    assert!((20..=300).contains(&first_usage.output_tokens));
    // "You are terse." + 3 message texts = 14 + 22 + 11 + 18 = 65 bytes -> 17, + 3 x 3.
    assert_eq!(first_usage.input_tokens, 26);
    let count = simulated
        .count_tokens(request(&body(1000), false))
        .expect("a valid body");
    assert_eq!(count, 26);
}

#[tokio::test]
async fn max_tokens_caps_the_reply_to_a_prefix() {
    let simulated = unpaced();
    let (full, _) = message(&simulated, &body(1000)).await;
    let (capped, usage) = message(&simulated, &body(7)).await;
    assert_eq!(usage.output_tokens, 7);
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert!(text_of(&full).starts_with(text_of(&capped)));
    assert_eq!(text_of(&capped).split_whitespace().count(), 7);
}

#[tokio::test]
async fn a_stop_sequence_cuts_the_reply_before_it() {
    let simulated = unpaced();
    let (full, full_usage) = message(&simulated, &body(1000)).await;
    let full_text = text_of(&full);
    let words: Vec<&str> = full_text.split(' ').collect();
    let stop = format!(" {}", words[10]);
    let cut_at = full_text.find(&stop).expect("the word is in the text");

    let mut stopped_body = body(1000);
    stopped_body["stop_sequences"] = json!(["never appears ~~", stop]);
    let (stopped, usage) = message(&simulated, &stopped_body).await;
    assert_eq!(text_of(&stopped), &full_text[..cut_at]);
    assert_eq!(stopped["stop_reason"], "stop_sequence");
    assert_eq!(stopped["stop_sequence"], json!(stop));
    // The tokens before the cut plus the one that completed the stop sequence.
    assert!(usage.output_tokens <= 11 && usage.output_tokens < full_usage.output_tokens);
}

#[tokio::test]
async fn streams_follow_anthropics_event_order_and_match_the_message() {
    let simulated = unpaced();
    let (reply, usage) = message(&simulated, &body(1000)).await;
    let events = events(&simulated, &body(1000)).await;
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    let deltas = names.len() - 6;
    assert!(deltas >= 1);
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start: Value = serde_json::from_str(&events[0].data).expect("JSON");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    let text: String = events[3..3 + deltas]
        .iter()
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).expect("JSON");
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(text, text_of(&reply));
    let message_delta: Value = serde_json::from_str(&events[names.len() - 2].data).expect("JSON");
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");

    let mut accumulator = UsageAccumulator::default();
    events.iter().for_each(|event| accumulator.observe(event));
    assert_eq!(accumulator.usage(), usage);
    assert!(accumulator.saw_message_stop() && accumulator.saw_content() && !accumulator.saw_error());
}

#[tokio::test(start_paused = true)]
async fn streams_are_paced_at_tokens_per_second() {
    let simulated = Simulated::new(SimulatedConfig {
        tokens_per_second: 100,
    });
    let started = tokio::time::Instant::now();
    let events = events(&simulated, &body(50)).await;
    assert_eq!(events.len(), 6 + 10); // 50 tokens in deltas of 100 / 20 = 5.
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(500));

    let started = tokio::time::Instant::now();
    let (_, usage) = message(&simulated, &body(50)).await;
    assert_eq!(usage.output_tokens, 50);
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(500));
}

#[tokio::test]
async fn malformed_bodies_get_an_invalid_request_envelope() {
    let simulated = unpaced();
    let cases = [
        json!([1, 2]),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": []}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]}),
        json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "m", "max_tokens": 5, "stop_sequences": [1], "messages": [{"role": "user", "content": "hi"}]}),
    ];
    for case in cases {
        let Err(UpstreamError::Status { status, body, .. }) = simulated.messages(request(&case, false)).await
        else {
            panic!("{case} was accepted");
        };
        assert_eq!(status, 400);
        let envelope: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(envelope["type"], "error");
        assert_eq!(envelope["error"]["type"], "invalid_request_error", "{case}");
    }
    let not_json = UpstreamRequest {
        body: Bytes::from_static(b"{\"model\":"),
        ..request(&json!({}), false)
    };
    assert!(matches!(
        simulated.count_tokens(not_json),
        Err(UpstreamError::Status { status: 400, .. })
    ));
}

#[test]
fn input_tokens_never_exceed_the_body_bound() {
    // Goal: the gateway reserves credit for body bytes + 512 input tokens; tiny messages with
    // many per-message overheads and blocks whose JSON is re-serialized must stay under it.
    let simulated = unpaced();
    let many_empty: Vec<Value> = (0..500).map(|_| json!({"role": "user", "content": ""})).collect();
    let image = json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "ok"}]},
        {"type": "tool_use", "id": "t", "name": "read", "input": {"path": 1e2}},
    ]});
    for body in [
        json!({"model": "m", "messages": many_empty}),
        json!({"model": "m", "messages": [image], "tools": [{"name": "read", "input_schema": {}}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    ] {
        let upstream_request = request(&body, false);
        let bound = upstream_request.body.len() as u64 + 512;
        let count = simulated.count_tokens(upstream_request).expect("valid");
        assert!((1..=bound).contains(&count), "{count} > {bound}");
    }
}

#[tokio::test]
async fn a_system_message_between_turns_counts_as_system_prompt() {
    // Goal: Claude Code's mid-conversation system messages (its beta) are accepted, as a
    // string or as text blocks with cache breakpoints, and their tokens are input.
    let simulated = unpaced();
    let mut with_blocks = body(1000);
    with_blocks["messages"].as_array_mut().expect("a list").insert(
        1,
        json!({"role": "system", "content": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ]}),
    );
    let (reply, usage) = message(&simulated, &with_blocks).await;
    assert_eq!(reply["stop_reason"], "end_turn");
    // 65 bytes + "Be brief." (9) = 74 -> 19, + 4 messages x 3.
    assert_eq!(usage.input_tokens, 31);
    let mut with_string = body(1000);
    with_string["messages"]
        .as_array_mut()
        .expect("a list")
        .insert(1, json!({"role": "system", "content": "Be brief."}));
    let (same, same_usage) = message(&simulated, &with_string).await;
    assert_eq!(same_usage.input_tokens, 31);
    assert_eq!(
        text_of(&reply),
        text_of(&same),
        "the reply depends on the text alone"
    );
    let (without, _) = message(&simulated, &body(1000)).await;
    assert_ne!(text_of(&reply), text_of(&without));
    let count = simulated
        .count_tokens(request(&with_blocks, false))
        .expect("a valid body");
    assert_eq!(count, 31);
}

/// Tools shaped like the ones coding agents send.
fn agent_tools() -> Value {
    json!([
        {"name": "Bash", "description": "Runs a shell command.", "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string"},
                "timeout": {"type": "number", "maximum": 600000},
                "description": {"type": "string"},
            },
            "required": ["command"],
            "additionalProperties": false,
        }},
        {"name": "Read", "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["file_path"],
        }},
    ])
}

fn with_tools(prompt: &str, tool_choice: Option<Value>) -> Value {
    let mut body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "tools": agent_tools(),
        "messages": [{"role": "user", "content": prompt}],
    });
    if let Some(tool_choice) = tool_choice {
        body["tool_choice"] = tool_choice;
    }
    body
}

#[tokio::test]
async fn a_forced_tool_is_called_with_an_input_its_schema_accepts() {
    let simulated = unpaced();
    let body = with_tools(
        "Tell me about ledgers.",
        Some(json!({"type": "tool", "name": "Bash"})),
    );
    let (reply, usage) = message(&simulated, &body).await;
    assert_eq!(reply["stop_reason"], "tool_use");
    assert_eq!(reply["stop_sequence"], Value::Null);
    assert_eq!(reply["content"].as_array().map(Vec::len), Some(1));
    let call = &reply["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "Bash");
    assert_eq!(call["input"], json!({"command": "echo hello"}));
    let id = call["id"].as_str().expect("an id");
    assert!(id.starts_with("toolu_01") && id.len() == 30, "{id}");
    // `{"command":"echo hello"}` is 24 characters: 6 tokens of 4.
    assert_eq!(usage.output_tokens, 6);
    assert_eq!(reply["usage"]["output_tokens"], 6);
    assert_eq!(reply["usage"]["service_tier"], "standard");

    let (read, _) = message(
        &simulated,
        &with_tools(
            "Tell me about ledgers.",
            Some(json!({"type": "tool", "name": "Read"})),
        ),
    )
    .await;
    assert_eq!(read["content"][0]["input"], json!({"file_path": "/dev/null"}));

    let unknown = with_tools("hi", Some(json!({"type": "tool", "name": "Write"})));
    assert!(matches!(
        simulated.messages(request(&unknown, false)).await,
        Err(UpstreamError::Status { status: 400, .. })
    ));
}

#[tokio::test]
async fn a_streamed_tool_call_opens_empty_and_sends_its_input_in_json_deltas() {
    let simulated = unpaced();
    let body = with_tools("Tell me about ledgers.", Some(json!({"type": "any"})));
    let (reply, usage) = message(&simulated, &body).await;
    let events = events(&simulated, &body).await;
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    let deltas = names.len() - 6;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let data: Vec<Value> = events
        .iter()
        .map(|event| serde_json::from_str(&event.data).expect("JSON"))
        .collect();
    assert_eq!(data[0]["message"]["usage"]["service_tier"], "standard");
    let start = &data[1]["content_block"];
    assert_eq!(start["type"], "tool_use");
    assert_eq!(start["name"], "Bash", "any without a named tool calls the first");
    assert_eq!(start["input"], json!({}));
    assert!(start["id"].as_str().expect("an id").starts_with("toolu_01"));
    let partial_json: String = data[3..3 + deltas]
        .iter()
        .map(|delta| {
            assert_eq!(delta["delta"]["type"], "input_json_delta");
            delta["delta"]["partial_json"].as_str().expect("text").to_owned()
        })
        .collect();
    let input: Value = serde_json::from_str(&partial_json).expect("the deltas make JSON");
    assert_eq!(input, reply["content"][0]["input"]);
    assert_eq!(data[names.len() - 2]["delta"]["stop_reason"], "tool_use");

    let mut accumulator = UsageAccumulator::default();
    events.iter().for_each(|event| accumulator.observe(event));
    assert_eq!(accumulator.usage(), usage);
}

#[tokio::test]
async fn tools_are_called_under_auto_only_when_the_user_names_one() {
    // Goal: an agent loop ends. Under auto (or no tool_choice) a tool is called only when
    // the last user turn names it; after a tool result the answer is text.
    let simulated = unpaced();
    let stop_reason_and_tool = |reply: &Value| {
        (
            reply["stop_reason"].as_str().unwrap_or_default().to_owned(),
            reply["content"][0]["name"].as_str().map(str::to_owned),
        )
    };
    let cases = [
        ("Reply with the word pong", None, "end_turn", None),
        (
            "Reply with the word pong",
            Some(json!({"type": "auto"})),
            "end_turn",
            None,
        ),
        (
            "Please use Read, then Bash, on it.",
            None,
            "tool_use",
            Some("Read"),
        ),
        (
            "Please use Read, then Bash, on it.",
            Some(json!({"type": "none"})),
            "end_turn",
            None,
        ),
        ("Bashful readers read quietly.", None, "end_turn", None),
        (
            "Bashful readers read quietly.",
            Some(json!({"type": "any"})),
            "tool_use",
            Some("Bash"),
        ),
        (
            "Whatever Read says.",
            Some(json!({"type": "any"})),
            "tool_use",
            Some("Read"),
        ),
    ];
    for (prompt, tool_choice, stop_reason, tool) in cases {
        let (reply, _) = message(&simulated, &with_tools(prompt, tool_choice.clone())).await;
        assert_eq!(
            stop_reason_and_tool(&reply),
            (stop_reason.to_owned(), tool.map(str::to_owned)),
            "{prompt} {tool_choice:?}"
        );
    }

    let mut after_result = with_tools("Please use Bash to list files.", None);
    let (first, _) = message(&simulated, &after_result).await;
    let call = first["content"][0].clone();
    assert_eq!(call["name"], "Bash");
    let messages = after_result["messages"].as_array_mut().expect("a list");
    messages.push(json!({"role": "assistant", "content": [call.clone()]}));
    messages.push(json!({"role": "system", "content": "Results follow."}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "hello"},
        {"type": "text", "text": "Use Bash again if you like."},
    ]}));
    let (second, _) = message(&simulated, &after_result).await;
    assert_eq!(second["stop_reason"], "end_turn");
    assert_eq!(second["content"][0]["type"], "text");
}

#[tokio::test]
async fn made_up_inputs_fill_every_required_field_within_its_schema() {
    let simulated = unpaced();
    let schema = json!({
        "type": "object",
        "$defs": {"todo": {"type": "object", "properties": {
            "content": {"type": "string", "minLength": 8},
            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
            "id": {"type": "string", "maxLength": 3},
        }, "required": ["content", "status", "id"]}},
        "properties": {
            "todos": {"type": "array", "items": {"$ref": "#/$defs/todo"}, "minItems": 2},
            "url": {"type": "string", "format": "uri"},
            "retries": {"type": "integer", "minimum": 3},
            "dry_run": {"type": "boolean"},
            "mode": {"anyOf": [{"type": "null"}, {"type": "string", "const": "fast"}]},
            "limits": {"type": "object", "properties": {"depth": {"type": ["integer", "null"], "exclusiveMaximum": 0}}, "required": ["depth"]},
            "optional": {"type": "string"},
            "note": {"type": "string", "default": "as is"},
        },
        "required": ["todos", "url", "retries", "dry_run", "mode", "limits", "note"],
    });
    let body = json!({
        "model": "m",
        "max_tokens": 1000,
        "tools": [{"name": "plan", "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "plan"},
        "messages": [{"role": "user", "content": "Plan it."}],
    });
    let (reply, _) = message(&simulated, &body).await;
    assert_eq!(
        reply["content"][0]["input"],
        json!({
            "todos": [{"content": "helloooo", "status": "pending", "id": "hel"}, {"content": "helloooo", "status": "pending", "id": "hel"}],
            "url": "https://example.com",
            "retries": 3,
            "dry_run": false,
            "mode": "fast",
            "limits": {"depth": -1},
            "note": "as is",
        })
    );
}

#[tokio::test]
async fn a_tool_call_that_does_not_fit_max_tokens_becomes_capped_prose() {
    let simulated = unpaced();
    let mut body = with_tools("hi", Some(json!({"type": "tool", "name": "Bash"})));
    body["max_tokens"] = json!(5);
    let (reply, usage) = message(&simulated, &body).await;
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["content"][0]["type"], "text");
    assert_eq!(usage.output_tokens, 5);
}

#[tokio::test]
async fn json_outputs_answer_with_json_text() {
    // Goal: Messages' JSON outputs (`output_config.format`) get a value that fits the
    // schema, and a system prompt asking for a JSON object (the gateway's wording of
    // OpenAI's json_object mode) gets one.
    let simulated = unpaced();
    let mut schema_body = body(1000);
    schema_body["output_config"] = json!({"format": {"type": "json_schema", "schema": {
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"}}, "count": {"type": "integer"}},
        "required": ["colours", "count"],
        "additionalProperties": false,
    }}});
    let (reply, usage) = message(&simulated, &schema_body).await;
    assert_eq!(reply["stop_reason"], "end_turn");
    let value: Value = serde_json::from_str(text_of(&reply)).expect("JSON text");
    assert_eq!(value, json!({"colours": ["hello"], "count": 1}));
    assert_eq!(usage.output_tokens, text_of(&reply).len().div_ceil(4) as u64);

    let mut object_body = body(1000);
    object_body["system"] = json!([
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Respond with a single JSON object and nothing else."},
    ]);
    let (reply, _) = message(&simulated, &object_body).await;
    let value: Value = serde_json::from_str(text_of(&reply)).expect("JSON text");
    assert!(
        value["answer"].as_str().is_some_and(|answer| answer.len() > 20),
        "{value}"
    );
    let streamed: String = events(&simulated, &object_body)
        .await
        .iter()
        .filter(|event| event.event == "content_block_delta")
        .map(|event| {
            let data: Value = serde_json::from_str(&event.data).expect("JSON");
            data["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(streamed, text_of(&reply));

    // Asked for JSON in an earlier system block only, or not at all: prose.
    object_body["system"] = json!([
        {"type": "text", "text": "Write a JSON object when asked."},
        {"type": "text", "text": "You are terse."},
    ]);
    let (reply, _) = message(&simulated, &object_body).await;
    assert!(serde_json::from_str::<Value>(text_of(&reply)).is_err());
    let (prose, _) = message(&simulated, &body(1000)).await;
    assert!(serde_json::from_str::<Value>(text_of(&prose)).is_err());
}

#[tokio::test(start_paused = true)]
async fn slow_streams_are_pinged_every_five_seconds() {
    let simulated = Simulated::new(SimulatedConfig {
        tokens_per_second: 10,
    });
    let started = tokio::time::Instant::now();
    let events = events(&simulated, &body(60)).await;
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(6));
    let pings: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| event.event == "ping")
        .map(|(index, _)| index)
        .collect();
    // After the block opens, then at 5 s: after the 50th delta (one token per delta, each
    // due 100 ms after the last).
    assert_eq!(pings, vec![2, 3 + 50]);
    assert_eq!(events.len(), 6 + 60 + 1);
}
