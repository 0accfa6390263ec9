//! Service accounts of an organization, on the organization-scoped `OrgAdmin` handle:
//! created, listed, changed and archived, and their workspaces with a role in each. The
//! naming and role rules are `tollgate_core::service_accounts`; the keys bound to an
//! account are made by `OrgAdmin::create_api_key`, only in a workspace it belongs to.
//! Archiving an account, or removing it from a workspace, archives its keys (there) in the
//! same transaction, so they stop within the key-cache TTL like a removed user's.

use tollgate_core::ids::{IdKind, is_well_formed};
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_core::service_accounts::{
    ServiceAccountName, ServiceAccountRejection, check_role, check_workspace_role, description,
};
use tollgate_store::{ServiceAccountMembership, ServiceAccountRecord};

use crate::admin::OrgAdmin;
use crate::error::ServiceError;
use crate::random;

/// A service account an admin asks for.
#[derive(Clone, Debug)]
pub struct NewServiceAccount {
    pub name: String,
    pub description: String,
    /// Any role but `admin`; the Admin API's default is `developer`.
    pub role: OrgRole,
}

/// Changes to a service account; `None` leaves a field as it is. Its name never changes.
#[derive(Clone, Debug, Default)]
pub struct ServiceAccountUpdate {
    pub description: Option<String>,
    pub role: Option<OrgRole>,
}

impl From<ServiceAccountRejection> for ServiceError {
    fn from(rejection: ServiceAccountRejection) -> ServiceError {
        ServiceError::Invalid(rejection.to_string())
    }
}

fn not_found(what: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("{what} '{id}' was not found"))
}

fn archived() -> ServiceError {
    ServiceError::Invalid("the service account is archived".into())
}

impl OrgAdmin {
    /// The organization's service accounts, oldest first; archived ones only if asked.
    pub async fn service_accounts(
        &self,
        include_archived: bool,
    ) -> Result<Vec<ServiceAccountRecord>, ServiceError> {
        Ok(self
            .tollgate()
            .store()
            .service_accounts(self.org_id())
            .await?
            .into_iter()
            .filter(|account| include_archived || account.archived_at.is_none())
            .collect())
    }

    /// One service account of this organization, archived or not.
    pub async fn service_account(&self, id: &str) -> Result<ServiceAccountRecord, ServiceError> {
        if !is_well_formed(IdKind::ServiceAccount, id) {
            return Err(not_found("service account", id));
        }
        match self.tollgate().store().service_account(id).await? {
            Some(account) if account.org_id == self.org_id() => Ok(account),
            _ => Err(not_found("service account", id)),
        }
    }

    /// A service account that is not archived.
    pub(crate) async fn live_service_account(&self, id: &str) -> Result<ServiceAccountRecord, ServiceError> {
        let account = self.service_account(id).await?;
        if account.archived_at.is_some() {
            return Err(archived());
        }
        Ok(account)
    }

    pub async fn create_service_account(
        &self,
        request: NewServiceAccount,
    ) -> Result<ServiceAccountRecord, ServiceError> {
        let name = ServiceAccountName::parse(&request.name)?;
        let now = self.tollgate().now();
        let account = ServiceAccountRecord {
            id: random::id(IdKind::ServiceAccount),
            org_id: self.org_id().to_owned(),
            name: name.as_str().to_owned(),
            description: description(&request.description)?,
            role: check_role(request.role)?,
            created_at: now,
            updated_at: now,
            archived_at: None,
        };
        let audit = self.audit(
            "service_account.create",
            &account.id,
            format!("name={} role={}", account.name, account.role.as_str()),
        );
        if !self
            .tollgate()
            .store()
            .insert_service_account(&account, audit)
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "a service account named '{}' already exists",
                account.name
            )));
        }
        self.service_account(&account.id).await
    }

    /// Changes an account's description and/or role (never to `admin`, nor from it; nor to
    /// one that could not hold its roles in its workspaces).
    pub async fn update_service_account(
        &self,
        id: &str,
        update: ServiceAccountUpdate,
    ) -> Result<ServiceAccountRecord, ServiceError> {
        let account = self.live_service_account(id).await?;
        let role = check_role(update.role.unwrap_or(account.role))?;
        for membership in self
            .tollgate()
            .store()
            .service_account_workspaces(&account.id)
            .await?
        {
            check_workspace_role(role, membership.role)?;
        }
        let description = match &update.description {
            Some(text) => description(text)?,
            None => account.description.clone(),
        };
        let audit = self.audit(
            "service_account.update",
            &account.id,
            format!("role={}", role.as_str()),
        );
        if !self
            .tollgate()
            .store()
            .update_service_account(&account.id, &description, role, self.tollgate().now(), audit)
            .await?
        {
            return Err(archived());
        }
        self.service_account(id).await
    }

    /// Archives an account for good, and with it every key bound to it. Archiving an
    /// archived account changes nothing and answers it as it is.
    pub async fn archive_service_account(&self, id: &str) -> Result<ServiceAccountRecord, ServiceError> {
        let account = self.service_account(id).await?;
        if account.archived_at.is_none() {
            let audit = self.audit(
                "service_account.archive",
                &account.id,
                format!("name={}", account.name),
            );
            self.tollgate()
                .store()
                .archive_service_account(&account.id, self.tollgate().now(), audit)
                .await?;
        }
        self.service_account(id).await
    }

    /// The live service accounts of a workspace with their role there.
    pub async fn workspace_service_accounts(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let live: Vec<String> = self
            .service_accounts(false)
            .await?
            .into_iter()
            .map(|account| account.id)
            .collect();
        Ok(self
            .tollgate()
            .store()
            .workspace_service_accounts(&workspace.id)
            .await?
            .into_iter()
            .filter(|membership| live.contains(&membership.service_account_id))
            .collect())
    }

    /// The workspaces of an account (archived or not) with its role in each.
    pub async fn service_account_workspaces(
        &self,
        service_account_id: &str,
    ) -> Result<Vec<ServiceAccountMembership>, ServiceError> {
        let account = self.service_account(service_account_id).await?;
        Ok(self
            .tollgate()
            .store()
            .service_account_workspaces(&account.id)
            .await?)
    }

    /// A live account's role in a workspace.
    pub async fn service_account_membership(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<ServiceAccountMembership, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let account = self.service_account(service_account_id).await?;
        match self
            .tollgate()
            .store()
            .service_account_membership(&account.id, &workspace.id)
            .await?
        {
            Some(membership) if account.archived_at.is_none() => Ok(membership),
            _ => Err(not_found("workspace service account", service_account_id)),
        }
    }

    /// Adds a live account to a live workspace, or replaces its role there.
    pub async fn set_service_account_membership(
        &self,
        workspace_id: &str,
        service_account_id: &str,
        role: WorkspaceRole,
    ) -> Result<ServiceAccountMembership, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        if workspace.archived_at.is_some() {
            return Err(ServiceError::Invalid("the workspace is archived".into()));
        }
        let account = self.live_service_account(service_account_id).await?;
        let role = check_workspace_role(account.role, role)?;
        let audit = self.audit(
            "service_account.workspace.set",
            &account.id,
            format!("workspace={} role={}", workspace.id, role.as_str()),
        );
        self.tollgate()
            .store()
            .set_service_account_membership(
                &ServiceAccountMembership {
                    service_account_id: account.id.clone(),
                    workspace_id: workspace.id.clone(),
                    role,
                    added_at: self.tollgate().now(),
                },
                audit,
            )
            .await?;
        self.service_account_membership(&workspace.id, &account.id).await
    }

    /// Removes an account from a workspace and archives its keys there.
    pub async fn remove_service_account_membership(
        &self,
        workspace_id: &str,
        service_account_id: &str,
    ) -> Result<(), ServiceError> {
        let membership = self
            .service_account_membership(workspace_id, service_account_id)
            .await?;
        let audit = self.audit(
            "service_account.workspace.remove",
            &membership.service_account_id,
            format!("workspace={}", membership.workspace_id),
        );
        if !self
            .tollgate()
            .store()
            .remove_service_account_membership(
                &membership.service_account_id,
                &membership.workspace_id,
                audit,
            )
            .await?
        {
            return Err(not_found("workspace service account", service_account_id));
        }
        Ok(())
    }

    /// Whether a key bound to the account may be in the workspace: the account is live and
    /// belongs to it. Asked before a key is made and again after it is written.
    pub(crate) async fn service_account_may_hold_key(
        &self,
        service_account_id: &str,
        workspace_id: &str,
    ) -> Result<bool, ServiceError> {
        let Some(account) = self
            .tollgate()
            .store()
            .service_account(service_account_id)
            .await?
        else {
            return Ok(false);
        };
        Ok(account.org_id == self.org_id()
            && account.archived_at.is_none()
            && self
                .tollgate()
                .store()
                .service_account_membership(service_account_id, workspace_id)
                .await?
                .is_some())
    }
}
