//! What separates the two adapters where their SQL is otherwise the same: which pool reads
//! and which writes, how a read snapshot begins, how a driver error is translated, and the
//! few clauses each database spells its own way. The queries written once for both
//! (`audit_log`, `reports`, `batches`, `ledger_audit`, …) are default methods of traits over
//! `Dialect`; each adapter implements it in its own `dialect` module, where its concrete
//! sqlx types are.
//!
//! The queries are generic over the sqlx driver, not `sqlx::Any`: each backend still runs
//! its own compiled, typed code. Their placeholders are `$1`, `$2`, …, which PostgreSQL
//! reads natively and sqlx binds on SQLite by number too (`$N` takes the N-th argument),
//! so one text serves both. A bare `?` must not share a statement with them: sqlx would
//! bind it from the first argument again.
//!
//! Where only the locking differs, the difference is a `Dialect` method too (`begin_write`,
//! `busy_pause`, `lock_organization`, `lock_organization_of_workspace`,
//! `lock_organization_of_purchase`, `for_update`, `skip_locked`) and the
//! script is still written once, run again on contention by `retrying`; where more
//! differs, the script stays a twin in `sqlite/` and `postgres/`.

use std::future::Future;
use std::time::Duration;

use sqlx::query::Query;
use sqlx::{Database, Pool, Transaction};

use crate::batching::WriterQueue;
use crate::error::{StoreError, TxError};

/// The bound arguments of a query on `Db`.
pub(crate) type BoundArguments<'q, Db> = <Db as Database>::Arguments<'q>;

/// An adapter as the shared queries see it.
pub(crate) trait Dialect: Sync {
    type Db: Database;

    /// Where reads outside a transaction go (SQLite: the `query_only` readers).
    fn read_pool(&self) -> &Pool<Self::Db>;

    /// Where writes outside the hot path go (SQLite: the one writer connection).
    fn write_pool(&self) -> &Pool<Self::Db>;

    /// The hot path's writer, whose batches carry the money and the rows written beside
    /// it on every request (`batching.rs`).
    fn hot_writer(&self) -> &WriterQueue;

    /// A read transaction: one consistent snapshot across several queries.
    fn begin_read(&self) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;

    /// A write transaction as the adapter's own transaction scripts begin one. SQLite:
    /// `BEGIN IMMEDIATE` on the writer, which holds the database's one write lock from the
    /// first statement; PostgreSQL: an ordinary transaction, which locks the rows it names.
    fn begin_write(&self) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;

    /// Whether, and after what pause, a write transaction script that contention aborted
    /// (`Busy`) on its `attempt`-th run is run again, as the adapter's own scripts are:
    /// PostgreSQL a few times (`postgres::retrying`); SQLite never, its writers queueing
    /// for the write lock instead.
    fn busy_pause(attempt: u32) -> Option<Duration>;

    /// Holds an organization against other writers until the transaction on `connection`
    /// ends, as a write transaction that checks before it writes does first; false if there
    /// is no such organization. PostgreSQL locks the organization's row; SQLite's write
    /// transaction holds the one write lock already, so it only reads.
    fn lock_organization(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Names the organization a workspace belongs to (`None`: no such workspace) and holds
    /// it against other writers until the transaction on `connection` ends: PostgreSQL
    /// locks the organization's row; SQLite's write transaction holds the one write lock
    /// already, so it only reads.
    fn lock_organization_of_workspace(
        connection: &mut <Self::Db as Database>::Connection,
        workspace_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Names the organization a purchase belongs to (`None`: no such purchase) and holds it
    /// as `lock_organization_of_workspace` does.
    fn lock_organization_of_purchase(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Translates a driver error at the adapter boundary, as the adapter's own queries do.
    fn store_error(error: sqlx::Error) -> StoreError;

    /// The clause ` AND <column> IN (<texts>)`, the `count` texts bound from placeholder
    /// `$first` on; with no texts it keeps every row. Bind them with `bind_any_of`.
    fn and_any_of(column: &str, first: usize, count: usize) -> String;

    /// The condition that `<column>` is one of `count` (at least one) texts bound from
    /// placeholder `$first` on. Bind them with `bind_any_of`, at most
    /// `texts_per_statement` in one statement.
    fn any_of(column: &str, first: usize, count: usize) -> String;

    /// How many texts one statement may bind as an `any_of` list: a page below SQLite's
    /// bound on parameters; PostgreSQL's one array has no bound.
    fn texts_per_statement() -> usize;

    /// What ends a `SELECT` of rows about to be claimed, so that two claimers take
    /// different rows rather than wait on each other (PostgreSQL); nothing where one
    /// writer at a time is the rule anyway (SQLite).
    fn skip_locked() -> &'static str;

    /// What ends a `SELECT` of rows the transaction is about to change, so that they are
    /// locked until the end, in the order the query names: ` FOR UPDATE` (PostgreSQL);
    /// nothing under SQLite's write lock.
    fn for_update() -> &'static str;

    /// The column that numbers a table's rows in insertion order, for tables whose key does
    /// not (`purchases`): SQLite's implicit `rowid`; PostgreSQL's `seq`, the identity column
    /// such a table carries in its place.
    fn insertion_order() -> &'static str;

    /// The calendar month (UTC) of a unix-millisecond column as the number YYYYMM, in the
    /// database's own calendar, so the audit recomputes the spend counters' months
    /// independently of the core's `month_key`.
    fn month_of_millis(column: &str) -> String;

    /// How many rows a statement wrote (inserted, updated or deleted): counts come from
    /// the driver, never from rows sent back only to be counted.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// Binds the texts of an `and_any_of` or `any_of` list, which must come last in the
    /// statement.
    fn bind_any_of<'q>(
        query: Query<'q, Self::Db, BoundArguments<'q, Self::Db>>,
        texts: &'q [String],
    ) -> Query<'q, Self::Db, BoundArguments<'q, Self::Db>>;
}

/// An outcome that contention may have aborted (`StoreError::Busy`).
pub(crate) trait Contended {
    fn is_busy(&self) -> bool;
}

impl Contended for StoreError {
    fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy)
    }
}

impl<E> Contended for TxError<E> {
    fn is_busy(&self) -> bool {
        matches!(self, TxError::Store(StoreError::Busy))
    }
}

/// Runs a write transaction script written once for both backends until contention no
/// longer aborts it, pausing as `D::busy_pause` says between runs: PostgreSQL's scripts a
/// few times (`postgres::retrying` is this), SQLite's once. Every script commits or rolls
/// back as a whole, so a run again can never apply twice.
pub(crate) async fn retrying<D, T, E, F, Fut>(mut script: F) -> Result<T, E>
where
    D: Dialect + ?Sized,
    E: Contended,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let outcome = script().await;
        let pause = match &outcome {
            Err(error) if error.is_busy() => D::busy_pause(attempt),
            _ => None,
        };
        let Some(pause) = pause else {
            return outcome;
        };
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}
