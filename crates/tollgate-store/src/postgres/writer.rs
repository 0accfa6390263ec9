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
//! (`run_alone`), so the error reaches the operation it belongs to.

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::mpsc;
use tollgate_core::ledger::{AccountId, ReservationLine};
use tollgate_core::money::NanoUsd;

use crate::batching::{Job, WriterQueue, answer_decided, observe_batch, take_batch};
use crate::book::{Book, Decision, Delta, Ended, LoadedReservation, NewRow, OpenReservation, Operation};
use crate::error::StoreError;
use crate::model::{NewReservation, UsageRecord};
use crate::postgres::ledger::{append_journal, load_lots_and_spend_accounts, write_changed_accounts};
use crate::postgres::spend::{
    CounterChange, load_month_counters, load_user_counters, write_counters, write_user_counters,
};
use crate::postgres::{
    check_rows_written, column, insert_usage_records_in, invariant, millis, retrying, store_error,
    timestamp_from_sql,
};
use crate::stored_responses::{INSERT_STORED_RESPONSE, StoredResponse};

/// Runs the operation as a batch of its own, again while PostgreSQL aborts it for
/// contention, and answers its caller: with its result, or with the error that is its own
/// now that no other operation shares its transaction.
async fn run_alone(job: Job, pool: &PgPool, begin: &'static str) {
    let jobs = [job];
    let outcome = retrying(|| async {
        let mut connection = None;
        run_batch(pool, begin, &mut connection, &jobs).await
    })
    .await;
    let [job] = jobs;
    match outcome.map(|mut decisions| decisions.pop()) {
        Ok(Some(decision)) => job.answer(decision),
        Ok(None) => job.fail(invariant("a batch of one answered nothing".into())),
        Err(error) => job.fail(error),
    }
}

/// Starts the writer task on the current runtime and returns the queue to it.
pub(crate) fn start(pool: PgPool, asynchronous_commit: bool) -> WriterQueue {
    let (queue, receiver) = WriterQueue::new();
    let begin = if asynchronous_commit {
        BEGIN_BATCH_ASYNCHRONOUS
    } else {
        BEGIN_BATCH
    };
    tokio::spawn(write_batches(pool, begin, receiver));
    queue
}

/// The writer keeps one connection from batch to batch (a checkout from the pool pings the
/// server first: a round trip a batch), takes a fresh one after a batch fails, and gives it
/// back when the pool is closed (closing waits for every connection).
async fn write_batches(pool: PgPool, begin: &'static str, mut receiver: mpsc::Receiver<Job>) {
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
        commit_batch(&pool, begin, &mut connection, take_batch(first, &mut receiver)).await;
    }
}

/// Runs a batch in one transaction and answers every caller after its commit; if the
/// batch fails, runs its operations one by one.
async fn commit_batch(
    pool: &PgPool,
    begin: &'static str,
    connection: &mut Option<PoolConnection<Postgres>>,
    jobs: Vec<Job>,
) {
    let started = tokio::time::Instant::now();
    let result = run_batch(pool, begin, connection, &jobs).await;
    observe_batch("postgres", jobs.len(), started.elapsed(), result.is_ok());
    match result {
        Ok(decisions) => jobs
            .into_iter()
            .zip(decisions)
            .for_each(|(job, decision)| job.answer(decision)),
        Err(error) => {
            *connection = None;
            if jobs.len() > 1 {
                tracing::warn!(%error, operations = jobs.len(), "a write batch was rolled back; running its operations one by one");
            }
            for job in jobs {
                run_alone(job, pool, begin).await;
            }
        }
    }
}

/// Begins a batch's transaction. Every statement of a batch reaches its rows by primary
/// key, for a few hundred keys at a time (`= ANY($1)`, `UNNEST`); on a table of tens of
/// thousands of rows the planner prices that above reading the whole table, and chose to,
/// for the reservations and their lines: a batch's cost grew with the table (measured: a
/// third of the throughput gone after 50,000 requests). Index probes are what the batch
/// needs at any size, so sequential scans are priced out for its transaction only.
///
/// Its statements are the same dozen every batch, prepared once per connection, and with
/// sequential scans priced out their best plan does not depend on the values bound; yet
/// PostgreSQL plans a prepared statement afresh for each execution until it judges a
/// generic plan no dearer, which for statements over `UNNEST` of arrays it may never do.
/// So the batch asks for the generic plan (measured: one organization on one replica at 32
/// connections, 1,534 → 2,470 requests a second, BENCHMARKS.md).
const BEGIN_BATCH: &str =
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan";
/// `BEGIN_BATCH` for a writer whose commits do not wait for the server's fsync.
const BEGIN_BATCH_ASYNCHRONOUS: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL synchronous_commit = off";

/// One transaction: lock the batch's organizations, load their state into a book of the
/// batch's own (another replica may have written since the last batch), decide every
/// operation, write the delta, commit.
async fn run_batch(
    pool: &PgPool,
    begin: &'static str,
    connection: &mut Option<PoolConnection<Postgres>>,
    jobs: &[Job],
) -> Result<Vec<Decision>, StoreError> {
    let connection = match connection {
        Some(connection) => connection,
        None => connection.insert(pool.acquire().await.map_err(store_error)?),
    };
    let mut transaction = Connection::begin_with(&mut **connection, begin)
        .await
        .map_err(store_error)?;
    let operations: Vec<Operation<'_>> = jobs.iter().map(Job::operation).collect();
    let mut book = Book::default();
    load_book(&mut transaction, &mut book, &operations).await?;
    let mut delta = Delta::default();
    let decisions = operations
        .iter()
        .map(|operation| book.decide(*operation, &mut delta))
        .collect::<Result<Vec<_>, _>>()?;
    answer_decided(jobs, &decisions);
    write_delta(&mut transaction, &delta).await?;
    transaction.commit().await.map_err(store_error)?;
    Ok(decisions)
}

/// Locks the operations' organizations and reads what the book needs to decide them.
async fn load_book(
    connection: &mut PgConnection,
    book: &mut Book,
    operations: &[Operation<'_>],
) -> Result<(), StoreError> {
    let org_ids = book.missing_orgs(operations);
    lock_organizations(connection, &org_ids).await?;
    for (reservation_id, loaded) in load_pending(connection, &book.missing_reservations(operations)).await? {
        book.load_reservation(reservation_id, loaded);
    }
    for (org_id, (lots, spend_account)) in load_lots_and_spend_accounts(connection, &org_ids).await? {
        let Some(spend_account) = spend_account else {
            return Err(invariant(format!("organization {org_id} has no spend account")));
        };
        book.load_org(org_id, lots, spend_account);
    }
    let months = book.missing_months(operations);
    let mut loaded = load_month_counters(connection, &months).await?;
    for (org_id, month) in months {
        let counters = loaded.remove(&(org_id.to_owned(), month)).unwrap_or_default();
        book.load_month(org_id.to_owned(), month, counters);
    }
    let users = book.missing_user_counters(operations);
    let mut loaded = load_user_counters(connection, &users).await?;
    for key in users {
        let counter = loaded.remove(&key);
        book.load_user_counter(key, counter);
    }
    Ok(())
}

/// Writes what the batch's decisions changed: new reservations, ended ones, the journal,
/// the usage records (after the ends, which their rollup reads), then each changed account
/// and counter once; then the rows with no money.
async fn write_delta(connection: &mut PgConnection, delta: &Delta<'_>) -> Result<(), StoreError> {
    insert_reservations(connection, &delta.reserved).await?;
    end_reservations(connection, &delta.ended).await?;
    append_journal(connection, &delta.journal()).await?;
    let records: Vec<(&UsageRecord, Option<&str>)> = delta
        .records
        .iter()
        .map(|(record, reservation_id)| (*record, Some(*reservation_id)))
        .collect();
    insert_usage_records_in(connection, &records).await?;
    write_changed_accounts(connection, &delta.accounts()?).await?;
    let counters: Vec<CounterChange<'_>> = delta
        .counters()?
        .into_iter()
        .map(|((org_id, workspace_id, month), before, now)| {
            ((org_id.as_str(), workspace_id.as_str(), *month), before, now)
        })
        .collect();
    write_counters(connection, &counters).await?;
    write_user_counters(connection, &delta.user_counters()?).await?;
    for response in &delta.responses {
        insert_stored_response(connection, response).await?;
    }
    Ok(())
}

async fn insert_stored_response(
    connection: &mut PgConnection,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_STORED_RESPONSE)
        .bind(response.id.as_str())
        .bind(response.org_id.as_str())
        .bind(response.workspace_id.as_str())
        .bind(response.api_key_id.as_str())
        .bind(millis(response.created_at))
        .bind(millis(response.expires_at))
        .bind(response.input_items.as_str())
        .bind(response.response.as_str())
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// Locks the organizations' rows in id order, the order every batch takes them in.
async fn lock_organizations(connection: &mut PgConnection, ids: &[&str]) -> Result<(), StoreError> {
    let locked: Vec<String> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(ids)
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
) -> Result<HashMap<String, LoadedReservation>, StoreError> {
    let mut read: HashMap<String, (OpenReservation, bool)> = HashMap::new();
    if reservation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT r.id, r.org_id, r.workspace_id, r.user_id, r.state, r.amount, r.created_at,
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
        if !read.contains_key(&id) {
            let state: String = column(row, "state")?;
            let open = OpenReservation {
                org_id: column(row, "org_id")?,
                workspace_id: column(row, "workspace_id")?,
                user_id: column(row, "user_id")?,
                amount: NanoUsd::from_nanos(column(row, "amount")?),
                created_at: timestamp_from_sql(column(row, "created_at")?)?,
                lines: Vec::new(),
            };
            read.insert(id.clone(), (open, state != "pending"));
        }
        if let (Some(lot_id), Some(account_id), Some(amount), Some((open, _))) = (
            column::<Option<String>>(row, "lot_id")?,
            column::<Option<i64>>(row, "account_id")?,
            column::<Option<i64>>(row, "line_amount")?,
            read.get_mut(&id),
        ) {
            open.lines.push(ReservationLine {
                lot_id,
                lot_account: AccountId(account_id),
                amount: NanoUsd::from_nanos(amount),
            });
        }
    }
    Ok(read
        .into_iter()
        .map(|(id, (open, ended))| {
            let loaded = if ended {
                LoadedReservation::Ended
            } else {
                LoadedReservation::Open(open)
            };
            (id, loaded)
        })
        .collect())
}

/// Inserts the batch's reservations and their lines, in one statement.
async fn insert_reservations(
    connection: &mut PgConnection,
    reserved: &[NewRow<'_>],
) -> Result<(), StoreError> {
    if reserved.is_empty() {
        return Ok(());
    }
    let column_of = |pick: fn(&NewReservation) -> i64| -> Vec<i64> {
        reserved.iter().map(|row| pick(&row.reservation)).collect()
    };
    let text_of = |pick: fn(&NewReservation) -> &str| -> Vec<&str> {
        reserved.iter().map(|row| pick(&row.reservation)).collect()
    };
    let api_key_ids: Vec<Option<&str>> = reserved
        .iter()
        .map(|row| row.reservation.api_key_id.as_deref())
        .collect();
    let user_ids: Vec<Option<&str>> = reserved
        .iter()
        .map(|row| row.reservation.user_id.as_deref())
        .collect();
    let lines: Vec<(&str, i64, &ReservationLine)> = reserved
        .iter()
        .flat_map(|row| {
            row.lines.iter().enumerate().map(|(line_no, line)| {
                (
                    row.reservation.reservation_id.as_str(),
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
                  deadline, user_id, ended_at, charged)
             SELECT r.id, r.org_id, r.workspace_id, r.api_key_id, r.request_id, r.model, r.amount,
                    r.state, r.created_at, r.deadline, r.user_id, r.ended_at, r.charged
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bigint[], $9::bigint[], $15::text[], $16::text[],
                         $17::bigint[], $18::bigint[])
                  AS r (id, org_id, workspace_id, api_key_id, request_id, model, amount, created_at,
                        deadline, user_id, state, ended_at, charged)
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
    .bind(&user_ids)
    .bind(
        reserved
            .iter()
            .map(|row| row.ended.as_ref().map_or("pending", |ended| ended.state))
            .collect::<Vec<_>>(),
    )
    .bind(
        reserved
            .iter()
            .map(|row| row.ended.as_ref().map(|ended| millis(ended.ended_at)))
            .collect::<Vec<_>>(),
    )
    .bind(
        reserved
            .iter()
            .map(|row| row.ended.as_ref().map(|ended| ended.charged.nanos()))
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
