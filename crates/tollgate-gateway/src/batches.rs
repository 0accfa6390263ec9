//! Anthropic's Message Batches API (`/v1/messages/batches`) and the runner that works the
//! batches off. Creation checks every request as `POST /v1/messages` checks it and takes its
//! reservation bound (`messages::batch_request_bound`); the service reserves each at the
//! Batch rate, all or nothing. The runner claims requests in the store with a lease, runs
//! each through the metered path on its own reservation (`messages::run_batch_request`) and
//! writes its result; it never makes a reservation of its own. Requests that route first
//! to an `anthropic` provider taking batches (`GatewaySettings::batch_providers`) are marked
//! with it at creation and go to that provider's own Batches API instead
//! (`upstream_batches`); a batch with requests for several providers is split so, per
//! provider, and the rest run here.
//!
//! Wire shapes are written here by hand: the `message_batch` object, list pages and the
//! results' JSON lines, exactly as Anthropic's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tollgate_core::Timestamp;
use tollgate_core::ids::{IdKind, is_well_formed};
use tollgate_service::{
    BatchClaim, BatchHeaders, BatchPage, BatchRequestPlan, BatchRequestState, ClaimedBatchRequest,
    MessageBatch,
};

use crate::GatewayState;
use crate::error::{ApiError, ErrorKind, Surface};
use crate::messages::{authenticate, batch_request_bound, run_batch_request};

/// The most requests one batch may hold.
pub const BATCH_REQUESTS_MAX: usize = 100_000;
/// The largest body a batch may be created with: 256 MB.
pub const BATCH_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How often a runner looks for work when it found none.
const RUNNER_POLL: Duration = Duration::from_millis(250);

/// How the runner works.
#[derive(Clone, Debug)]
pub struct BatchRunnerSettings {
    /// Requests run at once by this process.
    pub concurrency: usize,
    /// How long a claim on a request lasts unless renewed (a quarter of it apart): a runner
    /// that dies leaves its requests to another after this.
    pub lease: Duration,
    /// How often a provider batch is asked whether it ended.
    pub upstream_poll: Duration,
}

impl BatchRunnerSettings {
    /// `lease` as claims count it.
    pub(crate) fn claim_lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(120))
    }
}

fn rfc3339(instant: Timestamp) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The `message_batch` object. `base_url` is what the client called, for `results_url`.
fn batch_json(batch: &MessageBatch, base_url: &str) -> Value {
    let counts = &batch.counts;
    json!({
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status.as_str(),
        "request_counts": {
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        "ended_at": batch.ended_at.map(rfc3339),
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "archived_at": batch.archived_at.map(rfc3339),
        "cancel_initiated_at": batch.cancel_initiated_at.map(rfc3339),
        "results_url": batch
            .ended_at
            .map(|_| format!("{base_url}/v1/messages/batches/{}/results", batch.id)),
    })
}

/// The scheme and host the client called, as `results_url` must name them.
fn base_url(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|authority| authority.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A batch id from the path: one that cannot be an id is not found, before any lookup.
fn batch_id(id: &str) -> Result<&str, ApiError> {
    if is_well_formed(IdKind::MessageBatch, id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("message_batch: {id}")))
    }
}

/// Anthropic's rule for `custom_id`: 1 to 64 of letters, digits, `-` and `_`.
fn custom_id_is_valid(custom_id: &str) -> bool {
    (1..=64).contains(&custom_id.len())
        && custom_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// `POST /v1/messages/batches`.
pub(crate) async fn create_batch(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let base = base_url(request.headers(), request.uri());
    let headers = BatchHeaders {
        anthropic_version: header_text(request.headers(), "anthropic-version"),
        anthropic_beta: header_text(request.headers(), "anthropic-beta"),
    };
    let bytes = axum::body::to_bytes(request.into_body(), BATCH_BODY_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::RequestTooLarge,
                format!("Request exceeds the maximum allowed size of {BATCH_BODY_BYTES_MAX} bytes."),
            )
        })?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::invalid(format!("The request body is not valid JSON: {error}")))?;
    drop(bytes);
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("requests: Field required"))?;
    if requests.is_empty() {
        return Err(ApiError::invalid("requests: List should have at least 1 item"));
    }
    if requests.len() > BATCH_REQUESTS_MAX {
        return Err(ApiError::invalid(format!(
            "requests: List should have at most {BATCH_REQUESTS_MAX} items, not {}",
            requests.len()
        )));
    }
    let mut seen = HashSet::with_capacity(requests.len());
    let mut plans = Vec::with_capacity(requests.len());
    for (index, item) in requests.iter().enumerate() {
        let custom_id = item
            .get("custom_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid(format!("requests.{index}.custom_id: Field required")))?;
        if !custom_id_is_valid(custom_id) {
            return Err(ApiError::invalid(format!(
                "requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        if !seen.insert(custom_id) {
            return Err(ApiError::invalid(format!(
                "requests.{index}.custom_id: Duplicate custom_id '{custom_id}': each request of a batch needs its own"
            )));
        }
        let params = item
            .get("params")
            .filter(|params| params.is_object())
            .ok_or_else(|| ApiError::invalid(format!("requests.{index}.params: Field required")))?;
        let params = Bytes::from(params.to_string());
        let bound = batch_request_bound(&state, &caller, &params).map_err(|mut error| {
            error.message = format!("requests.{index}.params: {}", error.message);
            error
        })?;
        let upstream_provider = state
            .settings
            .batch_providers
            .contains(&bound.first_provider)
            .then_some(bound.first_provider);
        plans.push(BatchRequestPlan {
            custom_id: custom_id.to_owned(),
            params: String::from_utf8_lossy(&params).into_owned(),
            model: bound.model,
            cost_bound: bound.cost_bound,
            upstream_provider,
        });
    }
    let batch = state
        .tollgate
        .create_message_batch(&caller, plans, headers)
        .await?;
    Ok(Json(batch_json(&batch, &base)).into_response())
}

/// `GET /v1/messages/batches/{id}`.
pub(crate) async fn retrieve_batch(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let batch = state.tollgate.message_batch(&caller, batch_id(&id)?).await?;
    Ok(Json(batch_json(&batch, &base_url(request.headers(), request.uri()))).into_response())
}

/// `GET /v1/messages/batches`: newest first, `before_id` / `after_id` cursors.
pub(crate) async fn list_batches(
    State(state): State<GatewayState>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let limit = match query.get("limit") {
        None => 20,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| ApiError::invalid("limit: Input should be between 1 and 1000"))?,
    };
    let page = match (query.get("before_id"), query.get("after_id")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("before_id and after_id cannot both be given"));
        }
        (Some(before), None) => BatchPage::Before(before.clone()),
        (None, Some(after)) => BatchPage::After(after.clone()),
        (None, None) => BatchPage::Newest,
    };
    let mut batches = state.tollgate.message_batches(&caller, &page, limit + 1).await?;
    let has_more = cut_to_page(&mut batches, limit, matches!(page, BatchPage::Before(_)));
    let base = base_url(request.headers(), request.uri());
    Ok(Json(json!({
        "data": batches.iter().map(|batch| batch_json(batch, &base)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": batches.first().map(|batch| batch.id.clone()),
        "last_id": batches.last().map(|batch| batch.id.clone()),
    }))
    .into_response())
}

/// Cuts a list read `limit + 1` long (newest first) to `limit`, and says whether there is
/// more in the direction asked: the one more than asked, dropped from the far end (the
/// newest when paging towards newer ones, `before_id`, else the oldest).
pub(crate) fn cut_to_page<T>(items: &mut Vec<T>, limit: u64, towards_newer: bool) -> bool {
    let has_more = u64::try_from(items.len()).unwrap_or(u64::MAX) > limit;
    if has_more {
        if towards_newer {
            items.remove(0);
        } else {
            items.pop();
        }
    }
    has_more
}

/// `POST /v1/messages/batches/{id}/cancel`.
pub(crate) async fn cancel_batch(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let batch = state
        .tollgate
        .cancel_message_batch(&caller, batch_id(&id)?)
        .await?;
    Ok(Json(batch_json(&batch, &base_url(request.headers(), request.uri()))).into_response())
}

/// `DELETE /v1/messages/batches/{id}`: only an ended batch.
pub(crate) async fn delete_batch(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let id = batch_id(&id)?;
    state.tollgate.delete_message_batch(&caller, id).await?;
    Ok(Json(json!({"id": id, "type": "message_batch_deleted"})).into_response())
}

/// `GET /v1/messages/batches/{id}/results`: one JSON line per request, in request order.
pub(crate) async fn batch_results(
    State(state): State<GatewayState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let results = state
        .tollgate
        .message_batch_results(&caller, batch_id(&id)?)
        .await?;
    let mut lines = String::new();
    for result in results {
        let outcome = match (result.state, result.result) {
            (BatchRequestState::Canceled, _) => json!({"type": "canceled"}),
            (BatchRequestState::Expired, _) => json!({"type": "expired"}),
            (_, Some(text)) => serde_json::from_str(&text).unwrap_or(Value::Null),
            (_, None) => Value::Null,
        };
        lines.push_str(&json!({"custom_id": result.custom_id, "result": outcome}).to_string());
        lines.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/binary")], lines).into_response())
}

/// Runs this process's share of every batch's requests until the task is dropped: those
/// run here (`run_local_batches`) and those of provider batches
/// (`upstream_batches::run_upstream_batches`), under one runner name.
pub async fn run_batches(state: GatewayState, settings: BatchRunnerSettings) {
    let owner = tollgate_service::random::ordered_id(IdKind::Request, state.tollgate.now());
    tokio::join!(
        run_local_batches(state.clone(), settings.clone(), owner.clone()),
        crate::upstream_batches::run_upstream_batches(state, settings, owner),
    );
}

/// Claims as many requests as it has room for, runs them `concurrency` at a time, renews
/// the leases of those running, and looks again.
async fn run_local_batches(state: GatewayState, settings: BatchRunnerSettings, owner: String) {
    let concurrency = settings.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let lease = settings.claim_lease();
    let renew_every = settings.lease / 4;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        if last_renewal.elapsed() >= renew_every {
            last_renewal = tokio::time::Instant::now();
            let ids: Vec<String> = running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect();
            if let Err(error) = state.tollgate.extend_batch_claims(&owner, &ids, lease).await {
                tracing::warn!(%error, "could not renew the leases of running batch requests");
            }
        }
        let room = permits.available_permits();
        let claimed = if room == 0 {
            Vec::new()
        } else {
            match state
                .tollgate
                .claim_batch_requests(&owner, lease, room as u64)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "could not claim batch requests");
                    Vec::new()
                }
            }
        };
        let found = claimed.len();
        for claimed in claimed {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(claimed.request_id.clone());
            let state = state.clone();
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                run_one(&state, &claimed, lease).await;
                running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&claimed.request_id);
                drop(permit);
            });
        }
        if found < room || room == 0 {
            tokio::time::sleep(RUNNER_POLL).await;
        }
    }
}

/// Runs one claimed request and writes its result: `succeeded` with the message, or
/// `errored` with the error as the client would have got it.
async fn run_one(state: &GatewayState, claimed: &ClaimedBatchRequest, lease: chrono::Duration) {
    let claim = BatchClaim {
        attempt: claimed.attempt,
        lease,
    };
    // The key as it stands now: one stopped since runs nothing more, and its models are
    // those it may call now.
    let outcome = match state.tollgate.batch_runner_caller(claimed).await {
        Ok(caller) => run_batch_request(state, &caller, claimed, claim).await,
        Err(refusal) => Err(ApiError::from(refusal)),
    };
    let (request_state, result) = match outcome {
        Ok(response) if response.status().is_success() => {
            match axum::body::to_bytes(response.into_body(), usize::MAX).await {
                Ok(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(message) => (
                        BatchRequestState::Succeeded,
                        json!({"type": "succeeded", "message": message}),
                    ),
                    Err(error) => errored(
                        &ApiError::internal(format!("the reply was not JSON: {error}")),
                        claimed,
                    ),
                },
                Err(error) => errored(
                    &ApiError::internal(format!("the reply was cut short: {error}")),
                    claimed,
                ),
            }
        }
        Ok(response) => errored(
            &ApiError::internal(format!("the upstream answered {}", response.status())),
            claimed,
        ),
        Err(error) => errored(&error, claimed),
    };
    if let Err(error) = state
        .tollgate
        .end_batch_request(claimed, request_state, &result.to_string())
        .await
    {
        // The claim lapses and another run writes it; the reservation is charged once.
        tracing::error!(%error, request_id = claimed.request_id, "could not record a batch request's result");
    }
}

/// An `errored` result: the error envelope the request would have got from
/// `POST /v1/messages` (an upstream's own, when it refused in Anthropic's words).
pub(crate) fn errored(error: &ApiError, claimed: &ClaimedBatchRequest) -> (BatchRequestState, Value) {
    let envelope = match &error.upstream {
        Some(upstream) if upstream.envelope == Some(Surface::Anthropic) => {
            serde_json::from_slice(&upstream.body).unwrap_or_else(|_| error.to_json(&claimed.request_id))
        }
        _ => error.to_json(&claimed.request_id),
    };
    (
        BatchRequestState::Errored,
        json!({"type": "errored", "error": envelope}),
    )
}
