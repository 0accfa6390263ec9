//! The hot path's writer on PostgreSQL: the reservations and settlements of one replica,
//! with group commit.
//!
//! One task per replica takes every queued reservation and settlement and runs them in one
//! transaction: the organizations they touch are locked once, in id order (two replicas'
//! batches queue for each other instead of deadlocking); their lots, accounts, month
//! counters and the reservations being ended are read once; every operation is decided in
//! memory by the core's rules, in queue order; and everything is written in a few
//! set-based statements — each changed account and counter once, compare-and-set against
//! what was read and read back — before one commit. Each caller is answered after that
//! commit.
//!
//! Why: every script holds its organization's lock across all its round trips, so one
//! organization's requests ran one after another at about eight round trips and a commit
//! each, twice a request. A batch takes a dozen round trips whatever its size.
//!
//! A refusal writes nothing and is decided from the batch's own state, so it needs no undo.
//! Anything else that goes wrong (an unknown reservation, a record of another organization,
//! a row that changed under a compare-and-set, contention PostgreSQL aborted) rolls the
//! whole batch back, and its operations run again one by one, each as a batch of its own
//! (`Job::run_alone`), so the error reaches the operation it belongs to.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};
use tollgate_core::Timestamp;
use tollgate_core::ledger::{self, AccountId, Lot, ReservationLine};
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{self, month_key};

use crate::batching::{QUEUE_CAPACITY, ReserveResult, SettleResult, stopped, take_batch};
use crate::error::{StoreError, TxError};
use crate::journal::{
    AccountSet, JournalEntry, SpendCounter, TransferKind, check_record_scope, ended_state, month_spend_of,
    plan_end, settle_outcome,
};
use crate::model::{NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement, UsageRecord};
use crate::postgres::ledger::{append_journal, load_lots_and_spend_accounts, write_accounts};
use crate::postgres::spend::{CounterChange, load_month_counters, write_counters};
use crate::postgres::{
    check_rows_written, column, insert_usage_records_in, invariant, millis, retrying_store, store_error,
    timestamp_from_sql,
};

/// A queued operation and its caller's reply.
enum Job {
    Reserve {
        reservation: NewReservation,
        reply: oneshot::Sender<ReserveResult>,
    },
    Settle {
        settlement: Settlement,
        reply: oneshot::Sender<SettleResult>,
    },
}

impl Job {
    /// The organization whose lock the operation needs. A settlement's is its record's,
    /// checked against the reservation's under the lock.
    fn org_id(&self) -> &str {
        match self {
            Job::Reserve { reservation, .. } => &reservation.org_id,
            Job::Settle { settlement, .. } => &settlement.record.org_id,
        }
    }

    /// Answers the caller with an error.
    fn fail(self, error: StoreError) {
        match self {
            Job::Reserve { reply, .. } => drop(reply.send(Err(error.into()))),
            Job::Settle { reply, .. } => drop(reply.send(Err(error))),
        }
    }

    /// Runs the operation as a batch of its own, again while PostgreSQL aborts it for
    /// contention, and answers its caller: with its result, or with the error that is its
    /// own now that no other operation shares its transaction.
    async fn run_alone(self, pool: &PgPool) {
        let jobs = [self];
        let outcome = retrying_store(|| async {
            let mut connection = None;
            run_batch(pool, &mut connection, &jobs).await
        })
        .await;
        match outcome {
            Ok(answers) => answer(jobs.into(), answers),
            Err(error) => jobs.into_iter().for_each(|job| job.fail(error.clone())),
        }
    }
}

/// What a committed batch answers an operation.
enum Answer {
    Reserve(Result<Reservation, ReserveRejection>),
    Settle(SettleOutcome),
}

/// The queue to the writer task. Cheap to clone; the task stops when the last clone is
/// dropped.
#[derive(Clone)]
pub(crate) struct HotWriter {
    sender: mpsc::Sender<Job>,
}

impl HotWriter {
    /// Starts the writer task on the current runtime.
    pub(crate) fn start(pool: PgPool) -> HotWriter {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(pool, receiver));
        HotWriter { sender }
    }

    pub(crate) async fn reserve(&self, reservation: NewReservation) -> ReserveResult {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Reserve { reservation, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> SettleResult {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Settle { settlement, reply }).await?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.sender.send(job).await.map_err(|_| stopped())
    }
}

/// The writer keeps one connection from batch to batch (a checkout from the pool pings the
/// server first: a round trip a batch), takes a fresh one after a batch fails, and gives it
/// back when the pool is closed (closing waits for every connection).
async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Job>) {
    let mut connection = None;
    loop {
        let first = tokio::select! {
            job = receiver.recv() => job,
            () = pool.close_event(), if connection.is_some() => {
                connection = None;
                continue;
            }
        };
        let Some(first) = first else { break };
        commit_batch(&pool, &mut connection, take_batch(first, &mut receiver)).await;
    }
}

/// Runs a batch in one transaction and answers every caller after its commit; if the
/// batch fails, runs its operations one by one.
async fn commit_batch(pool: &PgPool, connection: &mut Option<PoolConnection<Postgres>>, jobs: Vec<Job>) {
    match run_batch(pool, connection, &jobs).await {
        Ok(answers) => answer(jobs, answers),
        Err(error) => {
            *connection = None;
            if jobs.len() > 1 {
                tracing::warn!(%error, operations = jobs.len(), "a write batch was rolled back; running its operations one by one");
            }
            for job in jobs {
                job.run_alone(pool).await;
            }
        }
    }
}

/// Answers each operation of a committed batch with its result.
fn answer(jobs: Vec<Job>, answers: Vec<Answer>) {
    for (job, answer) in jobs.into_iter().zip(answers) {
        match (job, answer) {
            (Job::Reserve { reply, .. }, Answer::Reserve(reserved)) => {
                drop(reply.send(reserved.map_err(TxError::Rejected)));
            }
            (Job::Settle { reply, .. }, Answer::Settle(outcome)) => drop(reply.send(Ok(outcome))),
            (job, _) => job.fail(invariant(
                "a batch answered an operation with another kind's result".into(),
            )),
        }
    }
}

/// Begins a batch's transaction. Every statement of a batch reaches its rows by primary
/// key, for a few hundred keys at a time (`= ANY($1)`, `UNNEST`); on a table of tens of
/// thousands of rows the planner prices that above reading the whole table, and chose to,
/// for the reservations and their lines: a batch's cost grew with the table (measured: a
/// third of the throughput gone after 50,000 requests). Index probes are what the batch
/// needs at any size, so sequential scans are priced out for its transaction only.
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL enable_seqscan = off";

async fn run_batch(
    pool: &PgPool,
    connection: &mut Option<PoolConnection<Postgres>>,
    jobs: &[Job],
) -> Result<Vec<Answer>, StoreError> {
    let connection = match connection {
        Some(connection) => connection,
        None => connection.insert(pool.acquire().await.map_err(store_error)?),
    };
    let mut transaction = Connection::begin_with(&mut **connection, BEGIN_BATCH)
        .await
        .map_err(store_error)?;
    let mut batch = Batch::load(&mut transaction, jobs).await?;
    let answers = jobs
        .iter()
        .map(|job| match job {
            Job::Reserve { reservation, .. } => batch.reserve(reservation).map(Answer::Reserve),
            Job::Settle { settlement, .. } => batch.settle(settlement).map(Answer::Settle),
        })
        .collect::<Result<Vec<_>, _>>()?;
    batch.write(&mut transaction).await?;
    transaction.commit().await.map_err(store_error)?;
    Ok(answers)
}

/// A reservation being ended in this batch, as read (with its lines in line order).
struct Pending {
    org_id: String,
    workspace_id: String,
    amount: NanoUsd,
    created_at: Timestamp,
    lines: Vec<ReservationLine>,
    /// Not pending when read, or ended earlier in this batch.
    ended: bool,
}

/// A reservation's end, to write.
struct Ended<'a> {
    reservation_id: &'a str,
    state: &'static str,
    ended_at: Timestamp,
    charged: NanoUsd,
}

/// A usage transfer, to append to the journal.
struct Posted<'a> {
    org_id: &'a str,
    debit: AccountId,
    credit: AccountId,
    amount: NanoUsd,
    reservation_id: &'a str,
    lot_id: String,
    created_at: Timestamp,
}

/// One organization's counters for one month, by workspace: as read (None: no row) and as
/// the batch left them.
type MonthCounters = BTreeMap<String, (Option<SpendCounter>, SpendCounter)>;

/// One batch's rows: as read under the locks, as its operations leave them, and what is
/// to be written.
#[derive(Default)]
struct Batch<'a> {
    accounts: AccountSet,
    /// Each organization's lots in drawdown order (accounts as read; `accounts` has them
    /// as changed) and its spend account.
    lots: HashMap<String, (Vec<Lot>, AccountId)>,
    /// Counters by (organization, month).
    counters: HashMap<(String, i64), MonthCounters>,
    pending: HashMap<String, Pending>,
    reserved: Vec<(&'a NewReservation, Vec<ReservationLine>)>,
    ended: Vec<Ended<'a>>,
    posted: Vec<Posted<'a>>,
    records: Vec<(&'a UsageRecord, Option<&'a str>)>,
}

impl<'a> Batch<'a> {
    /// Locks the batch's organizations and reads everything its operations decide on.
    async fn load(connection: &mut PgConnection, jobs: &'a [Job]) -> Result<Batch<'a>, StoreError> {
        let org_ids: BTreeSet<&str> = jobs.iter().map(Job::org_id).collect();
        lock_organizations(connection, &org_ids).await?;
        let mut batch = Batch::default();
        let ending: Vec<&str> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::Settle { settlement, .. } => Some(settlement.reservation_id.as_str()),
                Job::Reserve { .. } => None,
            })
            .collect();
        batch.pending = load_pending(connection, &ending).await?;
        let mut months: BTreeSet<(&str, i64)> = BTreeSet::new();
        for job in jobs {
            match job {
                Job::Reserve { reservation, .. } => {
                    months.insert((&reservation.org_id, month_key(reservation.created_at)));
                }
                Job::Settle { settlement, .. } => {
                    if let Some(pending) = batch.pending.get(&settlement.reservation_id) {
                        months.insert((&settlement.record.org_id, month_key(pending.created_at)));
                    }
                }
            }
        }
        let ids: Vec<&str> = org_ids.iter().copied().collect();
        for (org_id, (lots, spend_account)) in load_lots_and_spend_accounts(connection, &ids).await? {
            let Some(spend_account) = spend_account else {
                return Err(invariant(format!("organization {org_id} has no spend account")));
            };
            batch.accounts.insert(spend_account);
            for lot in &lots {
                batch.accounts.insert(lot.account);
            }
            batch.lots.insert(org_id, (lots, spend_account.id));
        }
        let months: Vec<(&str, i64)> = months.into_iter().collect();
        let mut loaded = load_month_counters(connection, &months).await?;
        for (org_id, month) in months {
            let counters = loaded
                .remove(&(org_id.to_owned(), month))
                .unwrap_or_default()
                .into_iter()
                .map(|(workspace_id, counter)| (workspace_id, (Some(counter), counter)))
                .collect();
            batch.counters.insert((org_id.to_owned(), month), counters);
        }
        Ok(batch)
    }

    /// The organization's lots with their accounts as this batch left them, and its spend
    /// account.
    fn lots(&self, org_id: &str) -> Result<(Vec<Lot>, AccountId), StoreError> {
        let (lots, spend_account) = self
            .lots
            .get(org_id)
            .ok_or_else(|| invariant(format!("organization {org_id} was not locked")))?;
        let lots = lots
            .iter()
            .map(|lot| {
                Ok(Lot {
                    account: self.accounts.get(lot.account.id)?,
                    ..lot.clone()
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((lots, *spend_account))
    }

    fn month_counters(&mut self, org_id: &str, month: i64) -> Result<&mut MonthCounters, StoreError> {
        self.counters.get_mut(&(org_id.to_owned(), month)).ok_or_else(|| {
            invariant(format!(
                "the counters of {org_id} for month {month} were not read"
            ))
        })
    }

    /// Reserves on the batch's rows: spend limits, then credit, then the pending lines, the
    /// accounts and the month's held counter.
    fn reserve(
        &mut self,
        reservation: &'a NewReservation,
    ) -> Result<Result<Reservation, ReserveRejection>, StoreError> {
        let org_id = reservation.org_id.as_str();
        let workspace_id = reservation.workspace_id.as_str();
        let month = month_key(reservation.created_at);
        let counters = self.month_counters(org_id, month)?;
        let month_spend = month_spend_of(
            org_id,
            workspace_id,
            month,
            counters
                .iter()
                .map(|(workspace_id, (_, counter))| (workspace_id.clone(), *counter)),
        )?;
        if let Err(reached) = spend::check_spend(
            &reservation.spend_limits,
            &month_spend,
            reservation.amount,
            reservation.created_at,
        ) {
            return Ok(Err(reached.into()));
        }
        let (lots, spend_account) = self.lots(org_id)?;
        let lines = match ledger::plan_reservation(&lots, reservation.amount, reservation.created_at) {
            Ok(lines) => lines,
            Err(refusal) => return Ok(Err(refusal.into())),
        };
        for line in &lines {
            self.accounts
                .transfer(line.lot_account, spend_account, |debit, credit| {
                    ledger::reserve(debit, credit, line.amount)
                })?;
        }
        let counter = self
            .month_counters(org_id, month)?
            .entry(workspace_id.to_owned())
            .or_insert((None, SpendCounter::default()));
        counter.1 = counter.1.hold(workspace_id, reservation.amount)?;
        self.reserved.push((reservation, lines.clone()));
        Ok(Ok(Reservation {
            id: reservation.reservation_id.clone(),
            org_id: reservation.org_id.clone(),
            amount: reservation.amount,
            lines,
        }))
    }

    /// Settles on the batch's rows (requests' settlements and the reaper's abandonments):
    /// ends a pending reservation once, the cost posted lot by lot in line order, the rest
    /// released, the month's counter moved and the usage record written. Already ended:
    /// nothing is written.
    fn settle(&mut self, settlement: &'a Settlement) -> Result<SettleOutcome, StoreError> {
        let reservation_id = settlement.reservation_id.as_str();
        let Some(pending) = self.pending.get(reservation_id) else {
            return Err(invariant(format!(
                "settled an unknown reservation {reservation_id}"
            )));
        };
        if pending.ended {
            return Ok(SettleOutcome {
                already_ended: true,
                ..SettleOutcome::default()
            });
        }
        check_record_scope(settlement, &pending.org_id)?;
        let (org_id, workspace_id, amount) = (
            settlement.record.org_id.as_str(),
            pending.workspace_id.clone(),
            pending.amount,
        );
        let month = month_key(pending.created_at);
        let lines = pending.lines.clone();
        let plan = plan_end(reservation_id, amount, &lines, settlement.cost)?;
        let (_, spend_account) = self.lots(org_id)?;
        for (line, posted) in lines.into_iter().zip(&plan.posted_per_line) {
            self.accounts
                .transfer(line.lot_account, spend_account, |debit, credit| {
                    ledger::settle_pending(debit, credit, line.amount, *posted)
                })?;
            if posted.is_positive() {
                self.posted.push(Posted {
                    org_id,
                    debit: line.lot_account,
                    credit: spend_account,
                    amount: *posted,
                    reservation_id,
                    lot_id: line.lot_id,
                    created_at: settlement.now,
                });
            }
        }
        let Some(counter) = self.month_counters(org_id, month)?.get_mut(&workspace_id) else {
            return Err(invariant(format!(
                "pending reservation {reservation_id} has no spend counter for month {month}"
            )));
        };
        counter.1 = counter.1.end(&workspace_id, amount, plan.charged)?;
        self.ended.push(Ended {
            reservation_id,
            state: ended_state(&plan),
            ended_at: settlement.now,
            charged: plan.charged,
        });
        self.records.push((&settlement.record, Some(reservation_id)));
        if let Some(pending) = self.pending.get_mut(reservation_id) {
            pending.ended = true;
        }
        Ok(settle_outcome(&plan))
    }

    /// Writes what the batch's operations did: new reservations, ended ones, the journal,
    /// the usage records (after the ends, which their rollup reads), then each changed
    /// account and counter once.
    async fn write(&self, connection: &mut PgConnection) -> Result<(), StoreError> {
        insert_reservations(connection, &self.reserved).await?;
        end_reservations(connection, &self.ended).await?;
        let journal: Vec<JournalEntry<'_>> = self
            .posted
            .iter()
            .map(|posted| JournalEntry {
                org_id: posted.org_id,
                debit: posted.debit,
                credit: posted.credit,
                amount: posted.amount,
                kind: TransferKind::Usage,
                reservation_id: Some(posted.reservation_id),
                lot_id: Some(&posted.lot_id),
                created_at: posted.created_at,
            })
            .collect();
        append_journal(connection, &journal).await?;
        insert_usage_records_in(connection, &self.records).await?;
        write_accounts(connection, &self.accounts).await?;
        let counters: Vec<CounterChange<'_>> = self
            .counters
            .iter()
            .flat_map(|((org_id, month), counters)| {
                counters.iter().map(|(workspace_id, (loaded, current))| {
                    (
                        (org_id.as_str(), workspace_id.as_str(), *month),
                        *loaded,
                        *current,
                    )
                })
            })
            .collect();
        write_counters(connection, &counters).await?;
        Ok(())
    }
}

/// Locks the organizations' rows in id order, the order every batch takes them in.
async fn lock_organizations(
    connection: &mut PgConnection,
    org_ids: &BTreeSet<&str>,
) -> Result<(), StoreError> {
    let ids: Vec<&str> = org_ids.iter().copied().collect();
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?;
    if locked.len() != ids.len() {
        return Err(invariant(format!(
            "{} of the organizations {ids:?} exist",
            locked.len()
        )));
    }
    Ok(())
}

/// The reservations to end, with their lines, by id; ids not found are left out. Both
/// tables are reached through `= ANY($1)`, so that each is read through its primary key.
async fn load_pending(
    connection: &mut PgConnection,
    reservation_ids: &[&str],
) -> Result<HashMap<String, Pending>, StoreError> {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    if reservation_ids.is_empty() {
        return Ok(pending);
    }
    let rows = sqlx::query(
        "SELECT r.id, r.org_id, r.workspace_id, r.state, r.amount, r.created_at,
                l.lot_id, l.account_id, l.amount AS line_amount
         FROM reservations r
         LEFT JOIN reservation_lines l ON l.reservation_id = r.id AND l.reservation_id = ANY($1)
         WHERE r.id = ANY($1)
         ORDER BY r.id, l.line_no",
    )
    .bind(reservation_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    for row in &rows {
        let id: String = column(row, "id")?;
        if !pending.contains_key(&id) {
            let state: String = column(row, "state")?;
            pending.insert(
                id.clone(),
                Pending {
                    org_id: column(row, "org_id")?,
                    workspace_id: column(row, "workspace_id")?,
                    amount: NanoUsd::from_nanos(column(row, "amount")?),
                    created_at: timestamp_from_sql(column(row, "created_at")?)?,
                    lines: Vec::new(),
                    ended: state != "pending",
                },
            );
        }
        if let (Some(lot_id), Some(account_id), Some(amount), Some(pending)) = (
            column::<Option<String>>(row, "lot_id")?,
            column::<Option<i64>>(row, "account_id")?,
            column::<Option<i64>>(row, "line_amount")?,
            pending.get_mut(&id),
        ) {
            pending.lines.push(ReservationLine {
                lot_id,
                lot_account: AccountId(account_id),
                amount: NanoUsd::from_nanos(amount),
            });
        }
    }
    Ok(pending)
}

/// Inserts the batch's reservations and their lines, in one statement.
async fn insert_reservations(
    connection: &mut PgConnection,
    reserved: &[(&NewReservation, Vec<ReservationLine>)],
) -> Result<(), StoreError> {
    if reserved.is_empty() {
        return Ok(());
    }
    let column_of = |pick: fn(&NewReservation) -> i64| -> Vec<i64> {
        reserved
            .iter()
            .map(|(reservation, _)| pick(reservation))
            .collect()
    };
    let text_of = |pick: fn(&NewReservation) -> &str| -> Vec<&str> {
        reserved
            .iter()
            .map(|(reservation, _)| pick(reservation))
            .collect()
    };
    let api_key_ids: Vec<Option<&str>> = reserved
        .iter()
        .map(|(reservation, _)| reservation.api_key_id.as_deref())
        .collect();
    let lines: Vec<(&str, i64, &ReservationLine)> = reserved
        .iter()
        .flat_map(|(reservation, lines)| {
            lines.iter().enumerate().map(|(line_no, line)| {
                (
                    reservation.reservation_id.as_str(),
                    i64::try_from(line_no).unwrap_or(i64::MAX),
                    line,
                )
            })
        })
        .collect();
    let written = sqlx::query(
        "WITH reservation AS (
             INSERT INTO reservations
                 (id, org_id, workspace_id, api_key_id, request_id, model, amount, state, created_at,
                  deadline)
             SELECT r.id, r.org_id, r.workspace_id, r.api_key_id, r.request_id, r.model, r.amount,
                    'pending', r.created_at, r.deadline
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::bigint[])
                  AS r (id, org_id, workspace_id, api_key_id, request_id, model, amount, created_at,
                        deadline)
             RETURNING id
         ),
         lines AS (
             INSERT INTO reservation_lines (reservation_id, line_no, lot_id, account_id, amount)
             SELECT reservation.id, line.line_no, line.lot_id, line.account_id, line.amount
             FROM reservation
             JOIN UNNEST($10::text[], $11::bigint[], $12::text[], $13::bigint[], $14::bigint[])
                  AS line (reservation_id, line_no, lot_id, account_id, amount)
                  ON line.reservation_id = reservation.id
             RETURNING 1
         )
         SELECT (SELECT COUNT(*) FROM reservation) AS reservations, (SELECT COUNT(*) FROM lines) AS lines",
    )
    .bind(text_of(|reservation| &reservation.reservation_id))
    .bind(text_of(|reservation| &reservation.org_id))
    .bind(text_of(|reservation| &reservation.workspace_id))
    .bind(&api_key_ids)
    .bind(text_of(|reservation| &reservation.request_id))
    .bind(text_of(|reservation| &reservation.model))
    .bind(column_of(|reservation| reservation.amount.nanos()))
    .bind(column_of(|reservation| millis(reservation.created_at)))
    .bind(column_of(|reservation| millis(reservation.deadline)))
    .bind(lines.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, line_no, _)| *line_no).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|(_, _, line)| line.lot_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|(_, _, line)| line.lot_account.0)
            .collect::<Vec<_>>(),
    )
    .bind(
        lines
            .iter()
            .map(|(_, _, line)| line.amount.nanos())
            .collect::<Vec<_>>(),
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(store_error)?;
    let counts = (
        column::<i64>(&written, "reservations")?,
        column::<i64>(&written, "lines")?,
    );
    if usize::try_from(counts.0).ok() != Some(reserved.len())
        || usize::try_from(counts.1).ok() != Some(lines.len())
    {
        return Err(invariant(format!(
            "{} reservations with {} lines were written as {} with {}",
            reserved.len(),
            lines.len(),
            counts.0,
            counts.1
        )));
    }
    Ok(())
}

/// Ends the batch's reservations, each guarded by its state, in one statement. Pending is
/// tested as `ended_at IS NULL` (the same, by the table's CHECK), not `state = 'pending'`:
/// with that, the planner read the partial index of pending reservations, whose entries
/// for ended ones stay until a vacuum (62,000 of them after a minute's load, all read by
/// every batch).
async fn end_reservations(connection: &mut PgConnection, ended: &[Ended<'_>]) -> Result<(), StoreError> {
    if ended.is_empty() {
        return Ok(());
    }
    let written = sqlx::query(
        "UPDATE reservations r SET state = e.state, ended_at = e.ended_at, charged = e.charged
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
              AS e (id, state, ended_at, charged)
         WHERE r.id = e.id AND r.id = ANY($1) AND r.ended_at IS NULL",
    )
    .bind(ended.iter().map(|end| end.reservation_id).collect::<Vec<_>>())
    .bind(ended.iter().map(|end| end.state).collect::<Vec<_>>())
    .bind(ended.iter().map(|end| millis(end.ended_at)).collect::<Vec<_>>())
    .bind(ended.iter().map(|end| end.charged.nanos()).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    // Fewer is unreachable under the organizations' locks; roll back rather than end one twice.
    check_rows_written(written.rows_affected(), ended.len(), "reservation ends")
}
