//! Limits and the billing state they derive from: an organization's cumulative purchases,
//! custom limit set, own spend limit and active promotional programmes; a workspace's spend
//! limit and rate-limit overrides.
//!
//! Whether a limit is allowed (below the tier's cap, below the organization's) is the
//! caller's rule, checked in tollgate-service with tollgate-core; the store only refuses
//! what could never be stored (a non-positive limit) as a caller bug. Every change is
//! written with the caller's audit entry in one transaction.
//!
//! Written once for both backends over `Dialect`; what differs is the locking around the
//! same SQL. A change is a write transaction (`Dialect::begin_write`: SQLite's `BEGIN
//! IMMEDIATE`) run again on contention where the backend does so (`Dialect::busy_pause`:
//! PostgreSQL), and a workspace's limits are replaced holding its organization
//! (`Dialect::lock_organization_of_workspace`: PostgreSQL's row lock). The billing state is
//! read in one snapshot (`Dialect::begin_read`).

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;

use crate::audit_log::AuditLog;
use crate::codec::count_to_sql;
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::journal::check_entry_scope;
use crate::model::{AuditEntry, LotView, OrganizationBilling, WorkspaceLimits};
use crate::rows::{DbRow, LOT_SELECT, column, lot_view_from_row, rate_limits_from_rows};
use crate::rules::{active_programmes, check_limit_positive, check_workspace_limits};

/// The limits' queries, the same on every backend.
pub(crate) trait Limits: Dialect + AuditLog
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn organization_billing(
        &self,
        org_id: &str,
        now: Timestamp,
    ) -> Result<Option<OrganizationBilling>, StoreError> {
        // One snapshot: a purchase committing between the queries can't be half seen.
        let mut transaction = self.begin_read().await?;
        let row = sqlx::query(
            "SELECT cumulative_purchases_nanos, limit_set, spend_limit_nanos
             FROM organizations WHERE id = $1",
        )
        .bind(org_id)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let Some(row) = row else {
            transaction.commit().await.map_err(Self::store_error)?;
            return Ok(None);
        };
        let lots = Self::load_lots(&mut transaction, org_id).await?;
        transaction.commit().await.map_err(Self::store_error)?;

        Ok(Some(OrganizationBilling {
            org_id: org_id.to_owned(),
            cumulative_purchases: NanoUsd::from_nanos(column(&row, "cumulative_purchases_nanos")?),
            limit_set: column(&row, "limit_set")?,
            spend_limit: column::<Option<i64>>(&row, "spend_limit_nanos")?.map(NanoUsd::from_nanos),
            active_programmes: active_programmes(lots, now),
        }))
    }

    async fn set_organization_spend_limit(
        &self,
        org_id: &str,
        limit: Option<NanoUsd>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        check_limit_positive(limit, &format!("organization {org_id}"))?;
        self.write_change(&Change::OrganizationSpendLimit { org_id, limit }, &audit)
            .await
    }

    async fn set_organization_limit_set(
        &self,
        org_id: &str,
        limit_set: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        self.write_change(&Change::OrganizationLimitSet { org_id, limit_set }, &audit)
            .await
    }

    async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, StoreError> {
        let mut transaction = self.begin_read().await?;
        let spend_limits =
            sqlx::query("SELECT spend_limit_nanos, user_spend_limit_nanos FROM workspaces WHERE id = $1")
                .bind(workspace_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
        let (spend_limit, user_spend_limit): (Option<i64>, Option<i64>) = match &spend_limits {
            Some(row) => (
                column(row, "spend_limit_nanos")?,
                column(row, "user_spend_limit_nanos")?,
            ),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT model_class, requests_per_minute, input_tokens_per_minute,
                    output_tokens_per_minute
             FROM workspace_rate_limits WHERE workspace_id = $1 ORDER BY model_class",
        )
        .bind(workspace_id)
        .fetch_all(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;

        Ok(WorkspaceLimits {
            spend_limit: spend_limit.map(NanoUsd::from_nanos),
            user_spend_limit: user_spend_limit.map(NanoUsd::from_nanos),
            rate_limits: rate_limits_from_rows(&rows)?,
        })
    }

    async fn set_workspace_limits(
        &self,
        workspace_id: &str,
        limits: &WorkspaceLimits,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_workspace_limits(workspace_id, limits)?;
        self.write_change(&Change::Workspace { workspace_id, limits }, &audit)
            .await
    }

    /// Writes `change` with the audit entry in one write transaction, run again after a
    /// pause while the backend says so (`Dialect::busy_pause`); false, writing nothing, if
    /// its organization or workspace does not exist.
    async fn write_change(&self, change: &Change<'_>, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut attempt = 1;
        loop {
            let outcome = self.write_change_once(change, audit).await;
            let pause = match &outcome {
                Err(StoreError::Busy) => Self::busy_pause(attempt),
                _ => None,
            };
            let Some(pause) = pause else {
                return outcome;
            };
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn write_change_once(&self, change: &Change<'_>, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let found = match *change {
            Change::OrganizationSpendLimit { org_id, limit } => {
                let updated = sqlx::query("UPDATE organizations SET spend_limit_nanos = $1 WHERE id = $2")
                    .bind(limit.map(NanoUsd::nanos))
                    .bind(org_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
                Self::rows_affected(&updated) > 0
            }
            Change::OrganizationLimitSet { org_id, limit_set } => {
                let updated = sqlx::query("UPDATE organizations SET limit_set = $1 WHERE id = $2")
                    .bind(limit_set)
                    .bind(org_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
                Self::rows_affected(&updated) > 0
            }
            Change::Workspace { workspace_id, limits } => {
                Self::replace_workspace_limits(&mut transaction, workspace_id, limits, audit).await?
            }
        };
        if !found {
            transaction.rollback().await.map_err(Self::store_error)?;
            return Ok(false);
        }
        Self::insert_audit_event(&mut transaction, audit).await?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    /// Replaces the workspace's limits on `connection`, in the caller's write transaction;
    /// false, writing nothing, if there is no such workspace.
    async fn replace_workspace_limits(
        connection: &mut <Self::Db as Database>::Connection,
        workspace_id: &str,
        limits: &WorkspaceLimits,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        // Holding the organization queues two replacements of the same limits, and a
        // reservation reading them, instead of interleaving them.
        let Some(org_id) = Self::lock_organization_of_workspace(&mut *connection, workspace_id).await? else {
            return Ok(false);
        };
        check_entry_scope(audit, &org_id)?;
        sqlx::query(
            "UPDATE workspaces SET spend_limit_nanos = $1, user_spend_limit_nanos = $2 WHERE id = $3",
        )
        .bind(limits.spend_limit.map(NanoUsd::nanos))
        .bind(limits.user_spend_limit.map(NanoUsd::nanos))
        .bind(workspace_id)
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        sqlx::query("DELETE FROM workspace_rate_limits WHERE workspace_id = $1")
            .bind(workspace_id)
            .execute(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        for (model_class, overrides) in &limits.rate_limits {
            let to_sql = |value: Option<u64>| value.map(count_to_sql).transpose();
            sqlx::query(
                "INSERT INTO workspace_rate_limits
                    (workspace_id, model_class, requests_per_minute, input_tokens_per_minute,
                     output_tokens_per_minute)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(workspace_id)
            .bind(model_class.as_str())
            .bind(to_sql(overrides.requests_per_minute)?)
            .bind(to_sql(overrides.input_tokens_per_minute)?)
            .bind(to_sql(overrides.output_tokens_per_minute)?)
            .execute(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        }
        Ok(true)
    }

    /// The organization's lots, oldest grant first, on `connection`: the billing state's
    /// programmes here, and the ledger's reads (`crate::ledger`) go through here too.
    async fn load_lots(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
    ) -> Result<Vec<LotView>, StoreError> {
        sqlx::query(&format!(
            "{LOT_SELECT} WHERE l.org_id = $1 ORDER BY l.granted_at, l.id"
        ))
        .bind(org_id)
        .fetch_all(&mut *connection)
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(lot_view_from_row)
        .collect()
    }
}

/// A change of limits, as `Limits::write_change` writes it.
pub(crate) enum Change<'a> {
    OrganizationSpendLimit {
        org_id: &'a str,
        limit: Option<NanoUsd>,
    },
    OrganizationLimitSet {
        org_id: &'a str,
        limit_set: Option<&'a str>,
    },
    Workspace {
        workspace_id: &'a str,
        limits: &'a WorkspaceLimits,
    },
}
