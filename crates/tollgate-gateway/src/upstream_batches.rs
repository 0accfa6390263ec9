//! Message Batches on a provider's own Batches API. The requests of one batch that route
//! first to an `anthropic` provider taking batches (marked so at creation) are claimed
//! together, as a group, with the runner's lease and attempts; the group goes to the
//! provider as one provider batch, whose id is recorded on each request under that claim,
//! then polled until it ended. Its results are read line by line: a `succeeded` request is
//! settled on its own reservation from the usage the provider reported
//! (`messages::settle_upstream_batch_request`), the others are voided, and each result is
//! kept as the provider wrote it. A cancel of the batch is forwarded to the provider.
//!
//! A runner that dies leaves its groups to another once their leases lapse; that one polls
//! the recorded provider batch and never submits it again. Only a runner that dies between
//! the provider's answer to the submission and the record of its id submits the group a
//! second time: the provider may then run it twice, but each request is still charged once,
//! since its settlement is idempotent by reservation and fenced by its claim.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tollgate_service::{BatchClaim, BatchRequestState, BatchStatus, ClaimedBatchRequest, batch_caller};
use tollgate_upstream::anthropic::AnthropicClient;
use tollgate_upstream::{Provider, UpstreamError, UpstreamRequest};

use crate::GatewayState;
use crate::batches::{BatchRunnerSettings, errored};
use crate::error::ApiError;
use crate::messages::{settle_upstream_batch_request, upstream_batch_params};

/// How often the runner looks for a group no runner holds.
const CLAIM_POLL: Duration = Duration::from_millis(250);

/// Claims the groups no runner holds, one at a time, and works each off in a task of its
/// own until this future is dropped (which ends those tasks too: their claims then lapse).
pub(crate) async fn run_upstream_batches(state: GatewayState, settings: BatchRunnerSettings, owner: String) {
    let lease = settings.claim_lease();
    let mut groups = JoinSet::new();
    loop {
        while groups.try_join_next().is_some() {}
        let claimed = match state.tollgate.claim_upstream_batch_requests(&owner, lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim requests of provider batches");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::time::sleep(CLAIM_POLL).await;
            continue;
        }
        let group = Group {
            state: state.clone(),
            owner: owner.clone(),
            lease,
            poll: settings.upstream_poll,
            requests: claimed,
        };
        groups.spawn(group.run());
    }
}

/// The pending requests of one batch for one provider, claimed by this runner.
struct Group {
    state: GatewayState,
    owner: String,
    lease: chrono::Duration,
    poll: Duration,
    /// Those still pending under this runner's claim.
    requests: Vec<ClaimedBatchRequest>,
}

/// What one look at the group found.
enum Step {
    /// Look again after the poll interval.
    Wait,
    /// Every request ended, or none is this runner's any more.
    Done,
}

impl Group {
    async fn run(mut self) {
        let Some(first) = self.requests.first() else {
            return;
        };
        let provider_name = first.upstream_provider.clone().unwrap_or_default();
        let client = match self.state.providers.get(&provider_name) {
            Some(Provider::Anthropic(client)) => client.clone(),
            _ => {
                let error = ApiError::internal(format!(
                    "provider '{provider_name}' no longer takes Message Batches"
                ));
                self.end_all_errored(&error).await;
                return;
            }
        };
        // The headers of the batch's creation; the body is each call's own.
        let headers = UpstreamRequest {
            body: Bytes::new(),
            stream: false,
            anthropic_version: first.anthropic_version.clone(),
            anthropic_beta: first.anthropic_beta.clone(),
            client_headers: HeaderMap::new(),
            query: None,
        };
        let mut upstream_id = first.upstream_batch_id.clone();
        let mut cancel_forwarded = false;
        let renew_every = (self.lease / 4).to_std().unwrap_or(Duration::from_secs(30));
        let mut next_look = tokio::time::Instant::now();
        loop {
            if !self.renew().await {
                return;
            }
            if tokio::time::Instant::now() >= next_look {
                next_look = tokio::time::Instant::now() + self.poll;
                let step = match upstream_id.clone() {
                    None => self.submit(&client, &headers, &mut upstream_id).await,
                    Some(id) => self.poll(&client, &headers, &id, &mut cancel_forwarded).await,
                };
                if matches!(step, Step::Done) {
                    return;
                }
            }
            tokio::time::sleep(self.poll.min(renew_every)).await;
        }
    }

    /// Moves the leases of the group's requests on; false once none is this runner's.
    async fn renew(&mut self) -> bool {
        let ids: Vec<String> = self
            .requests
            .iter()
            .map(|claimed| claimed.request_id.clone())
            .collect();
        match self
            .state
            .tollgate
            .extend_batch_claims(&self.owner, &ids, self.lease)
            .await
        {
            Ok(0) => false,
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "could not renew the leases of a provider batch's requests");
                true
            }
        }
    }

    /// Submits the group as one provider batch and records its id on each request. A batch
    /// canceled or expired before it was submitted ends its requests here.
    async fn submit(
        &mut self,
        client: &AnthropicClient,
        headers: &UpstreamRequest,
        upstream_id: &mut Option<String>,
    ) -> Step {
        let Some(first) = self.requests.first() else {
            return Step::Done;
        };
        let caller = batch_caller(first);
        let batch = match self.state.tollgate.message_batch(&caller, &first.batch_id).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not read a batch before submitting it to its provider");
                return Step::Wait;
            }
        };
        let unrun = if batch.status != BatchStatus::InProgress {
            Some(BatchRequestState::Canceled)
        } else if self.state.tollgate.now() >= batch.expires_at {
            Some(BatchRequestState::Expired)
        } else {
            None
        };
        if let Some(state) = unrun {
            let result = json!({"type": state.as_str()}).to_string();
            for claimed in std::mem::take(&mut self.requests) {
                self.end(&claimed, state, &result).await;
            }
            return Step::Done;
        }
        let mut requests = Vec::with_capacity(self.requests.len());
        let mut submitted = Vec::with_capacity(self.requests.len());
        for claimed in std::mem::take(&mut self.requests) {
            let params = upstream_batch_params(&self.state, &caller, &claimed).and_then(|params| {
                serde_json::from_slice::<Value>(&params).map_err(|error| {
                    ApiError::internal(format!("the provider's params are not JSON: {error}"))
                })
            });
            match params {
                Ok(params) => {
                    requests.push(json!({"custom_id": claimed.custom_id, "params": params}));
                    submitted.push(claimed);
                }
                Err(error) => {
                    let (state, result) = errored(&error, &claimed);
                    self.end(&claimed, state, &result.to_string()).await;
                }
            }
        }
        if submitted.is_empty() {
            return Step::Done;
        }
        let request = UpstreamRequest {
            body: Bytes::from(json!({"requests": requests}).to_string()),
            ..headers.clone()
        };
        match client.create_batch(request).await {
            Ok(created) => {
                for claimed in submitted {
                    match self
                        .state
                        .tollgate
                        .record_upstream_batch(&claimed, &created.id)
                        .await
                    {
                        Ok(true) => self.requests.push(claimed),
                        // Another runner took it over; its result is that runner's to write.
                        Ok(false) => {}
                        Err(error) => {
                            // Kept: its result is still written under this claim, and only a
                            // runner taking it over after a crash would submit it again.
                            tracing::warn!(%error, request_id = claimed.request_id, "could not record a request's provider batch");
                            self.requests.push(claimed);
                        }
                    }
                }
                *upstream_id = Some(created.id);
                Step::Wait
            }
            Err(error) if submission_may_succeed_later(&error) => {
                tracing::warn!(%error, "a provider did not take a batch; trying again");
                self.requests = submitted;
                Step::Wait
            }
            Err(error) => {
                let error = ApiError::from_upstream(&error);
                for claimed in submitted {
                    let (state, result) = errored(&error, &claimed);
                    self.end(&claimed, state, &result.to_string()).await;
                }
                Step::Done
            }
        }
    }

    /// Looks at the provider batch: forwards a cancel of the batch once, and once it
    /// ended, ends each request from its result.
    async fn poll(
        &mut self,
        client: &AnthropicClient,
        headers: &UpstreamRequest,
        upstream_id: &str,
        cancel_forwarded: &mut bool,
    ) -> Step {
        let Some(first) = self.requests.first() else {
            return Step::Done;
        };
        if !*cancel_forwarded {
            let caller = batch_caller(first);
            match self.state.tollgate.message_batch(&caller, &first.batch_id).await {
                Ok(batch) if batch.status != BatchStatus::InProgress => {
                    match client.cancel_batch(upstream_id, headers).await {
                        Ok(_) => *cancel_forwarded = true,
                        Err(error) => {
                            tracing::warn!(%error, "could not forward a batch's cancel to its provider")
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not read a batch"),
            }
        }
        match client.retrieve_batch(upstream_id, headers).await {
            Ok(batch) if batch.ended => {}
            Ok(_) => return Step::Wait,
            Err(error) => {
                tracing::warn!(%error, upstream_id, "could not poll a provider batch");
                return Step::Wait;
            }
        }
        let body = match client.batch_results(upstream_id, headers).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, upstream_id, "could not read a provider batch's results");
                return Step::Wait;
            }
        };
        let mut results: HashMap<String, Value> = HashMap::new();
        for line in body.split(|byte| *byte == b'\n') {
            let Ok(line) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if let (Some(custom_id), Some(result)) = (line["custom_id"].as_str(), line.get("result")) {
                results.insert(custom_id.to_owned(), result.clone());
            }
        }
        for claimed in std::mem::take(&mut self.requests) {
            let result = results.remove(&claimed.custom_id);
            self.end_from_result(&claimed, result).await;
        }
        Step::Done
    }

    /// Ends a request from its line of the provider's results, as the provider wrote it:
    /// settled from its usage when it succeeded, voided otherwise.
    async fn end_from_result(&self, claimed: &ClaimedBatchRequest, result: Option<Value>) {
        let Some(result) = result else {
            let error = ApiError::internal("the provider's batch has no result for this request");
            let (state, result) = errored(&error, claimed);
            self.end(claimed, state, &result.to_string()).await;
            return;
        };
        let state = match result["type"].as_str() {
            Some("succeeded") => BatchRequestState::Succeeded,
            Some("errored") => BatchRequestState::Errored,
            Some("canceled") => BatchRequestState::Canceled,
            Some("expired") => BatchRequestState::Expired,
            other => {
                let error =
                    ApiError::internal(format!("the provider's result has an unknown type {other:?}"));
                let (state, result) = errored(&error, claimed);
                self.end(claimed, state, &result.to_string()).await;
                return;
            }
        };
        if state == BatchRequestState::Succeeded {
            let Some(usage) = result["message"].get("usage").filter(|usage| usage.is_object()) else {
                let error = ApiError::internal("the provider's message has no usage object");
                let (state, result) = errored(&error, claimed);
                self.end(claimed, state, &result.to_string()).await;
                return;
            };
            let usage = tollgate_upstream::sse::parse_usage(usage);
            let caller = batch_caller(claimed);
            let claim = BatchClaim {
                attempt: claimed.attempt,
                lease: self.lease,
            };
            if let Err(error) =
                settle_upstream_batch_request(&self.state, &caller, claimed, claim, usage).await
            {
                // Left pending: its claim lapses, and the runner that takes the group over
                // reads the results again and settles it (once, by its reservation).
                tracing::error!(error = %error.message, request_id = claimed.request_id, "could not settle a request a provider batch ran");
                return;
            }
        }
        self.end(claimed, state, &result.to_string()).await;
    }

    async fn end_all_errored(&mut self, error: &ApiError) {
        for claimed in std::mem::take(&mut self.requests) {
            let (state, result) = errored(error, &claimed);
            self.end(&claimed, state, &result.to_string()).await;
        }
    }

    /// Writes a request's end under this runner's claim (voiding its reservation unless it
    /// succeeded).
    async fn end(&self, claimed: &ClaimedBatchRequest, state: BatchRequestState, result: &str) {
        if let Err(error) = self
            .state
            .tollgate
            .end_batch_request(claimed, state, result)
            .await
        {
            // The claim lapses and another runner ends it; the reservation is charged once.
            tracing::error!(%error, request_id = claimed.request_id, "could not record a batch request's result");
        }
    }
}

/// Whether a refused submission is worth sending again: the provider was not reached, was
/// overloaded or limited, or refused the operator's account (which the operator may fix),
/// rather than refused the requests themselves.
fn submission_may_succeed_later(error: &UpstreamError) -> bool {
    error.is_retryable()
        || error.is_provider_account_problem()
        || matches!(error, UpstreamError::Status { status: 429, .. })
}
