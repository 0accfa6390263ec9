//! Alerts (tollgate's addition, in the Admin API's style): an organization's destinations
//! (`/v1/organizations/alert_destinations`: a signed webhook, whose signing secret is shown
//! once at creation, or an email address, each receiving every alert kind or those it
//! chose), its thresholds
//! (`/v1/organizations/alert_settings`) and the deliveries with every attempt
//! (`/v1/organizations/alert_deliveries`, newest first).

use axum::Json;
use axum::extract::Path;
use serde::{Deserialize, Serialize};
use tollgate_core::alerts::AlertKind;
use tollgate_service::{AlertChannel, AlertDelivery, AlertDestination, AlertSettings, DELIVERIES_LISTED_MAX};
use utoipa::ToSchema;

use crate::dto::{Deleted, cents};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, Body, QueryPairs, instant, parse_cents};
use crate::pagination::{Page, PageRequest, paginate};

type Reply<T> = Result<Json<T>, ApiError>;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertDestinationDto {
    pub(crate) id: String,
    /// Always `alert_destination`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// `webhook` or `email`.
    pub(crate) channel: &'static str,
    /// The webhook's URL or the email address.
    pub(crate) target: String,
    /// The webhook's signing secret (`whsec_…`): only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signing_secret: Option<String>,
    /// The alerts it receives: every kind unless it chose some.
    pub(crate) alert_kinds: Vec<&'static str>,
    pub(crate) created_at: String,
}

fn destination_dto(destination: &AlertDestination, with_secret: bool) -> AlertDestinationDto {
    AlertDestinationDto {
        id: destination.id.clone(),
        kind: "alert_destination",
        channel: destination.channel.as_str(),
        target: destination.target.clone(),
        signing_secret: destination.secret.clone().filter(|_| with_secret),
        alert_kinds: destination
            .kinds
            .as_deref()
            .unwrap_or(&AlertKind::ALL[..])
            .iter()
            .map(|kind| kind.as_str())
            .collect(),
        created_at: instant(destination.created_at),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAlertDestination {
    /// `webhook` or `email`.
    pub(crate) channel: String,
    /// An http(s) URL for a webhook; an address for email.
    pub(crate) target: String,
    /// The alerts it receives (`balance_below_threshold`, `spend_limit_75`,
    /// `spend_limit_100`, `auto_reload_declined`, `deployment_down`, `key_expiring`);
    /// `null` or left out: every kind.
    pub(crate) alert_kinds: Option<Vec<String>>,
}

/// Like the other update routes, it ignores fields it does not know.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateAlertDestination {
    /// The alerts it receives from now on; `null` or left out: every kind.
    pub(crate) alert_kinds: Option<Vec<String>>,
}

/// `alert_kinds` as the service takes them.
fn parse_kinds(names: Option<&[String]>) -> Result<Option<Vec<AlertKind>>, ApiError> {
    names
        .map(|names| {
            names
                .iter()
                .map(|name| {
                    AlertKind::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = AlertKind::ALL.iter().map(|kind| kind.as_str()).collect();
                        ApiError::invalid(format!(
                            "alert_kinds: '{name}' is not one of {}",
                            known.join(", ")
                        ))
                    })
                })
                .collect()
        })
        .transpose()
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertSettingsDto {
    /// Always `alert_settings`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// Alert when the available balance falls below this many US cents; `null`: never.
    pub(crate) balance_threshold_amount: Option<String>,
    /// Alert this many days before an API key expires.
    pub(crate) key_expiry_notice_days: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetAlertSettings {
    /// US cents; `null` or left out turns the balance alert off.
    pub(crate) balance_threshold_amount: Option<String>,
    pub(crate) key_expiry_notice_days: Option<u32>,
}

fn settings_dto(settings: &AlertSettings) -> AlertSettingsDto {
    AlertSettingsDto {
        kind: "alert_settings",
        balance_threshold_amount: settings.balance_threshold.map(cents),
        key_expiry_notice_days: settings.key_expiry_days,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryAttemptDto {
    pub(crate) attempt: u32,
    pub(crate) attempted_at: String,
    /// `delivered` or `failed`.
    pub(crate) outcome: &'static str,
    /// The webhook's HTTP status or the SMTP reply code, when there was an answer.
    pub(crate) response_status: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertDeliveryDto {
    pub(crate) id: String,
    /// Always `alert_delivery`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) destination_id: String,
    /// The alert: `balance_below_threshold`, `spend_limit_75`, `spend_limit_100`,
    /// `auto_reload_declined`, `deployment_down` or `key_expiring`.
    pub(crate) alert: String,
    /// `pending`, `delivered` or `failed` (attempts spent).
    pub(crate) status: &'static str,
    pub(crate) created_at: String,
    pub(crate) next_attempt_at: Option<String>,
    /// The event as sent.
    #[schema(value_type = Object)]
    pub(crate) event: serde_json::Value,
    pub(crate) attempts: Vec<DeliveryAttemptDto>,
}

fn delivery_dto(delivery: &AlertDelivery) -> AlertDeliveryDto {
    AlertDeliveryDto {
        id: delivery.id.clone(),
        kind: "alert_delivery",
        destination_id: delivery.destination_id.clone(),
        alert: delivery.kind.clone(),
        status: delivery.state.as_str(),
        created_at: instant(delivery.created_at),
        next_attempt_at: delivery.next_attempt_at.map(instant),
        event: serde_json::from_str(&delivery.payload).unwrap_or_default(),
        attempts: delivery
            .attempts
            .iter()
            .map(|attempt| DeliveryAttemptDto {
                attempt: attempt.attempt,
                attempted_at: instant(attempt.attempted_at),
                outcome: if attempt.delivered { "delivered" } else { "failed" },
                response_status: attempt.response_status,
                error: attempt.error.clone(),
                next_attempt_at: attempt.next_attempt_at.map(instant),
            })
            .collect(),
    }
}

/// The organization's alert destinations, oldest first; secrets are never listed.
#[utoipa::path(get, path = "/v1/organizations/alert_destinations", tag = "Alerts",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<AlertDestinationDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_alert_destinations(
    Admin(admin): Admin,
    query: QueryPairs,
) -> Reply<Page<AlertDestinationDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin
        .alert_destinations()
        .await?
        .iter()
        .map(|destination| destination_dto(destination, false))
        .collect();
    Ok(Json(paginate(
        dtos,
        |dto: &AlertDestinationDto| dto.id.clone(),
        &page,
    )?))
}

/// Adds a destination. A webhook's answer carries its signing secret, this once.
#[utoipa::path(post, path = "/v1/organizations/alert_destinations", tag = "Alerts",
    request_body = CreateAlertDestination,
    responses((status = 200, body = AlertDestinationDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn create_alert_destination(
    Admin(admin): Admin,
    Body(body): Body<CreateAlertDestination>,
) -> Reply<AlertDestinationDto> {
    let channel = match body.channel.as_str() {
        "webhook" => AlertChannel::Webhook,
        "email" => AlertChannel::Email,
        other => {
            return Err(ApiError::invalid(format!(
                "channel: '{other}' is not one of webhook, email"
            )));
        }
    };
    let kinds = parse_kinds(body.alert_kinds.as_deref())?;
    let created = admin
        .create_alert_destination(channel, &body.target, kinds.as_deref())
        .await?;
    Ok(Json(destination_dto(&created.destination, true)))
}

/// Sets which alerts a destination receives; deliveries already queued stay.
#[utoipa::path(post, path = "/v1/organizations/alert_destinations/{destination_id}", tag = "Alerts",
    params(("destination_id" = String, Path)),
    request_body = UpdateAlertDestination,
    responses((status = 200, body = AlertDestinationDto), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_alert_destination(
    Admin(admin): Admin,
    Path(destination_id): Path<String>,
    Body(body): Body<UpdateAlertDestination>,
) -> Reply<AlertDestinationDto> {
    let kinds = parse_kinds(body.alert_kinds.as_deref())?;
    let destination = admin
        .set_alert_destination_kinds(&destination_id, kinds.as_deref())
        .await?;
    Ok(Json(destination_dto(&destination, false)))
}

/// Deletes a destination; its pending deliveries fail at their next attempt.
#[utoipa::path(delete, path = "/v1/organizations/alert_destinations/{destination_id}", tag = "Alerts",
    params(("destination_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete_alert_destination(
    Admin(admin): Admin,
    Path(destination_id): Path<String>,
) -> Reply<Deleted> {
    admin.delete_alert_destination(&destination_id).await?;
    Ok(Json(Deleted {
        id: destination_id,
        kind: "alert_destination_deleted",
    }))
}

/// The organization's alert thresholds.
#[utoipa::path(get, path = "/v1/organizations/alert_settings", tag = "Alerts",
    responses((status = 200, body = AlertSettingsDto)))]
pub(crate) async fn get_alert_settings(Admin(admin): Admin) -> Reply<AlertSettingsDto> {
    Ok(Json(settings_dto(&admin.alert_settings().await?)))
}

/// Sets the thresholds: `balance_threshold_amount` null or left out turns the balance
/// alert off; `key_expiry_notice_days` left out keeps its value. A new balance threshold
/// is armed at once.
#[utoipa::path(post, path = "/v1/organizations/alert_settings", tag = "Alerts",
    request_body = SetAlertSettings,
    responses((status = 200, body = AlertSettingsDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn set_alert_settings(
    Admin(admin): Admin,
    Body(body): Body<SetAlertSettings>,
) -> Reply<AlertSettingsDto> {
    let current = admin.alert_settings().await?;
    let settings = AlertSettings {
        balance_threshold: body
            .balance_threshold_amount
            .as_deref()
            .map(|text| parse_cents("balance_threshold_amount", text))
            .transpose()?,
        key_expiry_days: body.key_expiry_notice_days.unwrap_or(current.key_expiry_days),
    };
    admin.set_alert_settings(settings).await?;
    get_alert_settings(Admin(admin)).await
}

/// The organization's newest alert deliveries (at most 100), newest first, each with
/// every attempt: when, the answer's status, the error, and when the next is due.
#[utoipa::path(get, path = "/v1/organizations/alert_deliveries", tag = "Alerts",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<AlertDeliveryDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn alert_deliveries(
    Admin(admin): Admin,
    query: QueryPairs,
) -> Reply<Page<AlertDeliveryDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin
        .alert_deliveries(DELIVERIES_LISTED_MAX)
        .await?
        .iter()
        .map(delivery_dto)
        .collect();
    Ok(Json(paginate(
        dtos,
        |dto: &AlertDeliveryDto| dto.id.clone(),
        &page,
    )?))
}
