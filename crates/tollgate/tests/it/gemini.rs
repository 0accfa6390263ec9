//! Google's Gemini API as an upstream (`kind = "gemini"`), behind a fake that speaks its
//! wire format and checks its key. The goal is that Messages, Chat Completions, Responses and the
//! official SDKs reach a Gemini model as they reach Anthropic's, each request billed exactly
//! the `usageMetadata` Google reported (cached prompt tokens as cache reads, thinking as
//! output), and that Google's refusals reach the client with their status and when to retry.
//! OpenAI's Embeddings reach Gemini's `batchEmbedContents`, billed by the tokens Google
//! counts.

use serde_json::{Value, json};
use tollgate_testkit::{FAKE_GEMINI_API_KEY, FakeGemini, GeminiBehavior, GeminiReply, gemini_tokens_of};

use crate::embeddings::refused;
use crate::helpers::{Options, TestApp, parse_chat_sse, parse_sse, spawn_app_with, starter_nanos};
use crate::sdk::run_script_with;

/// `gemini-flash` on the fake Gemini with the right key, `gemini-misconfigured` with
/// another; at $0.30 input, $0.03 cache reads and $2.50 output a million tokens.
/// `gemini-embed`, an embeddings model, at $0.15 a million input tokens.
const GEMINI: &str = r#"
    [providers.gemini]
    kind = "gemini"
    base_url = "{gemini}"
    api_key = "{gemini_key}"
    idle_timeout_seconds = 2
    request_timeout_seconds = 5
    [providers.gemini-wrong-key]
    kind = "gemini"
    base_url = "{gemini}"
    api_key = "AIzaSyNotTheKeyTheFakeKnows"
    [models.gemini-flash]
    class = "haiku"
    provider = "gemini"
    upstream_model = "gemini-2.5-flash"
    input = "0.30"
    cache_read = "0.03"
    output = "2.50"
    [models.gemini-3-flash]
    class = "haiku"
    provider = "gemini"
    upstream_model = "gemini-3-flash-preview"
    input = "0.30"
    cache_read = "0.03"
    output = "2.50"
    [models.gemini-embed]
    class = "haiku"
    provider = "gemini"
    upstream_model = "gemini-embedding-001"
    embeddings = true
    input = "0.15"
    [models.gemini-misconfigured]
    class = "haiku"
    provider = "gemini-wrong-key"
    upstream_model = "gemini-2.5-flash"
    input = "0.30"
    cache_read = "0.03"
    output = "2.50"
"#;

/// What the fake reports for each answer: 1,000 prompt tokens of which 400 cached, 100
/// candidate and 50 thought tokens.
fn reply() -> GeminiReply {
    GeminiReply {
        text: "Served by Gemini, word by word.".into(),
        prompt_tokens: 1_000,
        cached_tokens: 400,
        candidates_tokens: 100,
        thoughts_tokens: 50,
        ..GeminiReply::default()
    }
}

/// 600 uncached input tokens at 300 nano-USD, 400 cache reads at 30, 150 output tokens
/// (candidates and thoughts) at 2,500.
const COST: i64 = 600 * 300 + 400 * 30 + 150 * 2_500;

struct Gemini {
    app: TestApp,
    gemini: FakeGemini,
}

async fn spawn_gemini() -> Gemini {
    let gemini = FakeGemini::start().await;
    gemini.set_behavior(GeminiBehavior::Ok(reply()));
    let app = spawn_app_with(Options {
        extra_config: GEMINI,
        replacements: vec![
            ("{gemini}", gemini.base_url()),
            ("{gemini_key}", FAKE_GEMINI_API_KEY.to_owned()),
        ],
        ..Options::default()
    })
    .await;
    Gemini { app, gemini }
}

/// What the organization was charged in all, once every reservation has ended.
async fn spent(app: &TestApp) -> i64 {
    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    assert_eq!((held, available + spent), (0, starter_nanos()));
    spent
}

fn gemini_message_body() -> Value {
    json!({
        "model": "gemini-flash",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
    })
}

#[tokio::test]
async fn messages_reach_gemini_as_json_and_stream_billed_from_usage_metadata() {
    let setup = spawn_gemini().await;
    let response = setup.app.post_messages(&gemini_message_body()).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "Served by Gemini, word by word.");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 600, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 400, "output_tokens": 150})
    );

    let mut body = gemini_message_body();
    body["stream"] = json!(true);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, data)| data["delta"]["text"].as_str())
        .collect();
    assert!(deltas.len() > 1, "the text arrived in pieces: {deltas:?}");
    assert_eq!(deltas.concat(), "Served by Gemini, word by word.");
    let (_, final_delta) = events
        .iter()
        .find(|(name, _)| name == "message_delta")
        .expect("a message_delta");
    assert_eq!(final_delta["usage"]["output_tokens"], 150);
    assert_eq!(final_delta["usage"]["cache_read_input_tokens"], 400);

    assert_eq!(spent(&setup.app).await, 2 * COST, "billed exactly usageMetadata");
    let records = setup.app.usage_records().await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|record| record.cost.nanos() == COST));
    setup.app.assert_ledger_clean().await;

    let requests = setup.gemini.requests();
    let paths: Vec<(&str, Option<&str>)> = requests
        .iter()
        .map(|request| (request.path.as_str(), request.query.as_deref()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/v1beta/models/gemini-2.5-flash:generateContent", None),
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                Some("alt=sse")
            ),
        ]
    );
    let first = &requests[0];
    assert_eq!(first.header("x-goog-api-key"), Some(FAKE_GEMINI_API_KEY));
    assert!(
        first.header("x-api-key").is_none() && first.header("authorization").is_none(),
        "the client's key never leaves"
    );
    assert_eq!(
        first.body,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 300},
        })
    );
}

#[tokio::test]
async fn chat_completions_reach_gemini_translated_both_ways() {
    let setup = spawn_gemini().await;
    let chat = json!({
        "model": "gemini-flash",
        "max_tokens": 200,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
    });
    let response = setup.app.post_chat(&chat).await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.expect("json");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "Served by Gemini, word by word."
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["prompt_tokens"], 1_000);
    assert_eq!(completion["usage"]["completion_tokens"], 150);
    assert_eq!(completion["usage"]["prompt_tokens_details"]["cached_tokens"], 400);

    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = setup.app.post_chat(&streamed).await;
    assert_eq!(response.status(), 200);
    let chunks = parse_chat_sse(&response.text().await.expect("body"));
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Served by Gemini, word by word.");
    let usage = chunks
        .iter()
        .find_map(|chunk| chunk.get("usage").filter(|usage| usage.is_object()))
        .expect("a usage chunk");
    assert_eq!(usage["completion_tokens"], 150);
    assert_eq!(chunks.last(), Some(&json!("[DONE]")));

    assert_eq!(spent(&setup.app).await, 2 * COST);
    let request = &setup.gemini.requests()[0];
    assert_eq!(
        request.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        request.body["generationConfig"],
        json!({"maxOutputTokens": 200, "temperature": 0.2})
    );
}

#[tokio::test]
async fn the_responses_api_reaches_gemini_too() {
    let setup = spawn_gemini().await;
    let response = setup
        .app
        .post_response(&json!({"model": "gemini-flash", "input": "Hello there", "max_output_tokens": 200}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "response");
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "Served by Gemini, word by word."
    );
    assert_eq!(body["usage"]["input_tokens"], 1_000);
    assert_eq!(body["usage"]["input_tokens_details"]["cached_tokens"], 400);
    assert_eq!(body["usage"]["output_tokens"], 150);
    assert_eq!(spent(&setup.app).await, COST);
}

#[tokio::test]
async fn a_function_call_round_trips_as_tool_use_and_tool_result() {
    let setup = spawn_gemini().await;
    setup.gemini.push_behavior(GeminiBehavior::Ok(GeminiReply {
        text: String::new(),
        function_call: Some(("weather".to_owned(), json!({"city": "Paris"}))),
        ..reply()
    }));
    let tools = json!([{"name": "weather", "description": "Weather by city",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let mut body = gemini_message_body();
    body["tools"] = tools.clone();
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["stop_reason"], "tool_use");
    let call = message["content"]
        .as_array()
        .expect("content")
        .iter()
        .find(|block| block["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(call["name"], "weather");
    assert_eq!(call["input"], json!({"city": "Paris"}));

    body["messages"] = json!([
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny"}]},
    ]);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let requests = setup.gemini.requests();
    assert_eq!(
        requests[0].body["tools"][0]["functionDeclarations"][0]["name"],
        "weather"
    );
    assert_eq!(
        requests[1].body["contents"][2]["parts"][0],
        json!({"functionResponse": {"id": call["id"], "name": "weather", "response": {"result": "Sunny"}}})
    );
    assert_eq!(spent(&setup.app).await, 2 * COST);
}

#[tokio::test]
async fn a_429_reaches_the_client_with_retry_after_and_is_never_charged() {
    let setup = spawn_gemini().await;
    setup.gemini.set_behavior(GeminiBehavior::Status(429));
    let response = setup.app.post_messages(&gemini_message_body()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "17", "from Google's RetryInfo");
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["type"], "error");
    assert_eq!(envelope["error"]["type"], "rate_limit_error");

    let mut stream = gemini_message_body();
    stream["stream"] = json!(true);
    let response = setup.app.post_messages(&stream).await;
    assert_eq!(response.status(), 429, "a stream refused before it began");

    let response = setup
        .app
        .post_chat(&json!({
            "model": "gemini-flash",
            "messages": [{"role": "user", "content": "Hello"}],
        }))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "17");
    let envelope: Value = response.json().await.expect("json");
    assert!(
        envelope["error"]["message"].is_string(),
        "OpenAI's envelope: {envelope}"
    );
    assert_eq!(spent(&setup.app).await, 0);
    setup.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_key_google_refuses_is_the_operator_s_problem_never_the_client_s() {
    let setup = spawn_gemini().await;
    let mut body = gemini_message_body();
    body["model"] = json!("gemini-misconfigured");
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 502);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "api_error");
    assert_eq!(setup.gemini.requests().len(), 1);
    assert_eq!(spent(&setup.app).await, 0);
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_stream_in_anthropic_s_error_event() {
    let setup = spawn_gemini().await;
    setup.gemini.set_behavior(GeminiBehavior::MidStreamError);
    let mut body = gemini_message_body();
    body["stream"] = json!(true);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["error"]["type"], "overloaded_error");
    setup.app.wait_for_settlement().await;
    setup.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_official_sdks_reach_gemini_through_tollgate() {
    let setup = spawn_gemini().await;
    let cases = run_script_with(
        &setup.app,
        "clouds.py",
        &[("TOLLGATE_CLOUD_MODELS", "gemini-flash")],
    )
    .await;
    let message = &cases["gemini-flash/message"];
    assert_eq!(message["text"], "Served by Gemini, word by word.");
    assert_eq!(message["input_tokens"], 600);
    assert_eq!(message["cache_read_input_tokens"], 400);
    assert_eq!(message["output_tokens"], 150);
    let stream = &cases["gemini-flash/message_stream"];
    assert_eq!(stream["text"], "Served by Gemini, word by word.");
    assert_eq!(stream["stop_reason"], "end_turn");
    assert_eq!(stream["input_tokens"], 600);
    assert_eq!(stream["output_tokens"], 150);
    let chat = &cases["gemini-flash/chat_stream"];
    assert_eq!(chat["content"], "Served by Gemini, word by word.");
    assert_eq!(chat["prompt_tokens"], 1_000);
    assert_eq!(chat["cached_tokens"], 400);
    assert_eq!(chat["completion_tokens"], 150);
    assert_eq!(spent(&setup.app).await, 3 * COST);
    setup.app.assert_ledger_clean().await;
}

/// `gemini-embed`'s input price in nano-USD a token.
const EMBED_NANOS_PER_TOKEN: i64 = 150;

fn floats(vector: &Value) -> Vec<f64> {
    vector
        .as_array()
        .expect("an array of numbers")
        .iter()
        .map(|value| value.as_f64().expect("a number"))
        .collect()
}

#[tokio::test]
async fn embeddings_reach_gemini_as_batch_embed_contents_billed_by_the_tokens_google_counts() {
    let setup = spawn_gemini().await;
    let texts = ["alpha beta", "gamma"];
    let tokens = |texts: &[&str]| texts.iter().map(|text| gemini_tokens_of(text)).sum::<u64>();
    let body = json!({
        "model": "gemini-embed",
        "input": texts,
        "dimensions": 4,
        "encoding_format": "float",
        "user": "user-1",
    });
    let response = setup.app.post_embeddings(&body).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["model"], "gemini-embedding-001");
    let data = reply["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(
        (&data[1]["object"], &data[1]["index"]),
        (&json!("embedding"), &json!(1))
    );
    assert_eq!(floats(&data[0]["embedding"]).len(), 4);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let counted = tokens(&texts);
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": counted, "total_tokens": counted})
    );

    let requests = setup.gemini.requests();
    let paths: Vec<&str> = requests.iter().map(|request| request.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
            "/v1beta/models/gemini-embedding-001:countTokens",
        ],
        "Google reported no usage, so the texts were counted"
    );
    assert_eq!(requests[0].header("x-goog-api-key"), Some(FAKE_GEMINI_API_KEY));
    assert_eq!(
        requests[0].body,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "alpha beta"}]}, "outputDimensionality": 4},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "gamma"}]}, "outputDimensionality": 4},
        ]})
    );

    // Where Google reports `usageMetadata`, nothing else is asked.
    setup.gemini.report_embedding_usage(true);
    let response = setup
        .app
        .post_embeddings(&json!({"model": "gemini-embed", "input": "alpha beta", "encoding_format": "float"}))
        .await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.expect("json");
    assert_eq!(
        floats(&reply["data"][0]["embedding"]).len(),
        8,
        "the model's own length"
    );
    assert_eq!(reply["usage"]["prompt_tokens"], tokens(&["alpha beta"]));
    assert_eq!(setup.gemini.requests().len(), 3, "no countTokens");

    // Gemini embeds text: token ids are refused before anything is sent or held.
    let (status, error) = refused(
        setup
            .app
            .post_embeddings(&json!({"model": "gemini-embed", "input": [1, 2, 3]}))
            .await,
    )
    .await;
    assert_eq!((status, &error["type"]), (400, &json!("invalid_request_error")));
    assert!(
        error["message"].as_str().expect("message").contains("token ids"),
        "{error}"
    );

    // Google's 429 keeps its status and when to retry, in OpenAI's envelope, and is free.
    setup.gemini.push_behavior(GeminiBehavior::Status(429));
    let limited = setup
        .app
        .post_embeddings(&json!({"model": "gemini-embed", "input": "alpha"}))
        .await;
    assert_eq!(limited.headers()["retry-after"], "17");
    assert_eq!(refused(limited).await.0, 429);
    assert_eq!(setup.gemini.requests().len(), 4);

    let expected = i64::try_from(counted + tokens(&["alpha beta"])).expect("small") * EMBED_NANOS_PER_TOKEN;
    assert_eq!(spent(&setup.app).await, expected);
    let records = setup.app.usage_records().await;
    assert_eq!(records.len(), 4);
    assert_eq!(
        records.iter().map(|record| record.cost.nanos()).sum::<i64>(),
        expected,
        "the refused requests cost nothing"
    );
    setup.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_openai_sdk_embeds_through_gemini_in_base64_as_it_asks_by_default() {
    let setup = spawn_gemini().await;
    let direct = setup
        .app
        .post_embeddings(&json!({"model": "gemini-embed", "input": ["alpha beta", "gamma"], "dimensions": 4, "encoding_format": "float"}))
        .await;
    assert_eq!(direct.status(), 200);
    let direct: Value = direct.json().await.expect("json");
    let cases = run_script_with(
        &setup.app,
        "clouds.py",
        &[
            ("TOLLGATE_CLOUD_MODELS", ""),
            ("TOLLGATE_CLOUD_EMBEDDERS", "gemini-embed"),
        ],
    )
    .await;
    let sdk = &cases["gemini-embed/embeddings"];
    assert_eq!(sdk["model"], "gemini-embedding-001");
    let vectors = sdk["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 2);
    for (index, vector) in vectors.iter().enumerate() {
        assert_eq!(
            floats(vector),
            floats(&direct["data"][index]["embedding"]),
            "base64 decodes to Google's floats exactly"
        );
    }
    assert_eq!(sdk["prompt_tokens"], direct["usage"]["prompt_tokens"]);
    let requests = setup.gemini.requests();
    assert!(
        requests
            .iter()
            .all(|request| request.body.get("encoding_format").is_none()),
        "the encoding is the gateway's to do"
    );
}

#[tokio::test]
async fn gemini_3_sees_its_thought_signatures_again_through_the_tool_use_ids() {
    let setup = spawn_gemini().await;
    setup.gemini.push_behavior(GeminiBehavior::Ok(GeminiReply {
        text: String::new(),
        function_call: Some(("weather".to_owned(), json!({"city": "Paris"}))),
        ..reply()
    }));
    let mut body = gemini_message_body();
    body["model"] = json!("gemini-3-flash");
    body["tools"] = json!([{"name": "weather", "description": "Weather by city",
                            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.expect("json");
    let call = message["content"]
        .as_array()
        .expect("content")
        .iter()
        .find(|block| block["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    let id = call["id"].as_str().expect("an id");
    assert!(id.contains("__thought__"), "{id}");
    assert!(
        id.chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_' || character == '-'),
        "the id keeps to the characters tool ids may use: {id}"
    );
    let issued = setup.gemini.requests().len();

    // The next turn shows Gemini the call with the signature it issued, as Google requires.
    body["messages"] = json!([
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "Sunny"}]},
    ]);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let sent = &setup.gemini.requests()[issued];
    let model_turn = &sent.body["contents"][1];
    let signature = model_turn["parts"][0]["thoughtSignature"]
        .as_str()
        .expect("a signature");
    assert!(
        signature.starts_with("++++"),
        "Google's own base64 again: {signature}"
    );
    let call_id = model_turn["parts"][0]["functionCall"]["id"]
        .as_str()
        .expect("the call's id");
    assert!(!call_id.contains("__thought__"));
    assert_eq!(
        sent.body["contents"][2]["parts"][0]["functionResponse"]["id"],
        call_id
    );

    // Through Chat Completions the signature rides in the tool call's id just the same.
    let chat = json!({
        "model": "gemini-3-flash",
        "messages": [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "Sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    });
    let response = setup.app.post_chat(&chat).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );

    // A call Gemini did not make (history from another model) passes Google's documented skip.
    body["messages"] = json!([
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "Sunny"}]},
    ]);
    let response = setup.app.post_messages(&body).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let sent = setup.gemini.requests().pop().expect("sent");
    assert_eq!(
        sent.body["contents"][1]["parts"][0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );

    // Gemini 2.5 is never sent the skip.
    body["model"] = json!("gemini-flash");
    let response = setup.app.post_messages(&body).await;
    assert_eq!(response.status(), 200);
    let sent = setup.gemini.requests().pop().expect("sent");
    assert!(
        sent.body["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none()
    );
    setup.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn count_tokens_on_gemini_is_google_s_count_of_the_request_it_would_send() {
    let setup = spawn_gemini().await;
    let response = setup
        .app
        .client
        .post(setup.app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &setup.app.api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gemini-flash", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let count: Value = response.json().await.expect("json");
    let expected = gemini_tokens_of("Be brief.") + gemini_tokens_of("Hello there");
    assert_eq!(
        count,
        json!({"input_tokens": expected}),
        "system and turns, as Google counts them"
    );
    let requests = setup.gemini.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1beta/models/gemini-2.5-flash:countTokens");
    assert_eq!(
        requests[0].body,
        json!({"generateContentRequest": {
            "model": "models/gemini-2.5-flash",
            "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
        }})
    );
    assert_eq!(spent(&setup.app).await, 0, "counting is free");
}
