//! The Messages API works as Anthropic's does and charges exactly what the upstream
//! reports, at the catalogue's prices.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{message_body, parse_sse, sonnet_cost, spawn_app, starter_nanos};

#[tokio::test]
async fn first_start_sets_up_an_organization_with_starter_credit() {
    let app = spawn_app().await;
    assert!(app.api_key.starts_with("sk-tg-api01-"));
    assert!(app.admin_key.starts_with("sk-tg-admin01-"));
    assert_eq!(app.balance().await, (starter_nanos(), 0, 0));
    let health = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("request-id").is_some());
}

#[tokio::test]
async fn simulated_message_is_charged_exactly_its_usage() {
    let app = spawn_app().await;
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 200);
    let request_id = response
        .headers()
        .get("request-id")
        .expect("request-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(request_id.starts_with("req_"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert!(body["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(body["content"][0]["type"], "text");
    let input = body["usage"]["input_tokens"].as_i64().expect("input tokens");
    let output = body["usage"]["output_tokens"].as_i64().expect("output tokens");
    assert!(input > 0 && output > 0 && output <= 100);
    let cost = sonnet_cost(input, output);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
    let records = app.usage_records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_id, request_id);
    assert_eq!(records[0].cost.nanos(), cost);
    assert_eq!(records[0].status.as_str(), "succeeded");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn simulated_stream_has_anthropics_event_sequence_and_is_charged() {
    let app = spawn_app().await;
    let mut body = message_body("claude-haiku-4-5");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"));
    let input = events[0].1["message"]["usage"]["input_tokens"]
        .as_i64()
        .expect("input");
    let (_, delta) = events
        .iter()
        .rev()
        .find(|(name, _)| name == "message_delta")
        .expect("delta");
    let output = delta["usage"]["output_tokens"].as_i64().expect("output");
    // Haiku 4.5: $1 input, $5 output per MTok.
    let cost = input * 1_000 + output * 5_000;
    assert_eq!(
        app.balance().await,
        (starter_nanos() - cost, 0, cost),
        "charged by the time message_stop arrives"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn upstream_call_passes_headers_query_and_unknown_fields_through() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1_234,
        output_tokens: 56,
        cache_creation_input_tokens: 100,
        cache_read_input_tokens: 1_000,
        ..Reply::default()
    }));
    let mut body = message_body("fake-sonnet");
    body["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    body["future_field"] = json!({"kept": true});
    let response = app
        .client
        .post(app.url("/v1/messages?beta=true"))
        .header("authorization", format!("Bearer {}", app.api_key))
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        )
        .header("x-stainless-lang", "js")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let seen = &app.fake.requests()[0];
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14")
    );
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("x-api-key"),
        Some("provider-secret"),
        "the provider's key, never the client's"
    );
    assert_eq!(
        seen.body["model"], "claude-sonnet-4-6",
        "catalogue model mapped to its upstream id"
    );
    assert_eq!(seen.body["future_field"]["kept"], true);
    assert_eq!(seen.body["tools"][0]["name"], "get_weather");
    // 1234 input, 56 output, 100 cache writes at $3.75, 1000 cache reads at $0.30.
    let cost = sonnet_cost(1_234, 56) + 100 * 3_750 + 1_000 * 300;
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
}

/// Small bodies are copied out of the connection's read buffer and large ones kept as read
/// (`read_body`): either way the upstream gets the whole body.
#[tokio::test]
async fn bodies_on_either_side_of_the_copy_threshold_reach_the_upstream_whole() {
    let app = spawn_app().await;
    for size in [10, 200_000] {
        let text = "x".repeat(size);
        let mut body = message_body("fake-sonnet");
        body["messages"][0]["content"] = json!(text);
        let response = app.post_messages(&body).await;
        assert_eq!(response.status(), 200, "{size} bytes");
        let seen = app.fake.requests().pop().expect("a request upstream");
        assert_eq!(seen.body["messages"][0]["content"], json!(text), "{size} bytes");
    }
}

#[tokio::test]
async fn new_model_ids_alias_to_a_priced_model_and_go_upstream_as_asked() {
    let app = spawn_app().await;
    let response = app.post_messages(&message_body("fake-sonnet-20991231")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.fake.requests()[0].body["model"], "fake-sonnet-20991231");
    let simulated = app.post_messages(&message_body("claude-opus-4-8")).await;
    assert_eq!(simulated.status(), 200, "the newest ids work out of the box");
}

#[tokio::test]
async fn upstream_stream_is_relayed_and_charged_from_its_usage() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 500,
        output_tokens: 40,
        ..Reply::default()
    }));
    let mut body = message_body("fake-sonnet");
    body["stream"] = json!(true);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("message_stop"));
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| data["delta"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(text, "Hello from the fake upstream.");
    let cost = sonnet_cost(500, 40);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));
}

#[tokio::test]
async fn count_tokens_and_models_answer_in_anthropics_shapes() {
    let app = spawn_app().await;
    let count: Value = app
        .client
        .post(app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &app.api_key)
        .json(&json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(count["input_tokens"].as_u64().expect("count") > 0);
    let list: Value = app
        .client
        .get(app.url("/v1/models?limit=2"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"].as_array().expect("data").len(), 2);
    assert_eq!(list["has_more"], true);
    assert_eq!(list["data"][0]["type"], "model");
    let next: Value = app
        .client
        .get(app.url(&format!(
            "/v1/models?after_id={}",
            list["last_id"].as_str().expect("last id")
        )))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_ne!(next["first_id"], list["first_id"]);
    let model: Value = app
        .client
        .get(app.url("/v1/models/claude-haiku-4-5"))
        .header("x-api-key", &app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(model["display_name"], "Claude Haiku 4.5");
    assert_eq!(model["created_at"], "2025-10-15T00:00:00Z");
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "count_tokens and models are free"
    );
}

#[tokio::test]
async fn the_simulated_model_takes_a_system_message_between_turns_and_streams_a_forced_tool_call() {
    // Goal: Claude Code's default request shape (the mid-conversation system beta, tools)
    // succeeds on the simulated model, and a forced tool call streams as Anthropic's does
    // and is charged its usage.
    let app = spawn_app().await;
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "stream": true,
        "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "List the files."},
            {"role": "system", "content": [{"type": "text", "text": "The working directory is /tmp."}]},
            {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
        ],
        "tools": [{"name": "Bash", "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
            "required": ["command"],
        }}],
        "tool_choice": {"type": "tool", "name": "Bash"},
    });
    let response = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "mid-conversation-system-2026-04-07")
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(&names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(events[0].1["message"]["usage"]["service_tier"], "standard");
    let block = &events[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Bash");
    assert_eq!(block["input"], json!({}));
    let partial_json: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| {
            assert_eq!(data["delta"]["type"], "input_json_delta");
            data["delta"]["partial_json"]
                .as_str()
                .expect("partial json")
                .to_owned()
        })
        .collect();
    let input: Value = serde_json::from_str(&partial_json).expect("the deltas make JSON");
    assert_eq!(input, json!({"command": "echo hello"}));
    let (_, delta) = events
        .iter()
        .find(|(name, _)| name == "message_delta")
        .expect("delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    let input_tokens = events[0].1["message"]["usage"]["input_tokens"]
        .as_i64()
        .expect("input");
    let output_tokens = delta["usage"]["output_tokens"].as_i64().expect("output");
    let cost = sonnet_cost(input_tokens, output_tokens);
    assert_eq!(app.balance().await, (starter_nanos() - cost, 0, cost));

    // The tool's result comes back: the next answer is text, so an agent loop ends.
    let mut next = body.clone();
    next["stream"] = json!(false);
    next["tool_choice"] = json!({"type": "auto"});
    let messages = next["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": [
        {"type": "tool_use", "id": block["id"], "name": "Bash", "input": input},
    ]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": block["id"], "content": "hello"},
    ]}));
    let response = app.post_messages(&next).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["content"][0]["type"], "text");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_reply_from_another_model_is_billed_at_its_prices_with_its_web_searches() {
    // #18: a server-side fallback is billed at the prices of the model that served, when
    // the catalogue knows it (Haiku 4.5, $1 / $5, $10 per 1,000 web searches), stream or
    // not; a model it does not know leaves the routed prices.
    let app = spawn_app().await;
    let reply = |served: &str| Reply {
        input_tokens: 1_000,
        output_tokens: 100,
        served_model: Some(served.to_owned()),
        web_search_requests: 2,
        ..Reply::default()
    };
    let haiku = 1_000 * 1_000 + 100 * 5_000 + 2 * 10_000_000;
    let mut spent = 0;
    for stream in [false, true] {
        app.fake
            .set_behavior(Behavior::Ok(reply("claude-haiku-4-5-20251001")));
        let mut body = message_body("fake-sonnet");
        body["stream"] = json!(stream);
        // The searches the tool allows are reserved for, so their charge is not capped.
        body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]);
        let response = app.post_messages(&body).await;
        assert_eq!(response.status(), 200);
        let _ = response.text().await.expect("body");
        spent += haiku;
        assert_eq!(
            app.balance().await,
            (starter_nanos() - spent, 0, spent),
            "stream: {stream}"
        );
    }
    app.fake
        .set_behavior(Behavior::Ok(reply("some-model-tollgate-does-not-know")));
    let mut body = message_body("fake-sonnet");
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]);
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    spent += sonnet_cost(1_000, 100) + 2 * 10_000_000;
    assert_eq!(app.balance().await, (starter_nanos() - spent, 0, spent));
    // The records show both models, and the searches.
    let records = app.usage_records().await;
    let shown: Vec<(&str, Option<&str>, u64)> = records
        .iter()
        .map(|record| {
            (
                record.model.as_str(),
                record.served_model.as_deref(),
                record.usage.web_search_requests,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("fake-sonnet", Some("claude-haiku-4-5-20251001"), 2),
            ("fake-sonnet", Some("claude-haiku-4-5-20251001"), 2),
            ("fake-sonnet", None, 2),
        ]
    );
    app.assert_ledger_clean().await;
}
