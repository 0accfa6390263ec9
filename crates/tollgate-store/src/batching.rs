//! What both backends' hot-path writers (`sqlite/writer.rs`, `postgres/writer.rs`) share:
//! the queue and its operations (`WriterQueue`, `Job`: reservations, settlements, and the
//! rows with no money that a request writes, which share their batches), how big a batch may grow, how many
//! operations may wait, what each operation answers,
//! how a batch is taken from the queue, how the reaper voids overdue reservations through
//! the writer, and the error of a writer that has stopped.
//!
//! A reservation's caller hears twice: once the book has decided it (`answer_decided`,
//! before the batch is written), so that its upstream call starts while the batch commits,
//! and once the batch has committed (`ReservationCommit`), which it awaits before anything
//! reaches its client or its settlement is submitted. A refusal is heard once, at commit. A
//! reservation the book holds in memory (`book.rs`) is heard once, decided: nothing of it
//! is written before its settlement.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tollgate_core::Timestamp;

use crate::book::{Decision, HeldInMemory, Operation};
use crate::codec::invariant;
use crate::error::{StoreError, TxError};
use crate::journal::{Overdue, abandonment};
use crate::model::{NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement};
use crate::stored_responses::StoredResponse;

/// Most operations one transaction carries: bounds how long its locks are held.
pub(crate) const MAX_BATCH: usize = 256;
/// Operations waiting for the writer before callers wait to enqueue (backpressure).
pub(crate) const QUEUE_CAPACITY: usize = 4_096;

pub(crate) type ReserveResult = Result<Reservation, TxError<ReserveRejection>>;
pub(crate) type SettleResult = Result<SettleOutcome, StoreError>;

/// A queued operation and its caller's reply.
#[allow(
    clippy::large_enum_variant,
    reason = "a job is moved once, into the queue; boxing the settlement would allocate on every request"
)]
pub(crate) enum Job {
    Reserve {
        reservation: NewReservation,
        /// Told the reservation once the book has decided it, before the batch commits
        /// (taken when told; a batch run again does not tell it twice).
        decided: Mutex<Option<oneshot::Sender<Reservation>>>,
        /// Told the outcome once the batch has committed.
        reply: oneshot::Sender<ReserveResult>,
    },
    Settle {
        settlement: Settlement,
        reply: oneshot::Sender<SettleResult>,
    },
    /// A Responses API reply to keep: no money, but written beside the money so that it
    /// shares a batch's commit instead of committing alone (see `WriterQueue::store_response`).
    StoreResponse {
        response: StoredResponse,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

impl Job {
    pub(crate) fn operation(&self) -> Operation<'_> {
        match self {
            Job::Reserve { reservation, .. } => Operation::Reserve(reservation),
            Job::Settle { settlement, .. } => Operation::Settle(settlement),
            Job::StoreResponse { response, .. } => Operation::StoreResponse(response),
        }
    }

    /// Answers the caller with what the book decided, once the batch committed. A caller
    /// that went away loses nothing either way.
    pub(crate) fn answer(self, decision: Decision) {
        match (self, decision) {
            (Job::Reserve { reply, .. }, Decision::Reserve(reserved)) => {
                drop(reply.send(reserved.map_err(TxError::Rejected)));
            }
            (Job::Settle { reply, .. }, Decision::Settle(outcome)) => drop(reply.send(Ok(outcome))),
            (Job::StoreResponse { reply, .. }, Decision::Stored) => drop(reply.send(Ok(()))),
            (job, _) => job.fail(invariant(
                "a batch answered an operation with another kind's result".into(),
            )),
        }
    }

    /// Tells a reservation's caller that the book reserved it, before the batch commits (see
    /// the module's documentation). Refusals and other operations wait for the commit.
    fn answer_decided(&self, decision: &Decision) {
        if let (Job::Reserve { decided, .. }, Decision::Reserve(Ok(reserved))) = (self, decision)
            && let Some(sender) = decided.lock().ok().and_then(|mut decided| decided.take())
        {
            drop(sender.send(reserved.clone()));
        }
    }

    /// Answers the caller with an error.
    pub(crate) fn fail(self, error: StoreError) {
        match self {
            Job::Reserve { reply, .. } => drop(reply.send(Err(error.into()))),
            Job::Settle { reply, .. } => drop(reply.send(Err(error))),
            Job::StoreResponse { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The queue to a backend's writer. Cheap to clone; the writer stops when the last clone
/// is dropped.
#[derive(Clone)]
pub(crate) struct WriterQueue {
    sender: mpsc::Sender<Job>,
    /// How many times the writer dropped a book it held because another connection wrote
    /// (SQLite's; PostgreSQL's book lasts one batch and is never counted).
    book_reloads: Arc<AtomicU64>,
    /// What the writer's book holds in memory on each lot (SQLite's; empty on PostgreSQL).
    held_in_memory: HeldInMemory,
}

impl WriterQueue {
    /// The queue and the writer's end of it.
    pub(crate) fn new() -> (WriterQueue, mpsc::Receiver<Job>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let book_reloads = Arc::default();
        let queue = WriterQueue {
            sender,
            book_reloads,
            held_in_memory: HeldInMemory::default(),
        };
        (queue, receiver)
    }

    /// The writer's count of books dropped (see the field).
    pub(crate) fn book_reloads(&self) -> Arc<AtomicU64> {
        self.book_reloads.clone()
    }

    /// What the writer's book holds in memory on each lot (see the field).
    pub(crate) fn held_in_memory(&self) -> HeldInMemory {
        self.held_in_memory.clone()
    }

    /// The reservation as soon as the book has decided it, and its commit to await; a
    /// refusal or a failure once the batch has ended.
    pub(crate) async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<(Reservation, ReservationCommit), TxError<ReserveRejection>> {
        let (reply, answer) = oneshot::channel();
        let (decided, reserved) = oneshot::channel();
        self.submit(Job::Reserve {
            reservation,
            decided: Mutex::new(Some(decided)),
            reply,
        })
        .await?;
        if let Ok(reserved) = reserved.await {
            if reserved.held_in_memory {
                // Nothing of it is written before its settlement (`book.rs`).
                return Ok((reserved, ReservationCommit(None)));
            }
            return Ok((reserved, ReservationCommit(Some(answer))));
        }
        // Told nothing early: the batch has ended, and the answer is final.
        let reserved = answer.await.unwrap_or_else(|_| Err(stopped().into()))?;
        Ok((reserved, ReservationCommit(None)))
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> SettleResult {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Settle { settlement, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Keeps a stored response in the next batch. Through the writer rather than the
    /// store's pool because a commit beside the writer costs twice: on SQLite it is an
    /// fsync'd transaction of its own that waits for the write lock between batches, and it
    /// changes `data_version`, so the writer drops its book and reloads it.
    pub(crate) async fn store_response(&self, response: StoredResponse) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::StoreResponse { response, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.sender.send(job).await.map_err(|_| stopped())
    }
}

/// A reservation decided but perhaps not yet committed: `committed` says whether its batch
/// committed it. A caller that has it may call upstream, and must await it before anything
/// reaches its client or it submits the settlement.
#[derive(Debug)]
#[must_use = "a reservation is not written until its commit says so"]
pub struct ReservationCommit(Option<oneshot::Receiver<ReserveResult>>);

impl ReservationCommit {
    /// Already committed.
    pub fn committed_already() -> ReservationCommit {
        ReservationCommit(None)
    }

    /// Waits for the batch's commit: `Ok` once the reservation is written; otherwise the
    /// reservation does not exist (its batch failed, and running alone it was refused or
    /// failed) and there is nothing to settle.
    pub async fn committed(self) -> Result<(), TxError<ReserveRejection>> {
        match self.0 {
            None => Ok(()),
            Some(answer) => answer.await.unwrap_or_else(|_| Err(stopped().into())).map(drop),
        }
    }
}

/// Tells each reservation of a decided batch's that the book reserved it; called between
/// the decisions and the batch's writes.
pub(crate) fn answer_decided(jobs: &[Job], decisions: &[Decision]) {
    for (job, decision) in jobs.iter().zip(decisions) {
        job.answer_decided(decision);
    }
}

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

/// A write batch in `/metrics`: how many operations, how long from its start to its
/// commit (or its failure), and whether it failed (its operations then run alone).
pub(crate) fn observe_batch(
    backend: &'static str,
    operations: usize,
    took: std::time::Duration,
    committed: bool,
) {
    metrics::histogram!("tollgate_store_write_batch_operations", "backend" => backend)
        .record(u32::try_from(operations).unwrap_or(u32::MAX));
    metrics::histogram!("tollgate_store_write_batch_seconds", "backend" => backend).record(took);
    if !committed {
        metrics::counter!("tollgate_store_write_batch_failures_total", "backend" => backend).increment(1);
    }
}

pub(crate) fn stopped() -> StoreError {
    StoreError::Database("the store's writer has stopped".into())
}
