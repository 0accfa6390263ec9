//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: authenticate, validate, reserve,
//! call the upstream, settle.
//!
//! The upstream call and its settlement run in a task of their own, so a client that goes
//! away never cancels them. Disconnect policy: when a streaming client disconnects, the task
//! keeps reading the upstream stream (without forwarding it) until the upstream finishes or
//! the drain bound passes, then charges the usage the upstream reported — what was
//! generated, never more, and never zero once content was delivered (the input was
//! processed). A non-streaming client that disconnects is charged the upstream's usage too.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_core::catalog::ResolvedModel;
use tollgate_core::pricing::{input_tokens_bound, input_tokens_estimate};
use tollgate_core::ratelimit::BucketSnapshot;
use tollgate_core::usage::TokenUsage;
use tollgate_service::{
    ApiCaller, Finish, OpenReservation, RateLimitView, RequestPlan, Tollgate, UsageStatus,
};
use tollgate_upstream::sse::{SseEvent, UsageAccumulator};
use tollgate_upstream::{EventStream, Provider, UpstreamError, UpstreamReply, UpstreamRequest};

use crate::GatewayState;
use crate::error::{ApiError, ErrorKind};
use crate::request_id::RequestId;
use crate::wire::{Endpoint, MessagesRequest};

/// Events buffered between the upstream task and a slow client.
const STREAM_BUFFER_EVENTS: usize = 64;

/// The presented credential: `x-api-key`, or `Authorization: Bearer`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|value| value.to_str().ok()) {
        return Some(key);
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
}

pub(crate) async fn authenticate(state: &GatewayState, headers: &HeaderMap) -> Result<ApiCaller, ApiError> {
    Ok(state
        .tollgate
        .authenticate_api_key(presented_key(headers))
        .await?)
}

/// Reads the body within the configured limit; over it is 413 `request_too_large`.
async fn read_body(state: &GatewayState, request: Request) -> Result<Bytes, ApiError> {
    let limit = state.settings.max_body_bytes;
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::RequestTooLarge,
                format!("Request exceeds the maximum allowed size of {limit} bytes."),
            )
        })
}

/// The catalogue model a request names (aliases included) and the provider serving it.
fn resolve_model<'state>(
    state: &'state GatewayState,
    requested: &str,
) -> Result<(ResolvedModel<'state>, Provider), ApiError> {
    let resolved = state
        .catalog
        .resolve(requested)
        .ok_or_else(|| ApiError::not_found(format!("model: {requested}")))?;
    let provider = state
        .providers
        .get(&resolved.model.provider)
        .cloned()
        .ok_or_else(|| {
            ApiError::internal(format!("no provider '{}' is configured", resolved.model.provider))
        })?;
    Ok((resolved, provider))
}

/// The `anthropic-ratelimit-*` headers: per metric the scope with the least room left;
/// token counts rounded to the nearest thousand, resets as RFC 3339 to the second.
fn rate_limit_headers(view: &RateLimitView, headers: &mut HeaderMap) {
    let groups = [
        ("requests", view.requests, false),
        ("input-tokens", view.input_tokens, true),
        ("output-tokens", view.output_tokens, true),
        ("tokens", view.tokens(), true),
    ];
    for (name, snapshot, round) in groups {
        let BucketSnapshot {
            limit,
            remaining,
            reset_at_nanos,
        } = snapshot;
        let remaining = if round {
            (remaining + 500) / 1_000 * 1_000
        } else {
            remaining
        };
        let reset = chrono::DateTime::from_timestamp_nanos(reset_at_nanos)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (suffix, value) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", reset),
        ] {
            if let (Ok(header_name), Ok(value)) = (
                header::HeaderName::try_from(format!("anthropic-ratelimit-{name}-{suffix}")),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(header_name, value);
            }
        }
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

pub(crate) async fn create_message(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let headers = request.headers().clone();
    let query = request.uri().query().map(str::to_owned);
    let caller = authenticate(&state, &headers).await?;
    let bytes = read_body(&state, request).await?;
    let parsed = MessagesRequest::parse(&bytes, Endpoint::Messages)?;
    let (resolved, provider) = resolve_model(&state, &parsed.model)?;
    let body_length = bytes.len();
    let input_bound = input_tokens_bound(body_length, parsed.media_blocks);
    let output_bound = parsed.max_tokens.unwrap_or(0);
    let bound = resolved.model.prices.cost_bound(input_bound, output_bound);
    let upstream_request = UpstreamRequest {
        body: parsed.upstream_body(bytes, &resolved.upstream_model)?,
        stream: parsed.stream,
        anthropic_version: header_string(&headers, "anthropic-version"),
        anthropic_beta: header_string(&headers, "anthropic-beta"),
        query,
    };
    let open = state
        .tollgate
        .begin(
            &caller,
            RequestPlan {
                request_id: &request_id,
                model: resolved.model,
                cost_bound: bound,
                input_tokens_estimate: input_tokens_estimate(body_length),
                max_tokens: output_bound,
            },
        )
        .await?;
    let rate_limits = open.rate_limits;
    let metered = MeteredCall {
        tollgate: state.tollgate.clone(),
        provider,
        open,
        drain_bound: state.settings.disconnect_drain,
    };
    let mut response = if parsed.stream {
        metered.stream(upstream_request).await?
    } else {
        metered.call(upstream_request).await?
    };
    rate_limit_headers(&rate_limits, response.headers_mut());
    Ok(response)
}

/// One admitted request: owns its reservation until it is settled.
struct MeteredCall {
    tollgate: Tollgate,
    provider: Provider,
    open: OpenReservation,
    drain_bound: std::time::Duration,
}

fn failed(error: &UpstreamError) -> Finish {
    Finish {
        usage: TokenUsage::default(),
        status: UsageStatus::Failed,
        error_type: Some(ApiError::from_upstream_kind(error).to_owned()),
    }
}

impl MeteredCall {
    async fn settle(tollgate: &Tollgate, open: OpenReservation, finish: Finish) {
        let request_id = open.request_id.clone();
        if let Err(error) = tollgate.finish(open, finish).await {
            tracing::error!(%error, request_id, "could not settle a request");
        }
    }

    async fn call(self, upstream_request: UpstreamRequest) -> Result<Response, ApiError> {
        let (reply_sender, reply_receiver) = oneshot::channel();
        tokio::spawn(async move {
            let MeteredCall {
                tollgate,
                provider,
                open,
                ..
            } = self;
            let (finish, reply) = match provider.messages(upstream_request).await {
                Ok(UpstreamReply::Message { body, usage }) => (
                    Finish {
                        usage,
                        status: UsageStatus::Succeeded,
                        error_type: None,
                    },
                    Ok(body),
                ),
                Ok(UpstreamReply::Stream(_)) => {
                    let error = UpstreamError::Protocol("a stream answered a non-streaming request".into());
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
            Self::settle(&tollgate, open, finish).await;
            let _ = reply_sender.send(reply);
        });
        match reply_receiver.await {
            Ok(Ok(body)) => Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
            Ok(Err(error)) => Err(ApiError::from_upstream(&error)),
            Err(_) => Err(ApiError::internal("the upstream task ended without a reply")),
        }
    }

    async fn stream(self, upstream_request: UpstreamRequest) -> Result<Response, ApiError> {
        let (start_sender, start_receiver) = oneshot::channel::<Result<(), UpstreamError>>();
        let (event_sender, event_receiver) = mpsc::channel::<Bytes>(STREAM_BUFFER_EVENTS);
        tokio::spawn(async move {
            let MeteredCall {
                tollgate,
                provider,
                open,
                drain_bound,
            } = self;
            let events = match provider.messages(upstream_request).await {
                Ok(UpstreamReply::Stream(events)) => events,
                Ok(UpstreamReply::Message { .. }) => {
                    let error = UpstreamError::Protocol("a message answered a streaming request".into());
                    Self::settle(&tollgate, open, failed(&error)).await;
                    let _ = start_sender.send(Err(error));
                    return;
                }
                Err(error) => {
                    Self::settle(&tollgate, open, failed(&error)).await;
                    let _ = start_sender.send(Err(error));
                    return;
                }
            };
            let _ = start_sender.send(Ok(()));
            relay(tollgate, open, events, event_sender, drain_bound).await;
        });
        match start_receiver.await {
            Ok(Ok(())) => {
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
                Ok(response)
            }
            Ok(Err(error)) => Err(ApiError::from_upstream(&error)),
            Err(_) => Err(ApiError::internal(
                "the upstream task ended before the stream started",
            )),
        }
    }
}

/// Forwards upstream events to the client while metering them, then settles. The final
/// `message_stop` is held back until the settlement is written, so a client that has seen
/// the end of the stream sees its balance already charged.
async fn relay(
    tollgate: Tollgate,
    open: OpenReservation,
    mut events: EventStream,
    client: mpsc::Sender<Bytes>,
    drain_bound: std::time::Duration,
) {
    let mut usage = UsageAccumulator::default();
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut failure: Option<UpstreamError> = None;
    let mut held_back_stop: Option<SseEvent> = None;
    let mut drain_cut = false;
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
        usage.observe(&event);
        if event.event == "message_stop" {
            held_back_stop = Some(event);
            continue;
        }
        if drain_deadline.is_none() && client.send(event.to_bytes()).await.is_err() {
            drain_deadline = Some(tokio::time::Instant::now() + drain_bound);
        }
    }
    let client_gone = drain_deadline.is_some();
    let finish = if usage.saw_error() || failure.is_some() {
        Finish {
            usage: usage.usage(),
            status: UsageStatus::Failed,
            error_type: Some(match &failure {
                Some(error) => ApiError::from_upstream_kind(error).to_owned(),
                None => "upstream_stream_error".to_owned(),
            }),
        }
    } else if client_gone {
        // Charged for what was generated: the whole answer when the drain finished, what the
        // upstream had reported when the drain bound cut it short.
        Finish {
            usage: usage.usage(),
            status: UsageStatus::ClientDisconnected,
            error_type: drain_cut.then(|| "drain_bound_reached".to_owned()),
        }
    } else if held_back_stop.is_none() {
        Finish {
            usage: usage.usage(),
            status: UsageStatus::Failed,
            error_type: Some("upstream_stream_incomplete".to_owned()),
        }
    } else {
        Finish {
            usage: usage.usage(),
            status: UsageStatus::Succeeded,
            error_type: None,
        }
    };
    let succeeded = finish.status == UsageStatus::Succeeded;
    MeteredCall::settle(&tollgate, open, finish).await;
    if client_gone {
        return;
    }
    let closing = match (succeeded, held_back_stop, failure) {
        (true, Some(stop), _) => Some(stop.to_bytes()),
        (_, _, Some(error)) => {
            let envelope = ApiError::from_upstream(&error).to_json("");
            let data = serde_json::json!({"type": "error", "error": envelope["error"]});
            Some(
                SseEvent {
                    event: "error".into(),
                    data: data.to_string(),
                }
                .to_bytes(),
            )
        }
        _ => None,
    };
    if let Some(bytes) = closing {
        let _ = client.send(bytes).await;
    }
}

pub(crate) async fn count_tokens(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let query = request.uri().query().map(str::to_owned);
    let caller = authenticate(&state, &headers).await?;
    let bytes = read_body(&state, request).await?;
    let parsed = MessagesRequest::parse(&bytes, Endpoint::CountTokens)?;
    let (resolved, provider) = resolve_model(&state, &parsed.model)?;
    state
        .tollgate
        .admit_count_tokens(&caller, &resolved.model.id)
        .await?;
    // Free, but like every call it needs credit: an empty balance is refused the same way.
    if !state
        .tollgate
        .balance(&caller.org_id)
        .await?
        .available
        .is_positive()
    {
        return Err(ApiError::credit_too_low());
    }
    let upstream_request = UpstreamRequest {
        body: parsed.upstream_body(bytes, &resolved.upstream_model)?,
        stream: false,
        anthropic_version: header_string(&headers, "anthropic-version"),
        anthropic_beta: header_string(&headers, "anthropic-beta"),
        query,
    };
    let input_tokens = provider
        .count_tokens(upstream_request)
        .await
        .map_err(|error| ApiError::from_upstream(&error))?;
    Ok(Json(serde_json::json!({ "input_tokens": input_tokens })).into_response())
}
