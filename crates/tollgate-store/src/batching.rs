//! What both backends' hot-path writers (`sqlite/writer.rs`, `postgres/writer.rs`) share:
//! how big a batch may grow, how many operations may wait, what each operation answers,
//! how a batch is taken from the queue, how the reaper voids overdue reservations through
//! the writer, and the error of a writer that has stopped.

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

/// How many overdue reservations the reaper reads and submits at a time.
pub(crate) const REAP_PAGE: usize = 100;

/// Voids every overdue reservation: reads them a page at a time (`fetch_page(REAP_PAGE)`,
/// oldest deadline first) and submits each page to the writer as abandonments, all at once
/// so that they share batches. Counts those this call ended (a request ending at the same
/// moment, or another replica's reaper, may have ended some first).
pub(crate) async fn reap_overdue<Fetch, Fetched, Settle, Settled>(
    now: Timestamp,
    fetch_page: Fetch,
    settle: Settle,
) -> Result<usize, StoreError>
where
    Fetch: Fn(usize) -> Fetched,
    Fetched: Future<Output = Result<Vec<Overdue>, StoreError>>,
    Settle: Fn(Settlement) -> Settled,
    Settled: Future<Output = SettleResult>,
{
    let mut ended = 0;
    loop {
        let page = fetch_page(REAP_PAGE).await?;
        let last_page = page.len() < REAP_PAGE;
        let outcomes =
            futures_util::future::join_all(page.into_iter().map(|overdue| settle(abandonment(overdue, now))))
                .await;
        for outcome in outcomes {
            if !outcome?.already_ended {
                ended += 1;
            }
        }
        if last_page {
            return Ok(ended);
        }
    }
}

pub(crate) fn stopped() -> StoreError {
    StoreError::Database("the store's writer has stopped".into())
}
