//! Message Batches: the batches, their requests, and the claims runners take on them. A
//! request's params and result are wire JSON kept as text, never read here; its money is a
//! reservation of its own in the ledger, made and ended through the ledger's own path
//! (`Store::reserve`, `Store::settle`), never here.
//!
//! A runner claims pending requests by writing its name and a lease; a claim whose lease
//! lapsed (its runner died or stalled) may be taken by another. Each claim counts one more
//! `attempt`: a runner's late word on a request (its settlement's fence, its result) is
//! taken only while its own attempt is the request's and its lease is live, so a runner
//! that stalled past its lease never ends or charges what another runner now holds. A
//! request ends once: every end is guarded by `state = 'pending'`. A batch ends when none
//! of its requests is pending.
//!
//! A request marked with a provider (`upstream_provider`) is run by that provider's own
//! Batches API: runners claim the pending requests of one batch for one provider together
//! (a group) with the same lease and attempts, and the provider batch's id is written on
//! each under that claim, so whoever holds the group next polls it rather than submit again.
//!
//! Written once for both backends over `Dialect`; the one clause they spell differently is
//! the claim's row lock (`Dialect::skip_locked`).

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;

use crate::codec::{count_from_sql, count_to_sql, millis, store_decode, timestamp_from_sql, unknown_text};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A batch as its creator made it; its requests come with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessageBatch {
    pub id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The `anthropic-version` and `anthropic-beta` it was created with, for the provider
    /// batches its requests go to.
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
}

/// One request of a new batch, its reservation already made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBatchRequest {
    pub custom_id: String,
    /// The request id its usage record will carry.
    pub request_id: String,
    /// Catalogue model id.
    pub model: String,
    /// The Messages request body, as JSON text.
    pub params: String,
    pub reservation_id: String,
    /// What the reservation holds.
    pub amount: NanoUsd,
    /// The provider whose own Batches API runs it; `None`: the local runner does.
    pub upstream_provider: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStatus {
    InProgress,
    Canceling,
    Ended,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Canceling => "canceling",
            BatchStatus::Ended => "ended",
        }
    }

    fn parse(text: &str) -> Result<BatchStatus, StoreError> {
        match text {
            "in_progress" => Ok(BatchStatus::InProgress),
            "canceling" => Ok(BatchStatus::Canceling),
            "ended" => Ok(BatchStatus::Ended),
            other => Err(unknown_text("batch status", other)),
        }
    }
}

/// How a request of a batch stands; all but `Pending` are ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchRequestState {
    Pending,
    Succeeded,
    Errored,
    Canceled,
    Expired,
}

impl BatchRequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchRequestState::Pending => "pending",
            BatchRequestState::Succeeded => "succeeded",
            BatchRequestState::Errored => "errored",
            BatchRequestState::Canceled => "canceled",
            BatchRequestState::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Result<BatchRequestState, StoreError> {
        match text {
            "pending" => Ok(BatchRequestState::Pending),
            "succeeded" => Ok(BatchRequestState::Succeeded),
            "errored" => Ok(BatchRequestState::Errored),
            "canceled" => Ok(BatchRequestState::Canceled),
            "expired" => Ok(BatchRequestState::Expired),
            other => Err(unknown_text("batch request state", other)),
        }
    }
}

/// A batch's requests by state; `processing` counts the pending ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchRequestCounts {
    pub processing: u64,
    pub succeeded: u64,
    pub errored: u64,
    pub canceled: u64,
    pub expired: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageBatch {
    pub id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    pub status: BatchStatus,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub cancel_initiated_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// When its results were deleted.
    pub archived_at: Option<Timestamp>,
    pub counts: BatchRequestCounts,
}

/// Which page of a workspace's batches, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchPage {
    /// The newest.
    Newest,
    /// Those just newer than this id.
    Before(String),
    /// Those just older than this id.
    After(String),
}

/// A request a runner claimed, with whom it is billed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedBatchRequest {
    pub batch_id: String,
    /// When its batch was created: the request is priced at the rates in force then.
    pub batch_created_at: Timestamp,
    /// Which claim on the request this is (1 for the first): the runner's results and
    /// settlement count only while it is still the request's.
    pub attempt: u64,
    pub position: u64,
    pub custom_id: String,
    pub request_id: String,
    pub model: String,
    pub params: String,
    pub reservation_id: String,
    pub amount: NanoUsd,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    /// The provider whose own Batches API runs it; `None`: the local runner does.
    pub upstream_provider: Option<String>,
    /// The provider batch it went into, once the provider accepted it.
    pub upstream_batch_id: Option<String>,
    /// The headers its batch was created with.
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
}

/// Whom a batch bills, when it was created, and the headers it was created with.
#[derive(Clone, Debug)]
pub(crate) struct BatchOwner {
    org_id: String,
    workspace_id: String,
    api_key_id: String,
    created_at: Timestamp,
    anthropic_version: Option<String>,
    anthropic_beta: Option<String>,
}

/// A request ended without running (canceled, expired): its reservation is to be voided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnrunBatchRequest {
    pub batch_id: String,
    pub request_id: String,
    pub model: String,
    pub reservation_id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: String,
    pub state: BatchRequestState,
}

/// One line of a batch's results, in the order the requests were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchResult {
    pub custom_id: String,
    pub state: BatchRequestState,
    /// The result's JSON as the runner wrote it; `None` for canceled and expired ones.
    pub result: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDeletion {
    Deleted,
    /// Only an ended batch may be deleted.
    NotEnded,
    NotFound,
}

/// What a claim returns of each request it took.
const CLAIMED_COLUMNS: &str = "batch_id, position, custom_id, request_id, model, params, reservation_id, \
                               amount_nanos, attempt, upstream_provider, upstream_batch_id";

const BATCH_COLUMNS: &str = "id, org_id, workspace_id, api_key_id, processing_status, created_at, \
                             expires_at, cancel_initiated_at, ended_at, archived_at";

fn optional_timestamp(row: &impl DbRow, name: &str) -> Result<Option<Timestamp>, StoreError> {
    row.optional_integer(name)
        .map_err(store_decode)?
        .map(timestamp_from_sql)
        .transpose()
}

fn batch_from_row(row: &impl DbRow) -> Result<MessageBatch, StoreError> {
    Ok(MessageBatch {
        id: row.text("id").map_err(store_decode)?,
        org_id: row.text("org_id").map_err(store_decode)?,
        workspace_id: row.text("workspace_id").map_err(store_decode)?,
        api_key_id: row.text("api_key_id").map_err(store_decode)?,
        status: BatchStatus::parse(&row.text("processing_status").map_err(store_decode)?)?,
        created_at: timestamp_from_sql(row.integer("created_at").map_err(store_decode)?)?,
        expires_at: timestamp_from_sql(row.integer("expires_at").map_err(store_decode)?)?,
        cancel_initiated_at: optional_timestamp(row, "cancel_initiated_at")?,
        ended_at: optional_timestamp(row, "ended_at")?,
        archived_at: optional_timestamp(row, "archived_at")?,
        counts: BatchRequestCounts::default(),
    })
}

/// The batch queries, the same on every backend. The bounds name what they ask of the sqlx
/// driver; both drivers have it.
pub(crate) trait Batches: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> String: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    /// Inserts the batch and its requests in one transaction.
    async fn insert_message_batch(
        &self,
        batch: &NewMessageBatch,
        requests: &[NewBatchRequest],
    ) -> Result<(), StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        sqlx::query(
            "INSERT INTO message_batches (id, org_id, workspace_id, api_key_id, processing_status,
                                          created_at, expires_at, anthropic_version, anthropic_beta)
             VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, $7, $8)",
        )
        .bind(batch.id.as_str())
        .bind(batch.org_id.as_str())
        .bind(batch.workspace_id.as_str())
        .bind(batch.api_key_id.as_str())
        .bind(millis(batch.created_at))
        .bind(millis(batch.expires_at))
        .bind(batch.anthropic_version.as_deref())
        .bind(batch.anthropic_beta.as_deref())
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        for (position, request) in requests.iter().enumerate() {
            sqlx::query(
                "INSERT INTO message_batch_requests (batch_id, position, custom_id, request_id, model,
                                                     params, reservation_id, amount_nanos, state,
                                                     upstream_provider)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
            )
            .bind(batch.id.as_str())
            .bind(count_to_sql(position as u64)?)
            .bind(request.custom_id.as_str())
            .bind(request.request_id.as_str())
            .bind(request.model.as_str())
            .bind(request.params.as_str())
            .bind(request.reservation_id.as_str())
            .bind(request.amount.nanos())
            .bind(request.upstream_provider.as_deref())
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        }
        transaction.commit().await.map_err(Self::store_error)
    }

    /// The workspace's batch with its request counts; another workspace's is `None`.
    async fn message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<Option<MessageBatch>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM message_batches WHERE id = $1 AND workspace_id = $2"
        ))
        .bind(batch_id)
        .bind(workspace_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut batch = batch_from_row(&row)?;
        batch.counts = self.batch_request_counts(&batch.id).await?;
        Ok(Some(batch))
    }

    async fn batch_request_counts(&self, batch_id: &str) -> Result<BatchRequestCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS requests FROM message_batch_requests
             WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let mut counts = BatchRequestCounts::default();
        for row in &rows {
            let state = BatchRequestState::parse(&row.text("state").map_err(store_decode)?)?;
            let requests = count_from_sql(row.integer("requests").map_err(store_decode)?)?;
            let counter = match state {
                BatchRequestState::Pending => &mut counts.processing,
                BatchRequestState::Succeeded => &mut counts.succeeded,
                BatchRequestState::Errored => &mut counts.errored,
                BatchRequestState::Canceled => &mut counts.canceled,
                BatchRequestState::Expired => &mut counts.expired,
            };
            *counter = requests;
        }
        Ok(counts)
    }

    /// Up to `limit` of the workspace's batches, newest first.
    async fn message_batches(
        &self,
        workspace_id: &str,
        page: &BatchPage,
        limit: u64,
    ) -> Result<Vec<MessageBatch>, StoreError> {
        let limit = count_to_sql(limit)?;
        let (condition, order, cursor) = match page {
            BatchPage::Newest => ("", "DESC", ""),
            BatchPage::Before(id) => (" AND id > $3", "ASC", id.as_str()),
            BatchPage::After(id) => (" AND id < $3", "DESC", id.as_str()),
        };
        let text = format!(
            "SELECT {BATCH_COLUMNS} FROM message_batches WHERE workspace_id = $1{condition}
             ORDER BY id {order} LIMIT $2"
        );
        let mut query = sqlx::query(&text).bind(workspace_id).bind(limit);
        if !cursor.is_empty() {
            query = query.bind(cursor);
        }
        let rows = query
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        let mut batches = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut batch = batch_from_row(row)?;
            batch.counts = self.batch_request_counts(&batch.id).await?;
            batches.push(batch);
        }
        if matches!(page, BatchPage::Before(_)) {
            batches.reverse();
        }
        Ok(batches)
    }

    /// Starts canceling an in-progress batch of the workspace, and cancels its requests no
    /// runner holds a live claim on; those are returned, for their reservations to be
    /// voided. `None` if the workspace has no such batch; a batch already canceling or
    /// ended is left as it is.
    async fn cancel_message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
        now: Timestamp,
    ) -> Result<Option<Vec<UnrunBatchRequest>>, StoreError> {
        let exists = sqlx::query("SELECT id FROM message_batches WHERE id = $1 AND workspace_id = $2")
            .bind(batch_id)
            .bind(workspace_id)
            .fetch_optional(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        if exists.is_none() {
            return Ok(None);
        }
        let started = sqlx::query(
            "UPDATE message_batches SET processing_status = 'canceling', cancel_initiated_at = $2
             WHERE id = $1 AND processing_status = 'in_progress' RETURNING id",
        )
        .bind(batch_id)
        .bind(millis(now))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        if started.is_none() {
            return Ok(Some(Vec::new()));
        }
        self.end_unrun_requests(Some(batch_id), BatchRequestState::Canceled, now)
            .await
            .map(Some)
    }

    /// Expires the unclaimed pending requests of every unended batch past its expiry;
    /// returned for their reservations to be voided.
    async fn expire_message_batches(&self, now: Timestamp) -> Result<Vec<UnrunBatchRequest>, StoreError> {
        self.end_unrun_requests(None, BatchRequestState::Expired, now)
            .await
    }

    /// Ends, as `state`, the pending requests without a live claim: of one canceling batch,
    /// or (`None`) of every unended batch past its expiry.
    async fn end_unrun_requests(
        &self,
        batch_id: Option<&str>,
        state: BatchRequestState,
        now: Timestamp,
    ) -> Result<Vec<UnrunBatchRequest>, StoreError> {
        // A canceled batch's requests already at a provider end by the provider's results
        // (its runner forwards the cancel); expiry ends them too, should no runner be left.
        let (batches, submitted) = match batch_id {
            Some(_) => (
                "SELECT id FROM message_batches WHERE id = $3",
                " AND upstream_batch_id IS NULL",
            ),
            None => (
                "SELECT id FROM message_batches WHERE processing_status <> 'ended' AND expires_at <= $2",
                "",
            ),
        };
        let text = format!(
            "UPDATE message_batch_requests SET state = $1, ended_at = $2, claimed_by = NULL,
                                              claimed_until = NULL
             WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= $2){submitted}
               AND batch_id IN ({batches})
             RETURNING batch_id, request_id, model, reservation_id"
        );
        let mut query = sqlx::query(&text).bind(state.as_str()).bind(millis(now));
        if let Some(batch_id) = batch_id {
            query = query.bind(batch_id);
        }
        let rows = query
            .fetch_all(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        let mut ended = Vec::with_capacity(rows.len());
        let mut owners = Vec::new();
        for row in &rows {
            let batch_id = row.text("batch_id").map_err(store_decode)?;
            let owner = self.batch_owner_once(&mut owners, &batch_id).await?;
            ended.push(UnrunBatchRequest {
                batch_id,
                request_id: row.text("request_id").map_err(store_decode)?,
                model: row.text("model").map_err(store_decode)?,
                reservation_id: row.text("reservation_id").map_err(store_decode)?,
                org_id: owner.org_id,
                workspace_id: owner.workspace_id,
                api_key_id: owner.api_key_id,
                state,
            });
        }
        Ok(ended)
    }

    /// `batch_owner`, read once per batch however many rows of a statement name it:
    /// `owners` keeps those already read.
    async fn batch_owner_once(
        &self,
        owners: &mut Vec<(String, BatchOwner)>,
        batch_id: &str,
    ) -> Result<BatchOwner, StoreError> {
        if let Some((_, owner)) = owners.iter().find(|(id, _)| id == batch_id) {
            return Ok(owner.clone());
        }
        let owner = self.batch_owner(batch_id).await?;
        owners.push((batch_id.to_owned(), owner.clone()));
        Ok(owner)
    }

    /// Whom the batch bills, when it was created, and the headers it was created with.
    async fn batch_owner(&self, batch_id: &str) -> Result<BatchOwner, StoreError> {
        let row = sqlx::query(
            "SELECT org_id, workspace_id, api_key_id, created_at, anthropic_version, anthropic_beta
             FROM message_batches WHERE id = $1",
        )
        .bind(batch_id)
        .fetch_one(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(BatchOwner {
            org_id: row.text("org_id").map_err(store_decode)?,
            workspace_id: row.text("workspace_id").map_err(store_decode)?,
            api_key_id: row.text("api_key_id").map_err(store_decode)?,
            created_at: timestamp_from_sql(row.integer("created_at").map_err(store_decode)?)?,
            anthropic_version: row.optional_text("anthropic_version").map_err(store_decode)?,
            anthropic_beta: row.optional_text("anthropic_beta").map_err(store_decode)?,
        })
    }

    /// Claims for `owner`, until `lease_until`, up to `limit` pending requests of
    /// in-progress, unexpired batches that no runner holds a live claim on, oldest batch
    /// first; not those a provider's own Batches API runs. Two runners never hold a live
    /// claim on one request.
    async fn claim_batch_requests(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u64,
    ) -> Result<Vec<ClaimedBatchRequest>, StoreError> {
        // The pick is a CTE, run once: PostgreSQL may run a `LIMIT` subquery of the
        // `WHERE` more than once, and so claim more than `limit` rows.
        let text = format!(
            "WITH picked AS (
                 SELECT batch_id, position FROM message_batch_requests
                 WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= $3)
                   AND upstream_provider IS NULL
                   AND batch_id IN (SELECT id FROM message_batches
                                    WHERE processing_status = 'in_progress' AND expires_at > $3)
                 ORDER BY batch_id, position LIMIT $4{})
             UPDATE message_batch_requests SET claimed_by = $1, claimed_until = $2,
                                               attempt = attempt + 1
             WHERE state = 'pending' AND (batch_id, position) IN (SELECT batch_id, position FROM picked)
               AND (claimed_until IS NULL OR claimed_until <= $3)
             RETURNING {CLAIMED_COLUMNS}",
            Self::skip_locked()
        );
        let rows = sqlx::query(&text)
            .bind(owner)
            .bind(millis(lease_until))
            .bind(millis(now))
            .bind(count_to_sql(limit)?)
            .fetch_all(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        self.claimed_from_rows(&rows).await
    }

    /// Claims for `owner`, until `lease_until`, the pending requests of one batch that go
    /// to one provider's own Batches API (a group), when no runner holds a live claim on
    /// them: the same claim as `claim_batch_requests`, one more attempt each. Batches
    /// canceling or past their expiry too, whose provider batch still reports their ends.
    /// Empty when there is no such group.
    async fn claim_upstream_batch_requests(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<ClaimedBatchRequest>, StoreError> {
        let text = format!(
            "WITH picked AS (
                 SELECT batch_id, upstream_provider FROM message_batch_requests
                 WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= $3)
                   AND upstream_provider IS NOT NULL
                   AND batch_id IN (SELECT id FROM message_batches WHERE processing_status <> 'ended')
                 ORDER BY batch_id, position LIMIT 1{})
             UPDATE message_batch_requests SET claimed_by = $1, claimed_until = $2,
                                               attempt = attempt + 1
             WHERE state = 'pending'
               AND (batch_id, upstream_provider) IN (SELECT batch_id, upstream_provider FROM picked)
               AND (claimed_until IS NULL OR claimed_until <= $3)
             RETURNING {CLAIMED_COLUMNS}",
            Self::skip_locked()
        );
        let rows = sqlx::query(&text)
            .bind(owner)
            .bind(millis(lease_until))
            .bind(millis(now))
            .fetch_all(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        self.claimed_from_rows(&rows).await
    }

    /// Claimed requests from the rows a claim returned (`CLAIMED_COLUMNS`), with whom
    /// their batches bill, in batch and request order.
    async fn claimed_from_rows(
        &self,
        rows: &[<Self::Db as Database>::Row],
    ) -> Result<Vec<ClaimedBatchRequest>, StoreError> {
        let mut claimed = Vec::with_capacity(rows.len());
        let mut owners = Vec::new();
        for row in rows {
            let batch_id = row.text("batch_id").map_err(store_decode)?;
            let billed_to = self.batch_owner_once(&mut owners, &batch_id).await?;
            claimed.push(ClaimedBatchRequest {
                batch_id,
                batch_created_at: billed_to.created_at,
                attempt: count_from_sql(row.integer("attempt").map_err(store_decode)?)?,
                position: count_from_sql(row.integer("position").map_err(store_decode)?)?,
                custom_id: row.text("custom_id").map_err(store_decode)?,
                request_id: row.text("request_id").map_err(store_decode)?,
                model: row.text("model").map_err(store_decode)?,
                params: row.text("params").map_err(store_decode)?,
                reservation_id: row.text("reservation_id").map_err(store_decode)?,
                amount: NanoUsd::from_nanos(row.integer("amount_nanos").map_err(store_decode)?),
                org_id: billed_to.org_id,
                workspace_id: billed_to.workspace_id,
                api_key_id: billed_to.api_key_id,
                upstream_provider: row.optional_text("upstream_provider").map_err(store_decode)?,
                upstream_batch_id: row.optional_text("upstream_batch_id").map_err(store_decode)?,
                anthropic_version: billed_to.anthropic_version,
                anthropic_beta: billed_to.anthropic_beta,
            });
        }
        claimed.sort_by(|a, b| (&a.batch_id, a.position).cmp(&(&b.batch_id, b.position)));
        Ok(claimed)
    }

    /// Writes the provider batch a claimed request went into, while `attempt` is still
    /// its claim (the fence of `fence_batch_claim`); whether it was written.
    async fn record_upstream_batch(
        &self,
        request_id: &str,
        attempt: u64,
        upstream_batch_id: &str,
    ) -> Result<bool, StoreError> {
        let recorded = sqlx::query(
            "UPDATE message_batch_requests SET upstream_batch_id = $3
             WHERE request_id = $1 AND state = 'pending' AND attempt = $2
             RETURNING request_id",
        )
        .bind(request_id)
        .bind(count_to_sql(attempt)?)
        .bind(upstream_batch_id)
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(recorded.is_some())
    }

    /// Moves the lease of `owner`'s claims on these requests to `lease_until` (the claim's
    /// heartbeat while they run). Returns how many it still holds.
    async fn extend_batch_claims(
        &self,
        owner: &str,
        request_ids: &[String],
        lease_until: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut held = 0;
        for request_id in request_ids {
            let extended = sqlx::query(
                "UPDATE message_batch_requests SET claimed_until = $3
                 WHERE request_id = $1 AND claimed_by = $2 AND state = 'pending' RETURNING request_id",
            )
            .bind(request_id.as_str())
            .bind(owner)
            .bind(millis(lease_until))
            .fetch_optional(self.write_pool())
            .await
            .map_err(Self::store_error)?;
            held += usize::from(extended.is_some());
        }
        Ok(held)
    }

    /// Whether the claim `attempt` on the request is still the request's (no runner
    /// re-claimed it since); if so its lease moves to `lease_until`, so that none can while
    /// the settlement is written. The fence a runner passes before it settles the request's
    /// reservation: once another runner re-claimed it (the lease lapsed), the first one's
    /// late settlement is refused here.
    async fn fence_batch_claim(
        &self,
        request_id: &str,
        attempt: u64,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let fenced = sqlx::query(
            "UPDATE message_batch_requests SET claimed_until = $3
             WHERE request_id = $1 AND state = 'pending' AND attempt = $2
             RETURNING request_id",
        )
        .bind(request_id)
        .bind(count_to_sql(attempt)?)
        .bind(millis(lease_until))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(fenced.is_some())
    }

    /// Ends a pending request with its result, when `attempt` is still the request's
    /// claim, then ends its batch if none is left pending. Returns whether this call ended
    /// the request (false: it had ended already, or another claim holds it).
    async fn end_batch_request(
        &self,
        request_id: &str,
        attempt: u64,
        state: BatchRequestState,
        result: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let ended = sqlx::query(
            "UPDATE message_batch_requests
             SET state = $2, result = $3, ended_at = $4, claimed_by = NULL, claimed_until = NULL
             WHERE request_id = $1 AND state = 'pending' AND attempt = $5
             RETURNING batch_id",
        )
        .bind(request_id)
        .bind(state.as_str())
        .bind(result)
        .bind(millis(now))
        .bind(count_to_sql(attempt)?)
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        let Some(row) = ended else {
            return Ok(false);
        };
        let batch_id = row.text("batch_id").map_err(store_decode)?;
        self.end_finished_batches(Some(&batch_id), now).await?;
        Ok(true)
    }

    /// Marks ended every unended batch (or the one named) with no request left pending.
    /// Runs after each request's end commits, so the last end of a batch sees every other;
    /// the maintenance pass runs it too. Returns how many ended.
    async fn end_finished_batches(&self, batch_id: Option<&str>, now: Timestamp) -> Result<u64, StoreError> {
        let only = if batch_id.is_some() { " AND id = $2" } else { "" };
        let text = format!(
            "UPDATE message_batches SET processing_status = 'ended', ended_at = $1
             WHERE processing_status <> 'ended'{only}
               AND NOT EXISTS (SELECT 1 FROM message_batch_requests
                               WHERE batch_id = message_batches.id AND state = 'pending')"
        );
        let mut query = sqlx::query(&text).bind(millis(now));
        if let Some(batch_id) = batch_id {
            query = query.bind(batch_id);
        }
        let ended = query
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&ended))
    }

    /// The batch's results in request order; `None` if the workspace has no such batch.
    async fn message_batch_results(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<Option<Vec<BatchResult>>, StoreError> {
        if self.message_batch(workspace_id, batch_id).await?.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT custom_id, state, result FROM message_batch_requests
             WHERE batch_id = $1 ORDER BY position",
        )
        .bind(batch_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let results: Result<Vec<BatchResult>, StoreError> = rows
            .iter()
            .map(|row| {
                Ok(BatchResult {
                    custom_id: row.text("custom_id").map_err(store_decode)?,
                    state: BatchRequestState::parse(&row.text("state").map_err(store_decode)?)?,
                    result: row.optional_text("result").map_err(store_decode)?,
                })
            })
            .collect();
        results.map(Some)
    }

    /// Deletes an ended batch of the workspace and its requests: the requests first, so a
    /// delete cut short leaves an ended batch to delete again, never requests without one.
    /// Statements of their own rather than one transaction, like every write here but the
    /// insert: nothing is left holding locks if the caller is cut short between them.
    async fn delete_message_batch(
        &self,
        workspace_id: &str,
        batch_id: &str,
    ) -> Result<BatchDeletion, StoreError> {
        let Some(batch) = self.message_batch(workspace_id, batch_id).await? else {
            return Ok(BatchDeletion::NotFound);
        };
        if batch.status != BatchStatus::Ended {
            return Ok(BatchDeletion::NotEnded);
        }
        sqlx::query("DELETE FROM message_batch_requests WHERE batch_id = $1")
            .bind(batch_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        sqlx::query("DELETE FROM message_batches WHERE id = $1 AND processing_status = 'ended'")
            .bind(batch_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(BatchDeletion::Deleted)
    }

    /// Marks archived at `now` the batches that ended at or before `ended_by`, then deletes
    /// the params and results of the requests of batches archived in the last day (so a
    /// pass cut short between the two is finished by the next). Statements of their own, not
    /// a transaction: nothing is left holding locks if the pass is cut short. Returns how
    /// many batches it archived.
    async fn archive_message_batches(&self, ended_by: Timestamp, now: Timestamp) -> Result<u64, StoreError> {
        let archived = sqlx::query(
            "UPDATE message_batches SET archived_at = $2
             WHERE processing_status = 'ended' AND archived_at IS NULL AND ended_at <= $1",
        )
        .bind(millis(ended_by))
        .bind(millis(now))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        let archived = Self::rows_affected(&archived);
        // The rows stay, for the batch's counts; what they said goes. Batches archived in the
        // last day only, so a pass does not reread every batch ever archived.
        sqlx::query(
            "UPDATE message_batch_requests SET params = '', result = NULL
             WHERE (params <> '' OR result IS NOT NULL)
               AND batch_id IN (SELECT id FROM message_batches WHERE archived_at >= $1)",
        )
        .bind(millis(now - chrono::Duration::days(1)))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(archived)
    }
}
