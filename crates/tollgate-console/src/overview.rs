//! Overview: the balance, the tier, this month's spend against its limit, and the daily
//! cost of the last 30 days.

use axum::extract::State;
use axum::response::Html;
use maud::html;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Access, ConsoleArea};

use crate::ConsoleState;
use crate::chart::{Series, stacked_bars};
use crate::error::PageError;
use crate::layout;
use crate::session::Signed;
use crate::usage::daily_cost;

pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Overview, Access::View)?;
    let organization = admin.organization().await?;
    let balance = admin.balance().await?;
    let standing = admin.tier_standing().await?;
    let limits = admin.limits().await?;
    let month_spend = admin.month_spend(None).await?;
    // The limit in force: the organization's own if it set one, else its tier's cap.
    let month_limit = match (limits.billing.spend_limit, limits.tier_cap()) {
        (Some(own), Some(cap)) => Some(own.min(cap)),
        (own, cap) => own.or(cap),
    };
    let days = daily_cost(admin, &state, 30).await?;
    let labels: Vec<String> = days
        .iter()
        .map(|(day, _)| day.format("%m-%d").to_string())
        .collect();
    let series = [Series {
        name: "Cost".into(),
        values: days.iter().map(|(_, amount)| amount.nanos()).collect(),
    }];
    let percent = month_limit
        .filter(|limit| limit.is_positive())
        .map(|limit| i128::from(month_spend.nanos()) * 100 / i128::from(limit.nanos()))
        .map(|percent| percent.clamp(0, 100));
    let content = html! {
        p.lead { "Organization " strong { (organization.name) } }
        div.stats {
            (layout::stat("Credit balance", &balance.available.to_string(), "balance"))
            (layout::stat("Usage tier", &standing.current, "tier"))
            (layout::stat("Spent this month", &month_spend.to_string(), "month-spend"))
            (layout::stat("Monthly limit", &layout::optional_usd(month_limit), "month-limit"))
        }
        @if let Some(percent) = percent {
            label for="spend-meter" { "This month's spend against its limit: " (percent) "%" }
            meter id="spend-meter" min="0" max="100" value=(percent) { (percent) "%" }
        }
        @if let Some((next, missing)) = &standing.next {
            p { "Buy " (missing) " more in credit to reach " strong { (next) } "." }
        }
        @if balance.held.is_positive() {
            p.hint { (balance.held) " is reserved by requests in flight." }
        }
        (stacked_bars("Daily cost, last 30 days", &labels, &series, &|nanos| NanoUsd::from_nanos(nanos).to_string()))
    };
    Ok(Html(
        layout::page(&user, "/console/overview", "Overview", content).into_string(),
    ))
}
