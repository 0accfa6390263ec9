//! Metering a request: a reservation for the most it can cost before the upstream call,
//! and exactly one settlement after it, for what the upstream reports it used.

use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::ModelPrices;
use tollgate_core::usage::TokenUsage;
use tollgate_store::{NewReservation, SettleOutcome, Settlement, StoreError, UsageRecord, UsageStatus};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::keys::ApiCaller;
use crate::random;

/// A reservation held for one request. Must be passed to [`Tollgate::finish`] exactly once;
/// if the process dies first, the reaper voids it after the reservation TTL.
#[derive(Debug)]
pub struct OpenReservation {
    pub reservation_id: String,
    pub request_id: String,
    pub caller: ApiCaller,
    /// Catalogue model id, as usage is reported.
    pub model: String,
    pub prices: ModelPrices,
    pub amount: NanoUsd,
    pub started_at: Timestamp,
}

/// How the request ended.
#[derive(Clone, Debug)]
pub struct Finish {
    pub usage: TokenUsage,
    pub status: UsageStatus,
    pub error_type: Option<String>,
}

/// Attempts at writing a settlement before leaving it to the reaper.
const SETTLE_ATTEMPTS: u32 = 5;

impl Tollgate {
    /// Reserves `amount` (the request's cost bound) from the caller's organization. A refusal
    /// leaves a usage record with status `refused` and changes no balance.
    pub async fn reserve(
        &self,
        caller: &ApiCaller,
        request_id: &str,
        model: &str,
        prices: ModelPrices,
        amount: NanoUsd,
    ) -> Result<OpenReservation, ServiceError> {
        let started_at = self.now();
        let reservation_id = random::id(IdKind::Reservation);
        let reserved = self
            .store()
            .reserve(NewReservation {
                reservation_id: reservation_id.clone(),
                org_id: caller.org_id.clone(),
                workspace_id: caller.workspace_id.clone(),
                api_key_id: Some(caller.key_id.clone()),
                request_id: request_id.to_owned(),
                model: model.to_owned(),
                amount,
                created_at: started_at,
                deadline: started_at + self.settings().reservation_ttl,
            })
            .await;
        match reserved {
            Ok(_) => Ok(OpenReservation {
                reservation_id,
                request_id: request_id.to_owned(),
                caller: caller.clone(),
                model: model.to_owned(),
                prices,
                amount,
                started_at,
            }),
            Err(tollgate_store::TxError::Rejected(refusal)) => {
                let record = UsageRecord {
                    request_id: request_id.to_owned(),
                    org_id: caller.org_id.clone(),
                    workspace_id: caller.workspace_id.clone(),
                    api_key_id: Some(caller.key_id.clone()),
                    model: model.to_owned(),
                    usage: TokenUsage::default(),
                    cost: NanoUsd::ZERO,
                    status: UsageStatus::Refused,
                    error_type: Some("insufficient_credit".to_owned()),
                    latency_ms: 0,
                    started_at,
                    ended_at: started_at,
                };
                if let Err(error) = self.store().insert_usage_record(record).await {
                    tracing::warn!(%error, request_id, "could not record a refused request");
                }
                Err(ServiceError::InsufficientCredit(refusal))
            }
            Err(tollgate_store::TxError::Store(error)) => Err(ServiceError::Store(error)),
        }
    }

    /// Ends the reservation: charges the cost of `finish.usage` when the request counts as
    /// delivered (succeeded, or the client left mid-way), otherwise voids it. Retries a
    /// failed write a few times; ending twice is a no-op in the store.
    pub async fn finish(&self, open: OpenReservation, finish: Finish) -> Result<SettleOutcome, ServiceError> {
        let charged = matches!(
            finish.status,
            UsageStatus::Succeeded | UsageStatus::ClientDisconnected
        );
        let cost = if charged {
            // Saturating: a cost beyond i64 is far above any reservation and gets capped there.
            open.prices.cost(&finish.usage).unwrap_or(NanoUsd::MAX)
        } else {
            NanoUsd::ZERO
        };
        let ended_at = self.now();
        let latency_ms = u64::try_from((ended_at - open.started_at).num_milliseconds()).unwrap_or(0);
        let settlement = Settlement {
            reservation_id: open.reservation_id.clone(),
            cost,
            now: ended_at,
            record: UsageRecord {
                request_id: open.request_id.clone(),
                org_id: open.caller.org_id.clone(),
                workspace_id: open.caller.workspace_id.clone(),
                api_key_id: Some(open.caller.key_id.clone()),
                model: open.model.clone(),
                usage: finish.usage,
                cost,
                status: finish.status,
                error_type: finish.error_type,
                latency_ms,
                started_at: open.started_at,
                ended_at,
            },
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store().settle(settlement.clone()).await {
                Ok(outcome) => {
                    if outcome.uncovered.is_positive() {
                        tracing::error!(
                            reservation_id = open.reservation_id,
                            uncovered = %outcome.uncovered,
                            "cost exceeded its reservation; the charge was capped"
                        );
                    }
                    return Ok(outcome);
                }
                Err(error) if attempt < SETTLE_ATTEMPTS && is_transient(&error) => {
                    tracing::warn!(%error, attempt, reservation_id = open.reservation_id, "settlement failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(%error, reservation_id = open.reservation_id, "settlement failed; the reaper will void the reservation");
                    return Err(ServiceError::Store(error));
                }
            }
        }
    }
}

fn is_transient(error: &StoreError) -> bool {
    error.is_retryable() || matches!(error, StoreError::Database(_))
}
