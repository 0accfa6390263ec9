//! Requests: the request log, newest first — each request's time, model, key, status,
//! tokens by kind, cost, latency and error — narrowed by model, status, request id or
//! Claude Code session, a page at a time. The records are the Admin API's request log
//! (`OrgAdmin::request_log`); this page only lays them out. Seen by whoever may see usage.

use axum::extract::{Query, State};
use axum::response::Html;
use maud::html;
use serde::Deserialize;
use tollgate_service::{Access, ConsoleArea, RequestLogCursor, RequestLogQuery};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout;
use crate::session::Signed;

/// Rows a page shows.
const PAGE_ROWS: usize = 50;

#[derive(Deserialize, Default)]
pub(crate) struct RequestsQuery {
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

pub(crate) async fn page(
    State(_state): State<ConsoleState>,
    Signed(user): Signed,
    Query(query): Query<RequestsQuery>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Usage, Access::View)?;
    let log_query = RequestLogQuery {
        model: filter(&query.model),
        status: filter(&query.status),
        request_id: filter(&query.request_id),
        session_id: filter(&query.session),
        after: filter(&query.after).as_deref().map(parse_after).transpose()?,
        limit: PAGE_ROWS,
        ..RequestLogQuery::default()
    };
    let page = admin.request_log(&log_query).await?;
    let next = page.has_more.then(|| page.entries.last()).flatten().map(|entry| {
        let mut next = vec![(
            "after",
            format!("{}.{}", entry.cursor.ended_at_millis, entry.cursor.row),
        )];
        for (name, value) in [
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
                    th { "Ended" } th { "Request id" } th { "Model" } th { "Key" } th { "Status" }
                    th { "Input" } th { "Cache write" } th { "Cache read" } th { "Output" }
                    th { "Cost" } th { "Latency" } th { "Session" }
                } }
                tbody {
                    @for entry in &page.entries {
                        @let record = &entry.record;
                        tr {
                            td { (layout::instant(record.ended_at)) }
                            td { code { (record.request_id) } }
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
    };
    Ok(Html(
        layout::page(&user, "/console/requests", "Requests", content).into_string(),
    ))
}
