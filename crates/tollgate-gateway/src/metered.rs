//! The metered upstream call every surface shares (embeddings included): it owns the
//! request's one reservation from `Tollgate::begin` to `Tollgate::finish`, tries the
//! deployments in routing order, relays the answer in the client's dialect, and settles
//! once, at the prices of the deployment that answered.
//!
//! Failover: a deployment that cannot be reached, answers 5xx or 529, or opens its stream
//! with an `overloaded`/`api_error` event before any content is put in cooldown and the next
//! one is tried — only while nothing has reached the client, which learns of the stream
//! only once a deployment has produced its first content (the stream's head is held until
//! then). Other failures (4xx, timeouts, protocol errors)
//! go to the client as they are: another deployment would refuse the same request, or the
//! first may still be generating (and billing) the answer. So does the last deployment's
//! stream that opens with an error: the client gets a 200 and the upstream's `error` event,
//! as it would calling the upstream directly, and the reservation is voided. Every call is
//! kept on the request's usage record (`UpstreamAttempt`: the deployment, and how it
//! failed), which the request log shows; a cooldown that takes a deployment down alerts the
//! request's organization (`deployment_down`), and its next success re-arms that alert.
//!
//! The first upstream call starts as soon as the writer's book has decided the reservation,
//! while its batch commits (`Store::reserve_decided`); the task awaits that commit beside the
//! call, and nothing reaches the client before it: a reservation that was not written ends
//! the request with the store's refusal or error, the upstream's answer unread.
//!
//! The call and its settlement run in a task of their own, so a client that goes away never
//! cancels them. Disconnect policy: when a streaming client disconnects, the task keeps
//! reading the upstream stream (without forwarding it) until the upstream finishes or the
//! drain bound passes, then charges the usage the upstream reported — or, when the bound
//! cut the stream before its final count, the larger of the reported usage and what passed
//! through (`Meter::usage`), within the request's output limit. Never zero once content was
//! delivered (the input was processed). A non-streaming client that disconnects is charged
//! the upstream's usage too.
//!
//! Body capture (`tollgate_service::capture`), when the caller's workspace has it on: the
//! request body as received, and the reply as delivered — the JSON reply or error envelope,
//! or the stream's SSE text event by event as sent, redacted per event. It is written by
//! the call's task once the client has everything (a stream's channel is closed first), so
//! it never delays or alters the response; with capture off nothing is held or copied.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_core::catalog::{Cooldowns, Deployment, Model, UpstreamAttempt};
use tollgate_core::pricing::ModelPrices;
use tollgate_core::pricing::input_tokens_estimate;
use tollgate_core::usage::{StreamMeasure, TokenUsage, stream_usage};
use tollgate_edge::UpstreamTime;
use tollgate_service::CapturedResponseKind;
use tollgate_service::capture::{CapturePolicy, CapturedBody, StreamCapture};
use tollgate_service::{
    ApiCaller, Finish, OpenReservation, RateLimitView, RequestPlan, Tollgate, UsageStatus,
};
use tollgate_upstream::openai::{ChatUsageAccumulator, is_done};
use tollgate_upstream::sse::{SseEvent, UsageAccumulator};
use tollgate_upstream::{Dialect, EventStream, Provider, UpstreamError, UpstreamReply, UpstreamRequest};

use crate::GatewayState;
use crate::error::ApiError;
use crate::responses::ResponsesCall;
use crate::telemetry::{self, Observed};
use crate::translate::reply::{chat_completion_to_message, message_to_chat_completion};
use crate::translate::responses::{self, ResponseFrame, ToResponseEvents, chat_completion_to_response};
use crate::translate::stream::{ToChatChunks, ToMessageEvents, done_event};
use tracing::Instrument;

/// Events buffered between the upstream task and a slow client.
const STREAM_BUFFER_EVENTS: usize = 64;

/// What a request asks of its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// A model's answer: Messages, Chat Completions, Responses.
    Generate,
    /// Embeddings (`POST /v1/embeddings`): a whole reply, never a stream.
    Embed,
}

/// One way to serve the request: a deployment, its provider, and the body in its dialect.
pub(crate) struct Attempt {
    pub(crate) operation: Operation,
    pub(crate) deployment: Deployment,
    pub(crate) provider: Provider,
    pub(crate) request: UpstreamRequest,
    /// The deployment's prices with the request's images folded in.
    pub(crate) prices: ModelPrices,
}

/// The API the client speaks, which decides the shape of what it gets back.
#[derive(Clone, Debug)]
pub(crate) enum ClientWire {
    Messages,
    ChatCompletions {
        include_usage: bool,
    },
    /// OpenAI's Responses API, carried over Chat Completions (`translate::responses`).
    Responses(Arc<ResponsesCall>),
    /// OpenAI's Embeddings: the upstream's reply goes back as it came.
    Embeddings,
}

impl ClientWire {
    /// The dialect a reply is brought to before it takes the client's shape.
    fn dialect(&self) -> Dialect {
        match self {
            ClientWire::Messages => Dialect::Anthropic,
            ClientWire::ChatCompletions { .. } | ClientWire::Responses(_) | ClientWire::Embeddings => {
                Dialect::OpenAi
            }
        }
    }

    /// The route a request of this API came by, as metrics label it.
    fn route(&self) -> &'static str {
        match self {
            ClientWire::Messages => "/v1/messages",
            ClientWire::ChatCompletions { .. } => "/v1/chat/completions",
            ClientWire::Responses(_) => "/v1/responses",
            ClientWire::Embeddings => "/v1/embeddings",
        }
    }

    /// The event that ends a successful stream: held back until the request is settled, so
    /// a client that has seen the end of the stream sees its balance charged.
    fn is_terminal(&self, event: &SseEvent) -> bool {
        match self {
            ClientWire::Messages => event.event == "message_stop",
            ClientWire::ChatCompletions { .. } | ClientWire::Embeddings => is_done(event),
            ClientWire::Responses(_) => responses::is_terminal(event),
        }
    }

    fn encode(&self, event: &SseEvent) -> Bytes {
        match self {
            ClientWire::Messages | ClientWire::Responses(_) => event.to_bytes(),
            // OpenAI's streams carry data lines only.
            ClientWire::ChatCompletions { .. } | ClientWire::Embeddings => {
                let mut text = String::with_capacity(event.data.len() + 8);
                for line in event.data.split('\n') {
                    text.push_str("data: ");
                    text.push_str(line);
                    text.push('\n');
                }
                text.push('\n');
                Bytes::from(text)
            }
        }
    }
}

/// An admitted request: owns its reservation until it is settled.
pub(crate) struct MeteredCall {
    pub(crate) tollgate: Tollgate,
    pub(crate) open: OpenReservation,
    /// Deployments in the order to try them; never empty.
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) cooldowns: Arc<Mutex<Cooldowns>>,
    pub(crate) drain_bound: Duration,
    pub(crate) client: ClientWire,
    /// The model the client asked for, shown in translated replies.
    pub(crate) requested_model: String,
    /// Input tokens estimated from the body, charged if a stream never reports usage.
    pub(crate) input_tokens_estimate: u64,
    /// The most output the reservation covers: caps output counted from a stream's deltas.
    pub(crate) output_tokens_max: u64,
    pub(crate) observed: Observed,
    /// Prices a reply some other catalogue model served (a server-side fallback).
    pub(crate) catalog: Arc<tollgate_core::catalog::Catalog>,
    /// Set only when the caller's workspace captures bodies.
    pub(crate) capture: Option<CaptureJob>,
}

/// A request whose bodies are being captured.
pub(crate) struct CaptureJob {
    policy: Arc<CapturePolicy>,
    caller: ApiCaller,
    request_id: String,
    /// The body as received (a reference to the same bytes, not a copy).
    request_body: Bytes,
}

impl CaptureJob {
    /// Writes the capture with the response as delivered; a failure is only logged.
    async fn keep(self, tollgate: &Tollgate, kind: CapturedResponseKind, response: CapturedBody) {
        let request = self.policy.json_body(&self.request_body);
        tollgate
            .keep_capture(
                &self.policy,
                &self.caller,
                &self.request_id,
                request,
                kind,
                response,
            )
            .await;
    }

    /// A non-streaming reply as delivered: the JSON body, or the error envelope.
    async fn keep_reply(self, tollgate: &Tollgate, client: &ClientWire, reply: Result<Bytes, ApiError>) {
        let body = match reply {
            Ok(body) => body,
            Err(error) => Bytes::from(error_json(&error, client, &self.request_id).to_string()),
        };
        let response = self.policy.json_body(&body);
        self.keep(tollgate, CapturedResponseKind::Json, response).await;
    }
}

/// The error envelope a client of `client`'s API gets.
fn error_json(error: &ApiError, client: &ClientWire, request_id: &str) -> Value {
    match client {
        ClientWire::Messages => error.to_json(request_id),
        ClientWire::ChatCompletions { .. } | ClientWire::Responses(_) | ClientWire::Embeddings => {
            error.to_openai_json()
        }
    }
}

/// A stream's capture as it is delivered.
struct StreamCaptureJob {
    job: CaptureJob,
    stream: StreamCapture,
}

impl StreamCaptureJob {
    /// Records an event just sent to the client as `sent`; its data redacted when paths
    /// are configured (OpenAI's `[DONE]` is no JSON and says nothing, so it stays).
    fn delivered(&mut self, client: &ClientWire, event: &SseEvent, sent: &Bytes) {
        if self.stream.is_full() {
            self.stream.count(sent.len());
            return;
        }
        if !self.job.policy.redacts() || is_done(event) {
            self.stream.push(&String::from_utf8_lossy(sent), sent.len());
            return;
        }
        let redacted = SseEvent {
            event: event.event.clone(),
            data: self.job.policy.redact_text(&event.data).into_owned(),
        };
        self.stream
            .push(&String::from_utf8_lossy(&client.encode(&redacted)), sent.len());
    }
}

/// A routed request, ready to be admitted and run: the same for every client surface.
pub(crate) struct Admission<'a> {
    pub(crate) caller: &'a ApiCaller,
    pub(crate) request_id: &'a str,
    pub(crate) model: &'a Model,
    /// Deployments in the order to try them; never empty.
    pub(crate) attempts: Vec<Attempt>,
    /// Length of the client's body: the input estimate for rate limits.
    pub(crate) body_bytes: usize,
    /// Upper bounds for the reservation.
    pub(crate) input_tokens_bound: u64,
    pub(crate) output_tokens_bound: u64,
    pub(crate) images: u64,
    /// When the request counts as admitted for its prices (`RequestPlan::priced_at`).
    pub(crate) priced_at: tollgate_core::Timestamp,
    /// What the request asked for that bills a multiple (fast mode, data residency).
    pub(crate) multipliers: tollgate_core::pricing::Multipliers,
    /// Web searches the request allows, reserved for.
    pub(crate) web_searches_max: u64,
    pub(crate) stream: bool,
    pub(crate) client: ClientWire,
    pub(crate) requested_model: String,
    pub(crate) attribution: tollgate_core::attribution::Attribution,
    /// Where the prompt may be read from the upstream's cache (`cache_prefix`).
    pub(crate) cacheable_prefixes: tollgate_core::ratelimit::prompt_cache::CacheablePrefixes,
    /// The client's body as received: kept (by reference) only if its workspace captures.
    pub(crate) body: &'a Bytes,
}

/// Admits the request (rate limits in every scope, then the reservation of its cost bound)
/// and runs it on its deployments. Returns the response and the rate-limit figures, which
/// each surface renders as its own headers.
pub(crate) async fn admit_and_run(
    state: &GatewayState,
    mut admission: Admission<'_>,
) -> Result<(Response, RateLimitView), ApiError> {
    let observed = admission.observed();
    let cacheable_prefixes = std::mem::take(&mut admission.cacheable_prefixes);
    let open = state
        .tollgate
        .begin_cached(admission.caller, admission.plan(), cacheable_prefixes)
        .instrument(telemetry::when_sampled(
            || tracing::debug_span!(parent: &observed.span, "admission"),
        ))
        .await
        .map_err(|error| observed.refused(error))?;
    run_admitted(state, admission, open, observed).await
}

impl Admission<'_> {
    /// What the service is told of the request to admit and reserve it, priced at the
    /// rates in force at its `priced_at`.
    pub(crate) fn plan(&self) -> RequestPlan<'_> {
        let now = self.priced_at;
        RequestPlan {
            request_id: self.request_id,
            model: self.model,
            cost_bound: self
                .model
                .cost_bound(
                    self.input_tokens_bound,
                    self.output_tokens_bound,
                    self.images,
                    now,
                    self.multipliers,
                )
                .saturating_add(self.model.web_search_bound(self.web_searches_max, now)),
            input_tokens_estimate: input_tokens_estimate(self.body_bytes),
            max_tokens: self.output_tokens_bound,
            attribution: &self.attribution,
            multipliers: self.multipliers,
            priced_at: self.priced_at,
            // A whole reply is sent only once its settlement is written (`call`).
            settled_before_reply: !self.stream,
        }
    }

    /// The request as its metrics and its span label it, from now on.
    pub(crate) fn observed(&self) -> Observed {
        Observed {
            route: self.client.route(),
            model: self.model.id.clone(),
            arrived: tokio::time::Instant::now(),
            span: telemetry::request_span(self.caller, &self.model.id, self.output_tokens_bound),
        }
    }
}

/// Runs an admitted request, holding `open`, on its deployments.
pub(crate) async fn run_admitted(
    state: &GatewayState,
    admission: Admission<'_>,
    open: OpenReservation,
    observed: Observed,
) -> Result<(Response, RateLimitView), ApiError> {
    observed
        .span
        .record("tollgate.reservation_id", open.reservation_id.as_str());
    let rate_limits = open.rate_limits;
    let capture = state
        .tollgate
        .capture_policy(&admission.caller.workspace_id)
        .await
        .map(|policy| CaptureJob {
            policy,
            caller: admission.caller.clone(),
            request_id: open.request_id.clone(),
            request_body: admission.body.clone(),
        });
    let metered = MeteredCall {
        tollgate: state.tollgate.clone(),
        open,
        attempts: admission.attempts,
        cooldowns: state.cooldowns.clone(),
        drain_bound: state.settings.disconnect_drain,
        client: admission.client,
        requested_model: admission.requested_model,
        input_tokens_estimate: input_tokens_estimate(admission.body_bytes),
        output_tokens_max: admission.output_tokens_bound,
        observed,
        catalog: state.catalog.clone(),
        capture,
    };
    let response = if admission.stream {
        metered.stream().await?
    } else {
        metered.call().await?
    };
    Ok((response, rate_limits))
}

/// The `model` a whole reply names: the model that served it.
fn served_model(body: &Bytes) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Served {
        model: Option<String>,
    }
    serde_json::from_slice::<Served>(body).ok()?.model
}

fn failed(error: &UpstreamError) -> Finish {
    Finish {
        usage: TokenUsage::default(),
        status: UsageStatus::Failed,
        error_type: Some(ApiError::from_upstream_kind(error).to_owned()),
    }
}

/// Settles the request; whether the settlement was written. One the store refused (after
/// the service's retries) is kept pending and written later, but the client must not be
/// told the request ended well before its charge is in the ledger: the caller then ends it
/// with an `api_error`. The settlement's future is boxed: it is larger than all the rest of
/// a stream's task together (4.5 KiB against a few hundred bytes), and inline it would be
/// held for the whole life of every stream, though it runs only at the end.
async fn settle(tollgate: &Tollgate, open: OpenReservation, finish: Finish) -> bool {
    let request_id = open.request_id.clone();
    let span = tracing::Span::current();
    telemetry::record_usage(&span, &finish.usage);
    let settled = Box::pin(tollgate.finish(open, finish))
        .instrument(telemetry::when_sampled(|| tracing::debug_span!("settlement")))
        .await;
    match settled {
        Ok(outcome) => {
            span.record("tollgate.cost_nanousd", outcome.charged.nanos());
            true
        }
        Err(error) => {
            tracing::error!(%error, request_id, "could not settle a request");
            false
        }
    }
}

/// Runs the upstream call (boxed: see `settle`) and measures it alone, not the reservation's
/// commit awaited beside it: `server-timing` counts a commit that outlasts the call as
/// tollgate's time.
async fn timed<T>(call: impl Future<Output = T>) -> (T, UpstreamTime) {
    let started = tokio::time::Instant::now();
    let output = Box::pin(call).await;
    (output, UpstreamTime(started.elapsed()))
}

/// What a client whose request's settlement could not be written is told (a 500 whose
/// wording stays in the log): it is kept pending, or, held in memory, not charged.
fn settlement_failed() -> ApiError {
    ApiError::internal("the settlement could not be written; it is kept pending, or not charged")
}

/// The task's part of the call: everything but the client side of the channels.
struct Upstream {
    tollgate: Tollgate,
    attempts: Vec<Attempt>,
    cooldowns: Arc<Mutex<Cooldowns>>,
    request_id: String,
    /// The organization of the request, told when a deployment goes down under it.
    org_id: String,
    /// Which models a deployment that goes down serves.
    catalog: Arc<tollgate_core::catalog::Catalog>,
}

impl Upstream {
    /// Tries the deployments in order until one answers, failing over as the module doc
    /// says. Returns the deployment that answered (its dialect and prices) and its reply.
    /// `tried` ends as the provider of the last deployment tried, `calls` with every call
    /// made, for the request's usage record.
    async fn connect(
        mut self,
        tried: &mut String,
        calls: &mut Vec<UpstreamAttempt>,
    ) -> Result<(Dialect, ModelPrices, UpstreamReply), UpstreamError> {
        let mut last_error = None;
        let attempts = std::mem::take(&mut self.attempts);
        let attempts_count = attempts.len();
        for (index, attempt) in attempts.into_iter().enumerate() {
            let dialect = attempt.provider.dialect();
            tried.clone_from(&attempt.deployment.provider);
            let called = tokio::time::Instant::now();
            let span = telemetry::upstream_span(&attempt.deployment, dialect);
            let mut request = attempt.request;
            {
                let _in_span = span.enter();
                tollgate_edge::inject_trace_context(&mut request.client_headers);
            }
            let called_provider = match attempt.operation {
                Operation::Generate => attempt.provider.call(request).instrument(span).await,
                Operation::Embed => attempt.provider.embeddings(request).instrument(span).await,
            };
            let reply = match called_provider {
                Ok(UpstreamReply::Stream(events)) => match peek_head(events, dialect).await {
                    Head::Opened(reply) => Ok(reply),
                    // The last deployment's failure goes to the client as the upstream sent
                    // it: a 200 and its `error` event, which clients treat differently from
                    // an error status (Claude Code falls back to a non-streaming request
                    // on the one and retries the other). The relay voids the reservation.
                    Head::Failed { error, reply } if index + 1 == attempts_count => {
                        telemetry::attempted(tried, called.elapsed(), Err(&error));
                        calls.push(UpstreamAttempt {
                            deployment: attempt.deployment.key().label(),
                            error: Some(telemetry::failure_label(&error)),
                        });
                        telemetry::cooled_down(tried);
                        self.cool_down(&attempt.deployment, &error).await;
                        tracing::warn!(
                            request_id = self.request_id,
                            provider = attempt.deployment.provider,
                            upstream_model = attempt.deployment.upstream_model,
                            %error,
                            "the last deployment's stream opened with an error; relaying it"
                        );
                        return Ok((dialect, attempt.prices, reply));
                    }
                    Head::Failed { error, .. } => Err(error),
                },
                other => other,
            };
            telemetry::attempted(tried, called.elapsed(), reply.as_ref().map(|_| ()));
            calls.push(UpstreamAttempt {
                deployment: attempt.deployment.key().label(),
                error: reply.as_ref().err().map(telemetry::failure_label),
            });
            match reply {
                Ok(reply) => {
                    let came_back = self
                        .cooldowns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record_success(&attempt.deployment);
                    if came_back {
                        self.tollgate.alert_deployment_up(&attempt.deployment.key()).await;
                    }
                    tracing::debug!(
                        request_id = self.request_id,
                        provider = attempt.deployment.provider,
                        upstream_model = attempt.deployment.upstream_model,
                        "deployment answered"
                    );
                    return Ok((dialect, attempt.prices, reply));
                }
                Err(error) => {
                    let fails_over = error.fails_over();
                    if fails_over {
                        if index + 1 < attempts_count {
                            telemetry::failed_over(tried);
                        } else {
                            telemetry::cooled_down(tried);
                        }
                        self.cool_down(&attempt.deployment, &error).await;
                        tracing::warn!(
                            request_id = self.request_id,
                            provider = attempt.deployment.provider,
                            upstream_model = attempt.deployment.upstream_model,
                            %error,
                            "deployment failed; cooling it down and trying the next"
                        );
                    }
                    last_error = Some(error);
                    if !fails_over {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::Protocol("the model has no deployment".to_owned())))
    }

    /// Passes the deployment over for its cooldown; if this failure took it down, its
    /// `deployment_down` alert goes to the organization of this request first, then to
    /// every organization whose recent traffic went to a model it serves.
    async fn cool_down(&self, deployment: &Deployment, error: &UpstreamError) {
        let went_down = self
            .cooldowns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_failure(deployment, self.tollgate.now());
        if went_down {
            self.tollgate
                .alert_deployment_down(
                    &self.org_id,
                    &deployment.key(),
                    self.catalog
                        .models_served_by(&deployment.key())
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    deployment.cooldown,
                    &telemetry::failure_label(error),
                )
                .await;
        }
    }
}

/// Events a stream may open with before its first content that are held back while the
/// deployment can still be replaced; a stream whose head runs longer is taken as answered.
const STREAM_HEAD_EVENTS_MAX: usize = 16;

/// A stream's head, as `peek_head` read it.
enum Head {
    /// The stream opened well (or its head ran long): the head and the rest, unread.
    Opened(UpstreamReply),
    /// The head carried an `overloaded_error` or `api_error` event: `error` is the status it
    /// stands for, `reply` the stream as the upstream sent it, up to and including that event.
    Failed {
        error: UpstreamError,
        reply: UpstreamReply,
    },
}

/// Reads a stream's head — the events before the first content (`message_start`,
/// `content_block_start`, `ping`; OpenAI's empty role chunk) — before the client learns of
/// the stream. An `overloaded_error` or `api_error` event there means the deployment served
/// nothing: the caller may fail over, or relay the stream as it came.
async fn peek_head(mut events: EventStream, dialect: Dialect) -> Head {
    let mut head = Vec::new();
    while head.len() < STREAM_HEAD_EVENTS_MAX {
        match events.next().await {
            Some(Ok(event)) => {
                if let Some(error) = opening_failure(&event, dialect) {
                    head.push(Ok(event));
                    let rest: EventStream = Box::pin(futures_util::stream::iter(head).chain(events));
                    return Head::Failed {
                        error,
                        reply: UpstreamReply::Stream(rest),
                    };
                }
                let is_content = !is_head_event(&event, dialect);
                head.push(Ok(event));
                if is_content {
                    break;
                }
            }
            Some(Err(error)) => {
                head.push(Err(error));
                break;
            }
            None => break,
        }
    }
    let rest: EventStream = Box::pin(futures_util::stream::iter(head).chain(events));
    Head::Opened(UpstreamReply::Stream(rest))
}

/// Whether an event only opens the stream, with nothing generated yet.
fn is_head_event(event: &SseEvent, dialect: Dialect) -> bool {
    match dialect {
        Dialect::Anthropic => matches!(
            event.event.as_str(),
            "message_start" | "content_block_start" | "ping"
        ),
        Dialect::OpenAi => {
            let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                return false;
            };
            let empty = |value: &Value| value.is_null() || value.as_str().is_some_and(str::is_empty);
            chunk.get("usage").is_none_or(Value::is_null)
                && chunk["choices"].as_array().is_some_and(|choices| {
                    choices.iter().all(|choice| {
                        choice["finish_reason"].is_null()
                            && empty(&choice["delta"]["content"])
                            && choice["delta"].get("tool_calls").is_none()
                    })
                })
        }
    }
}

fn opening_failure(event: &SseEvent, dialect: Dialect) -> Option<UpstreamError> {
    let data: Value = serde_json::from_str(&event.data).ok()?;
    let error = match dialect {
        Dialect::Anthropic if event.event == "error" || data["type"] == "error" => data.get("error")?,
        Dialect::OpenAi => data.get("error").filter(|error| !error.is_null())?,
        Dialect::Anthropic => return None,
    };
    let status = match error.get("type").and_then(Value::as_str) {
        Some("overloaded_error" | "overloaded") => 529,
        Some("api_error" | "server_error") | None => 500,
        Some(_) => return None,
    };
    Some(UpstreamError::status(status, Bytes::from(event.data.clone())))
}

impl MeteredCall {
    fn split(self) -> (Upstream, OpenReservation, Settings) {
        let upstream = Upstream {
            tollgate: self.tollgate.clone(),
            request_id: self.open.request_id.clone(),
            org_id: self.open.caller.org_id.clone(),
            attempts: self.attempts,
            cooldowns: self.cooldowns,
            catalog: self.catalog.clone(),
        };
        let settings = Settings {
            tollgate: self.tollgate,
            drain_bound: self.drain_bound,
            client: self.client.clone(),
            requested_model: self.requested_model,
            input_tokens_estimate: self.input_tokens_estimate,
            output_tokens_max: self.output_tokens_max,
            observed: self.observed,
            provider: String::new(),
            catalog: self.catalog,
            capture: self.capture,
        };
        (upstream, self.open, settings)
    }

    pub(crate) async fn call(self) -> Result<Response, ApiError> {
        let (reply_sender, reply_receiver) = oneshot::channel();
        let (upstream, open, mut settings) = self.split();
        let span = settings.observed.span.clone();
        tokio::spawn(
            Box::pin(async move {
                let (mut open, connected, upstream_time) =
                    match settings.connect_reserved(upstream, open).await {
                        Ok(connected) => connected,
                        Err(error) => {
                            let _ = reply_sender.send(Err(error.clone()));
                            settings.keep_error(error).await;
                            return;
                        }
                    };
                let (finish, reply) = match connected {
                    Ok((dialect, prices, UpstreamReply::Message { body, usage })) => {
                        open.prices = prices;
                        settings.bill_served_model(&mut open, served_model(&body).as_deref());
                        match settings.reshape_body(dialect, &body) {
                            Ok(body) => (
                                Finish {
                                    usage,
                                    status: UsageStatus::Succeeded,
                                    error_type: None,
                                },
                                Ok(body),
                            ),
                            Err(error) => (failed(&error), Err(error)),
                        }
                    }
                    Ok((_, _, UpstreamReply::Stream(_))) => {
                        let error =
                            UpstreamError::Protocol("a stream answered a non-streaming request".into());
                        (failed(&error), Err(error))
                    }
                    Err(error) => (failed(&error), Err(error)),
                };
                let finish = if reply_sender.is_closed() && finish.status == UsageStatus::Succeeded {
                    Finish {
                        status: UsageStatus::ClientDisconnected,
                        ..finish
                    }
                } else {
                    finish
                };
                let reply = match reply {
                    Ok(body) => Ok(body),
                    Err(error) => Err(ApiError::from_upstream(&error)),
                };
                let outcome = telemetry::outcome(finish.status);
                let settled = settle(&settings.tollgate, open, finish).await;
                let reply = match reply {
                    Ok(_) if !settled => Err(settlement_failed()),
                    reply => reply,
                };
                if let (Ok(body), ClientWire::Responses(call)) = (&reply, &settings.client)
                    && let Ok(response) = serde_json::from_slice::<Value>(body)
                {
                    call.keep(&settings.tollgate, &response).await;
                }
                let status = match &reply {
                    Ok(_) => {
                        settings.observed.first_byte();
                        StatusCode::OK
                    }
                    Err(error) => error.status,
                };
                settings.observed.ended(&settings.provider, status, outcome);
                let delivered = settings.capture.is_some().then(|| reply.clone());
                let _ = reply_sender.send(reply.map(|body| (body, upstream_time)));
                if let (Some(job), Some(delivered)) = (settings.capture.take(), delivered) {
                    job.keep_reply(&settings.tollgate, &settings.client, delivered)
                        .await;
                }
            })
            .instrument(span),
        );
        match reply_receiver.await {
            Ok(Ok((body, upstream_time))) => {
                let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
                response.extensions_mut().insert(upstream_time);
                Ok(response)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ApiError::internal("the upstream task ended without a reply")),
        }
    }

    pub(crate) async fn stream(self) -> Result<Response, ApiError> {
        let (start_sender, start_receiver) = oneshot::channel::<Result<UpstreamTime, ApiError>>();
        let (event_sender, event_receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_EVENTS);
        let (upstream, open, mut settings) = self.split();
        let span = settings.observed.span.clone();
        tokio::spawn(
            Box::pin(async move {
                let (mut open, connected, upstream_time) =
                    match settings.connect_reserved(upstream, open).await {
                        Ok(connected) => connected,
                        Err(error) => {
                            let _ = start_sender.send(Err(error.clone()));
                            settings.keep_error(error).await;
                            return;
                        }
                    };
                let (dialect, events) = match connected {
                    Ok((dialect, prices, UpstreamReply::Stream(events))) => {
                        open.prices = prices;
                        (dialect, events)
                    }
                    Ok((_, _, UpstreamReply::Message { .. })) => {
                        let error = UpstreamError::Protocol("a message answered a streaming request".into());
                        settings.stream_failed(open, error, start_sender).await;
                        return;
                    }
                    Err(error) => {
                        settings.stream_failed(open, error, start_sender).await;
                        return;
                    }
                };
                let _ = start_sender.send(Ok(upstream_time));
                settings.relay(open, dialect, events, event_sender).await;
            })
            .instrument(span),
        );
        match start_receiver.await {
            Ok(Ok(upstream_time)) => {
                let body = Body::from_stream(
                    ReceiverStream::new(event_receiver).map(Ok::<Bytes, std::convert::Infallible>),
                );
                let mut response = Response::new(body);
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream; charset=utf-8"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response.extensions_mut().insert(upstream_time);
                Ok(response)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ApiError::internal(
                "the upstream task ended before the stream started",
            )),
        }
    }
}

/// A written reservation, what its deployments answered, and how long they took.
type Connected = (
    OpenReservation,
    Result<(Dialect, ModelPrices, UpstreamReply), UpstreamError>,
    UpstreamTime,
);

/// What the relay needs once a deployment has answered.
struct Settings {
    tollgate: Tollgate,
    drain_bound: Duration,
    client: ClientWire,
    requested_model: String,
    input_tokens_estimate: u64,
    output_tokens_max: u64,
    observed: Observed,
    /// The provider of the deployment that answered (or the last one tried).
    provider: String,
    catalog: Arc<tollgate_core::catalog::Catalog>,
    capture: Option<CaptureJob>,
}

impl Settings {
    /// Ends a stream that failed before it started: settles, tells the client (an error
    /// status, as a non-streaming reply would be), then keeps the capture of that error.
    async fn stream_failed(
        mut self,
        open: OpenReservation,
        error: UpstreamError,
        start_sender: oneshot::Sender<Result<UpstreamTime, ApiError>>,
    ) {
        settle(&self.tollgate, open, failed(&error)).await;
        let api_error = ApiError::from_upstream(&error);
        self.observed.ended(&self.provider, api_error.status, "failed");
        let _ = start_sender.send(Err(api_error.clone()));
        self.keep_error(api_error).await;
    }

    /// Calls the upstream while the reservation's batch commits (the call starts on the
    /// book's decision) and waits for both: the reservation, written, with the call's
    /// outcome and time. If the reservation was not written, the upstream's answer is
    /// dropped unread (a stream's before its head) and the client's error is returned.
    async fn connect_reserved(
        &mut self,
        upstream: Upstream,
        mut open: OpenReservation,
    ) -> Result<Connected, ApiError> {
        let commit = open.take_commit();
        let ((connected, upstream_time), committed) = tokio::join!(
            timed(upstream.connect(&mut self.provider, &mut open.upstream_attempts)),
            commit.committed()
        );
        match self.tollgate.committed(open, committed).await {
            Ok(open) => Ok((open, connected, upstream_time)),
            Err(error) => Err(self.observed.refused(error)),
        }
    }

    /// Keeps the capture of an error the client was told, if its workspace captures.
    async fn keep_error(&mut self, error: ApiError) {
        if let Some(job) = self.capture.take() {
            job.keep_reply(&self.tollgate, &self.client, Err(error)).await;
        }
    }

    /// Bills a reply at the prices of the model that served it, when the upstream names
    /// another catalogue model than the one routed (a server-side fallback). Unit charges
    /// (per request, per image) stay those of the deployment that answered.
    fn bill_served_model(&self, open: &mut OpenReservation, served_model: Option<&str>) {
        let Some(served_model) = served_model else {
            return;
        };
        if let Some(served) = self
            .catalog
            .served_prices(&open.model, served_model, open.priced_at)
        {
            tracing::info!(
                request_id = open.request_id,
                routed = open.model,
                served = served_model,
                "the upstream answered with another model; billing at its prices"
            );
            open.served_model = Some(served_model.to_owned());
            open.prices = tollgate_core::pricing::ModelPrices {
                per_request: open.prices.per_request,
                per_image: open.prices.per_image,
                ..served.clone()
            };
        }
    }

    /// A whole reply in the client's dialect: verbatim when the dialects agree.
    fn reshape_body(&self, upstream: Dialect, body: &Bytes) -> Result<Bytes, UpstreamError> {
        let responses = match &self.client {
            ClientWire::Responses(call) => Some(call),
            _ => None,
        };
        // Embeddings are in OpenAI's shape whoever made them (the simulated model too).
        if (upstream == self.client.dialect() && responses.is_none())
            || matches!(self.client, ClientWire::Embeddings)
        {
            return Ok(body.clone());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| UpstreamError::Protocol(format!("the reply is not JSON: {error}")))?;
        let reshaped = match (&self.client, upstream) {
            (ClientWire::Messages, _) => chat_completion_to_message(&value, &self.requested_model),
            (_, Dialect::Anthropic) => {
                message_to_chat_completion(&value, &self.requested_model, self.tollgate.now().timestamp())
            }
            (_, Dialect::OpenAi) => value,
        };
        let reshaped = match responses {
            Some(call) => chat_completion_to_response(&reshaped, &call.frame),
            None => reshaped,
        };
        Ok(Bytes::from(reshaped.to_string()))
    }

    /// Forwards upstream events to the client in its dialect while metering them, then
    /// settles, then sends the held-back terminal event — or the error that ended the
    /// stream, or an `api_error` if the settlement could not be written.
    async fn relay(
        mut self,
        mut open: OpenReservation,
        upstream: Dialect,
        mut events: EventStream,
        client: mpsc::Sender<Bytes>,
    ) {
        let mut meter = Meter::new(upstream);
        let mut converter = Converter::new(
            upstream,
            &self.client,
            &self.requested_model,
            self.tollgate.now().timestamp(),
        );
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut failure: Option<UpstreamError> = None;
        let mut held_back: Vec<SseEvent> = Vec::new();
        let mut drain_cut = false;
        let mut first_byte = true;
        let mut capture = self.capture.take().map(|job| StreamCaptureJob {
            stream: job.policy.stream(),
            job,
        });
        loop {
            let next = match drain_deadline {
                None => events.next().await,
                Some(deadline) => match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        drain_cut = true;
                        break;
                    }
                },
            };
            let event = match next {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    failure = Some(error);
                    break;
                }
            };
            meter.observe(&event);
            for out in converter.convert(&event) {
                if !held_back.is_empty() || self.client.is_terminal(&out) {
                    held_back.push(out);
                    continue;
                }
                if first_byte {
                    first_byte = false;
                    self.observed.first_byte();
                }
                if drain_deadline.is_none() && !self.send(&client, &out, &mut capture).await {
                    drain_deadline = Some(tokio::time::Instant::now() + self.drain_bound);
                }
            }
        }
        if failure.is_none() && !drain_cut {
            for out in converter.finish() {
                if !held_back.is_empty() || self.client.is_terminal(&out) {
                    held_back.push(out);
                } else if drain_deadline.is_none() && !self.send(&client, &out, &mut capture).await {
                    drain_deadline = Some(tokio::time::Instant::now() + self.drain_bound);
                }
            }
        }
        let client_gone = drain_deadline.is_some();
        let usage = meter.usage(self.input_tokens_estimate, self.output_tokens_max, drain_cut);
        self.bill_served_model(&mut open, meter.served_model());
        let finish = if meter.saw_error() || failure.is_some() {
            Finish {
                usage,
                status: UsageStatus::Failed,
                error_type: Some(match &failure {
                    Some(error) => ApiError::from_upstream_kind(error).to_owned(),
                    None => "upstream_stream_error".to_owned(),
                }),
            }
        } else if client_gone {
            // Charged for what was generated: the whole answer when the drain finished; the
            // larger of what the upstream had reported and what passed through when the
            // drain bound cut it short.
            Finish {
                usage,
                status: UsageStatus::ClientDisconnected,
                error_type: drain_cut.then(|| "drain_bound_reached".to_owned()),
            }
        } else if held_back.is_empty() {
            Finish {
                usage,
                status: UsageStatus::Failed,
                error_type: Some("upstream_stream_incomplete".to_owned()),
            }
        } else {
            Finish {
                usage,
                status: UsageStatus::Succeeded,
                error_type: None,
            }
        };
        let succeeded = finish.status == UsageStatus::Succeeded;
        let outcome = telemetry::outcome(finish.status);
        let settled = settle(&self.tollgate, open, finish).await;
        self.observed.ended(&self.provider, StatusCode::OK, outcome);
        if client_gone {
            self.keep_stream(capture).await;
            return;
        }
        // The end of the stream is sent only once its charge is written; otherwise an
        // `api_error` ends it instead.
        let error = if succeeded && settled {
            if let (ClientWire::Responses(call), Some(response)) =
                (&self.client, converter.completed_response())
            {
                call.keep(&self.tollgate, response).await;
            }
            for event in held_back {
                if !self.send(&client, &event, &mut capture).await {
                    break;
                }
            }
            None
        } else if succeeded {
            Some(settlement_failed())
        } else {
            failure.as_ref().map(ApiError::from_upstream)
        };
        if let Some(error) = error {
            let event = match &self.client {
                ClientWire::Messages => {
                    let envelope = error.to_json("");
                    SseEvent {
                        event: "error".into(),
                        data: serde_json::json!({"type": "error", "error": envelope["error"]}).to_string(),
                    }
                }
                ClientWire::ChatCompletions { .. } | ClientWire::Embeddings => SseEvent {
                    event: String::new(),
                    data: error.to_openai_json().to_string(),
                },
                ClientWire::Responses(_) => converter.responses_error(&error.to_openai_json()["error"]),
            };
            self.send(&client, &event, &mut capture).await;
        }
        // The client's stream ends here, before the capture is written.
        drop(client);
        self.keep_stream(capture).await;
    }

    /// Sends an event to the client and records it in the capture; whether it was sent.
    async fn send(
        &self,
        client: &mpsc::Sender<Bytes>,
        event: &SseEvent,
        capture: &mut Option<StreamCaptureJob>,
    ) -> bool {
        let bytes = self.client.encode(event);
        let Some(capture) = capture else {
            return client.send(bytes).await.is_ok();
        };
        if client.send(bytes.clone()).await.is_err() {
            return false;
        }
        capture.delivered(&self.client, event, &bytes);
        true
    }

    async fn keep_stream(&self, capture: Option<StreamCaptureJob>) {
        if let Some(StreamCaptureJob { job, stream }) = capture {
            job.keep(&self.tollgate, CapturedResponseKind::EventStream, stream.finish())
                .await;
        }
    }
}

/// Reads usage from the upstream's own events, in its dialect.
enum Meter {
    Anthropic(UsageAccumulator),
    OpenAi(ChatUsageAccumulator),
}

impl Meter {
    /// The model an Anthropic stream says served it.
    fn served_model(&self) -> Option<&str> {
        match self {
            Meter::Anthropic(meter) => meter.served_model(),
            Meter::OpenAi(_) => None,
        }
    }

    fn new(upstream: Dialect) -> Meter {
        match upstream {
            Dialect::Anthropic => Meter::Anthropic(UsageAccumulator::default()),
            Dialect::OpenAi => Meter::OpenAi(ChatUsageAccumulator::default()),
        }
    }

    fn observe(&mut self, event: &SseEvent) {
        match self {
            Meter::Anthropic(meter) => meter.observe(event),
            Meter::OpenAi(meter) => meter.observe(event),
        }
    }

    fn saw_error(&self) -> bool {
        match self {
            Meter::Anthropic(meter) => meter.saw_error(),
            Meter::OpenAi(meter) => meter.saw_error(),
        }
    }

    /// The usage to charge (`tollgate_core::usage::stream_usage`): the upstream's final
    /// count when it sent one and the stream was read to its end; otherwise (the drain bound
    /// cut it, or the server sends no final usage) the larger of what was reported and what
    /// passed through, at four bytes of generated text a token, so delivered content is
    /// never free. The estimate is capped at the request's output limit.
    fn usage(&self, input_tokens_estimate: u64, output_tokens_max: u64, cut_short: bool) -> TokenUsage {
        let (reported, final_count, generated_bytes) = match self {
            Meter::Anthropic(meter) => (
                meter.reported_usage(),
                meter.saw_final_usage(),
                meter.generated_bytes(),
            ),
            // Some servers repeat a running usage in every chunk: it is final only once a
            // choice has finished.
            Meter::OpenAi(meter) => (
                meter.reported_usage(),
                meter.reported_usage().is_some() && meter.saw_finish(),
                meter.generated_bytes(),
            ),
        };
        let measure = StreamMeasure {
            reported,
            final_count: final_count && !cut_short,
            generated_bytes,
        };
        let usage = stream_usage(measure, input_tokens_estimate, output_tokens_max);
        if Some(usage) != reported && generated_bytes > 0 {
            tracing::warn!(
                reported = ?reported,
                generated_bytes,
                output_tokens = usage.output_tokens,
                "a stream ended without its final usage; metering what passed through"
            );
        }
        usage
    }
}

/// Turns upstream events into the client's.
enum Converter {
    /// Anthropic to a Messages client: verbatim.
    Verbatim,
    /// Chat Completions to a Chat Completions client: verbatim, except the usage the
    /// gateway asked for on the client's behalf when the client did not.
    Chat {
        strip_usage: bool,
        saw_finish: bool,
        saw_done: bool,
    },
    ToChat(Box<ToChatChunks>),
    ToMessages(Box<ToMessageEvents>),
    /// To a Responses client: the upstream's events as chat chunks first, then as
    /// Responses events.
    ToResponses {
        inner: Box<Converter>,
        outer: Box<ToResponseEvents>,
    },
}

impl Converter {
    fn new(upstream: Dialect, client: &ClientWire, model: &str, created_unix_seconds: i64) -> Converter {
        if let ClientWire::Responses(call) = client {
            let chat = ClientWire::ChatCompletions { include_usage: true };
            return Converter::ToResponses {
                inner: Box::new(Converter::new(upstream, &chat, model, created_unix_seconds)),
                outer: Box::new(ToResponseEvents::new(call.frame.clone())),
            };
        }
        match (upstream, client) {
            (Dialect::Anthropic, ClientWire::Messages) => Converter::Verbatim,
            (Dialect::OpenAi, ClientWire::ChatCompletions { include_usage }) => Converter::Chat {
                strip_usage: !*include_usage,
                saw_finish: false,
                saw_done: false,
            },
            (Dialect::Anthropic, ClientWire::ChatCompletions { include_usage }) => Converter::ToChat(
                Box::new(ToChatChunks::new(model, created_unix_seconds, *include_usage)),
            ),
            (Dialect::OpenAi, ClientWire::Messages) => {
                Converter::ToMessages(Box::new(ToMessageEvents::new(model)))
            }
            // Taken above: a Responses client's converter wraps a Chat Completions one.
            // Embeddings never stream.
            (_, ClientWire::Responses(_) | ClientWire::Embeddings) => Converter::Verbatim,
        }
    }

    /// The final Response of a Responses stream that ended well.
    fn completed_response(&self) -> Option<&Value> {
        match self {
            Converter::ToResponses { outer, .. } => outer.completed(),
            _ => None,
        }
    }

    /// The `error` event that ends a Responses stream, numbered after what was sent.
    fn responses_error(&mut self, error: &Value) -> SseEvent {
        match self {
            Converter::ToResponses { outer, .. } => outer.error_event(error),
            _ => ToResponseEvents::new(ResponseFrame::new(String::new(), 0, &Default::default()))
                .error_event(error),
        }
    }

    fn convert(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        match self {
            Converter::Verbatim => vec![event.clone()],
            Converter::Chat {
                strip_usage,
                saw_finish,
                saw_done,
            } => {
                if is_done(event) {
                    *saw_done = true;
                    return vec![done_event()];
                }
                let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
                    return vec![event.clone()];
                };
                if chunk["choices"]
                    .as_array()
                    .is_some_and(|choices| choices.iter().any(|choice| !choice["finish_reason"].is_null()))
                {
                    *saw_finish = true;
                }
                // A null usage says nothing; only a reported one is the client's business.
                if !*strip_usage || chunk.get("usage").is_none_or(Value::is_null) {
                    return vec![event.clone()];
                }
                let usage_only = chunk["choices"].as_array().is_some_and(Vec::is_empty);
                if usage_only {
                    return Vec::new();
                }
                if let Some(object) = chunk.as_object_mut() {
                    object.remove("usage");
                }
                vec![SseEvent {
                    event: String::new(),
                    data: chunk.to_string(),
                }]
            }
            Converter::ToChat(converter) => converter.translate(event),
            Converter::ToMessages(converter) => converter.translate(event),
            Converter::ToResponses { inner, outer } => inner
                .convert(event)
                .iter()
                .flat_map(|chunk| outer.translate(chunk))
                .collect(),
        }
    }

    /// Closing events for an upstream that ended without its terminator but had finished.
    fn finish(&mut self) -> Vec<SseEvent> {
        match self {
            Converter::Chat {
                saw_finish: true,
                saw_done: false,
                ..
            } => vec![done_event()],
            Converter::ToMessages(converter) => converter.finish(),
            Converter::ToResponses { inner, outer } => {
                let mut events: Vec<SseEvent> = inner
                    .finish()
                    .iter()
                    .flat_map(|chunk| outer.translate(chunk))
                    .collect();
                events.extend(outer.finish());
                events
            }
            _ => Vec::new(),
        }
    }
}
