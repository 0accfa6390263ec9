//! Alerts: the organization's alert destinations (a signed webhook, whose signing secret is
//! shown once at creation, or an email address; each receives the kinds ticked on its
//! row, every kind at first), its balance threshold and key-expiry
//! notice, and the newest deliveries with their attempts. The use cases are `OrgAdmin`'s,
//! as in the Admin API; this page lays them out. For organization admins only.

use axum::Form;
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::alerts::AlertKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Access, AlertChannel, AlertSettings, ConsoleArea};

use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

/// Deliveries the page lists.
const DELIVERIES_SHOWN: u64 = 20;

pub(crate) async fn page(Signed(user): Signed) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Alerts, Access::View)?;
    let settings = admin.alert_settings().await?;
    let destinations = admin.alert_destinations().await?;
    let deliveries = admin.alert_deliveries(DELIVERIES_SHOWN).await?;
    let content = html! {
        section.card {
            h2 { "Thresholds" }
            p id="alert-threshold" {
                @match settings.balance_threshold {
                    Some(threshold) => { "Alert when the available balance falls below " (threshold) "." }
                    None => { "No balance alert." }
                }
                " Spend alerts fire at 75 % and 100 % of the monthly limit; a declined auto-reload alerts too."
            }
            form method="post" action="/console/alerts/settings" {
                (csrf(&user))
                label for="threshold" { "Balance threshold (USD; blank for none)" }
                input id="threshold" name="threshold" type="text" inputmode="decimal"
                    value=(settings.balance_threshold.map(|amount| amount.to_usd_decimal()).unwrap_or_default());
                label for="key-days" { "Key expiry notice (days)" }
                input id="key-days" name="key_expiry_days" type="number" min="0" max="365" value=(settings.key_expiry_days);
                button type="submit" { "Save" }
            }
        }
        section.card {
            h2 { "Add a destination" }
            form method="post" action="/console/alerts/destinations" {
                (csrf(&user))
                label for="channel" { "Kind" }
                select id="channel" name="channel" {
                    option value="webhook" { "Webhook (signed)" }
                    option value="email" { "Email" }
                }
                label for="target" { "URL or email address" }
                input id="target" name="target" type="text" required;
                button type="submit" { "Add" }
            }
        }
        h2 { "Destinations" }
        div.scroll {
            table id="destinations" {
                thead { tr {
                    th scope="col" { "Kind" } th scope="col" { "Target" } th scope="col" { "Alerts it receives" }
                    th scope="col" { "Added" } th scope="col" { "" }
                } }
                tbody {
                    @for destination in &destinations {
                        tr {
                            td { (destination.channel.as_str()) }
                            td { (destination.target) }
                            td {
                                form.kinds method="post" action=(format!("/console/alerts/destinations/{}/kinds", destination.id)) {
                                    (csrf(&user))
                                    @for kind in AlertKind::ALL {
                                        @let id = format!("{}-{}", destination.id, kind.as_str());
                                        @let receives = destination.kinds.as_ref().is_none_or(|kinds| kinds.contains(&kind));
                                        label for=(id) {
                                            input id=(id) type="checkbox" name="kinds" value=(kind.as_str()) checked[receives];
                                            " " (kind.title())
                                        }
                                    }
                                    button type="submit" { "Save" }
                                }
                            }
                            td { (layout::instant(destination.created_at)) }
                            td {
                                form method="post" action=(format!("/console/alerts/destinations/{}/delete", destination.id)) {
                                    (csrf(&user))
                                    button type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                    @if destinations.is_empty() { tr { td colspan="5" { "No destinations: alerts go nowhere." } } }
                }
            }
        }
        h2 { "Recent deliveries" }
        div.scroll {
            table id="deliveries" {
                thead { tr {
                    th scope="col" { "Created" } th scope="col" { "Alert" } th scope="col" { "Status" }
                    th scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "Next attempt" }
                } }
                tbody {
                    @for delivery in &deliveries {
                        @let last = delivery.attempts.last();
                        tr {
                            td { (layout::instant(delivery.created_at)) }
                            td { (delivery.kind) }
                            td { (delivery.state.as_str()) }
                            td { (delivery.attempts.len()) }
                            td {
                                @if let Some(attempt) = last {
                                    (attempt.response_status.map_or_else(String::new, |status| status.to_string()))
                                    @if let Some(error) = &attempt.error { " " (error) }
                                }
                            }
                            td { (layout::optional_instant(delivery.next_attempt_at)) }
                        }
                    }
                    @if deliveries.is_empty() { tr { td colspan="6" { "No alerts yet." } } }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/alerts", "Alerts", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct SettingsForm {
    #[serde(default)]
    threshold: String,
    key_expiry_days: u32,
}

pub(crate) async fn set_settings(
    Signed(user): Signed,
    Form(form): Form<SettingsForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Alerts, Access::Change)?;
    let threshold = form.threshold.trim().trim_start_matches('$');
    let balance_threshold = if threshold.is_empty() {
        None
    } else {
        Some(
            NanoUsd::parse_usd(threshold)
                .map_err(|error| PageError::Invalid(format!("threshold: {error}")))?,
        )
    };
    admin
        .set_alert_settings(AlertSettings {
            balance_threshold,
            key_expiry_days: form.key_expiry_days,
        })
        .await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

#[derive(Deserialize)]
pub(crate) struct DestinationForm {
    channel: String,
    target: String,
}

pub(crate) async fn create_destination(
    Signed(user): Signed,
    Form(form): Form<DestinationForm>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Alerts, Access::Change)?;
    let channel = match form.channel.as_str() {
        "webhook" => AlertChannel::Webhook,
        "email" => AlertChannel::Email,
        other => {
            return Err(PageError::Invalid(format!(
                "'{other}' is not a kind of destination"
            )));
        }
    };
    let created = admin
        .create_alert_destination(channel, &form.target, None)
        .await?;
    let content = html! {
        section.card {
            h2 { "Destination added" }
            p { (created.destination.channel.as_str()) ": " (created.destination.target) }
            @if let Some(secret) = &created.destination.secret {
                p role="status" { "Copy the signing secret now: it is shown only once. Verify each webhook's tollgate-signature header with it." }
                label for="signing-secret" { "Signing secret" }
                div.copy {
                    input id="signing-secret" type="text" readonly value=(secret);
                    button type="button" data-copy="signing-secret" { "Copy" }
                }
            }
            p { a href="/console/alerts" { "Back to alerts" } }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/alerts", "New alert destination", content).into_string(),
    ))
}

/// Sets the kinds a destination receives: the checked boxes, each a `kinds` field.
pub(crate) async fn set_destination_kinds(
    Signed(user): Signed,
    Path(destination_id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Alerts, Access::Change)?;
    let kinds = fields
        .iter()
        .filter(|(name, _)| name == "kinds")
        .map(|(_, value)| {
            AlertKind::parse(value).ok_or_else(|| PageError::Invalid(format!("'{value}' is not an alert")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    admin
        .set_alert_destination_kinds(&destination_id, Some(kinds.as_slice()))
        .await?;
    Ok(Redirect::to("/console/alerts").into_response())
}

pub(crate) async fn delete_destination(
    Signed(user): Signed,
    Path(destination_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Alerts, Access::Change)?;
    admin.delete_alert_destination(&destination_id).await?;
    Ok(Redirect::to("/console/alerts").into_response())
}
