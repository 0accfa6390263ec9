//! `tollgate orgs …`, `tollgate workspaces …` and `tollgate audit`.

use serde_json::json;
use tollgate_service::{RateLimitOverrides, Tollgate};

use crate::cli::{CLI_ACTOR, instant, optional_usd, print_json, usd_or_none};
use crate::{OrgsCommand, WorkspacesCommand};

pub(crate) async fn run(tollgate: &Tollgate, command: OrgsCommand) -> anyhow::Result<()> {
    match command {
        OrgsCommand::Create { name } => {
            let org = tollgate.create_organization(&name).await?;
            let balance = tollgate.balance(&org.id).await?;
            println!(
                "created organization {} ({}) with a starter credit of {}",
                org.name, org.id, balance.available
            );
        }
        OrgsCommand::List { json } => {
            let organizations = tollgate.organizations().await?;
            if json {
                let rows: Vec<serde_json::Value> = organizations
                    .iter()
                    .map(|org| json!({"id": org.id, "name": org.name, "created_at": instant(org.created_at)}))
                    .collect();
                return print_json(&json!(rows));
            }
            println!("{:<32} {:<21} NAME", "ID", "CREATED");
            for org in organizations {
                println!("{:<32} {:<21} {}", org.id, instant(org.created_at), org.name);
            }
        }
        OrgsCommand::Show { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let balance = tollgate.balance(&org.id).await?;
            let standing = tollgate.tier_standing(&org.id).await?;
            let limits = tollgate.organization_limits(&org.id).await?;
            let month = tollgate.month_spend(&org.id, None).await?;
            if json {
                return print_json(&json!({
                    "id": org.id, "name": org.name, "created_at": instant(org.created_at),
                    "tier": standing.current, "limit_set": standing.limit_set,
                    "cumulative_purchases_nanos": standing.cumulative_purchases.nanos(),
                    "available_nanos": balance.available.nanos(), "held_nanos": balance.held.nanos(),
                    "spent_nanos": balance.spent.nanos(), "month_spend_nanos": month.nanos(),
                    "monthly_spend_limit_nanos": limits.tier_cap().map(|cap| cap.nanos()),
                    "organization_spend_limit_nanos": limits.billing.spend_limit.map(|limit| limit.nanos()),
                    "active_programmes": standing.active_programmes,
                }));
            }
            println!("{} ({})", org.name, org.id);
            println!(
                "  tier          {}{}",
                standing.current,
                standing
                    .limit_set
                    .map(|set| format!(" (custom limits: {set})"))
                    .unwrap_or_default()
            );
            println!("  purchases     {} in all", standing.cumulative_purchases);
            println!(
                "  balance       available {}, held {}, spent {}",
                balance.available, balance.held, balance.spent
            );
            println!(
                "  this month    {} of {}",
                month,
                optional_usd(limits.billing.spend_limit.or(limits.tier_cap()))
            );
        }
    }
    Ok(())
}

pub(crate) async fn workspaces(tollgate: &Tollgate, command: WorkspacesCommand) -> anyhow::Result<()> {
    match command {
        WorkspacesCommand::Create { name, org } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace = tollgate.create_workspace(&org.id, &name).await?;
            println!(
                "created workspace {} ({}) in {}",
                workspace.name, workspace.id, org.name
            );
        }
        WorkspacesCommand::List { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let workspaces = tollgate.workspaces(&org.id).await?;
            let mut rows = Vec::new();
            for workspace in &workspaces {
                let limits = tollgate.workspace_limits(&workspace.id).await?;
                let spent = tollgate.month_spend(&org.id, Some(&workspace.id)).await?;
                rows.push((workspace, limits, spent));
            }
            if json {
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(workspace, limits, spent)| {
                        json!({
                            "id": workspace.id, "name": workspace.name, "is_default": workspace.is_default,
                            "created_at": instant(workspace.created_at), "archived_at": workspace.archived_at.map(instant),
                            "spend_limit_nanos": limits.spend_limit.map(|limit| limit.nanos()),
                            "user_spend_limit_nanos": limits.user_spend_limit.map(|limit| limit.nanos()),
                            "month_spend_nanos": spent.nanos(),
                        })
                    })
                    .collect();
                return print_json(&json!(rows));
            }
            println!(
                "{:<32} {:<20} {:>14} {:>14}",
                "ID", "NAME", "THIS MONTH", "SPEND LIMIT"
            );
            for (workspace, limits, spent) in rows {
                println!(
                    "{:<32} {:<20} {:>14} {:>14}",
                    workspace.id,
                    workspace.name,
                    spent.to_string(),
                    optional_usd(limits.spend_limit)
                );
            }
        }
        WorkspacesCommand::SetLimits {
            workspace,
            org,
            spend_limit,
            user_spend_limit,
            class,
            rpm,
            itpm,
            otpm,
            reason,
        } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace = tollgate.workspace_named(&org.id, &workspace).await?;
            let mut limits = (*tollgate.workspace_limits(&workspace.id).await?).clone();
            if let Some(text) = spend_limit {
                limits.spend_limit = usd_or_none("--spend-limit", &text)?;
            }
            if let Some(text) = user_spend_limit {
                limits.user_spend_limit = usd_or_none("--user-spend-limit", &text)?;
            }
            match (class, rpm.or(itpm).or(otpm)) {
                (Some(class), _) => {
                    let overrides = RateLimitOverrides {
                        requests_per_minute: rpm,
                        input_tokens_per_minute: itpm,
                        output_tokens_per_minute: otpm,
                    };
                    if overrides == RateLimitOverrides::default() {
                        limits.rate_limits.remove(&class);
                    } else {
                        limits.rate_limits.insert(class, overrides);
                    }
                }
                (None, Some(_)) => {
                    anyhow::bail!("--rpm, --itpm and --otpm need --class (opus, sonnet, haiku, …)")
                }
                (None, None) => {}
            }
            tollgate
                .set_workspace_limits(&workspace.id, limits, CLI_ACTOR, reason.as_deref())
                .await?;
            println!("limits of workspace {} updated", workspace.name);
        }
    }
    Ok(())
}

pub(crate) async fn audit(tollgate: &Tollgate, org: &str, json: bool) -> anyhow::Result<()> {
    let org = tollgate.organization_named(org).await?;
    let events = tollgate.audit_events(&org.id).await?;
    if json {
        let rows: Vec<serde_json::Value> = events
            .iter()
            .map(|event| {
                json!({
                    "at": instant(event.at), "actor": event.actor, "action": event.action,
                    "subject": event.subject, "details": event.details, "reason": event.reason,
                })
            })
            .collect();
        return print_json(&json!(rows));
    }
    for event in events {
        let reason = event
            .reason
            .map(|reason| format!(" — {reason}"))
            .unwrap_or_default();
        println!(
            "{}  {:<12} {:<32} {}: {}{reason}",
            instant(event.at),
            event.actor,
            event.action,
            event.subject,
            event.details
        );
    }
    Ok(())
}
