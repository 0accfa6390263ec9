//! Users, invites and workspace members of an organization, on the organization-scoped
//! `OrgAdmin` handle. The role rules (admin is never granted or removed through the API;
//! workspace billing is inherited) are `tollgate_core::roles`.

use tollgate_core::ids::{IdKind, is_well_formed};
use tollgate_core::roles::{OrgRole, WorkspaceRole, check_membership, effective_workspace_role};
use tollgate_store::{DirectoryRejection, InviteRecord, InviteState, MemberRecord, UserRecord};

use crate::admin::OrgAdmin;
use crate::error::ServiceError;
use crate::random;

/// Invites expire this many days after they are sent.
pub const INVITE_LIFETIME_DAYS: i64 = 21;

/// Where an invite stands as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteStatus {
    Pending,
    Accepted,
    Expired,
}

impl InviteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteStatus::Pending => "pending",
            InviteStatus::Accepted => "accepted",
            InviteStatus::Expired => "expired",
        }
    }
}

/// An invite with its status judged now.
#[derive(Clone, Debug)]
pub struct Invite {
    pub record: InviteRecord,
    pub status: InviteStatus,
}

/// A user's role in a workspace, explicit or inherited from their organization role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub workspace_id: String,
    pub user_id: String,
    pub role: WorkspaceRole,
}

impl From<DirectoryRejection> for ServiceError {
    fn from(rejection: DirectoryRejection) -> ServiceError {
        ServiceError::Invalid(rejection.to_string())
    }
}

fn not_found(what: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("{what} '{id}' was not found"))
}

pub(crate) fn email(text: &str) -> Result<String, ServiceError> {
    let email = text.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.contains(char::is_whitespace);
    if !valid {
        return Err(ServiceError::Invalid(format!(
            "'{}' is not an email address",
            text.trim()
        )));
    }
    Ok(email)
}

fn assignable(role: OrgRole) -> Result<OrgRole, ServiceError> {
    if !role.assignable() {
        return Err(ServiceError::Invalid(
            "the admin role cannot be granted or removed through the API".into(),
        ));
    }
    Ok(role)
}

impl OrgAdmin {
    /// The organization's users, optionally only those with this email or one of these roles.
    pub async fn users(
        &self,
        email_filter: Option<&str>,
        roles: &[OrgRole],
    ) -> Result<Vec<UserRecord>, ServiceError> {
        let email_filter = email_filter.map(|text| text.trim().to_ascii_lowercase());
        Ok(self
            .tollgate()
            .store()
            .users(self.org_id())
            .await?
            .into_iter()
            .filter(|user| email_filter.as_ref().is_none_or(|email| &user.email == email))
            .filter(|user| roles.is_empty() || roles.contains(&user.role))
            .collect())
    }

    pub async fn user(&self, user_id: &str) -> Result<UserRecord, ServiceError> {
        if !is_well_formed(IdKind::User, user_id) {
            return Err(not_found("user", user_id));
        }
        match self.tollgate().store().user(user_id).await? {
            Some(user) if user.org_id == self.org_id() => Ok(user),
            _ => Err(not_found("user", user_id)),
        }
    }

    /// Adds a user directly (the operator's command line; the API invites instead).
    pub async fn add_user(
        &self,
        email_text: &str,
        name: &str,
        role: OrgRole,
    ) -> Result<UserRecord, ServiceError> {
        let user = UserRecord {
            id: random::id(IdKind::User),
            org_id: self.org_id().to_owned(),
            email: email(email_text)?,
            name: user_name(name)?,
            role,
            added_at: self.tollgate().now(),
        };
        Ok(self.tollgate().store().insert_user(&user).await?)
    }

    /// Changes a user's role; `admin` is neither granted nor taken away here.
    pub async fn set_user_role(&self, user_id: &str, role: OrgRole) -> Result<UserRecord, ServiceError> {
        let user = self.user(user_id).await?;
        assignable(role)?;
        assignable(user.role)?;
        self.tollgate().store().set_user_role(&user.id, role).await?;
        self.user(user_id).await
    }

    /// Removes a user from the organization; an admin can't be removed through the API.
    pub async fn remove_user(&self, user_id: &str) -> Result<(), ServiceError> {
        let user = self.user(user_id).await?;
        assignable(user.role)?;
        self.tollgate().store().delete_user(&user.id).await?;
        Ok(())
    }

    /// Deactivates a user (not an admin): they stay in the organization with their history,
    /// but are signed out everywhere, their personal keys are archived for good, and they
    /// cannot sign in (with a password or single sign-on) until reactivated.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<(), ServiceError> {
        let user = self.user(user_id).await?;
        assignable(user.role)?;
        self.tollgate()
            .store()
            .deactivate_user(&user.id, self.tollgate().now())
            .await?;
        Ok(())
    }

    /// Lets a deactivated user sign in again (their archived keys stay archived).
    pub async fn reactivate_user(&self, user_id: &str) -> Result<(), ServiceError> {
        let user = self.user(user_id).await?;
        self.tollgate().store().reactivate_user(&user.id).await?;
        Ok(())
    }

    /// The organization's deactivated users and when each was deactivated.
    pub async fn deactivated_users(
        &self,
    ) -> Result<std::collections::HashMap<String, tollgate_core::Timestamp>, ServiceError> {
        Ok(self.tollgate().store().deactivated_users(self.org_id()).await?)
    }

    pub async fn invites(&self) -> Result<Vec<Invite>, ServiceError> {
        let now = self.tollgate().now();
        Ok(self
            .tollgate()
            .store()
            .invites(self.org_id())
            .await?
            .into_iter()
            .map(|record| judge(record, now))
            .collect())
    }

    pub async fn invite(&self, invite_id: &str) -> Result<Invite, ServiceError> {
        if !is_well_formed(IdKind::Invite, invite_id) {
            return Err(not_found("invite", invite_id));
        }
        match self.tollgate().store().invite(invite_id).await? {
            Some(invite) if invite.org_id == self.org_id() => Ok(judge(invite, self.tollgate().now())),
            _ => Err(not_found("invite", invite_id)),
        }
    }

    /// Invites an email with a role other than admin, for 21 days.
    pub async fn create_invite(&self, email_text: &str, role: OrgRole) -> Result<Invite, ServiceError> {
        let now = self.tollgate().now();
        let record = InviteRecord {
            id: random::id(IdKind::Invite),
            org_id: self.org_id().to_owned(),
            email: email(email_text)?,
            role: assignable(role)?,
            state: InviteState::Pending,
            invited_at: now,
            expires_at: now + chrono::Duration::days(INVITE_LIFETIME_DAYS),
        };
        let stored = self.tollgate().store().insert_invite(&record).await?;
        Ok(judge(stored, now))
    }

    pub async fn delete_invite(&self, invite_id: &str) -> Result<(), ServiceError> {
        let invite = self.invite(invite_id).await?;
        self.tollgate().store().delete_invite(&invite.record.id).await?;
        Ok(())
    }

    /// The invitee accepts (the Console's step; the command line offers it): the user joins
    /// with the invite's email and role.
    pub async fn accept_invite(&self, invite_id: &str, name: &str) -> Result<UserRecord, ServiceError> {
        let invite = self.invite(invite_id).await?;
        let user = UserRecord {
            id: random::id(IdKind::User),
            org_id: self.org_id().to_owned(),
            email: invite.record.email.clone(),
            name: user_name(name)?,
            role: invite.record.role,
            added_at: self.tollgate().now(),
        };
        Ok(self
            .tollgate()
            .store()
            .accept_invite(&invite.record.id, &user)
            .await?)
    }

    /// A workspace's members: those given a role, and the organization's admins and billing
    /// users, who hold theirs in every workspace.
    pub async fn members(&self, workspace_id: &str) -> Result<Vec<Member>, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let users = self.tollgate().store().users(self.org_id()).await?;
        let explicit = self.tollgate().store().members(&workspace.id).await?;
        let mut members = Vec::new();
        for user in &users {
            let assigned = explicit
                .iter()
                .find(|member| member.user_id == user.id)
                .map(|member| member.role);
            if let Some(role) = effective_workspace_role(user.role, assigned) {
                members.push(Member {
                    workspace_id: workspace.id.clone(),
                    user_id: user.id.clone(),
                    role,
                });
            }
        }
        Ok(members)
    }

    pub async fn member(&self, workspace_id: &str, user_id: &str) -> Result<Member, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let user = self.user(user_id).await?;
        let assigned = self
            .tollgate()
            .store()
            .member(&workspace.id, &user.id)
            .await?
            .map(|member| member.role);
        let role = effective_workspace_role(user.role, assigned)
            .ok_or_else(|| not_found("workspace member", user_id))?;
        Ok(Member {
            workspace_id: workspace.id,
            user_id: user.id,
            role,
        })
    }

    /// Adds a member or changes their role (the API's create and update).
    pub async fn set_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: WorkspaceRole,
    ) -> Result<Member, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        if workspace.archived_at.is_some() {
            return Err(ServiceError::Invalid("the workspace is archived".into()));
        }
        let user = self.user(user_id).await?;
        check_membership(user.role, role).map_err(|error| ServiceError::Invalid(error.to_string()))?;
        let stored = self
            .tollgate()
            .store()
            .set_member(
                self.org_id(),
                &MemberRecord {
                    workspace_id: workspace.id,
                    user_id: user.id,
                    role,
                    added_at: self.tollgate().now(),
                },
            )
            .await?;
        Ok(Member {
            workspace_id: stored.workspace_id,
            user_id: stored.user_id,
            role: stored.role,
        })
    }

    /// Changes an existing member's role.
    pub async fn update_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: WorkspaceRole,
    ) -> Result<Member, ServiceError> {
        self.member(workspace_id, user_id).await?;
        self.set_member(workspace_id, user_id, role).await
    }

    pub async fn remove_member(&self, workspace_id: &str, user_id: &str) -> Result<(), ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let user = self.user(user_id).await?;
        if effective_workspace_role(user.role, None).is_some() {
            return Err(ServiceError::Invalid(format!(
                "a {} holds their role in every workspace and cannot be removed from one",
                user.role.as_str()
            )));
        }
        if !self
            .tollgate()
            .store()
            .delete_member(&workspace.id, &user.id)
            .await?
        {
            return Err(not_found("workspace member", user_id));
        }
        Ok(())
    }
}

fn user_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ServiceError::Invalid(
            "a user name has 1 to 200 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn judge(record: InviteRecord, now: tollgate_core::Timestamp) -> Invite {
    let status = match record.state {
        InviteState::Accepted => InviteStatus::Accepted,
        InviteState::Pending if record.expires_at <= now => InviteStatus::Expired,
        InviteState::Pending => InviteStatus::Pending,
    };
    Invite { record, status }
}
