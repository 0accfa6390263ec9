//! Usage and cost reports as CSV, one row per bucket and group, for spreadsheets. Shared by
//! the API (`format=csv`) and the command line (`tollgate reports … --csv`), so both
//! export the same columns.

use tollgate_core::Timestamp;
use tollgate_core::reports::ContextWindow;
use tollgate_service::{CostResult, Report, UsageResult};

fn seconds(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Quotes a field when it holds a comma, a quote or a line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn optional(text: Option<&str>) -> String {
    text.map(field).unwrap_or_default()
}

pub const USAGE_HEADER: &str = "starting_at,ending_at,workspace_id,session_id,api_key_id,model,service_tier,\
context_window,uncached_input_tokens,cache_creation_5m_input_tokens,cache_creation_1h_input_tokens,\
cache_read_input_tokens,output_tokens";

pub const COST_HEADER: &str = "starting_at,ending_at,workspace_id,session_id,description,model,token_type,\
context_window,currency,amount_cents";

/// Every bucket's results; an empty bucket has no rows.
pub fn usage_csv(report: &Report<UsageResult>) -> String {
    let mut out = format!("{USAGE_HEADER}\n");
    for bucket in &report.buckets {
        for result in &bucket.results {
            let usage = &result.usage;
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                seconds(bucket.bucket.starting_at),
                seconds(bucket.bucket.ending_at),
                optional(result.workspace_id.as_deref()),
                optional(result.session_id.as_deref()),
                optional(result.api_key_id.as_deref()),
                optional(result.model.as_deref()),
                optional(result.service_tier),
                optional(result.context_window.map(ContextWindow::as_str)),
                usage.input_tokens,
                usage.cache_creation_5m_input_tokens,
                usage.cache_creation_1h_input_tokens,
                usage.cache_read_input_tokens,
                usage.output_tokens,
            ));
        }
    }
    out
}

/// Every bucket's cost items, amounts in cents as exact decimals.
pub fn cost_csv(report: &Report<CostResult>) -> String {
    let mut out = format!("{COST_HEADER}\n");
    for bucket in &report.buckets {
        for result in &bucket.results {
            let description = result.description.as_ref();
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},USD,{}\n",
                seconds(bucket.bucket.starting_at),
                seconds(bucket.bucket.ending_at),
                optional(result.workspace_id.as_deref()),
                optional(result.session_id.as_deref()),
                optional(description.map(|found| found.description.as_str())),
                optional(description.map(|found| found.model.as_str())),
                optional(
                    description.and_then(|found| found.token_type.map(|token_type| token_type.as_str()))
                ),
                optional(description.map(|found| found.context_window.as_str())),
                result.amount.to_cents_decimal(),
            ));
        }
    }
    out
}
