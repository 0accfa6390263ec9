//! The Admin API's directory: keys with who created them, workspace renames and archives,
//! users, invites and workspace members. No money moves here.
//!
//! Every check that guards a write (a name still free, the active-workspace cap, a pending
//! invite) runs inside the write transaction that makes it, so two admins racing cannot
//! both pass it.

use tollgate_core::Timestamp;
use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::roles::OrgRole;

use crate::admin_model::{
    CreatedBy, DirectoryRejection, InviteRecord, KeyView, MemberRecord, UserRecord, WorkspaceRejection,
};
use crate::codec::allowed_models_text;
use crate::error::{StoreError, TxError};
use crate::model::{AuditEntry, KeyStatus, NewKey, Workspace};
use crate::rows::{
    INVITE_SELECT, KEY_VIEW_SELECT, USER_SELECT, WORKSPACE_SELECT, invite_from_row, key_view_from_row,
    member_from_row, user_from_row, workspace_from_row,
};
use crate::sqlite::audit_log::{check_entry_scope, insert_audit_event};
use crate::sqlite::{SqliteStore, insert_workspace, millis, store_error, truncate_to_millis};

impl SqliteStore {
    pub(crate) async fn insert_key_by(
        &self,
        key: NewKey,
        created_by: &CreatedBy,
    ) -> Result<KeyView, StoreError> {
        sqlx::query(
            "INSERT INTO api_keys
                (id, kind, org_id, workspace_id, name, secret_hash, hint, status, created_at,
                 created_by_type, created_by_id, expires_at, user_id, service_account_id,
                 allowed_models)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(key.kind.as_str())
        .bind(&key.org_id)
        .bind(&key.workspace_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(&key.hint)
        .bind(KeyStatus::Active.as_str())
        .bind(millis(key.created_at))
        .bind(created_by.kind())
        .bind(created_by.id())
        .bind(key.expires_at.map(millis))
        .bind(&key.user_id)
        .bind(&key.service_account_id)
        .bind(allowed_models_text(&key.allowed_models))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        self.key_view(&key.id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("key {} vanished after insert", key.id)))
    }

    pub(crate) async fn key_view(&self, key_id: &str) -> Result<Option<KeyView>, StoreError> {
        sqlx::query(&format!("{KEY_VIEW_SELECT} WHERE id = ?"))
            .bind(key_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| key_view_from_row(&row))
            .transpose()
    }

    pub(crate) async fn key_views(&self, org_id: &str, kind: KeyKind) -> Result<Vec<KeyView>, StoreError> {
        sqlx::query(&format!(
            "{KEY_VIEW_SELECT} WHERE org_id = ? AND kind = ? ORDER BY created_at DESC, id DESC"
        ))
        .bind(org_id)
        .bind(kind.as_str())
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(key_view_from_row)
        .collect()
    }

    pub(crate) async fn set_key_allowed_models(
        &self,
        key_id: &str,
        allowed_models: &AllowedModels,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET allowed_models = ? WHERE id = ?")
            .bind(allowed_models_text(allowed_models))
            .bind(key_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    pub(crate) async fn rename_key(&self, key_id: &str, name: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET name = ? WHERE id = ?")
            .bind(name)
            .bind(key_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    pub(crate) async fn create_workspace_capped(
        &self,
        org_id: &str,
        workspace_id: &str,
        name: &str,
        now: Timestamp,
        max_active: usize,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        let mut transaction = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = ? AND name = ?")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(TxError::Rejected(WorkspaceRejection::NameTaken(name.to_owned())));
        }
        // The Default workspace is not counted: the cap is on the ones an admin creates.
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workspaces WHERE org_id = ? AND archived_at IS NULL AND is_default = 0",
        )
        .bind(org_id)
        .fetch_one(&mut *transaction)
        .await
        .map_err(store_error)?;
        if usize::try_from(active).unwrap_or(usize::MAX) >= max_active {
            return Err(TxError::Rejected(WorkspaceRejection::TooManyWorkspaces(
                max_active,
            )));
        }
        let workspace = insert_workspace(&mut transaction, org_id, workspace_id, name, false, now).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(workspace)
    }

    pub(crate) async fn rename_workspace(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        let mut transaction = self.begin_write().await?;
        let Some(workspace) = sqlx::query(&format!("{WORKSPACE_SELECT} WHERE id = ?"))
            .bind(workspace_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?
            .map(|row| workspace_from_row(&row))
            .transpose()?
        else {
            return Err(TxError::Rejected(WorkspaceRejection::Unknown));
        };
        if workspace.archived_at.is_some() {
            return Err(TxError::Rejected(WorkspaceRejection::Archived));
        }
        if workspace.name != name {
            let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = ? AND name = ?")
                .bind(&workspace.org_id)
                .bind(name)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(store_error)?;
            if taken.is_some() {
                return Err(TxError::Rejected(WorkspaceRejection::NameTaken(name.to_owned())));
            }
            sqlx::query("UPDATE workspaces SET name = ? WHERE id = ?")
                .bind(name)
                .bind(workspace_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
        }
        transaction.commit().await.map_err(store_error)?;
        Ok(Workspace {
            name: name.to_owned(),
            ..workspace
        })
    }

    pub(crate) async fn archive_workspace(
        &self,
        workspace_id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(Workspace, u64), TxError<WorkspaceRejection>> {
        let mut transaction = self.begin_write().await?;
        let Some(workspace) = sqlx::query(&format!("{WORKSPACE_SELECT} WHERE id = ?"))
            .bind(workspace_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?
            .map(|row| workspace_from_row(&row))
            .transpose()?
        else {
            return Err(TxError::Rejected(WorkspaceRejection::Unknown));
        };
        if workspace.archived_at.is_some() {
            return Err(TxError::Rejected(WorkspaceRejection::Archived));
        }
        check_entry_scope(&audit, &workspace.org_id)?;
        sqlx::query("UPDATE workspaces SET archived_at = ? WHERE id = ?")
            .bind(millis(now))
            .bind(workspace_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        // Archiving deactivates every key of the workspace, for good: an archived key can't
        // be reactivated. Usage and spend history stay.
        let keys = sqlx::query("UPDATE api_keys SET status = ? WHERE workspace_id = ? AND status <> ?")
            .bind(KeyStatus::Archived.as_str())
            .bind(workspace_id)
            .bind(KeyStatus::Archived.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok((
            Workspace {
                archived_at: Some(truncate_to_millis(now)?),
                ..workspace
            },
            keys.rows_affected(),
        ))
    }

    pub(crate) async fn insert_user(
        &self,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        let mut transaction = self.begin_write().await?;
        let taken = sqlx::query("SELECT 1 FROM users WHERE org_id = ? AND email = ?")
            .bind(&user.org_id)
            .bind(&user.email)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                user.email.clone(),
            )));
        }
        insert_user_in(&mut transaction, user).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(UserRecord {
            added_at: truncate_to_millis(user.added_at)?,
            ..user.clone()
        })
    }

    pub(crate) async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE id = ?"))
            .bind(user_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| user_from_row(&row))
            .transpose()
    }

    pub(crate) async fn users(&self, org_id: &str) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE org_id = ? ORDER BY added_at, id"))
            .bind(org_id)
            .fetch_all(&self.reader)
            .await
            .map_err(store_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub(crate) async fn set_user_role(&self, user_id: &str, role: OrgRole) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE users SET role = ? WHERE id = ?")
            .bind(role.as_str())
            .bind(user_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    pub(crate) async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM workspace_members WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        // The user's personal keys stop with them, for good (see `Store::delete_user`).
        sqlx::query("UPDATE api_keys SET status = ? WHERE user_id = ? AND status <> ?")
            .bind(KeyStatus::Archived.as_str())
            .bind(user_id)
            .bind(KeyStatus::Archived.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(crate) async fn insert_invite(
        &self,
        invite: &InviteRecord,
    ) -> Result<InviteRecord, TxError<DirectoryRejection>> {
        let mut transaction = self.begin_write().await?;
        let member = sqlx::query("SELECT 1 FROM users WHERE org_id = ? AND email = ?")
            .bind(&invite.org_id)
            .bind(&invite.email)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if member.is_some() {
            return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                invite.email.clone(),
            )));
        }
        let pending = sqlx::query(
            "SELECT 1 FROM invites WHERE org_id = ? AND email = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(&invite.org_id)
        .bind(&invite.email)
        .bind(millis(invite.invited_at))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(store_error)?;
        if pending.is_some() {
            return Err(TxError::Rejected(DirectoryRejection::AlreadyInvited(
                invite.email.clone(),
            )));
        }
        sqlx::query(
            "INSERT INTO invites (id, org_id, email, role, status, invited_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&invite.id)
        .bind(&invite.org_id)
        .bind(&invite.email)
        .bind(invite.role.as_str())
        .bind(invite.state.as_str())
        .bind(millis(invite.invited_at))
        .bind(millis(invite.expires_at))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;
        Ok(InviteRecord {
            invited_at: truncate_to_millis(invite.invited_at)?,
            expires_at: truncate_to_millis(invite.expires_at)?,
            ..invite.clone()
        })
    }

    pub(crate) async fn invite(&self, invite_id: &str) -> Result<Option<InviteRecord>, StoreError> {
        sqlx::query(&format!("{INVITE_SELECT} WHERE id = ?"))
            .bind(invite_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?
            .map(|row| invite_from_row(&row))
            .transpose()
    }

    pub(crate) async fn invites(&self, org_id: &str) -> Result<Vec<InviteRecord>, StoreError> {
        sqlx::query(&format!(
            "{INVITE_SELECT} WHERE org_id = ? ORDER BY invited_at, id"
        ))
        .bind(org_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(invite_from_row)
        .collect()
    }

    pub(crate) async fn delete_invite(&self, invite_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM invites WHERE id = ?")
            .bind(invite_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(crate) async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        let mut transaction = self.begin_write().await?;
        let accepted = sqlx::query(
            "UPDATE invites SET status = 'accepted'
             WHERE id = ? AND org_id = ? AND email = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(invite_id)
        .bind(&user.org_id)
        .bind(&user.email)
        .bind(millis(user.added_at))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        if accepted.rows_affected() != 1 {
            return Err(TxError::Rejected(DirectoryRejection::InviteNotPending));
        }
        let taken = sqlx::query("SELECT 1 FROM users WHERE org_id = ? AND email = ?")
            .bind(&user.org_id)
            .bind(&user.email)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                user.email.clone(),
            )));
        }
        insert_user_in(&mut transaction, user).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(UserRecord {
            added_at: truncate_to_millis(user.added_at)?,
            ..user.clone()
        })
    }

    pub(crate) async fn set_member(
        &self,
        org_id: &str,
        member: &MemberRecord,
    ) -> Result<MemberRecord, StoreError> {
        // The composite foreign keys refuse a user or workspace of another organization.
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, org_id, workspace_role, added_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET workspace_role = excluded.workspace_role",
        )
        .bind(&member.workspace_id)
        .bind(&member.user_id)
        .bind(org_id)
        .bind(member.role.as_str())
        .bind(millis(member.added_at))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        self.member(&member.workspace_id, &member.user_id)
            .await?
            .ok_or_else(|| StoreError::Database("a member vanished after insert".to_owned()))
    }

    pub(crate) async fn member(
        &self,
        workspace_id: &str,
        user_id: &str,
    ) -> Result<Option<MemberRecord>, StoreError> {
        sqlx::query(
            "SELECT workspace_id, user_id, workspace_role, added_at FROM workspace_members
             WHERE workspace_id = ? AND user_id = ?",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?
        .map(|row| member_from_row(&row))
        .transpose()
    }

    pub(crate) async fn members(&self, workspace_id: &str) -> Result<Vec<MemberRecord>, StoreError> {
        sqlx::query(
            "SELECT workspace_id, user_id, workspace_role, added_at FROM workspace_members
             WHERE workspace_id = ? ORDER BY added_at, user_id",
        )
        .bind(workspace_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(member_from_row)
        .collect()
    }

    pub(crate) async fn delete_member(&self, workspace_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM workspace_members WHERE workspace_id = ? AND user_id = ?")
            .bind(workspace_id)
            .bind(user_id)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }
}

async fn insert_user_in(
    connection: &mut sqlx::SqliteConnection,
    user: &UserRecord,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO users (id, org_id, email, name, role, added_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&user.id)
        .bind(&user.org_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(millis(user.added_at))
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    Ok(())
}
