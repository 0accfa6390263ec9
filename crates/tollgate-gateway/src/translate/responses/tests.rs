//! The Responses translation on hand-written requests and chunk sequences: what reaches the
//! upstream as Chat Completions, and which events a client sees in which order.

use serde_json::{Map, Value, json};
use tollgate_upstream::sse::SseEvent;

use crate::translate::responses::{
    ResponseFrame, ToResponseEvents, chat_completion_to_response, responses_to_chat,
};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> SseEvent {
    SseEvent {
        event: String::new(),
        data: json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).to_string(),
    }
}

#[test]
fn items_become_chat_messages_with_tool_calls_grouped_in_one_assistant_turn() {
    let request = object(json!({
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"type": "custom_tool_call", "call_id": "call_3", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_3", "output": [{"type": "input_text", "text": "Done"}]},
        ],
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "description": "Patch files."},
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 50,
        "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
    }));
    let (chat, input) = responses_to_chat(&request, &[]).expect("translates");
    assert_eq!(input.len(), 7);
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": "Done"},
        ])
    );
    let tools = chat["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 2, "the hosted tool is dropped");
    assert_eq!(tools[1]["function"]["parameters"]["required"], json!(["input"]));
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(chat["max_completion_tokens"], 50);
    assert!(chat.get("reasoning").is_none() && chat.get("reasoning_effort").is_none());
    assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
}

#[test]
fn input_that_cannot_be_carried_is_refused_naming_the_item() {
    let request = object(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    let error = responses_to_chat(&request, &[]).expect_err("refused");
    assert_eq!(error.to_openai_json()["error"]["param"], "input[0]");
    let request = object(json!({"model": "m"}));
    let error = responses_to_chat(&request, &[]).expect_err("refused");
    assert_eq!(error.to_openai_json()["error"]["param"], "input");
}

#[test]
fn a_whole_completion_becomes_a_response_with_its_calls_and_usage() {
    let request =
        object(json!({"model": "m", "input": "Hi", "tools": [{"type": "custom", "name": "apply_patch"}]}));
    let frame = ResponseFrame::new("resp_1".into(), 7, &request);
    let completion = json!({
        "choices": [{"message": {"content": "Patching.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"diff\"}"}},
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}},
    });
    let response = chat_completion_to_response(&completion, &frame);
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "Patching.");
    assert_eq!(
        response["output"][1],
        json!({"type": "custom_tool_call", "id": "ctc_9", "call_id": "call_9", "name": "apply_patch", "input": "diff", "status": "completed"})
    );
    assert_eq!(
        response["usage"],
        json!({
            "input_tokens": 12,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 17,
        })
    );
    assert_eq!(response["tool_choice"], "auto", "defaults are shown");
}

#[test]
fn a_stream_of_text_then_a_call_is_two_items_in_order() {
    let request = object(json!({"model": "m", "input": "Hi"}));
    let mut converter = ToResponseEvents::new(ResponseFrame::new("resp_1".into(), 7, &request));
    let mut events = Vec::new();
    for event in [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Let me "}), None),
        chunk(json!({"content": "check."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        SseEvent {
            event: String::new(),
            data: json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).to_string(),
        },
        SseEvent {
            event: String::new(),
            data: "[DONE]".into(),
        },
    ] {
        events.extend(converter.translate(&event));
    }
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let completed = converter.completed().expect("completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], "Let me check.");
    assert_eq!(completed["output"][1]["arguments"], "{}");
    assert_eq!(completed["usage"]["total_tokens"], 7);
    let sequence: Vec<u64> = events
        .iter()
        .map(|event| {
            serde_json::from_str::<Value>(&event.data).expect("json")["sequence_number"]
                .as_u64()
                .expect("number")
        })
        .collect();
    assert_eq!(sequence, (0..14).collect::<Vec<u64>>());
}

#[test]
fn an_upstream_error_in_the_stream_ends_it_failed() {
    let request = object(json!({"model": "m", "input": "Hi"}));
    let mut converter = ToResponseEvents::new(ResponseFrame::new("resp_1".into(), 7, &request));
    let events = converter.translate(&SseEvent {
        event: String::new(),
        data: json!({"error": {"message": "Overloaded", "type": "server_error", "code": null}}).to_string(),
    });
    let names: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    assert!(converter.completed().is_none());
    assert!(converter.finish().is_empty());
}
