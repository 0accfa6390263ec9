//! Message Batches: creating a batch reserves every request's cost bound at the Batch rate
//! (`Multipliers::batch`, half the standard prices, rounded up once), each as a reservation of its own through the
//! ledger's one path, all or nothing; a runner then claims requests, runs each on the
//! reservation made for it (`Tollgate::adopt`) and records its result; a request that ends
//! without running (canceled, expired) or that errors has its reservation voided. The
//! maintenance pass expires batches past their lifetime and deletes results kept long
//! enough. A request that a provider's own Batches API runs is claimed with the others of
//! its group, its provider batch recorded under that claim, and settled from the usage the
//! provider reported (`Tollgate::adopt_upstream`, then `finish`) behind the same fence.
//!
//! Params and results are wire JSON the HTTP crate writes; here they are opaque text.

use chrono::Duration;
use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::InsufficientCredit;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::check_spend;
use tollgate_core::usage::TokenUsage;
use tollgate_store::{
    BatchDeletion, BatchPage, BatchRequestState, BatchResult, ClaimedBatchRequest, MessageBatch,
    NewBatchRequest, NewMessageBatch, NewReservation, ReserveRejection, Settlement, TxError,
    UnrunBatchRequest, UsageRecord, UsageStatus,
};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::keys::{ApiCaller, AuthRefusal, check_record};
use crate::limits::spend_limits_of;
use crate::random;

/// A batch processes for this long; what has not run by then expires.
pub const BATCH_LIFETIME_HOURS: i64 = 24;
/// An ended batch's results are kept this long, then deleted.
pub const BATCH_RESULTS_KEPT_DAYS: i64 = 29;
/// A request's reservation outlives its batch's expiry by this much, so the reaper leaves
/// it alone while the batch lives and the batch's own end voids it first.
const RESERVATION_MARGIN_HOURS: i64 = 1;
/// Reservations written at once while a batch is created (the writer commits them in
/// groups).
const RESERVATIONS_IN_FLIGHT: usize = 64;

/// One request of a batch to create, validated and bounded by the HTTP crate.
#[derive(Clone, Debug)]
pub struct BatchRequestPlan {
    pub custom_id: String,
    /// The Messages request body, as JSON text.
    pub params: String,
    /// Catalogue model id.
    pub model: String,
    /// A true upper bound of the request's cost at standard prices.
    pub cost_bound: NanoUsd,
    /// The provider whose own Batches API runs it; `None`: the local runner does.
    pub upstream_provider: Option<String>,
}

/// The Anthropic headers a batch was created with; its provider batches are sent with them.
#[derive(Clone, Debug, Default)]
pub struct BatchHeaders {
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
}

/// What the maintenance pass did to batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMaintenance {
    pub requests_expired: usize,
    pub batches_ended: u64,
    pub batches_archived: u64,
}

impl Tollgate {
    /// Creates a batch in the caller's workspace, reserving each request's bound at the
    /// Batch rate. All or nothing: if any reservation is refused, those made are voided,
    /// no batch is written, and the refusal is returned as `begin` returns it.
    pub async fn create_message_batch(
        &self,
        caller: &ApiCaller,
        plans: Vec<BatchRequestPlan>,
        headers: BatchHeaders,
    ) -> Result<MessageBatch, ServiceError> {
        let now = self.now();
        let expires_at = now + Duration::hours(BATCH_LIFETIME_HOURS);
        let organization = self.organization_limits(&caller.org_id).await?;
        let workspace = self.workspace_limits(&caller.workspace_id).await?;
        let spend_limits = spend_limits_of(caller, &organization, &workspace);
        let requests: Vec<NewBatchRequest> = plans
            .into_iter()
            .map(|plan| NewBatchRequest {
                custom_id: plan.custom_id,
                request_id: random::ordered_id(IdKind::Request, now),
                model: plan.model,
                params: plan.params,
                reservation_id: random::ordered_id(IdKind::Reservation, now),
                // Already at the Batch rate: the gateway bounds each request with it.
                amount: plan.cost_bound,
                upstream_provider: plan.upstream_provider,
            })
            .collect();
        // A batch that cannot fit is refused before anything is written: its whole bound
        // against the month's spend limits, then the credit, as the ledger's book decides
        // each reservation. One that passes here may still be refused below (another
        // request reserved meanwhile); then the reservations made are voided.
        let total = requests
            .iter()
            .try_fold(NanoUsd::ZERO, |sum, request| sum.checked_add(request.amount))
            .unwrap_or(NanoUsd::MAX);
        let mut spent = self
            .store()
            .month_spend(&caller.org_id, &caller.workspace_id, now)
            .await?;
        if let Some(user_id) = &caller.user_id {
            spent.user = self
                .store()
                .user_month_spend(&caller.org_id, &caller.workspace_id, user_id, now)
                .await?;
        }
        check_spend(&spend_limits, &spent, total, now)?;
        let available = self.store().balance(&caller.org_id, now).await?.available;
        if total > available {
            return Err(ServiceError::InsufficientCredit(InsufficientCredit {
                available,
                required: total,
            }));
        }
        let mut made: Vec<&NewBatchRequest> = Vec::with_capacity(requests.len());
        let mut refusal = None;
        for chunk in requests.chunks(RESERVATIONS_IN_FLIGHT) {
            let mut tasks = tokio::task::JoinSet::new();
            for (index, request) in chunk.iter().enumerate() {
                let store = self.store().clone();
                let reservation = NewReservation {
                    reservation_id: request.reservation_id.clone(),
                    org_id: caller.org_id.clone(),
                    workspace_id: caller.workspace_id.clone(),
                    api_key_id: Some(caller.key_id.clone()),
                    user_id: caller.user_id.clone(),
                    request_id: request.request_id.clone(),
                    model: request.model.clone(),
                    amount: request.amount,
                    created_at: now,
                    deadline: expires_at + Duration::hours(RESERVATION_MARGIN_HOURS),
                    spend_limits,
                    written_at_settlement: false,
                };
                tasks.spawn(async move { (index, store.reserve(reservation).await) });
            }
            while let Some(joined) = tasks.join_next().await {
                let (index, reserved) = joined.map_err(|error| {
                    ServiceError::Unavailable(format!("a reservation task failed: {error}"))
                })?;
                match reserved {
                    Ok(_) => made.push(&chunk[index]),
                    Err(error) => {
                        refusal.get_or_insert(error);
                    }
                }
            }
            if refusal.is_some() {
                break;
            }
        }
        let batch = NewMessageBatch {
            id: random::ordered_id(IdKind::MessageBatch, now),
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            api_key_id: caller.key_id.clone(),
            created_at: now,
            expires_at,
            anthropic_version: headers.anthropic_version,
            anthropic_beta: headers.anthropic_beta,
        };
        let written = match refusal {
            Some(error) => Err(match error {
                TxError::Rejected(ReserveRejection::InsufficientCredit(refused)) => {
                    ServiceError::InsufficientCredit(refused)
                }
                TxError::Rejected(ReserveRejection::SpendLimitReached(reached)) => {
                    ServiceError::SpendLimitReached(reached)
                }
                TxError::Store(error) => ServiceError::Store(error),
            }),
            None => self
                .store()
                .insert_message_batch(&batch, &requests)
                .await
                .map_err(ServiceError::Store),
        };
        if let Err(error) = written {
            for request in made {
                self.void_batch_reservation(
                    caller,
                    &request.request_id,
                    &request.model,
                    &request.reservation_id,
                    UsageStatus::Refused,
                    "batch_refused",
                )
                .await;
            }
            return Err(error);
        }
        self.message_batch(caller, &batch.id).await
    }

    /// The caller's workspace's batch; another's is not found.
    pub async fn message_batch(
        &self,
        caller: &ApiCaller,
        batch_id: &str,
    ) -> Result<MessageBatch, ServiceError> {
        self.store()
            .message_batch(&caller.workspace_id, batch_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("message_batch: {batch_id}")))
    }

    /// Up to `limit` of the caller's workspace's batches, newest first.
    pub async fn message_batches(
        &self,
        caller: &ApiCaller,
        page: &BatchPage,
        limit: u64,
    ) -> Result<Vec<MessageBatch>, ServiceError> {
        Ok(self
            .store()
            .message_batches(&caller.workspace_id, page, limit)
            .await?)
    }

    /// Starts canceling the batch: its requests not yet running end `canceled` and their
    /// reservations are voided; those running finish as they will.
    pub async fn cancel_message_batch(
        &self,
        caller: &ApiCaller,
        batch_id: &str,
    ) -> Result<MessageBatch, ServiceError> {
        let now = self.now();
        let canceled = self
            .store()
            .cancel_message_batch(&caller.workspace_id, batch_id, now)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("message_batch: {batch_id}")))?;
        self.void_unrun(canceled).await;
        self.store().end_finished_batches(now).await?;
        self.message_batch(caller, batch_id).await
    }

    /// Deletes an ended batch; one still processing is refused.
    pub async fn delete_message_batch(&self, caller: &ApiCaller, batch_id: &str) -> Result<(), ServiceError> {
        match self
            .store()
            .delete_message_batch(&caller.workspace_id, batch_id)
            .await?
        {
            BatchDeletion::Deleted => Ok(()),
            BatchDeletion::NotFound => Err(ServiceError::NotFound(format!("message_batch: {batch_id}"))),
            BatchDeletion::NotEnded => Err(ServiceError::Invalid(format!(
                "Message Batch {batch_id} cannot be deleted while it is still processing. Cancel it first."
            ))),
        }
    }

    /// The results of an ended batch, in the order its requests were given.
    pub async fn message_batch_results(
        &self,
        caller: &ApiCaller,
        batch_id: &str,
    ) -> Result<Vec<BatchResult>, ServiceError> {
        let batch = self.message_batch(caller, batch_id).await?;
        if batch.ended_at.is_none() {
            return Err(ServiceError::Invalid(format!(
                "Message Batch {batch_id} has not yet ended; its results are not available."
            )));
        }
        if batch.archived_at.is_some() {
            return Err(ServiceError::NotFound(format!(
                "Message Batch {batch_id}'s results have been deleted."
            )));
        }
        self.store()
            .message_batch_results(&caller.workspace_id, batch_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("message_batch: {batch_id}")))
    }

    /// Claims up to `limit` requests for the runner `owner`, leased for `lease`.
    pub async fn claim_batch_requests(
        &self,
        owner: &str,
        lease: Duration,
        limit: u64,
    ) -> Result<Vec<ClaimedBatchRequest>, ServiceError> {
        let now = self.now();
        Ok(self
            .store()
            .claim_batch_requests(owner, now, now + lease, limit)
            .await?)
    }

    /// Claims for the runner `owner`, leased for `lease`, the pending requests of one batch
    /// that go to one provider's own Batches API; empty when no such group is free.
    pub async fn claim_upstream_batch_requests(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedBatchRequest>, ServiceError> {
        let now = self.now();
        Ok(self
            .store()
            .claim_upstream_batch_requests(owner, now, now + lease)
            .await?)
    }

    /// Writes the provider batch a claimed request went into, while its claim is still the
    /// request's: whoever claims it next polls that provider batch rather than submit it
    /// again. False: another runner took the request over.
    pub async fn record_upstream_batch(
        &self,
        claimed: &ClaimedBatchRequest,
        upstream_batch_id: &str,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .store()
            .record_upstream_batch(&claimed.request_id, claimed.attempt, upstream_batch_id)
            .await?)
    }

    /// Renews the runner's leases on requests it is still running.
    pub async fn extend_batch_claims(
        &self,
        owner: &str,
        request_ids: &[String],
        lease: Duration,
    ) -> Result<usize, ServiceError> {
        let until = self.now() + lease;
        Ok(self
            .store()
            .extend_batch_claims(owner, request_ids, until)
            .await?)
    }

    /// Records a claimed request's result, while the claim is still the request's: a
    /// runner that stalled past its lease, whose request another runner re-claimed, changes
    /// nothing (false). A `succeeded` request was settled by the metered call before this
    /// is called (behind the same claim's fence), so one run again after a crash is not
    /// charged twice. An `errored` one's reservation is voided once its result is written
    /// (a no-op if the metered call ended it already; if this is cut short in between,
    /// the reaper voids it).
    pub async fn end_batch_request(
        &self,
        claimed: &ClaimedBatchRequest,
        state: BatchRequestState,
        result: &str,
    ) -> Result<bool, ServiceError> {
        let ended = self
            .store()
            .end_batch_request(&claimed.request_id, claimed.attempt, state, result, self.now())
            .await?;
        if ended && state != BatchRequestState::Succeeded {
            let caller = batch_caller(claimed);
            // A provider's own batch reports canceled and expired requests too.
            let (status, why) = match state {
                BatchRequestState::Canceled => (UsageStatus::Abandoned, "batch_request_canceled"),
                BatchRequestState::Expired => (UsageStatus::Abandoned, "batch_request_expired"),
                _ => (UsageStatus::Failed, "batch_request_errored"),
            };
            self.void_batch_reservation(
                &caller,
                &claimed.request_id,
                &claimed.model,
                &claimed.reservation_id,
                status,
                why,
            )
            .await;
        }
        Ok(ended)
    }

    /// Expires what batches past their lifetime have not run (voiding its reservations),
    /// ends batches with nothing left pending, and deletes results kept long enough.
    pub async fn maintain_batches(&self) -> Result<BatchMaintenance, ServiceError> {
        let now = self.now();
        let expired = self.store().expire_message_batches(now).await?;
        let requests_expired = expired.len();
        self.void_unrun(expired).await;
        Ok(BatchMaintenance {
            requests_expired,
            batches_ended: self.store().end_finished_batches(now).await?,
            batches_archived: self
                .store()
                .archive_message_batches(now - Duration::days(BATCH_RESULTS_KEPT_DAYS), now)
                .await?,
        })
    }

    async fn void_unrun(&self, requests: Vec<UnrunBatchRequest>) {
        for request in requests {
            let caller = ApiCaller::of_key(&request.api_key_id, &request.org_id, &request.workspace_id);
            let why = match request.state {
                BatchRequestState::Expired => "batch_request_expired",
                _ => "batch_request_canceled",
            };
            self.void_batch_reservation(
                &caller,
                &request.request_id,
                &request.model,
                &request.reservation_id,
                UsageStatus::Abandoned,
                why,
            )
            .await;
        }
    }

    /// Ends a batch request's reservation at no charge. One that fails here stays pending
    /// until its deadline, when the reaper voids it.
    async fn void_batch_reservation(
        &self,
        caller: &ApiCaller,
        request_id: &str,
        model: &str,
        reservation_id: &str,
        status: UsageStatus,
        why: &str,
    ) {
        let now: Timestamp = self.now();
        let settlement = Settlement {
            reservation_id: reservation_id.to_owned(),
            cost: NanoUsd::ZERO,
            now,
            record: UsageRecord {
                request_id: request_id.to_owned(),
                org_id: caller.org_id.clone(),
                workspace_id: caller.workspace_id.clone(),
                api_key_id: Some(caller.key_id.clone()),
                model: model.to_owned(),
                usage: TokenUsage::default(),
                cost: NanoUsd::ZERO,
                status,
                error_type: Some(why.to_owned()),
                latency_ms: 0,
                started_at: now,
                ended_at: now,
                attribution: Default::default(),
                served_model: None,
                multipliers: tollgate_core::pricing::Multipliers {
                    batch: true,
                    ..Default::default()
                },
                lines: Default::default(),
                upstream_attempts: Vec::new(),
            },
        };
        if let Err(error) = self.store().settle(settlement).await {
            tracing::warn!(%error, reservation_id, "could not void a batch request's reservation; the reaper will");
        }
    }
}

/// Whom a claimed request is billed to: the key that created its batch, vouched for
/// (any model): for reading its batch and for ending or settling what already ran.
pub fn batch_caller(claimed: &ClaimedBatchRequest) -> ApiCaller {
    ApiCaller::of_key(&claimed.api_key_id, &claimed.org_id, &claimed.workspace_id)
}

impl Tollgate {
    /// The caller a claimed request is about to run as: the key that created its batch as
    /// it stands now. A key disabled, archived or expired since (a personal key of a removed
    /// user among them) runs nothing more, and its allowed models are those of now, so a
    /// request for a model taken off the key's list is refused when it comes to run.
    pub async fn batch_runner_caller(&self, claimed: &ClaimedBatchRequest) -> Result<ApiCaller, AuthRefusal> {
        let record = self
            .store()
            .key(&claimed.api_key_id)
            .await?
            .ok_or(AuthRefusal::Unknown)?;
        let record = check_record(record, KeyKind::Api, self.now())?;
        Ok(ApiCaller {
            allowed_models: record.allowed_models,
            user_id: record.user_id,
            ..batch_caller(claimed)
        })
    }
}
