//! The Admin API's use cases, behind an organization-scoped handle: `OrgAdmin` is handed
//! out only for a valid admin key (or to the operator's command line), and every method on
//! it acts inside that one organization. An object of another organization is "not found",
//! exactly as an unknown id, so nothing of one tenant is visible or changeable from another.
//!
//! Workspaces (create, rename, archive, with the Default workspace hidden), API keys
//! (listing with filters, renaming, status, creation with the secret returned once), and
//! the billing use cases of `credits`, `billing` and `limits` scoped to the organization.

use tollgate_core::ids::{IdKind, is_well_formed};
use tollgate_core::keys::{AllowedModels, KeyKind, WellFormedKey};
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_store::{CreatedBy, KeyView, NewKey, WorkspaceRejection};

use crate::billing::{PurchaseRequest, TierStanding};
use crate::credits::Grant;
use crate::error::ServiceError;
use crate::keys::{AuthRefusal, check_presented};
use crate::limits::OrganizationLimits;
use crate::random;
use crate::{
    AuditEntry, AutoReload, BalanceView, KeyRecord, KeyStatus, LotView, Organization, Purchase, Tollgate,
    Workspace, WorkspaceLimits,
};

/// At most this many active workspaces per organization, besides the Default one.
pub const MAX_ACTIVE_WORKSPACES: usize = 100;

/// Authority over one organization: what a valid admin key (or the operator) may do.
#[derive(Clone)]
pub struct OrgAdmin {
    tollgate: Tollgate,
    org_id: String,
    /// Who the audit log names for changes made through this handle.
    actor: String,
    /// Who created the keys created through this handle.
    creator: CreatedBy,
}

impl std::fmt::Debug for OrgAdmin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OrgAdmin")
            .field("org_id", &self.org_id)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// Filters of the API key list; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    /// `Some(None)`: keys of the Default workspace.
    pub workspace_id: Option<Option<String>>,
    pub status: Option<KeyStatus>,
    pub created_by_user_id: Option<String>,
    /// Personal keys of this user.
    pub user_id: Option<String>,
    /// Keys bound to this service account.
    pub service_account_id: Option<String>,
    /// Only keys past their `expires_at`.
    pub expired: bool,
}

/// An API key an admin asks for.
#[derive(Clone, Debug, Default)]
pub struct NewApiKey {
    pub name: String,
    /// `None`: the Default workspace.
    pub workspace_id: Option<String>,
    /// When the key stops working, which must be in the future; `None`: never.
    pub expires_at: Option<tollgate_core::Timestamp>,
    /// The user of the organization a personal key is bound to; `None`: a workspace key.
    pub user_id: Option<String>,
    /// The service account the key is bound to, which must belong to the key's workspace;
    /// never together with `user_id`.
    pub service_account_id: Option<String>,
    pub allowed_models: AllowedModels,
}

/// An API key just created by an admin: the only time its secret is shown.
pub struct CreatedApiKey {
    pub secret: WellFormedKey,
    pub key: KeyView,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Changes to an API key; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub status: Option<KeyStatus>,
    pub allowed_models: Option<AllowedModels>,
}

fn not_found(what: &str, id: &str) -> ServiceError {
    ServiceError::NotFound(format!("{what} '{id}' was not found"))
}

fn not_a_member(service_account_id: &str) -> ServiceError {
    ServiceError::Invalid(format!(
        "the service account '{service_account_id}' does not belong to the key's workspace"
    ))
}

impl From<WorkspaceRejection> for ServiceError {
    fn from(rejection: WorkspaceRejection) -> ServiceError {
        match rejection {
            WorkspaceRejection::Unknown => ServiceError::NotFound("the workspace was not found".into()),
            other => ServiceError::Invalid(other.to_string()),
        }
    }
}

impl Tollgate {
    /// Checks an admin key presented to the Admin API. Not cached: admin calls are rare,
    /// and a revoked admin key must stop at once.
    pub async fn authenticate_admin_key(&self, presented: Option<&str>) -> Result<OrgAdmin, AuthRefusal> {
        let record = check_presented(presented, KeyKind::Admin, self.now(), |key| async move {
            self.store().key_by_hash(&key.hash()).await
        })
        .await?;
        let due = record
            .last_used_at
            .is_none_or(|last_used| (self.now() - last_used).num_seconds() >= 60);
        if due {
            self.store().touch_key(&record.id, self.now()).await?;
        }
        Ok(OrgAdmin {
            tollgate: self.clone(),
            org_id: record.org_id,
            actor: format!("admin_key:{}", record.id),
            creator: CreatedBy::AdminKey(record.id),
        })
    }

    /// A Console user's authority over their own organization; what they may use it for is
    /// `ConsoleUser::authority`'s check.
    pub(crate) fn admin_for_user(&self, user: &tollgate_store::UserRecord) -> OrgAdmin {
        OrgAdmin {
            tollgate: self.clone(),
            org_id: user.org_id.clone(),
            actor: format!("user:{}", user.id),
            creator: CreatedBy::User(user.id.clone()),
        }
    }

    /// The operator's authority over an organization, for the command line on the server
    /// itself (which holds the database and needs no key).
    pub fn operator_of(&self, organization: &Organization, actor: &str) -> OrgAdmin {
        OrgAdmin {
            tollgate: self.clone(),
            org_id: organization.id.clone(),
            actor: actor.to_owned(),
            creator: CreatedBy::System(actor.to_owned()),
        }
    }
}

impl OrgAdmin {
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn tollgate(&self) -> &Tollgate {
        &self.tollgate
    }

    pub(crate) fn audit(&self, action: &str, subject: &str, details: String) -> AuditEntry {
        self.tollgate
            .audit_entry(&self.org_id, &self.actor, action, subject, details, None)
    }

    pub async fn organization(&self) -> Result<Organization, ServiceError> {
        self.tollgate
            .store()
            .organization(&self.org_id)
            .await?
            .ok_or_else(|| not_found("organization", &self.org_id))
    }

    /// The id of the organization's Default workspace, which the API shows as `null`.
    pub async fn default_workspace_id(&self) -> Result<String, ServiceError> {
        Ok(self.tollgate.store().default_workspace(&self.org_id).await?.id)
    }

    // Workspaces.

    /// The organization's workspaces other than the Default one, oldest first.
    pub async fn workspaces(&self, include_archived: bool) -> Result<Vec<Workspace>, ServiceError> {
        Ok(self
            .tollgate
            .store()
            .list_workspaces(&self.org_id)
            .await?
            .into_iter()
            .filter(|workspace| !workspace.is_default)
            .filter(|workspace| include_archived || workspace.archived_at.is_none())
            .collect())
    }

    /// A workspace of this organization. The Default workspace has no public id, so it is
    /// not found either.
    pub async fn workspace(&self, workspace_id: &str) -> Result<Workspace, ServiceError> {
        if !is_well_formed(IdKind::Workspace, workspace_id) {
            return Err(not_found("workspace", workspace_id));
        }
        match self.tollgate.store().workspace(workspace_id).await? {
            Some(workspace) if workspace.org_id == self.org_id && !workspace.is_default => Ok(workspace),
            _ => Err(not_found("workspace", workspace_id)),
        }
    }

    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, ServiceError> {
        let name = workspace_name(name)?;
        Ok(self
            .tollgate
            .store()
            .create_workspace_capped(
                &self.org_id,
                &random::id(IdKind::Workspace),
                &name,
                self.tollgate.now(),
                MAX_ACTIVE_WORKSPACES,
            )
            .await?)
    }

    pub async fn rename_workspace(&self, workspace_id: &str, name: &str) -> Result<Workspace, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let name = workspace_name(name)?;
        Ok(self
            .tollgate
            .store()
            .rename_workspace(&workspace.id, &name)
            .await?)
    }

    /// Archives the workspace for good and archives its keys; usage history stays.
    pub async fn archive_workspace(&self, workspace_id: &str) -> Result<Workspace, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        let audit = self.audit(
            "workspace.archived",
            &workspace.id,
            format!("workspace '{}' archived with its keys", workspace.name),
        );
        let (archived, _) = self
            .tollgate
            .store()
            .archive_workspace(&workspace.id, self.tollgate.now(), audit)
            .await?;
        Ok(archived)
    }

    // API keys.

    /// The organization's API keys, newest first, filtered.
    pub async fn api_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyView>, ServiceError> {
        let default_workspace = self.default_workspace_id().await?;
        let now = self.tollgate.now();
        let keys = self
            .tollgate
            .store()
            .key_views(&self.org_id, KeyKind::Api)
            .await?;
        Ok(keys
            .into_iter()
            .filter(|key| match &filter.workspace_id {
                None => true,
                Some(None) => key.record.workspace_id.as_deref() == Some(default_workspace.as_str()),
                Some(Some(workspace_id)) => key.record.workspace_id.as_deref() == Some(workspace_id.as_str()),
            })
            .filter(|key| filter.status.is_none_or(|status| key.record.status == status))
            .filter(|key| match &filter.created_by_user_id {
                None => true,
                Some(user_id) => key.created_by == CreatedBy::User(user_id.clone()),
            })
            .filter(|key| filter.user_id.is_none() || key.record.user_id == filter.user_id)
            .filter(|key| {
                filter.service_account_id.is_none()
                    || key.record.service_account_id == filter.service_account_id
            })
            .filter(|key| {
                !filter.expired || key.record.expires_at.is_some_and(|expires_at| expires_at <= now)
            })
            .collect())
    }

    pub async fn api_key(&self, key_id: &str) -> Result<KeyView, ServiceError> {
        if !is_well_formed(IdKind::ApiKey, key_id) {
            return Err(not_found("API key", key_id));
        }
        match self.tollgate.store().key_view(key_id).await? {
            Some(key) if key.record.org_id == self.org_id && key.record.kind == KeyKind::Api => Ok(key),
            _ => Err(not_found("API key", key_id)),
        }
    }

    /// Creates an API key in its workspace (the Default one when `None`): a personal key
    /// when it names a user of this organization, a service account's when it names one
    /// that belongs to the workspace. Moves no money.
    pub async fn create_api_key(&self, request: NewApiKey) -> Result<CreatedApiKey, ServiceError> {
        let NewApiKey {
            name,
            workspace_id,
            expires_at,
            user_id,
            service_account_id,
            allowed_models,
        } = request;
        if user_id.is_some() && service_account_id.is_some() {
            return Err(ServiceError::Invalid(
                "a key is bound to a user or to a service account, not both".into(),
            ));
        }
        if expires_at.is_some_and(|expires_at| expires_at <= self.tollgate.now()) {
            return Err(ServiceError::Invalid("expires_at must be in the future".into()));
        }
        let user_id = match user_id {
            Some(user_id) => Some(self.user(&user_id).await?.id),
            None => None,
        };
        let workspace_id = match workspace_id.as_deref() {
            Some(workspace_id) => {
                let workspace = self.workspace(workspace_id).await?;
                if workspace.archived_at.is_some() {
                    return Err(ServiceError::Invalid(
                        "the workspace is archived: no keys can be created in it".into(),
                    ));
                }
                workspace.id
            }
            None => self.default_workspace_id().await?,
        };
        let service_account_id = match service_account_id {
            Some(service_account_id) => {
                let account = self.live_service_account(&service_account_id).await?;
                if !self
                    .service_account_may_hold_key(&account.id, &workspace_id)
                    .await?
                {
                    return Err(not_a_member(&account.id));
                }
                Some(account.id)
            }
            None => None,
        };
        let name = key_name(&name)?;
        let secret = random::key(KeyKind::Api);
        let key = self
            .tollgate
            .store()
            .insert_key_by(
                NewKey {
                    id: random::id(IdKind::ApiKey),
                    kind: KeyKind::Api,
                    org_id: self.org_id.clone(),
                    workspace_id: Some(workspace_id.clone()),
                    name,
                    secret_hash: secret.hash(),
                    hint: secret.hint(),
                    created_at: self.tollgate.now(),
                    expires_at,
                    user_id,
                    service_account_id: service_account_id.clone(),
                    allowed_models,
                },
                &self.creator,
            )
            .await?;
        // The account may have been archived, or have left the workspace, while the key was
        // written: such a key must not work, so it is archived at once. Together with the
        // store's sweep after such a change, no key outlives its account's membership.
        if let Some(service_account_id) = &service_account_id
            && !self
                .service_account_may_hold_key(service_account_id, &workspace_id)
                .await?
        {
            self.tollgate
                .set_key_status(&key.record.id, KeyStatus::Archived)
                .await?;
            return Err(not_a_member(service_account_id));
        }
        Ok(CreatedApiKey { secret, key })
    }

    /// Renames a key and/or changes its status. An archived key stays archived, and a key
    /// of an archived workspace can't be reactivated.
    pub async fn update_api_key(&self, key_id: &str, update: KeyUpdate) -> Result<KeyView, ServiceError> {
        let key = self.api_key(key_id).await?;
        let name = update.name.as_deref().map(key_name).transpose()?;
        if let Some(status) = update.status
            && status != key.record.status
        {
            if key.record.status == KeyStatus::Archived {
                return Err(ServiceError::Invalid("an archived key cannot be changed".into()));
            }
            if status == KeyStatus::Active
                && let Some(workspace_id) = &key.record.workspace_id
                && let Some(workspace) = self.tollgate.store().workspace(workspace_id).await?
                && workspace.archived_at.is_some()
            {
                return Err(ServiceError::Invalid(
                    "the key's workspace is archived: the key cannot be reactivated".into(),
                ));
            }
        }
        if let Some(name) = &name {
            self.tollgate.store().rename_key(&key.record.id, name).await?;
        }
        if let Some(allowed_models) = &update.allowed_models {
            self.tollgate
                .store()
                .set_key_allowed_models(&key.record.id, allowed_models)
                .await?;
        }
        if let Some(status) = update.status
            && status != key.record.status
        {
            self.tollgate.set_key_status(&key.record.id, status).await?;
        }
        self.api_key(key_id).await
    }

    // Credit, tiers, limits, auto-reload and the audit log of this organization.

    pub async fn balance(&self) -> Result<BalanceView, ServiceError> {
        self.tollgate.balance(&self.org_id).await
    }

    pub async fn lots(&self) -> Result<Vec<LotView>, ServiceError> {
        self.tollgate.lots(&self.org_id).await
    }

    pub async fn purchases(&self) -> Result<Vec<Purchase>, ServiceError> {
        self.tollgate.purchases(&self.org_id).await
    }

    /// One purchase of this organization with what its receipt shows (another
    /// organization's purchase reads as not found).
    pub async fn receipt(&self, purchase_id: &str) -> Result<crate::Receipt, ServiceError> {
        self.tollgate.receipt(&self.org_id, purchase_id).await
    }

    /// Starts a purchase on Stripe's Checkout page; credit comes with Stripe's event.
    pub async fn start_checkout(
        &self,
        amount: NanoUsd,
        idempotency_key: &str,
        return_url: &str,
    ) -> Result<crate::CheckoutStart, ServiceError> {
        self.tollgate
            .start_checkout(&self.org_id, amount, idempotency_key, return_url)
            .await
    }

    /// The Stripe customer and the card saved for auto-reload, if any.
    pub async fn payment_customer(&self) -> Result<Option<tollgate_store::PaymentCustomer>, ServiceError> {
        self.tollgate.payment_customer(&self.org_id).await
    }

    pub async fn purchase(
        &self,
        amount: NanoUsd,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Purchase, ServiceError> {
        self.tollgate
            .purchase(PurchaseRequest {
                org_id: &self.org_id,
                amount,
                payment_method,
                idempotency_key,
                actor: &self.actor,
            })
            .await
    }

    /// Grants a credit lot (operators' promotional and starter credit; purchases go through
    /// `purchase`).
    pub async fn grant(
        &self,
        kind: LotKind,
        amount: NanoUsd,
        expires_at: Option<tollgate_core::Timestamp>,
        memo: &str,
        programme: Option<&str>,
    ) -> Result<LotView, ServiceError> {
        self.tollgate
            .grant(Grant {
                org_id: &self.org_id,
                kind,
                amount,
                expires_at,
                memo,
                programme,
                actor: &self.actor,
            })
            .await
    }

    pub async fn tier_standing(&self) -> Result<TierStanding, ServiceError> {
        self.tollgate.tier_standing(&self.org_id).await
    }

    pub async fn limits(&self) -> Result<std::sync::Arc<OrganizationLimits>, ServiceError> {
        self.tollgate.organization_limits(&self.org_id).await
    }

    /// This month's spend (settled and reserved) of the organization or of one workspace.
    pub async fn month_spend(&self, workspace_id: Option<&str>) -> Result<NanoUsd, ServiceError> {
        if let Some(workspace_id) = workspace_id {
            self.workspace(workspace_id).await?;
        }
        self.tollgate.month_spend(&self.org_id, workspace_id).await
    }

    pub async fn set_spend_limit(&self, limit: Option<NanoUsd>) -> Result<(), ServiceError> {
        self.tollgate
            .set_organization_spend_limit(&self.org_id, limit, &self.actor, None)
            .await
    }

    pub async fn set_limit_set(&self, limit_set: Option<&str>) -> Result<(), ServiceError> {
        self.tollgate
            .set_organization_limit_set(&self.org_id, limit_set, &self.actor, None)
            .await
    }

    pub async fn workspace_limits(&self, workspace_id: &str) -> Result<WorkspaceLimits, ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        Ok(self.tollgate.store().workspace_limits(&workspace.id).await?)
    }

    pub async fn set_workspace_limits(
        &self,
        workspace_id: &str,
        limits: WorkspaceLimits,
    ) -> Result<(), ServiceError> {
        let workspace = self.workspace(workspace_id).await?;
        self.tollgate
            .set_workspace_limits(&workspace.id, limits, &self.actor, None)
            .await
    }

    pub async fn auto_reload(&self) -> Result<Option<AutoReload>, ServiceError> {
        self.tollgate.auto_reload(&self.org_id).await
    }

    pub async fn set_auto_reload(
        &self,
        threshold: NanoUsd,
        amount: NanoUsd,
        payment_method: &str,
    ) -> Result<(), ServiceError> {
        self.tollgate
            .set_auto_reload(&self.org_id, threshold, amount, payment_method, &self.actor)
            .await
    }

    pub async fn disable_auto_reload(&self) -> Result<(), ServiceError> {
        self.tollgate.disable_auto_reload(&self.org_id, &self.actor).await
    }

    /// The organization's audit log, oldest first.
    pub async fn audit_events(&self) -> Result<Vec<AuditEntry>, ServiceError> {
        self.tollgate.audit_events(&self.org_id).await
    }

    /// The key records of the organization (API and admin), for the command line.
    pub async fn key_records(&self, kind: KeyKind) -> Result<Vec<KeyRecord>, ServiceError> {
        self.tollgate.keys(&self.org_id, kind, None).await
    }
}

fn workspace_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 40 {
        return Err(ServiceError::Invalid(
            "a workspace name has 1 to 40 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn key_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 500 {
        return Err(ServiceError::Invalid("a key name has 1 to 500 characters".into()));
    }
    Ok(name.to_owned())
}
