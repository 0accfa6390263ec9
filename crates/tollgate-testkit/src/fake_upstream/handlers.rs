//! Routes of the fake: records each request, takes its behaviour, checks the few request
//! fields it needs, and answers with shapes from `wire` — Anthropic's on `/v1/messages`
//! (and its Files API's upload, `files.rs`),
//! OpenAI's on `/v1/chat/completions` and `/v1/embeddings`. Owns the stream counters' meaning:
//! a stream counts as completed once its last event is handed to the connection, and as
//! disconnected when the connection drops the body before that.
//!
//! It validates only what it must read (`model`, `max_tokens`, `stream`); everything else in
//! the body is accepted, like the real API's pass-through of unknown fields.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tollgate_upstream::embeddings::EmbeddingsRequest;
use tollgate_upstream::simulated::embeddings::embeddings_body;

use crate::fake_upstream::batches;
use crate::fake_upstream::files;
use crate::fake_upstream::serve::ConnectionHangup;
use crate::fake_upstream::wire::{self, MessageReply, ServerToolUse, Usage};
use crate::fake_upstream::{Behavior, RecordedRequest, Recording, Reply, Shared, lock};

/// Above the contract's 32 MB Messages limit: rejecting large bodies is the gateway's job,
/// and a fake that rejected them first would hide that.
const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The reply behind behaviours that don't carry one.
static DEFAULT_REPLY: LazyLock<Reply> = LazyLock::new(Reply::default);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/messages/batches", post(batches::create))
        .route("/v1/messages/batches/{id}", get(batches::retrieve))
        .route("/v1/messages/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/messages/batches/{id}/results", get(batches::results))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/files", post(files::upload))
        .route("/v1/files/{id}", axum::routing::delete(files::delete))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(shared)
}

/// A behaviour sorted by how far the request gets: not answered, answered with an error
/// status before the body is looked at, or answered with a reply in some shape.
enum Sorted<'a> {
    Hangup,
    Status(u16),
    Refuse(u16, &'a str, &'a str),
    Answer(&'a Reply, Shape),
}

/// How a request that gets a reply is answered.
enum Shape {
    Normal,
    MidStreamError { deltas: usize },
    Stall { deltas: usize, duration: Duration },
}

fn sort_behavior(behavior: &Behavior) -> Sorted<'_> {
    match behavior {
        Behavior::Hangup => Sorted::Hangup,
        Behavior::Status(status) => Sorted::Status(*status),
        Behavior::Refuse {
            status,
            error_type,
            message,
        } => Sorted::Refuse(*status, error_type, message),
        Behavior::Ok(reply) => Sorted::Answer(reply, Shape::Normal),
        Behavior::MidStreamError { deltas } => {
            Sorted::Answer(&DEFAULT_REPLY, Shape::MidStreamError { deltas: *deltas })
        }
        Behavior::Stall { deltas, duration } => Sorted::Answer(
            &DEFAULT_REPLY,
            Shape::Stall {
                deltas: *deltas,
                duration: *duration,
            },
        ),
    }
}

/// Which API's envelope a refusal takes.
#[derive(Clone, Copy)]
enum Envelope {
    Anthropic,
    OpenAi,
}

/// The reply and shape a behaviour answers with, or the response that ends the request
/// before its body is looked at: an error status or a refusal in `envelope`'s shape, or a
/// hang-up (which never returns).
async fn answer<'a>(
    behavior: &'a Behavior,
    hangup: &ConnectionHangup,
    request_id: &str,
    envelope: Envelope,
) -> Result<(&'a Reply, Shape), Response> {
    match (sort_behavior(behavior), envelope) {
        (Sorted::Hangup, _) => Err(hang_up(hangup).await),
        (Sorted::Status(status), Envelope::Anthropic) => Err(error_response(status, request_id)),
        (Sorted::Status(status), Envelope::OpenAi) => Err(openai_error_response(status, request_id)),
        (Sorted::Refuse(status, kind, message), Envelope::Anthropic) => {
            Err(refusal(status, kind, message, request_id))
        }
        (Sorted::Refuse(status, kind, message), Envelope::OpenAi) => {
            Err(openai_refusal(status, kind, message, request_id))
        }
        (Sorted::Answer(reply, shape), _) => Ok((reply, shape)),
    }
}

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: u64,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct CountTokensRequest {
    #[expect(
        dead_code,
        reason = "parsed only so a missing model is rejected, as the real API does"
    )]
    model: String,
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Extension(hangup): Extension<ConnectionHangup>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &uri, &headers, &body);
    let behavior = shared.next_behavior();
    let id = shared.next_id();
    let request_id = format!("req_fake{id:016x}");
    let (reply, shape) = match answer(&behavior, &hangup, &request_id, Envelope::Anthropic).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let request: MessagesRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(message) => return invalid_request(&message, &request_id),
    };
    if request.max_tokens == 0 {
        return invalid_request(
            "max_tokens: Input should be greater than or equal to 1",
            &request_id,
        );
    }

    let message_id = format!("msg_fake{id:016x}");
    let message = message_reply(reply, &request.model, request.max_tokens, &message_id);
    let stream = request.stream.unwrap_or(false);
    pause(reply.latency).await;
    match (shape, stream) {
        (Shape::Normal, false) => json_response(
            StatusCode::OK,
            Body::from(wire::message_json(&message)),
            &request_id,
        ),
        (Shape::Normal, true) => sse_response(
            StreamPlan {
                events: wire::stream_events(&message),
                event_delay: reply.event_delay,
                stall: None,
            },
            shared,
            &request_id,
        ),
        // A non-streaming request has no stream to break, so the closest failure is the
        // status the mid-stream error would have carried.
        (Shape::MidStreamError { .. }, false) => error_response(529, &request_id),
        (Shape::MidStreamError { deltas }, true) => sse_response(
            StreamPlan {
                events: wire::failing_stream_events(&message, deltas),
                event_delay: reply.event_delay,
                stall: None,
            },
            shared,
            &request_id,
        ),
        (Shape::Stall { duration, .. }, false) => json_response(
            StatusCode::OK,
            stalled_body(wire::message_json(&message), duration),
            &request_id,
        ),
        (Shape::Stall { deltas, duration }, true) => sse_response(
            StreamPlan {
                stall: Some((wire::stall_event_index(&message, deltas), duration)),
                events: wire::stream_events(&message),
                event_delay: reply.event_delay,
            },
            shared,
            &request_id,
        ),
    }
}

/// The answer `reply` makes to a Messages request for `model` with `max_tokens`, as
/// `/v1/messages` and the results of a provider batch give it.
pub(crate) fn message_reply<'a>(
    reply: &'a Reply,
    model: &'a str,
    max_tokens: u64,
    message_id: &'a str,
) -> MessageReply<'a> {
    MessageReply {
        message_id,
        model: reply.served_model.as_deref().unwrap_or(model),
        text: &reply.text,
        usage: Usage {
            input_tokens: reply.input_tokens,
            cache_creation_input_tokens: reply.cache_creation_input_tokens,
            cache_read_input_tokens: reply.cache_read_input_tokens,
            output_tokens: reply.output_tokens.min(max_tokens),
            server_tool_use: (reply.web_search_requests > 0).then_some(ServerToolUse {
                web_search_requests: reply.web_search_requests,
            }),
            speed: reply.speed,
            inference_geo: reply.inference_geo,
        },
        stop_reason: if reply.output_tokens > max_tokens {
            "max_tokens"
        } else {
            "end_turn"
        },
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// OpenAI's Chat Completions, with the same behaviours as `/v1/messages`: a status gets
/// OpenAI's envelope, a mid-stream error an error chunk.
async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    Extension(hangup): Extension<ConnectionHangup>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &uri, &headers, &body);
    let behavior = shared.next_behavior();
    let id = shared.next_id();
    let request_id = format!("req_fake{id:016x}");
    let (reply, shape) = match answer(&behavior, &hangup, &request_id, Envelope::OpenAi).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let request: ChatRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(message) => {
            let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
            return json_response(StatusCode::BAD_REQUEST, Body::from(body.to_string()), &request_id);
        }
    };
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(u64::MAX);
    let message_id = format!("msg_fake{id:016x}");
    let message = MessageReply {
        message_id: &message_id,
        model: &request.model,
        text: &reply.text,
        usage: Usage {
            input_tokens: reply.input_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: reply.cache_read_input_tokens,
            output_tokens: reply.output_tokens.min(max_tokens),
            server_tool_use: None,
            speed: None,
            inference_geo: None,
        },
        stop_reason: if reply.output_tokens > max_tokens {
            "max_tokens"
        } else {
            "end_turn"
        },
    };
    let include_usage = request
        .stream_options
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    pause(reply.latency).await;
    match (shape, request.stream.unwrap_or(false)) {
        (Shape::Normal, false) => json_response(
            StatusCode::OK,
            Body::from(wire::chat_completion_json(&message)),
            &request_id,
        ),
        (Shape::Normal, true) => sse_response(
            StreamPlan {
                events: wire::chat_stream_events(&message, include_usage),
                event_delay: reply.event_delay,
                stall: None,
            },
            shared,
            &request_id,
        ),
        (Shape::MidStreamError { .. }, false) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Body::from(wire::openai_error_json(503)),
            &request_id,
        ),
        (Shape::MidStreamError { deltas }, true) => sse_response(
            StreamPlan {
                events: wire::failing_chat_stream_events(&message, deltas),
                event_delay: reply.event_delay,
                stall: None,
            },
            shared,
            &request_id,
        ),
        (Shape::Stall { duration, .. }, false) => json_response(
            StatusCode::OK,
            stalled_body(wire::chat_completion_json(&message), duration),
            &request_id,
        ),
        (Shape::Stall { deltas, duration }, true) => sse_response(
            StreamPlan {
                stall: Some((1 + deltas, duration)),
                events: wire::chat_stream_events(&message, include_usage),
                event_delay: reply.event_delay,
            },
            shared,
            &request_id,
        ),
    }
}

/// OpenAI's Embeddings, with the same behaviours: a vector per input in floats or base64
/// (`tollgate_upstream::simulated::embeddings` writes the shape), `usage.prompt_tokens` the
/// reply's `input_tokens`; a mid-stream error is a 503, as for a whole chat completion.
async fn embeddings(
    State(shared): State<Arc<Shared>>,
    Extension(hangup): Extension<ConnectionHangup>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &uri, &headers, &body);
    let behavior = shared.next_behavior();
    let request_id = format!("req_fake{:016x}", shared.next_id());
    let (reply, shape) = match answer(&behavior, &hangup, &request_id, Envelope::OpenAi).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let request = match EmbeddingsRequest::parse(&body) {
        Ok(request) => request,
        Err(message) => return openai_refusal(400, "invalid_request_error", &message, &request_id),
    };
    let model = reply.served_model.as_deref().unwrap_or(&request.model);
    let answer = Bytes::from(embeddings_body(&request, model, reply.input_tokens).to_string());
    pause(reply.latency).await;
    match shape {
        Shape::Normal => json_response(StatusCode::OK, Body::from(answer), &request_id),
        Shape::MidStreamError { .. } => openai_error_response(503, &request_id),
        Shape::Stall { duration, .. } => {
            json_response(StatusCode::OK, stalled_body(answer, duration), &request_id)
        }
    }
}

/// An error status in OpenAI's envelope. A 429 carries what OpenAI sends with it:
/// `retry-after` and the `x-ratelimit-*` headers of the limit that was hit.
fn openai_error_response(status: u16, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = wire::openai_error_json(status.as_u16());
    status_response(
        status,
        body,
        request_id,
        [
            ("x-ratelimit-limit-requests", "3000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("openai-organization", "upstream-org-not-for-clients"),
        ],
    )
}

/// A refusal in OpenAI's envelope with this type and wording.
fn openai_refusal(status: u16, kind: &str, message: &str, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    json_response(status, Body::from(body.to_string()), request_id)
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    Extension(hangup): Extension<ConnectionHangup>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &uri, &headers, &body);
    let behavior = shared.next_behavior();
    let request_id = format!("req_fake{:016x}", shared.next_id());
    let (reply, shape) = match answer(&behavior, &hangup, &request_id, Envelope::Anthropic).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    if let Err(message) = parse_body::<CountTokensRequest>(&body) {
        return invalid_request(&message, &request_id);
    }
    pause(reply.latency).await;
    let count = wire::count_tokens_json(reply.input_tokens);
    match shape {
        Shape::Normal => json_response(StatusCode::OK, Body::from(count), &request_id),
        Shape::MidStreamError { .. } => error_response(529, &request_id),
        Shape::Stall { duration, .. } => {
            json_response(StatusCode::OK, stalled_body(count, duration), &request_id)
        }
    }
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    let request_id = format!("req_fake{:016x}", shared.next_id());
    error_response(404, &request_id)
}

/// Keeps a copy of the request (unless recording is off), then counts it, so a test that saw
/// the count go up also finds the request in the log.
pub(crate) fn record(shared: &Shared, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
    if shared.recording == Recording::Enabled {
        let request = RecordedRequest::of(uri, headers, body);
        lock(&shared.recorded).push(request);
    }
    shared.request_count.fetch_add(1, Ordering::SeqCst);
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("Invalid request body: {error}"))
}

/// Asks the connection task to drop the connection, then waits to be dropped with it.
async fn hang_up(hangup: &ConnectionHangup) -> Response {
    hangup.fire();
    std::future::pending().await
}

/// Sleeps unless `duration` is zero, so the benchmark path registers no timers.
async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// A body that arrives only after `duration`; hyper sends the headers first.
fn stalled_body(body: Bytes, duration: Duration) -> Body {
    Body::from_stream(futures_util::stream::once(async move {
        tokio::time::sleep(duration).await;
        Ok::<Bytes, Infallible>(body)
    }))
}

/// Encoded SSE events and how to pace them.
struct StreamPlan {
    events: Vec<Bytes>,
    event_delay: Duration,
    /// Go silent for the duration just before sending the event at this index.
    stall: Option<(usize, Duration)>,
}

struct StreamState {
    events: std::iter::Enumerate<std::vec::IntoIter<Bytes>>,
    event_delay: Duration,
    stall: Option<(usize, Duration)>,
    guard: StreamGuard,
}

fn sse_response(plan: StreamPlan, shared: Arc<Shared>, request_id: &str) -> Response {
    let state = StreamState {
        events: plan.events.into_iter().enumerate(),
        event_delay: plan.event_delay,
        stall: plan.stall,
        guard: StreamGuard {
            shared,
            completed: false,
        },
    };
    // A stream (rather than a spawned task feeding a channel) keeps one allocation per
    // response, and hyper dropping it is exactly the signal that the client went away.
    let events = futures_util::stream::unfold(state, |mut state| async move {
        let (index, event) = state.events.next()?;
        if index > 0 {
            pause(state.event_delay).await;
        }
        if let Some((stall_index, duration)) = state.stall
            && stall_index == index
        {
            pause(duration).await;
        }
        if state.events.len() == 0 {
            state.guard.complete();
        }
        Some((Ok::<Bytes, Infallible>(event), state))
    });
    let mut response = response(
        StatusCode::OK,
        "text/event-stream",
        request_id,
        Body::from_stream(events),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Counts a stream exactly once: completed when its last event is handed over, disconnected
/// when it is dropped before that.
struct StreamGuard {
    shared: Arc<Shared>,
    completed: bool,
}

impl StreamGuard {
    fn complete(&mut self) {
        if !self.completed {
            self.completed = true;
            self.shared.streams_completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.shared.streams_disconnected.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub(crate) fn invalid_request(message: &str, request_id: &str) -> Response {
    let body = wire::error_envelope_with_message_json("invalid_request_error", message, request_id);
    json_response(StatusCode::BAD_REQUEST, Body::from(body), request_id)
}

/// An error status in Anthropic's envelope. A 429 carries what the real API sends with it:
/// `retry-after` and the `anthropic-ratelimit-*` headers of the limit that was hit.
pub(crate) fn error_response(status: u16, request_id: &str) -> Response {
    // An out-of-range status is a typo in the test; answer 500 rather than panic the server.
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = wire::error_envelope_json(status.as_u16(), request_id);
    status_response(
        status,
        body,
        request_id,
        [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:02Z"),
            ("anthropic-organization-id", "upstream-org-not-for-clients"),
        ],
    )
}

/// An error status with its envelope; a 429 adds `retry-after` and the API's own headers
/// of the limit that was hit (and one a client must never see from the gateway).
fn status_response(
    status: StatusCode,
    body: Bytes,
    request_id: &str,
    limit_headers: [(&'static str, &'static str); 4],
) -> Response {
    let mut response = json_response(status, Body::from(body), request_id);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let headers = response.headers_mut();
        for (name, value) in std::iter::once(("retry-after", "2")).chain(limit_headers) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn refusal(status: u16, kind: &str, message: &str, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = wire::error_envelope_with_message_json(kind, message, request_id);
    json_response(status, Body::from(body), request_id)
}

pub(crate) fn json_response(status: StatusCode, body: Body, request_id: &str) -> Response {
    response(status, "application/json", request_id, body)
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    request_id: &str,
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    response
}
