//! The store's two error shapes: `StoreError`, an infrastructure failure that says whether a
//! retry is safe, and `TxError<E>`, which adds a domain rejection `E` returned as a value.
//!
//! No database driver type appears here: adapters translate their errors at the boundary,
//! so callers never depend on sqlx.

/// A failure of the store itself, not a decision about the request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    /// Another writer held the database for longer than the busy timeout.
    #[error("database is busy")]
    Busy,
    /// The database server could not be reached (or reached in time): retried by the
    /// caller later, not in a loop, since every attempt waits for the connection timeout.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A bug: the transaction was rolled back and logged instead of writing bad money.
    #[error("ledger invariant violated: {0}")]
    Invariant(String),
    /// A settlement of a reservation held in memory could not be written (the error
    /// says why): the hold was released and nothing is charged, so there is nothing left
    /// to write, now or later.
    #[error("the settlement could not be written and its hold in memory was released: {0}")]
    Released(String),
}

impl StoreError {
    /// Whether running the same call again may succeed. Only contention is transient: every
    /// store call either commits or rolls back as a whole, so a retry cannot apply twice.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy)
    }

    /// Whether the database could not be reached at all, rather than refusing the call.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The result of a transaction that may be refused for a domain reason `E`.
#[derive(Debug, thiserror::Error)]
pub enum TxError<E> {
    /// The transaction was refused and rolled back; nothing was written.
    #[error("{0}")]
    Rejected(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}
