//! PostgreSQL twin of `sqlite/limits.rs`: an organization's billing state and limits, a
//! workspace's spend limit and rate-limit overrides, each change written with the caller's
//! audit entry in one transaction. The rules are `rules`'s, shared with SQLite; a workspace's
//! limits are replaced under its organization's row lock, and the billing state is read in
//! one REPEATABLE READ snapshot.

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;

use crate::error::StoreError;
use crate::model::{AuditEntry, OrganizationBilling, WorkspaceLimits};
use crate::postgres::audit_log::{check_entry_scope, insert_audit_event};
use crate::postgres::ledger::load_lots;
use crate::postgres::{
    PgStore, column, count_to_sql, lock_organization_of_workspace, retrying_store, store_error,
};
use crate::rows::rate_limits_from_rows;
use crate::rules::{active_programmes, check_limit_positive, check_workspace_limits};

impl PgStore {
    pub(crate) async fn organization_billing(
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
        .map_err(store_error)?;
        let Some(row) = row else {
            transaction.commit().await.map_err(store_error)?;
            return Ok(None);
        };
        let lots = load_lots(&mut transaction, org_id).await?;
        transaction.commit().await.map_err(store_error)?;

        Ok(Some(OrganizationBilling {
            org_id: org_id.to_owned(),
            cumulative_purchases: NanoUsd::from_nanos(column(&row, "cumulative_purchases_nanos")?),
            limit_set: column(&row, "limit_set")?,
            spend_limit: column::<Option<i64>>(&row, "spend_limit_nanos")?.map(NanoUsd::from_nanos),
            active_programmes: active_programmes(lots, now),
        }))
    }

    pub(crate) async fn set_organization_spend_limit(
        &self,
        org_id: &str,
        limit: Option<NanoUsd>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        check_limit_positive(limit, &format!("organization {org_id}"))?;
        let audit = &audit;
        retrying_store(|| async move {
            let mut transaction = self.begin().await?;
            let updated = sqlx::query("UPDATE organizations SET spend_limit_nanos = $1 WHERE id = $2")
                .bind(limit.map(NanoUsd::nanos))
                .bind(org_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            if updated.rows_affected() == 0 {
                transaction.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn set_organization_limit_set(
        &self,
        org_id: &str,
        limit_set: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        let audit = &audit;
        retrying_store(|| async move {
            let mut transaction = self.begin().await?;
            let updated = sqlx::query("UPDATE organizations SET limit_set = $1 WHERE id = $2")
                .bind(limit_set)
                .bind(org_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            if updated.rows_affected() == 0 {
                transaction.rollback().await.map_err(store_error)?;
                return Ok(false);
            }
            insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, StoreError> {
        let mut transaction = self.begin_read().await?;
        let spend_limits: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT spend_limit_nanos, user_spend_limit_nanos FROM workspaces WHERE id = $1")
                .bind(workspace_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(store_error)?;
        let (spend_limit, user_spend_limit) = spend_limits.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT model_class, requests_per_minute, input_tokens_per_minute,
                    output_tokens_per_minute
             FROM workspace_rate_limits WHERE workspace_id = $1 ORDER BY model_class",
        )
        .bind(workspace_id)
        .fetch_all(&mut *transaction)
        .await
        .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;

        Ok(WorkspaceLimits {
            spend_limit: spend_limit.map(NanoUsd::from_nanos),
            user_spend_limit: user_spend_limit.map(NanoUsd::from_nanos),
            rate_limits: rate_limits_from_rows(&rows)?,
        })
    }

    pub(crate) async fn set_workspace_limits(
        &self,
        workspace_id: &str,
        limits: &WorkspaceLimits,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_workspace_limits(workspace_id, limits)?;
        let audit = &audit;
        retrying_store(|| async move {
            let mut transaction = self.begin().await?;
            // The organization's row lock queues two replacements of the same limits, and
            // a reservation reading them, instead of interleaving them.
            let Some(org_id) = lock_organization_of_workspace(&mut transaction, workspace_id).await? else {
                transaction.rollback().await.map_err(store_error)?;
                return Ok(false);
            };
            check_entry_scope(audit, &org_id)?;
            sqlx::query(
                "UPDATE workspaces SET spend_limit_nanos = $1, user_spend_limit_nanos = $2 WHERE id = $3",
            )
            .bind(limits.spend_limit.map(NanoUsd::nanos))
            .bind(limits.user_spend_limit.map(NanoUsd::nanos))
            .bind(workspace_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
            sqlx::query("DELETE FROM workspace_rate_limits WHERE workspace_id = $1")
                .bind(workspace_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            for (model_class, overrides) in &limits.rate_limits {
                let to_sql = |value: Option<u64>| value.map(count_to_sql).transpose();
                sqlx::query(
                    "INSERT INTO workspace_rate_limits
                        (workspace_id, model_class, requests_per_minute, input_tokens_per_minute,
                         output_tokens_per_minute)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(workspace_id)
                .bind(model_class)
                .bind(to_sql(overrides.requests_per_minute)?)
                .bind(to_sql(overrides.input_tokens_per_minute)?)
                .bind(to_sql(overrides.output_tokens_per_minute)?)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            }
            insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(true)
        })
        .await
    }
}
