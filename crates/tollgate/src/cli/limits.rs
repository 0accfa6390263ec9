//! `tollgate tiers` and `tollgate limits …`: the ladder, and the limits in force.

use serde_json::json;
use tollgate_core::tiers::RateLimits;
use tollgate_service::Tollgate;

use crate::LimitsCommand;
use crate::cli::{CLI_ACTOR, optional_usd, print_json, usd_or_none};

fn rate_limits_json(limits: &RateLimits) -> serde_json::Value {
    json!({
        "requests_per_minute": limits.requests_per_minute,
        "input_tokens_per_minute": limits.input_tokens_per_minute,
        "output_tokens_per_minute": limits.output_tokens_per_minute,
    })
}

pub(crate) async fn tiers(tollgate: &Tollgate, org: &str, json: bool) -> anyhow::Result<()> {
    let org = tollgate.organization_named(org).await?;
    let standing = tollgate.tier_standing(&org.id).await?;
    if json {
        let tiers: Vec<serde_json::Value> = standing
            .tiers
            .iter()
            .map(|tier| {
                json!({
                    "name": tier.limits.name,
                    "cumulative_purchases_nanos": tier.cumulative_purchases_min.nanos(),
                    "monthly_spend_limit_nanos": tier.limits.monthly_spend_limit.map(|limit| limit.nanos()),
                    "max_single_purchase_nanos": tier.limits.max_single_purchase.map(|limit| limit.nanos()),
                    "rate_limits": tier.limits.rate_limits.iter().map(|(class, limits)| (class.clone(), rate_limits_json(limits))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        return print_json(&json!({
            "organization_id": org.id,
            "current": standing.current,
            "limit_set": standing.limit_set,
            "cumulative_purchases_nanos": standing.cumulative_purchases.nanos(),
            "next": standing.next.as_ref().map(|(name, missing)| json!({"name": name, "purchases_needed_nanos": missing.nanos()})),
            "active_programmes": standing.active_programmes,
            "tiers": tiers,
        }));
    }
    println!(
        "{:<2}{:<12} {:>14} {:>14} {:>14}",
        "", "TIER", "PURCHASES", "MONTHLY CAP", "MAX PURCHASE"
    );
    for tier in &standing.tiers {
        let marker = if tier.limits.name == standing.current {
            "▸ "
        } else {
            "  "
        };
        println!(
            "{marker}{:<12} {:>14} {:>14} {:>14}",
            tier.limits.name,
            tier.cumulative_purchases_min.to_string(),
            optional_usd(tier.limits.monthly_spend_limit),
            optional_usd(tier.limits.max_single_purchase)
        );
    }
    println!();
    println!(
        "{} has bought {} in all and is at {}.",
        org.name, standing.cumulative_purchases, standing.current
    );
    if let Some((next, missing)) = standing.next {
        println!("Buying {missing} more reaches {next}.");
    }
    if let Some(set) = standing.limit_set {
        println!("Custom limits in force instead of the tier's: {set}.");
    }
    if !standing.active_programmes.is_empty() {
        println!("Programmes: {}.", standing.active_programmes.join(", "));
    }
    Ok(())
}

pub(crate) async fn run(tollgate: &Tollgate, command: LimitsCommand) -> anyhow::Result<()> {
    match command {
        LimitsCommand::Show { org, workspace, json } => {
            let org = tollgate.organization_named(&org).await?;
            let limits = tollgate.organization_limits(&org.id).await?;
            let workspace = match workspace {
                Some(name) => Some(tollgate.workspace_named(&org.id, &name).await?),
                None => None,
            };
            let workspace_limits = match &workspace {
                Some(workspace) => Some(tollgate.workspace_limits(&workspace.id).await?),
                None => None,
            };
            let mut classes = Vec::new();
            for (class, org_limits) in &limits.limits.rate_limits {
                let effective = match workspace_limits
                    .as_ref()
                    .and_then(|limits| limits.rate_limits.get(class))
                {
                    Some(overrides) => tollgate_service::workspace_rate_limits(*org_limits, overrides),
                    None => *org_limits,
                };
                classes.push((class.clone(), effective));
            }
            let spend_limit = workspace_limits
                .as_ref()
                .and_then(|limits| limits.spend_limit)
                .or(limits.billing.spend_limit)
                .or(limits.tier_cap());
            let month = tollgate
                .month_spend(&org.id, workspace.as_ref().map(|workspace| workspace.id.as_str()))
                .await?;
            if json {
                return print_json(&json!({
                    "organization_id": org.id,
                    "workspace_id": workspace.as_ref().map(|workspace| workspace.id.clone()),
                    "limit_set": limits.limits.name,
                    "monthly_spend_limit_nanos": spend_limit.map(|limit| limit.nanos()),
                    "month_spend_nanos": month.nanos(),
                    "count_tokens_requests_per_minute": limits.limits.count_tokens_requests_per_minute,
                    "rate_limits": classes.iter().map(|(class, limits)| (class.clone(), rate_limits_json(limits))).collect::<serde_json::Map<_, _>>(),
                }));
            }
            let whose = workspace.as_ref().map_or(org.name.clone(), |workspace| {
                format!("{} / {}", org.name, workspace.name)
            });
            println!("Limits of {whose} ({})", limits.limits.name);
            println!("  monthly spend  {} of {}", month, optional_usd(spend_limit));
            println!("  {:<8} {:>10} {:>14} {:>14}", "CLASS", "RPM", "ITPM", "OTPM");
            for (class, limits) in classes {
                println!(
                    "  {:<8} {:>10} {:>14} {:>14}",
                    class,
                    limits.requests_per_minute,
                    limits.input_tokens_per_minute,
                    limits.output_tokens_per_minute
                );
            }
        }
        LimitsCommand::SetOrg {
            org,
            spend_limit,
            limit_set,
            reason,
        } => {
            let org = tollgate.organization_named(&org).await?;
            if spend_limit.is_none() && limit_set.is_none() {
                anyhow::bail!("give --spend-limit and/or --limit-set");
            }
            if let Some(name) = limit_set {
                let set = (!name.eq_ignore_ascii_case("none")).then_some(name.as_str());
                tollgate
                    .set_organization_limit_set(&org.id, set, CLI_ACTOR, reason.as_deref())
                    .await?;
            }
            if let Some(text) = spend_limit {
                let limit = usd_or_none("--spend-limit", &text)?;
                tollgate
                    .set_organization_spend_limit(&org.id, limit, CLI_ACTOR, reason.as_deref())
                    .await?;
            }
            println!("limits of {} updated", org.name);
        }
    }
    Ok(())
}
