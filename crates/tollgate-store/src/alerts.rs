//! Alerts: each organization's destinations and thresholds, the claims that make an alert
//! fire once per crossing, and the outbox of deliveries with every attempt.
//!
//! An alert fires by inserting its claim (organization, kind, subject) or nothing: the one
//! caller whose insert lands, on any replica, also writes one delivery per destination in
//! the same transaction; everyone else writes nothing (a destination that chose its kinds
//! gets a delivery only of those). Deleting the claim re-arms the alert. Delivery loops lease due deliveries (a lease that lapses, its loop having died,
//! lets another take the delivery) and record each attempt under their lease. No payload,
//! secret or address is read or decided here beyond storing it.
//!
//! Written once for both backends over `Dialect`; the one clause they spell differently is
//! the lease's row lock (`Dialect::skip_locked`).

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::alerts::AlertKind;
use tollgate_core::money::NanoUsd;

use crate::codec::{count_to_sql, millis, timestamp_from_sql, unknown_text};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::KeyRecord;
use crate::rollup::HOUR_MILLIS;
use crate::rows::{DbRow, KEY_COLUMNS, column, key_from_row};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertChannel {
    Webhook,
    Email,
}

impl AlertChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertChannel::Webhook => "webhook",
            AlertChannel::Email => "email",
        }
    }

    fn parse(text: &str) -> Result<AlertChannel, StoreError> {
        match text {
            "webhook" => Ok(AlertChannel::Webhook),
            "email" => Ok(AlertChannel::Email),
            other => Err(unknown_text("alert channel", other)),
        }
    }
}

/// Where an organization's alerts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertDestination {
    pub id: String,
    pub org_id: String,
    pub channel: AlertChannel,
    /// The webhook's URL or the email address.
    pub target: String,
    /// The webhook's signing secret; `None` for email.
    pub secret: Option<String>,
    /// The alert kinds it receives (`tollgate_core::alerts::kinds_received`); `None`:
    /// every kind.
    pub kinds: Option<Vec<AlertKind>>,
    pub created_at: Timestamp,
}

/// An organization's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// Alert when the available balance falls below this; `None`: never.
    pub balance_threshold: Option<NanoUsd>,
    /// Alert this many days before an API key expires.
    pub key_expiry_days: u32,
}

/// An alert to fire: its claim and the event every destination is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    pub org_id: String,
    /// `AlertKind::as_str`.
    pub kind: String,
    /// What the crossing is about: a threshold, a month, a key; one claim per subject.
    pub subject: String,
    /// The event's id; each delivery's id is this and its destination's.
    pub event_id: String,
    /// The event as JSON text.
    pub payload: String,
    pub now: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<DeliveryState, StoreError> {
        match text {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(unknown_text("delivery state", other)),
        }
    }
}

/// One attempt to deliver, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub attempted_at: Timestamp,
    pub delivered: bool,
    /// The HTTP status the webhook answered (or the SMTP reply code).
    pub response_status: Option<u16>,
    pub error: Option<String>,
    /// When the next attempt is due; `None` after the last.
    pub next_attempt_at: Option<Timestamp>,
}

/// A delivery with its attempts, oldest attempt first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertDelivery {
    pub id: String,
    pub org_id: String,
    pub destination_id: String,
    pub kind: String,
    pub payload: String,
    pub state: DeliveryState,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub attempts: Vec<DeliveryAttempt>,
}

/// A due delivery a loop leased, with where it goes (`None`: the destination was deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedDelivery {
    pub id: String,
    pub org_id: String,
    pub kind: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts_made: u32,
    pub destination: Option<AlertDestination>,
}

/// An attempt to record under the lease of `owner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub owner: String,
    pub attempt: DeliveryAttempt,
}

const DESTINATION_COLUMNS: &str = "id, org_id, channel, target, secret, kinds, created_at";

fn destination_from_row(row: &impl DbRow) -> Result<AlertDestination, StoreError> {
    Ok(AlertDestination {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        channel: AlertChannel::parse(&column::<String>(row, "channel")?)?,
        target: column(row, "target")?,
        secret: column(row, "secret")?,
        kinds: column::<Option<String>>(row, "kinds")?
            .map(|text| kinds_from_sql(&text))
            .transpose()?,
        created_at: timestamp_from_sql(column(row, "created_at")?)?,
    })
}

/// `kinds` as stored: the names, comma-separated (migration 0017).
fn kinds_to_sql(kinds: Option<&[AlertKind]>) -> Option<String> {
    kinds.map(|kinds| {
        kinds
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn kinds_from_sql(text: &str) -> Result<Vec<AlertKind>, StoreError> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| AlertKind::parse(name).ok_or_else(|| unknown_text("alert kind", name)))
        .collect()
}

fn optional_timestamp(value: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    value.map(timestamp_from_sql).transpose()
}

fn small_count(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Database(format!("count {value} out of range in the database")))
}

/// The alert queries, the same on every backend.
pub(crate) trait Alerts: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_alert_destination(&self, destination: &AlertDestination) -> Result<(), StoreError> {
        let kinds = kinds_to_sql(destination.kinds.as_deref());
        sqlx::query(
            "INSERT INTO alert_destinations (id, org_id, channel, target, secret, kinds, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(destination.id.as_str())
        .bind(destination.org_id.as_str())
        .bind(destination.channel.as_str())
        .bind(destination.target.as_str())
        .bind(destination.secret.as_deref())
        .bind(kinds.as_deref())
        .bind(millis(destination.created_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    /// The organization's destinations, oldest first.
    async fn alert_destinations(&self, org_id: &str) -> Result<Vec<AlertDestination>, StoreError> {
        let text = format!(
            "SELECT {DESTINATION_COLUMNS} FROM alert_destinations WHERE org_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&text)
            .bind(org_id)
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        rows.iter().map(destination_from_row).collect()
    }

    /// Deletes one of the organization's destinations; whether it was there. Its pending
    /// deliveries fail at their next attempt.
    async fn delete_alert_destination(&self, org_id: &str, destination_id: &str) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM alert_destinations WHERE org_id = $1 AND id = $2 RETURNING id")
                .bind(org_id)
                .bind(destination_id)
                .fetch_optional(self.write_pool())
                .await
                .map_err(Self::store_error)?;
        Ok(deleted.is_some())
    }

    /// Sets which kinds one of the organization's destinations receives (`None`: every
    /// kind); the destination as it now is, `None` if the organization has no such one.
    async fn set_alert_destination_kinds(
        &self,
        org_id: &str,
        destination_id: &str,
        kinds: Option<&[AlertKind]>,
    ) -> Result<Option<AlertDestination>, StoreError> {
        let kinds = kinds_to_sql(kinds);
        let text = format!(
            "UPDATE alert_destinations SET kinds = $3 WHERE org_id = $1 AND id = $2
             RETURNING {DESTINATION_COLUMNS}"
        );
        sqlx::query(&text)
            .bind(org_id)
            .bind(destination_id)
            .bind(kinds.as_deref())
            .fetch_optional(self.write_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| destination_from_row(&row))
            .transpose()
    }

    async fn alert_settings(&self, org_id: &str) -> Result<Option<AlertSettings>, StoreError> {
        let row = sqlx::query(
            "SELECT balance_threshold_nanos, key_expiry_days FROM alert_settings WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        row.map(|row| {
            Ok(AlertSettings {
                balance_threshold: column::<Option<i64>>(&row, "balance_threshold_nanos")?
                    .map(NanoUsd::from_nanos),
                key_expiry_days: small_count(column(&row, "key_expiry_days")?)?,
            })
        })
        .transpose()
    }

    async fn set_alert_settings(
        &self,
        org_id: &str,
        settings: AlertSettings,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_settings (org_id, balance_threshold_nanos, key_expiry_days, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id) DO UPDATE SET balance_threshold_nanos = excluded.balance_threshold_nanos,
                 key_expiry_days = excluded.key_expiry_days, updated_at = excluded.updated_at",
        )
        .bind(org_id)
        .bind(settings.balance_threshold.map(NanoUsd::nanos))
        .bind(i64::from(settings.key_expiry_days))
        .bind(millis(now))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    /// Claims the alert and, if this call's claim is the one that landed, queues one
    /// delivery per destination, in one transaction. How many deliveries were queued;
    /// `None` when the alert had fired already (its claim stands).
    async fn fire_alert(&self, alert: &NewAlert) -> Result<Option<u64>, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let claimed = sqlx::query(
            "INSERT INTO alert_claims (org_id, kind, subject, claimed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id, kind, subject) DO NOTHING RETURNING kind",
        )
        .bind(alert.org_id.as_str())
        .bind(alert.kind.as_str())
        .bind(alert.subject.as_str())
        .bind(millis(alert.now))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if claimed.is_none() {
            return Ok(None);
        }
        let queued = sqlx::query(
            "INSERT INTO alert_deliveries (id, org_id, destination_id, kind, payload, state, attempts,
                                           next_attempt_at, created_at)
             SELECT $1 || '_' || id, org_id, id, $2, $3, 'pending', 0, $4, $4
             FROM alert_destinations
             WHERE org_id = $5 AND (kinds IS NULL OR ',' || kinds || ',' LIKE '%,' || $2 || ',%')",
        )
        .bind(alert.event_id.as_str())
        .bind(alert.kind.as_str())
        .bind(alert.payload.as_str())
        .bind(millis(alert.now))
        .bind(alert.org_id.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(Some(Self::rows_affected(&queued)))
    }

    /// Deletes the organization's claims of `kind`, so the alert fires at its next
    /// crossing; how many there were.
    async fn rearm_alerts(&self, org_id: &str, kind: &str) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM alert_claims WHERE org_id = $1 AND kind = $2")
            .bind(org_id)
            .bind(kind)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted))
    }

    /// Deletes every organization's claim of `kind` on `subject` (a deployment that
    /// answered again re-arms its alert for all); how many there were.
    async fn rearm_alert_subject(&self, kind: &str, subject: &str) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM alert_claims WHERE kind = $1 AND subject = $2")
            .bind(kind)
            .bind(subject)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted))
    }

    /// The subjects of the standing claims of `kind`, each once: for `deployment_down`, the
    /// deployments alerted as down that no process has seen answer since.
    async fn alert_subjects(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT subject FROM alert_claims WHERE kind = $1 ORDER BY subject")
            .bind(kind)
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        rows.iter().map(|row| column(row, "subject")).collect()
    }

    /// The organizations with a charged request for one of `models` in an hour that ended
    /// after `since`, each once (none for no models).
    async fn orgs_using_models(
        &self,
        models: &[String],
        since: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        if models.is_empty() {
            return Ok(Vec::new());
        }
        let text = format!(
            "SELECT DISTINCT org_id FROM usage_hourly WHERE hour > $1{} ORDER BY org_id",
            Self::and_any_of("model", 2, models.len())
        );
        let query = sqlx::query(&text).bind(millis(since) - HOUR_MILLIS);
        let rows = Self::bind_any_of(query, models)
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        rows.iter().map(|row| column(row, "org_id")).collect()
    }

    /// Leases up to `limit` deliveries due at `now` that no live lease holds, to `owner`
    /// until `lease_until`.
    async fn lease_alert_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u64,
    ) -> Result<Vec<LeasedDelivery>, StoreError> {
        // The pick is a CTE, run once (as for batch claims): a `LIMIT` subquery of the
        // `WHERE` may run more than once on PostgreSQL.
        let text = format!(
            "WITH picked AS (
                 SELECT id FROM alert_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= $3
                   AND (leased_until IS NULL OR leased_until <= $3)
                 ORDER BY next_attempt_at, id LIMIT $4{})
             UPDATE alert_deliveries SET leased_by = $1, leased_until = $2
             WHERE id IN (SELECT id FROM picked) AND state = 'pending'
               AND (leased_until IS NULL OR leased_until <= $3)
             RETURNING id, org_id, destination_id, kind, payload, attempts",
            Self::skip_locked()
        );
        let rows = sqlx::query(&text)
            .bind(owner)
            .bind(millis(lease_until))
            .bind(millis(now))
            .bind(count_to_sql(limit)?)
            .fetch_all(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        let mut leased = Vec::with_capacity(rows.len());
        for row in &rows {
            let destination_id: String = column(row, "destination_id")?;
            let text = format!("SELECT {DESTINATION_COLUMNS} FROM alert_destinations WHERE id = $1");
            let destination = sqlx::query(&text)
                .bind(destination_id.as_str())
                .fetch_optional(self.write_pool())
                .await
                .map_err(Self::store_error)?
                .map(|row| destination_from_row(&row))
                .transpose()?;
            leased.push(LeasedDelivery {
                id: column(row, "id")?,
                org_id: column(row, "org_id")?,
                kind: column(row, "kind")?,
                payload: column(row, "payload")?,
                attempts_made: small_count(column(row, "attempts")?)?,
                destination,
            });
        }
        Ok(leased)
    }

    /// Records an attempt and moves the delivery on (delivered; due again at the attempt's
    /// `next_attempt_at`; failed when there is none), if `owner` still holds its lease.
    /// Whether it did.
    async fn record_alert_attempt(&self, record: &AttemptRecord) -> Result<bool, StoreError> {
        let attempt = &record.attempt;
        let state = if attempt.delivered {
            DeliveryState::Delivered
        } else if attempt.next_attempt_at.is_some() {
            DeliveryState::Pending
        } else {
            DeliveryState::Failed
        };
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let moved = sqlx::query(
            "UPDATE alert_deliveries SET state = $3, attempts = $4, next_attempt_at = $5,
                 leased_by = NULL, leased_until = NULL
             WHERE id = $1 AND leased_by = $2 AND state = 'pending' RETURNING id",
        )
        .bind(record.delivery_id.as_str())
        .bind(record.owner.as_str())
        .bind(state.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(attempt.next_attempt_at.map(millis))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if moved.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO alert_delivery_attempts (delivery_id, attempt, attempted_at, outcome,
                                                  response_status, error, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(record.delivery_id.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(millis(attempt.attempted_at))
        .bind(if attempt.delivered { "delivered" } else { "failed" })
        .bind(attempt.response_status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.next_attempt_at.map(millis))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    /// Active keys (of every organization) expiring after `now` and at or before `until`,
    /// soonest first.
    async fn keys_expiring(&self, now: Timestamp, until: Timestamp) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE status = 'active' AND expires_at > $1 AND expires_at <= $2 ORDER BY expires_at, id"))
        .bind(millis(now))
        .bind(millis(until))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        rows.iter().map(key_from_row).collect()
    }

    /// The organization's newest `limit` deliveries, newest first, each with its attempts.
    async fn alert_deliveries(&self, org_id: &str, limit: u64) -> Result<Vec<AlertDelivery>, StoreError> {
        let mut transaction = self.begin_read().await?;
        let rows = sqlx::query(
            "SELECT id, org_id, destination_id, kind, payload, state, next_attempt_at, created_at
             FROM alert_deliveries WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(org_id)
        .bind(count_to_sql(limit)?)
        .fetch_all(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = column(row, "id")?;
            let attempt_rows = sqlx::query(
                "SELECT attempt, attempted_at, outcome, response_status, error, next_attempt_at
                 FROM alert_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(id.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            let attempts = attempt_rows
                .iter()
                .map(|row| {
                    Ok(DeliveryAttempt {
                        attempt: small_count(column(row, "attempt")?)?,
                        attempted_at: timestamp_from_sql(column(row, "attempted_at")?)?,
                        delivered: column::<String>(row, "outcome")? == "delivered",
                        response_status: column::<Option<i64>>(row, "response_status")?
                            .and_then(|status| u16::try_from(status).ok()),
                        error: column(row, "error")?,
                        next_attempt_at: optional_timestamp(column(row, "next_attempt_at")?)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            deliveries.push(AlertDelivery {
                id,
                org_id: column(row, "org_id")?,
                destination_id: column(row, "destination_id")?,
                kind: column(row, "kind")?,
                payload: column(row, "payload")?,
                state: DeliveryState::parse(&column::<String>(row, "state")?)?,
                next_attempt_at: optional_timestamp(column(row, "next_attempt_at")?)?,
                created_at: timestamp_from_sql(column(row, "created_at")?)?,
                attempts,
            });
        }
        Ok(deliveries)
    }
}
