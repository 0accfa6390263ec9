//! Usage & Cost: token usage by model, workspace, key or Claude Code session over hourly
//! or daily buckets, the ledger's daily cost by model or workspace, the sessions that cost
//! most, and the usage as CSV. A session filter narrows every figure to one session. The
//! figures are the Admin API's reports (`OrgAdmin::usage_report`, `OrgAdmin::cost_report`);
//! this page only arranges them.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::{BucketWidth, ReportWindow};
use tollgate_service::{
    Access, ConsoleArea, CostFilters, CostGroupBy, OrgAdmin, ReportPage, UsageFilters, UsageGroupBy,
    UsageResult,
};

use crate::ConsoleState;
use crate::chart::{Series, stacked_bars};
use crate::error::PageError;
use crate::layout;
use crate::session::Signed;

/// What splits the charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grouping {
    Model,
    Workspace,
    Key,
    Session,
}

impl Grouping {
    fn parse(text: Option<&str>) -> Grouping {
        match text {
            Some("workspace") => Grouping::Workspace,
            Some("key") => Grouping::Key,
            Some("session") => Grouping::Session,
            _ => Grouping::Model,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Grouping::Model => "model",
            Grouping::Workspace => "workspace",
            Grouping::Key => "key",
            Grouping::Session => "session",
        }
    }
}

/// How many sessions the "Top sessions by cost" table lists.
const TOP_SESSIONS: usize = 20;

#[derive(Deserialize, Default)]
pub(crate) struct UsageQuery {
    /// "1h" or "1d".
    width: Option<String>,
    /// How many days back, today included.
    days: Option<i64>,
    group: Option<String>,
    /// A Claude Code session id: every figure is narrowed to it.
    session: Option<String>,
}

/// The window of the last `days` days (today included) in buckets of `width`.
fn window(now: Timestamp, width: BucketWidth, days: i64) -> Result<ReportWindow, PageError> {
    let today = BucketWidth::Day.snap(now);
    let end = today + chrono::Duration::days(1);
    let start = end - chrono::Duration::days(days);
    ReportWindow::new(width, start, end, 24 * 31).map_err(|error| PageError::Invalid(error.to_string()))
}

/// The organization's charged cost per day over the last `days` days, oldest first, from
/// the ledger's cost report.
pub(crate) async fn daily_cost(
    admin: &OrgAdmin,
    state: &ConsoleState,
    days: i64,
) -> Result<Vec<(Timestamp, NanoUsd)>, PageError> {
    let window = window(admin.tollgate().now(), BucketWidth::Day, days)?;
    let report = admin
        .cost_report(
            &state.catalog,
            &ReportPage {
                window,
                from: None,
                limit: 31,
            },
            CostGroupBy::default(),
            &CostFilters::default(),
        )
        .await?;
    Ok(report
        .buckets
        .iter()
        .map(|bucket| {
            let total = bucket
                .results
                .iter()
                .fold(NanoUsd::ZERO, |sum, result| sum.saturating_add(result.amount));
            (bucket.bucket.starting_at, total)
        })
        .collect())
}

fn cents(amount: i64) -> String {
    NanoUsd::from_nanos(amount).to_string()
}

fn tokens(count: i64) -> String {
    layout::count(u64::try_from(count).unwrap_or(0))
}

fn bucket_label(at: Timestamp, width: BucketWidth) -> String {
    match width {
        BucketWidth::Day => at.format("%m-%d").to_string(),
        _ => at.format("%d %H:00").to_string(),
    }
}

struct UsageTable {
    labels: Vec<String>,
    starts: Vec<Timestamp>,
    /// Per group: requests, tokens in, tokens out, per bucket.
    groups: BTreeMap<String, Vec<UsageResult>>,
    /// Per group, total tokens (input of every kind and output) per bucket.
    series: Vec<Series>,
}

async fn usage_table(
    admin: &OrgAdmin,
    width: BucketWidth,
    days: i64,
    grouping: Grouping,
    session: Option<&str>,
) -> Result<UsageTable, PageError> {
    let window = window(admin.tollgate().now(), width, days)?;
    let group_by = UsageGroupBy {
        api_key_id: grouping == Grouping::Key,
        workspace_id: grouping == Grouping::Workspace,
        model: grouping == Grouping::Model,
        session_id: grouping == Grouping::Session,
        ..UsageGroupBy::default()
    };
    let filters = UsageFilters {
        session_ids: session.map(str::to_owned).into_iter().collect(),
        ..UsageFilters::default()
    };
    let report = admin
        .usage_report(
            &ReportPage {
                window,
                from: None,
                limit: 24 * 31,
            },
            group_by,
            &filters,
        )
        .await?;
    let names = group_names(admin, grouping).await?;
    let bucket_count = report.buckets.len();
    let mut groups: BTreeMap<String, Vec<UsageResult>> = BTreeMap::new();
    let mut values: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (index, bucket) in report.buckets.iter().enumerate() {
        for result in &bucket.results {
            let key = match grouping {
                Grouping::Model => result.model.clone(),
                Grouping::Workspace => result.workspace_id.clone(),
                Grouping::Key => result.api_key_id.clone(),
                Grouping::Session => result.session_id.clone(),
            };
            let name = match key {
                Some(id) => names.get(&id).cloned().unwrap_or(id),
                None if grouping == Grouping::Workspace => "Default".to_owned(),
                None => "(none)".to_owned(),
            };
            let usage = &result.usage;
            let total = usage
                .input_tokens
                .saturating_add(usage.output_tokens)
                .saturating_add(usage.cache_creation_5m_input_tokens)
                .saturating_add(usage.cache_creation_1h_input_tokens)
                .saturating_add(usage.cache_read_input_tokens);
            let row = values
                .entry(name.clone())
                .or_insert_with(|| vec![0; bucket_count]);
            row[index] = row[index].saturating_add(i64::try_from(total).unwrap_or(i64::MAX));
            groups.entry(name).or_default().push(result.clone());
        }
    }
    Ok(UsageTable {
        labels: report
            .buckets
            .iter()
            .map(|bucket| bucket_label(bucket.bucket.starting_at, width))
            .collect(),
        starts: report
            .buckets
            .iter()
            .map(|bucket| bucket.bucket.starting_at)
            .collect(),
        groups,
        series: values
            .into_iter()
            .map(|(name, values)| Series { name, values })
            .collect(),
    })
}

/// Display names of workspaces and keys by id.
async fn group_names(admin: &OrgAdmin, grouping: Grouping) -> Result<BTreeMap<String, String>, PageError> {
    Ok(match grouping {
        Grouping::Model | Grouping::Session => BTreeMap::new(),
        Grouping::Workspace => admin
            .workspaces(true)
            .await?
            .into_iter()
            .map(|workspace| (workspace.id, workspace.name))
            .collect(),
        Grouping::Key => admin
            .api_keys(&Default::default())
            .await?
            .into_iter()
            .map(|key| {
                (
                    key.record.id,
                    format!("{} ({})", key.record.name, key.record.hint),
                )
            })
            .collect(),
    })
}

/// The sessions that cost most over the last `days` days, most first, with their cost.
async fn top_sessions(
    admin: &OrgAdmin,
    state: &ConsoleState,
    days: i64,
    session: Option<&str>,
) -> Result<Vec<(String, NanoUsd)>, PageError> {
    let report = admin
        .cost_report(
            &state.catalog,
            &ReportPage {
                window: window(admin.tollgate().now(), BucketWidth::Day, days)?,
                from: None,
                limit: 31,
            },
            CostGroupBy {
                session_id: true,
                ..CostGroupBy::default()
            },
            &CostFilters {
                session_ids: session.map(str::to_owned).into_iter().collect(),
            },
        )
        .await?;
    let mut by_session: BTreeMap<String, NanoUsd> = BTreeMap::new();
    for result in report.buckets.iter().flat_map(|bucket| &bucket.results) {
        // Requests sent without a session are not a session.
        let Some(session_id) = &result.session_id else {
            continue;
        };
        let total = by_session.entry(session_id.clone()).or_insert(NanoUsd::ZERO);
        *total = total.saturating_add(result.amount);
    }
    let mut sessions: Vec<(String, NanoUsd)> = by_session.into_iter().collect();
    sessions.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
    sessions.truncate(TOP_SESSIONS);
    Ok(sessions)
}

/// The session filter as given, trimmed; empty means none.
fn session_filter(query: &UsageQuery) -> Option<&str> {
    query
        .session
        .as_deref()
        .map(str::trim)
        .filter(|session| !session.is_empty())
}

fn parameters(query: &UsageQuery) -> (BucketWidth, i64, Grouping) {
    let width = match query.width.as_deref() {
        Some("1h") => BucketWidth::Hour,
        _ => BucketWidth::Day,
    };
    let days_max = if width == BucketWidth::Hour { 7 } else { 31 };
    let days = query
        .days
        .unwrap_or(if width == BucketWidth::Hour { 2 } else { 30 })
        .clamp(1, days_max);
    (width, days, Grouping::parse(query.group.as_deref()))
}

pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Query(query): Query<UsageQuery>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Usage, Access::View)?;
    let (width, days, grouping) = parameters(&query);
    let session = session_filter(&query);
    let table = usage_table(admin, width, days, grouping, session).await?;
    let cost_by_workspace = grouping == Grouping::Workspace;
    let cost = admin
        .cost_report(
            &state.catalog,
            &ReportPage {
                window: window(admin.tollgate().now(), BucketWidth::Day, days.min(31))?,
                from: None,
                limit: 31,
            },
            CostGroupBy {
                workspace_id: cost_by_workspace,
                description: !cost_by_workspace,
                ..CostGroupBy::default()
            },
            &CostFilters {
                session_ids: session.map(str::to_owned).into_iter().collect(),
            },
        )
        .await?;
    // Reading sessions means reading every record of the window: only when asked for.
    let sessions = if grouping == Grouping::Session || session.is_some() {
        Some(top_sessions(admin, &state, days.min(31), session).await?)
    } else {
        None
    };
    let workspace_names = group_names(admin, Grouping::Workspace).await?;
    let mut cost_values: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let cost_buckets = cost.buckets.len();
    let mut cost_total = NanoUsd::ZERO;
    for (index, bucket) in cost.buckets.iter().enumerate() {
        for result in &bucket.results {
            let name = if cost_by_workspace {
                match &result.workspace_id {
                    Some(id) => workspace_names.get(id).cloned().unwrap_or_else(|| id.clone()),
                    None => "Default".to_owned(),
                }
            } else {
                result
                    .description
                    .as_ref()
                    .map_or_else(|| "(other)".to_owned(), |description| description.model.clone())
            };
            cost_total = cost_total.saturating_add(result.amount);
            let row = cost_values.entry(name).or_insert_with(|| vec![0; cost_buckets]);
            row[index] = row[index].saturating_add(result.amount.nanos());
        }
    }
    let cost_labels: Vec<String> = cost
        .buckets
        .iter()
        .map(|bucket| bucket_label(bucket.bucket.starting_at, BucketWidth::Day))
        .collect();
    let cost_series: Vec<Series> = cost_values
        .into_iter()
        .map(|(name, values)| Series { name, values })
        .collect();
    let width_text = if width == BucketWidth::Hour { "1h" } else { "1d" };
    let mut csv_link = format!(
        "/console/usage.csv?width={width_text}&days={days}&group={}",
        grouping.as_str()
    );
    if let Some(session) = session {
        csv_link.push_str(&format!("&session={}", query_text(session)));
    }
    let content = html! {
        form.filters method="get" action="/console/usage" {
            label for="group" { "Group by" }
            select id="group" name="group" {
                @for (value, label) in [("model", "Model"), ("workspace", "Workspace"), ("key", "API key"), ("session", "Claude Code session")] {
                    option value=(value) selected[value == grouping.as_str()] { (label) }
                }
            }
            label for="width" { "Buckets" }
            select id="width" name="width" {
                option value="1d" selected[width == BucketWidth::Day] { "Daily" }
                option value="1h" selected[width == BucketWidth::Hour] { "Hourly" }
            }
            label for="days" { "Days" }
            input id="days" name="days" type="number" min="1" max="31" value=(days);
            label for="session" { "Session" }
            input id="session" name="session" type="search" maxlength="128"
                placeholder="Claude Code session id" value=(session.unwrap_or_default());
            button type="submit" { "Show" }
            a.button href=(csv_link) download { "Download CSV" }
        }
        @if let Some(session) = session {
            p { "Cost of session " code { (session) } " over the window: " strong id="session-cost" { (cost_total) } }
        } @else {
            p { "Cost over the window: " strong id="cost-total" { (cost_total) } }
        }
        @if let Some(sessions) = &sessions {
            h2 { "Top sessions by cost" }
            div.scroll {
                table id="top-sessions" {
                    thead { tr { th scope="col" { "Session" } th scope="col" { "Cost" } } }
                    tbody {
                        @for (session_id, amount) in sessions {
                            tr {
                                th scope="row" {
                                    a href=(format!("/console/usage?width={width_text}&days={days}&session={}", query_text(session_id))) { (session_id) }
                                }
                                td { (amount) }
                            }
                        }
                        @if sessions.is_empty() {
                            tr { td colspan="2" { "No Claude Code sessions in this window." } }
                        }
                    }
                }
            }
        }
        (stacked_bars(
            &format!("Cost per day by {}", if cost_by_workspace { "workspace" } else { "model" }),
            &cost_labels,
            &cost_series,
            &cents,
        ))
        (stacked_bars(
            &format!("Tokens per {} by {}", if width == BucketWidth::Hour { "hour" } else { "day" }, grouping.as_str()),
            &table.labels,
            &table.series,
            &tokens,
        ))
        h2 { "Totals by " (grouping.as_str()) }
        div.scroll {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Requests" } th scope="col" { "Input tokens" } th scope="col" { "Output tokens" } th scope="col" { "Cache read" } } }
                tbody {
                    @for (name, results) in &table.groups {
                        tr {
                            th scope="row" { (name) }
                            td { (layout::count(results.iter().map(|result| result.requests).sum())) }
                            td { (layout::count(results.iter().map(|result| result.usage.input_tokens).sum())) }
                            td { (layout::count(results.iter().map(|result| result.usage.output_tokens).sum())) }
                            td { (layout::count(results.iter().map(|result| result.usage.cache_read_input_tokens).sum())) }
                        }
                    }
                    @if table.groups.is_empty() {
                        tr { td colspan="5" { "No usage in this window." } }
                    }
                }
            }
        }
        p.hint { "Window starts " (table.starts.first().map(|at| layout::instant(*at)).unwrap_or_default()) "." }
    };
    Ok(Html(
        layout::page(&user, "/console/usage", "Usage & cost", content).into_string(),
    ))
}

pub(crate) async fn csv(
    Signed(user): Signed,
    Query(query): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Usage, Access::View)?;
    let (width, days, grouping) = parameters(&query);
    let table = usage_table(admin, width, days, grouping, session_filter(&query)).await?;
    let mut text = format!(
        "{},requests,input_tokens,output_tokens,cache_creation_input_tokens,cache_read_input_tokens\n",
        grouping.as_str()
    );
    for (name, results) in &table.groups {
        let usage = results.iter().fold(
            (0_u64, 0_u64, 0_u64, 0_u64, 0_u64),
            |(requests, input, output, creation, read), result| {
                (
                    requests + result.requests,
                    input + result.usage.input_tokens,
                    output + result.usage.output_tokens,
                    creation
                        + result.usage.cache_creation_5m_input_tokens
                        + result.usage.cache_creation_1h_input_tokens,
                    read + result.usage.cache_read_input_tokens,
                )
            },
        );
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        text.push_str(&format!(
            "{quoted},{},{},{},{},{}\n",
            usage.0, usage.1, usage.2, usage.3, usage.4
        ));
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"usage.csv\""),
    );
    Ok(response)
}

/// A value made safe for a URL's query: unreserved characters (RFC 3986) pass, every
/// other byte is percent-encoded.
fn query_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
