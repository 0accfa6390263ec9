//! The hot path's writer: reservations and settlements, with group commit.
//!
//! One OS thread owns a SQLite connection and runs every queued reservation and settlement
//! in a single `BEGIN IMMEDIATE … COMMIT`, answering each caller only after that commit: one
//! fsync makes a whole batch durable (a batch of reservations only waits for none of its own:
//! the next synced commit carries it, see `CommitSync`). An operation that is refused or
//! fails writes nothing: it fails before writing, or the batch runs again with each
//! operation in its own `SAVEPOINT` and that one is rolled back alone (`commit_batch`). If
//! the commit fails, every caller of the batch gets the error and nothing of the batch is
//! written.
//!
//! Why a thread with synchronous calls instead of the async pool the rest of the store uses:
//! the async driver runs each statement as a round trip to its own worker thread, and on the
//! hot path — two dozen statements a request — those thread wake-ups, not SQLite, were the
//! cost (profiled: SQLite under 1 % of CPU, scheduler wake-ups most of the rest). Here a
//! whole batch runs on one thread with prepared statements cached.
//!
//! The money rules are the core's (`plan_reservation`, `plan_settlement`, `reserve`,
//! `settle_pending`, `check_spend`). The operations of a batch change accounts and month
//! counters in memory (`BatchRows`), and each changed row is written once before the
//! commit, compare-and-set against its totals as loaded and read back through `RETURNING`,
//! as everywhere in the store. Other writers (grants, purchases, maintenance) use the async
//! pool's connection; SQLite's write lock and busy timeout order the two.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot};
use tollgate_core::ledger::{self, Account, AccountId, AccountKind, Lot, LotKind, ReservationLine};
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{self, MonthSpend, month_key};

use crate::batching::{QUEUE_CAPACITY, ReserveResult, SettleResult, stopped, take_batch};
use crate::codec::label_text;
use crate::error::{StoreError, TxError};
use crate::journal::{
    AccountSet, SpendCounter, check_read_back, check_record_scope, check_settlement, ended_state,
    month_spend_of, plan_end, settle_outcome,
};
use crate::model::{NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement, UsageRecord};
use crate::sqlite::{BUSY_TIMEOUT, invariant, millis, timestamp_from_sql};

/// A queued operation, its caller's reply, and its result once run: held until the batch's
/// commit decides whether it stands.
enum Job {
    Reserve {
        reservation: NewReservation,
        reply: oneshot::Sender<ReserveResult>,
        result: Option<ReserveResult>,
    },
    Settle {
        settlement: Settlement,
        reply: oneshot::Sender<SettleResult>,
        result: Option<SettleResult>,
    },
}

impl Job {
    /// Runs the operation (again, if the batch is rerun) and keeps its result; says whether
    /// it succeeded.
    fn run(&mut self, connection: &Connection, rows: &mut BatchRows) -> bool {
        match self {
            Job::Reserve {
                reservation, result, ..
            } => result.insert(reserve_in(connection, rows, reservation)).is_ok(),
            Job::Settle {
                settlement, result, ..
            } => result.insert(settle_in(connection, rows, settlement)).is_ok(),
        }
    }

    /// Turns a result that stood when the operation ran into `error` (its changes could not
    /// be written).
    fn fail(&mut self, error: StoreError) {
        match self {
            Job::Reserve { result, .. } => *result = Some(Err(error.into())),
            Job::Settle { result, .. } => *result = Some(Err(error)),
        }
    }

    /// Answers the caller: with its result if the batch committed, else with the batch's
    /// error. A caller that went away loses nothing either way.
    fn deliver(self, committed: Result<(), &StoreError>) {
        let never_ran = || invariant("a committed batch held an operation that never ran".into());
        match self {
            Job::Reserve { reply, result, .. } => drop(reply.send(match committed {
                Ok(()) => result.unwrap_or_else(|| Err(never_ran().into())),
                Err(error) => Err(error.clone().into()),
            })),
            Job::Settle { reply, result, .. } => drop(reply.send(match committed {
                Ok(()) => result.unwrap_or_else(|| Err(never_ran())),
                Err(error) => Err(error.clone()),
            })),
        }
    }
}

/// The queue to the writer thread. Cheap to clone; the thread stops when the last clone
/// is dropped.
#[derive(Clone)]
pub(crate) struct HotWriter {
    sender: mpsc::Sender<Job>,
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Database(error.to_string()),
    }
}

impl HotWriter {
    /// Opens the writer's own connection (the schema is already migrated) and starts its
    /// thread.
    pub(crate) fn start(path: &Path) -> Result<HotWriter, StoreError> {
        let connection = Connection::open(path).map_err(sql_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        // Money: a committed batch survives power loss, not only a crash.
        connection
            // Statement journals (a trigger's insert, a constraint that may abort) in memory.
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
                 PRAGMA temp_store = MEMORY;",
            )
            .map_err(sql_error)?;
        connection.set_prepared_statement_cache_capacity(64);
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("tollgate-writer".into())
            .spawn(move || write_batches(connection, receiver))
            .map_err(|error| StoreError::Database(format!("cannot start the writer thread: {error}")))?;
        Ok(HotWriter { sender })
    }

    pub(crate) async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<Reservation, TxError<ReserveRejection>> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Reserve {
            reservation,
            reply,
            result: None,
        })
        .await?;
        answer.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Settle {
            settlement,
            reply,
            result: None,
        })
        .await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.sender.send(job).await.map_err(|_| stopped())
    }
}

fn write_batches(connection: Connection, mut receiver: mpsc::Receiver<Job>) {
    // As `start` opened the connection.
    let mut sync = CommitSync::Full;
    while let Some(first) = receiver.blocking_recv() {
        let jobs = take_batch(first, &mut receiver);
        if let Err(error) = sync.switch_to(CommitSync::for_batch(&jobs), &connection) {
            tracing::error!(%error, operations = jobs.len(), "cannot set how a write batch is synced");
            jobs.into_iter().for_each(|job| job.deliver(Err(&error)));
            continue;
        }
        commit_batch(&connection, jobs);
    }
}

/// Whether a batch's commit waits for its own fsync.
///
/// A settlement's does: it is the charge, and the caller answers its client only after it.
/// A batch of reservations only does not. In WAL mode a synced commit (and a checkpoint)
/// first syncs the whole log, so what survives a power loss is always a prefix of the
/// commits: an unsynced reservation is durable no later than the next settlement, and a
/// settlement can never survive without the reservation it ends. A process crash loses no
/// commit either way; only the machine's failure can lose an unsynced reservation, and that
/// ends the request it held for, whose reservation the reaper would have voided unpaid
/// anyway. It saves one of the two fsyncs on a request's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitSync {
    /// `synchronous = FULL`: durable when `COMMIT` returns.
    Full,
    /// `synchronous = NORMAL`: durable with the next synced commit or checkpoint.
    WithNextSynced,
}

impl CommitSync {
    fn for_batch(jobs: &[Job]) -> CommitSync {
        if jobs.iter().all(|job| matches!(job, Job::Reserve { .. })) {
            CommitSync::WithNextSynced
        } else {
            CommitSync::Full
        }
    }

    /// Sets the connection's next commits to `wanted`, between transactions; `self` is the
    /// connection's current setting.
    fn switch_to(&mut self, wanted: CommitSync, connection: &Connection) -> Result<(), StoreError> {
        if *self != wanted {
            let pragma = match wanted {
                CommitSync::Full => "PRAGMA synchronous = FULL",
                CommitSync::WithNextSynced => "PRAGMA synchronous = NORMAL",
            };
            connection.execute_batch(pragma).map_err(sql_error)?;
            *self = wanted;
        }
        Ok(())
    }
}

/// Runs a batch in one transaction and answers every caller after its commit.
///
/// First without savepoints: inside a savepoint SQLite copies every page an operation
/// touches to its statement journal first, and the operations of a batch touch the same
/// pages (the organization's accounts and counters, the right edge of each index), so that
/// copy was most of a batch's cost. An operation that fails before writing anything (a
/// refusal, a bug caught by a check) needs no undo. Only when one fails after writing is the
/// transaction rolled back and the batch run again with each operation in its own savepoint,
/// so that failure is undone alone.
fn commit_batch(connection: &Connection, mut jobs: Vec<Job>) {
    let committed = match in_transaction(connection, || run_plain(connection, &mut jobs)) {
        Ok(()) => Ok(()),
        Err(NeedsSavepoints::Yes) => {
            in_transaction(connection, || run_with_savepoints(connection, &mut jobs))
        }
        Err(NeedsSavepoints::No(error)) => Err(error),
    };
    if let Err(error) = &committed {
        tracing::error!(%error, operations = jobs.len(), "a write batch failed and was rolled back");
    }
    let committed = committed.as_ref().map(|_| ());
    jobs.into_iter().for_each(|job| job.deliver(committed));
}

/// How a batch run without savepoints failed; either way nothing of it was written.
enum NeedsSavepoints {
    /// An operation failed after writing: run the batch again with savepoints.
    Yes,
    /// Every caller gets this error.
    No(StoreError),
}

impl From<StoreError> for NeedsSavepoints {
    fn from(error: StoreError) -> NeedsSavepoints {
        NeedsSavepoints::No(error)
    }
}

/// One transaction around `run`: committed if it succeeds, rolled back entirely if not.
fn in_transaction<E: From<StoreError>>(
    connection: &Connection,
    run: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    begin_immediate(connection)?;
    let result = run().and_then(|()| {
        connection
            .execute_batch("COMMIT")
            .map_err(|error| E::from(sql_error(error)))
    });
    if result.is_err()
        && !connection.is_autocommit()
        && let Err(rollback) = connection.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %rollback, "rolling back a failed batch failed");
    }
    result
}

/// Runs each operation in turn with no savepoint, then writes the accounts and counters
/// they changed, each once. One that fails before changing anything needs no undo; one that
/// fails after, or a write of the changed rows that fails, asks for the batch to be run
/// again with savepoints.
fn run_plain(connection: &Connection, jobs: &mut [Job]) -> Result<(), NeedsSavepoints> {
    let mut rows = BatchRows::default();
    for job in jobs {
        let changes_before = (connection.total_changes(), rows.changes);
        let succeeded = job.run(connection, &mut rows);
        still_in_transaction(connection)?;
        if !succeeded && (connection.total_changes(), rows.changes) != changes_before {
            return Err(NeedsSavepoints::Yes);
        }
    }
    if let Err(error) = rows.flush(connection) {
        still_in_transaction(connection)?;
        tracing::warn!(%error, "writing a batch's accounts failed; running it again with savepoints");
        return Err(NeedsSavepoints::Yes);
    }
    Ok(())
}

/// Runs each operation in its own savepoint, with the rows it changed written before the
/// savepoint is released; rolled back alone if it fails.
fn run_with_savepoints(connection: &Connection, jobs: &mut [Job]) -> Result<(), StoreError> {
    let mut rows = BatchRows::default();
    for job in jobs {
        connection
            .execute_batch("SAVEPOINT batched_op")
            .map_err(sql_error)?;
        let mut succeeded = job.run(connection, &mut rows);
        if succeeded && let Err(error) = rows.flush(connection) {
            job.fail(error);
            succeeded = false;
        }
        still_in_transaction(connection)?;
        if succeeded {
            connection
                .execute_batch("RELEASE batched_op")
                .map_err(sql_error)?;
        } else {
            // Whatever it wrote is undone; so is what it left in the cached rows.
            rows = BatchRows::default();
            connection
                .execute_batch("ROLLBACK TO batched_op; RELEASE batched_op")
                .map_err(sql_error)?;
        }
    }
    Ok(())
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
    connection.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)
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

/// Rows one batch has read, as its operations left them, so that the operations of a batch
/// load an organization's lots, accounts and month counters once instead of each, and
/// write each changed one once (`flush`, before the commit) instead of each. Valid only
/// inside the one transaction, which holds SQLite's write lock (no other connection can
/// change a row meanwhile). Each flushed row is a compare-and-set against its value as
/// loaded, read back through `RETURNING`, so a stale row fails the batch, never passes
/// silently.
#[derive(Default)]
struct BatchRows {
    accounts: HashMap<AccountId, Account>,
    /// Accounts changed here and not yet written: their totals as loaded.
    unflushed_accounts: HashMap<AccountId, Account>,
    /// Counters likewise (`None`: no row yet).
    unflushed_counters: HashMap<(String, String, i64), Option<(NanoUsd, NanoUsd)>>,
    /// Changes made here so far: an operation that failed without making any left nothing
    /// to undo.
    changes: u64,
    spend_accounts: HashMap<String, AccountId>,
    lots: HashMap<String, Vec<Lot>>,
    /// Counters by (organization, workspace, month); `None`: known not to exist.
    counters: HashMap<(String, String, i64), Option<(NanoUsd, NanoUsd)>>,
    /// (organization, month) whose counters are all in `counters`.
    months: HashSet<(String, i64)>,
}

impl BatchRows {
    fn spend_account(&mut self, connection: &Connection, org_id: &str) -> Result<Account, StoreError> {
        if let Some(account) = self
            .spend_accounts
            .get(org_id)
            .and_then(|id| self.accounts.get(id))
        {
            return Ok(*account);
        }
        let loaded = load_system_account(connection, org_id, AccountKind::Spend)?;
        self.spend_accounts.insert(org_id.to_owned(), loaded.id);
        // The table's row is older than any change this batch made to it.
        Ok(*self.accounts.entry(loaded.id).or_insert(loaded))
    }

    /// The organization's lots in drawdown order, with their accounts as this batch left
    /// them (a settlement may have changed one before the lots were first loaded).
    fn lots(&mut self, connection: &Connection, org_id: &str) -> Result<Vec<Lot>, StoreError> {
        if !self.lots.contains_key(org_id) {
            let lots = load_lots(connection, org_id)?;
            self.lots.insert(org_id.to_owned(), lots);
        }
        let lots = self.lots.get(org_id).map(Vec::as_slice).unwrap_or_default();
        Ok(lots
            .iter()
            .map(|lot| Lot {
                account: self.account(lot.account),
                ..lot.clone()
            })
            .collect())
    }

    fn month_spend(
        &mut self,
        connection: &Connection,
        org_id: &str,
        workspace_id: &str,
        month: i64,
    ) -> Result<MonthSpend, StoreError> {
        if !self.months.contains(&(org_id.to_owned(), month)) {
            for (row_workspace, counter) in load_month_counters(connection, org_id, month)? {
                // A counter this batch already holds may have changed since.
                self.counters
                    .entry((org_id.to_owned(), row_workspace, month))
                    .or_insert(Some((counter.settled, counter.held)));
            }
            self.months.insert((org_id.to_owned(), month));
        }
        let counters = self
            .counters
            .iter()
            .filter(|((row_org, _, row_month), _)| row_org == org_id && *row_month == month)
            .filter_map(|((_, row_workspace, _), counter)| {
                counter.map(|(settled, held)| (row_workspace.clone(), SpendCounter { settled, held }))
            });
        month_spend_of(org_id, workspace_id, month, counters)
    }

    fn counter(
        &mut self,
        connection: &Connection,
        (org_id, workspace_id, month): (&str, &str, i64),
    ) -> Result<Option<(NanoUsd, NanoUsd)>, StoreError> {
        let key = (org_id.to_owned(), workspace_id.to_owned(), month);
        if let Some(counter) = self.counters.get(&key) {
            return Ok(*counter);
        }
        let counter = if self.months.contains(&(org_id.to_owned(), month)) {
            None
        } else {
            load_counter(connection, org_id, workspace_id, month)?
        };
        self.counters.insert(key, counter);
        Ok(counter)
    }

    /// An account as this batch last changed it, or as loaded.
    fn account(&self, loaded: Account) -> Account {
        self.accounts.get(&loaded.id).copied().unwrap_or(loaded)
    }

    /// Writes every changed account and counter, each once.
    fn flush(&mut self, connection: &Connection) -> Result<(), StoreError> {
        for (id, loaded) in std::mem::take(&mut self.unflushed_accounts) {
            let current = self
                .accounts
                .get(&id)
                .copied()
                .ok_or_else(|| invariant(format!("account {} changed but is not held", id.0)))?;
            if current != loaded {
                store_account(connection, &loaded, &current)?;
            }
        }
        for (key, loaded) in std::mem::take(&mut self.unflushed_counters) {
            let Some(Some(current)) = self.counters.get(&key).copied() else {
                return Err(invariant(format!(
                    "{} changed but is not held",
                    counter_label(&key.0, &key.1, key.2)
                )));
            };
            if loaded != Some(current) {
                store_counter(connection, (&key.0, &key.1, key.2), loaded, current)?;
            }
        }
        Ok(())
    }
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

/// Writes every changed account compare-and-set, reading each back in the same statement.
/// Changes accounts in the batch's rows (written by `BatchRows::flush`). Each must still
/// hold what the operation loaded.
fn write_accounts(rows: &mut BatchRows, accounts: &AccountSet) -> Result<(), StoreError> {
    for (loaded, current) in accounts.changed()? {
        if rows.account(loaded) != loaded {
            return Err(invariant(format!(
                "account {} changed after it was loaded in the same transaction",
                current.id.0
            )));
        }
        rows.unflushed_accounts.entry(current.id).or_insert(loaded);
        rows.accounts.insert(current.id, current);
        rows.changes += 1;
    }
    Ok(())
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

/// One workspace's counter for a month: (settled, held), if it exists.
fn load_counter(
    connection: &Connection,
    org_id: &str,
    workspace_id: &str,
    month: i64,
) -> Result<Option<(NanoUsd, NanoUsd)>, StoreError> {
    connection
        .prepare_cached(
            "SELECT settled_nanos, held_nanos FROM spend_counters
             WHERE org_id = ?1 AND workspace_id = ?2 AND month = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![org_id, workspace_id, month], |row| {
                    Ok((NanoUsd::from_nanos(row.get(0)?), NanoUsd::from_nanos(row.get(1)?)))
                })
                .optional()
        })
        .map_err(sql_error)
}

/// Writes a counter compare-and-set against what was loaded (or inserts it), reading it
/// back in the same statement.
fn counter_label(org_id: &str, workspace_id: &str, month: i64) -> String {
    format!("spend counter of workspace {workspace_id} ({org_id}) for month {month}")
}

/// Changes a month counter in the batch's rows (written by `BatchRows::flush`). It must
/// still hold what the operation loaded, and never goes negative.
fn write_counter(
    rows: &mut BatchRows,
    (org_id, workspace_id, month): (&str, &str, i64),
    loaded: Option<(NanoUsd, NanoUsd)>,
    current: (NanoUsd, NanoUsd),
) -> Result<(), StoreError> {
    let label = || counter_label(org_id, workspace_id, month);
    if current.0.is_negative() || current.1.is_negative() {
        return Err(invariant(format!("{} would go negative: {current:?}", label())));
    }
    let key = (org_id.to_owned(), workspace_id.to_owned(), month);
    if rows.counters.get(&key).copied().flatten() != loaded {
        return Err(invariant(format!(
            "{} changed after it was loaded in the same transaction",
            label()
        )));
    }
    rows.unflushed_counters.entry(key.clone()).or_insert(loaded);
    rows.counters.insert(key, Some(current));
    rows.changes += 1;
    Ok(())
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
                 client_parent_agent_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20)",
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
            ]))
        })
        .map_err(sql_error)?;
    Ok(())
}

/// Reserves inside the batch: spend limits, then credit, then the pending lines, the
/// accounts and the month's held counter. A rejection returns before anything is written.
fn reserve_in(
    connection: &Connection,
    rows: &mut BatchRows,
    reservation: &NewReservation,
) -> Result<Reservation, TxError<ReserveRejection>> {
    let org_id = reservation.org_id.as_str();
    let workspace_id = reservation.workspace_id.as_str();
    let month = month_key(reservation.created_at);
    // Spend limits first: a request over its limit is refused as such even when the credit
    // is short too, since raising the limit is not buying credit.
    let month_spend = rows.month_spend(connection, org_id, workspace_id, month)?;
    if let Err(reached) = spend::check_spend(
        &reservation.spend_limits,
        &month_spend,
        reservation.amount,
        reservation.created_at,
    ) {
        return Err(TxError::Rejected(reached.into()));
    }
    let lots = rows.lots(connection, org_id)?;
    let lines = ledger::plan_reservation(&lots, reservation.amount, reservation.created_at)
        .map_err(|refusal| TxError::Rejected(refusal.into()))?;
    let spend_account = rows.spend_account(connection, org_id)?;
    connection
        .prepare_cached(
            "INSERT INTO reservations
                (id, org_id, workspace_id, api_key_id, request_id, model, amount, state, created_at, deadline)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                reservation.reservation_id,
                org_id,
                workspace_id,
                reservation.api_key_id,
                reservation.request_id,
                reservation.model,
                reservation.amount.nanos(),
                millis(reservation.created_at),
                millis(reservation.deadline),
            ])
        })
        .map_err(sql_error)?;
    let mut accounts = AccountSet::default();
    accounts.insert(spend_account);
    for lot in &lots {
        accounts.insert(lot.account);
    }
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
        accounts.transfer(line.lot_account, spend_account.id, |debit, credit| {
            ledger::reserve(debit, credit, line.amount)
        })?;
    }
    write_accounts(rows, &accounts)?;
    let loaded = rows.counter(connection, (org_id, workspace_id, month))?;
    let (settled, held) = loaded.unwrap_or_default();
    let held = held
        .checked_add(reservation.amount)
        .ok_or_else(|| invariant(format!("the held spend of workspace {workspace_id} overflows")))?;
    write_counter(rows, (org_id, workspace_id, month), loaded, (settled, held))?;
    Ok(Reservation {
        id: reservation.reservation_id.clone(),
        org_id: reservation.org_id.clone(),
        amount: reservation.amount,
        lines,
    })
}

/// Ends one reservation exactly once: guarded by its state, the cost posted lot by lot in
/// line order (one journal row per lot), the rest released, the month's counter moved and
/// the usage record written. Already ended: nothing is written.
fn settle_in(
    connection: &Connection,
    rows: &mut BatchRows,
    settlement: &Settlement,
) -> Result<SettleOutcome, StoreError> {
    let reservation_id = settlement.reservation_id.as_str();
    check_settlement(settlement)?;
    let row = connection
        .prepare_cached(
            "SELECT org_id, workspace_id, state, amount, created_at FROM reservations WHERE id = ?1",
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
                    ))
                })
                .optional()
        })
        .map_err(sql_error)?;
    let Some((org_id, workspace_id, state, amount, created_at)) = row else {
        return Err(invariant(format!(
            "settled an unknown reservation {reservation_id}"
        )));
    };
    if state != "pending" {
        return Ok(SettleOutcome {
            already_ended: true,
            ..SettleOutcome::default()
        });
    }
    check_record_scope(settlement, &org_id)?;
    let amount = NanoUsd::from_nanos(amount);
    let created_at = timestamp_from_sql(created_at)?;
    let mut statement = connection
        .prepare_cached(
            "SELECT l.lot_id, l.amount, a.id, a.kind, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
             FROM reservation_lines l JOIN accounts a ON a.id = l.account_id
             WHERE l.reservation_id = ?1 ORDER BY l.line_no",
        )
        .map_err(sql_error)?;
    let line_rows = statement
        .query_map(params![reservation_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                account_from(row, 2)?,
            ))
        })
        .map_err(sql_error)?;
    let spend_account = rows.spend_account(connection, &org_id)?;
    let mut accounts = AccountSet::default();
    accounts.insert(spend_account);
    let mut lines = Vec::new();
    for row in line_rows {
        let (lot_id, line_amount, account) = row.map_err(sql_error)?;
        // The batch's own changes, not yet written, win over the table.
        let account = rows.account(account?);
        accounts.insert(account);
        lines.push(ReservationLine {
            lot_id,
            lot_account: account.id,
            amount: NanoUsd::from_nanos(line_amount),
        });
    }
    drop(statement);
    let plan = plan_end(reservation_id, amount, &lines, settlement.cost)?;
    let ended_state = ended_state(&plan);
    let ended = connection
        .prepare_cached("UPDATE reservations SET state = ?1, ended_at = ?2, charged = ?3 WHERE id = ?4 AND state = 'pending'")
        .and_then(|mut statement| {
            statement.execute(params![ended_state, millis(settlement.now), plan.charged.nanos(), reservation_id])
        })
        .map_err(sql_error)?;
    if ended != 1 {
        // Unreachable under the write lock; roll back rather than end it twice.
        return Err(invariant(format!(
            "reservation {reservation_id} ended under a transaction that holds the write lock"
        )));
    }
    for (line, posted) in lines.iter().zip(&plan.posted_per_line) {
        accounts.transfer(line.lot_account, spend_account.id, |debit, credit| {
            ledger::settle_pending(debit, credit, line.amount, *posted)
        })?;
        if posted.is_positive() {
            connection
                .prepare_cached(
                    "INSERT INTO transfers
                        (org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'usage', ?5, ?6, ?7)",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        org_id,
                        line.lot_account.0,
                        spend_account.id.0,
                        posted.nanos(),
                        reservation_id,
                        line.lot_id,
                        millis(settlement.now)
                    ])
                })
                .map_err(sql_error)?;
        }
    }
    write_accounts(rows, &accounts)?;
    // The month the reservation was made in, not the month it ends in: a request admitted
    // against January's limit is January's spend even if it settles after midnight on
    // February 1st, so each month's counter only ever holds what its own limit admitted.
    let month = month_key(created_at);
    let Some(loaded) = rows.counter(connection, (&org_id, &workspace_id, month))? else {
        return Err(invariant(format!(
            "pending reservation {reservation_id} has no spend counter for month {month}"
        )));
    };
    let held = loaded
        .1
        .checked_sub(amount)
        .ok_or_else(|| invariant(format!("the held spend of workspace {workspace_id} underflows")))?;
    let settled = loaded
        .0
        .checked_add(plan.charged)
        .ok_or_else(|| invariant(format!("the settled spend of workspace {workspace_id} overflows")))?;
    write_counter(
        rows,
        (&org_id, &workspace_id, month),
        Some(loaded),
        (settled, held),
    )?;
    insert_usage_record(connection, &settlement.record, reservation_id)?;
    Ok(settle_outcome(&plan))
}

#[cfg(test)]
mod tests {
    use tollgate_core::Timestamp;
    use tollgate_core::money::NanoUsd;
    use tollgate_core::spend::SpendLimits;

    use super::*;
    use crate::journal::{Overdue, abandonment};

    fn reserve_job() -> Job {
        let now = Timestamp::UNIX_EPOCH;
        Job::Reserve {
            reservation: NewReservation {
                reservation_id: "rsv_1".into(),
                org_id: "org_1".into(),
                workspace_id: "wrkspc_1".into(),
                api_key_id: None,
                request_id: "req_1".into(),
                model: "model".into(),
                amount: NanoUsd::ZERO,
                created_at: now,
                deadline: now,
                spend_limits: SpendLimits::default(),
            },
            reply: oneshot::channel().0,
            result: None,
        }
    }

    fn settle_job() -> Job {
        let now = Timestamp::UNIX_EPOCH;
        let overdue = Overdue {
            reservation_id: "rsv_1".into(),
            org_id: "org_1".into(),
            workspace_id: "wrkspc_1".into(),
            api_key_id: None,
            request_id: "req_1".into(),
            model: "model".into(),
            created_at: now,
        };
        Job::Settle {
            settlement: abandonment(overdue, now),
            reply: oneshot::channel().0,
            result: None,
        }
    }

    /// The setting SQLite reports: 1 is NORMAL, 2 is FULL.
    fn synchronous(connection: &Connection) -> i64 {
        connection
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn only_a_batch_without_settlements_skips_its_own_fsync() {
        assert_eq!(
            CommitSync::for_batch(&[reserve_job(), reserve_job()]),
            CommitSync::WithNextSynced
        );
        assert_eq!(CommitSync::for_batch(&[settle_job()]), CommitSync::Full);
        assert_eq!(
            CommitSync::for_batch(&[reserve_job(), settle_job(), reserve_job()]),
            CommitSync::Full
        );
    }

    #[test]
    fn the_connection_follows_each_batch_and_returns_to_full() {
        let directory = tempfile::tempdir().unwrap();
        let connection = Connection::open(directory.path().join("sync.db")).unwrap();
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .unwrap();
        let mut sync = CommitSync::Full;
        for (batch, expected) in [
            (vec![reserve_job()], 1),
            (vec![reserve_job(), reserve_job()], 1),
            (vec![reserve_job(), settle_job()], 2),
            (vec![reserve_job()], 1),
            (vec![settle_job()], 2),
        ] {
            sync.switch_to(CommitSync::for_batch(&batch), &connection)
                .unwrap();
            assert_eq!(synchronous(&connection), expected);
        }
    }
}
