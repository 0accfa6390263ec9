//! Group commit for the hot path. Reservations and settlements are queued to one writer
//! task, which runs every queued operation inside its own `SAVEPOINT` of a single
//! `BEGIN IMMEDIATE … COMMIT` and answers each caller only after that commit. One fsync then
//! makes a whole batch durable instead of one per operation, with the same guarantees: an
//! operation that fails or is refused is rolled back to its savepoint alone, and if the
//! commit fails every caller of the batch gets the error and nothing of it is written.
//!
//! The writer borrows the store's one write connection per batch, so other writes (grants,
//! purchases, the reaper) interleave between batches, serialised as before.

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::sqlite::store_error;

/// Most operations one transaction carries: bounds how long the write lock is held.
const MAX_BATCH: usize = 256;
/// Operations waiting for the writer before callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 4_096;

type Connection = PoolConnection<Sqlite>;

/// One queued operation, type-erased so that operations with different results share a batch.
trait BatchedOp: Send {
    /// Runs inside the batch's transaction. The connection is passed by value and handed
    /// back, so no borrow crosses the task boundary.
    fn run(self: Box<Self>, connection: Connection) -> BoxFuture<'static, (Connection, Box<dyn Outcome>)>;
    /// The batch could not even start: tell the caller.
    fn abort(self: Box<Self>, error: &StoreError);
}

/// An operation's result, held until the batch's commit decides whether it stands.
trait Outcome: Send {
    fn succeeded(&self) -> bool;
    fn deliver(self: Box<Self>, commit_failure: Option<&StoreError>);
}

struct Op<T, E, F> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
}

struct Done<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> BatchedOp for Op<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(Connection) -> BoxFuture<'static, (Connection, Result<T, E>)> + Send + 'static,
{
    fn run(self: Box<Self>, connection: Connection) -> BoxFuture<'static, (Connection, Box<dyn Outcome>)> {
        let Op { work, reply } = *self;
        Box::pin(async move {
            let (connection, result) = work(connection).await;
            (connection, Box::new(Done { result, reply }) as Box<dyn Outcome>)
        })
    }

    fn abort(self: Box<Self>, error: &StoreError) {
        let _ = self.reply.send(Err(error.clone().into()));
    }
}

impl<T: Send, E: From<StoreError> + Send> Outcome for Done<T, E> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn deliver(self: Box<Self>, commit_failure: Option<&StoreError>) {
        let result = match commit_failure {
            Some(error) => Err(error.clone().into()),
            None => self.result,
        };
        // The caller may have gone away; its operation stands or falls with the batch anyway.
        let _ = self.reply.send(result);
    }
}

/// The queue to the writer task.
#[derive(Clone)]
pub(crate) struct BatchWriter {
    sender: mpsc::Sender<Box<dyn BatchedOp>>,
}

impl BatchWriter {
    /// Starts the writer task on the current runtime. It stops when every `BatchWriter`
    /// clone is dropped.
    pub(crate) fn start(pool: SqlitePool) -> BatchWriter {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(pool, receiver));
        BatchWriter { sender }
    }

    /// Runs `work` in the next batch and returns its result once the batch has committed.
    /// `work` must not begin or end a transaction itself.
    pub(crate) async fn submit<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(Connection) -> BoxFuture<'static, (Connection, Result<T, E>)> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn BatchedOp> = Box::new(Op { work, reply });
        if self.sender.send(op).await.is_err() {
            return Err(StoreError::Database("the store's writer has stopped".into()).into());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Database("the store's writer dropped an operation".into()).into())
        })
    }
}

async fn write_batches(pool: SqlitePool, mut receiver: mpsc::Receiver<Box<dyn BatchedOp>>) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut queued, MAX_BATCH).await > 0 {
        commit_batch(&pool, std::mem::take(&mut queued)).await;
    }
}

async fn execute(connection: &mut Connection, statement: &'static str) -> Result<(), StoreError> {
    sqlx::query(statement)
        .execute(&mut **connection)
        .await
        .map(|_| ())
        .map_err(store_error)
}

async fn commit_batch(pool: &SqlitePool, ops: Vec<Box<dyn BatchedOp>>) {
    let mut connection = match pool.acquire().await.map_err(store_error) {
        Ok(connection) => connection,
        Err(error) => return ops.into_iter().for_each(|op| op.abort(&error)),
    };
    if let Err(error) = execute(&mut connection, "BEGIN IMMEDIATE").await {
        return ops.into_iter().for_each(|op| op.abort(&error));
    }
    let mut outcomes: Vec<Box<dyn Outcome>> = Vec::with_capacity(ops.len());
    let mut pending = ops.into_iter();
    let failure = loop {
        let Some(op) = pending.next() else { break None };
        if let Err(error) = execute(&mut connection, "SAVEPOINT batched_op").await {
            op.abort(&error);
            break Some(error);
        }
        let (returned, outcome) = op.run(connection).await;
        connection = returned;
        let closed = if outcome.succeeded() {
            execute(&mut connection, "RELEASE batched_op").await
        } else {
            match execute(&mut connection, "ROLLBACK TO batched_op").await {
                Ok(()) => execute(&mut connection, "RELEASE batched_op").await,
                Err(error) => Err(error),
            }
        };
        outcomes.push(outcome);
        if let Err(error) = closed {
            break Some(error);
        }
    };
    let failure = match failure {
        Some(error) => Some(error),
        None => execute(&mut connection, "COMMIT").await.err(),
    };
    if let Some(error) = &failure {
        tracing::error!(%error, operations = outcomes.len(), "a write batch failed and was rolled back");
        // Nothing of the batch may stand; a failed rollback leaves the connection to be
        // discarded, which rolls back too.
        if execute(&mut connection, "ROLLBACK").await.is_err() {
            connection.detach();
        }
        pending.for_each(|op| op.abort(error));
    }
    for outcome in outcomes {
        outcome.deliver(failure.as_ref());
    }
}
