//! OpenAI's Responses API (`/v1/responses`) on the same keys, limits and credit: carried
//! over Chat Completions to the simulated model, an Anthropic upstream and an
//! OpenAI-compatible one, as JSON and as the Responses event stream, with function tools,
//! stored responses continued by `previous_response_id`, billing exactly from the
//! upstream's usage, and errors in OpenAI's envelope.

use serde_json::{Value, json};
use tollgate_core::keys::KeyKind;
use tollgate_testkit::{Behavior, Reply};

use crate::chat::{charged, gpt_cost};
use crate::helpers::{Options, TestApp, parse_sse, sonnet_cost, spawn_app, spawn_app_with, starter_nanos};
use crate::sdk::{int, run_script};

impl TestApp {
    /// `POST /v1/responses` as the `openai` SDKs send it.
    pub(crate) async fn post_response(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/responses"))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET` or `DELETE /v1/responses/{id}` with `key`.
    async fn stored_response(&self, method: reqwest::Method, id: &str, key: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(&format!("/v1/responses/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent")
    }
}

/// The text of a Response's message items.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .expect("output")
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

fn assert_usage_shape(usage: &Value) {
    let input = usage["input_tokens"].as_i64().expect("input_tokens");
    let output = usage["output_tokens"].as_i64().expect("output_tokens");
    assert!(usage["input_tokens_details"]["cached_tokens"].is_i64());
    assert!(usage["output_tokens_details"]["reasoning_tokens"].is_i64());
    assert_eq!(usage["total_tokens"].as_i64(), Some(input + output));
}

#[tokio::test]
async fn a_response_from_the_simulated_model_is_charged_its_usage() {
    let app = spawn_app().await;
    let response = app
        .post_response(&json!({
            "model": "claude-sonnet-4-6",
            "instructions": "Be brief.",
            "input": "Hello there",
            "max_output_tokens": 100,
            "some_future_field": {"ignored": true},
        }))
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-request-id").is_some());
    assert!(response.headers().get("x-ratelimit-remaining-requests").is_some());
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "response");
    assert!(body["id"].as_str().expect("id").starts_with("resp_"));
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["max_output_tokens"], 100);
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(body["output"][0]["role"], "assistant");
    assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
    assert!(!output_text(&body).is_empty());
    assert_usage_shape(&body["usage"]);
    let input = body["usage"]["input_tokens"].as_i64().expect("input");
    let output = body["usage"]["output_tokens"].as_i64().expect("output");
    assert!(output > 0 && output <= 100);
    assert_eq!(charged(&app).await, sonnet_cost(input, output));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_response_stream_is_the_responses_event_sequence_and_charged_its_usage() {
    let app = spawn_app().await;
    let response = app
        .post_response(&json!({
            "model": "claude-haiku-4-5",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}],
            "max_output_tokens": 100,
            "stream": true,
        }))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..names.len() - 1],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ]
    );
    // The simulated model may reach the output limit: the stream then ends incomplete.
    let (last, ended) = events.last().expect("events");
    let status = ended["response"]["status"].as_str().expect("status");
    assert!(
        matches!(
            (last.as_str(), status),
            ("response.completed", "completed") | ("response.incomplete", "incomplete")
        ),
        "{last} {status}"
    );
    for (index, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "each event's data names its type");
        assert_eq!(data["sequence_number"], index, "events are numbered in order");
    }
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().expect("delta"))
        .collect();
    let done = &events[names.len() - 4].1;
    assert_eq!(done["text"], deltas.as_str());
    let completed = &ended["response"];
    assert_eq!(output_text(completed), deltas);
    assert_eq!(completed["id"], events[0].1["response"]["id"]);
    assert_usage_shape(&completed["usage"]);
    let input = completed["usage"]["input_tokens"].as_i64().expect("input");
    let output = completed["usage"]["output_tokens"].as_i64().expect("output");
    // Haiku 4.5: $1 input, $5 output per MTok.
    assert_eq!(charged(&app).await, input * 1_000 + output * 5_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn responses_reach_an_anthropic_upstream_translated_and_billed_from_its_usage() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1_234,
        cache_read_input_tokens: 1_000,
        output_tokens: 56,
        ..Reply::default()
    }));
    let body = json!({
        "model": "fake-sonnet",
        "instructions": "Be brief.",
        "input": "Hi",
        "max_output_tokens": 200,
        "temperature": 0.5,
        "reasoning": {"effort": "low"},
    });
    let reply: Value = app.post_response(&body).await.json().await.expect("json");
    assert_eq!(output_text(&reply), Reply::default().text);
    assert_eq!(reply["usage"]["input_tokens"], 2_234);
    assert_eq!(reply["usage"]["input_tokens_details"]["cached_tokens"], 1_000);
    assert_eq!(reply["usage"]["output_tokens"], 56);
    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        sent.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(sent.body["max_tokens"], 200);
    assert_eq!(sent.body["temperature"], 0.5);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = parse_sse(&app.post_response(&streamed).await.text().await.expect("body"));
    let (last, completed) = events.last().expect("events");
    assert_eq!(last, "response.completed");
    assert_eq!(output_text(&completed["response"]), Reply::default().text);
    assert_eq!(completed["response"]["usage"], reply["usage"]);
    // fake-sonnet: $3 input, $15 output per MTok, cache reads a tenth of input.
    let once = 1_234 * 3_000 + 1_000 * 300 + 56 * 15_000;
    assert_eq!(charged(&app).await, 2 * once);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn responses_reach_an_openai_upstream_as_chat_completions() {
    let app = spawn_app().await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        text: "Bonjour from GPT.".into(),
        input_tokens: 1_000,
        cache_read_input_tokens: 500,
        output_tokens: 40,
        ..Reply::default()
    }));
    let body = json!({"model": "fake-gpt", "input": "Hi", "stream": true});
    let events = parse_sse(&app.post_response(&body).await.text().await.expect("body"));
    let (last, completed) = events.last().expect("events");
    assert_eq!(last, "response.completed");
    assert_eq!(output_text(&completed["response"]), "Bonjour from GPT.");
    assert_eq!(completed["response"]["usage"]["input_tokens"], 1_500);
    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "gpt-4o");
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "Hi"}]));
    assert_eq!(sent.body["stream_options"]["include_usage"], true);

    let reply: Value = app
        .post_response(&json!({"model": "fake-gpt", "input": "Hi"}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["object"], "response");
    assert_eq!(output_text(&reply), "Bonjour from GPT.");
    assert_eq!(charged(&app).await, 2 * gpt_cost(1_000, 500, 40));
    app.assert_ledger_clean().await;
}

fn weather_tool() -> Value {
    json!({
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    })
}

#[tokio::test]
async fn a_function_call_round_trip_continues_a_stored_response() {
    let app = spawn_app().await;
    let first: Value = app
        .post_response(&json!({
            "model": "claude-sonnet-4-6",
            "input": "Use get_weather for Paris.",
            "tools": [weather_tool()],
            "tool_choice": "auto",
        }))
        .await
        .json()
        .await
        .expect("json");
    let call = &first["output"][0];
    assert_eq!(call["type"], "function_call", "{first}");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().expect("id").starts_with("fc_"));
    let arguments: Value =
        serde_json::from_str(call["arguments"].as_str().expect("arguments")).expect("JSON");
    assert!(arguments["city"].is_string());
    assert_eq!(
        first["tools"][0]["name"], "get_weather",
        "the request's tools are echoed"
    );

    // The next turn sends only the tool's output and names the response it answers.
    let second: Value = app
        .post_response(&json!({
            "model": "claude-sonnet-4-6",
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 21 C"}],
            "tools": [weather_tool()],
        }))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["output"][0]["type"], "message");
    assert_eq!(second["previous_response_id"], first["id"]);

    // Streamed, the call arrives as its own item with its arguments' events.
    let events = parse_sse(
        &app.post_response(&json!({
            "model": "claude-sonnet-4-6",
            "input": "Use get_weather for Paris.",
            "tools": [weather_tool()],
            "stream": true,
            "store": false,
        }))
        .await
        .text()
        .await
        .expect("body"),
    );
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"response.function_call_arguments.delta"),
        "{names:?}"
    );
    let done = events
        .iter()
        .find(|(name, _)| name == "response.function_call_arguments.done")
        .map(|(_, data)| data)
        .expect("arguments done");
    let item = &events.last().expect("events").1["response"]["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["arguments"], done["arguments"]);
    assert_eq!(names.last(), Some(&"response.completed"));
    app.wait_for_settlement().await;
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn previous_response_id_carries_the_conversation_and_stored_responses_can_be_read_and_deleted() {
    let app = spawn_app().await;
    let first: Value = app
        .post_response(
            &json!({"model": "fake-sonnet", "instructions": "Be brief.", "input": "My name is Ada."}),
        )
        .await
        .json()
        .await
        .expect("json");
    let id = first["id"].as_str().expect("id");
    let second: Value = app
        .post_response(
            &json!({"model": "fake-sonnet", "previous_response_id": id, "input": "What is my name?"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["previous_response_id"], id);
    let sent = &app.fake.requests()[1];
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": [{"type": "text", "text": Reply::default().text}]},
            {"role": "user", "content": "What is my name?"},
        ]),
        "the earlier turn and its answer come first"
    );
    assert!(
        sent.body.get("system").is_none(),
        "instructions are not carried over, as OpenAI documents"
    );

    let read: Value = app
        .stored_response(reqwest::Method::GET, id, &app.api_key)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read, first);
    let deleted = app
        .stored_response(reqwest::Method::DELETE, id, &app.api_key)
        .await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.expect("json"),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let gone = app.stored_response(reqwest::Method::GET, id, &app.api_key).await;
    assert_eq!(gone.status(), 404);
    let envelope: Value = gone.json().await.expect("json");
    assert_eq!(
        envelope["error"]["message"],
        format!("Response with id '{id}' not found.")
    );
    assert_eq!(envelope["error"]["type"], "invalid_request_error");

    let continued = app
        .post_response(&json!({"model": "fake-sonnet", "previous_response_id": id, "input": "Again?"}))
        .await;
    assert_eq!(continued.status(), 400);
    assert_eq!(
        continued.json::<Value>().await.expect("json"),
        json!({"error": {
            "message": format!("Previous response with id '{id}' not found."),
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }})
    );

    let unstored: Value = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi", "store": false}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unstored["store"], false);
    let unstored_id = unstored["id"].as_str().expect("id");
    let missing = app
        .stored_response(reqwest::Method::GET, unstored_id, &app.api_key)
        .await;
    assert_eq!(missing.status(), 404);
    // Three answered requests, each charged; the refused one never reached the upstream.
    assert_eq!(app.fake.request_count(), 3);
    assert_eq!(charged(&app).await, 3 * sonnet_cost(10, 20));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_stored_response_is_out_of_reach_of_another_workspace() {
    let app = spawn_app().await;
    let first: Value = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi"}))
        .await
        .json()
        .await
        .expect("json");
    let id = first["id"].as_str().expect("id");
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, "other")
        .await
        .expect("workspace");
    let other_key = app
        .tollgate
        .create_key(KeyKind::Api, &app.org_id, Some(&workspace.id), "other key")
        .await
        .expect("key")
        .secret
        .expose_secret()
        .to_owned();
    let read = app.stored_response(reqwest::Method::GET, id, &other_key).await;
    assert_eq!(read.status(), 404);
    let deleted = app.stored_response(reqwest::Method::DELETE, id, &other_key).await;
    assert_eq!(deleted.status(), 404);
    let continued = app
        .client
        .post(app.url("/v1/responses"))
        .bearer_auth(&other_key)
        .json(&json!({"model": "fake-sonnet", "previous_response_id": id, "input": "Hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(continued.status(), 400);
    let mine = app.stored_response(reqwest::Method::GET, id, &app.api_key).await;
    assert_eq!(mine.status(), 200);
}

#[tokio::test]
async fn errors_on_the_responses_path_come_in_openais_envelope_and_cost_nothing() {
    let app = spawn_app().await;
    let no_model = app.post_response(&json!({"input": "Hi"})).await;
    assert_eq!(no_model.status(), 400);
    let envelope: Value = no_model.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "invalid_request_error");
    assert_eq!(envelope["error"]["param"], "model");
    assert!(
        envelope.get("type").is_none(),
        "not Anthropic's envelope: {envelope}"
    );

    let unknown_path = app
        .client
        .post(app.url("/v1/responses/resp_1/cancel/more"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown_path.status(), 404);
    let envelope: Value = unknown_path.json().await.expect("json");
    assert!(envelope["error"]["message"].is_string());
    assert!(
        envelope.get("type").is_none(),
        "not Anthropic's envelope: {envelope}"
    );

    let no_key = app
        .client
        .post(app.url("/v1/responses"))
        .json(&json!({"model": "fake-sonnet", "input": "Hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(no_key.status(), 401);
    let envelope: Value = no_key.json().await.expect("json");
    assert!(envelope["error"]["message"].is_string() && envelope.get("type").is_none());

    app.fake.set_behavior(Behavior::Status(400));
    let refused = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi"}))
        .await;
    assert_eq!(refused.status(), 400);
    let envelope: Value = refused.json().await.expect("json");
    assert!(envelope["error"]["message"].is_string() && envelope.get("type").is_none());
    app.fake.set_behavior(Behavior::Status(500));
    let failed = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi", "stream": true}))
        .await;
    assert_eq!(failed.status(), 500);
    assert_eq!(charged(&app).await, 0, "failed requests are never charged");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_response_the_credit_cannot_cover_is_refused_in_openais_envelope() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let refused = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi", "max_output_tokens": 1000}))
        .await;
    assert_eq!(refused.status(), 429);
    let envelope: Value = refused.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "insufficient_quota");
    assert_eq!(envelope["error"]["message"], tollgate_gateway::CREDIT_TOO_LOW);
    assert_eq!(app.fake.request_count(), 0);
}

#[tokio::test]
async fn the_openai_sdks_responses_client_works_streaming_and_not() {
    let app = spawn_app().await;
    let cases = run_script(&app, "openai_responses.py").await;

    let create = &cases["create"];
    assert!(create["id"].as_str().expect("id").starts_with("resp_"));
    assert!(matches!(
        create["status"].as_str(),
        Some("completed" | "incomplete")
    ));
    assert!(!create["text"].as_str().expect("text").is_empty());
    assert_eq!(
        int(create, "total_tokens"),
        int(create, "input_tokens") + int(create, "output_tokens")
    );
    let stream = &cases["stream"];
    assert_eq!(
        stream["text"], stream["final_text"],
        "the deltas add up to the response"
    );
    assert_eq!(stream["final_text"], Reply::default().text);
    assert_eq!(stream["first"], "response.created");
    assert_eq!(stream["last"], "response.completed");
    let raw = &cases["raw_stream"];
    assert_eq!(raw["first"], "response.created");
    assert!(matches!(
        raw["last"].as_str(),
        Some("response.completed" | "response.incomplete")
    ));
    assert!(!raw["text"].as_str().expect("text").is_empty());
    let tools = &cases["tool_round_trip"];
    assert_eq!(tools["name"], "get_weather");
    assert!(tools["arguments"]["city"].is_string());
    assert!(!tools["answer"].as_str().expect("answer").is_empty());
    assert_eq!(cases["retrieve"]["same"], true);
    assert_eq!(cases["retrieve_deleted"]["raised"], "NotFoundError");
    let unknown = &cases["unknown_model"];
    assert_eq!(
        (unknown["raised"].as_str(), int(unknown, "status")),
        (Some("NotFoundError"), 404)
    );
    assert_eq!(unknown["code"], "model_not_found");

    // Sonnet ($3/$15) thrice, Haiku 4.5 ($1/$5) and fake-sonnet's 10 in, 20 out, as reported.
    let sonnet = |case: &Value| sonnet_cost(int(case, "input_tokens"), int(case, "output_tokens"));
    assert_eq!(sonnet(stream), sonnet_cost(10, 20));
    let expected = sonnet(create)
        + int(raw, "input_tokens") * 1_000
        + int(raw, "output_tokens") * 5_000
        + sonnet_cost(10, 20)
        + sonnet(&tools["calls_usage"])
        + sonnet(&tools["answer_usage"]);
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (starter_nanos() - expected, 0, expected));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_stored_response_expires_after_its_retention_and_maintenance_deletes_it() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let first: Value = app
        .post_response(&json!({"model": "fake-sonnet", "input": "Hi"}))
        .await
        .json()
        .await
        .expect("json");
    let id = first["id"].as_str().expect("id");
    clock.advance(
        chrono::Duration::days(tollgate_service::RESPONSES_KEPT_DAYS) - chrono::Duration::minutes(1),
    );
    app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(
        app.stored_response(reqwest::Method::GET, id, &app.api_key)
            .await
            .status(),
        200,
        "kept for its retention"
    );
    clock.advance(chrono::Duration::minutes(1));
    assert_eq!(
        app.stored_response(reqwest::Method::GET, id, &app.api_key)
            .await
            .status(),
        404,
        "expired: gone at once"
    );
    let report = app.tollgate.maintain().await.expect("maintenance");
    assert_eq!(report.responses_expired, 1);
}
