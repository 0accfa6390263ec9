//! The hot path's writer: reservations and settlements, with group commit, decided by the
//! book held in memory.
//!
//! One OS thread owns a SQLite connection and a `Book`, and runs every queued reservation
//! and settlement in a single `BEGIN IMMEDIATE … COMMIT`, answering each caller only after
//! that commit (a reservation's caller also hears the book's decision before it:
//! `batching.rs`).
//!
//! Durability (`SqliteOptions::sync_interval`). With an interval (the default), commits use
//! `synchronous = NORMAL`: `COMMIT` returns once the batch is written to the log, in the
//! operating system's cache, so a crash of this process loses nothing a caller was told;
//! the syncer thread fsyncs the log within the interval after any commit, so a power loss
//! loses at most that interval's commits. WAL makes what survives a prefix of the commits:
//! a settlement never survives without the reservation it ends. Measured, the per-batch
//! fsync was half of a request's latency at one connection. With no interval, every commit
//! is fsync'd before its callers are answered (`synchronous = FULL`).
//!
//! The book keeps what admission decides on from batch to batch — lots, accounts, month
//! counters, the open reservations this process made — so a batch reads nothing before
//! deciding, unless someone else wrote. That is known exactly: `PRAGMA data_version`, read
//! under the write lock at each batch's start, changes when any other connection (the
//! async pool's, another process's) has committed since this one last looked; the book is
//! then dropped and reloaded from the tables. Rows are still written compare-and-set
//! against the book's values and read back, so a book that disagreed with the tables would
//! fail its batch, never pass silently.
//!
//! If anything in a batch fails — a decision (an unknown reservation), a write, the commit —
//! the transaction is rolled back, the book dropped, and every operation run again in a
//! batch of its own, so the error reaches the one it belongs to. A refusal is a decision,
//! not a failure: it writes nothing.
//!
//! Why a thread with synchronous calls instead of the async pool the rest of the store uses:
//! the async driver runs each statement as a round trip to its own worker thread, and on the
//! hot path — two dozen statements a request — those thread wake-ups, not SQLite, were the
//! cost (profiled: SQLite under 1 % of CPU, scheduler wake-ups most of the rest). Here a
//! whole batch runs on one thread with prepared statements cached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;
use tollgate_core::ledger::{Account, AccountId, AccountKind, Lot, LotKind, ReservationLine};
use tollgate_core::money::NanoUsd;
use tollgate_core::usage::Speed;

use crate::batching::{Job, WriterQueue, answer_decided, observe_batch, take_batch};
use crate::book::{
    Book, Decision, Delta, Ended, HeldInMemory, LoadedReservation, NewRow, OpenReservation, Operation,
    Posted, UserCounterKey,
};
use crate::codec::{attempts_to_sql, label_text};
use crate::error::StoreError;
use crate::journal::{SpendCounter, check_read_back};
use crate::model::UsageRecord;
use crate::sqlite::{BUSY_TIMEOUT, invariant, millis, timestamp_from_sql};
use crate::stored_responses::{INSERT_STORED_RESPONSE, StoredResponse};

/// The book is dropped rather than grown past this many open reservations (a sign that
/// requests end elsewhere); it reloads what the next batch needs.
const BOOK_OPEN_RESERVATIONS_MAX: usize = 100_000;

fn sql_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Database(error.to_string()),
    }
}

/// Opens the writer's own connection (the schema is already migrated), starts its thread
/// (and the syncer's, with an interval), and returns the queue to it.
pub(crate) fn start(path: &Path, sync_interval: Duration) -> Result<WriterQueue, StoreError> {
    let connection = Connection::open(path).map_err(sql_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
    let synchronous = if sync_interval.is_zero() { "FULL" } else { "NORMAL" };
    connection
        // Statement journals (a trigger's insert, a constraint that may abort) in memory.
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;"
        ))
        .map_err(sql_error)?;
    connection.set_prepared_statement_cache_capacity(64);
    let commits = Arc::new(AtomicU64::new(0));
    if !sync_interval.is_zero() {
        let log = wal_path(path);
        let commits = Arc::downgrade(&commits);
        std::thread::Builder::new()
            .name("tollgate-sync".into())
            .spawn(move || sync_log_every(&log, sync_interval, &commits))
            .map_err(|error| StoreError::Database(format!("cannot start the syncer thread: {error}")))?;
    }
    let (queue, receiver) = WriterQueue::new();
    let (book_reloads, held_in_memory) = (queue.book_reloads(), queue.held_in_memory());
    std::thread::Builder::new()
        .name("tollgate-writer".into())
        .spawn(move || write_batches(connection, receiver, commits, book_reloads, held_in_memory))
        .map_err(|error| StoreError::Database(format!("cannot start the writer thread: {error}")))?;
    Ok(queue)
}

/// SQLite's write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    PathBuf::from(log)
}

/// The syncer: every `interval`, if the writer committed since the last look, fsyncs the
/// log (fsync is per file, whichever descriptor asks). Stops when the writer has stopped,
/// after one last sync.
fn sync_log_every(log: &Path, interval: Duration, commits: &std::sync::Weak<AtomicU64>) {
    let mut synced = 0;
    loop {
        std::thread::sleep(interval);
        let Some(counter) = commits.upgrade() else {
            sync_log(log);
            return;
        };
        let committed = counter.load(Ordering::Acquire);
        drop(counter);
        if committed != synced {
            sync_log(log);
            synced = committed;
        }
    }
}

fn sync_log(log: &Path) {
    let synced = std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .and_then(|file| file.sync_all());
    match synced {
        Ok(()) => {}
        // The last connection closed, checkpointed the log into the database and removed it.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::error!(%error, log = %log.display(), "cannot fsync the database's log; charges committed since the last fsync would not survive a power loss")
        }
    }
}

/// The writer thread's state: its connection, the book, and what it last knew of both.
struct Writer {
    connection: Connection,
    book: Book,
    /// `PRAGMA data_version` when the book was last known to match the tables.
    data_version: Option<i64>,
    /// Batches committed, for the syncer.
    commits: Arc<AtomicU64>,
    /// Books dropped because another connection committed (`Store::book_reloads`).
    book_reloads: Arc<AtomicU64>,
}

fn write_batches(
    connection: Connection,
    mut receiver: mpsc::Receiver<Job>,
    commits: Arc<AtomicU64>,
    book_reloads: Arc<AtomicU64>,
    held_in_memory: HeldInMemory,
) {
    let mut writer = Writer {
        connection,
        book: Book::keeping_holds(held_in_memory),
        data_version: None,
        commits,
        book_reloads,
    };
    while let Some(first) = receiver.blocking_recv() {
        writer.commit_batch(take_batch(first, &mut receiver));
    }
}

impl Writer {
    /// Runs a batch in one transaction and answers every caller after its commit; if it
    /// fails, runs each operation again as a batch of its own.
    fn commit_batch(&mut self, jobs: Vec<Job>) {
        let started = tokio::time::Instant::now();
        let result = self.run_batch(&jobs);
        observe_batch("sqlite", jobs.len(), started.elapsed(), result.is_ok());
        match result {
            Ok(decisions) => jobs
                .into_iter()
                .zip(decisions)
                .for_each(|(job, decision)| job.answer(decision)),
            Err(error) if jobs.len() == 1 => {
                tracing::error!(%error, "a write batch failed and was rolled back");
                let error = match jobs[0].operation() {
                    Operation::Settle(settlement) => self.release_held(&settlement.reservation_id, error),
                    _ => error,
                };
                jobs.into_iter().for_each(|job| job.fail(error.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, operations = jobs.len(), "a write batch was rolled back; running its operations one by one");
                for job in jobs {
                    self.commit_batch(vec![job]);
                }
            }
        }
    }

    /// Releases the hold in memory of a settlement that could not be written, if it had
    /// one: its client is told an error and nothing is charged (see `book.rs`). The error
    /// then says so (`StoreError::Released`), so that nobody tries to write it again.
    fn release_held(&mut self, reservation_id: &str, error: StoreError) -> StoreError {
        match self.book.release(reservation_id) {
            Ok(true) => {
                tracing::warn!(
                    reservation_id,
                    "the settlement of a hold in memory could not be written; the hold is released and nothing is charged"
                );
                StoreError::Released(error.to_string())
            }
            Ok(false) => error,
            Err(release) => {
                tracing::error!(error = %release, reservation_id, "releasing a hold in memory failed");
                error
            }
        }
    }

    /// One transaction: make sure the book matches the tables, load what it lacks, decide
    /// every operation, write the delta, commit. On any failure the transaction is rolled
    /// back and the book dropped.
    fn run_batch(&mut self, jobs: &[Job]) -> Result<Vec<Decision>, StoreError> {
        let Writer {
            connection,
            book,
            data_version,
            book_reloads,
            ..
        } = self;
        let result = in_transaction(connection, || {
            let version = read_data_version(connection)?;
            if data_version.is_some_and(|known| known != version) {
                book_reloads.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_store_book_reloads_total", "backend" => "sqlite").increment(1);
            }
            if *data_version != Some(version) || book.open_reservations() > BOOK_OPEN_RESERVATIONS_MAX {
                book.clear();
                *data_version = Some(version);
            }
            book.begin_batch();
            let operations: Vec<Operation<'_>> = jobs.iter().map(Job::operation).collect();
            for reservation_id in book.missing_reservations(&operations) {
                if let Some(loaded) = load_reservation(connection, reservation_id)? {
                    book.load_reservation(reservation_id.to_owned(), loaded);
                }
            }
            for org_id in book.missing_orgs(&operations) {
                let lots = load_lots(connection, org_id)?;
                let spend_account = load_system_account(connection, org_id, AccountKind::Spend)?;
                book.load_org(org_id.to_owned(), lots, spend_account);
            }
            for (org_id, month) in book.missing_months(&operations) {
                let counters = load_month_counters(connection, org_id, month)?;
                book.load_month(org_id.to_owned(), month, counters);
            }
            for key in book.missing_user_counters(&operations) {
                let counter = load_user_counter(connection, &key)?;
                book.load_user_counter(key, counter);
            }
            let mut delta = Delta::default();
            let decisions = operations
                .iter()
                .map(|operation| book.decide(*operation, &mut delta))
                .collect::<Result<Vec<_>, _>>()?;
            answer_decided(jobs, &decisions);
            write_delta(connection, &delta)?;
            still_in_transaction(connection)?;
            Ok(decisions)
        });
        if result.is_ok() {
            self.commits.fetch_add(1, Ordering::Release);
            self.book.committed();
        } else {
            self.book.clear();
            self.data_version = None;
        }
        result
    }
}

/// SQLite's count of commits by other connections, as this one sees it.
fn read_data_version(connection: &Connection) -> Result<i64, StoreError> {
    connection
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(sql_error)
}

/// One transaction around `run`: committed if it succeeds, rolled back entirely if not.
fn in_transaction<T>(
    connection: &Connection,
    run: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    begin_immediate(connection)?;
    let result = run().and_then(|value| {
        run_cached(connection, "COMMIT")?;
        Ok(value)
    });
    if result.is_err()
        && !connection.is_autocommit()
        && let Err(rollback) = connection.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %rollback, "rolling back a failed batch failed");
    }
    result
}

/// Fails if SQLite ended the transaction itself (an I/O error, a full disk).
fn still_in_transaction(connection: &Connection) -> Result<(), StoreError> {
    if connection.is_autocommit() {
        return Err(StoreError::Database(
            "the write batch's transaction ended under it".into(),
        ));
    }
    Ok(())
}

/// `BEGIN IMMEDIATE`, waiting out another process's (or the async pool's) write
/// transaction beyond SQLite's own busy timeout only as long as that timeout.
fn begin_immediate(connection: &Connection) -> Result<(), StoreError> {
    run_cached(connection, "BEGIN IMMEDIATE")
}

/// Runs a statement kept prepared: `execute_batch` would parse it again each time (a few
/// per cent of the writer's time, profiled).
fn run_cached(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(sql_error)
}

/// Writes what a batch's decisions changed: new reservations and their lines, ended ones,
/// the journal, the usage records (after the ends, which their rollup reads), then each
/// changed account and counter once, compare-and-set and read back; then the rows with no
/// money.
fn write_delta(connection: &Connection, delta: &Delta<'_>) -> Result<(), StoreError> {
    for row in &delta.reserved {
        insert_reservation(connection, row)?;
    }
    for ended in &delta.ended {
        end_reservation(connection, ended)?;
    }
    for posted in &delta.posted {
        insert_transfer(connection, posted)?;
    }
    for (record, reservation_id) in &delta.records {
        insert_usage_record(connection, record, reservation_id)?;
    }
    for (before, now) in delta.accounts()? {
        store_account(connection, &before, &now)?;
    }
    for ((org_id, workspace_id, month), before, now) in delta.counters()? {
        store_counter(
            connection,
            (org_id, workspace_id, *month),
            before.map(|counter| (counter.settled, counter.held)),
            (now.settled, now.held),
        )?;
    }
    for (key, before, now) in delta.user_counters()? {
        store_user_counter(connection, key, before, now)?;
    }
    for response in &delta.responses {
        insert_stored_response(connection, response)?;
    }
    Ok(())
}

fn insert_stored_response(connection: &Connection, response: &StoredResponse) -> Result<(), StoreError> {
    connection
        .prepare_cached(INSERT_STORED_RESPONSE)
        .and_then(|mut statement| {
            statement.execute(params![
                response.id,
                response.org_id,
                response.workspace_id,
                response.api_key_id,
                millis(response.created_at),
                millis(response.expires_at),
                response.input_items,
                response.response,
            ])
        })
        .map(drop)
        .map_err(sql_error)
}

fn insert_reservation(connection: &Connection, row: &NewRow<'_>) -> Result<(), StoreError> {
    let NewRow {
        reservation,
        lines,
        ended,
    } = row;
    connection
        .prepare_cached(
            "INSERT INTO reservations
                (id, org_id, workspace_id, api_key_id, request_id, model, amount, state, created_at, deadline,
                 user_id, ended_at, charged)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                reservation.reservation_id,
                reservation.org_id,
                reservation.workspace_id,
                reservation.api_key_id,
                reservation.request_id,
                reservation.model,
                reservation.amount.nanos(),
                ended.as_ref().map_or("pending", |ended| ended.state),
                millis(reservation.created_at),
                millis(reservation.deadline),
                reservation.user_id,
                ended.as_ref().map(|ended| millis(ended.ended_at)),
                ended.as_ref().map(|ended| ended.charged.nanos()),
            ])
        })
        .map_err(sql_error)?;
    for (line_no, line) in lines.iter().enumerate() {
        connection
            .prepare_cached(
                "INSERT INTO reservation_lines (reservation_id, line_no, lot_id, account_id, amount)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    reservation.reservation_id,
                    i64::try_from(line_no).unwrap_or(i64::MAX),
                    line.lot_id,
                    line.lot_account.0,
                    line.amount.nanos()
                ])
            })
            .map_err(sql_error)?;
    }
    Ok(())
}

/// Ends a reservation, guarded by its state.
fn end_reservation(connection: &Connection, ended: &Ended<'_>) -> Result<(), StoreError> {
    let written = connection
        .prepare_cached("UPDATE reservations SET state = ?1, ended_at = ?2, charged = ?3 WHERE id = ?4 AND state = 'pending'")
        .and_then(|mut statement| {
            statement.execute(params![
                ended.state,
                millis(ended.ended_at),
                ended.charged.nanos(),
                ended.reservation_id
            ])
        })
        .map_err(sql_error)?;
    if written != 1 {
        // Unreachable under the write lock with a book that matches the tables; roll back
        // rather than end it twice.
        return Err(invariant(format!(
            "reservation {} was not pending when its batch ended it",
            ended.reservation_id
        )));
    }
    Ok(())
}

fn insert_transfer(connection: &Connection, posted: &Posted<'_>) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO transfers
                (org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut statement| {
            let entry = posted.entry();
            statement.execute(params![
                entry.org_id,
                entry.debit.0,
                entry.credit.0,
                entry.amount.nanos(),
                entry.kind.as_str(),
                entry.reservation_id,
                entry.lot_id,
                millis(entry.created_at)
            ])
        })
        .map_err(sql_error)?;
    Ok(())
}

/// A reservation and its lines as the tables hold them; `None` if there is none.
fn load_reservation(
    connection: &Connection,
    reservation_id: &str,
) -> Result<Option<LoadedReservation>, StoreError> {
    let row = connection
        .prepare_cached(
            "SELECT org_id, workspace_id, state, amount, created_at, user_id FROM reservations WHERE id = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![reservation_id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                })
                .optional()
        })
        .map_err(sql_error)?;
    let Some((org_id, workspace_id, state, amount, created_at, user_id)) = row else {
        return Ok(None);
    };
    if state != "pending" {
        return Ok(Some(LoadedReservation::Ended));
    }
    let mut statement = connection
        .prepare_cached(
            "SELECT lot_id, account_id, amount FROM reservation_lines
             WHERE reservation_id = ?1 ORDER BY line_no",
        )
        .map_err(sql_error)?;
    let lines = statement
        .query_map(params![reservation_id], |row| {
            Ok(ReservationLine {
                lot_id: row.get(0)?,
                lot_account: AccountId(row.get(1)?),
                amount: NanoUsd::from_nanos(row.get(2)?),
            })
        })
        .map_err(sql_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_error)?;
    Ok(Some(LoadedReservation::Open(OpenReservation {
        org_id,
        workspace_id,
        user_id,
        amount: NanoUsd::from_nanos(amount),
        created_at: timestamp_from_sql(created_at)?,
        lines,
    })))
}

/// The account columns `account_from` reads, of the table aliased `a`; a macro so that
/// statements are `concat!`-ed at compile time, not formatted per call.
macro_rules! account_columns {
    () => {
        "a.id, a.kind, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted"
    };
}

fn account_from(row: &Row<'_>, first: usize) -> rusqlite::Result<Result<Account, StoreError>> {
    let kind: String = row.get(first + 1)?;
    let Some(kind) = AccountKind::parse(&kind) else {
        return Ok(Err(StoreError::Database(format!(
            "unknown account kind '{kind}'"
        ))));
    };
    Ok(Ok(Account {
        id: AccountId(row.get(first)?),
        kind,
        debits_pending: NanoUsd::from_nanos(row.get(first + 2)?),
        debits_posted: NanoUsd::from_nanos(row.get(first + 3)?),
        credits_pending: NanoUsd::from_nanos(row.get(first + 4)?),
        credits_posted: NanoUsd::from_nanos(row.get(first + 5)?),
    }))
}

fn load_system_account(
    connection: &Connection,
    org_id: &str,
    kind: AccountKind,
) -> Result<Account, StoreError> {
    connection
        .prepare_cached(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts a WHERE a.org_id = ?1 AND a.kind = ?2"
        ))
        .and_then(|mut statement| {
            statement
                .query_row(params![org_id, kind.as_str()], |row| account_from(row, 0))
                .optional()
        })
        .map_err(sql_error)?
        .unwrap_or_else(|| {
            Err(invariant(format!(
                "organization {org_id} has no {} account",
                kind.as_str()
            )))
        })
}

fn load_lots(connection: &Connection, org_id: &str) -> Result<Vec<Lot>, StoreError> {
    let mut statement = connection
        .prepare_cached(concat!(
            "SELECT ",
            account_columns!(),
            ", l.id, l.kind, l.granted_at, l.expires_at
             FROM lots l JOIN accounts a ON a.id = l.account_id
             WHERE l.org_id = ?1 ORDER BY l.granted_at, l.id"
        ))
        .map_err(sql_error)?;
    let rows = statement
        .query_map(params![org_id], |row| {
            let account = account_from(row, 0)?;
            let kind: String = row.get(7)?;
            let granted_at: i64 = row.get(8)?;
            let expires_at: Option<i64> = row.get(9)?;
            Ok((account, row.get::<_, String>(6)?, kind, granted_at, expires_at))
        })
        .map_err(sql_error)?;
    let mut lots = Vec::new();
    for row in rows {
        let (account, lot_id, kind, granted_at, expires_at) = row.map_err(sql_error)?;
        let kind = LotKind::parse(&kind)
            .ok_or_else(|| StoreError::Database(format!("unknown lot kind '{kind}'")))?;
        lots.push(Lot {
            lot_id,
            kind,
            account: account?,
            granted_at: timestamp_from_sql(granted_at)?,
            expires_at: expires_at.map(timestamp_from_sql).transpose()?,
        });
    }
    Ok(lots)
}

/// Writes one account's totals, compare-and-set against `loaded`, read back.
fn store_account(connection: &Connection, loaded: &Account, current: &Account) -> Result<(), StoreError> {
    let stored = connection
        .prepare_cached(
            "UPDATE accounts
             SET debits_pending = ?1, debits_posted = ?2, credits_pending = ?3, credits_posted = ?4
             WHERE id = ?5 AND debits_pending = ?6 AND debits_posted = ?7
               AND credits_pending = ?8 AND credits_posted = ?9
             RETURNING id, kind, debits_pending, debits_posted, credits_pending, credits_posted",
        )
        .and_then(|mut statement| {
            statement
                .query_row(
                    params![
                        current.debits_pending.nanos(),
                        current.debits_posted.nanos(),
                        current.credits_pending.nanos(),
                        current.credits_posted.nanos(),
                        current.id.0,
                        loaded.debits_pending.nanos(),
                        loaded.debits_posted.nanos(),
                        loaded.credits_pending.nanos(),
                        loaded.credits_posted.nanos(),
                    ],
                    |row| account_from(row, 0),
                )
                .optional()
        })
        .map_err(sql_error)?;
    let Some(stored) = stored else {
        return Err(invariant(format!(
            "account {} changed after it was loaded in the same transaction",
            current.id.0
        )));
    };
    check_read_back(&stored?, current)
}

/// Every workspace's counter of the organization for `month`.
fn load_month_counters(
    connection: &Connection,
    org_id: &str,
    month: i64,
) -> Result<Vec<(String, SpendCounter)>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT workspace_id, settled_nanos, held_nanos FROM spend_counters WHERE org_id = ?1 AND month = ?2")
        .map_err(sql_error)?;
    let rows = statement
        .query_map(params![org_id, month], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql_error)?;
    rows.map(|row| {
        row.map(|(row_workspace, settled, held)| {
            let counter = SpendCounter {
                settled: NanoUsd::from_nanos(settled),
                held: NanoUsd::from_nanos(held),
            };
            (row_workspace, counter)
        })
    })
    .collect::<Result<Vec<_>, _>>()
    .map_err(sql_error)
}

/// Writes a counter compare-and-set against what was loaded (or inserts it), reading it
/// back in the same statement.
fn counter_label(org_id: &str, workspace_id: &str, month: i64) -> String {
    format!("spend counter of workspace {workspace_id} ({org_id}) for month {month}")
}

/// Writes one month counter, inserted or compare-and-set against `loaded`, read back.
fn store_counter(
    connection: &Connection,
    (org_id, workspace_id, month): (&str, &str, i64),
    loaded: Option<(NanoUsd, NanoUsd)>,
    current: (NanoUsd, NanoUsd),
) -> Result<(), StoreError> {
    let label = || counter_label(org_id, workspace_id, month);
    let read_back = |row: &Row<'_>| Ok((NanoUsd::from_nanos(row.get(0)?), NanoUsd::from_nanos(row.get(1)?)));
    let stored = match loaded {
        None => connection
            .prepare_cached(
                "INSERT INTO spend_counters (org_id, workspace_id, month, settled_nanos, held_nanos)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 RETURNING settled_nanos, held_nanos",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![org_id, workspace_id, month, current.0.nanos(), current.1.nanos()],
                        read_back,
                    )
                    .optional()
            }),
        Some(loaded) => connection
            .prepare_cached(
                "UPDATE spend_counters SET settled_nanos = ?1, held_nanos = ?2
                 WHERE org_id = ?3 AND workspace_id = ?4 AND month = ?5
                   AND settled_nanos = ?6 AND held_nanos = ?7
                 RETURNING settled_nanos, held_nanos",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![
                            current.0.nanos(),
                            current.1.nanos(),
                            org_id,
                            workspace_id,
                            month,
                            loaded.0.nanos(),
                            loaded.1.nanos()
                        ],
                        read_back,
                    )
                    .optional()
            }),
    }
    .map_err(sql_error)?;
    check_counter_read_back(stored, current, label)
}

/// A user's counter for a month as the table holds it; `None` if it has no row.
fn load_user_counter(
    connection: &Connection,
    (org_id, workspace_id, user_id, month): &UserCounterKey,
) -> Result<Option<SpendCounter>, StoreError> {
    connection
        .prepare_cached(
            "SELECT settled_nanos, held_nanos FROM user_spend_counters
             WHERE org_id = ?1 AND workspace_id = ?2 AND user_id = ?3 AND month = ?4",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![org_id, workspace_id, user_id, month], |row| {
                    Ok(SpendCounter {
                        settled: NanoUsd::from_nanos(row.get(0)?),
                        held: NanoUsd::from_nanos(row.get(1)?),
                    })
                })
                .optional()
        })
        .map_err(sql_error)
}

/// Writes one user's month counter, inserted or compare-and-set against `loaded`, read
/// back, as `store_counter` writes a workspace's.
fn store_user_counter(
    connection: &Connection,
    (org_id, workspace_id, user_id, month): &UserCounterKey,
    loaded: Option<SpendCounter>,
    current: SpendCounter,
) -> Result<(), StoreError> {
    let label = || {
        format!("spend counter of user {user_id} in workspace {workspace_id} ({org_id}) for month {month}")
    };
    let read_back = |row: &Row<'_>| {
        Ok(SpendCounter {
            settled: NanoUsd::from_nanos(row.get(0)?),
            held: NanoUsd::from_nanos(row.get(1)?),
        })
    };
    let stored = match loaded {
        None => connection
            .prepare_cached(
                "INSERT INTO user_spend_counters (org_id, workspace_id, user_id, month, settled_nanos, held_nanos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 RETURNING settled_nanos, held_nanos",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![
                            org_id,
                            workspace_id,
                            user_id,
                            month,
                            current.settled.nanos(),
                            current.held.nanos()
                        ],
                        read_back,
                    )
                    .optional()
            }),
        Some(loaded) => connection
            .prepare_cached(
                "UPDATE user_spend_counters SET settled_nanos = ?1, held_nanos = ?2
                 WHERE org_id = ?3 AND workspace_id = ?4 AND user_id = ?5 AND month = ?6
                   AND settled_nanos = ?7 AND held_nanos = ?8
                 RETURNING settled_nanos, held_nanos",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![
                            current.settled.nanos(),
                            current.held.nanos(),
                            org_id,
                            workspace_id,
                            user_id,
                            month,
                            loaded.settled.nanos(),
                            loaded.held.nanos()
                        ],
                        read_back,
                    )
                    .optional()
            }),
    }
    .map_err(sql_error)?;
    check_counter_read_back(stored, current, label)
}

/// A counter written compare-and-set reads back as written; no row back means it changed
/// after it was loaded in the same transaction.
fn check_counter_read_back<T: PartialEq + std::fmt::Debug>(
    stored: Option<T>,
    current: T,
    label: impl Fn() -> String,
) -> Result<(), StoreError> {
    match stored {
        None => Err(invariant(format!(
            "{} changed after it was loaded in the same transaction",
            label()
        ))),
        Some(stored) if stored != current => Err(invariant(format!(
            "{} reads back as {stored:?} after writing {current:?}",
            label()
        ))),
        Some(_) => Ok(()),
    }
}

fn count(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Database(format!("count {value} does not fit a database integer")))
}

fn insert_usage_record(
    connection: &Connection,
    record: &UsageRecord,
    reservation_id: &str,
) -> Result<(), StoreError> {
    let usage = &record.usage;
    connection
        .prepare_cached(
            "INSERT INTO usage_records
                (request_id, org_id, workspace_id, api_key_id, model, input_tokens, output_tokens,
                 cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
                 cache_read_input_tokens, cost_nanos, status, error_type, latency_ms, started_at,
                 ended_at, reservation_id, client_session_id, client_agent_id,
                 client_parent_agent_id, served_model, speed, multipliers, web_search_requests,
                 cost_input_nanos, cost_output_nanos, cost_cache_write_5m_nanos,
                 cost_cache_write_1h_nanos, cost_cache_read_nanos, cost_web_search_nanos,
                 upstream_attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
        )
        .and_then(|mut statement| {
            statement.execute(rusqlite::params_from_iter([
                &record.request_id as &dyn rusqlite::ToSql,
                &record.org_id,
                &record.workspace_id,
                &record.api_key_id,
                &record.model,
                &count(usage.input_tokens).unwrap_or(i64::MAX),
                &count(usage.output_tokens).unwrap_or(i64::MAX),
                &count(usage.cache_creation_5m_input_tokens).unwrap_or(i64::MAX),
                &count(usage.cache_creation_1h_input_tokens).unwrap_or(i64::MAX),
                &count(usage.cache_read_input_tokens).unwrap_or(i64::MAX),
                &record.cost.nanos(),
                &record.status.as_str(),
                &record.error_type,
                &count(record.latency_ms).unwrap_or(i64::MAX),
                &millis(record.started_at),
                &millis(record.ended_at),
                &reservation_id,
                &label_text(record.attribution.session_id.as_ref()),
                &label_text(record.attribution.agent_id.as_ref()),
                &label_text(record.attribution.parent_agent_id.as_ref()),
                &record.served_model,
                &usage.speed.map(Speed::as_str),
                &record.multipliers.label(),
                &count(usage.web_search_requests).unwrap_or(i64::MAX),
                &record.lines.input.nanos(),
                &record.lines.output.nanos(),
                &record.lines.cache_write_5m.nanos(),
                &record.lines.cache_write_1h.nanos(),
                &record.lines.cache_read.nanos(),
                &record.lines.web_search.nanos(),
                &attempts_to_sql(&record.upstream_attempts),
            ]))
        })
        .map_err(sql_error)?;
    Ok(())
}
