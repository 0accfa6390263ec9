//! A request's detail page (`/console/requests/{request_id}`): its record as the request
//! log shows it, and — to organization admins only — the bodies its workspace captured;
//! and the capture settings form of a workspace (`default` naming the Default workspace).
//! Bodies are shown as stored: already redacted and cut. Reading a capture goes through
//! `OrgAdmin`, so another organization's request is not found.

use axum::Form;
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_core::catalog::served_by;
use tollgate_service::capture::DEFAULT_WORKSPACE;
use tollgate_service::{Access, CaptureSettings, ConsoleArea, ConsoleUser, RequestLogQuery};

use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

/// Who may see captured bodies and change capture: an organization admin (the role that
/// changes workspaces).
fn may_capture(user: &ConsoleUser) -> bool {
    user.may(ConsoleArea::Workspaces, Access::Change)
}

pub(crate) async fn request_detail(
    Signed(user): Signed,
    Path(request_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Usage, Access::View)?;
    let page = admin
        .request_log(&RequestLogQuery {
            request_id: Some(request_id.clone()),
            limit: 1,
            ..RequestLogQuery::default()
        })
        .await?;
    let record = page
        .entries
        .into_iter()
        .next()
        .map(|entry| entry.record)
        .ok_or_else(|| PageError::NotFound(format!("no request '{request_id}' is in the log")))?;
    let capture = if may_capture(&user) {
        match admin.request_capture(&request_id).await {
            Ok(capture) => Some(capture),
            Err(tollgate_service::ServiceError::NotFound(_)) => None,
            Err(error) => return Err(error.into()),
        }
    } else {
        None
    };
    let usage = &record.usage;
    let content = html! {
        table #request {
            tbody {
                tr { th { "Request id" } td { code { (record.request_id) } } }
                tr { th { "Started" } td { (layout::instant(record.started_at)) } }
                tr { th { "Ended" } td { (layout::instant(record.ended_at)) } }
                tr { th { "Workspace" } td { code { (record.workspace_id) } } }
                tr { th { "Key" } td { (record.api_key_id.as_deref().unwrap_or("—")) } }
                tr { th { "Model" } td { (record.model) @if let Some(served) = &record.served_model { " (served by " (served) ")" } } }
                tr { th { "Status" } td { (record.status.as_str()) @if let Some(error) = &record.error_type { " (" (error) ")" } } }
                tr { th { "Upstream deployment" } td #deployment { (served_by(&record.upstream_attempts).unwrap_or("—")) } }
                tr { th { "Failed attempts" } td #attempts {
                    @let failed: Vec<_> = record.upstream_attempts.iter().filter(|attempt| attempt.error.is_some()).collect();
                    (failed.len())
                    @if !failed.is_empty() {
                        ol {
                            @for attempt in failed {
                                li { code { (attempt.deployment) } ": " (attempt.error.as_deref().unwrap_or_default()) }
                            }
                        }
                    }
                } }
                tr { th { "Input tokens" } td.number { (layout::count(usage.input_tokens)) } }
                tr { th { "Cache write tokens (5 min / 1 h)" } td.number {
                    (layout::count(usage.cache_creation_5m_input_tokens)) " / " (layout::count(usage.cache_creation_1h_input_tokens))
                } }
                tr { th { "Cache read tokens" } td.number { (layout::count(usage.cache_read_input_tokens)) } }
                tr { th { "Output tokens" } td.number { (layout::count(usage.output_tokens)) } }
                tr { th { "Cost" } td.number { (record.cost) } }
                tr { th { "Latency" } td.number { (record.latency_ms) " ms" } }
                tr { th { "Session" } td { (record.attribution.session_id.as_ref().map(|label| label.as_str()).unwrap_or("—")) } }
            }
        }
        @if may_capture(&user) {
            @match &capture {
                Some(capture) => {
                    section.card #capture {
                        h2 { "Request body" }
                        p.hint {
                            (capture.request_bytes) " bytes as received"
                            @if capture.request_truncated { "; truncated at the workspace's size cap" }
                            "; kept until " (layout::instant(capture.expires_at))
                        }
                        pre #request-body { (capture.request_body) }
                        h2 { "Response body (" (capture.response_kind.as_str()) ")" }
                        p.hint {
                            (capture.response_bytes) " bytes as delivered"
                            @if capture.response_truncated { "; truncated at the workspace's size cap" }
                        }
                        pre #response-body { (capture.response_body) }
                    }
                }
                None => { p.hint { "No bodies are kept for this request (its workspace did not capture them, or they expired)." } }
            }
        }
        p { a href="/console/requests" { "Back to the request log" } }
    };
    Ok(Html(
        layout::page(&user, "/console/requests", "Request", content).into_string(),
    ))
}

/// The capture settings form of a workspace, for an admin; nothing for anyone else.
pub(crate) fn settings_form(
    user: &ConsoleUser,
    workspace_id: &str,
    settings: Option<&CaptureSettings>,
) -> Markup {
    if !may_capture(user) {
        return html! {};
    }
    html! {
        section.card #capture-settings {
            h2 { "Body capture" }
            p.hint {
                "Off by default. When on, each request's body as received and its response as delivered "
                "are kept for the retention period, cut at the size cap, with the listed JSON paths "
                "(one a line, e.g. messages[*].content) replaced by \"[redacted]\" before they are written."
            }
            form method="post" action=(format!("/console/workspaces/{workspace_id}/capture")) {
                (csrf(user))
                label { input type="checkbox" name="enabled" value="on" checked[settings.is_some()]; " Capture bodies" }
                label for="retention-days" { "Retention (days)" }
                input id="retention-days" name="retention_days" type="number" min="1" max="3650"
                    value=(settings.map_or(30, |settings| settings.retention_days));
                label for="body-bytes-max" { "Size cap per body (bytes)" }
                input id="body-bytes-max" name="body_bytes_max" type="number" min="1"
                    value=(settings.map_or(65_536, |settings| settings.body_bytes_max));
                label for="redact-paths" { "JSON paths to redact" }
                textarea id="redact-paths" name="redact_paths" rows="4" {
                    (settings.map(|settings| settings.redact_paths.join("\n")).unwrap_or_default())
                }
                button type="submit" { "Save" }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CaptureForm {
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    retention_days: String,
    #[serde(default)]
    body_bytes_max: String,
    #[serde(default)]
    redact_paths: String,
}

pub(crate) async fn set_settings(
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
    Form(form): Form<CaptureForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    let number = |label: &str, text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| PageError::Invalid(format!("{label} must be a whole number")))
    };
    let settings = match form.enabled {
        Some(_) => Some(CaptureSettings {
            retention_days: u32::try_from(number("retention", &form.retention_days)?)
                .map_err(|_| PageError::Invalid("retention is too long".into()))?,
            body_bytes_max: number("size cap", &form.body_bytes_max)?,
            redact_paths: form
                .redact_paths
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect(),
        }),
        None => None,
    };
    admin.set_capture_settings(&workspace_id, settings).await?;
    let back = if workspace_id == DEFAULT_WORKSPACE {
        "/console/requests".to_owned()
    } else {
        format!("/console/workspaces/{workspace_id}")
    };
    Ok(Redirect::to(&back).into_response())
}
