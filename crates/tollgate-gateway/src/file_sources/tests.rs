use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::file_sources::{named_file_ids, rewrite_sources};

fn body(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn request() -> Map<String, Value> {
    body(json!({
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "file", "file_id": "file_a"}, "title": "A", "citations": {"enabled": true}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "text", "text": "compare"}
            ]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "image", "source": {"type": "file", "file_id": "file_b"}}
                ]},
                {"type": "document", "source": {"type": "file", "file_id": "file_a"}}
            ]}
        ]
    }))
}

#[test]
fn the_files_named_are_those_of_file_sources_anywhere_in_the_content() {
    let ids: Vec<String> = named_file_ids(&request()).into_iter().collect();
    assert_eq!(ids, ["file_a", "file_b"]);
    let plain = body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(named_file_ids(&plain).is_empty());
}

#[test]
fn only_the_sources_of_named_files_change() {
    let sources = HashMap::from([
        (
            "file_a".to_owned(),
            json!({"type": "file", "file_id": "file_provider_a"}),
        ),
        (
            "file_b".to_owned(),
            json!({"type": "base64", "media_type": "image/png", "data": "BBBB"}),
        ),
    ]);
    let rewritten = rewrite_sources(&request(), &sources);
    let mut expected = request();
    expected["messages"][0]["content"][0]["source"] = json!({"type": "file", "file_id": "file_provider_a"});
    expected["messages"][2]["content"][0]["content"][0]["source"] =
        json!({"type": "base64", "media_type": "image/png", "data": "BBBB"});
    expected["messages"][2]["content"][1]["source"] = json!({"type": "file", "file_id": "file_provider_a"});
    assert_eq!(Value::Object(rewritten), Value::Object(expected));
}
