//! The usage report (`/usage_report/messages`) and the cost report (`/cost_report`) in
//! Anthropic's shapes, paged by buckets with `page`/`next_page`, and the same reports as
//! CSV (`format=csv`: the whole window on one sheet). Parsing and validation of the window,
//! the grouping and the filters happen here; the sums are the service's.
//!
//! Beyond Anthropic's dimensions, both reports group by the client session
//! (`group_by[]=session_id`, Claude Code's `x-claude-code-session-id`) and filter by it
//! (`session_ids[]=…`); a result carries `session_id` only when grouped by it. Grouped by
//! `account_id` (or `service_account_id`, the same grouping), a result names the user whose
//! personal key was used, or the service account whose key was (per-account attribution;
//! the CSV sheets do not carry it yet).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use tollgate_core::Timestamp;
use tollgate_core::reports::{BucketWidth, ContextWindow, ReportWindow};
use tollgate_service::{
    CostFilters, CostGroupBy, CostResult, OrgAdmin, Report, ReportPage, STANDARD_SERVICE_TIER, UsageFilters,
    UsageGroupBy, UsageResult,
};
use utoipa::ToSchema;

use crate::AdminState;
use crate::csv;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, QueryPairs};

/// The most sessions one report may be filtered by.
const MAX_SESSION_FILTERS: usize = 100;

/// A window may hold at most this many pages' worth of buckets (a CSV export reads the
/// whole window at once).
const MAX_PAGES_PER_WINDOW: usize = 12;

const SERVICE_TIERS: [&str; 6] = [
    "standard",
    "batch",
    "priority",
    "priority_on_demand",
    "flex",
    "flex_discount",
];

fn seconds(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `page_` and the base64 of the next bucket's start, as Anthropic's tokens look.
pub fn page_token(next: Timestamp) -> String {
    format!(
        "page_{}",
        base64::engine::general_purpose::STANDARD.encode(seconds(next))
    )
}

fn parse_page_token(token: &str) -> Result<Timestamp, ApiError> {
    let invalid = || ApiError::invalid(format!("page: '{token}' is not a page token of this report"));
    let encoded = token.strip_prefix("page_").ok_or_else(invalid)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|instant| instant.with_timezone(&chrono::Utc))
        .map_err(|_| invalid())
}

/// The window and page a report query asks for.
#[derive(Debug)]
pub(crate) struct ReportRequest {
    pub(crate) page: ReportPage,
    pub(crate) csv: bool,
}

/// Reads `starting_at`, `ending_at`, `bucket_width`, `limit`, `page` and `format`.
pub(crate) fn report_request(
    query: &QueryPairs,
    allowed_widths: &[BucketWidth],
    now: Timestamp,
) -> Result<ReportRequest, ApiError> {
    let width = match query.one("bucket_width")? {
        None => BucketWidth::Day,
        Some(text) => BucketWidth::parse(text)
            .filter(|width| allowed_widths.contains(width))
            .ok_or_else(|| {
                let allowed: Vec<&str> = allowed_widths.iter().map(|width| width.as_str()).collect();
                ApiError::invalid(format!(
                    "bucket_width: '{text}' is not one of {}",
                    allowed.join(", ")
                ))
            })?,
    };
    let limit = match query.one("limit")? {
        None => width.default_limit(),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=width.max_limit()).contains(&limit) => limit,
            _ => {
                return Err(ApiError::invalid(format!(
                    "limit: at most {} buckets of {} per page",
                    width.max_limit(),
                    width.as_str()
                )));
            }
        },
    };
    let starting_at = query
        .timestamp("starting_at")?
        .ok_or_else(|| ApiError::invalid("starting_at: this field is required"))?;
    let ending_at = match query.timestamp("ending_at")? {
        Some(ending_at) => ending_at,
        // Up to now, but never fewer than one bucket.
        None => now.max(starting_at + width.duration()),
    };
    let window = ReportWindow::new(
        width,
        starting_at,
        ending_at,
        width.max_limit() * MAX_PAGES_PER_WINDOW,
    )
    .map_err(|error| ApiError::invalid(error.to_string()))?;
    let csv = match query.one("format")? {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::invalid(format!("format: '{other}' is not json or csv"))),
    };
    let from = query.one("page")?.map(parse_page_token).transpose()?;
    if let Some(from) = from
        && window.page(Some(from), 1).0.is_empty()
    {
        return Err(ApiError::invalid(
            "page: the token does not belong to this window",
        ));
    }
    let limit = if csv { window.bucket_count() } else { limit };
    Ok(ReportRequest {
        page: ReportPage { window, from, limit },
        csv,
    })
}

pub(crate) fn usage_group_by(query: &QueryPairs) -> Result<UsageGroupBy, ApiError> {
    let mut group_by = UsageGroupBy::default();
    for name in query.all("group_by") {
        match name {
            "api_key_id" => group_by.api_key_id = true,
            "workspace_id" => group_by.workspace_id = true,
            "model" => group_by.model = true,
            "service_tier" => group_by.service_tier = true,
            "context_window" => group_by.context_window = true,
            "session_id" => group_by.session_id = true,
            "account_id" | "service_account_id" => group_by.user_id = true,
            other => {
                return Err(ApiError::invalid(format!(
                    "group_by: '{other}' is not one of api_key_id, workspace_id, model, service_tier, \
                     context_window, session_id, account_id, service_account_id"
                )));
            }
        }
    }
    Ok(group_by)
}

pub(crate) fn usage_filters(query: &QueryPairs) -> Result<UsageFilters, ApiError> {
    let strings = |name: &str| {
        query
            .all(name)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    let service_tiers = strings("service_tiers");
    if let Some(unknown) = service_tiers
        .iter()
        .find(|tier| !SERVICE_TIERS.contains(&tier.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "service_tiers: '{unknown}' is not a service tier"
        )));
    }
    let context_windows = query
        .all("context_window")
        .into_iter()
        .map(|text| {
            ContextWindow::parse(text).ok_or_else(|| {
                ApiError::invalid(format!("context_window: '{text}' is not 0-200k or 200k-1M"))
            })
        })
        .collect::<Result<Vec<ContextWindow>, ApiError>>()?;
    Ok(UsageFilters {
        api_key_ids: strings("api_key_ids"),
        workspace_ids: strings("workspace_ids"),
        models: strings("models"),
        service_tiers,
        context_windows,
        session_ids: session_ids(query)?,
    })
}

/// `session_ids[]`: sessions as recorded (a value is compared as sent; one that could not
/// have been recorded matches nothing).
fn session_ids(query: &QueryPairs) -> Result<Vec<String>, ApiError> {
    let session_ids: Vec<String> = query.all("session_ids").into_iter().map(str::to_owned).collect();
    if session_ids.len() > MAX_SESSION_FILTERS {
        return Err(ApiError::invalid(format!(
            "session_ids: at most {MAX_SESSION_FILTERS} sessions per report"
        )));
    }
    Ok(session_ids)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CacheCreationDto {
    pub ephemeral_1h_input_tokens: u64,
    pub ephemeral_5m_input_tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerToolUseDto {
    /// Tollgate runs no server tools: always 0.
    pub web_search_requests: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResultDto {
    pub uncached_input_tokens: u64,
    pub cache_creation: CacheCreationDto,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
    pub server_tool_use: ServerToolUseDto,
    /// `null` unless grouped by API key.
    pub api_key_id: Option<String>,
    /// `null` unless grouped by workspace, and for the Default workspace.
    pub workspace_id: Option<String>,
    pub model: Option<String>,
    pub service_tier: Option<&'static str>,
    pub context_window: Option<&'static str>,
    /// Claude Code's session id; only present when grouped by `session_id` (and absent for
    /// requests sent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Not tracked by tollgate: always `null`.
    pub inference_geo: Option<String>,
    /// When grouped by `account_id`: the user whose personal key was used (`null` for
    /// other keys); `null` otherwise.
    pub account_id: Option<String>,
    /// When grouped by `account_id` (or `service_account_id`): the service account whose
    /// key was used (`null` for other keys); `null` otherwise.
    pub service_account_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketDto<T> {
    pub starting_at: String,
    pub ending_at: String,
    pub results: Vec<T>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportDto<T> {
    pub data: Vec<BucketDto<T>>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CostResultDto {
    /// In US cents, as a decimal string ("123.78912" is $1.2378912).
    pub amount: String,
    /// Always `USD`.
    pub currency: &'static str,
    pub workspace_id: Option<String>,
    /// The user whose personal key was used; only present when grouped by `account_id`
    /// (and absent for workspace keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The service account whose key was used; only present when grouped by `account_id`
    /// (or `service_account_id`) and absent for other keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_id: Option<String>,
    /// Claude Code's session id; only present when grouped by `session_id` (and absent for
    /// requests sent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `null` unless grouped by description.
    pub description: Option<String>,
    /// `tokens` or `web_search` when grouped by description.
    pub cost_type: Option<&'static str>,
    pub model: Option<String>,
    /// `null` unless grouped by description, and for what today's prices don't explain.
    pub token_type: Option<&'static str>,
    pub context_window: Option<&'static str>,
    pub service_tier: Option<&'static str>,
    /// Not tracked by tollgate: always `null`.
    pub inference_geo: Option<String>,
}

fn report_dto<T, D>(report: &Report<T>, convert: impl Fn(&T) -> D) -> ReportDto<D> {
    ReportDto {
        data: report
            .buckets
            .iter()
            .map(|bucket| BucketDto {
                starting_at: seconds(bucket.bucket.starting_at),
                ending_at: seconds(bucket.bucket.ending_at),
                results: bucket.results.iter().map(&convert).collect(),
            })
            .collect(),
        has_more: report.next_page.is_some(),
        next_page: report.next_page.map(page_token),
    }
}

/// The usage report as the API writes it.
pub fn usage_report_dto(report: &Report<UsageResult>) -> ReportDto<UsageResultDto> {
    report_dto(report, |result| UsageResultDto {
        uncached_input_tokens: result.usage.input_tokens,
        cache_creation: CacheCreationDto {
            ephemeral_1h_input_tokens: result.usage.cache_creation_1h_input_tokens,
            ephemeral_5m_input_tokens: result.usage.cache_creation_5m_input_tokens,
        },
        cache_read_input_tokens: result.usage.cache_read_input_tokens,
        output_tokens: result.usage.output_tokens,
        server_tool_use: ServerToolUseDto {
            web_search_requests: result.usage.web_search_requests,
        },
        api_key_id: result.api_key_id.clone(),
        workspace_id: result.workspace_id.clone(),
        model: result.model.clone(),
        service_tier: result.service_tier,
        context_window: result.context_window.map(ContextWindow::as_str),
        session_id: result.session_id.clone(),
        inference_geo: None,
        account_id: result.user_id.clone(),
        service_account_id: result.service_account_id.clone(),
    })
}

/// The cost report as the API writes it.
pub fn cost_report_dto(report: &Report<CostResult>) -> ReportDto<CostResultDto> {
    report_dto(report, |result| {
        let description = result.description.as_ref();
        CostResultDto {
            amount: result.amount.to_cents_decimal(),
            currency: "USD",
            workspace_id: result.workspace_id.clone(),
            account_id: result.user_id.clone(),
            service_account_id: result.service_account_id.clone(),
            session_id: result.session_id.clone(),
            description: description.map(|found| found.description.clone()),
            cost_type: description.map(|found| found.cost_type.as_str()),
            model: description.map(|found| found.model.clone()),
            token_type: description.and_then(|found| found.token_type.map(|token_type| token_type.as_str())),
            context_window: description.map(|found| found.context_window.as_str()),
            service_tier: description.map(|_| STANDARD_SERVICE_TIER),
            inference_geo: None,
        }
    })
}

fn csv_response(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response
}

async fn run_usage(
    admin: &OrgAdmin,
    query: &QueryPairs,
) -> Result<(ReportRequest, Report<UsageResult>), ApiError> {
    let request = report_request(
        query,
        &[BucketWidth::Minute, BucketWidth::Hour, BucketWidth::Day],
        admin.tollgate().now(),
    )?;
    let group_by = usage_group_by(query)?;
    let filters = usage_filters(query)?;
    let report = admin.usage_report(&request.page, group_by, &filters).await?;
    Ok((request, report))
}

/// Token usage of the Messages API by bucket (1m, 1h or 1d), grouped and filtered. With
/// `format=csv`, the whole window as CSV.
#[utoipa::path(get, path = "/v1/organizations/usage_report/messages", tag = "Reports",
    params(("starting_at" = String, Query), ("ending_at" = Option<String>, Query),
           ("bucket_width" = Option<String>, Query, description = "1m, 1h or 1d (default)"),
           ("limit" = Option<u32>, Query), ("page" = Option<String>, Query),
           ("group_by[]" = Option<Vec<String>>, Query,
            description = "api_key_id, workspace_id, model, service_tier, context_window, session_id, account_id (the user of a personal key or the service account of its key; also service_account_id)"),
           ("api_key_ids[]" = Option<Vec<String>>, Query), ("workspace_ids[]" = Option<Vec<String>>, Query),
           ("models[]" = Option<Vec<String>>, Query), ("service_tiers[]" = Option<Vec<String>>, Query),
           ("context_window[]" = Option<Vec<String>>, Query),
           ("session_ids[]" = Option<Vec<String>>, Query, description = "Claude Code session ids"),
           ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, body = ReportDto<UsageResultDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn usage_report(Admin(admin): Admin, query: QueryPairs) -> Result<Response, ApiError> {
    let (request, report) = run_usage(&admin, &query).await?;
    if request.csv {
        return Ok(csv_response(csv::usage_csv(&report)));
    }
    Ok(Json(usage_report_dto(&report)).into_response())
}

/// Daily cost in cents from the ledger's charges, grouped by workspace and/or description
/// (model and token type). Over any window it adds up to the settled charges exactly. With
/// `format=csv`, the whole window as CSV.
#[utoipa::path(get, path = "/v1/organizations/cost_report", tag = "Reports",
    params(("starting_at" = String, Query), ("ending_at" = Option<String>, Query),
           ("bucket_width" = Option<String>, Query, description = "1d only"),
           ("limit" = Option<u32>, Query), ("page" = Option<String>, Query),
           ("group_by[]" = Option<Vec<String>>, Query, description = "workspace_id, description, session_id, account_id (the user of a personal key or the service account of its key; also service_account_id)"),
           ("session_ids[]" = Option<Vec<String>>, Query, description = "Claude Code session ids"),
           ("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, body = ReportDto<CostResultDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn cost_report(
    State(state): State<AdminState>,
    Admin(admin): Admin,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let request = report_request(&query, &[BucketWidth::Day], admin.tollgate().now())?;
    let mut group_by = CostGroupBy::default();
    for name in query.all("group_by") {
        match name {
            "workspace_id" => group_by.workspace_id = true,
            "description" => group_by.description = true,
            "session_id" => group_by.session_id = true,
            "account_id" | "service_account_id" => group_by.user_id = true,
            other => {
                return Err(ApiError::invalid(format!(
                    "group_by: '{other}' is not one of workspace_id, description, session_id, account_id, \
                     service_account_id"
                )));
            }
        }
    }
    let filters = CostFilters {
        session_ids: session_ids(&query)?,
    };
    let report = admin
        .cost_report(&state.catalog, &request.page, group_by, &filters)
        .await?;
    if request.csv {
        return Ok(csv_response(csv::cost_csv(&report)));
    }
    Ok(Json(cost_report_dto(&report)).into_response())
}
