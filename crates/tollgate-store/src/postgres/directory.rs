//! PostgreSQL twin of `sqlite/directory.rs`: the Admin API's directory (keys with who
//! created them, workspace renames and archives, users, invites and workspace members).
//!
//! Where SQLite's write lock makes a check-then-write safe (a name still free, the
//! active-workspace cap, a pending invite), the transaction here first locks the
//! organization's row and runs again if PostgreSQL aborts it for contention, so two admins
//! racing cannot both pass the check.

use sqlx::PgConnection;
use tollgate_core::Timestamp;
use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::roles::OrgRole;

use crate::admin_model::{
    CreatedBy, DirectoryRejection, InviteRecord, KeyView, MemberRecord, UserRecord, WorkspaceRejection,
};
use crate::codec::allowed_models_text;
use crate::error::{StoreError, TxError};
use crate::model::{AuditEntry, KeyStatus, NewKey, Workspace};
use crate::postgres::audit_log::{check_entry_scope, insert_audit_event};
use crate::postgres::{
    PgStore, insert_workspace, lock_organization, lock_organization_of_workspace, millis, retrying,
    retrying_store, store_error, truncate_to_millis,
};
use crate::rows::{
    INVITE_SELECT, KEY_VIEW_SELECT, USER_SELECT, WORKSPACE_SELECT, invite_from_row, key_view_from_row,
    member_from_row, user_from_row, workspace_from_row,
};

impl PgStore {
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
        .execute(self.pool())
        .await
        .map_err(store_error)?;
        self.key_view(&key.id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("key {} vanished after insert", key.id)))
    }

    pub(crate) async fn key_view(&self, key_id: &str) -> Result<Option<KeyView>, StoreError> {
        sqlx::query(&format!("{KEY_VIEW_SELECT} WHERE id = $1"))
            .bind(key_id)
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)?
            .map(|row| key_view_from_row(&row))
            .transpose()
    }

    pub(crate) async fn key_views(&self, org_id: &str, kind: KeyKind) -> Result<Vec<KeyView>, StoreError> {
        sqlx::query(&format!(
            "{KEY_VIEW_SELECT} WHERE org_id = $1 AND kind = $2 ORDER BY created_at DESC, id DESC"
        ))
        .bind(org_id)
        .bind(kind.as_str())
        .fetch_all(self.pool())
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
        let updated = sqlx::query("UPDATE api_keys SET allowed_models = $1 WHERE id = $2")
            .bind(allowed_models_text(allowed_models))
            .bind(key_id)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    pub(crate) async fn rename_key(&self, key_id: &str, name: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE api_keys SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(key_id)
            .execute(self.pool())
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
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            lock_organization(&mut transaction, org_id).await?;
            let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = $1 AND name = $2")
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
                "SELECT COUNT(*) FROM workspaces
                 WHERE org_id = $1 AND archived_at IS NULL AND NOT is_default",
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
            let workspace =
                insert_workspace(&mut transaction, org_id, workspace_id, name, false, now).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(workspace)
        })
        .await
    }

    pub(crate) async fn rename_workspace(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Workspace, TxError<WorkspaceRejection>> {
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            let Some(workspace) = locked_workspace(&mut transaction, workspace_id).await? else {
                return Err(TxError::Rejected(WorkspaceRejection::Unknown));
            };
            if workspace.archived_at.is_some() {
                return Err(TxError::Rejected(WorkspaceRejection::Archived));
            }
            if workspace.name != name {
                let taken = sqlx::query("SELECT 1 FROM workspaces WHERE org_id = $1 AND name = $2")
                    .bind(&workspace.org_id)
                    .bind(name)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(store_error)?;
                if taken.is_some() {
                    return Err(TxError::Rejected(WorkspaceRejection::NameTaken(name.to_owned())));
                }
                sqlx::query("UPDATE workspaces SET name = $1 WHERE id = $2")
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
        })
        .await
    }

    pub(crate) async fn archive_workspace(
        &self,
        workspace_id: &str,
        now: Timestamp,
        audit: AuditEntry,
    ) -> Result<(Workspace, u64), TxError<WorkspaceRejection>> {
        let audit = &audit;
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            let Some(workspace) = locked_workspace(&mut transaction, workspace_id).await? else {
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
                .map_err(store_error)?;
            // Archiving deactivates every key of the workspace, for good: an archived key
            // can't be reactivated. Usage and spend history stay.
            let keys =
                sqlx::query("UPDATE api_keys SET status = $1 WHERE workspace_id = $2 AND status <> $1")
                    .bind(KeyStatus::Archived.as_str())
                    .bind(workspace_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(store_error)?;
            insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok((
                Workspace {
                    archived_at: Some(truncate_to_millis(now)?),
                    ..workspace
                },
                keys.rows_affected(),
            ))
        })
        .await
    }

    pub(crate) async fn insert_user(
        &self,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            lock_organization(&mut transaction, &user.org_id).await?;
            if user_exists(&mut transaction, &user.org_id, &user.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    user.email.clone(),
                )));
            }
            insert_user_in(&mut transaction, user).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(())
        })
        .await?;
        Ok(UserRecord {
            added_at: truncate_to_millis(user.added_at)?,
            ..user.clone()
        })
    }

    pub(crate) async fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE id = $1"))
            .bind(user_id)
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)?
            .map(|row| user_from_row(&row))
            .transpose()
    }

    pub(crate) async fn users(&self, org_id: &str) -> Result<Vec<UserRecord>, StoreError> {
        sqlx::query(&format!("{USER_SELECT} WHERE org_id = $1 ORDER BY added_at, id"))
            .bind(org_id)
            .fetch_all(self.pool())
            .await
            .map_err(store_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub(crate) async fn set_user_role(&self, user_id: &str, role: OrgRole) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(user_id)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(updated.rows_affected() > 0)
    }

    pub(crate) async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        retrying_store(|| async move {
            let mut transaction = self.begin().await?;
            sqlx::query("DELETE FROM workspace_members WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            // The user's personal keys stop with them, for good (see `Store::delete_user`).
            sqlx::query("UPDATE api_keys SET status = $1 WHERE user_id = $2 AND status <> $1")
                .bind(KeyStatus::Archived.as_str())
                .bind(user_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
            transaction.commit().await.map_err(store_error)?;
            Ok(deleted.rows_affected() > 0)
        })
        .await
    }

    pub(crate) async fn insert_invite(
        &self,
        invite: &InviteRecord,
    ) -> Result<InviteRecord, TxError<DirectoryRejection>> {
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            // Nothing unique guards "one pending invite per email": the lock does.
            lock_organization(&mut transaction, &invite.org_id).await?;
            if user_exists(&mut transaction, &invite.org_id, &invite.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    invite.email.clone(),
                )));
            }
            let pending = sqlx::query(
                "SELECT 1 FROM invites
                 WHERE org_id = $1 AND email = $2 AND status = 'pending' AND expires_at > $3",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            Ok(())
        })
        .await?;
        Ok(InviteRecord {
            invited_at: truncate_to_millis(invite.invited_at)?,
            expires_at: truncate_to_millis(invite.expires_at)?,
            ..invite.clone()
        })
    }

    pub(crate) async fn invite(&self, invite_id: &str) -> Result<Option<InviteRecord>, StoreError> {
        sqlx::query(&format!("{INVITE_SELECT} WHERE id = $1"))
            .bind(invite_id)
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)?
            .map(|row| invite_from_row(&row))
            .transpose()
    }

    pub(crate) async fn invites(&self, org_id: &str) -> Result<Vec<InviteRecord>, StoreError> {
        sqlx::query(&format!(
            "{INVITE_SELECT} WHERE org_id = $1 ORDER BY invited_at, id"
        ))
        .bind(org_id)
        .fetch_all(self.pool())
        .await
        .map_err(store_error)?
        .iter()
        .map(invite_from_row)
        .collect()
    }

    pub(crate) async fn delete_invite(&self, invite_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM invites WHERE id = $1")
            .bind(invite_id)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(crate) async fn accept_invite(
        &self,
        invite_id: &str,
        user: &UserRecord,
    ) -> Result<UserRecord, TxError<DirectoryRejection>> {
        retrying(|| async move {
            let mut transaction = self.begin().await?;
            lock_organization(&mut transaction, &user.org_id).await?;
            let accepted = sqlx::query(
                "UPDATE invites SET status = 'accepted'
                 WHERE id = $1 AND org_id = $2 AND email = $3 AND status = 'pending' AND expires_at > $4",
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
            if user_exists(&mut transaction, &user.org_id, &user.email).await? {
                return Err(TxError::Rejected(DirectoryRejection::AlreadyMember(
                    user.email.clone(),
                )));
            }
            insert_user_in(&mut transaction, user).await?;
            transaction.commit().await.map_err(store_error)?;
            Ok(())
        })
        .await?;
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
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET workspace_role = excluded.workspace_role",
        )
        .bind(&member.workspace_id)
        .bind(&member.user_id)
        .bind(org_id)
        .bind(member.role.as_str())
        .bind(millis(member.added_at))
        .execute(self.pool())
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
             WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)?
        .map(|row| member_from_row(&row))
        .transpose()
    }

    pub(crate) async fn members(&self, workspace_id: &str) -> Result<Vec<MemberRecord>, StoreError> {
        sqlx::query(
            "SELECT workspace_id, user_id, workspace_role, added_at FROM workspace_members
             WHERE workspace_id = $1 ORDER BY added_at, user_id",
        )
        .bind(workspace_id)
        .fetch_all(self.pool())
        .await
        .map_err(store_error)?
        .iter()
        .map(member_from_row)
        .collect()
    }

    pub(crate) async fn delete_member(&self, workspace_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }
}

/// Locks the workspace's organization, then reads the workspace; None if there is none.
async fn locked_workspace(
    connection: &mut PgConnection,
    workspace_id: &str,
) -> Result<Option<Workspace>, StoreError> {
    if lock_organization_of_workspace(&mut *connection, workspace_id)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    sqlx::query(&format!("{WORKSPACE_SELECT} WHERE id = $1"))
        .bind(workspace_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .map(|row| workspace_from_row(&row))
        .transpose()
}

async fn user_exists(connection: &mut PgConnection, org_id: &str, email: &str) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE org_id = $1 AND email = $2")
        .bind(org_id)
        .bind(email)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    Ok(found.is_some())
}

async fn insert_user_in(connection: &mut PgConnection, user: &UserRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, org_id, email, name, role, added_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
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
