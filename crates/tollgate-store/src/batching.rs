//! What both backends' hot-path writers (`sqlite/writer.rs`, `postgres/writer.rs`) share:
//! how big a batch may grow, how many operations may wait, what each operation answers,
//! how a batch is taken from the queue, the reaper's page of abandonments, and the error
//! of a writer that has stopped.

use std::future::Future;

use tokio::sync::mpsc;
use tollgate_core::Timestamp;

use crate::error::{StoreError, TxError};
use crate::journal::{Overdue, abandonment};
use crate::model::{Reservation, ReserveRejection, SettleOutcome, Settlement};

/// Most operations one transaction carries: bounds how long its locks are held.
pub(crate) const MAX_BATCH: usize = 256;
/// Operations waiting for the writer before callers wait to enqueue (backpressure).
pub(crate) const QUEUE_CAPACITY: usize = 4_096;

pub(crate) type ReserveResult = Result<Reservation, TxError<ReserveRejection>>;
pub(crate) type SettleResult = Result<SettleOutcome, StoreError>;

/// A batch: `first`, then whatever else is already queued, up to `MAX_BATCH`.
pub(crate) fn take_batch<J>(first: J, receiver: &mut mpsc::Receiver<J>) -> Vec<J> {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    jobs.push(first);
    while jobs.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    jobs
}

/// Submits a page of overdue reservations to the writer as abandonments, all at once so
/// that they share batches, and counts those this call ended (another request or reaper
/// may have ended some first).
pub(crate) async fn abandon_all<F, Settled>(
    overdue: Vec<Overdue>,
    now: Timestamp,
    settle: F,
) -> Result<usize, StoreError>
where
    F: Fn(Settlement) -> Settled,
    Settled: Future<Output = SettleResult>,
{
    let outcomes = futures_util::future::join_all(
        overdue
            .into_iter()
            .map(|overdue| settle(abandonment(overdue, now))),
    )
    .await;
    let mut ended = 0;
    for outcome in outcomes {
        if !outcome?.already_ended {
            ended += 1;
        }
    }
    Ok(ended)
}

pub(crate) fn stopped() -> StoreError {
    StoreError::Database("the store's writer has stopped".into())
}
