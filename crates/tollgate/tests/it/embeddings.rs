//! OpenAI's Embeddings (#20) on the same keys, limits and credit: passed through to an
//! OpenAI-compatible upstream with only the model rewritten, answered offline by the
//! simulated model, billed exactly `prompt_tokens` × the input price, never charged when the
//! upstream fails, refused in OpenAI's envelope always, and driven by the `openai` SDK (which
//! asks for base64 and checks it decodes to the floats).

use serde_json::{Value, json};
use tollgate_service::UsageStatus;
use tollgate_testkit::{Behavior, Reply};

use crate::chat::charged;
use crate::helpers::{Options, TestApp, chat_body, spawn_app, spawn_app_with, starter_nanos};
use crate::sdk::{int, run_script};

/// An embeddings model on the OpenAI-compatible fake: $0.13 per MTok of input, 130 nano-USD
/// a token.
const FAKE_EMBED: &str = r#"
    [models.fake-embed]
    class = "haiku"
    provider = "fake-openai"
    upstream_model = "text-embedding-3-large"
    embeddings = true
    input = "0.13"
"#;

/// text-embedding-3-small (built in, on the simulated model): $0.02 per MTok, 20 nano-USD a
/// token.
const SMALL_NANOS_PER_TOKEN: i64 = 20;

impl TestApp {
    /// `POST /v1/embeddings` as the `openai` SDKs send it, with `key`.
    pub(crate) async fn post_embeddings_with(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/embeddings"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn post_embeddings(&self, body: &Value) -> reqwest::Response {
        self.post_embeddings_with(&self.api_key, body).await
    }
}

/// Status and body of an embeddings request expected to be refused, checked to be in OpenAI's
/// envelope.
pub(crate) async fn refused(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let envelope: Value = response.json().await.expect("json");
    assert!(envelope.get("type").is_none(), "OpenAI's envelope: {envelope}");
    assert!(envelope["error"]["message"].is_string(), "{envelope}");
    (status, envelope["error"].clone())
}

#[tokio::test]
async fn embeddings_pass_through_to_an_openai_upstream_and_are_charged_their_prompt_tokens() {
    let app = spawn_app_with(Options {
        extra_config: FAKE_EMBED,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 1_234,
        ..Reply::default()
    }));
    let body = json!({
        "model": "fake-embed",
        "input": ["alpha", "beta"],
        "encoding_format": "float",
        "dimensions": 8,
        "user": "user-1",
        "x_vendor_option": {"truncate": "END"},
    });
    let response = app.post_embeddings(&body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-request-id").is_some());
    assert!(response.headers().get("x-ratelimit-limit-requests").is_some());
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["object"], "list");
    assert_eq!(
        reply["model"], "text-embedding-3-large",
        "the upstream's reply as it came"
    );
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 1_234, "total_tokens": 1_234})
    );
    let data = reply["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["embedding"].as_array().expect("floats").len(), 8);

    let sent = &app.fake.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer openai-provider-secret")
    );
    let mut expected = body.clone();
    expected["model"] = json!("text-embedding-3-large");
    assert_eq!(
        sent.body, expected,
        "only the model is rewritten; unknown fields pass"
    );

    assert_eq!(charged(&app).await, 1_234 * 130);
    let record = app.usage_records().await.pop().expect("a usage record");
    assert_eq!(record.model, "fake-embed");
    assert_eq!(record.status, UsageStatus::Succeeded);
    assert_eq!(record.usage.input_tokens, 1_234);
    assert_eq!(record.usage.output_tokens, 0);
    assert_eq!(record.cost.nanos(), 1_234 * 130);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_simulated_model_embeds_offline_deterministically_and_is_charged() {
    let app = spawn_app().await;
    let text = "The quick brown fox jumps over the lazy dog";
    let embed = |body: Value| {
        let app = &app;
        async move {
            let response = app.post_embeddings(&body).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let first = embed(json!({"model": "text-embedding-3-small", "input": text})).await;
    assert_eq!(first["model"], "text-embedding-3-small");
    let vector: Vec<f64> = first["data"][0]["embedding"]
        .as_array()
        .expect("floats")
        .iter()
        .map(|value| value.as_f64().expect("a float"))
        .collect();
    assert_eq!(vector.len(), 1_536);
    let norm: f64 = vector.iter().map(|value| value * value).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "a unit vector: {norm}");
    let prompt_tokens = int(&first["usage"], "prompt_tokens");
    assert_eq!(prompt_tokens, 11, "a token per four bytes");

    let base64 = |reply: &Value| reply["data"][0]["embedding"].as_str().expect("base64").to_owned();
    let again =
        embed(json!({"model": "text-embedding-3-small", "input": [text], "encoding_format": "base64"})).await;
    let once_more =
        embed(json!({"model": "text-embedding-3-small", "input": text, "encoding_format": "base64"})).await;
    assert_eq!(
        base64(&again).len(),
        1_536 * 4 * 4 / 3,
        "1,536 little-endian f32s"
    );
    assert_eq!(
        base64(&again),
        base64(&once_more),
        "the same input embeds the same"
    );

    let ids =
        embed(json!({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4, 5]], "dimensions": 4}))
            .await;
    assert_eq!(ids["data"].as_array().expect("data").len(), 2);
    assert_eq!(ids["data"][1]["embedding"].as_array().expect("floats").len(), 4);
    assert_eq!(int(&ids["usage"], "prompt_tokens"), 5, "a token per id");

    let (status, error) = refused(
        app.post_embeddings(&json!({"model": "text-embedding-3-small", "input": [{"text": "x"}]}))
            .await,
    )
    .await;
    assert_eq!(
        (status, &error["type"]),
        (400, &json!("invalid_request_error")),
        "the simulated model checks the input's items, and is not paid for refusing them"
    );

    assert_eq!(
        charged(&app).await,
        (3 * prompt_tokens + 5) * SMALL_NANOS_PER_TOKEN
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_upstream_refusal_keeps_its_status_and_retry_headers_and_charges_nothing() {
    let app = spawn_app_with(Options {
        extra_config: FAKE_EMBED,
        ..Options::default()
    })
    .await;
    let body = json!({"model": "fake-embed", "input": "Hello"});
    app.fake.set_behavior(Behavior::Status(429));
    let limited = app.post_embeddings(&body).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    assert_eq!(limited.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(
        limited.headers().get("openai-organization").is_none(),
        "only the headers a retry needs pass"
    );
    let (_, error) = refused(limited).await;
    assert_eq!(error["type"], "requests", "the upstream's body as it came");

    app.fake.set_behavior(Behavior::Status(500));
    let failed = app.post_embeddings(&body).await;
    assert_eq!(failed.status(), 500);
    assert_eq!(failed.headers()["x-should-retry"], "true");
    let (_, error) = refused(failed).await;
    assert_eq!(error["type"], "server_error");

    app.wait_for_settlement().await;
    assert_eq!(
        app.balance().await,
        (starter_nanos(), 0, 0),
        "nothing was charged"
    );
    let records = app.usage_records().await;
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|record| record.status == UsageStatus::Failed && record.cost.nanos() == 0),
        "{records:?}"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn embeddings_refusals_come_in_openais_envelope() {
    // Goal: every refusal, the lack of credit last, is OpenAI's, and none reaches the
    // upstream or moves money.
    let app = spawn_app_with(Options {
        extra_config: FAKE_EMBED,
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let (status, error) = refused(
        app.post_embeddings(&json!({"model": "no-such-embedder", "input": "x"}))
            .await,
    )
    .await;
    assert_eq!((status, &error["code"]), (404, &json!("model_not_found")));
    assert_eq!(error["type"], "invalid_request_error");

    let (status, created) = app
        .admin_post(
            "/v1/organizations/api_keys",
            json!({"name": "chat only", "allowed_models": ["fake-gpt"]}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let key = created["api_key_secret"].as_str().expect("secret");
    let (status, error) = refused(
        app.post_embeddings_with(key, &json!({"model": "fake-embed", "input": "x"}))
            .await,
    )
    .await;
    assert_eq!((status, &error["type"]), (403, &json!("permission_error")));
    assert_eq!(error["param"], "model");

    // A chat model makes no embeddings, on any kind of provider; nor does an embeddings
    // model chat.
    for model in ["claude-sonnet-4-6", "fake-sonnet", "fake-gpt"] {
        let (status, error) =
            refused(app.post_embeddings(&json!({"model": model, "input": "x"})).await).await;
        assert_eq!(
            (status, &error["type"]),
            (400, &json!("invalid_request_error")),
            "{model}"
        );
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains("does not support embeddings"),
            "{model}: {error}"
        );
    }
    let (status, error) = refused(app.post_chat(&chat_body("fake-embed")).await).await;
    assert_eq!((status, &error["param"]), (400, &json!("model")));

    let bad_json = app
        .client
        .post(app.url("/v1/embeddings"))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused(bad_json).await.0, 400);
    let (status, error) = refused(app.post_embeddings(&json!({"input": "x"})).await).await;
    assert_eq!((status, &error["param"]), (400, &json!("model")));
    let (status, error) = refused(app.post_embeddings(&json!({"model": "fake-embed"})).await).await;
    assert_eq!((status, &error["param"]), (400, &json!("input")));
    let (status, error) = refused(
        app.client
            .post(app.url("/v1/embeddings"))
            .bearer_auth("sk-wrong")
            .json(&json!({"model": "fake-embed", "input": "x"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((status, &error["code"]), (401, &json!("invalid_api_key")));

    let no_credit = app
        .post_embeddings(&json!({"model": "fake-embed", "input": "Hello"}))
        .await;
    assert_eq!(no_credit.headers()["x-should-retry"], "false");
    let (status, error) = refused(no_credit).await;
    assert_eq!((status, &error["type"]), (429, &json!("insufficient_quota")));
    assert_eq!(error["message"], tollgate_gateway::CREDIT_TOO_LOW);

    assert!(app.fake.requests().is_empty(), "nothing reached the upstream");
    app.wait_for_settlement().await;
    assert_eq!(app.balance().await, (0, 0, 0), "nothing was charged");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_openai_sdk_creates_embeddings() {
    let app = spawn_app_with(Options {
        extra_config: FAKE_EMBED,
        ..Options::default()
    })
    .await;
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 7,
        ..Reply::default()
    }));
    let cases = run_script(&app, "openai_embeddings.py").await;

    let simulated = &cases["simulated"];
    assert_eq!(simulated["model"], "text-embedding-3-small");
    assert_eq!(int(simulated, "count"), 2);
    assert_eq!(
        int(simulated, "dimensions"),
        1_536,
        "decoded from base64 by the SDK"
    );
    let floats = &cases["simulated_floats"];
    assert_eq!(int(floats, "dimensions"), 1_536);
    let first = |case: &Value| case["first"].as_f64().expect("a float");
    assert!(
        (first(floats) - first(simulated)).abs() < 1e-7,
        "the same input, the same vector, in either encoding: {floats} {simulated}"
    );
    let passthrough = &cases["passthrough"];
    assert_eq!(passthrough["model"], "text-embedding-3-large");
    assert_eq!(int(passthrough, "prompt_tokens"), 7);
    assert_eq!(cases["unknown_model"]["status"], 404);
    assert_eq!(cases["unknown_model"]["code"], "model_not_found");

    let expected =
        (int(simulated, "prompt_tokens") + int(floats, "prompt_tokens")) * SMALL_NANOS_PER_TOKEN + 7 * 130;
    assert_eq!(charged(&app).await, expected);
    app.assert_ledger_clean().await;
}

/// A gateway forwards open lists: what an OpenAI client sends beside its body (its SDK's
/// `x-stainless-*`, a tracing header, one nobody knows) reaches an OpenAI-compatible
/// upstream as it came, on Chat Completions, the Responses API and Embeddings alike; its key
/// and the account its key names (`openai-organization`, `openai-project`) do not, and
/// neither does an Anthropic client's header on a Messages request translated to OpenAI.
#[tokio::test]
async fn an_openai_clients_own_headers_reach_an_openai_upstream_and_its_key_and_account_do_not() {
    let app = spawn_app_with(Options {
        extra_config: FAKE_EMBED,
        ..Options::default()
    })
    .await;
    let sent_with_headers = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(&app.api_key)
            .header("x-stainless-lang", "python")
            .header("x-vendor-trace", "trace-17")
            .header("openai-organization", "org-of-the-tollgate-key")
            .header("openai-project", "proj-of-the-tollgate-key")
            .json(&body)
            .send()
    };
    let chat = sent_with_headers("/v1/chat/completions", chat_body("fake-gpt"))
        .await
        .expect("sent");
    assert_eq!(chat.status(), 200);
    let responses = sent_with_headers(
        "/v1/responses",
        json!({"model": "fake-gpt", "input": "Hello", "store": false}),
    )
    .await
    .expect("sent");
    assert_eq!(responses.status(), 200);
    let embed = sent_with_headers("/v1/embeddings", json!({"model": "fake-embed", "input": "alpha"}))
        .await
        .expect("sent");
    assert_eq!(embed.status(), 200);
    let requests = app.fake.requests();
    assert_eq!(requests.len(), 3);
    for (sent, path) in
        requests
            .iter()
            .zip(["/v1/chat/completions", "/v1/chat/completions", "/v1/embeddings"])
    {
        assert_eq!(sent.path, path);
        assert_eq!(sent.header("x-stainless-lang"), Some("python"), "{path}");
        assert_eq!(sent.header("x-vendor-trace"), Some("trace-17"), "{path}");
        assert_eq!(
            sent.header("authorization"),
            Some("Bearer openai-provider-secret"),
            "{path}"
        );
        assert_eq!(sent.header("openai-organization"), None, "{path}");
        assert_eq!(sent.header("openai-project"), None, "{path}");
    }

    let message = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01")
        .header("x-vendor-trace", "trace-18")
        .json(&crate::helpers::message_body("fake-gpt"))
        .send()
        .await
        .expect("sent");
    assert_eq!(message.status(), 200);
    let translated = app.fake.requests().pop().expect("the translated request");
    assert_eq!(translated.path, "/v1/chat/completions");
    assert_eq!(
        translated.header("x-vendor-trace"),
        None,
        "another dialect's headers mean nothing to this upstream"
    );
    app.wait_for_settlement().await;
    app.assert_ledger_clean().await;
}
