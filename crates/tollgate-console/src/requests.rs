//! Requests: the request log, newest first — each request's time, workspace, model, key,
//! status, tokens by kind, cost, latency and error — narrowed by time (days, UTC),
//! workspace, key, model, status, request id or Claude Code session, a page at a time; each
//! request id opens its detail page (`capture.rs`), with its captured bodies for admins. The records are the Admin API's request log
//! (`OrgAdmin::request_log`); this page only lays them out. Seen by whoever may see usage.

use axum::extract::{Query, State};
use axum::response::Html;
use maud::html;
use serde::Deserialize;
use tollgate_service::capture::DEFAULT_WORKSPACE;
use tollgate_service::{Access, ConsoleArea, RequestLogCursor, RequestLogQuery};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout;
use crate::session::Signed;

/// Rows a page shows.
const PAGE_ROWS: usize = 50;

#[derive(Deserialize, Default)]
pub(crate) struct RequestsQuery {
    /// First day (UTC), `YYYY-MM-DD`, included.
    from: Option<String>,
    /// Last day (UTC), `YYYY-MM-DD`, included.
    to: Option<String>,
    workspace: Option<String>,
    key: Option<String>,
    model: Option<String>,
    status: Option<String>,
    request_id: Option<String>,
    session: Option<String>,
    /// The last row of the previous page: "ended_at_millis.row".
    after: Option<String>,
}

/// A filter field: blank is no filter.
fn filter(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

fn parse_after(text: &str) -> Result<RequestLogCursor, PageError> {
    let invalid = || PageError::Invalid(format!("'{text}' is not a position in the request log"));
    let (ended, row) = text.split_once('.').ok_or_else(invalid)?;
    Ok(RequestLogCursor {
        ended_at_millis: ended.parse().map_err(|_| invalid())?,
        row: row.parse().map_err(|_| invalid())?,
    })
}

/// The start of a day given as `YYYY-MM-DD` (UTC), `days` days later.
fn day_start(text: &str, days: i64) -> Result<tollgate_core::Timestamp, PageError> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| PageError::Invalid(format!("'{text}' is not a day (YYYY-MM-DD)")))?;
    Ok((date + chrono::Duration::days(days))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc())
}

pub(crate) async fn page(
    State(_state): State<ConsoleState>,
    Signed(user): Signed,
    Query(query): Query<RequestsQuery>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Usage, Access::View)?;
    let log_query = RequestLogQuery {
        from: filter(&query.from)
            .as_deref()
            .map(|day| day_start(day, 0))
            .transpose()?,
        to: filter(&query.to)
            .as_deref()
            .map(|day| day_start(day, 1))
            .transpose()?,
        workspace_id: filter(&query.workspace),
        api_key_id: filter(&query.key),
        model: filter(&query.model),
        status: filter(&query.status),
        request_id: filter(&query.request_id),
        session_id: filter(&query.session),
        after: filter(&query.after).as_deref().map(parse_after).transpose()?,
        limit: PAGE_ROWS,
    };
    let page = admin.request_log(&log_query).await?;
    // The Default workspace has no page of its own: its capture is set here.
    let default_capture = if user.may(ConsoleArea::Workspaces, Access::Change) {
        admin.capture_settings(DEFAULT_WORKSPACE).await?
    } else {
        None
    };
    let next = page.has_more.then(|| page.entries.last()).flatten().map(|entry| {
        let mut next = vec![(
            "after",
            format!("{}.{}", entry.cursor.ended_at_millis, entry.cursor.row),
        )];
        for (name, value) in [
            ("from", &filter(&query.from)),
            ("to", &filter(&query.to)),
            ("workspace", &log_query.workspace_id),
            ("key", &log_query.api_key_id),
            ("model", &log_query.model),
            ("status", &log_query.status),
            ("request_id", &log_query.request_id),
            ("session", &log_query.session_id),
        ] {
            if let Some(value) = value {
                next.push((name, value.clone()));
            }
        }
        serde_urlencoded::to_string(next).unwrap_or_default()
    });
    let value = |field: &Option<String>| field.clone().unwrap_or_default();
    let content = html! {
        form.filters method="get" action="/console/requests" {
            label { "From " input type="date" name="from" value=(value(&filter(&query.from))); }
            label { "To " input type="date" name="to" value=(value(&filter(&query.to))); }
            label { "Workspace " input type="text" name="workspace" value=(value(&log_query.workspace_id)); }
            label { "Key " input type="text" name="key" value=(value(&log_query.api_key_id)); }
            label { "Model " input type="text" name="model" value=(value(&log_query.model)); }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for status in ["succeeded", "failed", "refused", "client_disconnected", "abandoned"] {
                        option value=(status) selected[log_query.status.as_deref() == Some(status)] { (status) }
                    }
                }
            }
            label { "Request id " input type="text" name="request_id" value=(value(&log_query.request_id)); }
            label { "Session " input type="text" name="session" value=(value(&log_query.session_id)); }
            button type="submit" { "Search" }
        }
        @if page.entries.is_empty() {
            p { "No requests match." }
        } @else {
            table #requests {
                thead { tr {
                    th { "Ended" } th { "Request id" } th { "Workspace" } th { "Model" } th { "Key" } th { "Status" }
                    th { "Input" } th { "Cache write" } th { "Cache read" } th { "Output" }
                    th { "Cost" } th { "Latency" } th { "Session" }
                } }
                tbody {
                    @for entry in &page.entries {
                        @let record = &entry.record;
                        tr {
                            td { (layout::instant(record.ended_at)) }
                            td { a href={ "/console/requests/" (record.request_id) } { code { (record.request_id) } } }
                            td { code { (record.workspace_id) } }
                            td { (record.model) }
                            td { (record.api_key_id.as_deref().unwrap_or("—")) }
                            td {
                                (record.status.as_str())
                                @if let Some(error) = &record.error_type { " (" (error) ")" }
                            }
                            td.number { (layout::count(record.usage.input_tokens)) }
                            td.number { (layout::count(record.usage.cache_creation_5m_input_tokens.saturating_add(record.usage.cache_creation_1h_input_tokens))) }
                            td.number { (layout::count(record.usage.cache_read_input_tokens)) }
                            td.number { (layout::count(record.usage.output_tokens)) }
                            td.number { (record.cost) }
                            td.number { (record.latency_ms) " ms" }
                            td { (record.attribution.session_id.as_ref().map(|label| label.as_str()).unwrap_or("—")) }
                        }
                    }
                }
            }
            @if let Some(next) = &next {
                p { a href={ "/console/requests?" (next) } { "Older requests" } }
            }
        }
        (crate::capture::settings_form(&user, DEFAULT_WORKSPACE, default_capture.as_ref()))
    };
    Ok(Html(
        layout::page(&user, "/console/requests", "Requests", content).into_string(),
    ))
}
