//! The request log (`GET /v1/organizations/requests`): every request's usage record —
//! tokens by kind, cost, latency, status and error, its key, workspace and client session,
//! the upstream deployment that answered and every call it made (failovers included) —
//! searched by time (`starting_at`, `ending_at`, by when it ended), `workspace_id`,
//! `api_key_id`, `model`, `status`, `request_id` and `session_id`, newest first, `limit` at
//! a time (at most 1,000), `after_id` (a page's `last_id`) for the next, older page. The
//! record the ledger wrote, so a disputed charge is looked up by the `request-id` its
//! response carried. Our addition; Anthropic's Admin API has no request log.

use axum::Json;
use base64::Engine;
use serde::Serialize;
use tollgate_core::catalog::served_by;
use tollgate_core::usage::TokenUsage;
use tollgate_service::{REQUEST_LOG_PAGE_MAX, RequestLogCursor, RequestLogEntry, RequestLogQuery};
use utoipa::ToSchema;

use crate::dto::cents;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, QueryPairs, instant};
use crate::pagination::Page;

const DEFAULT_LIMIT: usize = 20;

/// Tokens of one request by kind, as the usage report names them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RequestUsageDto {
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cache_creation: CacheCreationDto,
    pub(crate) cache_read_input_tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CacheCreationDto {
    pub(crate) ephemeral_5m_input_tokens: u64,
    pub(crate) ephemeral_1h_input_tokens: u64,
}

/// One request of the log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RequestLogEntryDto {
    /// The entry's place in the log: a cursor for `after_id`.
    pub(crate) id: String,
    /// Always `request_log_entry`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// The `request-id` the response carried.
    pub(crate) request_id: String,
    pub(crate) started_at: String,
    pub(crate) ended_at: String,
    /// `null` for the Default workspace, as everywhere in the Admin API.
    pub(crate) workspace_id: Option<String>,
    pub(crate) api_key_id: Option<String>,
    pub(crate) model: String,
    /// `succeeded`, `failed`, `refused`, `client_disconnected` or `abandoned`.
    pub(crate) status: String,
    pub(crate) error_type: Option<String>,
    pub(crate) latency_ms: u64,
    pub(crate) usage: RequestUsageDto,
    /// What the ledger charged, in US cents.
    pub(crate) cost: String,
    pub(crate) session_id: Option<String>,
    pub(crate) agent_id: Option<String>,
    pub(crate) parent_agent_id: Option<String>,
    /// The deployment that answered (`provider/upstream model`); `null` if none did (or
    /// none was called).
    pub(crate) upstream_deployment: Option<String>,
    /// How many upstream calls failed; each but the last moved the request on to the
    /// next deployment.
    pub(crate) failed_attempts_count: usize,
    /// Every upstream call, in order, with how it failed (`null` for the one that
    /// answered).
    pub(crate) upstream_attempts: Vec<UpstreamAttemptDto>,
}

/// One upstream call of a request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UpstreamAttemptDto {
    /// `provider/upstream model`.
    pub(crate) deployment: String,
    /// How it failed (`overloaded (529)`, `timeout`, …); `null`: it answered.
    pub(crate) error: Option<String>,
}

fn usage_dto(usage: &TokenUsage) -> RequestUsageDto {
    RequestUsageDto {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_creation: CacheCreationDto {
            ephemeral_5m_input_tokens: usage.cache_creation_5m_input_tokens,
            ephemeral_1h_input_tokens: usage.cache_creation_1h_input_tokens,
        },
        cache_read_input_tokens: usage.cache_read_input_tokens,
    }
}

fn entry_dto(entry: &RequestLogEntry, default_workspace: &str) -> RequestLogEntryDto {
    let record = &entry.record;
    let label = |label: &Option<tollgate_core::attribution::ClientLabel>| {
        label.as_ref().map(|label| label.as_str().to_owned())
    };
    RequestLogEntryDto {
        id: cursor_id(entry.cursor),
        kind: "request_log_entry",
        request_id: record.request_id.clone(),
        started_at: instant(record.started_at),
        ended_at: instant(record.ended_at),
        workspace_id: (record.workspace_id != default_workspace).then(|| record.workspace_id.clone()),
        api_key_id: record.api_key_id.clone(),
        model: record.model.clone(),
        status: record.status.as_str().to_owned(),
        error_type: record.error_type.clone(),
        latency_ms: record.latency_ms,
        usage: usage_dto(&record.usage),
        cost: cents(record.cost),
        session_id: label(&record.attribution.session_id),
        agent_id: label(&record.attribution.agent_id),
        parent_agent_id: label(&record.attribution.parent_agent_id),
        upstream_deployment: served_by(&record.upstream_attempts).map(str::to_owned),
        failed_attempts_count: record
            .upstream_attempts
            .iter()
            .filter(|attempt| attempt.error.is_some())
            .count(),
        upstream_attempts: record
            .upstream_attempts
            .iter()
            .map(|attempt| UpstreamAttemptDto {
                deployment: attempt.deployment.clone(),
                error: attempt.error.clone(),
            })
            .collect(),
    }
}

/// `rqlog_` and the base64 of "ended_at_millis.row".
fn cursor_id(cursor: RequestLogCursor) -> String {
    let text = format!("{}.{}", cursor.ended_at_millis, cursor.row);
    format!(
        "rqlog_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    )
}

fn parse_cursor(id: &str) -> Result<RequestLogCursor, ApiError> {
    let invalid = || ApiError::invalid(format!("after_id: '{id}' is not an id of this log"));
    let encoded = id.strip_prefix("rqlog_").ok_or_else(invalid)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (ended, row) = text.split_once('.').ok_or_else(invalid)?;
    Ok(RequestLogCursor {
        ended_at_millis: ended.parse().map_err(|_| invalid())?,
        row: row.parse().map_err(|_| invalid())?,
    })
}

const STATUSES: [&str; 5] = [
    "succeeded",
    "failed",
    "refused",
    "client_disconnected",
    "abandoned",
];

fn log_query(query: &QueryPairs) -> Result<RequestLogQuery, ApiError> {
    let text = |name: &str| query.one(name).map(|value| value.map(str::to_owned));
    let limit = match query.one("limit")? {
        None => DEFAULT_LIMIT,
        Some(value) => match value.parse::<usize>() {
            Ok(limit) if (1..=REQUEST_LOG_PAGE_MAX).contains(&limit) => limit,
            _ => {
                return Err(ApiError::invalid(format!(
                    "limit: '{value}' must be a whole number from 1 to {REQUEST_LOG_PAGE_MAX}"
                )));
            }
        },
    };
    let status = text("status")?;
    if let Some(status) = &status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::invalid(format!(
            "status: '{status}' is not one of {}",
            STATUSES.join(", ")
        )));
    }
    let (from, to) = (query.timestamp("starting_at")?, query.timestamp("ending_at")?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::invalid("ending_at must be after starting_at"));
    }
    Ok(RequestLogQuery {
        from,
        to,
        workspace_id: text("workspace_id")?,
        api_key_id: text("api_key_id")?,
        model: text("model")?,
        status,
        request_id: text("request_id")?,
        session_id: text("session_id")?,
        after: query.one("after_id")?.map(parse_cursor).transpose()?,
        limit,
    })
}

/// The request log, newest first: each request's tokens by kind, cost, latency, status,
/// error, key, workspace and client session.
#[utoipa::path(get, path = "/v1/organizations/requests", tag = "Request log",
    params(
        ("starting_at" = Option<String>, Query, description = "RFC 3339; requests that ended at or after it"),
        ("ending_at" = Option<String>, Query, description = "RFC 3339; requests that ended before it"),
        ("workspace_id" = Option<String>, Query), ("api_key_id" = Option<String>, Query),
        ("model" = Option<String>, Query), ("status" = Option<String>, Query),
        ("request_id" = Option<String>, Query), ("session_id" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 20"),
        ("after_id" = Option<String>, Query, description = "a page's last_id: the next, older page"),
    ),
    responses((status = 200, body = Page<RequestLogEntryDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn requests(
    Admin(admin): Admin,
    query: QueryPairs,
) -> Result<Json<Page<RequestLogEntryDto>>, ApiError> {
    let log_query = log_query(&query)?;
    let page = admin.request_log(&log_query).await?;
    let default_workspace = admin.default_workspace_id().await?;
    let data: Vec<RequestLogEntryDto> = page
        .entries
        .iter()
        .map(|entry| entry_dto(entry, &default_workspace))
        .collect();
    Ok(Json(Page {
        first_id: data.first().map(|entry| entry.id.clone()),
        last_id: data.last().map(|entry| entry.id.clone()),
        has_more: page.has_more,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_a_foreign_one_is_refused() {
        let cursor = RequestLogCursor {
            ended_at_millis: 1_764_000_000_123,
            row: 42,
        };
        assert_eq!(parse_cursor(&cursor_id(cursor)).expect("reads back"), cursor);
        for foreign in ["rqlog_", "rqlog_!!", "page_MTIz", "rqlog_MTIz"] {
            assert!(parse_cursor(foreign).is_err(), "{foreign}");
        }
    }
}
