//! Anthropic's Message Batches API on the fake: create, retrieve, cancel and results, in the
//! real wire shapes. A batch answers `in_progress` to as many retrieves as its
//! [`BatchBehavior`] says, then `ended`; a canceled one ends at its next retrieve with every
//! request `canceled`. Each succeeded result is the message `/v1/messages` would have
//! answered with the default reply (its `usage` included, output capped by `max_tokens`);
//! the custom ids the behaviour names come back `errored`. Every call is recorded like the
//! other routes'.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use crate::fake_upstream::handlers::{
    error_response, invalid_request, json_response, message_reply, record, response,
};
use crate::fake_upstream::wire;
use crate::fake_upstream::{Behavior, Reply, Shared, lock};

/// How the fake's provider batches behave.
#[derive(Clone, Debug, Default)]
pub struct BatchBehavior {
    /// Retrieves a batch answers `in_progress` before it ends.
    pub polls_in_progress: usize,
    /// The custom ids whose results are `errored` (an `invalid_request_error`).
    pub errored_custom_ids: Vec<String>,
}

/// One provider batch the fake holds.
#[derive(Clone, Debug)]
pub(crate) struct FakeBatch {
    id: String,
    /// Each request's custom id and params, in the order given.
    requests: Vec<(String, Value)>,
    polls: usize,
    canceled: bool,
    ended: bool,
}

/// `POST /v1/messages/batches`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = received(&shared, &uri, &headers, &body);
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return invalid_request("Invalid request body: not JSON", &request_id);
    };
    let Some(items) = value["requests"].as_array().filter(|items| !items.is_empty()) else {
        return invalid_request("requests: Field required", &request_id);
    };
    let mut requests = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let (Some(custom_id), Some(params)) = (item["custom_id"].as_str(), item.get("params")) else {
            return invalid_request(
                &format!("requests.{index}: custom_id and params are required"),
                &request_id,
            );
        };
        if params["model"].as_str().is_none() || params["max_tokens"].as_u64().is_none() {
            return invalid_request(
                &format!("requests.{index}.params: model and max_tokens are required"),
                &request_id,
            );
        }
        requests.push((custom_id.to_owned(), params.clone()));
    }
    let batch = FakeBatch {
        id: format!("msgbatch_fake{:016x}", shared.next_id()),
        requests,
        polls: 0,
        canceled: false,
        ended: false,
    };
    let body = batch_json(&batch, "in_progress", &[]);
    lock(&shared.batches).push(batch);
    json_response(StatusCode::OK, Body::from(body.to_string()), &request_id)
}

/// `GET /v1/messages/batches/{id}`: one more poll.
pub(crate) async fn retrieve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = received(&shared, &uri, &headers, &Bytes::new());
    let behavior = lock(&shared.batch_behavior).clone();
    let mut batches = lock(&shared.batches);
    let Some(batch) = batches.iter_mut().find(|batch| batch.id == id) else {
        return error_response(404, &request_id);
    };
    batch.polls += 1;
    if batch.canceled || batch.polls > behavior.polls_in_progress {
        batch.ended = true;
    }
    let status = if batch.ended { "ended" } else { "in_progress" };
    let body = batch_json(batch, status, &behavior.errored_custom_ids);
    json_response(StatusCode::OK, Body::from(body.to_string()), &request_id)
}

/// `POST /v1/messages/batches/{id}/cancel`.
pub(crate) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = received(&shared, &uri, &headers, &body);
    let mut batches = lock(&shared.batches);
    let Some(batch) = batches.iter_mut().find(|batch| batch.id == id) else {
        return error_response(404, &request_id);
    };
    if !batch.ended {
        batch.canceled = true;
    }
    let status = if batch.ended { "ended" } else { "canceling" };
    let errored = lock(&shared.batch_behavior).errored_custom_ids.clone();
    let body = batch_json(batch, status, &errored);
    json_response(StatusCode::OK, Body::from(body.to_string()), &request_id)
}

/// `GET /v1/messages/batches/{id}/results`: JSON lines, once the batch ended.
pub(crate) async fn results(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request_id = received(&shared, &uri, &headers, &Bytes::new());
    let Some(batch) = lock(&shared.batches).iter().find(|batch| batch.id == id).cloned() else {
        return error_response(404, &request_id);
    };
    if !batch.ended {
        return invalid_request(&format!("Message Batch {id} has not yet ended."), &request_id);
    }
    let errored = lock(&shared.batch_behavior).errored_custom_ids.clone();
    let reply = match &*shared.default_reply() {
        Behavior::Ok(reply) => reply.clone(),
        _ => Reply::default(),
    };
    let mut lines = String::new();
    for (custom_id, params) in &batch.requests {
        let result = if batch.canceled {
            json!({"type": "canceled"})
        } else if errored.contains(custom_id) {
            let envelope = wire::error_envelope_with_message_json(
                "invalid_request_error",
                "The fake refused this request of the batch.",
                &request_id,
            );
            let mut error: Value = serde_json::from_slice(&envelope).unwrap_or(Value::Null);
            if let Some(error) = error.as_object_mut() {
                error.remove("request_id");
            }
            json!({"type": "errored", "error": error})
        } else {
            json!({"type": "succeeded", "message": message(&shared, &reply, params)})
        };
        lines.push_str(&json!({"custom_id": custom_id, "result": result}).to_string());
        lines.push('\n');
    }
    response(
        StatusCode::OK,
        "application/binary",
        &request_id,
        Body::from(lines),
    )
}

/// Records a call; the request id it is answered with.
fn received(shared: &Shared, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> String {
    record(shared, uri, headers, body);
    format!("req_fake{:016x}", shared.next_id())
}

/// The message `/v1/messages` would answer `params` with.
fn message(shared: &Shared, reply: &Reply, params: &Value) -> Value {
    let max_tokens = params["max_tokens"].as_u64().unwrap_or(u64::MAX);
    let message_id = format!("msg_fake{:016x}", shared.next_id());
    let model = params["model"].as_str().unwrap_or_default();
    let body = wire::message_json(&message_reply(reply, model, max_tokens, &message_id));
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// Anthropic's `message_batch` object.
/// `errored_custom_ids`: those whose results are `errored`, for the counts.
fn batch_json(batch: &FakeBatch, status: &str, errored_custom_ids: &[String]) -> Value {
    let requests = batch.requests.len();
    let ended = status == "ended";
    let errored = batch
        .requests
        .iter()
        .filter(|(custom_id, _)| errored_custom_ids.contains(custom_id))
        .count();
    let (processing, canceled, succeeded, errored) = match (ended, batch.canceled) {
        (false, _) => (requests, 0, 0, 0),
        (true, true) => (0, requests, 0, 0),
        (true, false) => (0, 0, requests - errored, errored),
    };
    json!({
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": processing,
            "succeeded": succeeded,
            "errored": errored,
            "canceled": canceled,
            "expired": 0,
        },
        "ended_at": ended.then_some("2026-01-01T00:10:00Z"),
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-02T00:00:00Z",
        "archived_at": null,
        "cancel_initiated_at": batch.canceled.then_some("2026-01-01T00:05:00Z"),
        "results_url": ended.then(|| format!("https://api.anthropic.com/v1/messages/batches/{}/results", batch.id)),
    })
}
