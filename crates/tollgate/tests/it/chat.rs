//! OpenAI's Chat Completions on the same keys, limits and credit: translated to the
//! simulated model and to Anthropic upstreams, passed through to OpenAI-compatible ones
//! (and Messages translated to them), billed exactly from the upstream's usage, errors in
//! OpenAI's envelope.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{
    Options, TestApp, chat_body, message_body, parse_chat_sse, parse_sse, sonnet_cost, spawn_app,
    spawn_app_with, starter_nanos,
};

/// fake-gpt's prices: $2 input, $8 output per MTok; cache reads $0.20.
pub(crate) fn gpt_cost(input_tokens: i64, cached_tokens: i64, output_tokens: i64) -> i64 {
    input_tokens * 2_000 + cached_tokens * 200 + output_tokens * 8_000
}

pub(crate) async fn charged(app: &TestApp) -> i64 {
    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    assert_eq!(held, 0);
    assert_eq!(available + spent, starter_nanos());
    spent
}

#[tokio::test]
async fn a_chat_completion_from_the_simulated_model_is_charged_its_usage() {
    let app = spawn_app().await;
    let response = app.post_chat(&chat_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-request-id").is_some());
    assert_eq!(
        response.headers()["x-ratelimit-limit-requests"]
            .to_str()
            .expect("ascii"),
        "100000"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .expect("text")
            .is_empty()
    );
    let prompt = body["usage"]["prompt_tokens"].as_i64().expect("prompt");
    let completion = body["usage"]["completion_tokens"].as_i64().expect("completion");
    assert!(completion > 0 && completion <= 100);
    assert_eq!(body["usage"]["total_tokens"].as_i64(), Some(prompt + completion));
    assert_eq!(charged(&app).await, sonnet_cost(prompt, completion));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_chat_stream_ends_in_usage_and_done_only_when_asked() {
    let app = spawn_app().await;
    let mut body = chat_body("claude-haiku-4-5");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = app.post_chat(&body).await;
    assert_eq!(response.status(), 200);
    let chunks = parse_chat_sse(&response.text().await.expect("body"));
    assert_eq!(chunks.last(), Some(&json!("[DONE]")));
    let usage_chunk = &chunks[chunks.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    let finish = chunks
        .iter()
        .find_map(|chunk| chunk["choices"][0]["finish_reason"].as_str());
    assert!(matches!(finish, Some("stop" | "length")));
    let prompt = usage_chunk["usage"]["prompt_tokens"].as_i64().expect("prompt");
    let completion = usage_chunk["usage"]["completion_tokens"]
        .as_i64()
        .expect("completion");
    // Haiku 4.5: $1 input, $5 output per MTok; charged before [DONE] arrived.
    assert_eq!(
        app.balance().await.2,
        prompt * 1_000 + completion * 5_000,
        "settled by the time [DONE] arrives"
    );

    body["stream_options"] = json!({"include_usage": false});
    let chunks = parse_chat_sse(&app.post_chat(&body).await.text().await.expect("body"));
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.get("usage").is_none_or(Value::is_null))
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn chat_completions_pass_through_to_an_openai_upstream_with_usage_forced_on() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1_000,
        cache_read_input_tokens: 500,
        output_tokens: 40,
        ..Reply::default()
    }));
    let mut body = json!({
        "model": "fake-gpt",
        "messages": [{"role": "user", "content": "Hi"}],
        "logit_bias": {"1": 5},
        "stream": true,
    });
    let response = app.post_chat(&body).await;
    assert_eq!(response.status(), 200);
    let chunks = parse_chat_sse(&response.text().await.expect("body"));
    assert_eq!(chunks.last(), Some(&json!("[DONE]")));
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.get("usage").is_none_or(Value::is_null)),
        "the usage the client did not ask for is not shown"
    );
    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer openai-provider-secret")
    );
    assert_eq!(sent.body["model"], "gpt-4o");
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(
        sent.body["max_tokens"], 4096,
        "no limit given: the model's default bounds it"
    );
    assert_eq!(
        sent.body["logit_bias"],
        json!({"1": 5}),
        "unknown fields pass through"
    );
    assert_eq!(charged(&app).await, gpt_cost(1_000, 500, 40));

    body["stream"] = json!(false);
    let reply: Value = app.post_chat(&body).await.json().await.expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(
        reply["model"], "gpt-4o",
        "a pass-through reply is the upstream's own"
    );
    assert_eq!(charged(&app).await, 2 * gpt_cost(1_000, 500, 40));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_messages_api_is_translated_to_an_openai_upstream() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "Bonjour from GPT.".into(),
        input_tokens: 300,
        output_tokens: 12,
        ..Reply::default()
    }));
    let response = app.post_messages(&message_body("fake-gpt")).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], "fake-gpt");
    assert_eq!(message["content"][0]["text"], "Bonjour from GPT.");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 300);
    let sent = &app.fake.requests()[0];
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "user", "content": "Hello there"})
    );
    assert_eq!(sent.body["max_tokens"], 100);

    let mut body = message_body("fake-gpt");
    body["stream"] = json!(true);
    let events = parse_sse(&app.post_messages(&body).await.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = events
        .iter()
        .filter_map(|(_, data)| data["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Bonjour from GPT.");
    assert_eq!(events[names.len() - 2].1["usage"]["output_tokens"], 12);
    assert_eq!(charged(&app).await, 2 * gpt_cost(300, 0, 12));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn chat_completions_reach_an_anthropic_upstream_translated() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1_234,
        output_tokens: 56,
        ..Reply::default()
    }));
    let body = json!({
        "model": "fake-sonnet",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}
        ],
        "max_completion_tokens": 200,
    });
    let reply: Value = app.post_chat(&body).await.json().await.expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], Reply::default().text);
    assert_eq!(reply["usage"]["prompt_tokens"], 1_234);
    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("provider-secret"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(sent.body["max_tokens"], 200);
    assert_eq!(charged(&app).await, sonnet_cost(1_234, 56));
}

#[tokio::test]
async fn chat_errors_use_openais_envelope_and_statuses() {
    let app = spawn_app().await;
    let no_key = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&chat_body("claude-sonnet-4-6"))
        .send()
        .await
        .expect("sent");
    assert_eq!(no_key.status(), 401);
    let envelope: Value = no_key.json().await.expect("json");
    assert!(
        envelope.get("type").is_none(),
        "not Anthropic's envelope: {envelope}"
    );
    assert_eq!(envelope["error"]["code"], "invalid_api_key");
    assert!(envelope["error"]["message"].is_string());
    assert!(envelope["error"].get("param").is_some());

    let cases = [
        (
            chat_body("gpt-unknown"),
            404,
            "invalid_request_error",
            Some("model_not_found"),
            None,
        ),
        (
            json!({"model": "claude-sonnet-4-6"}),
            400,
            "invalid_request_error",
            None,
            Some("messages"),
        ),
        (
            json!({"model": "claude-sonnet-4-6", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
            None,
            Some("n"),
        ),
        (
            json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            400,
            "invalid_request_error",
            None,
            Some("messages[0].content[0]"),
        ),
    ];
    for (body, status, kind, code, param) in cases {
        let response = app.post_chat(&body).await;
        assert_eq!(response.status(), status, "{body}");
        let envelope: Value = response.json().await.expect("json");
        assert_eq!(envelope["error"]["type"], kind, "{body}: {envelope}");
        assert_eq!(envelope["error"]["code"].as_str(), code, "{body}: {envelope}");
        assert_eq!(envelope["error"]["param"].as_str(), param, "{body}: {envelope}");
    }
    let wrong_method = app
        .client
        .get(app.url("/v1/chat/completions"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong_method.status(), 405);
    let envelope: Value = wrong_method.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "invalid_request_error");

    app.fake.set_behavior(Behavior::Status(529));
    let overloaded = app.post_chat(&chat_body("fake-sonnet")).await;
    assert_eq!(overloaded.status(), 503, "OpenAI says overloaded with a 503");
    assert_eq!(overloaded.headers()["x-should-retry"], "true");
    let envelope: Value = overloaded.json().await.expect("json");
    assert_eq!(envelope["error"]["code"], "overloaded");
    app.fake.set_behavior(Behavior::Status(400));
    let refused = app.post_chat(&chat_body("fake-gpt")).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "nothing was charged"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn no_credit_is_openais_insufficient_quota() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let response = app.post_chat(&chat_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["x-should-retry"],
        "false",
        "retrying cannot help"
    );
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "insufficient_quota");
    assert_eq!(envelope["error"]["message"], tollgate_gateway::CREDIT_TOO_LOW);
    // The Messages API keeps Anthropic's answer for the same refusal.
    let messages = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(messages.status(), 400);
}

#[tokio::test]
async fn models_are_listed_in_the_shape_the_client_speaks() {
    let app = spawn_app().await;
    let openai: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|model| model["id"].as_str().expect("id"))
        .collect();
    assert!(ids.contains(&"claude-sonnet-4-6") && ids.contains(&"fake-gpt"));
    assert_eq!(openai["data"][0]["object"], "model");
    assert!(openai["data"][0]["created"].is_i64());
    let one: Value = app
        .client
        .get(app.url("/v1/models/fake-gpt"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (one["id"].as_str(), one["object"].as_str()),
        (Some("fake-gpt"), Some("model"))
    );
    let missing = app
        .client
        .get(app.url("/v1/models/nope"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    let envelope: Value = missing.json().await.expect("json");
    assert_eq!(envelope["error"]["code"], "model_not_found");
    let anthropic: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&app.api_key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert!(anthropic.get("has_more").is_some());
}

#[tokio::test]
async fn per_request_and_per_image_prices_are_charged_on_top_of_tokens() {
    let app = spawn_app_with(Options {
        extra_config: r#"
        [models.metered-gpt]
        class = "sonnet"
        provider = "fake-openai"
        upstream_model = "gpt-4o"
        input = "2"
        output = "8"
        per_request = "0.01"
        per_image = "0.002"
        "#,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 100,
        output_tokens: 10,
        ..Reply::default()
    }));
    let body = json!({
        "model": "metered-gpt",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}
        ]}],
    });
    assert_eq!(app.post_chat(&body).await.status(), 200);
    let flat = 10_000_000 + 2 * 2_000_000;
    assert_eq!(charged(&app).await, gpt_cost(100, 0, 10) + flat);
    app.fake.set_behavior(Behavior::Status(500));
    assert_eq!(app.post_chat(&body).await.status(), 500);
    assert_eq!(
        charged(&app).await,
        gpt_cost(100, 0, 10) + flat,
        "a failed request pays no flat charge either"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn json_object_mode_and_required_tools_reach_the_simulated_model() {
    // Goal: `response_format: json_object` gets JSON content, and `tool_choice: required`
    // a tool call whose arguments are JSON, through the translation to the simulated model.
    let app = spawn_app().await;
    let mut body = chat_body("claude-sonnet-4-6");
    body["max_tokens"] = json!(1000);
    body["response_format"] = json!({"type": "json_object"});
    body["messages"] = json!([
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": "Name a colour."},
    ]);
    let response = app.post_chat(&body).await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.expect("json");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    let value: Value = serde_json::from_str(content).expect("the content is JSON");
    assert!(value.is_object(), "{value}");

    let mut tools = chat_body("claude-sonnet-4-6");
    tools["stream"] = json!(true);
    tools["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    }}}]);
    tools["tool_choice"] = json!("required");
    let response = app.post_chat(&tools).await;
    assert_eq!(response.status(), 200);
    let chunks = parse_chat_sse(&response.text().await.expect("body"));
    let arguments: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    let name = chunks
        .iter()
        .find_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str());
    assert_eq!(name, Some("get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("JSON arguments"),
        json!({"city": "hello", "days": 1})
    );
    let finish = chunks
        .iter()
        .find_map(|chunk| chunk["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    charged(&app).await;
    app.assert_ledger_clean().await;
}
