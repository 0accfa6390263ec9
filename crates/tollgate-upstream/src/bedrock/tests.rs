//! Tests for Bedrock's stream decoding into Anthropic's events, its exceptions, and the
//! shared credentials file.

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::UpstreamError;
use crate::bedrock::{AwsCredentials, anthropic_events};
use crate::event_stream::Frame;
use crate::sse::UsageAccumulator;

fn chunk(event: &serde_json::Value) -> Bytes {
    let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    Frame {
        headers: vec![
            (":event-type".to_owned(), "chunk".to_owned()),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "event".to_owned()),
        ],
        payload: Bytes::from(serde_json::json!({ "bytes": bytes }).to_string()),
    }
    .encode()
}

fn stream_of(chunks: Vec<Bytes>) -> impl futures_util::Stream<Item = Result<Bytes, UpstreamError>> + Send {
    futures_util::stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn chunks_split_anywhere_become_anthropic_events_metered_as_anthropic_s() {
    let events = [
        serde_json::json!({"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
        serde_json::json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 7}}),
    ];
    let wire: Vec<u8> = events.iter().flat_map(|event| chunk(event).to_vec()).collect();
    // Cut into 7-byte pieces, so frames and their preludes straddle chunks.
    let pieces: Vec<Bytes> = wire.chunks(7).map(Bytes::copy_from_slice).collect();
    let decoded: Vec<_> = anthropic_events(stream_of(pieces)).collect().await;
    let mut meter = UsageAccumulator::default();
    let mut names = Vec::new();
    for event in decoded {
        let event = event.expect("intact stream");
        meter.observe(&event);
        names.push(event.event);
    }
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_delta",
            "message_delta",
            "message_stop"
        ]
    );
    let usage = meter.reported_usage().expect("usage reported");
    assert_eq!((usage.input_tokens, usage.output_tokens), (12, 7));
    assert!(meter.saw_message_stop());
}

#[tokio::test]
async fn an_exception_frame_is_an_anthropic_error_event_and_ends_the_stream() {
    let exception = Frame {
        headers: vec![
            (":exception-type".to_owned(), "throttlingException".to_owned()),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "exception".to_owned()),
        ],
        payload: Bytes::from_static(br#"{"message":"Too many requests, please wait before trying again."}"#),
    }
    .encode();
    let after = chunk(&serde_json::json!({"type": "ping"}));
    let decoded: Vec<_> = anthropic_events(stream_of(vec![exception, after]))
        .collect()
        .await;
    assert_eq!(decoded.len(), 1);
    let event = decoded[0].as_ref().expect("an event");
    assert_eq!(event.event, "error");
    let data: serde_json::Value = serde_json::from_str(&event.data).expect("JSON");
    assert_eq!(data["error"]["type"], "rate_limit_error");
    assert_eq!(
        data["error"]["message"],
        "Too many requests, please wait before trying again."
    );
}

#[tokio::test]
async fn a_damaged_frame_or_a_stream_cut_inside_one_is_a_protocol_error() {
    let mut damaged = chunk(&serde_json::json!({"type": "ping"})).to_vec();
    let last = damaged.len() - 6;
    damaged[last] ^= 0x20;
    let decoded: Vec<_> = anthropic_events(stream_of(vec![Bytes::from(damaged)]))
        .collect()
        .await;
    assert!(
        matches!(decoded.as_slice(), [Err(UpstreamError::Protocol(_))]),
        "{decoded:?}"
    );

    let whole = chunk(&serde_json::json!({"type": "ping"}));
    let cut = whole.slice(..whole.len() - 3);
    let decoded: Vec<_> = anthropic_events(stream_of(vec![cut])).collect().await;
    assert!(
        matches!(decoded.as_slice(), [Err(UpstreamError::Protocol(_))]),
        "{decoded:?}"
    );
}

#[test]
fn the_credentials_file_gives_the_named_profile() {
    let text = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default-secret

[profile work]
aws_access_key_id=AKIDWORK
aws_secret_access_key=work-secret
aws_session_token = token
";
    let default = AwsCredentials::from_credentials_file(text, "default").expect("default profile");
    assert_eq!(default.access_key_id, "AKIDDEFAULT");
    assert_eq!(default.secret_access_key, "default-secret");
    assert_eq!(default.session_token, None);
    let work = AwsCredentials::from_credentials_file(text, "work").expect("work profile");
    assert_eq!(work.access_key_id, "AKIDWORK");
    assert_eq!(work.session_token.as_deref(), Some("token"));
    assert!(AwsCredentials::from_credentials_file(text, "missing").is_none());
}
