//! Anthropic's models through the clouds that host them: `bedrock` (SigV4-signed
//! `InvokeModel`, streams in AWS event-stream frames) and `vertex` (`rawPredict` with an
//! OAuth2 token from a service-account key). Each cloud is a fake that checks credentials as
//! the real one does; the goal is that a client cannot tell the clouds from Anthropic's API,
//! that each request is billed exactly what the cloud reported, that the operator's wrong
//! credentials are never the client's problem, and that one cloud fails over to the other.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, FakeBedrock, FakeVertex, Reply};

use crate::helpers::{Options, TestApp, chat_body, message_body, parse_sse, spawn_app_with, starter_nanos};
use crate::sdk::run_script;

/// `bedrock-sonnet` on Bedrock, `vertex-sonnet` on Vertex AI, `cloud-sonnet` on Bedrock
/// first and Vertex AI as its failover, and `bedrock-misconfigured` signed with a wrong
/// secret; all at Sonnet's prices.
const CLOUDS: &str = r#"
    [providers.bedrock]
    kind = "bedrock"
    region = "us-east-1"
    endpoint = "{bedrock}"
    access_key_id = "{aws_access_key_id}"
    secret_access_key = "{aws_secret_access_key}"
    idle_timeout_seconds = 2
    request_timeout_seconds = 5
    cooldown_seconds = 30
    [providers.bedrock-wrong-secret]
    kind = "bedrock"
    region = "us-east-1"
    endpoint = "{bedrock}"
    access_key_id = "{aws_access_key_id}"
    secret_access_key = "not-the-secret"
    [providers.vertex]
    kind = "vertex"
    project = "{gcp_project}"
    region = "{gcp_region}"
    endpoint = "{vertex}"
    credentials_file = "{vertex_key}"
    idle_timeout_seconds = 2
    request_timeout_seconds = 5
    [models.bedrock-sonnet]
    class = "sonnet"
    provider = "bedrock"
    upstream_model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    input = "3"
    output = "15"
    [models.vertex-sonnet]
    class = "sonnet"
    provider = "vertex"
    upstream_model = "claude-sonnet-4-5@20250929"
    input = "3"
    output = "15"
    [models.bedrock-misconfigured]
    class = "sonnet"
    provider = "bedrock-wrong-secret"
    upstream_model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    input = "3"
    output = "15"
    [models.cloud-sonnet]
    class = "sonnet"
    input = "3"
    output = "15"
    [[models.cloud-sonnet.deployments]]
    provider = "bedrock"
    upstream_model = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    [[models.cloud-sonnet.deployments]]
    provider = "vertex"
    upstream_model = "claude-sonnet-4-5@20250929"
    priority = 1
"#;

/// 1,000 input and 100 output tokens at Sonnet's $3 / $15.
const COST: i64 = 1_000 * 3_000 + 100 * 15_000;

struct Clouds {
    app: TestApp,
    bedrock: FakeBedrock,
    vertex: FakeVertex,
    _key_dir: tempfile::TempDir,
}

async fn spawn_clouds() -> Clouds {
    let bedrock = FakeBedrock::start().await;
    let vertex = FakeVertex::start().await;
    let key_dir = tempfile::tempdir().expect("a directory for the key");
    let key_path = key_dir.path().join("service-account.json");
    std::fs::write(&key_path, vertex.service_account_json()).expect("key written");
    let reply = Reply {
        text: "Served from the cloud.".into(),
        input_tokens: 1_000,
        output_tokens: 100,
        ..Reply::default()
    };
    bedrock.upstream().set_behavior(Behavior::Ok(reply.clone()));
    vertex.upstream().set_behavior(Behavior::Ok(reply));
    let app = spawn_app_with(Options {
        extra_config: CLOUDS,
        replacements: vec![
            ("{bedrock}", bedrock.base_url()),
            ("{vertex}", vertex.base_url()),
            ("{vertex_key}", key_path.display().to_string()),
            (
                "{aws_access_key_id}",
                tollgate_testkit::FAKE_AWS_ACCESS_KEY_ID.to_owned(),
            ),
            (
                "{aws_secret_access_key}",
                tollgate_testkit::FAKE_AWS_SECRET_ACCESS_KEY.to_owned(),
            ),
            ("{gcp_project}", tollgate_testkit::FAKE_GCP_PROJECT.to_owned()),
            ("{gcp_region}", tollgate_testkit::FAKE_GCP_REGION.to_owned()),
        ],
        ..Options::default()
    })
    .await;
    Clouds {
        app,
        bedrock,
        vertex,
        _key_dir: key_dir,
    }
}

/// What the organization was charged in all, once every reservation has ended.
async fn spent(app: &TestApp) -> i64 {
    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    assert_eq!((held, available + spent), (0, starter_nanos()));
    spent
}

/// Sends a message and a streamed one to `model`; checks both read as Anthropic's.
async fn message_and_stream(app: &TestApp, model: &str, beta: Option<&str>) {
    let mut request = app
        .client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.api_key)
        .header("anthropic-version", "2023-06-01");
    if let Some(beta) = beta {
        request = request.header("anthropic-beta", beta);
    }
    let response = request.json(&message_body(model)).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["content"][0]["text"], "Served from the cloud.");
    assert_eq!(message["usage"]["input_tokens"], 1_000);
    assert_eq!(message["usage"]["output_tokens"], 100);

    let mut body = message_body(model);
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
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, data)| data["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Served from the cloud.");
}

#[tokio::test]
async fn bedrock_serves_json_and_event_stream_signed_and_billed_exactly() {
    let clouds = spawn_clouds().await;
    message_and_stream(&clouds.app, "bedrock-sonnet", Some("beta-one, beta-two")).await;
    assert_eq!(
        spent(&clouds.app).await,
        2 * COST,
        "billed exactly what Bedrock reported"
    );
    let records = clouds.app.usage_records().await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|record| record.cost.nanos() == COST));
    clouds.app.assert_ledger_clean().await;

    let requests = clouds.bedrock.requests();
    assert_eq!(clouds.bedrock.refused(), 0, "every request was signed right");
    let paths: Vec<&str> = requests.iter().map(|request| request.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
            "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream",
        ]
    );
    let first = &requests[0];
    assert!(
        first
            .header("authorization")
            .is_some_and(|value| value.starts_with("AWS4-HMAC-SHA256 Credential="))
    );
    assert_eq!(first.body["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(first.body["anthropic_beta"], json!(["beta-one", "beta-two"]));
    assert!(first.body.get("model").is_none() && first.body.get("stream").is_none());
    assert_eq!(first.body["max_tokens"], 100);
    assert!(
        first.header("x-api-key").is_none(),
        "the client's key never leaves"
    );
    // The model reached the scripted upstream as Bedrock's id.
    let upstream = clouds.bedrock.upstream().requests();
    assert_eq!(
        upstream[1].body["model"],
        "anthropic.claude-sonnet-4-5-20250929-v1:0"
    );
    assert_eq!(upstream[1].body["stream"], true);
}

#[tokio::test]
async fn vertex_serves_json_and_streams_on_one_cached_token_billed_exactly() {
    let clouds = spawn_clouds().await;
    message_and_stream(&clouds.app, "vertex-sonnet", None).await;
    message_and_stream(&clouds.app, "vertex-sonnet", None).await;
    assert_eq!(clouds.vertex.token_requests(), 1, "one token for four calls");
    assert_eq!(clouds.vertex.refused(), 0);
    assert_eq!(spent(&clouds.app).await, 4 * COST);
    clouds.app.assert_ledger_clean().await;

    let requests = clouds.vertex.requests();
    let prefix = format!(
        "/v1/projects/{}/locations/{}/publishers/anthropic/models/claude-sonnet-4-5@20250929",
        tollgate_testkit::FAKE_GCP_PROJECT,
        tollgate_testkit::FAKE_GCP_REGION
    );
    assert_eq!(requests[0].path, format!("{prefix}:rawPredict"));
    assert_eq!(requests[1].path, format!("{prefix}:streamRawPredict"));
    assert_eq!(requests[0].body["anthropic_version"], "vertex-2023-10-16");
    assert!(requests[0].body.get("model").is_none());
    assert_eq!(requests[1].body["stream"], true);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer ya29.fake-vertex-token-1")
    );
}

#[tokio::test]
async fn a_token_near_its_expiry_is_replaced() {
    let clouds = spawn_clouds().await;
    // Five minutes and a second: replaced one second after it was issued.
    clouds
        .vertex
        .set_token_lifetime(std::time::Duration::from_secs(301));
    let first = clouds.app.post_messages(&message_body("vertex-sonnet")).await;
    assert_eq!(first.status(), 200);
    let second = clouds.app.post_messages(&message_body("vertex-sonnet")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(clouds.vertex.token_requests(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let third = clouds.app.post_messages(&message_body("vertex-sonnet")).await;
    assert_eq!(third.status(), 200);
    assert_eq!(clouds.vertex.token_requests(), 2);
}

#[tokio::test]
async fn a_wrong_aws_secret_is_refused_by_bedrock_and_never_charged() {
    let clouds = spawn_clouds().await;
    let response = clouds
        .app
        .post_messages(&message_body("bedrock-misconfigured"))
        .await;
    assert_eq!(clouds.bedrock.refused(), 1, "the fake recomputed the signature");
    assert_eq!(clouds.bedrock.upstream().request_count(), 0);
    // Bedrock's 403 is the operator's credentials at fault, not the client's request:
    // shown as the provider account problem every upstream's 401/403 is.
    assert_eq!(response.status(), 502);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["type"], "error");
    assert_eq!(envelope["error"]["type"], "api_error");
    assert_eq!(spent(&clouds.app).await, 0);
    clouds.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn bedrock_refusals_reach_the_client_in_anthropic_s_envelope() {
    let clouds = spawn_clouds().await;
    clouds.bedrock.upstream().set_behavior(Behavior::Status(429));
    let response = clouds.app.post_messages(&message_body("bedrock-sonnet")).await;
    assert_eq!(response.status(), 429);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["type"], "error");
    assert_eq!(envelope["error"]["type"], "rate_limit_error");

    clouds.bedrock.upstream().set_behavior(Behavior::Status(400));
    let response = clouds.app.post_messages(&message_body("bedrock-sonnet")).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "invalid_request_error");
    assert_eq!(spent(&clouds.app).await, 0);
}

#[tokio::test]
async fn bedrock_fails_over_to_vertex_and_charges_once() {
    // Overloaded before the reply (Bedrock's 503), for a JSON request and a stream.
    let failures = [(Behavior::Status(529), false), (Behavior::Status(529), true)];
    for (failure, stream) in failures {
        let clouds = spawn_clouds().await;
        clouds.bedrock.upstream().set_behavior(failure);
        let mut body = message_body("cloud-sonnet");
        body["stream"] = json!(stream);
        let response = clouds.app.post_messages(&body).await;
        assert_eq!(response.status(), 200, "stream {stream}");
        let text = response.text().await.expect("body");
        // A stream's text arrives in deltas; it ends as a whole message.
        let whole = if stream {
            "event: message_stop"
        } else {
            "Served from the cloud"
        };
        assert!(text.contains(whole), "{text}");
        assert_eq!(clouds.bedrock.requests().len(), 1, "Bedrock tried once");
        assert_eq!(clouds.vertex.requests().len(), 1, "Vertex AI served");
        assert_eq!(spent(&clouds.app).await, COST, "stream {stream}: charged once");
        clouds.app.assert_ledger_clean().await;
    }
}

#[tokio::test]
async fn chat_completions_reach_both_clouds_translated() {
    let clouds = spawn_clouds().await;
    for model in ["bedrock-sonnet", "vertex-sonnet"] {
        let response = clouds.app.post_chat(&chat_body(model)).await;
        assert_eq!(response.status(), 200, "{model}");
        let completion: Value = response.json().await.expect("json");
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            "Served from the cloud."
        );
        assert_eq!(completion["usage"]["prompt_tokens"], 1_000);
    }
    assert_eq!(spent(&clouds.app).await, 2 * COST);
}

#[tokio::test]
async fn count_tokens_on_a_cloud_model_is_estimated() {
    let clouds = spawn_clouds().await;
    let response = clouds
        .app
        .client
        .post(clouds.app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &clouds.app.api_key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "bedrock-sonnet", "messages": [{"role": "user", "content": "Count me."}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let count: Value = response.json().await.expect("json");
    assert!(count["input_tokens"].as_u64().is_some_and(|tokens| tokens > 0));
    assert!(clouds.bedrock.requests().is_empty(), "the cloud was not asked");
}

#[tokio::test]
async fn the_official_sdks_reach_each_cloud_through_tollgate() {
    let clouds = spawn_clouds().await;
    let cases = run_script(&clouds.app, "clouds.py").await;
    for model in ["bedrock-sonnet", "vertex-sonnet"] {
        let message = &cases[&format!("{model}/message")];
        assert_eq!(message["text"], "Served from the cloud.");
        assert_eq!(message["input_tokens"], 1_000);
        let stream = &cases[&format!("{model}/message_stream")];
        assert_eq!(stream["text"], "Served from the cloud.");
        assert_eq!(stream["output_tokens"], 100);
        let chat = &cases[&format!("{model}/chat_stream")];
        assert_eq!(chat["content"], "Served from the cloud.");
        assert_eq!(chat["prompt_tokens"], 1_000);
    }
    assert_eq!(spent(&clouds.app).await, 6 * COST);
    assert_eq!(clouds.vertex.token_requests(), 1);
    assert_eq!(clouds.bedrock.refused(), 0);
    clouds.app.assert_ledger_clean().await;
}
