//! Claude Code's `/login` against this gateway, as Claude Code's gateway protocol has it:
//! the OAuth device authorization grant. The client reads
//! `/.well-known/oauth-authorization-server`, asks `/oauth/device_authorization` for a grant
//! (an empty form: no client id, no scope), opens the browser on `/console/device` with the
//! user code, and polls `/oauth/token`; refreshes go to `/oauth/token` too. The person signs
//! in to the Console (single sign-on, or a password where allowed), sees the code, picks a
//! workspace and approves; the code is never approved without that press. After sign-in the
//! client reads `/managed/settings`, which has no policy to push (204). The decisions are
//! `tollgate_service::device_login`'s; this is the HTTP.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::html;
use serde::Deserialize;
use serde_json::json;
use tollgate_service::{DeviceTokenError, DeviceTokens, normalize_user_code};

use crate::ConsoleState;
use crate::auth::ClientAddress;
use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::{Signed, signed_in};
use crate::sso::own_origin;

/// The protocol endpoints, at the root of the server.
pub(crate) fn protocol_routes(state: ConsoleState) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/device_authorization", post(device_authorization))
        .route("/oauth/token", post(token))
        .route("/managed/settings", get(managed_settings))
        .with_state(state)
}

/// OAuth answers are never cached (RFC 6749 5.1).
fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(status, json!({"error": error, "error_description": description}))
}

/// The authorization server metadata (RFC 8414) Claude Code reads first.
async fn metadata(headers: HeaderMap) -> Response {
    let Ok(base) = own_origin(&headers) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request names no host",
        );
    };
    Json(json!({
        "issuer": base,
        "device_authorization_endpoint": format!("{base}/oauth/device_authorization"),
        "token_endpoint": format!("{base}/oauth/token"),
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": [],
        "gateway_protocol_version": 1,
    }))
    .into_response()
}

async fn device_authorization(
    State(state): State<ConsoleState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Response {
    let Ok(base) = own_origin(&headers) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request names no host",
        );
    };
    match state.tollgate.start_device_login(&client).await {
        // RFC 8628 has `slow_down` for this; Claude Code waits and tries again.
        Ok(None) => {
            let mut response = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                "too many sign-ins started from this address: wait a few minutes",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Ok(Some(grant)) => {
            let verification_uri = format!("{base}/console/device");
            no_store(
                StatusCode::OK,
                json!({
                    "device_code": grant.device_code.expose_secret(),
                    "user_code": grant.user_code,
                    "verification_uri": verification_uri,
                    "verification_uri_complete": format!("{verification_uri}?user_code={}", grant.user_code),
                    "expires_in": grant.expires_in,
                    "interval": grant.interval,
                }),
            )
        }
        Err(error) => {
            tracing::error!(%error, "could not start a device sign-in");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the sign-in could not start: try again",
            )
        }
    }
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    device_code: Option<String>,
    refresh_token: Option<String>,
}

async fn token(State(state): State<ConsoleState>, Form(form): Form<TokenForm>) -> Response {
    let outcome = match (form.grant_type.as_deref(), form.device_code, form.refresh_token) {
        (Some("urn:ietf:params:oauth:grant-type:device_code"), Some(device_code), _) => {
            state.tollgate.poll_device_login(&device_code).await
        }
        (Some("refresh_token"), _, Some(refresh_token)) => {
            state.tollgate.refresh_device_login(&refresh_token).await
        }
        (Some("urn:ietf:params:oauth:grant-type:device_code" | "refresh_token"), _, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the grant's code or token is missing",
            );
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the device_code and refresh_token grants are supported",
            );
        }
    };
    match outcome {
        Ok(DeviceTokens {
            access_token,
            refresh_token,
            expires_in,
        }) => no_store(
            StatusCode::OK,
            json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "refresh_token": refresh_token.expose_secret(),
            }),
        ),
        Err(error @ DeviceTokenError::SlowDown) => {
            oauth_error(StatusCode::BAD_REQUEST, error.code(), "poll less often")
        }
        Err(error @ DeviceTokenError::AuthorizationPending) => oauth_error(
            StatusCode::BAD_REQUEST,
            error.code(),
            "waiting for the sign-in in the browser",
        ),
        Err(error @ DeviceTokenError::ExpiredToken) => oauth_error(
            StatusCode::BAD_REQUEST,
            error.code(),
            "the sign-in expired or was used already: run /login again",
        ),
        Err(error @ DeviceTokenError::InvalidGrant) => oauth_error(
            StatusCode::UNAUTHORIZED,
            error.code(),
            "the session ended: run /login again",
        ),
        Err(error @ DeviceTokenError::Service(_)) => {
            tracing::error!(%error, "a device sign-in's token request failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                error.code(),
                "the sign-in could not be completed: try again",
            )
        }
    }
}

/// The settings the gateway pushes to signed-in clients: none (204), to a valid key.
async fn managed_settings(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let presented = tollgate_edge::presented_key(&headers);
    match state
        .tollgate
        .authenticate_api_key(presented.map(|(key, _)| key))
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => {
            let credential =
                presented.map_or(tollgate_edge::Credential::Bearer, |(_, credential)| credential);
            let problem = tollgate_edge::refused(refusal, credential, "this key cannot read settings");
            let request_id = tollgate_edge::new_request_id();
            let body = tollgate_edge::envelope(problem.kind, &problem.message, None, &request_id);
            let mut response = tollgate_edge::json_response(problem.status, body.to_string());
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert("request-id", value);
            }
            // A refused key is not let in by trying again: the client stops and says so.
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
            response
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct DeviceQuery {
    user_code: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ApproveForm {
    user_code: String,
    workspace_id: String,
}

/// The browser's page: the code to approve (filled in from the link, never approved without
/// the press) and the workspace the client will bill to.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<DeviceQuery>,
) -> Result<Response, PageError> {
    let user_code = query
        .user_code
        .as_deref()
        .map(normalize_user_code)
        .unwrap_or_default();
    let Some(user) = signed_in(&headers, &state).await? else {
        let here = format!(
            "/console/device?{}",
            serde_urlencoded::to_string([("user_code", user_code.as_str())]).unwrap_or_default()
        );
        let to = format!(
            "/console/sign-in?{}",
            serde_urlencoded::to_string([("next", here.as_str())]).unwrap_or_default()
        );
        return Ok(Redirect::to(&to).into_response());
    };
    let workspaces = state.tollgate.device_login_workspaces(&user).await?;
    let unknown_code = !user_code.is_empty() && !state.tollgate.device_login_pending(&user_code).await?;
    let content = html! {
        p { "Claude Code is asking to sign in as " strong { (user.user.email) } ". Approve only a code your own terminal shows." }
        @if unknown_code {
            p.problem role="alert" { "That code is unknown, used already or expired: run /login again in your terminal." }
        }
        form.card method="post" action="/console/device" {
            (csrf(&user))
            label for="user_code" { "Code shown in your terminal" }
            input id="user_code" name="user_code" type="text" autocomplete="off" required value=(user_code);
            label for="workspace_id" { "Workspace to use (and bill)" }
            select id="workspace_id" name="workspace_id" {
                @for workspace in &workspaces {
                    option value=(workspace.id) { (workspace.name) }
                }
            }
            button #approve type="submit" { "Connect Claude Code" }
        }
    };
    Ok(
        Html(layout::page(&user, "/console/device", "Connect Claude Code", content).into_string())
            .into_response(),
    )
}

pub(crate) async fn approve(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Form(form): Form<ApproveForm>,
) -> Result<Response, PageError> {
    state
        .tollgate
        .approve_device_login(&user, &form.user_code, &form.workspace_id)
        .await?;
    let content = html! {
        p #connected { "Claude Code is connected. Return to your terminal." }
    };
    Ok(
        Html(layout::page(&user, "/console/device", "Connect Claude Code", content).into_string())
            .into_response(),
    )
}
