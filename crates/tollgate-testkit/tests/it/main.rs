//! Drives `FakeUpstream` over real HTTP with reqwest, the way the gateway will, to check that
//! it speaks Anthropic's wire format and obeys every behaviour it is given.

mod behaviors;
mod chat;
mod messages;
mod streaming;

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_testkit::FakeUpstream;

/// One client per test; proxies are disabled so an environment proxy can't intercept loopback.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

fn messages_body(stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello"}],
    })
}

async fn post_messages(upstream: &FakeUpstream, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", upstream.base_url()))
        .json(body)
        .send()
        .await
        .expect("send /v1/messages")
}

/// One parsed SSE event: its `event:` name and `data:` JSON.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
}

fn parse_sse(text: &str) -> Vec<SseEvent> {
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let (event_line, data_line) = block.split_once('\n').expect("event and data lines");
            SseEvent {
                name: event_line.strip_prefix("event: ").expect("event line").to_owned(),
                data: serde_json::from_str(data_line.strip_prefix("data: ").expect("data line"))
                    .expect("data is JSON"),
            }
        })
        .collect()
}

fn event_names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|event| event.name.as_str()).collect()
}

/// Polls `condition` until it holds, failing the test after a second.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}
