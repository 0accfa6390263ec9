//! Service accounts (migration 0026): a non-human caller of an organization with a role of
//! its own, its workspaces with a role in each, and the keys bound to it. Archiving an
//! account, or removing it from a workspace, archives its keys (there) in the same
//! transaction, so every process refuses them at its next read of the key record (within
//! the key-cache TTL), as it does a removed user's personal keys. Every change is audited
//! in the transaction that makes it. The service decides what may change; this keeps it.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::roles::{OrgRole, WorkspaceRole};

use crate::Store;
use crate::audit_log::AuditLog;
use crate::codec::{millis, unknown_text};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::{AuditEntry, KeyStatus};
use crate::rows::{DbRow, column, optional_timestamp};

/// A service account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRecord {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub description: String,
    pub role: OrgRole,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When it was archived (with its keys); `None`: in use.
    pub archived_at: Option<Timestamp>,
}

/// A service account's role in one workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountMembership {
    pub service_account_id: String,
    pub workspace_id: String,
    pub role: WorkspaceRole,
    pub added_at: Timestamp,
}

const ACCOUNT_SELECT: &str = "SELECT id, org_id, name, description, role, created_at, updated_at,
    archived_at FROM service_accounts";
const MEMBERSHIP_SELECT: &str =
    "SELECT service_account_id, workspace_id, workspace_role, added_at FROM service_account_workspaces";

fn account_from_row<R: DbRow>(row: &R) -> Result<ServiceAccountRecord, StoreError> {
    let role: String = column(row, "role")?;
    Ok(ServiceAccountRecord {
        id: column(row, "id")?,
        org_id: column(row, "org_id")?,
        name: column(row, "name")?,
        description: column(row, "description")?,
        role: OrgRole::parse(&role).ok_or_else(|| unknown_text("organization role", &role))?,
        created_at: crate::codec::timestamp_from_sql(column(row, "created_at")?)?,
        updated_at: crate::codec::timestamp_from_sql(column(row, "updated_at")?)?,
        archived_at: optional_timestamp(row, "archived_at")?,
    })
}

fn membership_from_row<R: DbRow>(row: &R) -> Result<ServiceAccountMembership, StoreError> {
    let role: String = column(row, "workspace_role")?;
    Ok(ServiceAccountMembership {
        service_account_id: column(row, "service_account_id")?,
        workspace_id: column(row, "workspace_id")?,
        role: WorkspaceRole::parse(&role).ok_or_else(|| unknown_text("workspace role", &role))?,
        added_at: crate::codec::timestamp_from_sql(column(row, "added_at")?)?,
    })
}

/// The service-account queries, the same on every backend.
pub(crate) trait ServiceAccounts: Dialect + AuditLog
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_service_account(
        &self,
        account: &ServiceAccountRecord,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let inserted = sqlx::query(
            "INSERT INTO service_accounts (id, org_id, name, description, role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (org_id, name) DO NOTHING",
        )
        .bind(account.id.as_str())
        .bind(account.org_id.as_str())
        .bind(account.name.as_str())
        .bind(account.description.as_str())
        .bind(account.role.as_str())
        .bind(millis(account.created_at))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&inserted) == 0 {
            return Ok(false);
        }
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    async fn service_account(&self, id: &str) -> Result<Option<ServiceAccountRecord>, StoreError> {
        sqlx::query(&format!("{ACCOUNT_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn service_accounts(&self, org_id: &str) -> Result<Vec<ServiceAccountRecord>, StoreError> {
        sqlx::query(&format!(
            "{ACCOUNT_SELECT} WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(account_from_row)
        .collect()
    }

    async fn update_service_account(
        &self,
        id: &str,
        description: &str,
        role: OrgRole,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let updated = sqlx::query(
            "UPDATE service_accounts SET description = $2, role = $3, updated_at = $4
             WHERE id = $1 AND archived_at IS NULL",
        )
        .bind(id)
        .bind(description)
        .bind(role.as_str())
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&updated) == 0 {
            return Ok(false);
        }
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    async fn archive_service_account(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let archived = sqlx::query(
            "UPDATE service_accounts SET archived_at = $2, updated_at = $2
             WHERE id = $1 AND archived_at IS NULL",
        )
        .bind(id)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&archived) == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE api_keys SET status = $1 WHERE service_account_id = $2 AND status <> $1")
            .bind(KeyStatus::Archived.as_str())
            .bind(id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)?;
        self.sweep_service_account_keys(id).await?;
        Ok(true)
    }

    /// Archives every live key of the account that it may no longer hold: all of them once
    /// it is archived, else those of a workspace it has left. Run after the transaction
    /// that archived or removed it: a key written concurrently, which that transaction's
    /// statement did not see, is either caught here or sees the change when the service
    /// checks again after writing it (its check reads after this statement began).
    async fn sweep_service_account_keys(&self, service_account_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET status = $1
             WHERE service_account_id = $2 AND status <> $1
               AND (EXISTS (SELECT 1 FROM service_accounts a
                            WHERE a.id = $2 AND a.archived_at IS NOT NULL)
                    OR NOT EXISTS (SELECT 1 FROM service_account_workspaces m
                                   WHERE m.service_account_id = $2
                                     AND m.workspace_id = api_keys.workspace_id))",
        )
        .bind(KeyStatus::Archived.as_str())
        .bind(service_account_id)
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn set_service_account_membership(
        &self,
        membership: &ServiceAccountMembership,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        sqlx::query(
            "INSERT INTO service_account_workspaces (service_account_id, workspace_id, workspace_role, added_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (service_account_id, workspace_id)
             DO UPDATE SET workspace_role = excluded.workspace_role",
        )
        .bind(membership.service_account_id.as_str())
        .bind(membership.workspace_id.as_str())
        .bind(membership.role.as_str())
        .bind(millis(membership.added_at))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)
    }

    async fn service_account_membership(
        &self,
        service_account_id: &str,
        workspace_id: &str,
    ) -> Result<Option<ServiceAccountMembership>, StoreError> {
        sqlx::query(&format!(
            "{MEMBERSHIP_SELECT} WHERE service_account_id = $1 AND workspace_id = $2"
        ))
        .bind(service_account_id)
        .bind(workspace_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .as_ref()
        .map(membership_from_row)
        .transpose()
    }

    /// The memberships whose `column` (`workspace_id` or `service_account_id`) is `id`,
    /// oldest first, then by `order` (the other of the two).
    async fn memberships_where(
        &self,
        column: &'static str,
        order: &'static str,
        id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, StoreError> {
        sqlx::query(&format!(
            "{MEMBERSHIP_SELECT} WHERE {column} = $1 ORDER BY added_at, {order}"
        ))
        .bind(id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(membership_from_row)
        .collect()
    }

    async fn workspace_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, StoreError> {
        self.memberships_where("workspace_id", "service_account_id", workspace_id)
            .await
    }

    async fn service_account_workspaces(
        &self,
        service_account_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, StoreError> {
        self.memberships_where("service_account_id", "workspace_id", service_account_id)
            .await
    }

    async fn remove_service_account_membership(
        &self,
        service_account_id: &str,
        workspace_id: &str,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let removed = sqlx::query(
            "DELETE FROM service_account_workspaces WHERE service_account_id = $1 AND workspace_id = $2",
        )
        .bind(service_account_id)
        .bind(workspace_id)
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&removed) == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE api_keys SET status = $1
             WHERE service_account_id = $2 AND workspace_id = $3 AND status <> $1",
        )
        .bind(KeyStatus::Archived.as_str())
        .bind(service_account_id)
        .bind(workspace_id)
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        Self::insert_audit_event(&mut *transaction, &audit).await?;
        transaction.commit().await.map_err(Self::store_error)?;
        self.sweep_service_account_keys(service_account_id).await?;
        Ok(true)
    }
}

/// The façade over service accounts.
impl Store {
    /// Inserts a service account, audited; `false` when its organization already has one of
    /// that name (nothing written).
    pub async fn insert_service_account(
        &self,
        account: &ServiceAccountRecord,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self.insert_service_account(account, audit))
    }

    pub async fn service_account(&self, id: &str) -> Result<Option<ServiceAccountRecord>, StoreError> {
        dispatch!(self.service_account(id))
    }

    /// The organization's service accounts, archived ones included, oldest first.
    pub async fn service_accounts(&self, org_id: &str) -> Result<Vec<ServiceAccountRecord>, StoreError> {
        dispatch!(self.service_accounts(org_id))
    }

    /// Replaces an account's description and role, audited; `false` if it is archived or
    /// unknown (nothing written).
    pub async fn update_service_account(
        &self,
        id: &str,
        description: &str,
        role: OrgRole,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self.update_service_account(id, description, role, now, audit))
    }

    /// Archives an account and every key bound to it, audited, in one transaction; `false`
    /// if it was archived already or is unknown (nothing written).
    pub async fn archive_service_account(
        &self,
        id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self.archive_service_account(id, now, audit))
    }

    /// Adds an account to a workspace, or changes its role there; audited.
    pub async fn set_service_account_membership(
        &self,
        membership: &ServiceAccountMembership,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        dispatch!(self.set_service_account_membership(membership, audit))
    }

    pub async fn service_account_membership(
        &self,
        service_account_id: &str,
        workspace_id: &str,
    ) -> Result<Option<ServiceAccountMembership>, StoreError> {
        dispatch!(self.service_account_membership(service_account_id, workspace_id))
    }

    /// The service accounts of a workspace, archived ones included, oldest membership first.
    pub async fn workspace_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, StoreError> {
        dispatch!(self.workspace_service_accounts(workspace_id))
    }

    /// The workspaces of a service account, oldest membership first.
    pub async fn service_account_workspaces(
        &self,
        service_account_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, StoreError> {
        dispatch!(self.service_account_workspaces(service_account_id))
    }

    /// Removes an account from a workspace and archives its keys there, audited, in one
    /// transaction; `false` if it was not a member (nothing written).
    pub async fn remove_service_account_membership(
        &self,
        service_account_id: &str,
        workspace_id: &str,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        dispatch!(self.remove_service_account_membership(service_account_id, workspace_id, audit))
    }
}
