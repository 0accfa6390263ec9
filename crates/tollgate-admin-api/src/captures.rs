//! Body capture (issue #17), off by default: a workspace's capture settings
//! (`/v1/organizations/workspaces/{workspace_id}/capture`, `default` naming the Default
//! workspace) and a captured request's bodies (`/v1/organizations/requests/{request_id}/body`).
//! Bodies are shown as they were written: already redacted and cut to the cap, and only
//! within the organization of the admin key. Our addition; Anthropic's Admin API has none.

use axum::Json;
use axum::extract::Path;
use serde::{Deserialize, Serialize};
use tollgate_service::capture::DEFAULT_WORKSPACE;
use tollgate_service::{CaptureSettings, OrgAdmin, RequestCapture};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, Body, instant};

/// Days a capture is kept when the settings do not say.
const RETENTION_DAYS_DEFAULT: u32 = 30;
/// Bytes of each body kept when the settings do not say.
const BODY_BYTES_MAX_DEFAULT: u64 = 64 * 1024;

/// A workspace's capture settings.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CaptureSettingsDto {
    /// Always `capture_settings`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `null` for the Default workspace.
    workspace_id: Option<String>,
    enabled: bool,
    /// Days a capture is kept; `null` when off.
    retention_days: Option<u32>,
    /// Bytes of each body kept; a larger body is cut and marked truncated. `null` when off.
    body_bytes_max: Option<u64>,
    /// JSON paths replaced by `"[redacted]"` before anything is written.
    redact_paths: Vec<String>,
}

/// Turns capture on (with its settings) or off.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SetCaptureSettings {
    enabled: bool,
    /// 1 to 3650; default 30.
    retention_days: Option<u32>,
    /// At least 1; default 65536.
    body_bytes_max: Option<u64>,
    /// Keys joined by `.`, each optionally followed by `[*]` (every element) or `[N]`:
    /// `system`, `messages[*].content`, `metadata.user_id`. At most 64.
    #[serde(default)]
    redact_paths: Vec<String>,
}

async fn settings_dto(admin: &OrgAdmin, workspace_id: &str) -> Result<CaptureSettingsDto, ApiError> {
    let settings = admin.capture_settings(workspace_id).await?;
    Ok(CaptureSettingsDto {
        kind: "capture_settings",
        workspace_id: (workspace_id != DEFAULT_WORKSPACE).then(|| workspace_id.to_owned()),
        enabled: settings.is_some(),
        retention_days: settings.as_ref().map(|settings| settings.retention_days),
        body_bytes_max: settings.as_ref().map(|settings| settings.body_bytes_max),
        redact_paths: settings.map(|settings| settings.redact_paths).unwrap_or_default(),
    })
}

/// A workspace's capture settings (`default`: the Default workspace's).
#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/capture", tag = "Request log",
    params(("workspace_id" = String, Path, description = "a workspace id, or `default`")),
    responses((status = 200, body = CaptureSettingsDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_capture(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
) -> Result<Json<CaptureSettingsDto>, ApiError> {
    Ok(Json(settings_dto(&admin, &workspace_id).await?))
}

/// Turns a workspace's body capture on or off (audited). Turning it off keeps what was
/// captured until its retention ends; changing the retention applies to what is kept.
#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/capture", tag = "Request log",
    params(("workspace_id" = String, Path, description = "a workspace id, or `default`")),
    request_body = SetCaptureSettings,
    responses((status = 200, body = CaptureSettingsDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn set_capture(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    Body(body): Body<SetCaptureSettings>,
) -> Result<Json<CaptureSettingsDto>, ApiError> {
    let settings = body.enabled.then(|| CaptureSettings {
        retention_days: body.retention_days.unwrap_or(RETENTION_DAYS_DEFAULT),
        body_bytes_max: body.body_bytes_max.unwrap_or(BODY_BYTES_MAX_DEFAULT),
        redact_paths: body.redact_paths,
    });
    admin.set_capture_settings(&workspace_id, settings).await?;
    Ok(Json(settings_dto(&admin, &workspace_id).await?))
}

/// One captured body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CapturedBodyDto {
    /// The body as written: redacted, and cut at the cap when `truncated`.
    body: String,
    /// Its size as received or delivered, in bytes.
    bytes: u64,
    truncated: bool,
}

/// A captured request's bodies.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RequestCaptureDto {
    /// Always `request_capture`.
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: String,
    /// `null` for the Default workspace.
    workspace_id: Option<String>,
    captured_at: String,
    expires_at: String,
    request: CapturedBodyDto,
    /// `json` (a reply or error envelope) or `event_stream` (the SSE text as delivered).
    response_kind: &'static str,
    response: CapturedBodyDto,
}

fn capture_dto(capture: RequestCapture, default_workspace: &str) -> RequestCaptureDto {
    RequestCaptureDto {
        kind: "request_capture",
        workspace_id: (capture.workspace_id != default_workspace).then_some(capture.workspace_id),
        request_id: capture.request_id,
        captured_at: instant(capture.captured_at),
        expires_at: instant(capture.expires_at),
        request: CapturedBodyDto {
            body: capture.request_body,
            bytes: capture.request_bytes,
            truncated: capture.request_truncated,
        },
        response_kind: capture.response_kind.as_str(),
        response: CapturedBodyDto {
            body: capture.response_body,
            bytes: capture.response_bytes,
            truncated: capture.response_truncated,
        },
    }
}

/// The bodies captured for a request of the organization; 404 when none are kept (its
/// workspace did not capture, they expired, or the request is another organization's).
#[utoipa::path(get, path = "/v1/organizations/requests/{request_id}/body", tag = "Request log",
    params(("request_id" = String, Path, description = "the `request-id` the response carried")),
    responses((status = 200, body = RequestCaptureDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn request_body(
    Admin(admin): Admin,
    Path(request_id): Path<String>,
) -> Result<Json<RequestCaptureDto>, ApiError> {
    let capture = admin.request_capture(&request_id).await?;
    let default_workspace = admin.default_workspace_id().await?;
    Ok(Json(capture_dto(capture, &default_workspace)))
}
