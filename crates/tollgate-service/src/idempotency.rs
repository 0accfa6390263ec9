//! Idempotency keys of the control plane (#22), scoped to the organization: a mutating
//! request with a key claims it through the caller's `OrgAdmin`, so one organization's
//! keys never meet another's. The rules (what a repeat gets, which answers are kept, how
//! long a key lives) are `tollgate_core::idempotency`'s; the claims are the store's. What is
//! kept is the HTTP answer the surface sends, opaque here; nothing here moves money.

use tollgate_core::Timestamp;
use tollgate_core::idempotency::{
    IdempotencyKey, Repeat, RequestFingerprint, expires_at, judge_repeat, keeps_answer,
};
use tollgate_store::{ClaimOutcome, IdempotencyClaim, IdempotentAnswer};

use crate::admin::OrgAdmin;
use crate::error::ServiceError;

/// What a request that carries an idempotency key may do.
#[derive(Debug)]
pub enum IdempotentStart {
    /// The key is this request's now: run it, then hand its answer to
    /// `OrgAdmin::finish_idempotent_request`.
    Proceed(IdempotencyTicket),
    /// The same request was answered before: this is that answer.
    Replay(IdempotentAnswer),
    /// The key was first used for another request (method, path or body).
    Mismatch,
    /// The first request under the key is still running.
    InFlight,
}

/// A key this request claimed, until its answer is kept or the key given back.
#[derive(Debug)]
pub struct IdempotencyTicket {
    key: IdempotencyKey,
    claimed_at: Timestamp,
}

impl OrgAdmin {
    /// Claims `key` in this organization for `request`, or says what a repeat gets.
    pub async fn claim_idempotency_key(
        &self,
        key: &IdempotencyKey,
        request: &RequestFingerprint,
    ) -> Result<IdempotentStart, ServiceError> {
        let claimed_at = self.tollgate().now();
        let claim = IdempotencyClaim {
            org_id: self.org_id().to_owned(),
            key: key.as_str().to_owned(),
            request: request.clone(),
            claimed_at,
            expires_at: expires_at(claimed_at),
        };
        let record = match self.tollgate().store().claim_idempotency_key(&claim).await? {
            ClaimOutcome::Claimed => {
                return Ok(IdempotentStart::Proceed(IdempotencyTicket {
                    key: key.clone(),
                    claimed_at,
                }));
            }
            ClaimOutcome::Taken(record) => record,
        };
        Ok(match judge_repeat(&record.request, record.first_use(), request) {
            Repeat::Mismatch => IdempotentStart::Mismatch,
            Repeat::InFlight => IdempotentStart::InFlight,
            Repeat::Replay => match record.answer {
                Some(answer) => IdempotentStart::Replay(answer),
                None => IdempotentStart::InFlight,
            },
        })
    }

    /// Ends the claim of `ticket`: its answer is kept for replay if there is one the core
    /// keeps (not a 5xx); otherwise the key is given back, so the client may retry with it.
    pub async fn finish_idempotent_request(
        &self,
        ticket: IdempotencyTicket,
        answer: Option<&IdempotentAnswer>,
    ) -> Result<(), ServiceError> {
        let store = self.tollgate().store();
        let key = ticket.key.as_str();
        match answer {
            Some(answer) if keeps_answer(answer.status) => {
                if !store
                    .answer_idempotency_key(self.org_id(), key, ticket.claimed_at, answer)
                    .await?
                {
                    tracing::warn!(
                        org_id = self.org_id(),
                        "an idempotency key's claim was gone when its answer came"
                    );
                }
            }
            _ => {
                store
                    .release_idempotency_key(self.org_id(), key, ticket.claimed_at)
                    .await?;
            }
        }
        Ok(())
    }
}
