//! Alerts: an organization's destinations and thresholds, the detection of a crossing, and
//! the delivery loop that drains the outbox by signed webhook or by email (SMTP).
//!
//! Detection rides on what a settlement already returns (`SettleOutcome::standing`: the
//! available balance and the month's spend as that write left them) and on this process's
//! cache of each organization's thresholds, so a request whose settlement crossed nothing
//! costs no query. Only a crossing goes to the store, which claims it (insert-or-nothing
//! on organization, kind and subject) and queues the deliveries in the same transaction:
//! across replicas, exactly one claim lands. A process remembers the crossings it has
//! claimed or seen claimed for `key_cache_ttl`, so a balance that stays low asks the store
//! again at most that often. A grant or purchase that lifts the balance back over the
//! threshold deletes the claim (re-arms); spend alerts are claimed per month, so a new
//! month re-arms them.
//!
//! Deliveries are leased (`lease_alert_deliveries`), sent, and recorded attempt by attempt
//! with the next attempt's time (`RetryPolicy`): a 2xx answer (or an accepted email)
//! delivers; anything else is tried again until the attempts are spent.
//!
//! The event body is JSON written here (it is what the destination receives, not a wire
//! contract of the gateway's); signing is `tollgate_core::alerts`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tollgate_core::Timestamp;
use tollgate_core::alerts::{
    AlertKind, RetryPolicy, SIGNATURE_HEADER, balance_below, kinds_received, signature_header,
    spend_limit_reached,
};
use tollgate_core::catalog::DeploymentKey;
use tollgate_core::ids::IdKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{SpendLimitReached, SpendScope};
use tollgate_store::{
    AlertChannel, AlertDelivery, AlertDestination, AlertSettings, AttemptRecord, DeliveryAttempt,
    LeasedDelivery, NewAlert, Standing,
};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::random;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP, for a local relay.
    None,
    /// Upgraded with STARTTLS before anything is sent.
    StartTls,
}

/// Certificates of authorities to trust for STARTTLS, parsed from PEM.
#[derive(Clone)]
pub struct SmtpRoots(Certificate);

impl SmtpRoots {
    /// Every certificate of a PEM text; refused when it holds none or one does not parse.
    pub fn from_pem(pem: &[u8]) -> Result<SmtpRoots, String> {
        if !pem
            .windows(CERTIFICATE_PEM_LABEL.len())
            .any(|window| window == CERTIFICATE_PEM_LABEL)
        {
            return Err("it holds no PEM certificate".to_owned());
        }
        Certificate::from_pem(pem)
            .map(SmtpRoots)
            .map_err(|error| format!("its certificates do not parse: {error}"))
    }
}

impl std::fmt::Debug for SmtpRoots {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SmtpRoots(..)")
    }
}

const CERTIFICATE_PEM_LABEL: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Where alert email goes out.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Username and password, when the relay wants them.
    pub credentials: Option<(String, String)>,
    /// Authorities a STARTTLS relay's certificate may chain to besides the public ones
    /// (a private relay's own authority).
    pub extra_roots: Option<SmtpRoots>,
    /// The `From` address.
    pub from: String,
}

/// How alerts are delivered by this process.
#[derive(Clone, Debug)]
pub struct AlertingSettings {
    pub retry: RetryPolicy,
    /// How long a leased delivery stays this process's.
    pub lease: Duration,
    /// How often the delivery loop looks for due deliveries when it found none.
    pub poll_interval: Duration,
    /// How long a webhook may take to answer.
    pub webhook_timeout: Duration,
    /// `None`: email destinations' deliveries fail with "SMTP is not configured".
    pub smtp: Option<SmtpSettings>,
    /// The notice before a key expires, for organizations that did not set one.
    pub key_expiry_days: u32,
}

impl Default for AlertingSettings {
    fn default() -> AlertingSettings {
        AlertingSettings {
            retry: RetryPolicy {
                attempts_max: 8,
                first_delay_seconds: 30,
                max_delay_seconds: 3_600,
            },
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(10),
            smtp: None,
            key_expiry_days: 7,
        }
    }
}

/// The longest notice an organization may ask before a key expires.
const KEY_NOTICE_DAYS_MAX: u32 = 365;
/// How far back a deployment's traffic makes an organization one that its going down
/// concerns: a day.
const DEPLOYMENT_AUDIENCE_WINDOW: chrono::Duration = chrono::Duration::days(1);
/// Deliveries a loop leases at once.
const LEASE_BATCH: u64 = 16;
/// Deliveries the Admin API lists at most.
pub const DELIVERIES_LISTED_MAX: u64 = 100;

/// This process's alert state: the settings, each organization's thresholds as last
/// read, and the crossings it knows are claimed.
#[derive(Default)]
pub(crate) struct AlertState {
    settings: OnceLock<AlertingSettings>,
    thresholds: Mutex<HashMap<String, (Timestamp, Option<AlertSettings>)>>,
    claimed: Mutex<HashMap<(String, AlertKind, String), Timestamp>>,
    http: OnceLock<reqwest::Client>,
}

/// A destination as created: its secret is shown this once.
#[derive(Clone, Debug)]
pub struct CreatedDestination {
    pub destination: AlertDestination,
}

impl Tollgate {
    /// Sets how this process delivers alerts; the first call wins.
    pub fn set_alerting(&self, settings: AlertingSettings) {
        let _ = self.inner.alerts.settings.set(settings);
    }

    pub(crate) fn alerting(&self) -> AlertingSettings {
        self.inner.alerts.settings.get().cloned().unwrap_or_default()
    }

    /// The organization's thresholds, the configured defaults where it set none.
    pub async fn alert_settings(&self, org_id: &str) -> Result<AlertSettings, ServiceError> {
        Ok(self
            .store()
            .alert_settings(org_id)
            .await?
            .unwrap_or(AlertSettings {
                balance_threshold: None,
                key_expiry_days: self.alerting().key_expiry_days,
            }))
    }

    pub async fn set_alert_settings(
        &self,
        org_id: &str,
        settings: AlertSettings,
    ) -> Result<(), ServiceError> {
        if settings.balance_threshold.is_some_and(NanoUsd::is_negative) {
            return Err(ServiceError::Invalid(
                "the balance threshold must not be negative".into(),
            ));
        }
        if settings.key_expiry_days > KEY_NOTICE_DAYS_MAX {
            return Err(ServiceError::Invalid(
                "the key expiry notice is 0 to 365 days".into(),
            ));
        }
        self.store()
            .set_alert_settings(org_id, settings, self.now())
            .await?;
        self.forget_alert_settings(org_id);
        // A new threshold is a new crossing to watch for.
        self.rearm(org_id, AlertKind::BalanceBelowThreshold).await
    }

    /// Adds a webhook (its secret made here) or an email destination, receiving `kinds`
    /// (`None`: every kind).
    pub async fn create_alert_destination(
        &self,
        org_id: &str,
        channel: AlertChannel,
        target: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<CreatedDestination, ServiceError> {
        let kinds = kinds.map(chosen_kinds).transpose()?.flatten();
        let target = target.trim();
        let secret = match channel {
            AlertChannel::Webhook => {
                if !(target.starts_with("https://") || target.starts_with("http://"))
                    || reqwest::Url::parse(target).is_err()
                {
                    return Err(ServiceError::Invalid(format!("'{target}' is not an http(s) URL")));
                }
                Some(format!("whsec_{}", random::secret_text()))
            }
            AlertChannel::Email => {
                if target.parse::<Mailbox>().is_err() {
                    return Err(ServiceError::Invalid(format!(
                        "'{target}' is not an email address"
                    )));
                }
                None
            }
        };
        let destination = AlertDestination {
            id: random::id(IdKind::AlertDestination),
            org_id: org_id.to_owned(),
            channel,
            target: target.to_owned(),
            secret,
            kinds,
            created_at: self.now(),
        };
        self.store().insert_alert_destination(&destination).await?;
        Ok(CreatedDestination { destination })
    }

    /// Sets which kinds one of the organization's destinations receives (`None`: every
    /// kind); the destination as it now is. Deliveries already queued stay.
    pub async fn set_alert_destination_kinds(
        &self,
        org_id: &str,
        destination_id: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<AlertDestination, ServiceError> {
        let kinds = kinds.map(chosen_kinds).transpose()?.flatten();
        self.store()
            .set_alert_destination_kinds(org_id, destination_id, kinds.as_deref())
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("no alert destination has the id '{destination_id}'"))
            })
    }

    pub async fn alert_destinations(&self, org_id: &str) -> Result<Vec<AlertDestination>, ServiceError> {
        Ok(self.store().alert_destinations(org_id).await?)
    }

    pub async fn delete_alert_destination(
        &self,
        org_id: &str,
        destination_id: &str,
    ) -> Result<(), ServiceError> {
        if self
            .store()
            .delete_alert_destination(org_id, destination_id)
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "no alert destination has the id '{destination_id}'"
            )))
        }
    }

    /// The organization's newest deliveries with their attempts.
    pub async fn alert_deliveries(
        &self,
        org_id: &str,
        limit: u64,
    ) -> Result<Vec<AlertDelivery>, ServiceError> {
        Ok(self
            .store()
            .alert_deliveries(org_id, limit.clamp(1, DELIVERIES_LISTED_MAX))
            .await?)
    }

    /// After a settlement: fires the alerts its standing crossed. No query unless one did
    /// (and this process has not seen it claimed lately); the claim runs in the background.
    pub(crate) async fn alerts_after_settlement(&self, org_id: &str, standing: Standing) {
        let threshold = self
            .cached_alert_settings(org_id)
            .await
            .and_then(|settings| settings.balance_threshold);
        let mut crossed = Vec::new();
        if let Some(threshold) = threshold
            && balance_below(Some(threshold), standing.available)
        {
            crossed.push((
                AlertKind::BalanceBelowThreshold,
                threshold.nanos().to_string(),
                format!(
                    "The available balance is {}, below the threshold of {}.",
                    standing.available, threshold
                ),
                serde_json::json!({
                    "available_nano_usd": standing.available.nanos(),
                    "threshold_nano_usd": threshold.nanos(),
                }),
            ));
        }
        if let Ok(limits) = self.organization_limits(org_id).await {
            let limit = match (limits.billing.spend_limit, limits.tier_cap()) {
                (Some(own), Some(tier)) => Some(own.min(tier)),
                (own, tier) => own.or(tier),
            };
            let month = self.now().format("%Y-%m").to_string();
            for kind in spend_limit_reached(limit, standing.month_spend) {
                let limit = limit.unwrap_or(NanoUsd::ZERO);
                crossed.push((
                    kind,
                    month.clone(),
                    format!(
                        "This month's spend is {} of the monthly limit of {}.",
                        standing.month_spend, limit
                    ),
                    serde_json::json!({
                        "month": month,
                        "spend_nano_usd": standing.month_spend.nanos(),
                        "limit_nano_usd": limit.nanos(),
                    }),
                ));
            }
        }
        for (kind, subject, summary, data) in crossed {
            self.fire_in_background(org_id, kind, subject, summary, data);
        }
    }

    /// After a request was refused for the organization's monthly limit (its own or its
    /// tier's): the 100 % alert, which a settlement rarely reaches, since admission keeps
    /// each request's bound within the limit.
    pub(crate) fn alerts_after_spend_refusal(&self, org_id: &str, reached: &SpendLimitReached) {
        if matches!(reached.scope, SpendScope::Workspace | SpendScope::User) {
            return;
        }
        let month = self.now().format("%Y-%m").to_string();
        let summary = format!(
            "The monthly spend limit of {} is reached; requests are refused until {}.",
            reached.limit,
            reached
                .resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let data = serde_json::json!({"month": month, "limit_nano_usd": reached.limit.nanos()});
        self.fire_in_background(org_id, AlertKind::SpendLimit100, month, summary, data);
    }

    /// Claims the crossing in a task of its own, unless this process noted it claimed
    /// within `key_cache_ttl`; the request never waits for it.
    fn fire_in_background(
        &self,
        org_id: &str,
        kind: AlertKind,
        subject: String,
        summary: String,
        data: serde_json::Value,
    ) {
        if !self.remember_claimed(org_id, kind, &subject) {
            return;
        }
        let tollgate = self.clone();
        let org_id = org_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = tollgate.fire(&org_id, kind, &subject, &summary, data).await {
                tracing::warn!(%error, org_id, kind = kind.as_str(), "could not fire an alert");
                tollgate.forget_claimed(&org_id, kind);
            }
        });
    }

    /// After credit arrived: re-arms the balance alert if the balance is back at or above
    /// the threshold. Only organizations with a threshold pay the balance query.
    pub(crate) async fn alerts_after_credit(&self, org_id: &str) {
        self.forget_alert_settings(org_id);
        let Some(threshold) = self
            .cached_alert_settings(org_id)
            .await
            .and_then(|settings| settings.balance_threshold)
        else {
            return;
        };
        match self.balance(org_id).await {
            Ok(balance) if !balance_below(Some(threshold), balance.available) => {
                if let Err(error) = self.rearm(org_id, AlertKind::BalanceBelowThreshold).await {
                    tracing::warn!(%error, org_id, "could not re-arm the balance alert");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, org_id, "could not read the balance to re-arm its alert"),
        }
    }

    /// Fires an alert that is an event of its own (each one a new subject), such as a
    /// declined auto-reload.
    pub(crate) async fn fire_event(&self, org_id: &str, kind: AlertKind, subject: &str, summary: &str) {
        if let Err(error) = self
            .fire(org_id, kind, subject, summary, serde_json::json!({}))
            .await
        {
            tracing::warn!(%error, org_id, kind = kind.as_str(), "could not fire an alert");
        }
    }

    /// Claims the crossing and queues its deliveries; `true` if this call's claim landed.
    pub async fn fire(
        &self,
        org_id: &str,
        kind: AlertKind,
        subject: &str,
        summary: &str,
        data: serde_json::Value,
    ) -> Result<bool, ServiceError> {
        let now = self.now();
        let event_id = random::ordered_id(IdKind::AlertEvent, now);
        let payload = serde_json::json!({
            "id": event_id,
            "type": kind.as_str(),
            "created_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "organization_id": org_id,
            "summary": summary,
            "data": data,
        });
        let fired = self
            .store()
            .fire_alert(&NewAlert {
                org_id: org_id.to_owned(),
                kind: kind.as_str().to_owned(),
                subject: subject.to_owned(),
                event_id,
                payload: payload.to_string(),
                now,
            })
            .await?;
        if let Some(queued) = fired {
            tracing::info!(org_id, kind = kind.as_str(), subject, queued, "alert fired");
        }
        Ok(fired.is_some())
    }

    /// Fires `key_expiring` for each active key that expires within its organization's
    /// notice, once per key and expiry.
    pub(crate) async fn alert_expiring_keys(&self, now: Timestamp) {
        let horizon = now + chrono::Duration::days(KEY_NOTICE_DAYS_MAX.into());
        let keys = match self.store().keys_expiring(now, horizon).await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "could not look for expiring keys");
                return;
            }
        };
        for key in keys {
            let Some(expires_at) = key.expires_at else {
                continue;
            };
            let subject = format!("{}@{}", key.id, expires_at.timestamp_millis());
            let notice_days = match self.cached_alert_settings(&key.org_id).await {
                Some(settings) => settings.key_expiry_days,
                None => self.alerting().key_expiry_days,
            };
            if expires_at - now > chrono::Duration::days(notice_days.into())
                || !self.remember_claimed(&key.org_id, AlertKind::KeyExpiring, &subject)
            {
                continue;
            }
            let summary = format!(
                "The API key '{}' ({}) expires at {}.",
                key.name,
                key.hint,
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let data = serde_json::json!({
                "api_key_id": key.id,
                "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            });
            if let Err(error) = self
                .fire(&key.org_id, AlertKind::KeyExpiring, &subject, &summary, data)
                .await
            {
                tracing::warn!(%error, key_id = key.id, "could not fire a key expiry alert");
                self.forget_claimed(&key.org_id, AlertKind::KeyExpiring);
            }
        }
    }

    /// A deployment went down (`Cooldowns::record_failure` said so) on a request of
    /// `org_id`: fires `deployment_down` for that organization, the one whose traffic
    /// found it failing, and then, in the background, for every organization with charged
    /// requests in the last day for one of `models` (the catalogue models it serves). Its
    /// subject is the deployment, so each process that sees it go down asks, and one claim
    /// per organization lands. Called only at that crossing; the first organization's claim
    /// is awaited, so that it lands before the same process can see the deployment answer
    /// and re-arm it (a later claim that lands after a re-arm is re-armed by the next
    /// success any process sees, `deployments_alerted_down`).
    pub async fn alert_deployment_down(
        &self,
        org_id: &str,
        deployment: &DeploymentKey,
        models: Vec<String>,
        cooldown: chrono::Duration,
        error: &str,
    ) {
        let subject = deployment.label();
        let summary = format!(
            "The deployment {subject} failed ({error}); requests pass it over for {} s at a time until it answers again.",
            cooldown.num_seconds()
        );
        let data = serde_json::json!({
            "provider": deployment.provider,
            "upstream_model": deployment.upstream_model,
            "models": models,
            "error": error,
            "cooldown_seconds": cooldown.num_seconds(),
        });
        let fire = move |tollgate: Tollgate, org_id: String| {
            let (subject, summary, data) = (subject.clone(), summary.clone(), data.clone());
            async move {
                if let Err(error) = tollgate
                    .fire(&org_id, AlertKind::DeploymentDown, &subject, &summary, data)
                    .await
                {
                    tracing::warn!(%error, org_id, subject = subject.as_str(), "could not fire a deployment alert");
                }
            }
        };
        fire(self.clone(), org_id.to_owned()).await;
        let (tollgate, tripped_by) = (self.clone(), org_id.to_owned());
        tokio::spawn(async move {
            let since = tollgate.now() - DEPLOYMENT_AUDIENCE_WINDOW;
            let orgs = match tollgate.store().orgs_using_models(&models, since).await {
                Ok(orgs) => orgs,
                Err(error) => {
                    tracing::warn!(%error, "could not find whom a deployment alert concerns");
                    return;
                }
            };
            for org_id in orgs.into_iter().filter(|org_id| *org_id != tripped_by) {
                fire(tollgate.clone(), org_id).await;
            }
        });
    }

    /// The deployments alerted as down that no process has seen answer since, by label
    /// (`DeploymentKey::label`): the standing `deployment_down` claims of every replica.
    pub async fn deployments_alerted_down(&self) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .store()
            .alert_subjects(AlertKind::DeploymentDown.as_str())
            .await?)
    }

    /// A deployment this process saw go down answered again: re-arms its `deployment_down`
    /// alert for every organization.
    pub async fn alert_deployment_up(&self, deployment: &DeploymentKey) {
        let subject = deployment.label();
        if let Err(error) = self
            .store()
            .rearm_alert_subject(AlertKind::DeploymentDown.as_str(), &subject)
            .await
        {
            tracing::warn!(%error, subject = subject.as_str(), "could not re-arm a deployment alert");
        }
    }

    async fn rearm(&self, org_id: &str, kind: AlertKind) -> Result<(), ServiceError> {
        self.forget_claimed(org_id, kind);
        self.store().rearm_alerts(org_id, kind.as_str()).await?;
        Ok(())
    }

    /// The organization's thresholds as this process last read them, at most
    /// `key_cache_ttl` ago; a miss reloads under the organization's lock (`single_flight`),
    /// so an expiry under load is one query.
    async fn cached_alert_settings(&self, org_id: &str) -> Option<AlertSettings> {
        let ttl = self.settings().key_cache_ttl;
        let fresh = |now: Timestamp| {
            let cache = self.inner.alerts.thresholds.lock().ok()?;
            let (loaded_at, settings) = cache.get(org_id)?;
            (now - *loaded_at < ttl).then_some(*settings)
        };
        if let Some(settings) = fresh(self.now()) {
            return settings;
        }
        let _loading = self.inner.loads.lock(&format!("alerts:{org_id}")).await;
        let now = self.now();
        if let Some(settings) = fresh(now) {
            return settings;
        }
        let loaded = match self.store().alert_settings(org_id).await {
            Ok(settings) => settings,
            Err(error) => {
                tracing::warn!(%error, org_id, "could not read the alert thresholds");
                return None;
            }
        };
        if let Ok(mut cache) = self.inner.alerts.thresholds.lock() {
            cache.insert(org_id.to_owned(), (now, loaded));
        }
        loaded
    }

    fn forget_alert_settings(&self, org_id: &str) {
        if let Ok(mut cache) = self.inner.alerts.thresholds.lock() {
            cache.remove(org_id);
        }
    }

    /// Notes the crossing as claimed; `true` if this process had not noted it within
    /// `key_cache_ttl` (so it should ask the store).
    fn remember_claimed(&self, org_id: &str, kind: AlertKind, subject: &str) -> bool {
        let now = self.now();
        let ttl = self.settings().key_cache_ttl;
        let Ok(mut claimed) = self.inner.alerts.claimed.lock() else {
            return true;
        };
        let key = (org_id.to_owned(), kind, subject.to_owned());
        match claimed.get(&key) {
            Some(noted_at) if now - *noted_at < ttl => false,
            _ => {
                claimed.insert(key, now);
                true
            }
        }
    }

    fn forget_claimed(&self, org_id: &str, kind: AlertKind) {
        if let Ok(mut claimed) = self.inner.alerts.claimed.lock() {
            claimed.retain(|(org, claimed_kind, _), _| !(org == org_id && *claimed_kind == kind));
        }
    }

    /// Leases due deliveries, sends them and records each attempt, until the process ends;
    /// `owner` names this loop in the leases.
    pub async fn run_alert_deliveries(self, owner: String) {
        loop {
            let sent = match self.deliver_due(&owner).await {
                Ok(sent) => sent,
                Err(error) => {
                    tracing::warn!(%error, "the alert delivery loop could not lease deliveries");
                    0
                }
            };
            if sent == 0 {
                tokio::time::sleep(self.alerting().poll_interval).await;
            }
        }
    }

    /// One round of the delivery loop: how many deliveries it attempted.
    pub async fn deliver_due(&self, owner: &str) -> Result<usize, ServiceError> {
        let settings = self.alerting();
        let now = self.now();
        let lease = chrono::Duration::from_std(settings.lease).unwrap_or(chrono::Duration::seconds(60));
        let leased = self
            .store()
            .lease_alert_deliveries(owner, now, now + lease, LEASE_BATCH)
            .await?;
        let attempted = leased.len();
        for delivery in leased {
            let result = self.send(&settings, &delivery).await;
            let attempted_at = self.now();
            let attempt = delivery.attempts_made + 1;
            let (delivered, response_status, error) = match result {
                Ok(status) => (true, status, None),
                Err((status, error)) => (false, status, Some(error)),
            };
            let next_attempt_at = if delivered || delivery.destination.is_none() {
                None
            } else {
                settings.retry.next_attempt(attempt, attempted_at)
            };
            let record = AttemptRecord {
                delivery_id: delivery.id.clone(),
                owner: owner.to_owned(),
                attempt: DeliveryAttempt {
                    attempt,
                    attempted_at,
                    delivered,
                    response_status,
                    error,
                    next_attempt_at,
                },
            };
            if !self.store().record_alert_attempt(&record).await? {
                tracing::warn!(
                    delivery_id = delivery.id,
                    "an alert delivery's lease lapsed before its attempt was recorded"
                );
            }
        }
        Ok(attempted)
    }

    /// Sends one delivery: the status it was answered with, or that status (if any) and
    /// what went wrong.
    async fn send(
        &self,
        settings: &AlertingSettings,
        delivery: &LeasedDelivery,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let Some(destination) = &delivery.destination else {
            return Err((None, "the destination was deleted".to_owned()));
        };
        match destination.channel {
            AlertChannel::Webhook => self.send_webhook(settings, destination, delivery).await,
            AlertChannel::Email => send_email(settings, destination, delivery).await,
        }
    }

    async fn send_webhook(
        &self,
        settings: &AlertingSettings,
        destination: &AlertDestination,
        delivery: &LeasedDelivery,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let client = self.inner.alerts.http.get_or_init(reqwest::Client::new);
        let signature = signature_header(
            destination.secret.as_deref().unwrap_or_default(),
            delivery.payload.as_bytes(),
            self.now(),
        );
        let response = client
            .post(&destination.target)
            .timeout(settings.webhook_timeout)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header("tollgate-delivery-id", &delivery.id)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(|error| (None, format!("the webhook could not be reached: {error}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(Some(status.as_u16()))
        } else {
            Err((Some(status.as_u16()), format!("the webhook answered {status}")))
        }
    }
}

/// The kinds a destination chose, as stored (`None`: every kind); at least one.
fn chosen_kinds(kinds: &[AlertKind]) -> Result<Option<Vec<AlertKind>>, ServiceError> {
    if kinds.is_empty() {
        return Err(ServiceError::Invalid(
            "choose at least one alert kind (or delete the destination)".into(),
        ));
    }
    Ok(kinds_received(kinds))
}

/// The subject and text of an alert's email, from its event.
pub fn email_text(payload: &str) -> (String, String) {
    let event: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let text = |name: &str| {
        event
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let kind = text("type");
    let title = AlertKind::parse(&kind).map_or("Alert", AlertKind::title);
    let subject = format!("[tollgate] {title} ({})", text("organization_id"));
    let body = format!(
        "{}\n\nOrganization: {}\nAlert: {kind}\nEvent: {}\nAt: {}\n",
        text("summary"),
        text("organization_id"),
        text("id"),
        text("created_at"),
    );
    (subject, body)
}

async fn send_email(
    settings: &AlertingSettings,
    destination: &AlertDestination,
    delivery: &LeasedDelivery,
) -> Result<Option<u16>, (Option<u16>, String)> {
    let Some(smtp) = &settings.smtp else {
        return Err((None, "SMTP is not configured".to_owned()));
    };
    let (subject, body) = email_text(&delivery.payload);
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|error| (None, format!("the configured from address is not valid: {error}")))?;
    let to: Mailbox = destination
        .target
        .parse()
        .map_err(|error| (None, format!("the destination is not an email address: {error}")))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .body(body)
        .map_err(|error| (None, format!("the message could not be built: {error}")))?;
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host);
    let builder = match smtp.security {
        SmtpSecurity::None => builder,
        SmtpSecurity::StartTls => {
            let mut tls = TlsParameters::builder(smtp.host.clone());
            if let Some(SmtpRoots(roots)) = &smtp.extra_roots {
                tls = tls.add_root_certificate(roots.clone());
            }
            let tls = tls
                .build()
                .map_err(|error| (None, format!("STARTTLS could not be set up: {error}")))?;
            builder.tls(Tls::Required(tls))
        }
    };
    let mut builder = builder.port(smtp.port).timeout(Some(settings.webhook_timeout));
    if let Some((username, password)) = &smtp.credentials {
        builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
    }
    let transport = builder.build();
    match transport.send(message).await {
        Ok(response) => Ok(response.code().to_string().parse().ok()),
        Err(error) => Err((
            error.status().and_then(|code| code.to_string().parse().ok()),
            format!("the SMTP relay refused the message: {error}"),
        )),
    }
}

impl crate::OrgAdmin {
    pub async fn alert_settings(&self) -> Result<AlertSettings, ServiceError> {
        self.tollgate().alert_settings(self.org_id()).await
    }

    pub async fn set_alert_settings(&self, settings: AlertSettings) -> Result<(), ServiceError> {
        self.tollgate().set_alert_settings(self.org_id(), settings).await
    }

    pub async fn create_alert_destination(
        &self,
        channel: AlertChannel,
        target: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<CreatedDestination, ServiceError> {
        self.tollgate()
            .create_alert_destination(self.org_id(), channel, target, kinds)
            .await
    }

    pub async fn set_alert_destination_kinds(
        &self,
        destination_id: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<AlertDestination, ServiceError> {
        self.tollgate()
            .set_alert_destination_kinds(self.org_id(), destination_id, kinds)
            .await
    }

    pub async fn alert_destinations(&self) -> Result<Vec<AlertDestination>, ServiceError> {
        self.tollgate().alert_destinations(self.org_id()).await
    }

    pub async fn delete_alert_destination(&self, destination_id: &str) -> Result<(), ServiceError> {
        self.tollgate()
            .delete_alert_destination(self.org_id(), destination_id)
            .await
    }

    pub async fn alert_deliveries(&self, limit: u64) -> Result<Vec<AlertDelivery>, ServiceError> {
        self.tollgate().alert_deliveries(self.org_id(), limit).await
    }
}
