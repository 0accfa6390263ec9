//! `tollgate reports usage|cost`: the Admin API's usage and cost reports for a window, as
//! its JSON or as CSV, read from the same service use cases and rendered by the same code
//! as the API's `format=csv`.

use anyhow::Context;
use tollgate_core::Timestamp;
use tollgate_core::catalog::Catalog;
use tollgate_core::reports::{BucketWidth, ReportWindow};
use tollgate_service::{CostFilters, CostGroupBy, ReportPage, Tollgate, UsageFilters, UsageGroupBy};

use crate::ReportsCommand;
use crate::cli::{CLI_ACTOR, print_json};

/// Windows longer than this many buckets are refused on the command line too.
const MAX_BUCKETS: usize = 100_000;

fn instant(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
        });
    parsed.with_context(|| format!("{flag} must be a date (2026-03-01) or an RFC 3339 instant"))
}

fn page(from: &str, to: &str, width: BucketWidth) -> anyhow::Result<ReportPage> {
    let window = ReportWindow::new(width, instant("--from", from)?, instant("--to", to)?, MAX_BUCKETS)
        .context("the report window is not valid")?;
    Ok(ReportPage {
        window,
        from: None,
        limit: window.bucket_count(),
    })
}

pub(crate) async fn run(
    tollgate: &Tollgate,
    catalog: &Catalog,
    command: ReportsCommand,
) -> anyhow::Result<()> {
    match command {
        ReportsCommand::Usage {
            org,
            from,
            to,
            bucket_width,
            group_by,
            csv,
        } => {
            let organization = tollgate.organization_named(&org).await?;
            let admin = tollgate.operator_of(&organization, CLI_ACTOR);
            let width = BucketWidth::parse(&bucket_width).context("--bucket-width is 1m, 1h or 1d")?;
            let mut grouping = UsageGroupBy::default();
            for name in &group_by {
                match name.as_str() {
                    "api_key_id" => grouping.api_key_id = true,
                    "workspace_id" => grouping.workspace_id = true,
                    "model" => grouping.model = true,
                    "service_tier" => grouping.service_tier = true,
                    "context_window" => grouping.context_window = true,
                    other => anyhow::bail!(
                        "--group-by '{other}' is not one of api_key_id, workspace_id, model, service_tier, context_window"
                    ),
                }
            }
            let report = admin
                .usage_report(&page(&from, &to, width)?, grouping, &UsageFilters::default())
                .await?;
            if csv {
                print!("{}", tollgate_admin_api::csv::usage_csv(&report));
                return Ok(());
            }
            print_json(&serde_json::to_value(tollgate_admin_api::usage_report_dto(
                &report,
            ))?)
        }
        ReportsCommand::Cost {
            org,
            from,
            to,
            group_by,
            csv,
        } => {
            let organization = tollgate.organization_named(&org).await?;
            let admin = tollgate.operator_of(&organization, CLI_ACTOR);
            let mut grouping = CostGroupBy::default();
            for name in &group_by {
                match name.as_str() {
                    "workspace_id" => grouping.workspace_id = true,
                    "description" => grouping.description = true,
                    other => anyhow::bail!("--group-by '{other}' is not one of workspace_id, description"),
                }
            }
            let report = admin
                .cost_report(
                    catalog,
                    &page(&from, &to, BucketWidth::Day)?,
                    grouping,
                    &CostFilters::default(),
                )
                .await?;
            if csv {
                print!("{}", tollgate_admin_api::csv::cost_csv(&report));
                return Ok(());
            }
            print_json(&serde_json::to_value(tollgate_admin_api::cost_report_dto(
                &report,
            ))?)
        }
    }
}
