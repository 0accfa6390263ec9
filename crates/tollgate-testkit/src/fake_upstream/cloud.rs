//! Fake clouds that host Anthropic's models, each a real HTTP server on loopback in front
//! of a [`FakeUpstream`] whose behaviours and replies script them:
//!
//! - [`FakeBedrock`]: `POST /model/{modelId}/invoke` and `/invoke-with-response-stream`. It
//!   recomputes every request's SigV4 signature with its own copy of the secret and refuses
//!   one that differs with Bedrock's 403; it checks the body is Bedrock's (no `model`, no
//!   `stream`, `anthropic_version: "bedrock-2023-05-31"`), answers JSON, or the stream as AWS
//!   event-stream frames each carrying one Anthropic event in base64, and refusals in
//!   Bedrock's shape (`{"message"}` and `x-amzn-ErrorType`).
//! - [`FakeVertex`]: Google's OAuth2 token endpoint (the JWT bearer grant, whose assertion it
//!   verifies with the test service account's public key) and `rawPredict` /
//!   `streamRawPredict`, which take only a token it issued; replies and streams are
//!   Anthropic's own, passed through.
//!
//! The test service account's RSA key pair is checked in under `keys/`; it protects nothing.
//!
//! Benchmarks run them with [`CloudMode::Bench`]: nothing is recorded, the scripted upstream
//! behind them records nothing either, Bedrock takes requests unsigned (a load tool cannot
//! sign, and the direct row must cost the fake what the gateway's row does; the gateway still
//! signs every request it sends), and Vertex also takes [`BENCH_VERTEX_TOKEN`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_upstream::UpstreamError;
use tollgate_upstream::event_stream::Frame;
use tollgate_upstream::sse::parse_event_stream;

use crate::fake_upstream::{FakeUpstream, RecordedRequest, Recording, lock, loopback_any_port};

/// The access key id the fake Bedrock knows.
pub const FAKE_AWS_ACCESS_KEY_ID: &str = "AKIDTOLLGATETEST0001";
/// Its secret: sign with another and the fake refuses.
pub const FAKE_AWS_SECRET_ACCESS_KEY: &str = "fake/secret+access+key/for+tollgate+tests";
/// The region the fake Bedrock expects signatures scoped to.
pub const FAKE_AWS_REGION: &str = "us-east-1";
/// The project and region the fake Vertex serves.
pub const FAKE_GCP_PROJECT: &str = "tollgate-test";
pub const FAKE_GCP_REGION: &str = "us-east5";

/// The access token a benchmark's fake Vertex takes without a grant (`CloudMode::Bench`).
pub const BENCH_VERTEX_TOKEN: &str = "ya29.bench-vertex-token";

/// How a fake cloud runs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudMode {
    /// Every request recorded, every credential checked.
    Test,
    /// Nothing recorded; Bedrock's signatures not checked; Vertex takes `BENCH_VERTEX_TOKEN`.
    Bench,
}

const SERVICE_ACCOUNT_EMAIL: &str = "tollgate-test@tollgate-test.iam.gserviceaccount.com";
const SERVICE_ACCOUNT_PRIVATE_KEY: &str = include_str!("../../keys/vertex-test-service-account.key.pem");
const SERVICE_ACCOUNT_PUBLIC_KEY: &str = include_str!("../../keys/vertex-test-service-account.pub.pem");

/// What both fakes keep: the requests as they came, and the upstream that answers them.
struct CloudShared {
    upstream_url: String,
    http: reqwest::Client,
    recorded: Mutex<Vec<RecordedRequest>>,
    refused: AtomicUsize,
    token_requests: AtomicUsize,
    issued_tokens: Mutex<HashSet<String>>,
    token_lifetime: Mutex<Duration>,
    token_uri: String,
    mode: CloudMode,
}

impl CloudShared {
    fn record(&self, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
        if self.mode == CloudMode::Test {
            lock(&self.recorded).push(RecordedRequest::of(uri, headers, body));
        }
    }

    /// Sends an Anthropic Messages body to the scripted upstream.
    async fn forward(&self, body: &Value, beta: Option<&str>) -> Result<reqwest::Response, Response> {
        let mut request = self
            .http
            .post(format!("{}/v1/messages", self.upstream_url))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_string());
        if let Some(beta) = beta {
            request = request.header("anthropic-beta", beta);
        }
        request
            .send()
            .await
            .map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()).into_response())
    }
}

struct Server {
    addr: SocketAddr,
    upstream: FakeUpstream,
    shared: Arc<CloudShared>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_server(
    listen: SocketAddr,
    mode: CloudMode,
    router: impl FnOnce(Arc<CloudShared>) -> Router,
) -> std::io::Result<Server> {
    let recording = match mode {
        CloudMode::Test => Recording::Enabled,
        CloudMode::Bench => Recording::Disabled,
    };
    let upstream = FakeUpstream::bind(loopback_any_port(), recording).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(CloudShared {
        upstream_url: upstream.base_url(),
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client for the fake upstream"),
        recorded: Mutex::default(),
        refused: AtomicUsize::new(0),
        token_requests: AtomicUsize::new(0),
        issued_tokens: Mutex::default(),
        token_lifetime: Mutex::new(Duration::from_secs(3_599)),
        token_uri: format!("http://{addr}/token"),
        mode,
    });
    if mode == CloudMode::Bench {
        lock(&shared.issued_tokens).insert(BENCH_VERTEX_TOKEN.to_owned());
    }
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        addr,
        upstream,
        shared,
        task,
    })
}

macro_rules! cloud_handle {
    ($name:ident) => {
        impl $name {
            /// `http://127.0.0.1:PORT`, the endpoint to configure.
            pub fn base_url(&self) -> String {
                format!("http://{}", self.server.addr)
            }

            /// The scripted upstream behind the cloud: set its behaviours and replies, and
            /// read the Anthropic bodies the cloud made of the requests.
            pub fn upstream(&self) -> &FakeUpstream {
                &self.server.upstream
            }

            /// Every request to the model routes as it arrived, in order.
            pub fn requests(&self) -> Vec<RecordedRequest> {
                lock(&self.server.shared.recorded).clone()
            }

            /// Requests refused for their credentials (a bad signature or token).
            pub fn refused(&self) -> usize {
                self.server.shared.refused.load(Ordering::SeqCst)
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.server.task.abort();
            }
        }
    };
}

/// A fake Amazon Bedrock runtime (see the module docs).
pub struct FakeBedrock {
    server: Server,
}

cloud_handle!(FakeBedrock);

impl FakeBedrock {
    /// A fake on a loopback port of its own, for tests.
    pub async fn start() -> FakeBedrock {
        FakeBedrock::bind(loopback_any_port(), CloudMode::Test)
            .await
            .expect("a loopback port for the fake Bedrock")
    }

    pub async fn bind(listen: SocketAddr, mode: CloudMode) -> std::io::Result<FakeBedrock> {
        let server = start_server(listen, mode, |shared| {
            Router::new()
                .route("/model/{model}/invoke", post(bedrock_invoke))
                .route("/model/{model}/invoke-with-response-stream", post(bedrock_invoke))
                .with_state(shared)
        })
        .await?;
        Ok(FakeBedrock { server })
    }
}

/// A fake Vertex AI with its token endpoint (see the module docs).
pub struct FakeVertex {
    server: Server,
}

cloud_handle!(FakeVertex);

impl FakeVertex {
    /// A fake on a loopback port of its own, for tests.
    pub async fn start() -> FakeVertex {
        FakeVertex::bind(loopback_any_port(), CloudMode::Test)
            .await
            .expect("a loopback port for the fake Vertex")
    }

    pub async fn bind(listen: SocketAddr, mode: CloudMode) -> std::io::Result<FakeVertex> {
        let server = start_server(listen, mode, |shared| {
            Router::new()
                .route("/token", post(vertex_token))
                .route(
                    "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{call}",
                    post(vertex_predict),
                )
                .with_state(shared)
        })
        .await?;
        Ok(FakeVertex { server })
    }

    /// A service account's JSON key whose `token_uri` is this fake's token endpoint.
    pub fn service_account_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": FAKE_GCP_PROJECT,
            "private_key_id": "tollgate-test-key",
            "private_key": SERVICE_ACCOUNT_PRIVATE_KEY,
            "client_email": SERVICE_ACCOUNT_EMAIL,
            "client_id": "100000000000000000001",
            "token_uri": self.server.shared.token_uri,
        })
        .to_string()
    }

    /// Grants received at the token endpoint, answered or not.
    pub fn token_requests(&self) -> usize {
        self.server.shared.token_requests.load(Ordering::SeqCst)
    }

    /// The `expires_in` of tokens issued from now on (3,599 seconds unless set).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *lock(&self.server.shared.token_lifetime) = lifetime;
    }
}

// ---- Bedrock ----

/// Bedrock's refusal: `{"message"}` with the exception named in `x-amzn-ErrorType`.
fn bedrock_error(status: StatusCode, exception: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

async fn bedrock_invoke(
    State(shared): State<Arc<CloudShared>>,
    Path(model): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(&uri, &headers, &body);
    if shared.mode == CloudMode::Test
        && let Err(refusal) = verify_sigv4(&uri, &headers, &body)
    {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return refusal;
    }
    let stream = uri.path().ends_with("/invoke-with-response-stream");
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
        return bedrock_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Malformed input request",
        );
    };
    for extraneous in ["model", "stream"] {
        if fields.contains_key(extraneous) {
            return bedrock_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("Malformed input request: #: extraneous key [{extraneous}] is not permitted"),
            );
        }
    }
    if fields.remove("anthropic_version") != Some(json!("bedrock-2023-05-31")) {
        return bedrock_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Malformed input request: #: required key [anthropic_version] not found or invalid",
        );
    }
    let beta = fields.remove("anthropic_beta").and_then(|betas| {
        let betas: Vec<String> = betas
            .as_array()?
            .iter()
            .filter_map(|beta| beta.as_str().map(str::to_owned))
            .collect();
        Some(betas.join(","))
    });
    fields.insert("model".to_owned(), Value::String(model));
    fields.insert("stream".to_owned(), Value::Bool(stream));
    let answer = match shared.forward(&Value::Object(fields), beta.as_deref()).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let status = answer.status();
    if !status.is_success() {
        return bedrock_refusal(answer).await;
    }
    if !stream {
        let body = answer.bytes().await.unwrap_or_default();
        let usage = serde_json::from_slice::<Value>(&body).unwrap_or_default()["usage"].clone();
        let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        for (name, field) in [
            ("x-amzn-bedrock-input-token-count", "input_tokens"),
            ("x-amzn-bedrock-output-token-count", "output_tokens"),
        ] {
            if let Some(count) = usage[field].as_u64() {
                response.headers_mut().insert(name, HeaderValue::from(count));
            }
        }
        return response;
    }
    let events = parse_event_stream(
        answer
            .bytes_stream()
            .map(|chunk| chunk.map_err(|error| UpstreamError::Protocol(error.to_string()))),
    );
    let mut counts = (0_u64, 0_u64);
    let frames = events.map(move |event| {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                return Ok::<_, std::io::Error>(exception_frame(
                    "internalServerException",
                    &error.to_string(),
                ));
            }
        };
        let mut data: Value = serde_json::from_str(&event.data).unwrap_or_default();
        match event.event.as_str() {
            "message_start" => {
                counts.0 = data["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
            }
            "message_delta" => counts.1 = data["usage"]["output_tokens"].as_u64().unwrap_or(counts.1),
            "message_stop" => {
                data["amazon-bedrock-invocationMetrics"] = json!({
                    "inputTokenCount": counts.0,
                    "outputTokenCount": counts.1,
                    "invocationLatency": 1,
                    "firstByteLatency": 1,
                });
            }
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                let exception = match kind {
                    "overloaded_error" => "serviceUnavailableException",
                    "rate_limit_error" => "throttlingException",
                    _ => "internalServerException",
                };
                let message = data["error"]["message"].as_str().unwrap_or(kind).to_owned();
                return Ok(exception_frame(exception, &message));
            }
            _ => {}
        }
        let bytes = base64::engine::general_purpose::STANDARD.encode(data.to_string());
        Ok(Frame {
            headers: vec![
                (":event-type".to_owned(), "chunk".to_owned()),
                (":content-type".to_owned(), "application/json".to_owned()),
                (":message-type".to_owned(), "event".to_owned()),
            ],
            payload: Bytes::from(json!({ "bytes": bytes }).to_string()),
        }
        .encode())
    });
    (
        [(header::CONTENT_TYPE, "application/vnd.amazon.eventstream")],
        Body::from_stream(frames),
    )
        .into_response()
}

fn exception_frame(exception: &str, message: &str) -> Bytes {
    Frame {
        headers: vec![
            (":exception-type".to_owned(), exception.to_owned()),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "exception".to_owned()),
        ],
        payload: Bytes::from(json!({ "message": message }).to_string()),
    }
    .encode()
}

/// The scripted upstream's refusal (Anthropic's envelope) as Bedrock words it.
async fn bedrock_refusal(answer: reqwest::Response) -> Response {
    let status = answer.status().as_u16();
    let retry_after = answer.headers().get("retry-after").cloned();
    let body: Value = answer.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("refused").to_owned();
    let (status, exception) = match status {
        400 => (400, "ValidationException"),
        401 | 403 => (403, "AccessDeniedException"),
        404 => (404, "ResourceNotFoundException"),
        408 | 504 => (408, "ModelTimeoutException"),
        429 => (429, "ThrottlingException"),
        503 | 529 => (503, "ServiceUnavailableException"),
        _ => (500, "InternalServerException"),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = bedrock_error(status, exception, &message);
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, retry_after);
    }
    response
}

/// Recomputes the request's SigV4 signature over what arrived, with the fake's secret,
/// and compares it with the one sent.
#[allow(
    clippy::result_large_err,
    reason = "the refusal is the fake's answer, built once per refused request"
)]
fn verify_sigv4(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let refuse = |exception: &str, message: &str| bedrock_error(StatusCode::FORBIDDEN, exception, message);
    let missing = || {
        refuse(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    };
    let header_text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let authorization = header_text("authorization").ok_or_else(missing)?;
    let fields: BTreeMap<&str, &str> = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(missing)?
        .split(',')
        .filter_map(|field| field.trim().split_once('='))
        .collect();
    let (Some(credential), Some(signed_headers), Some(_signature)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return Err(missing());
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.first() != Some(&FAKE_AWS_ACCESS_KEY_ID) {
        return Err(refuse(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if scope.get(2) != Some(&FAKE_AWS_REGION) || scope.get(3) != Some(&"bedrock") {
        return Err(refuse(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region and service.",
        ));
    }
    let time = header_text("x-amz-date")
        .and_then(|date| chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ").ok())
        .map(|date| SystemTime::UNIX_EPOCH + Duration::from_secs(date.and_utc().timestamp().unsigned_abs()))
        .ok_or_else(missing)?;
    let host = header_text("host").ok_or_else(missing)?;
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map_or("/", |path| path.as_str())
    );
    let signed: Vec<(&str, &str)> = signed_headers
        .split(';')
        .filter(|name| !matches!(*name, "host" | "x-amz-date" | "x-amz-security-token"))
        .filter_map(|name| Some((name, header_text(name)?)))
        .collect();
    let identity = aws_credential_types::Credentials::new(
        FAKE_AWS_ACCESS_KEY_ID,
        FAKE_AWS_SECRET_ACCESS_KEY,
        header_text("x-amz-security-token").map(str::to_owned),
        None,
        "fake-bedrock",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(FAKE_AWS_REGION)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("complete signing parameters")
        .into();
    let signable = SignableRequest::new("POST", url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|_| missing())?;
    let (instructions, _) = sign(signable, &params).map_err(|_| missing())?.into_parts();
    let expected = instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.to_owned())
        .unwrap_or_default();
    if expected != authorization {
        return Err(refuse(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

// ---- Vertex AI ----

#[derive(serde::Deserialize)]
struct GrantClaims {
    scope: String,
}

async fn vertex_token(
    State(shared): State<Arc<CloudShared>>,
    axum::Form(form): axum::Form<BTreeMap<String, String>>,
) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let invalid_grant = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": description })),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid_grant("Missing assertion.");
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(SERVICE_ACCOUNT_PUBLIC_KEY.as_bytes())
        .expect("the checked-in public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&shared.token_uri]);
    validation.set_issuer(&[SERVICE_ACCOUNT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<GrantClaims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return invalid_grant("Invalid JWT Signature."),
    };
    if !claims
        .scope
        .split(' ')
        .any(|scope| scope == "https://www.googleapis.com/auth/cloud-platform")
    {
        return invalid_grant("Invalid OAuth scope or ID token audience provided.");
    }
    let number = shared.token_requests.load(Ordering::SeqCst);
    let token = format!("ya29.fake-vertex-token-{number}");
    lock(&shared.issued_tokens).insert(token.clone());
    let lifetime = *lock(&shared.token_lifetime);
    axum::Json(json!({
        "access_token": token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

fn google_error(status: StatusCode, google_status: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": { "code": status.as_u16(), "message": message, "status": google_status },
        })),
    )
        .into_response()
}

async fn vertex_predict(
    State(shared): State<Arc<CloudShared>>,
    Path((project, region, call)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(&uri, &headers, &body);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !token.is_some_and(|token| lock(&shared.issued_tokens).contains(token)) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if project != FAKE_GCP_PROJECT || region != FAKE_GCP_REGION {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Publisher model not found.");
    }
    let Some((model, method)) = call.rsplit_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such method.");
    };
    let stream = match method {
        "rawPredict" => false,
        "streamRawPredict" => true,
        _ => return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such method."),
    };
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
        );
    };
    if fields.contains_key("model") {
        return anthropic_invalid("model: Extra inputs are not permitted");
    }
    if fields.remove("anthropic_version") != Some(json!("vertex-2023-10-16")) {
        return anthropic_invalid("anthropic_version: Input should be 'vertex-2023-10-16'");
    }
    fields.insert("model".to_owned(), Value::String(model.to_owned()));
    fields.insert("stream".to_owned(), Value::Bool(stream));
    let beta = headers
        .get("anthropic-beta")
        .and_then(|value| value.to_str().ok());
    let answer = match shared.forward(&Value::Object(fields), beta).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(value) = answer.headers().get(&name) {
            response_headers.insert(name, value.clone());
        }
    }
    let body = Body::from_stream(answer.bytes_stream());
    (status, response_headers, body).into_response()
}

fn anthropic_invalid(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "type": "error",
            "error": { "type": "invalid_request_error", "message": message },
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a benchmark's fakes take an unsigned Bedrock request and the bench's Vertex
    /// token, and they record nothing; the tests' fakes refuse both.
    #[tokio::test]
    async fn only_the_bench_mode_takes_unsigned_requests_and_the_bench_token() {
        let client = reqwest::Client::new();
        let post = |url: String, version: &str| {
            let body = json!({"anthropic_version": version, "max_tokens": 8,
                              "messages": [{"role": "user", "content": "Hi"}]});
            client
                .post(url)
                .header("content-type", "application/json")
                .bearer_auth(BENCH_VERTEX_TOKEN)
                .body(body.to_string())
        };
        for mode in [CloudMode::Test, CloudMode::Bench] {
            let bedrock = FakeBedrock::bind(loopback_any_port(), mode).await.expect("bound");
            let vertex = FakeVertex::bind(loopback_any_port(), mode).await.expect("bound");
            let answers = [
                post(
                    format!("{}/model/m/invoke", bedrock.base_url()),
                    "bedrock-2023-05-31",
                ),
                post(
                    format!(
                        "{}/v1/projects/{FAKE_GCP_PROJECT}/locations/{FAKE_GCP_REGION}/publishers/anthropic/models/m:rawPredict",
                        vertex.base_url()
                    ),
                    "vertex-2023-10-16",
                ),
            ];
            for request in answers {
                let status = request.send().await.expect("sent").status();
                assert_eq!(
                    status.is_success(),
                    mode == CloudMode::Bench,
                    "{mode:?}: {status}"
                );
            }
            let refused = bedrock.refused() + vertex.refused();
            let recorded = bedrock.requests().len() + vertex.requests().len();
            match mode {
                CloudMode::Test => assert_eq!((refused, recorded), (2, 2)),
                CloudMode::Bench => assert_eq!((refused, recorded), (0, 0)),
            }
        }
    }
}
