//! Organizations and workspaces, and what a fresh installation gets on first start.

use tollgate_core::ids::IdKind;
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::LotKind;

use crate::credits::Grant;
use crate::error::ServiceError;
use crate::keys::CreatedKey;
use crate::random;
use crate::{Organization, Tollgate, Workspace};

/// What the first start created; secrets are shown once and never stored.
#[derive(Debug)]
pub struct FirstStart {
    pub organization: Organization,
    pub workspace: Workspace,
    pub admin_key: CreatedKey,
    pub api_key: CreatedKey,
}

pub(crate) const DEFAULT_NAME: &str = "Default";

impl Tollgate {
    /// Creates an organization with its Default workspace and its starter grant.
    pub async fn create_organization(&self, name: &str) -> Result<Organization, ServiceError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ServiceError::Invalid(
                "the organization name must not be empty".into(),
            ));
        }
        let now = self.now();
        let organization = self
            .store()
            .create_organization(
                &random::id(IdKind::Organization),
                name,
                &random::id(IdKind::Workspace),
                now,
            )
            .await?;
        let settings = self.settings();
        if settings.starter_grant.is_positive() {
            self.grant(Grant {
                org_id: &organization.id,
                kind: LotKind::Starter,
                amount: settings.starter_grant,
                expires_at: settings.starter_grant_lifetime.map(|lifetime| now + lifetime),
                memo: "starter grant",
                programme: None,
                actor: "system",
            })
            .await?;
        }
        Ok(organization)
    }

    /// Sets up the Default organization on an empty database; `None` when one exists.
    pub async fn first_start(&self) -> Result<Option<FirstStart>, ServiceError> {
        if !self.store().list_organizations().await?.is_empty() {
            return Ok(None);
        }
        let organization = match self.create_organization(DEFAULT_NAME).await {
            Ok(organization) => organization,
            // Another process set it up between our check and our insert.
            Err(ServiceError::Invalid(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let workspace = self.store().default_workspace(&organization.id).await?;
        let admin_key = self
            .create_key(KeyKind::Admin, &organization.id, None, "Default admin key")
            .await?;
        let api_key = self
            .create_key(
                KeyKind::Api,
                &organization.id,
                Some(&workspace.id),
                "Default API key",
            )
            .await?;
        Ok(Some(FirstStart {
            organization,
            workspace,
            admin_key,
            api_key,
        }))
    }

    pub async fn organization_named(&self, name: &str) -> Result<Organization, ServiceError> {
        self.store()
            .organization_by_name(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no organization is named '{name}'")))
    }

    pub async fn organizations(&self) -> Result<Vec<Organization>, ServiceError> {
        Ok(self.store().list_organizations().await?)
    }

    /// The workspace `name` of the organization; "Default" is its default workspace.
    pub async fn workspace_named(&self, org_id: &str, name: &str) -> Result<Workspace, ServiceError> {
        self.store()
            .workspace_by_name(org_id, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no workspace is named '{name}'")))
    }

    pub async fn workspaces(&self, org_id: &str) -> Result<Vec<Workspace>, ServiceError> {
        Ok(self.store().list_workspaces(org_id).await?)
    }

    pub async fn create_workspace(&self, org_id: &str, name: &str) -> Result<Workspace, ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 40 {
            return Err(ServiceError::Invalid(
                "a workspace name has 1 to 40 characters".into(),
            ));
        }
        Ok(self
            .store()
            .create_workspace(org_id, &random::id(IdKind::Workspace), name, self.now())
            .await?)
    }
}
