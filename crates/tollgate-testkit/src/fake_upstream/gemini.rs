//! [`FakeGemini`]: Google's Gemini API on loopback, as strict as the real one where a
//! translation could go wrong. `POST /v1beta/models/{model}:generateContent` answers one
//! `GenerateContentResponse`; `:streamGenerateContent?alt=sse` answers `data: {…}` chunks
//! (without `alt=sse`, one JSON array of them, as Google does), the text split over several
//! and the whole `usageMetadata` on the last. It takes only `x-goog-api-key:
//! FAKE_GEMINI_API_KEY` (no key: 403 `PERMISSION_DENIED`; another: 400 `API_KEY_INVALID`),
//! refuses unknown top-level fields and turns that do not alternate `user` / `model`, and
//! words every refusal in Google's envelope (`{"error":{"code","message","status"}}`, a 429
//! with `RetryInfo`). Replies are scripted with [`GeminiReply`] (text, a function call,
//! prompt, cached, candidate and thought token counts) and [`GeminiBehavior`].
//!
//! Embeddings: `:batchEmbedContents` answers one vector per request (`outputDimensionality`
//! long, 8 when unset), its values multiples of 1/256 drawn from the text, so they are exact
//! as `f32`; it checks each request names the URL's model. Its reply carries no usage unless
//! told to (`report_embedding_usage`); `:countTokens` counts a token per four bytes of each
//! text part (of `contents`, or of a `generateContentRequest`'s contents and system
//! instruction), at least one. Behaviours apply to `batchEmbedContents` as to generation, not to
//! `countTokens`.
//!
//! Gemini 3 (a model whose name starts `gemini-3`): the first function call of an answer
//! carries a `thoughtSignature` (standard base64, with `+` and `/` in it), and a request whose
//! model turn has function calls is refused, as Google refuses it, unless the first carries a
//! signature the fake issued or Google's `skip_thought_signature_validator`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::fake_upstream::{RecordedRequest, Recording, lock};

/// The one API key the fake Gemini takes.
pub const FAKE_GEMINI_API_KEY: &str = "AIzaSyFakeGeminiKeyForTollgateTests01";

/// What a successful answer says and what it reports in `usageMetadata`.
#[derive(Clone, Debug)]
pub struct GeminiReply {
    pub text: String,
    /// When set, the answer is this call (name, args) after the text, and finishes `STOP`.
    pub function_call: Option<(String, Value)>,
    /// `promptTokenCount`, cached tokens included.
    pub prompt_tokens: u64,
    /// `cachedContentTokenCount` (omitted when zero, as Google does).
    pub cached_tokens: u64,
    /// `candidatesTokenCount`. Above the request's `maxOutputTokens` the answer finishes
    /// `MAX_TOKENS` (the text itself is not shortened).
    pub candidates_tokens: u64,
    /// `thoughtsTokenCount` (omitted when zero); with `includeThoughts` asked, a thought part
    /// comes first.
    pub thoughts_tokens: u64,
}

impl Default for GeminiReply {
    fn default() -> Self {
        GeminiReply {
            text: "Hello from the fake Gemini.".to_owned(),
            function_call: None,
            prompt_tokens: 10,
            cached_tokens: 0,
            candidates_tokens: 20,
            thoughts_tokens: 0,
        }
    }
}

/// How the fake answers a request.
#[derive(Clone, Debug)]
pub enum GeminiBehavior {
    Ok(GeminiReply),
    /// Google's envelope with this status and its canonical code (`RESOURCE_EXHAUSTED` for
    /// 429, with `RetryInfo` of 17 seconds and no `retry-after` header, as Google sends it).
    Status(u16),
    /// Streams one text chunk, then an error chunk (503 `UNAVAILABLE`), and ends; a whole
    /// request gets the 503 instead.
    MidStreamError,
}

/// A fake Gemini API (see the module docs). Dropping it stops the server.
pub struct FakeGemini {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    default_behavior: Mutex<GeminiBehavior>,
    queued: Mutex<VecDeque<GeminiBehavior>>,
    recorded: Mutex<Vec<RecordedRequest>>,
    recording: Recording,
    next_id: AtomicU64,
    embedding_usage: std::sync::atomic::AtomicBool,
    signatures: Mutex<std::collections::HashSet<String>>,
}

impl FakeGemini {
    /// A fake on a loopback port of its own, recording every request (tests).
    pub async fn start() -> FakeGemini {
        FakeGemini::bind(SocketAddr::from(([127, 0, 0, 1], 0)), Recording::Enabled)
            .await
            .expect("a loopback port for the fake Gemini")
    }

    /// A fake listening on `listen_addr`; with `Recording::Disabled` it keeps no request
    /// (benchmarks, where the record would grow without bound).
    pub async fn bind(listen_addr: SocketAddr, recording: Recording) -> std::io::Result<FakeGemini> {
        let listener = tokio::net::TcpListener::bind(listen_addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            default_behavior: Mutex::new(GeminiBehavior::Ok(GeminiReply::default())),
            queued: Mutex::default(),
            recorded: Mutex::default(),
            recording,
            next_id: AtomicU64::new(1),
            embedding_usage: std::sync::atomic::AtomicBool::new(false),
            signatures: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1beta/models/{call}", post(generate))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGemini { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, the `base_url` to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The behaviour of every request once queued ones are used up.
    pub fn set_behavior(&self, behavior: GeminiBehavior) {
        *lock(&self.shared.default_behavior) = behavior;
    }

    /// A behaviour for exactly one request, before the default one.
    pub fn push_behavior(&self, behavior: GeminiBehavior) {
        lock(&self.shared.queued).push_back(behavior);
    }

    /// Whether `batchEmbedContents` replies carry `usageMetadata.promptTokenCount` (what
    /// `countTokens` would say of their texts).
    pub fn report_embedding_usage(&self, report: bool) {
        self.shared.embedding_usage.store(report, Ordering::Relaxed);
    }

    /// Every request to a model, as it arrived, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).clone()
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Google's error envelope with the canonical code of `status`.
fn google_error(status: u16, message: &str, details: Value) -> Response {
    let code = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let mut error = json!({"code": status, "message": message, "status": code});
    if details.as_array().is_some_and(|details| !details.is_empty()) {
        error["details"] = details;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn scripted_error(status: u16) -> Response {
    match status {
        429 => google_error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]),
        ),
        503 => google_error(503, "The model is overloaded. Please try again later.", json!([])),
        _ => google_error(status, "The fake Gemini refused as told.", json!([])),
    }
}

/// The fields a `GenerateContentRequest` has; Google refuses any other.
const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
];

async fn generate(
    State(shared): State<Arc<Shared>>,
    Path(call): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    if shared.recording == Recording::Enabled {
        lock(&shared.recorded).push(RecordedRequest::of(&uri, &headers, &body));
    }
    match headers
        .get("x-goog-api-key")
        .map(|key| key.to_str().unwrap_or_default())
    {
        None => {
            return google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                json!([]),
            );
        }
        Some(FAKE_GEMINI_API_KEY) => {}
        Some(_) => {
            return google_error(
                400,
                "API key not valid. Please pass a valid API key.",
                json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
            );
        }
    }
    let Some((model, method)) = call.rsplit_once(':') else {
        return google_error(404, "Method not found.", json!([]));
    };
    let Ok(Value::Object(request)) = parsed else {
        return google_error(400, "Invalid JSON payload received.", json!([]));
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "batchEmbedContents" => return batch_embed(&shared, model, &request),
        "countTokens" => return count_tokens(model, &request),
        _ => return google_error(404, "Method not found.", json!([])),
    };
    if let Some(unknown) = request.keys().find(|key| !REQUEST_FIELDS.contains(&key.as_str())) {
        return google_error(
            400,
            &format!("Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."),
            json!([]),
        );
    }
    if let Err(message) = check_contents(&request).and_then(|()| check_signatures(&shared, model, &request)) {
        return google_error(400, &message, json!([]));
    }
    let behavior = lock(&shared.queued)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default_behavior).clone());
    let reply = match behavior {
        GeminiBehavior::Ok(reply) => reply,
        GeminiBehavior::Status(status) => return scripted_error(status),
        GeminiBehavior::MidStreamError if !stream => return scripted_error(503),
        GeminiBehavior::MidStreamError => {
            let first = json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Partial "}]}, "index": 0}],
                "modelVersion": model,
                "responseId": "fake-broken",
            });
            let error = json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}});
            return sse_response(vec![first, error]);
        }
    };
    let response_id = format!("fake-gemini-{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let mut chunks = answer_chunks(&request, &reply, model, &response_id);
    if model.starts_with("gemini-3") {
        sign_first_call(&shared, &mut chunks, &response_id);
    }
    if !stream {
        return axum::Json(merge(&chunks)).into_response();
    }
    if uri
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "alt=sse"))
    {
        sse_response(chunks)
    } else {
        let array = Value::Array(chunks).to_string();
        ([(header::CONTENT_TYPE, "application/json")], array).into_response()
    }
}

/// Gemini 3's check that each model turn's first function call carries a signature it issued
/// (or the documented skip).
fn check_signatures(
    shared: &Shared,
    model: &str,
    request: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    if !model.starts_with("gemini-3") {
        return Ok(());
    }
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (index, content) in contents.iter().enumerate() {
        if content.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let parts = content
            .get("parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(first) = parts.iter().find(|part| part.get("functionCall").is_some()) else {
            continue;
        };
        let signature = first.get("thoughtSignature").and_then(Value::as_str);
        let known = signature.is_some_and(|signature| {
            signature == "skip_thought_signature_validator" || lock(&shared.signatures).contains(signature)
        });
        if !known {
            let name = first
                .pointer("/functionCall/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(format!(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                index + 1
            ));
        }
    }
    Ok(())
}

/// Gives the answer's first function call a signature, and remembers it.
fn sign_first_call(shared: &Shared, chunks: &mut [Value], response_id: &str) {
    use base64::Engine;
    let Some(part) = chunks
        .iter_mut()
        .filter_map(|chunk| chunk.pointer_mut("/candidates/0/content/parts/0"))
        .find(|part| part.get("functionCall").is_some())
    else {
        return;
    };
    let mut bytes = vec![0xfb, 0xef, 0xbe];
    bytes.extend_from_slice(response_id.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(bytes);
    lock(&shared.signatures).insert(signature.clone());
    part["thoughtSignature"] = json!(signature);
}

/// Google's checks on `contents` that a translation could trip: present, roles `user` and
/// `model` only, every turn with parts, and no two turns of one role in a row.
fn check_contents(request: &serde_json::Map<String, Value>) -> Result<(), String> {
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .filter(|contents| !contents.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let mut previous = "";
    for (index, content) in contents.iter().enumerate() {
        let role = content.get("role").and_then(Value::as_str).unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(format!(
                "Please use a valid role: user, model. (contents[{index}].role = {role})"
            ));
        }
        if content
            .get("parts")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(format!(
                "* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
            ));
        }
        if role == previous {
            return Err(format!(
                "Please ensure that multiturn requests alternate between user and model. (contents[{index}])"
            ));
        }
        previous = role;
    }
    Ok(())
}

/// The answer as stream chunks: an optional thought, the text in pieces of a few words,
/// an optional function call, and on the last chunk the finish reason and whole usage.
fn answer_chunks(
    request: &serde_json::Map<String, Value>,
    reply: &GeminiReply,
    model: &str,
    response_id: &str,
) -> Vec<Value> {
    let config = request.get("generationConfig").unwrap_or(&Value::Null);
    let include_thoughts = config.pointer("/thinkingConfig/includeThoughts") == Some(&Value::Bool(true));
    let mut parts: Vec<Value> = Vec::new();
    if include_thoughts && reply.thoughts_tokens > 0 {
        parts.push(json!({"text": "Thinking it over.", "thought": true}));
    }
    let words: Vec<&str> = reply.text.split_inclusive(' ').collect();
    for piece in words.chunks(2) {
        parts.push(json!({"text": piece.concat()}));
    }
    if let Some((name, args)) = &reply.function_call {
        parts.push(json!({"functionCall": {"name": name, "args": args}}));
    }
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    let max_output_tokens = config.get("maxOutputTokens").and_then(Value::as_u64);
    let finish_reason = if max_output_tokens.is_some_and(|max| reply.candidates_tokens > max) {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    let mut usage = json!({
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": reply.candidates_tokens,
        "totalTokenCount": reply.prompt_tokens + reply.candidates_tokens + reply.thoughts_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    });
    if reply.cached_tokens > 0 {
        usage["cachedContentTokenCount"] = json!(reply.cached_tokens);
    }
    if reply.thoughts_tokens > 0 {
        usage["thoughtsTokenCount"] = json!(reply.thoughts_tokens);
    }
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            let mut candidate = json!({"content": {"role": "model", "parts": [part]}, "index": 0});
            let chunk_usage = if index == last {
                candidate["finishReason"] = json!(finish_reason);
                usage.clone()
            } else {
                json!({"promptTokenCount": reply.prompt_tokens, "totalTokenCount": reply.prompt_tokens})
            };
            json!({
                "candidates": [candidate],
                "usageMetadata": chunk_usage,
                "modelVersion": model,
                "responseId": response_id,
            })
        })
        .collect()
}

/// The chunks as one `generateContent` reply: every part in one candidate, and the last
/// chunk's finish reason and usage.
fn merge(chunks: &[Value]) -> Value {
    let parts: Vec<Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/candidates/0/content/parts")?.as_array())
        .flatten()
        .cloned()
        .collect();
    let mut reply = chunks.last().cloned().unwrap_or_default();
    reply["candidates"][0]["content"]["parts"] = Value::Array(parts);
    reply
}

fn sse_response(chunks: Vec<Value>) -> Response {
    let frames = chunks
        .into_iter()
        .map(|chunk| Ok::<_, std::io::Error>(Bytes::from(format!("data: {chunk}\r\n\r\n"))));
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(futures_util::stream::iter(frames)),
    )
        .into_response()
}

/// The fields of a `BatchEmbedContentsRequest` and of each `EmbedContentRequest` in it.
const BATCH_EMBED_FIELDS: &[&str] = &["requests"];
const EMBED_FIELDS: &[&str] = &["model", "content", "taskType", "title", "outputDimensionality"];

fn batch_embed(shared: &Shared, model: &str, request: &serde_json::Map<String, Value>) -> Response {
    if let Some(unknown) = request
        .keys()
        .find(|key| !BATCH_EMBED_FIELDS.contains(&key.as_str()))
    {
        return google_error(
            400,
            &format!("Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."),
            json!([]),
        );
    }
    let Some(requests) = request
        .get("requests")
        .and_then(Value::as_array)
        .filter(|requests| !requests.is_empty())
    else {
        return google_error(
            400,
            "* BatchEmbedContentsRequest.requests: requests is not specified",
            json!([]),
        );
    };
    let mut texts: Vec<String> = Vec::with_capacity(requests.len());
    let mut dimensions = 8;
    for (index, embed) in requests.iter().enumerate() {
        let Some(embed) = embed.as_object() else {
            return google_error(400, "Invalid JSON payload received.", json!([]));
        };
        if let Some(unknown) = embed.keys().find(|key| !EMBED_FIELDS.contains(&key.as_str())) {
            return google_error(
                400,
                &format!(
                    "Invalid JSON payload received. Unknown name \"{unknown}\" at 'requests[{index}]': Cannot find field."
                ),
                json!([]),
            );
        }
        if embed.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
            return google_error(
                400,
                &format!(
                    "* BatchEmbedContentsRequest.requests[{index}].model: the model must be the one in the URL, models/{model}"
                ),
                json!([]),
            );
        }
        let Some(text) = embed
            .get("content")
            .and_then(|content| content.get("parts"))
            .and_then(Value::as_array)
            .filter(|parts| !parts.is_empty())
            .and_then(|parts| {
                parts
                    .iter()
                    .map(|part| part.get("text")?.as_str())
                    .collect::<Option<String>>()
            })
        else {
            return google_error(
                400,
                &format!(
                    "* BatchEmbedContentsRequest.requests[{index}].content.parts: text parts are required"
                ),
                json!([]),
            );
        };
        if let Some(asked) = embed.get("outputDimensionality").and_then(Value::as_u64) {
            dimensions = asked;
        }
        texts.push(text);
    }
    let behavior = lock(&shared.queued)
        .pop_front()
        .unwrap_or_else(|| lock(&shared.default_behavior).clone());
    match behavior {
        GeminiBehavior::Ok(_) => {}
        GeminiBehavior::Status(status) => return scripted_error(status),
        GeminiBehavior::MidStreamError => return scripted_error(503),
    }
    let embeddings: Vec<Value> = texts
        .iter()
        .map(|text| json!({"values": vector(text, dimensions)}))
        .collect();
    let mut reply = json!({ "embeddings": embeddings });
    if shared.embedding_usage.load(Ordering::Relaxed) {
        let tokens: u64 = texts.iter().map(|text| gemini_tokens_of(text)).sum();
        reply["usageMetadata"] = json!({"promptTokenCount": tokens, "totalTokenCount": tokens});
    }
    axum::Json(reply).into_response()
}

/// `countTokens` over `contents`, or over a whole `generateContentRequest` (its
/// `systemInstruction` counted too), whose `model` must be the URL's.
fn count_tokens(model: &str, request: &serde_json::Map<String, Value>) -> Response {
    let (contents, system) = match request.get("generateContentRequest") {
        Some(inner) => {
            if inner.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
                return google_error(
                    400,
                    &format!(
                        "* CountTokensRequest.generate_content_request.model: the model must be the one in the URL, models/{model}"
                    ),
                    json!([]),
                );
            }
            (inner.get("contents"), inner.get("systemInstruction"))
        }
        None => (request.get("contents"), None),
    };
    let Some(contents) = contents.and_then(Value::as_array) else {
        return google_error(
            400,
            "* CountTokensRequest.contents: contents is not specified",
            json!([]),
        );
    };
    let tokens: u64 = contents
        .iter()
        .chain(system)
        .filter_map(|content| content.get("parts")?.as_array())
        .flatten()
        .filter_map(|part| part.get("text")?.as_str())
        .map(gemini_tokens_of)
        .sum();
    axum::Json(json!({
        "totalTokens": tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
    }))
    .into_response()
}

/// The fake's token count of a text: one per four bytes, at least one.
pub fn gemini_tokens_of(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

/// `dimensions` values in [-0.5, 0.5), multiples of 1/256 drawn from the text's FNV-1a hash.
fn vector(text: &str, dimensions: u64) -> Vec<Value> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..dimensions)
        .map(|index| {
            hash = hash.rotate_left(7) ^ index;
            let step = i64::try_from(hash & 0xff).unwrap_or_default() - 128;
            json!(step as f64 / 256.0)
        })
        .collect()
}
