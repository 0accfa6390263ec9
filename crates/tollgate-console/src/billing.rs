//! Billing (admins and billing users only, on every request): the balance, credit lots
//! with their expiry, buying credit through the payment provider, auto-reload, and the
//! purchase history with a receipt per purchase (a page, and a standalone HTML file to
//! download). With Stripe no card number is taken here: the form has no card field and a
//! request that carries one anyway is refused. Also Limits: the tier ladder with where
//! the organization stands, and its rate limits per model class (every role may look).

use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::ids::IdKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Access, ConsoleArea, OrgAdmin, PurchaseStatus, Receipt};

use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

fn usd(label: &str, text: &str) -> Result<NanoUsd, PageError> {
    NanoUsd::parse_usd(text.trim().trim_start_matches('$'))
        .map_err(|error| PageError::Invalid(format!("{label}: {error}")))
}

pub(crate) async fn page(Signed(user): Signed) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Billing, Access::View)?;
    let balance = admin.balance().await?;
    let lots = admin.lots().await?;
    let purchases = admin.purchases().await?;
    let standing = admin.tier_standing().await?;
    let limits = admin.limits().await?;
    let auto_reload = admin.auto_reload().await?;
    // With Stripe the card is entered on Stripe's page: no card field here.
    let stripe = admin.tollgate().stripe_enabled();
    let saved_card = admin.payment_customer().await?.and_then(|customer| {
        customer.payment_method_id.as_ref()?;
        Some(format!(
            "{} ending in {}",
            customer.card_brand.as_deref().unwrap_or("card"),
            customer.card_last4.as_deref().unwrap_or("????")
        ))
    });
    let now = admin.tollgate().now();
    // A fresh idempotency key per rendering: submitting the same form twice buys once.
    let idempotency_key = tollgate_service::random::id(IdKind::Purchase);
    let content = html! {
        div.stats {
            (layout::stat("Available credit", &balance.available.to_string(), "balance"))
            (layout::stat("Usage tier", &standing.current, "tier"))
            (layout::stat("Purchased to date", &standing.cumulative_purchases.to_string(), "cumulative"))
            (layout::stat("Largest single purchase", &layout::optional_usd(limits.limits.max_single_purchase), "max-purchase"))
        }
        section.card {
            h2 { "Buy credits" }
            p.hint { "Credits can be used at once, expire one year after purchase and are not refundable." }
            form method="post" action="/console/billing/purchase" {
                (csrf(&user))
                input type="hidden" name="idempotency_key" value=(idempotency_key);
                label for="amount" { "Amount in USD" }
                input id="amount" name="amount" type="text" inputmode="decimal" required placeholder="25.00";
                @if stripe {
                    p.hint { "You enter your card on Stripe's secure page; it is saved for auto-reload." }
                    button type="submit" { "Continue to payment" }
                } @else {
                    label for="card" { "Card number" }
                    input id="card" name="card" type="text" inputmode="numeric" autocomplete="cc-number" required;
                    button type="submit" { "Buy credits" }
                }
            }
        }
        section.card {
            h2 { "Auto-reload" }
            @match &auto_reload {
                Some(settings) if settings.enabled => {
                    p id="auto-reload-state" { "On: when the balance falls below " (settings.threshold) ", buy " (settings.amount) "." }
                }
                Some(settings) => {
                    p id="auto-reload-state" { "Off." @if let Some(notice) = &settings.notice { " " (notice) } }
                }
                None => { p id="auto-reload-state" { "Off." } }
            }
            form method="post" action="/console/billing/auto-reload" {
                (csrf(&user))
                label for="threshold" { "When the balance falls below (USD)" }
                input id="threshold" name="threshold" type="text" inputmode="decimal";
                label for="reload-amount" { "Buy (USD)" }
                input id="reload-amount" name="amount" type="text" inputmode="decimal";
                @if stripe {
                    p id="saved-card" { "Charged to: " (saved_card.as_deref().unwrap_or("no card saved yet (buy credit once)")) }
                } @else {
                    label for="reload-card" { "Card number" }
                    input id="reload-card" name="card" type="text" inputmode="numeric" autocomplete="cc-number";
                }
                button type="submit" name="enabled" value="on" { "Turn on" }
                button type="submit" name="enabled" value="off" { "Turn off" }
            }
        }
        h2 { "Credit lots" }
        div.scroll {
            table id="lots" {
                thead { tr {
                    th scope="col" { "Granted" } th scope="col" { "Kind" } th scope="col" { "Amount" }
                    th scope="col" { "Remaining" } th scope="col" { "Expires" }
                } }
                tbody {
                    @for lot in lots.iter().rev() {
                        tr {
                            td { (layout::day(lot.lot.granted_at)) }
                            td { (lot.lot.kind.as_str()) @if let Some(programme) = &lot.programme { " (" (programme) ")" } }
                            td { (lot.amount) }
                            td { (lot.lot.account.available()) }
                            td {
                                (lot.lot.expires_at.map_or_else(|| "never".to_owned(), layout::day))
                                @if lot.lot.is_expired(now) { " (expired)" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Purchase history" }
        div.scroll {
            table id="purchases" {
                thead { tr {
                    th scope="col" { "Date" } th scope="col" { "Amount" } th scope="col" { "Source" }
                    th scope="col" { "Status" } th scope="col" { "Receipt" }
                } }
                tbody {
                    @for purchase in &purchases {
                        tr {
                            td { (layout::instant(purchase.created_at)) }
                            td { (purchase.amount) }
                            td { (purchase.source.as_str()) }
                            td { (purchase.status.as_str()) @if let Some(reason) = &purchase.failure_reason { ": " (reason) } }
                            td { a href=(format!("/console/billing/receipts/{}", purchase.id)) { "Receipt" } }
                        }
                    }
                    @if purchases.is_empty() { tr { td colspan="5" { "No purchases yet." } } }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/billing", "Billing", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct PurchaseForm {
    amount: String,
    #[serde(default)]
    card: String,
    idempotency_key: String,
}

pub(crate) async fn purchase(
    Signed(user): Signed,
    headers: HeaderMap,
    Form(form): Form<PurchaseForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Billing, Access::Change)?;
    refuse_card_number_under_stripe(admin, &form.card)?;
    let amount = usd("amount", &form.amount)?;
    if admin.tollgate().stripe_enabled() {
        let started = admin
            .start_checkout(amount, &form.idempotency_key, &own_address(&headers))
            .await?;
        return Ok(match started.url {
            Some(url) => Redirect::to(&url).into_response(),
            None => {
                Redirect::to(&format!("/console/billing/receipts/{}", started.purchase.id)).into_response()
            }
        });
    }
    let purchase = admin
        .purchase(amount, form.card.trim(), &form.idempotency_key)
        .await?;
    Ok(Redirect::to(&format!("/console/billing/receipts/{}", purchase.id)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct AutoReloadForm {
    enabled: String,
    #[serde(default)]
    threshold: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    card: String,
}

pub(crate) async fn auto_reload(
    Signed(user): Signed,
    Form(form): Form<AutoReloadForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Billing, Access::Change)?;
    refuse_card_number_under_stripe(admin, &form.card)?;
    if form.enabled == "on" {
        let threshold = usd("threshold", &form.threshold)?;
        let amount = usd("amount", &form.amount)?;
        admin.set_auto_reload(threshold, amount, form.card.trim()).await?;
    } else if admin
        .auto_reload()
        .await?
        .is_some_and(|settings| settings.enabled)
    {
        admin.disable_auto_reload().await?;
    }
    Ok(Redirect::to("/console/billing").into_response())
}

/// With Stripe, card numbers are entered on Stripe's page only: a form that carries one
/// anyway (a stale page, a script) is refused before anything is done with it.
fn refuse_card_number_under_stripe(admin: &OrgAdmin, card: &str) -> Result<(), PageError> {
    if admin.tollgate().stripe_enabled() && !card.trim().is_empty() {
        return Err(PageError::Invalid(
            "Card numbers are not accepted here: with Stripe, you enter your card on Stripe's own page."
                .into(),
        ));
    }
    Ok(())
}

/// This server's address as the browser reached it, for Stripe to send the buyer back to
/// (unless `payments.stripe.public_url` says otherwise).
fn own_address(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    let host = header("host").unwrap_or("localhost");
    format!("{scheme}://{host}")
}

pub(crate) async fn receipt(
    Signed(user): Signed,
    Path(purchase_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Billing, Access::View)?;
    let receipt = admin.receipt(&purchase_id).await?;
    let purchase = &receipt.purchase;
    let content = html! {
        section.card.receipt {
            @if purchase.status == PurchaseStatus::Succeeded {
                p role="status" id="purchase-status" { "Payment received. The credit is available now." }
            } @else if purchase.status == PurchaseStatus::Pending {
                p role="status" id="purchase-status" {
                    "Waiting for the payment to be confirmed; the credit appears once it is."
                    @if let Some(reason) = &purchase.failure_reason { " The last attempt failed: " (reason) }
                }
            } @else {
                p role="alert" id="purchase-status" { "This purchase " (purchase.status.as_str()) "." }
            }
            (receipt_details(&receipt))
            p {
                a id="receipt-download" href=(format!("/console/billing/receipts/{}/download", purchase.id)) download { "Download receipt" }
                " · "
                a href="/console/billing" { "Back to billing" }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/billing", "Receipt", content).into_string(),
    ))
}

/// The receipt as a file to keep: a standalone HTML document (no Console chrome, no
/// outside stylesheet), served as an attachment.
pub(crate) async fn receipt_download(
    Signed(user): Signed,
    Path(purchase_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Billing, Access::View)?;
    let receipt = admin.receipt(&purchase_id).await?;
    let title = format!("Receipt {}", receipt.purchase.id);
    let document = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { "body{font-family:sans-serif;max-width:40rem;margin:2rem auto}dt{font-weight:bold}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.25rem .5rem}" }
            }
            body {
                h1 { (title) }
                (receipt_details(&receipt))
                p { "Taxes, if any, are on the payment provider's receipt." }
            }
        }
    };
    // Ids are `pur_` and base-32 characters only, safe in a header as they are.
    let disposition = format!("attachment; filename=\"receipt-{}.html\"", receipt.purchase.id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        document.into_string(),
    )
        .into_response())
}

/// What a receipt says, on the page and in the file alike.
fn receipt_details(receipt: &Receipt) -> maud::Markup {
    let purchase = &receipt.purchase;
    let reversed = !receipt.reversals.is_empty();
    html! {
        dl {
            dt { "Receipt" } dd id="receipt-id" { (purchase.id) }
            dt { "Organization" } dd id="receipt-organization" { (receipt.organization.name) }
            dt { "Amount" } dd id="receipt-amount" { (purchase.amount) }
            dt { "Status" } dd { (purchase.status.as_str()) }
            dt { "Date" } dd { (layout::instant(purchase.created_at)) }
            @if let Some(reference) = &purchase.payment_reference { dt { "Payment reference" } dd id="receipt-reference" { (reference) } }
            @if let Some(reason) = &purchase.failure_reason { dt { "Reason" } dd { (reason) } }
            @if let Some(lot_id) = &purchase.lot_id { dt { "Credit lot" } dd id="receipt-lot" { (lot_id) } }
            @if let Some(lot) = &receipt.lot {
                dt { "Expires" } dd id="receipt-expiry" { (layout::optional_instant(lot.lot.expires_at)) }
            }
            @if reversed {
                dt { "Refunded" } dd id="receipt-refunded" { (purchase.refunded) }
                dt { "Lost in disputes" } dd id="receipt-disputed" { (purchase.disputed) }
                dt { "Already used when reversed" } dd id="receipt-unrecovered" { (purchase.unrecovered) }
            }
        }
        @if reversed {
            h2 { "Refunds and disputes" }
            table id="receipt-reversals" {
                thead { tr {
                    th scope="col" { "Date" } th scope="col" { "Kind" } th scope="col" { "Amount" }
                    th scope="col" { "Removed from the lot" } th scope="col" { "Already used" } th scope="col" { "Reference" }
                } }
                tbody {
                    @for reversal in &receipt.reversals {
                        tr {
                            td { (layout::instant(reversal.created_at)) }
                            td { (reversal.kind.as_str()) }
                            td { (reversal.amount) }
                            td { (reversal.recovered) }
                            td { (reversal.unrecovered) }
                            td { (reversal.reference) }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn limits(Signed(user): Signed) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Limits, Access::View)?;
    let standing = admin.tier_standing().await?;
    let limits = admin.limits().await?;
    let content = html! {
        p { "Your organization is on " strong id="current-tier" { (standing.current) }
            @if let Some(set) = &standing.limit_set { " (custom limits: " (set) ")" } "." }
        @if let Some((next, missing)) = &standing.next {
            p { (missing) " more in purchases reaches " (next) "." }
        }
        h2 { "Usage tiers" }
        div.scroll {
            table id="tiers" {
                thead { tr {
                    th scope="col" { "Tier" } th scope="col" { "Purchases to reach it" }
                    th scope="col" { "Largest purchase" } th scope="col" { "Monthly spend limit" }
                } }
                tbody {
                    @for tier in &standing.tiers {
                        @let current = tier.limits.name == standing.current;
                        tr.current[current] {
                            th scope="row" { (tier.limits.name) @if current { " (you are here)" } }
                            td { (tier.cumulative_purchases_min) }
                            td { (layout::optional_usd(tier.limits.max_single_purchase)) }
                            td { (layout::optional_usd(tier.limits.monthly_spend_limit)) }
                        }
                    }
                }
            }
        }
        h2 { "Rate limits in force" }
        div.scroll {
            table id="rate-limits" {
                thead { tr {
                    th scope="col" { "Model class" } th scope="col" { "Requests per minute" }
                    th scope="col" { "Input tokens per minute" } th scope="col" { "Output tokens per minute" }
                } }
                tbody {
                    @for (class, rate) in &limits.limits.rate_limits {
                        tr {
                            th scope="row" { (class) }
                            td { (layout::count(rate.requests_per_minute)) }
                            td { (layout::count(rate.input_tokens_per_minute)) }
                            td { (layout::count(rate.output_tokens_per_minute)) }
                        }
                    }
                    tr {
                        th scope="row" { "count_tokens" }
                        td { (layout::count(limits.limits.count_tokens_requests_per_minute)) }
                        td { "—" } td { "—" }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/limits", "Limits", content).into_string(),
    ))
}
