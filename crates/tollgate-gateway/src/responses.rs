//! `POST /v1/responses`, `GET` and `DELETE /v1/responses/{response_id}`: OpenAI's Responses
//! API on the same keys, limits and credit as the other surfaces. A request is translated to
//! Chat Completions (`translate::responses`) and served as one (`chat::serve_chat`), so it
//! is routed, reserved, metered and settled exactly as a chat completion; its reply takes
//! the Responses shape on the way out. A response made with `store` (the default) is kept
//! for its workspace (`Tollgate::keep_response`, bounded retention) once its charge is
//! written, so that `previous_response_id` continues it; errors take OpenAI's envelope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tollgate_service::{ApiCaller, Tollgate};

use crate::GatewayState;
use crate::chat::{ChatRequest, json_object, receive, serve_chat};
use crate::error::{ApiError, ErrorKind};
use crate::messages::authenticate;
use crate::metered::ClientWire;
use crate::translate::responses::{ResponseFrame, responses_to_chat};

/// A Responses request on its way through the metered call.
#[derive(Debug)]
pub(crate) struct ResponsesCall {
    pub(crate) frame: ResponseFrame,
    /// Where and what to keep once the response is complete; `None` when `store` is false.
    pub(crate) kept: Option<KeptConversation>,
}

/// The conversation a stored response answered, and whose it is.
#[derive(Debug)]
pub(crate) struct KeptConversation {
    pub(crate) caller: ApiCaller,
    /// Earlier turns' items, then this request's input.
    pub(crate) input_items: Vec<Value>,
}

impl ResponsesCall {
    /// Keeps a finished response. A response that could not be kept was still served and
    /// charged: the failure is logged, and a later `previous_response_id` finds nothing.
    pub(crate) async fn keep(&self, tollgate: &Tollgate, response: &Value) {
        let Some(kept) = &self.kept else {
            return;
        };
        let input_items = Value::Array(kept.input_items.clone()).to_string();
        if let Err(error) = tollgate
            .keep_response(&kept.caller, &self.frame.id, input_items, response.to_string())
            .await
        {
            tracing::error!(%error, response_id = self.frame.id, "could not keep a stored response");
        }
    }
}

/// OpenAI's 404 for a response id the workspace does not have.
fn response_not_found(response_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
        format!("Response with id '{response_id}' not found."),
    )
    .with_openai(StatusCode::NOT_FOUND, "invalid_request_error", None)
}

/// OpenAI's 400 for a `previous_response_id` that names nothing the workspace kept.
fn previous_response_not_found(response_id: &str) -> ApiError {
    ApiError::invalid(format!("Previous response with id '{response_id}' not found."))
        .with_param("previous_response_id")
        .with_openai(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("previous_response_not_found"),
        )
}

/// The conversation so far, for a request that continues `previous_response_id`: what the
/// previous response answered, then what it said.
async fn history(
    state: &GatewayState,
    caller: &ApiCaller,
    previous_response_id: &str,
) -> Result<Vec<Value>, ApiError> {
    let stored = state
        .tollgate
        .stored_response(caller, previous_response_id)
        .await
        .map_err(|error| match error {
            tollgate_service::ServiceError::NotFound(_) => previous_response_not_found(previous_response_id),
            other => ApiError::from(other),
        })?;
    let mut items: Vec<Value> = serde_json::from_str(&stored.input_items).map_err(ApiError::internal)?;
    let response: Value = serde_json::from_str(&stored.response).map_err(ApiError::internal)?;
    items.extend(response["output"].as_array().cloned().unwrap_or_default());
    Ok(items)
}

pub(crate) async fn create_response(
    State(state): State<GatewayState>,
    request: Request,
) -> Result<Response, ApiError> {
    let mut received = receive(&state, request).await?;
    let body = json_object(&received.bytes)?;
    let (request_id, caller) = (received.request_id.clone(), received.caller.clone());
    let history = match body.get("previous_response_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(previous)) => history(&state, &caller, previous).await?,
        Some(_) => {
            return Err(
                ApiError::invalid("previous_response_id must be a string").with_param("previous_response_id")
            );
        }
    };
    let (chat, input) = responses_to_chat(&body, &history)?;
    let chat_bytes = Bytes::from(Value::Object(chat).to_string());
    let parsed = ChatRequest::parse(&chat_bytes)?;
    let response_id = format!("resp_{}", request_id.strip_prefix("req_").unwrap_or(&request_id));
    let frame = ResponseFrame::new(response_id, state.tollgate.now().timestamp(), &body);
    let kept = (body.get("store") != Some(&Value::Bool(false))).then(|| {
        let mut input_items = history;
        input_items.extend(input);
        KeptConversation {
            caller: caller.clone(),
            input_items,
        }
    });
    let client = ClientWire::Responses(Arc::new(ResponsesCall { frame, kept }));
    received.bytes = chat_bytes;
    serve_chat(&state, received, parsed, client).await
}

pub(crate) async fn retrieve_response(
    State(state): State<GatewayState>,
    Path(response_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    let stored = state
        .tollgate
        .stored_response(&caller, &response_id)
        .await
        .map_err(|error| match error {
            tollgate_service::ServiceError::NotFound(_) => response_not_found(&response_id),
            other => ApiError::from(other),
        })?;
    let response: Map<String, Value> = serde_json::from_str(&stored.response).map_err(ApiError::internal)?;
    Ok(Json(response).into_response())
}

pub(crate) async fn delete_response(
    State(state): State<GatewayState>,
    Path(response_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    state
        .tollgate
        .delete_stored_response(&caller, &response_id)
        .await
        .map_err(|error| match error {
            tollgate_service::ServiceError::NotFound(_) => response_not_found(&response_id),
            other => ApiError::from(other),
        })?;
    Ok(Json(json!({"id": response_id, "object": "response", "deleted": true})).into_response())
}
