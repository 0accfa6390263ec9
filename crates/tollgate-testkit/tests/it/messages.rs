//! Non-streaming answers, token counting and request recording.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, FakeUpstream, Reply};

use crate::{client, messages_body, post_messages};

#[tokio::test]
async fn non_streaming_reply_has_anthropic_shape() {
    // Goal: the default reply is a complete Anthropic message echoing the requested model.
    let upstream = FakeUpstream::start().await;
    let response = post_messages(&upstream, &messages_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned();
    assert!(request_id.starts_with("req_"), "{request_id}");

    let mut body: Value = response.json().await.expect("JSON body");
    let message_id = body["id"].take();
    assert!(
        message_id.as_str().expect("string id").starts_with("msg_fake"),
        "{message_id}"
    );
    assert_eq!(
        body,
        json!({
            "id": null,
            "type": "message",
            "role": "assistant",
            "model": "claude-test-1",
            "content": [{"type": "text", "text": "Hello from the fake upstream."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 20,
            },
        })
    );
}

#[tokio::test]
async fn max_tokens_caps_output_and_sets_stop_reason() {
    // Goal: a reply longer than max_tokens reports the cap, as Anthropic bills it.
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Ok(Reply {
        text: "custom".to_owned(),
        input_tokens: 7,
        output_tokens: 50,
        cache_creation_input_tokens: 3,
        cache_read_input_tokens: 4,
        ..Reply::default()
    }));
    let mut body = messages_body(false);
    body["max_tokens"] = json!(5);
    let reply: Value = post_messages(&upstream, &body)
        .await
        .json()
        .await
        .expect("JSON body");
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["content"][0]["text"], "custom");
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 7, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 5})
    );
}

#[tokio::test]
async fn count_tokens_answers_reply_input_tokens() {
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1234,
        ..Reply::default()
    }));
    let response = client()
        .post(format!("{}/v1/messages/count_tokens", upstream.base_url()))
        .json(&json!({"model": "claude-test-1", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .expect("send count_tokens");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("JSON body"),
        json!({"input_tokens": 1234})
    );
    assert_eq!(upstream.requests()[0].path, "/v1/messages/count_tokens");
}

#[tokio::test]
async fn records_path_query_headers_and_body() {
    // Goal: tests can check what the gateway forwarded, including Claude Code's `?beta=true`
    // and pass-through headers.
    let upstream = FakeUpstream::start().await;
    let body = messages_body(false);
    client()
        .post(format!("{}/v1/messages?beta=true", upstream.base_url()))
        .header("X-Api-Key", "sk-ant-fake")
        .header("anthropic-beta", "a-2025,b-2025")
        .json(&body)
        .send()
        .await
        .expect("send /v1/messages");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.query.as_deref(), Some("beta=true"));
    assert_eq!(request.header("x-api-key"), Some("sk-ant-fake"));
    assert_eq!(
        request.header("X-API-KEY"),
        Some("sk-ant-fake"),
        "lookup ignores case"
    );
    assert_eq!(request.header("anthropic-beta"), Some("a-2025,b-2025"));
    assert!(
        request.headers.iter().any(|(name, _)| name == "x-api-key"),
        "names are stored lowercase"
    );
    assert_eq!(request.header("x-missing"), None);
    assert_eq!(request.body, body);
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn invalid_json_is_a_400_envelope_and_still_recorded() {
    let upstream = FakeUpstream::start().await;
    let response = client()
        .post(format!("{}/v1/messages", upstream.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send /v1/messages");
    assert_eq!(response.status(), 400);
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii request id")
        .to_owned();
    let envelope: Value = response.json().await.expect("JSON body");
    assert_eq!(envelope["type"], "error");
    assert_eq!(envelope["error"]["type"], "invalid_request_error");
    assert_eq!(envelope["request_id"], request_id.as_str());
    assert_eq!(upstream.requests()[0].body, json!("{not json"));
}

#[tokio::test]
async fn missing_max_tokens_is_rejected_like_the_real_api() {
    let upstream = FakeUpstream::start().await;
    let mut body = messages_body(false);
    body.as_object_mut().expect("object body").remove("max_tokens");
    let response = post_messages(&upstream, &body).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("JSON body");
    let message = envelope["error"]["message"].as_str().expect("message");
    assert!(message.contains("max_tokens"), "{message}");
}

#[tokio::test]
async fn unrecorded_instance_counts_but_keeps_nothing() {
    let upstream = FakeUpstream::start_unrecorded().await;
    let response = post_messages(&upstream, &messages_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.request_count(), 1);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope_and_not_recorded() {
    let upstream = FakeUpstream::start().await;
    let response = client()
        .get(format!("{}/v1/unknown", upstream.base_url()))
        .send()
        .await
        .expect("send GET");
    assert_eq!(response.status(), 404);
    let envelope: Value = response.json().await.expect("JSON body");
    assert_eq!(envelope["error"]["type"], "not_found_error");
    assert_eq!(upstream.request_count(), 0);
}
