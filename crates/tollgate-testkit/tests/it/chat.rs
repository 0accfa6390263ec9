//! The fake's OpenAI-compatible side: chat completions in OpenAI's shapes, usage chunks only
//! when asked for, and behaviours in OpenAI's envelope.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, FakeUpstream, Reply};

use crate::client;

async fn post_chat(upstream: &FakeUpstream, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", upstream.base_url()))
        .json(body)
        .send()
        .await
        .expect("send /v1/chat/completions")
}

fn data_lines(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| block.strip_prefix("data: ").expect("data-only events"))
        .collect()
}

#[tokio::test]
async fn answers_chat_completions_with_usage() {
    let upstream = FakeUpstream::start().await;
    upstream.set_behavior(Behavior::Ok(Reply {
        input_tokens: 30,
        cache_read_input_tokens: 10,
        output_tokens: 7,
        ..Reply::default()
    }));
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]});
    let reply: Value = post_chat(&upstream, &body).await.json().await.expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["content"], Reply::default().text);
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47, "prompt_tokens_details": {"cached_tokens": 10}})
    );

    for include_usage in [false, true] {
        let body = json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": include_usage},
            "messages": [{"role": "user", "content": "Hi"}]});
        let text = post_chat(&upstream, &body).await.text().await.expect("body");
        let lines = data_lines(&text);
        assert_eq!(lines.last(), Some(&"[DONE]"));
        let usage_chunks = lines.iter().filter(|line| line.contains("\"usage\":{")).count();
        assert_eq!(usage_chunks, usize::from(include_usage));
    }
    assert_eq!(upstream.requests()[0].path, "/v1/chat/completions");
}

#[tokio::test]
async fn behaviours_speak_openai() {
    let upstream = FakeUpstream::start().await;
    upstream.push_behavior(Behavior::Status(503));
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Hi"}]});
    let response = post_chat(&upstream, &body).await;
    assert_eq!(response.status(), 503);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "server_error");

    upstream.push_behavior(Behavior::MidStreamError { deltas: 1 });
    let body = json!({"model": "gpt-test", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let text = post_chat(&upstream, &body).await.text().await.expect("body");
    let lines = data_lines(&text);
    assert!(lines.last().expect("events").contains("\"error\""));
}
