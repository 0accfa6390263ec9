//! Pins the exact bytes the fake puts on the wire, since gateway tests parse them as if they
//! came from Anthropic.

use crate::fake_upstream::wire::{
    MessageReply, Usage, error_envelope_json, error_kind, failing_stream_events, message_json, split_text,
    stall_event_index, stream_events,
};

fn reply(text: &str, output_tokens: u64) -> MessageReply<'_> {
    MessageReply {
        message_id: "msg_fake1",
        model: "claude-test",
        text,
        usage: Usage {
            input_tokens: 10,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
            output_tokens,
            server_tool_use: None,
            speed: None,
            inference_geo: None,
        },
        stop_reason: "end_turn",
    }
}

fn concat(events: &[bytes::Bytes]) -> String {
    events
        .iter()
        .map(|event| String::from_utf8_lossy(event).into_owned())
        .collect()
}

#[test]
fn message_json_matches_anthropic_shape() {
    let body = message_json(&reply("Hi", 2));
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"id":"msg_fake1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"output_tokens":2}}"#
    );
}

#[test]
fn stream_events_are_the_anthropic_sequence() {
    let events = stream_events(&reply("Hi", 2));
    let expected = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_fake1","type":"message","role":"assistant","model":"claude-test","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"output_tokens":1}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type":"ping"}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"H"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"i"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );
    assert_eq!(concat(&events), expected);
    assert_eq!(
        events.len(),
        8,
        "one element per event, so pacing and stalls act per event"
    );
}

#[test]
fn stream_uses_at_most_ten_deltas_and_at_least_one() {
    let long_text = "x".repeat(100);
    let many = stream_events(&reply(&long_text, 500));
    assert_eq!(many.len(), 3 + 10 + 3);
    let none = stream_events(&reply("Hi", 0));
    assert_eq!(none.len(), 3 + 1 + 3);
    assert!(concat(&none).contains(r#""usage":{"output_tokens":0}"#));
    assert!(concat(&none).contains(r#""cache_read_input_tokens":4,"output_tokens":0}"#));
}

#[test]
fn failing_stream_ends_with_overloaded_error_event() {
    let events = failing_stream_events(&reply("Hello", 20), 2);
    assert_eq!(events.len(), 3 + 2 + 1);
    assert_eq!(
        String::from_utf8_lossy(&events[5]),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    );
}

#[test]
fn stall_index_counts_head_and_deltas_capped_by_delta_count() {
    assert_eq!(stall_event_index(&reply("Hello", 20), 0), 3);
    assert_eq!(stall_event_index(&reply("Hello", 20), 2), 5);
    // Past the last delta the stall lands on content_block_stop, which always exists.
    assert_eq!(stall_event_index(&reply("Hello", 2), 7), 5);
}

#[test]
fn split_text_keeps_order_and_char_boundaries() {
    assert_eq!(split_text("abcdefg", 3), ["ab", "cd", "efg"]);
    assert_eq!(split_text("héllo wörld", 2), ["héllo", " wörld"]);
    assert_eq!(split_text("ab", 4), ["", "a", "", "b"]);
    assert_eq!(split_text("", 1), [""]);
    assert!(split_text("abc", 0).is_empty());
}

#[test]
fn error_envelope_uses_contract_types() {
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (418, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ];
    for (status, expected_kind) in cases {
        assert_eq!(error_kind(status).0, expected_kind, "status {status}");
    }
    assert_eq!(
        String::from_utf8_lossy(&error_envelope_json(529, "req_fake1")),
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_fake1"}"#
    );
}
