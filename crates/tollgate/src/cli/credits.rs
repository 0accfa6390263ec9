//! `tollgate credits …` and `tollgate autoreload …`: buying, granting and watching credit.

use anyhow::Context;
use serde_json::json;
use tollgate_core::ids::IdKind;
use tollgate_core::ledger::LotKind;
use tollgate_service::{Grant, PurchaseRequest, Tollgate};

use crate::cli::{CLI_ACTOR, instant, print_json, usd};
use crate::{AutoreloadCommand, CreditsCommand, GrantKind};

pub(crate) async fn run(tollgate: &Tollgate, command: CreditsCommand) -> anyhow::Result<()> {
    match command {
        CreditsCommand::Grant {
            org,
            amount,
            kind,
            expires,
            programme,
            memo,
        } => {
            let org = tollgate.organization_named(&org).await?;
            let amount = usd("--amount", &amount)?;
            let kind = match kind {
                GrantKind::Starter => LotKind::Starter,
                GrantKind::Purchase => LotKind::Purchase,
                GrantKind::Promotional => LotKind::Promotional,
            };
            let expires_at = match expires {
                Some(text) => Some(
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .context("--expires must be RFC 3339, e.g. 2027-01-31T00:00:00Z")?
                        .to_utc(),
                ),
                None => None,
            };
            let memo = if memo.is_empty() {
                format!("{} grant", kind.as_str())
            } else {
                memo
            };
            let lot = tollgate
                .grant(Grant {
                    org_id: &org.id,
                    kind,
                    amount,
                    expires_at,
                    memo: &memo,
                    programme: programme.as_deref(),
                    actor: CLI_ACTOR,
                })
                .await?;
            println!("granted {} to {} as lot {}", lot.amount, org.name, lot.lot.lot_id);
        }
        CreditsCommand::Purchase {
            org,
            amount,
            card,
            idempotency_key,
        } => {
            let org = tollgate.organization_named(&org).await?;
            let amount = usd("--amount", &amount)?;
            let idempotency_key =
                idempotency_key.unwrap_or_else(|| tollgate_service::random::id(IdKind::Request));
            let purchase = tollgate
                .purchase(PurchaseRequest {
                    org_id: &org.id,
                    amount,
                    payment_method: &card,
                    idempotency_key: &idempotency_key,
                    actor: CLI_ACTOR,
                })
                .await?;
            let standing = tollgate.tier_standing(&org.id).await?;
            println!(
                "bought {} for {} (purchase {}, receipt {}, key {}); tier: {}",
                purchase.amount,
                org.name,
                purchase.id,
                purchase.payment_reference.unwrap_or_default(),
                purchase.idempotency_key,
                standing.current
            );
        }
        CreditsCommand::Purchases { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let purchases = tollgate.purchases(&org.id).await?;
            if json {
                let rows: Vec<serde_json::Value> = purchases
                    .iter()
                    .map(|purchase| {
                        json!({
                            "id": purchase.id, "amount_nanos": purchase.amount.nanos(),
                            "status": format!("{:?}", purchase.status).to_lowercase(),
                            "source": format!("{:?}", purchase.source).to_lowercase(),
                            "receipt": purchase.payment_reference, "failure_reason": purchase.failure_reason,
                            "lot_id": purchase.lot_id, "idempotency_key": purchase.idempotency_key,
                            "refunded_nanos": purchase.refunded.nanos(),
                            "disputed_nanos": purchase.disputed.nanos(),
                            "unrecovered_nanos": purchase.unrecovered.nanos(),
                            "created_at": instant(purchase.created_at),
                        })
                    })
                    .collect();
                return print_json(&json!(rows));
            }
            println!(
                "{:<32} {:>14} {:<10} {:<11} {:<21} RECEIPT",
                "PURCHASE", "AMOUNT", "STATUS", "SOURCE", "AT"
            );
            for purchase in purchases {
                println!(
                    "{:<32} {:>14} {:<10} {:<11} {:<21} {}",
                    purchase.id,
                    purchase.amount.to_string(),
                    format!("{:?}", purchase.status).to_lowercase(),
                    format!("{:?}", purchase.source).to_lowercase(),
                    instant(purchase.created_at),
                    purchase
                        .payment_reference
                        .or(purchase.failure_reason)
                        .unwrap_or_default()
                );
            }
        }
        CreditsCommand::Balance { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let balance = tollgate.balance(&org.id).await?;
            if json {
                return print_json(&json!({
                    "organization_id": org.id,
                    "available_nanos": balance.available.nanos(),
                    "held_nanos": balance.held.nanos(),
                    "spent_nanos": balance.spent.nanos(),
                    "expired_nanos": balance.expired.nanos(),
                }));
            }
            println!(
                "{}: available {}, held {}, spent {} (expired {})",
                org.name, balance.available, balance.held, balance.spent, balance.expired
            );
        }
        CreditsCommand::Lots { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let lots = tollgate.lots(&org.id).await?;
            let now = tollgate.now();
            if json {
                let rows: Vec<serde_json::Value> = lots
                    .iter()
                    .map(|lot| {
                        json!({
                            "id": lot.lot.lot_id, "kind": lot.lot.kind.as_str(), "amount_nanos": lot.amount.nanos(),
                            "remaining_nanos": lot.lot.account.posted_balance().nanos(),
                            "held_nanos": lot.lot.account.debits_pending.nanos(),
                            "expired": lot.lot.is_expired(now), "programme": lot.programme,
                            "granted_at": instant(lot.lot.granted_at),
                            "expires_at": lot.lot.expires_at.map(instant), "memo": lot.memo,
                        })
                    })
                    .collect();
                return print_json(&json!(rows));
            }
            println!(
                "{:<32} {:<12} {:>14} {:>14} {:<24} MEMO",
                "LOT", "KIND", "AMOUNT", "REMAINING", "EXPIRES"
            );
            for lot in lots {
                let expires = match lot.lot.expires_at {
                    None => "never".to_owned(),
                    Some(at) if lot.lot.is_expired(now) => format!("expired {}", instant(at)),
                    Some(at) => instant(at),
                };
                println!(
                    "{:<32} {:<12} {:>14} {:>14} {:<24} {}",
                    lot.lot.lot_id,
                    lot.lot.kind.as_str(),
                    lot.amount.to_string(),
                    lot.lot.account.posted_balance().to_string(),
                    expires,
                    lot.memo
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn autoreload(tollgate: &Tollgate, command: AutoreloadCommand) -> anyhow::Result<()> {
    match command {
        AutoreloadCommand::Set {
            org,
            threshold,
            amount,
            card,
        } => {
            let org = tollgate.organization_named(&org).await?;
            let threshold = usd("--threshold", &threshold)?;
            let amount = usd("--amount", &amount)?;
            tollgate
                .set_auto_reload(&org.id, threshold, amount, &card, CLI_ACTOR)
                .await?;
            println!(
                "auto-reload on for {}: buy {amount} when the balance falls below {threshold}",
                org.name
            );
        }
        AutoreloadCommand::Off { org } => {
            let org = tollgate.organization_named(&org).await?;
            tollgate.disable_auto_reload(&org.id, CLI_ACTOR).await?;
            println!("auto-reload off for {}", org.name);
        }
        AutoreloadCommand::Show { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let settings = tollgate.auto_reload(&org.id).await?;
            if json {
                return print_json(&match &settings {
                    None => json!(null),
                    Some(settings) => json!({
                        "enabled": settings.enabled, "threshold_nanos": settings.threshold.nanos(),
                        "amount_nanos": settings.amount.nanos(), "notice": settings.notice,
                    }),
                });
            }
            match settings {
                None => println!("auto-reload is not set up for {}", org.name),
                Some(settings) => println!(
                    "auto-reload {} for {}: buy {} when the balance falls below {}{}",
                    if settings.enabled { "on" } else { "off" },
                    org.name,
                    settings.amount,
                    settings.threshold,
                    settings
                        .notice
                        .map(|notice| format!(" ({notice})"))
                        .unwrap_or_default()
                ),
            }
        }
    }
    Ok(())
}
