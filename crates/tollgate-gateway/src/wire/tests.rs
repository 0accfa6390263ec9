use bytes::Bytes;

use crate::wire::{Endpoint, MessagesRequest};

fn parse(json: &str) -> Result<MessagesRequest, String> {
    MessagesRequest::parse(&Bytes::from(json.to_owned()), Endpoint::Messages).map_err(|error| error.message)
}

#[test]
fn accepts_a_minimal_request_and_counts_media() {
    let request = parse(
        r#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"url","url":"x"}},
            {"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{}}]}]}],
            "unknown_field":{"kept":true}}"#,
    )
    .expect("valid");
    assert_eq!(
        (
            request.model.as_str(),
            request.max_tokens,
            request.stream,
            request.media_blocks
        ),
        ("m", Some(5), true, 2)
    );
}

#[test]
fn names_the_field_that_is_wrong() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (r#"{"max_tokens":1,"messages":[]}"#, "model: Field required"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens: Field required",
        ),
        (
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens: Input should be",
        ),
        (
            r#"{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens: Input should be",
        ),
        (r#"{"model":"m","max_tokens":1}"#, "messages: Field required"),
        (
            r#"{"model":"m","max_tokens":1,"messages":[]}"#,
            "at least one message",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"tool","content":"x"}]}"#,
            "messages.0.role: Input should be 'user', 'assistant' or 'system', not 'tool'",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[["nested"]]}]}"#,
            "messages.0.content.0: Input should be a valid dictionary",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"no type"}]}]}"#,
            "messages.0.content.0.type: Field required",
        ),
        (
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}"#,
            "messages.0.content: Field required",
        ),
        (
            r#"{"model":"m","max_tokens":1,"stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
            "stream:",
        ),
    ];
    for (body, expected) in cases {
        let message = parse(body).expect_err(body);
        assert!(message.contains(expected), "{body}: {message}");
    }
}

#[test]
fn rewrites_the_model_only_when_it_changes() {
    let original = Bytes::from_static(
        br#"{"model":"opus","max_tokens":1,"messages":[{"role":"user","content":"x"}],"extra":1}"#,
    );
    let request = MessagesRequest::parse(&original, Endpoint::Messages).expect("valid");
    assert_eq!(
        request.upstream_body(original.clone(), "opus").expect("same"),
        original
    );
    let rewritten: serde_json::Value = serde_json::from_slice(
        &request
            .upstream_body(original, "claude-opus-4-6")
            .expect("rewritten"),
    )
    .expect("json");
    assert_eq!(rewritten["model"], "claude-opus-4-6");
    assert_eq!(rewritten["extra"], 1);
}

/// Claude Code's default model sends a `system` message mid-conversation with the
/// `mid-conversation-system-2026-04-07` beta: it passes, byte for byte (#23).
#[test]
fn passes_a_mid_conversation_system_message_through() {
    let original = Bytes::from_static(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"system","content":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"go"}]}"#,
    );
    let request =
        MessagesRequest::parse(&original, Endpoint::Messages).expect("a system message is a known role");
    assert_eq!(
        request.upstream_body(original.clone(), "m").expect("same model"),
        original
    );
}

#[test]
fn reads_the_fields_that_bill_a_multiple() {
    // Goal: fast mode and data residency are reserved for and billed; the body is not
    // otherwise checked, so a value the upstream would refuse is its to refuse.
    let multipliers = |extra: &str| {
        parse(&format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}]{extra}}}"#
        ))
        .expect("valid")
        .multipliers
    };
    let none = multipliers("");
    assert!(!none.fast && !none.geo && !none.batch);
    assert!(multipliers(r#","speed":"fast""#).fast);
    assert!(!multipliers(r#","speed":"standard""#).fast);
    assert!(multipliers(r#","inference_geo":"us""#).geo);
    assert!(!multipliers(r#","inference_geo":"global""#).geo);
    assert!(!multipliers(r#","speed":7,"inference_geo":null"#).fast);
    let searches = |tools: &str| {
        parse(&format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],"tools":{tools}}}"#
        ))
        .expect("valid")
        .web_searches_max
    };
    assert_eq!(
        searches(
            r#"[{"type":"web_search_20250305","name":"web_search","max_uses":5},
                {"type":"web_search_20260209","name":"search_2","max_uses":3},
                {"name":"get_weather","input_schema":{"type":"object"},"max_uses":100}]"#
        ),
        8
    );
    assert_eq!(
        searches(r#"[{"type":"web_search_20250305","name":"web_search"}]"#),
        0
    );
}
