//! The Admin API's directory: keys with who created them, workspace creation under a cap,
//! renames and archives, users, invites and workspace members. No money moves here.
//!
//! Every check that guards a write (a name still free, the active-workspace cap, a pending
//! invite, an email not yet a member) runs inside the write transaction that makes it, so
//! two admins racing cannot both pass it.
//!
//! Written once for both backends over `Dialect`; what differs is the locking around the
//! same SQL. A checked write is a write transaction (`Dialect::begin_write`: SQLite's `BEGIN
//! IMMEDIATE`, whose write lock already serializes the checks) that first holds the
//! organization it checks (`Dialect::lock_organization`, or
//! `Dialect::lock_organization_of_workspace` for a workspace's: PostgreSQL's row lock; on
//! SQLite a no-op and a read), and is run again on contention where the backend does so
//! (`Dialect::busy_pause` through `dialect::retrying`: PostgreSQL).

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;
use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::roles::OrgRole;

use crate::admin_model::{
    CreatedBy, DirectoryRejection, InviteRecord, KeyView, MemberRecord, UserRecord, WorkspaceRejection,
};
use crate::audit_log::AuditLog;
use crate::codec::{allowed_models_text, millis, truncate_to_millis};
use crate::dialect::{Dialect, retrying};
use crate::error::{StoreError, TxError};
use crate::journal::check_entry_scope;
use crate::model::{AuditEntry, KeyStatus, NewKey, Workspace};
use crate::rows::{
    DbRow, INVITE_SELECT, KEY_VIEW_SELECT, USER_SELECT, WORKSPACE_SELECT, column, invite_from_row,
    key_view_from_row, member_from_row, user_from_row, workspace_from_row,
};

/// The directory's queries, the same on every backend.
pub(crate) trait Directory: Dialect + AuditLog
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> bool: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_key_by(&self, key: NewKey, created_by: &CreatedBy) -> Result<KeyView, StoreError> {
        let allowed_models = allowed_models_text(&key.allowed_models);
        sqlx::query(
            "INSERT INTO api_keys
                (id, kind, org_id, workspace_id, name, secret_hash, hint, status, created_at,
                 created_by_type, created_by_id, expires_at, user_id, service_account_id,
                 allowed_models)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(key.id.as_str())
        .bind(key.kind.as_str())
        .bind(key.org_id.as_str())
        .bind(key.workspace_id.as_deref())
        .bind(key.name.as_str())
        .bind(key.secret_hash.as_str())
        .bind(key.hint.as_str())
        .bind(KeyStatus::Active.as_str())
        .bind(millis(key.created_at))
        .bind(created_by.kind())
        .bind(created_by.id())
        .bind(key.expires_at.map(millis))
        .bind(key.user_id.as_deref())
        .bind(key.service_account_id.as_deref())
        .bind(allowed_models.as_deref())
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        self.key_view(&key.id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("key {} vanished after insert", key.id)))
    }

    async fn key_view(&self, key_id: &str) -> Result<Option<KeyView>, StoreError> {
        sqlx::query(&format!("{KEY_VIEW_SELECT} WHERE id = $1"))
            .bind(key_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| key_view_from_row(&row))
            .transpose()
    }

    async fn key_views(&self, org_id: &str, kind: KeyKind) -> Result<Vec<KeyView>, StoreError> {
        sqlx::query(&format!(
            "{KEY_VIEW_SELECT} WHERE org_id = $1 AND kind = $2 ORDER BY created_at DESC, id DESC"
        ))
        .bind(org_id)
        .bind(kind.as_str())
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(key_view_from_row)
        .collect()
    }

    async fn set_key_allowed_models(
        &self,
        key_id: &str,
        allowed_models: &AllowedModels,
    ) -> Result<bool, StoreError> {
        let allowed_models = allowed_models_text(allowed_models);
        let updated = sqlx::query("UPDATE api_keys SET allowed_models = $1 WHERE id = $2")
            .bind(allowed_models.as_deref())
            .bind(key_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&updated) > 0)
    }

    async fn rename_key(&self, key_id: &str, name: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(key_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&updated) > 0)
    }

    async fn create_workspace_capped(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
        max_active: usize,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, org_id).await?;
            if Self::workspace_name_taken(&mut transaction, org_id, name).await? {
                return Err(TxError::Rejected(WorkspaceRejection::NameTaken(name.to_owned())));
            }
            // The Default workspace is not counted: the cap is on the ones an admin creates.
            let counted = sqlx::query(
                "SELECT COUNT(*) AS active FROM workspaces
                 WHERE org_id = $1 AND archived_at IS NULL AND NOT is_default",
            )
            .bind(org_id)
            .fetch_one(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            let active: i64 = column(&counted, "active")?;
            if usize::try_from(active).unwrap_or(usize::MAX) >= max_active {
                return Err(TxError::Rejected(WorkspaceRejection::TooManyWorkspaces(
                    max_active,
                )));
            }
            let workspace =
                Self::insert_workspace(&mut transaction, org_id, workspace_id, name, false, now).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(workspace)
        })
        .await
    }

    async fn rename_workspace(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            let Some(workspace) = Self::locked_workspace(&mut transaction, workspace_id).await? else {
                return Err(TxError::Rejected(WorkspaceRejection::Unknown));
            };
            if workspace.archived_at.is_some() {
                return Err(TxError::Rejected(WorkspaceRejection::Archived));
            }
            if workspace.name != name {
                if Self::workspace_name_taken(&mut transaction, &workspace.org_id, name).await? {
                    return Err(TxError::Rejected(WorkspaceRejection::NameTaken(name.to_owned())));
                }
                sqlx::query("UPDATE workspaces SET name = $1 WHERE id = $2")
                    .bind(name)
                    .bind(workspace_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
            }
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(Workspace {
                name: name.to_owned(),
                ..workspace
            })
        })
        .await
    }

    async fn archive_workspace(
        &self,
        workspace_id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(Workspace, u64), TxError<WorkspaceRejection>> {
        let audit = &audit;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            let Some(workspace) = Self::locked_workspace(&mut transaction, workspace_id).await? else {
                return Err(TxError::Rejected(WorkspaceRejection::Unknown));
            };
            if workspace.archived_at.is_some() {
                return Err(TxError::Rejected(WorkspaceRejection::Archived));
            }
            check_entry_scope(audit, &workspace.org_id)?;
            sqlx::query("UPDATE workspaces SET archived_at = $1 WHERE id = $2")
                .bind(millis(now))
                .bind(workspace_id)
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            // Archiving deactivates every key of the workspace, for good: an archived key
            // can't be reactivated. Usage and spend history stay.
            let keys =
                sqlx::query("UPDATE api_keys SET status = $1 WHERE workspace_id = $2 AND status <> $1")
                    .bind(KeyStatus::Archived.as_str())
                    .bind(workspace_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
            Self::insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok((
                Workspace {
                    archived_at: Some(truncate_to_millis(now)?),
                    ..workspace
                },
                Self::rows_affected(&keys),
            ))
        })
        .await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<UserRecord, TxError<DirectoryRejection>> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, &user.org_id).await?;
            if Self::user_exists(&mut transaction, &user.org_id, &user.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    user.email.clone(),
                )));
            }
            Self::insert_user_in(&mut transaction, user).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(())
        })
        .await?;
        Ok(UserRecord {
            added_at: truncate_to_millis(user.added_at)?,
            ..user.clone()
        })
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE id = $1"))
            .bind(user_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| user_from_row(&row))
            .transpose()
    }

    async fn users(&self, org_id: &str) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE org_id = $1 ORDER BY added_at, id"))
            .bind(org_id)
            .fetch_all(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_user_role(&self, user_id: &str, role: OrgRole) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(user_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&updated) > 0)
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            sqlx::query("DELETE FROM workspace_members WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            // The user's personal keys stop with them, for good (see `Store::delete_user`).
            sqlx::query("UPDATE api_keys SET status = $1 WHERE user_id = $2 AND status <> $1")
                .bind(KeyStatus::Archived.as_str())
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(Self::rows_affected(&deleted) > 0)
        })
        .await
    }

    async fn insert_invite(
        &self,
        invite: &InviteRecord,
    ) -> Result<InviteRecord, TxError<DirectoryRejection>> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            // Nothing unique guards "one pending invite per email": the organization held
            // (SQLite's write lock, PostgreSQL's row lock) does.
            Self::lock_organization(&mut transaction, &invite.org_id).await?;
            if Self::user_exists(&mut transaction, &invite.org_id, &invite.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    invite.email.clone(),
                )));
            }
            let pending = sqlx::query(
                "SELECT 1 FROM invites
                 WHERE org_id = $1 AND email = $2 AND status = 'pending' AND expires_at > $3",
            )
            .bind(invite.org_id.as_str())
            .bind(invite.email.as_str())
            .bind(millis(invite.invited_at))
            .fetch_optional(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if pending.is_some() {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyInvited(
                    invite.email.clone(),
                )));
            }
            sqlx::query(
                "INSERT INTO invites (id, org_id, email, role, status, invited_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(invite.id.as_str())
            .bind(invite.org_id.as_str())
            .bind(invite.email.as_str())
            .bind(invite.role.as_str())
            .bind(invite.state.as_str())
            .bind(millis(invite.invited_at))
            .bind(millis(invite.expires_at))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(())
        })
        .await?;
        Ok(InviteRecord {
            invited_at: truncate_to_millis(invite.invited_at)?,
            expires_at: truncate_to_millis(invite.expires_at)?,
            ..invite.clone()
        })
    }

    async fn invite(&self, invite_id: &str) -> Result<Option<InviteRecord>, StoreError> {
        sqlx::query(&format!("{INVITE_SELECT} WHERE id = $1"))
            .bind(invite_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| invite_from_row(&row))
            .transpose()
    }

    async fn invites(&self, org_id: &str) -> Result<Vec<InviteRecord>, StoreError> {
        sqlx::query(&format!(
            "{INVITE_SELECT} WHERE org_id = $1 ORDER BY invited_at, id"
        ))
        .bind(org_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(invite_from_row)
        .collect()
    }

    async fn delete_invite(&self, invite_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM invites WHERE id = $1")
            .bind(invite_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted) > 0)
    }

    async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, &user.org_id).await?;
            let accepted = sqlx::query(
                "UPDATE invites SET status = 'accepted'
                 WHERE id = $1 AND org_id = $2 AND email = $3 AND status = 'pending' AND expires_at > $4",
            )
            .bind(invite_id)
            .bind(user.org_id.as_str())
            .bind(user.email.as_str())
            .bind(millis(user.added_at))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if Self::rows_affected(&accepted) != 1 {
                return Err(TxError::Rejected(DirectoryRejection::InviteNotPending));
            }
            if Self::user_exists(&mut transaction, &user.org_id, &user.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    user.email.clone(),
                )));
            }
            Self::insert_user_in(&mut transaction, user).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(())
        })
        .await?;
        Ok(UserRecord {
            added_at: truncate_to_millis(user.added_at)?,
            ..user.clone()
        })
    }

    async fn set_member(&self, org_id: &str, member: &MemberRecord) -> Result<MemberRecord, StoreError> {
        // The composite foreign keys refuse a user or workspace of another organization.
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, org_id, workspace_role, added_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET workspace_role = excluded.workspace_role",
        )
        .bind(member.workspace_id.as_str())
        .bind(member.user_id.as_str())
        .bind(org_id)
        .bind(member.role.as_str())
        .bind(millis(member.added_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        self.member(&member.workspace_id, &member.user_id)
            .await?
            .ok_or_else(|| StoreError::Database("a member vanished after insert".to_owned()))
    }

    async fn member(&self, workspace_id: &str, user_id: &str) -> Result<Option<MemberRecord>, StoreError> {
        sqlx::query(
            "SELECT workspace_id, user_id, workspace_role, added_at FROM workspace_members
             WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .map(|row| member_from_row(&row))
        .transpose()
    }

    async fn members(&self, workspace_id: &str) -> Result<Vec<MemberRecord>, StoreError> {
        sqlx::query(
            "SELECT workspace_id, user_id, workspace_role, added_at FROM workspace_members
             WHERE workspace_id = $1 ORDER BY added_at, user_id",
        )
        .bind(workspace_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(member_from_row)
        .collect()
    }

    async fn delete_member(&self, workspace_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted) > 0)
    }

    /// Inserts a workspace on `connection`, in the caller's write transaction: here for a
    /// capped creation, and each adapter's organization and workspace creation use it too.
    async fn insert_workspace(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        is_default: bool,
        now: Timestamp,
    ) -> Result<Workspace, StoreError> {
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, name, is_default, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(workspace_id)
        .bind(org_id)
        .bind(name)
        .bind(is_default)
        .bind(millis(now))
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        Ok(Workspace {
            id: workspace_id.to_owned(),
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            is_default,
            created_at: truncate_to_millis(now)?,
            archived_at: None,
        })
    }

    /// Holds the workspace's organization (`Dialect::lock_organization_of_workspace`), then
    /// reads the workspace; None if there is none.
    async fn locked_workspace(
        connection: &mut <Self::Db as Database>::Connection,
        workspace_id: &str,
    ) -> Result<Option<Workspace>, StoreError> {
        if Self::lock_organization_of_workspace(&mut *connection, workspace_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        sqlx::query(&format!("{WORKSPACE_SELECT} WHERE id = $1"))
            .bind(workspace_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?
            .map(|row| workspace_from_row(&row))
            .transpose()
    }

    /// Whether the organization has a workspace of that name, archived ones included.
    async fn workspace_name_taken(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        Ok(found.is_some())
    }

    /// Whether the email is already a user of the organization.
    async fn user_exists(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        email: &str,
    ) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM users WHERE org_id = $1 AND email = $2")
            .bind(org_id)
            .bind(email)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?;
        Ok(found.is_some())
    }

    async fn insert_user_in(
        connection: &mut <Self::Db as Database>::Connection,
        user: &UserRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, org_id, email, name, role, added_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(user.org_id.as_str())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(millis(user.added_at))
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }
}
