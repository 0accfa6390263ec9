//! Limits and the billing state they derive from: an organization's cumulative purchases,
//! custom limit set, own spend limit and active promotional programmes; a workspace's spend
//! limit and rate-limit overrides.
//!
//! Whether a limit is allowed (below the tier's cap, below the organization's) is the
//! caller's rule, checked in tollgate-service with tollgate-core; the store only refuses
//! what could never be stored (a non-positive limit) as a caller bug. Every change is
//! written with the caller's audit entry in one transaction.

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;

use crate::error::StoreError;
use crate::model::{AuditEntry, OrganizationBilling, WorkspaceLimits};
use crate::rows::rate_limits_from_rows;
use crate::rules::{active_programmes, check_limit_positive, check_workspace_limits};
use crate::sqlite::audit_log::{check_entry_scope, insert_audit_event};
use crate::sqlite::ledger::load_lots;
use crate::sqlite::{SqliteStore, column, count_to_sql, store_error};

impl SqliteStore {
    pub(crate) async fn organization_billing(
        &self,
        org_id: &str,
        now: Timestamp,
    ) -> Result<Option<OrganizationBilling>, StoreError> {
        // One snapshot: a purchase committing between the queries can't be half seen.
        let mut transaction = self.begin_read().await?;
        let row = sqlx::query(
            "SELECT cumulative_purchases_nanos, limit_set, spend_limit_nanos
             FROM organizations WHERE id = ?",
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
        let mut transaction = self.begin_write().await?;
        let updated = sqlx::query("UPDATE organizations SET spend_limit_nanos = ? WHERE id = ?")
            .bind(limit.map(NanoUsd::nanos))
            .bind(org_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(false);
        }
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }

    pub(crate) async fn set_organization_limit_set(
        &self,
        org_id: &str,
        limit_set: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        let mut transaction = self.begin_write().await?;
        let updated = sqlx::query("UPDATE organizations SET limit_set = ? WHERE id = ?")
            .bind(limit_set)
            .bind(org_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(false);
        }
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }

    pub(crate) async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, StoreError> {
        let mut transaction = self.begin_read().await?;
        let spend_limits: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT spend_limit_nanos, user_spend_limit_nanos FROM workspaces WHERE id = ?")
                .bind(workspace_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(store_error)?;
        let (spend_limit, user_spend_limit) = spend_limits.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT model_class, requests_per_minute, input_tokens_per_minute,
                    output_tokens_per_minute
             FROM workspace_rate_limits WHERE workspace_id = ? ORDER BY model_class",
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
        let mut transaction = self.begin_write().await?;
        let org_id: Option<String> = sqlx::query_scalar("SELECT org_id FROM workspaces WHERE id = ?")
            .bind(workspace_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        let Some(org_id) = org_id else {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(false);
        };
        check_entry_scope(&audit, &org_id)?;
        sqlx::query("UPDATE workspaces SET spend_limit_nanos = ?, user_spend_limit_nanos = ? WHERE id = ?")
            .bind(limits.spend_limit.map(NanoUsd::nanos))
            .bind(limits.user_spend_limit.map(NanoUsd::nanos))
            .bind(workspace_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        sqlx::query("DELETE FROM workspace_rate_limits WHERE workspace_id = ?")
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
                 VALUES (?, ?, ?, ?, ?)",
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
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }
}
