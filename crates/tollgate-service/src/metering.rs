//! Metering a request. Before the upstream call: rate-limit admission in every scope
//! (organization, and the workspace where it sets lower limits), then a reservation for the
//! most the request can cost, checked against every monthly spend limit and the credit.
//! Either all of it is admitted or none: a refused reservation gives the rate-limit tokens
//! back. After the call: exactly one settlement for what the upstream reports it used, and
//! the token buckets corrected from the admission estimates to the actual counts.
//!
//! Cancellation: admission and the reservation run in a task of their own, and an
//! [`OpenReservation`] dropped without [`Tollgate::finish`] ends itself, at no charge. A
//! client that leaves while its hold is being written (its handler is dropped there) thus
//! leaves no hold behind, and no rate-limit tokens beyond its one request.

use std::sync::Arc;

use tokio::sync::oneshot;
use tollgate_core::Timestamp;
use tollgate_core::attribution::Attribution;
use tollgate_core::catalog::{Model, UpstreamAttempt};
use tollgate_core::ids::IdKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::{ModelPrices, Multipliers};
use tollgate_core::ratelimit::BucketSnapshot;
use tollgate_core::ratelimit::prompt_cache::{CacheablePrefixes, split_input_estimate};
use tollgate_core::usage::TokenUsage;
use tollgate_limiter::{BucketKey, Demand, LimitRefusal, Metric};
use tollgate_store::{
    NewReservation, ReservationCommit, ReserveRejection, SettleOutcome, Settlement, StoreError, TxError,
    UsageRecord, UsageStatus, WorkspaceLimits,
};

use crate::Tollgate;
use crate::concurrency::CallSlot;
use crate::error::{LimitScope, RateLimited, ServiceError};
use crate::heartbeat::Live;
use crate::keys::ApiCaller;
use crate::limits::{OrganizationLimits, prompt_cache_scope, spend_limits_of, workspace_rate_limits};
use crate::random;
use crate::telemetry;

/// What the gateway knows about a request before calling the upstream.
#[derive(Clone, Copy, Debug)]
pub struct RequestPlan<'a> {
    pub request_id: &'a str,
    pub model: &'a Model,
    /// A true upper bound of the request's cost: what is reserved.
    pub cost_bound: NanoUsd,
    /// Input tokens as estimated at admission (cache reads can't be told apart yet).
    pub input_tokens_estimate: u64,
    pub max_tokens: u64,
    /// The client's session and agent ids, kept on the usage record for reports.
    pub attribution: &'a Attribution,
    /// The multipliers the request asked for (fast mode, data residency, batch): included
    /// in `cost_bound` by the caller, applied at settlement as the upstream's usage says.
    pub multipliers: Multipliers,
    /// When the request was admitted, as its prices count it: the rates in force then
    /// price it. Now for a request made now; its batch's creation for a batch request.
    pub priced_at: Timestamp,
    /// Nothing reaches the client before `finish` has written the settlement (a whole
    /// reply, not a stream): the store may hold the credit in memory until then
    /// (`NewReservation::written_at_settlement`).
    pub settled_before_reply: bool,
}

/// The `anthropic-ratelimit-*` figures after admission: per metric, the scope with the
/// least room left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitView {
    pub requests: BucketSnapshot,
    pub input_tokens: BucketSnapshot,
    pub output_tokens: BucketSnapshot,
}

impl RateLimitView {
    /// The most restrictive token limit in effect (for `anthropic-ratelimit-tokens-*`).
    pub fn tokens(&self) -> BucketSnapshot {
        if self.output_tokens.remaining < self.input_tokens.remaining {
            self.output_tokens
        } else {
            self.input_tokens
        }
    }
}

/// A request admitted and holding a reservation. Passed to [`Tollgate::finish`] exactly
/// once; dropped without it, it is ended as a request its client left before any upstream
/// call (no charge). If the process dies first, the reaper voids it after the reservation
/// TTL.
#[derive(Debug)]
pub struct OpenReservation {
    pub reservation_id: String,
    pub request_id: String,
    pub caller: ApiCaller,
    /// Catalogue model id, as usage is reported.
    pub model: String,
    /// The prices in force when the request was admitted (the model's, then those of the
    /// deployment that answered).
    pub prices: ModelPrices,
    /// What the request asked for; what applies is decided at settlement.
    pub multipliers: Multipliers,
    /// The model the upstream said served the request, when another catalogue model than
    /// `model` (a server-side fallback; `prices` are then its prices).
    pub served_model: Option<String>,
    /// The upstream calls made so far, in order; written on the usage record.
    pub upstream_attempts: Vec<UpstreamAttempt>,
    pub amount: NanoUsd,
    pub started_at: Timestamp,
    /// When the request was admitted, as its prices count it (`RequestPlan::priced_at`).
    pub priced_at: Timestamp,
    pub rate_limits: RateLimitView,
    admitted: Vec<Demand>,
    /// The prompt-cache scope and the request's cacheable prefixes, remembered when the
    /// upstream reports caching for it.
    prompt_cache: Option<(String, CacheablePrefixes)>,
    /// Written on the usage record when the reservation ends.
    attribution: Attribution,
    /// The organization's slot for a call in flight, freed when the reservation ends.
    slot: Option<CallSlot>,
    /// Keeps the reservation's deadline moving while the request runs (`heartbeat.rs`).
    live: Option<Live>,
    /// For a request of a Message Batch, the runner's claim on it: the settlement is
    /// written only while the claim is still the request's (`Store::fence_batch_claim`).
    batch_claim: Option<BatchClaim>,
    /// Who ends the reservation if it is dropped unfinished; `None` once it is being ended.
    owner: Owner,
    /// The reservation's commit while the caller has not awaited it (`take_commit`): the
    /// book decided it, its batch may still be writing it.
    commit: Option<ReservationCommit>,
}

impl OpenReservation {
    /// The reservation's commit, for the caller to await beside its upstream call and
    /// before anything reaches its client; then [`Tollgate::committed`]. `finish` awaits it
    /// if the caller has not.
    pub fn take_commit(&mut self) -> ReservationCommit {
        self.commit
            .take()
            .unwrap_or_else(ReservationCommit::committed_already)
    }
}

/// The façade an unfinished reservation goes back to when it is dropped.
struct Owner(Option<Tollgate>);

impl std::fmt::Debug for Owner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.0.is_some() {
            "Owner(armed)"
        } else {
            "Owner(disarmed)"
        })
    }
}

impl Drop for OpenReservation {
    fn drop(&mut self) {
        let Some(tollgate) = self.owner.0.take() else {
            return;
        };
        let open = OpenReservation {
            reservation_id: std::mem::take(&mut self.reservation_id),
            request_id: std::mem::take(&mut self.request_id),
            caller: self.caller.clone(),
            model: std::mem::take(&mut self.model),
            prices: self.prices.clone(),
            multipliers: self.multipliers,
            served_model: self.served_model.take(),
            upstream_attempts: std::mem::take(&mut self.upstream_attempts),
            amount: self.amount,
            started_at: self.started_at,
            priced_at: self.priced_at,
            rate_limits: self.rate_limits,
            admitted: std::mem::take(&mut self.admitted),
            prompt_cache: self.prompt_cache.take(),
            attribution: std::mem::take(&mut self.attribution),
            slot: self.slot.take(),
            live: self.live.take(),
            batch_claim: self.batch_claim.take(),
            owner: Owner(None),
            commit: self.commit.take(),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                reservation_id = open.reservation_id,
                "a reservation was dropped outside the runtime; the reaper will void it"
            );
            return;
        };
        tracing::debug!(
            reservation_id = open.reservation_id,
            "a reservation was dropped unfinished; ending it at no charge"
        );
        runtime.spawn(async move {
            let abandoned = Finish {
                usage: TokenUsage::default(),
                status: UsageStatus::ClientDisconnected,
                error_type: None,
            };
            if let Err(error) = tollgate.finish(open, abandoned).await {
                tracing::error!(%error, "could not end an abandoned reservation");
            }
        });
    }
}

/// A batch runner's claim on the request it runs: which attempt, and how long the fence
/// before its settlement holds the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchClaim {
    pub attempt: u64,
    pub lease: chrono::Duration,
}

/// How the request ended.
#[derive(Clone, Debug)]
pub struct Finish {
    pub usage: TokenUsage,
    pub status: UsageStatus,
    pub error_type: Option<String>,
}

/// Attempts at writing a settlement before keeping it pending (`pending.rs`).
const SETTLE_ATTEMPTS: u32 = 5;

fn demand(scope_id: &str, class: &str, metric: Metric, per_minute: u64, amount: u64) -> Demand {
    Demand {
        key: BucketKey {
            scope_id: scope_id.to_owned(),
            model_class: class.to_owned(),
            metric,
        },
        per_minute,
        amount,
        credit: 0,
    }
}

impl Tollgate {
    /// Admits the request against every rate limit and reserves its cost bound, returning
    /// once the reservation is written. A refusal changes no bucket and no balance, and
    /// leaves a usage record with status `refused`.
    pub async fn begin(
        &self,
        caller: &ApiCaller,
        plan: RequestPlan<'_>,
    ) -> Result<OpenReservation, ServiceError> {
        let mut open = self
            .begin_cached(caller, plan, CacheablePrefixes::default())
            .await?;
        let commit = open.take_commit();
        self.committed(open, commit.committed().await).await
    }

    /// [`Tollgate::begin`] for a request whose prompt has cacheable prefixes, returning as
    /// soon as the writer's book has decided the reservation: the caller starts its upstream
    /// call and awaits [`OpenReservation::take_commit`] beside it, then
    /// [`Tollgate::committed`], before anything reaches its client. The input
    /// the upstream is expected to read from its cache (up to a prefix this organization
    /// had cached for the model, and not yet expired) need not fit the input-token buckets:
    /// it is taken on credit and given back at settlement if the upstream reports reading
    /// it (cache reads do not count against input limits), so a conversation's next turn
    /// waits only for its new input. See `tollgate_core::ratelimit` for the bound this keeps.
    pub async fn begin_cached(
        &self,
        caller: &ApiCaller,
        plan: RequestPlan<'_>,
        cacheable_prefixes: CacheablePrefixes,
    ) -> Result<OpenReservation, ServiceError> {
        let started_at = self.now();
        let (mut demands, organization, workspace) = self.rate_demands(caller, &plan).await?;
        let cache_scope = prompt_cache_scope(&caller.org_id, &plan.model.id);
        let cache_read_expected =
            self.inner
                .limits_cache
                .cache_read_expected(&cache_scope, &cacheable_prefixes, started_at);
        if cache_read_expected > 0 {
            let (amount, credit) = split_input_estimate(plan.input_tokens_estimate, cache_read_expected);
            for input in demands
                .iter_mut()
                .filter(|demand| demand.key.metric == Metric::InputTokens)
            {
                input.amount = amount;
                input.credit = credit;
            }
        }
        let reservation = NewReservation {
            reservation_id: random::ordered_id(IdKind::Reservation, started_at),
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            api_key_id: Some(caller.key_id.clone()),
            user_id: caller.user_id.clone(),
            request_id: plan.request_id.to_owned(),
            model: plan.model.id.clone(),
            amount: plan.cost_bound,
            created_at: started_at,
            deadline: started_at + self.settings().reservation_ttl,
            spend_limits: spend_limits_of(caller, &organization, &workspace),
            written_at_settlement: plan.settled_before_reply,
        };
        // From here on the buckets and the ledger change: the work runs in its own task,
        // which a dropped caller cannot cut short. Its reservation, left unreceived, is
        // dropped there and so ended.
        // Counted before anything is taken: a refusal here costs no rate-limit tokens.
        let slot = self
            .inner
            .in_flight
            .try_take(&caller.org_id)
            .map_err(|limit| ServiceError::TooManyConcurrentCalls { limit })?;
        let (answer, answered) = oneshot::channel();
        let tollgate = self.clone();
        let caller = caller.clone();
        // Priced at the rates in force when the request was admitted.
        let prices = plan.model.prices.at(plan.priced_at).clone();
        let priced_at = plan.priced_at;
        let multipliers = plan.multipliers;
        let attribution = plan.attribution.clone();
        // Boxed: the task then holds a pointer, and spawning it copies no large future.
        tokio::spawn(Box::pin(async move {
            let admitted = tollgate
                .admit_and_reserve(
                    caller,
                    demands,
                    reservation,
                    (prices, multipliers, priced_at),
                    slot,
                    attribution,
                )
                .await;
            let _ = answer.send(admitted);
        }));
        let mut open = answered.await.map_err(|_| {
            ServiceError::Unavailable("the admission task ended without an answer".to_owned())
        })??;
        if !cacheable_prefixes.is_empty() {
            open.prompt_cache = Some((cache_scope, cacheable_prefixes));
        }
        Ok(open)
    }

    /// What admission takes from each bucket for the request: requests, input and output
    /// tokens, for the organization and, where it sets lower limits, the workspace; with
    /// the limits they were read from.
    async fn rate_demands(
        &self,
        caller: &ApiCaller,
        plan: &RequestPlan<'_>,
    ) -> Result<(Vec<Demand>, Arc<OrganizationLimits>, Arc<WorkspaceLimits>), ServiceError> {
        let organization = self.organization_limits(&caller.org_id).await?;
        let workspace = self.workspace_limits(&caller.workspace_id).await?;
        let class = plan.model.class.as_str();
        let org_limits = organization.rate_limits(class).ok_or_else(|| {
            ServiceError::Invalid(format!("no rate limits are configured for model class '{class}'"))
        })?;
        // Output is estimated from max_tokens but never beyond the bucket: a request asking
        // for more than a minute's output (Claude Code asks for up to 64,000) waits for a
        // full bucket instead of being refused forever, and settlement corrects the count.
        let output_estimate = |per_minute: u64| plan.max_tokens.min(per_minute);
        let mut demands = vec![
            demand(
                &caller.org_id,
                class,
                Metric::Requests,
                org_limits.requests_per_minute,
                1,
            ),
            demand(
                &caller.org_id,
                class,
                Metric::InputTokens,
                org_limits.input_tokens_per_minute,
                plan.input_tokens_estimate,
            ),
            demand(
                &caller.org_id,
                class,
                Metric::OutputTokens,
                org_limits.output_tokens_per_minute,
                output_estimate(org_limits.output_tokens_per_minute),
            ),
        ];
        if let Some(overrides) = workspace.rate_limits.get(class) {
            let limits = workspace_rate_limits(org_limits, overrides);
            let scoped = [
                (
                    overrides.requests_per_minute,
                    Metric::Requests,
                    limits.requests_per_minute,
                    1,
                ),
                (
                    overrides.input_tokens_per_minute,
                    Metric::InputTokens,
                    limits.input_tokens_per_minute,
                    plan.input_tokens_estimate,
                ),
                (
                    overrides.output_tokens_per_minute,
                    Metric::OutputTokens,
                    limits.output_tokens_per_minute,
                    output_estimate(limits.output_tokens_per_minute),
                ),
            ];
            for (set, metric, per_minute, amount) in scoped {
                if set.is_some() {
                    demands.push(demand(&caller.workspace_id, class, metric, per_minute, amount));
                }
            }
        }
        Ok((demands, organization, workspace))
    }

    /// Takes over the reservation `reservation_id`, made for this request when its Message
    /// Batch was created, after admitting the request on the rate-limit buckets as `begin`
    /// does (a refusal takes nothing and says when to retry). `finish` ends it at the Batch
    /// rate (the plan's `Multipliers::batch`), at the prices in force at the plan's
    /// `priced_at` (the batch's creation), and only while `claim` is still the request's.
    /// Dropped unfinished, it leaves the reservation to its batch, which runs the request
    /// again or voids it at its end.
    pub async fn adopt(
        &self,
        caller: &ApiCaller,
        plan: RequestPlan<'_>,
        reservation_id: String,
        claim: BatchClaim,
    ) -> Result<OpenReservation, ServiceError> {
        let started_at = self.now();
        let (demands, _, _) = self.rate_demands(caller, &plan).await?;
        let admitted = self
            .inner
            .limiter
            .admit(&demands, started_at)
            .await
            .map_err(|error| ServiceError::LimiterUnavailable(error.to_string()))?
            .map_err(|refusal| self.rate_limited(caller, &plan.model.id, refusal))?;
        let rate_limits = binding_view(&demands, &admitted.snapshots);
        Ok(adopted(
            caller,
            plan,
            reservation_id,
            claim,
            (started_at, rate_limits, demands),
        ))
    }

    /// Takes over the reservation of a Message Batch request that a provider's own Batches
    /// API ran, to settle it from the usage the provider reported: as `adopt`, but nothing is
    /// admitted on the rate-limit buckets (the provider's batch limits applied, not
    /// tollgate's), so none is corrected at `finish` either.
    pub fn adopt_upstream(
        &self,
        caller: &ApiCaller,
        plan: RequestPlan<'_>,
        reservation_id: String,
        claim: BatchClaim,
    ) -> OpenReservation {
        let unlimited = binding_view(&[], &[]);
        adopted(
            caller,
            plan,
            reservation_id,
            claim,
            (self.now(), unlimited, Vec::new()),
        )
    }

    async fn admit_and_reserve(
        &self,
        caller: ApiCaller,
        demands: Vec<Demand>,
        reservation: NewReservation,
        (prices, multipliers, priced_at): (ModelPrices, Multipliers, Timestamp),
        slot: CallSlot,
        attribution: Attribution,
    ) -> Result<OpenReservation, ServiceError> {
        let started_at = reservation.created_at;
        let admitted = self
            .inner
            .limiter
            .admit(&demands, started_at)
            .await
            .map_err(|error| ServiceError::LimiterUnavailable(error.to_string()))?
            .map_err(|refusal| self.rate_limited(&caller, &reservation.model, refusal))?;
        for demand in &demands {
            telemetry::rate_limit(
                demand.key.metric,
                scope_label(&caller, &demand.key.scope_id),
                true,
            );
        }
        let view = binding_view(&demands, &admitted.snapshots);
        let request_id = reservation.request_id.clone();
        let model = reservation.model.clone();
        match self.store().reserve_decided(reservation).await {
            Ok((reserved, commit)) => Ok(OpenReservation {
                // Before the id moves: the heartbeat keeps its own copy.
                live: Some(self.inner.live.register(&reserved.id, reserved.amount)),
                reservation_id: reserved.id,
                request_id,
                caller,
                model,
                prices,
                multipliers,
                served_model: None,
                upstream_attempts: Vec::new(),
                amount: reserved.amount,
                started_at,
                priced_at,
                rate_limits: view,
                admitted: demands,
                prompt_cache: None,
                attribution,
                slot: Some(slot),
                batch_claim: None,
                owner: Owner(Some(self.clone())),
                commit: Some(commit),
            }),
            Err(error) => Err(self
                .not_reserved(
                    &caller,
                    &demands,
                    (&request_id, &model, started_at),
                    attribution,
                    error,
                )
                .await),
        }
    }

    /// Ends a request whose reservation the store did not make: the buckets get back what
    /// it took (all or nothing), and a refusal leaves its usage record and its alerts.
    async fn not_reserved(
        &self,
        caller: &ApiCaller,
        demands: &[Demand],
        (request_id, model, started_at): (&str, &str, Timestamp),
        attribution: Attribution,
        error: TxError<ReserveRejection>,
    ) -> ServiceError {
        for admitted in demands {
            self.adjust_bucket(admitted, i64::try_from(admitted.taken()).unwrap_or(i64::MAX))
                .await;
        }
        match error {
            TxError::Rejected(rejection) => {
                self.record_refusal(caller, request_id, model, started_at, &rejection, attribution)
                    .await;
                match rejection {
                    ReserveRejection::InsufficientCredit(refusal) => {
                        telemetry::spend_refused("credit");
                        ServiceError::InsufficientCredit(refusal)
                    }
                    ReserveRejection::SpendLimitReached(reached) => {
                        telemetry::spend_refused("spend_limit");
                        self.alerts_after_spend_refusal(&caller.org_id, &reached);
                        ServiceError::SpendLimitReached(reached)
                    }
                }
            }
            TxError::Store(error) => ServiceError::Store(error),
        }
    }

    /// The reservation once its commit (`OpenReservation::take_commit`) has said it is
    /// written. If it is not, nothing was reserved: the request ends here as one the store
    /// refused at admission (buckets given back, a refusal recorded), with nothing to
    /// settle, and must deliver nothing.
    pub async fn committed(
        &self,
        mut open: OpenReservation,
        committed: Result<(), TxError<ReserveRejection>>,
    ) -> Result<OpenReservation, ServiceError> {
        let Err(error) = committed else {
            return Ok(open);
        };
        // Nothing to end: the reservation does not exist.
        open.owner.0 = None;
        tracing::warn!(
            reservation_id = open.reservation_id,
            %error,
            "a reservation decided by the book was not committed; the request ends unserved"
        );
        let attribution = std::mem::take(&mut open.attribution);
        Err(self
            .not_reserved(
                &open.caller,
                &open.admitted,
                (&open.request_id, &open.model, open.started_at),
                attribution,
                error,
            )
            .await)
    }

    /// `count_tokens` is free but rate limited on its own requests-per-minute bucket.
    pub async fn admit_count_tokens(&self, caller: &ApiCaller, model: &str) -> Result<(), ServiceError> {
        let organization = self.organization_limits(&caller.org_id).await?;
        let demands = [demand(
            &caller.org_id,
            "*",
            Metric::CountTokensRequests,
            organization.limits.count_tokens_requests_per_minute,
            1,
        )];
        self.inner
            .limiter
            .admit(&demands, self.now())
            .await
            .map_err(|error| ServiceError::LimiterUnavailable(error.to_string()))?
            .map_err(|refusal| self.rate_limited(caller, model, refusal))?;
        Ok(())
    }

    fn rate_limited(&self, caller: &ApiCaller, model: &str, refusal: LimitRefusal) -> ServiceError {
        let (key, per_minute, retry_after_nanos, amount) = match refusal {
            LimitRefusal::Exhausted {
                key,
                per_minute,
                retry_after_nanos,
            } => (key, per_minute, Some(retry_after_nanos), None),
            LimitRefusal::ExceedsCapacity {
                key,
                per_minute,
                amount,
            } => (key, per_minute, None, Some(amount)),
        };
        let scope = if key.scope_id == caller.org_id {
            LimitScope::Organization
        } else {
            LimitScope::Workspace
        };
        telemetry::rate_limit(key.metric, scope_label(caller, &key.scope_id), false);
        let limited = RateLimited {
            scope,
            scope_id: key.scope_id,
            metric: key.metric,
            per_minute,
            model: model.to_owned(),
            // Whole seconds, rounded up: retrying at that time succeeds.
            retry_after_seconds: retry_after_nanos.map(|nanos| {
                u64::try_from((nanos + 999_999_999) / 1_000_000_000)
                    .unwrap_or(1)
                    .max(1)
            }),
            amount,
        };
        match limited.amount {
            Some(_) => ServiceError::ExceedsRateLimit(limited),
            None => ServiceError::RateLimited(limited),
        }
    }

    async fn adjust_bucket(&self, admitted: &Demand, refund: i64) {
        if refund == 0 {
            return;
        }
        if let Err(error) = self
            .inner
            .limiter
            .adjust(&admitted.key, admitted.per_minute, refund, self.now())
            .await
        {
            tracing::warn!(%error, "could not correct a rate-limit bucket");
        }
    }

    async fn record_refusal(
        &self,
        caller: &ApiCaller,
        request_id: &str,
        model: &str,
        started_at: Timestamp,
        rejection: &ReserveRejection,
        attribution: Attribution,
    ) {
        let record = UsageRecord {
            request_id: request_id.to_owned(),
            org_id: caller.org_id.clone(),
            workspace_id: caller.workspace_id.clone(),
            api_key_id: Some(caller.key_id.clone()),
            model: model.to_owned(),
            usage: TokenUsage::default(),
            cost: NanoUsd::ZERO,
            status: UsageStatus::Refused,
            error_type: Some(
                match rejection {
                    ReserveRejection::InsufficientCredit(_) => "insufficient_credit",
                    ReserveRejection::SpendLimitReached(_) => "spend_limit_reached",
                }
                .to_owned(),
            ),
            latency_ms: 0,
            started_at,
            ended_at: started_at,
            attribution,
            served_model: None,
            multipliers: Multipliers::default(),
            lines: Default::default(),
            upstream_attempts: Vec::new(),
        };
        if let Err(error) = self.store().insert_usage_record(record).await {
            tracing::warn!(%error, request_id, "could not record a refused request");
        }
    }

    /// Ends the reservation: charges the cost of `finish.usage` when the request counts as
    /// delivered (succeeded, or the client left mid-way), otherwise voids it. Retries a
    /// failed write a few times; ending twice is a no-op in the store. Then corrects the
    /// token buckets and, when the balance fell below the threshold, starts an auto-reload.
    pub async fn finish(
        &self,
        mut open: OpenReservation,
        finish: Finish,
    ) -> Result<SettleOutcome, ServiceError> {
        // Ended here, or by the reaper if this is cut short: never by its own drop.
        open.owner.0 = None;
        if let Some(commit) = open.commit.take() {
            // Settled only once written; the settlement queues behind it.
            open = self.committed(open, commit.committed().await).await?;
        }
        if let Some(claim) = open.batch_claim
            && !self
                .store()
                .fence_batch_claim(&open.request_id, claim.attempt, self.now() + claim.lease)
                .await?
        {
            // The runner stalled past its lease and another re-claimed the request: the
            // reservation is that runner's to end now, and this late result is dropped.
            tracing::warn!(
                request_id = open.request_id,
                attempt = claim.attempt,
                "a batch request's claim was taken over; its late result is not settled"
            );
            return Ok(SettleOutcome {
                already_ended: true,
                ..SettleOutcome::default()
            });
        }
        let charged = matches!(
            finish.status,
            UsageStatus::Succeeded | UsageStatus::ClientDisconnected
        );
        let (cost, applied, lines) = if charged {
            match open.prices.charge(&finish.usage, open.multipliers) {
                Some(charge) => (charge.cost, charge.applied, charge.lines),
                // Saturating: a cost beyond i64 is far above any reservation and gets capped
                // there.
                None => (
                    NanoUsd::MAX,
                    open.prices.applied(&finish.usage, open.multipliers),
                    Default::default(),
                ),
            }
        } else {
            (NanoUsd::ZERO, Multipliers::default(), Default::default())
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
                attribution: std::mem::take(&mut open.attribution),
                served_model: open.served_model.clone(),
                multipliers: applied,
                lines,
                upstream_attempts: std::mem::take(&mut open.upstream_attempts),
            },
        };
        let outcome = self.settle_with_retries(&open, settlement.clone()).await;
        if let Err(ServiceError::Store(error)) = &outcome
            && is_transient(error)
        {
            // Kept (durably where possible) and written by a maintenance pass once the store
            // takes writes again; the heartbeat keeps the reaper off it meanwhile (`pending.rs`).
            tracing::error!(
                reservation_id = open.reservation_id,
                "settlement kept pending until the store takes writes"
            );
            self.inner.pending.keep(settlement);
        }
        let organization = self.inner.organization_labels.label(&open.caller.org_id);
        telemetry::settled(&open.model, organization, &finish.usage, &outcome);
        self.correct_buckets(&open, &finish.usage).await;
        let cached = finish.usage.cache_read_input_tokens > 0
            || finish.usage.cache_creation_5m_input_tokens > 0
            || finish.usage.cache_creation_1h_input_tokens > 0;
        if charged
            && cached
            && let Some((scope, prefixes)) = &open.prompt_cache
        {
            // As of the request's start, when the upstream read and wrote its cache.
            self.inner
                .limits_cache
                .remember_cached(scope, prefixes, open.started_at);
        }
        if let Ok(settled) = &outcome
            && settled.charged.is_positive()
        {
            self.auto_reload_after_charge(&open.caller.org_id).await;
            if let Some(standing) = settled.standing {
                self.alerts_after_settlement(&open.caller.org_id, standing).await;
            }
        }
        outcome
    }

    async fn settle_with_retries(
        &self,
        open: &OpenReservation,
        settlement: Settlement,
    ) -> Result<SettleOutcome, ServiceError> {
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
                    // 25, 50, 100, 200 ms: about a third of a second in all.
                    tokio::time::sleep(std::time::Duration::from_millis(25 << (attempt - 1))).await;
                }
                Err(error) => {
                    tracing::error!(%error, reservation_id = open.reservation_id, "settlement failed");
                    return Err(ServiceError::Store(error));
                }
            }
        }
    }

    /// Replaces what admission took (estimates, and input taken on credit) by the actual
    /// counts: input tokens that count (cache reads don't) and generated output tokens.
    /// Requests stay counted.
    async fn correct_buckets(&self, open: &OpenReservation, usage: &TokenUsage) {
        for admitted in &open.admitted {
            let actual = match admitted.key.metric {
                Metric::InputTokens => usage.rate_limited_input_tokens(),
                Metric::OutputTokens => usage.output_tokens,
                Metric::Requests | Metric::CountTokensRequests => continue,
            };
            let refund = i128::from(admitted.taken()) - i128::from(actual);
            self.adjust_bucket(admitted, i64::try_from(refund).unwrap_or(0))
                .await;
        }
    }
}

/// A batch request's reservation, taken over by the runner whose `claim` holds it; ended at
/// the plan's Batch rate and at the prices in force at its `priced_at`.
fn adopted(
    caller: &ApiCaller,
    plan: RequestPlan<'_>,
    reservation_id: String,
    claim: BatchClaim,
    (started_at, rate_limits, admitted): (Timestamp, RateLimitView, Vec<Demand>),
) -> OpenReservation {
    OpenReservation {
        rate_limits,
        reservation_id,
        request_id: plan.request_id.to_owned(),
        caller: caller.clone(),
        model: plan.model.id.clone(),
        prices: plan.model.prices.at(plan.priced_at).clone(),
        // The gateway's plan for a batch request carries the Batch multiplier.
        multipliers: plan.multipliers,
        served_model: None,
        upstream_attempts: Vec::new(),
        amount: plan.cost_bound,
        started_at,
        priced_at: plan.priced_at,
        admitted,
        prompt_cache: None,
        attribution: plan.attribution.clone(),
        slot: None,
        live: None,
        batch_claim: Some(claim),
        owner: Owner(None),
        commit: None,
    }
}

/// Per metric, the snapshot with the least room left over every scope.
fn binding_view(demands: &[Demand], snapshots: &[BucketSnapshot]) -> RateLimitView {
    let tightest = |metric: Metric| {
        demands
            .iter()
            .zip(snapshots)
            .filter(|(demand, _)| demand.key.metric == metric)
            .map(|(_, snapshot)| *snapshot)
            .min_by_key(|snapshot| snapshot.remaining)
            .unwrap_or(BucketSnapshot {
                limit: 0,
                remaining: 0,
                reset_at_nanos: 0,
            })
    };
    RateLimitView {
        requests: tightest(Metric::Requests),
        input_tokens: tightest(Metric::InputTokens),
        output_tokens: tightest(Metric::OutputTokens),
    }
}

/// The scope a bucket belongs to, as a metric label.
fn scope_label(caller: &ApiCaller, scope_id: &str) -> &'static str {
    if scope_id == caller.org_id {
        "organization"
    } else {
        "workspace"
    }
}

fn is_transient(error: &StoreError) -> bool {
    error.is_retryable() || matches!(error, StoreError::Database(_))
}
