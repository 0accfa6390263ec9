//! The limits in force for an organization and its workspaces: tier (or custom limit set)
//! with programme uplifts, the organization's own spend limit, and workspace limits (its
//! own, and the one it sets on each of its users) that may only lower the organization's.
//! Read on every request, so cached for the key-cache TTL: a change takes effect everywhere
//! within it. Setting a limit validates it here,
//! with the rules in `tollgate_core::spend` and `tollgate_core::tiers`.
//!
//! Also the memory of prompt prefixes recently cached upstream, per organization and model
//! (`tollgate_core::ratelimit::prompt_cache`), which lets admission take the input expected
//! from the cache on credit. It is per process: a replica that has not seen a prefix takes
//! the whole estimate, as before, and settlement makes every bucket exact either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::ratelimit::prompt_cache::{CacheablePrefixes, PrefixMemory};
use tollgate_core::spend::{
    SpendLimits, validate_organization_limit, validate_user_limit, validate_workspace_limit,
};
use tollgate_core::tiers::{LimitSet, RateLimits};
use tollgate_store::{AuditEntry, AutoReload, OrganizationBilling, RateLimitOverrides, WorkspaceLimits};

use crate::Tollgate;
use crate::capture::{CachedPolicy, CapturePolicy};
use crate::error::ServiceError;
use crate::keys::ApiCaller;

/// An organization's limits as they apply now.
#[derive(Clone, Debug)]
pub struct OrganizationLimits {
    pub billing: OrganizationBilling,
    /// The tier the organization's purchases reach (shown even under a custom set).
    pub tier_name: String,
    /// Tier or custom set, uplifted by active programmes.
    pub limits: LimitSet,
    /// Auto-reload settings, so the hot path knows without a read whether to check.
    pub auto_reload: Option<AutoReload>,
}

impl OrganizationLimits {
    /// The monthly cap of the tier or limit set; `None` is no cap.
    pub fn tier_cap(&self) -> Option<NanoUsd> {
        self.limits.monthly_spend_limit
    }

    pub fn rate_limits(&self, class: &str) -> Option<RateLimits> {
        self.limits.rate_limits.get(class).copied()
    }
}

/// The monthly spend limits a caller's request is held to: the tier's cap, the
/// organization's and the workspace's own limits, and the workspace's per-user limit when
/// the key is a user's (no user, no per-user limit).
pub(crate) fn spend_limits_of(
    caller: &ApiCaller,
    organization: &OrganizationLimits,
    workspace: &WorkspaceLimits,
) -> SpendLimits {
    SpendLimits {
        tier: organization.tier_cap(),
        organization: organization.billing.spend_limit,
        workspace: workspace.spend_limit,
        user: caller.user_id.as_ref().and(workspace.user_spend_limit),
    }
}

/// A workspace's limits resolved against its organization's: never above them.
pub fn workspace_rate_limits(organization: RateLimits, overrides: &RateLimitOverrides) -> RateLimits {
    organization.min(RateLimits {
        requests_per_minute: overrides.requests_per_minute.unwrap_or(u64::MAX),
        input_tokens_per_minute: overrides.input_tokens_per_minute.unwrap_or(u64::MAX),
        output_tokens_per_minute: overrides.output_tokens_per_minute.unwrap_or(u64::MAX),
    })
}

#[derive(Default)]
pub(crate) struct LimitsCache {
    organizations: RwLock<HashMap<String, (Timestamp, Arc<OrganizationLimits>)>>,
    workspaces: RwLock<HashMap<String, (Timestamp, Arc<WorkspaceLimits>)>>,
    /// Each workspace's capture policy (`capture.rs`); `None` captures nothing.
    captures: RwLock<HashMap<String, (Timestamp, Arc<CachedPolicy>)>>,
    /// Prompt prefixes cached upstream, keyed by [`prompt_cache_scope`].
    prompt_prefixes: Mutex<PrefixMemory>,
}

/// The scope of a prompt cache: an upstream caches per model, and tollgate predicts per
/// organization (what another organization cached is never counted on).
pub(crate) fn prompt_cache_scope(org_id: &str, model: &str) -> String {
    format!("{org_id}\u{0}{model}")
}

impl LimitsCache {
    /// The input tokens `prefixes` is expected to read from the upstream's cache.
    pub(crate) fn cache_read_expected(
        &self,
        scope: &str,
        prefixes: &CacheablePrefixes,
        now: Timestamp,
    ) -> u64 {
        if prefixes.is_empty() {
            return 0;
        }
        let Some(now_nanos) = now.timestamp_nanos_opt() else {
            return 0;
        };
        self.prompt_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cache_read_expected(scope, prefixes, now_nanos)
    }

    /// Records that the upstream reported caching for a request with `prefixes`.
    pub(crate) fn remember_cached(&self, scope: &str, prefixes: &CacheablePrefixes, now: Timestamp) {
        let Some(now_nanos) = now.timestamp_nanos_opt() else {
            return;
        };
        if prefixes.is_empty() {
            return;
        }
        self.prompt_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(scope, prefixes, now_nanos);
    }

    /// Drops the workspace's cached capture policy: its change takes effect at once here.
    pub(crate) fn forget_capture(&self, workspace_id: &str) {
        self.captures
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(workspace_id);
    }

    /// Drops what this process cached for the organization: its own changes take effect at
    /// once here, and within the TTL elsewhere.
    pub(crate) fn forget_organization(&self, org_id: &str) {
        self.organizations
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(org_id);
    }
}

/// Entries kept at most; a full cache is cleared, which only costs a reload.
const LIMITS_CACHE_CAPACITY: usize = 100_000;

fn cached<T>(
    map: &RwLock<HashMap<String, (Timestamp, Arc<T>)>>,
    key: &str,
    now: Timestamp,
    ttl: chrono::Duration,
) -> Option<Arc<T>> {
    let entries = map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    entries
        .get(key)
        .filter(|(fetched_at, _)| now - *fetched_at < ttl)
        .map(|(_, value)| value.clone())
}

fn remember<T>(map: &RwLock<HashMap<String, (Timestamp, Arc<T>)>>, key: &str, now: Timestamp, value: Arc<T>) {
    let mut entries = map.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    if entries.len() >= LIMITS_CACHE_CAPACITY {
        entries.clear();
    }
    entries.insert(key.to_owned(), (now, value));
}

impl Tollgate {
    /// The organization's limits now (cached for the key-cache TTL).
    pub async fn organization_limits(&self, org_id: &str) -> Result<Arc<OrganizationLimits>, ServiceError> {
        let now = self.now();
        let ttl = self.settings().key_cache_ttl;
        if let Some(limits) = cached(&self.inner.limits_cache.organizations, org_id, now, ttl) {
            return Ok(limits);
        }
        let _loading = self.inner.loads.lock(org_id).await;
        let now = self.now();
        if let Some(limits) = cached(&self.inner.limits_cache.organizations, org_id, now, ttl) {
            return Ok(limits);
        }
        let limits = Arc::new(self.load_organization_limits(org_id, now).await?);
        remember(
            &self.inner.limits_cache.organizations,
            org_id,
            now,
            limits.clone(),
        );
        Ok(limits)
    }

    async fn load_organization_limits(
        &self,
        org_id: &str,
        now: Timestamp,
    ) -> Result<OrganizationLimits, ServiceError> {
        let billing = self
            .store()
            .organization_billing(org_id, now)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no organization has the id '{org_id}'")))?;
        let policy = &self.settings().policy;
        let tier_name = policy
            .ladder
            .tier_for(billing.cumulative_purchases)
            .limits
            .name
            .clone();
        let limits = policy.effective_limits(
            billing.cumulative_purchases,
            billing.limit_set.as_deref(),
            &billing.active_programmes,
        );
        let auto_reload = self.store().auto_reload(org_id).await?;
        Ok(OrganizationLimits {
            billing,
            tier_name,
            limits,
            auto_reload,
        })
    }

    /// A workspace's own limits (cached for the key-cache TTL).
    pub async fn workspace_limits(&self, workspace_id: &str) -> Result<Arc<WorkspaceLimits>, ServiceError> {
        let now = self.now();
        let ttl = self.settings().key_cache_ttl;
        if let Some(limits) = cached(&self.inner.limits_cache.workspaces, workspace_id, now, ttl) {
            return Ok(limits);
        }
        let _loading = self.inner.loads.lock(workspace_id).await;
        let now = self.now();
        if let Some(limits) = cached(&self.inner.limits_cache.workspaces, workspace_id, now, ttl) {
            return Ok(limits);
        }
        let limits = Arc::new(self.store().workspace_limits(workspace_id).await?);
        remember(
            &self.inner.limits_cache.workspaces,
            workspace_id,
            now,
            limits.clone(),
        );
        Ok(limits)
    }

    /// A workspace's capture policy (cached for the key-cache TTL).
    pub(crate) async fn cached_capture_policy(
        &self,
        workspace_id: &str,
    ) -> Result<Option<Arc<CapturePolicy>>, ServiceError> {
        let now = self.now();
        let ttl = self.settings().key_cache_ttl;
        if let Some(policy) = cached(&self.inner.limits_cache.captures, workspace_id, now, ttl) {
            return Ok(policy.as_ref().clone());
        }
        let _loading = self.inner.loads.lock(workspace_id).await;
        let now = self.now();
        if let Some(policy) = cached(&self.inner.limits_cache.captures, workspace_id, now, ttl) {
            return Ok(policy.as_ref().clone());
        }
        // Settings the store holds were checked when they were set; a path that no longer
        // reads (never expected) turns capture off rather than writing unredacted bodies.
        let policy = match self.store().capture_settings(workspace_id).await? {
            Some(settings) => match CapturePolicy::new(settings) {
                Ok(policy) => Some(Arc::new(policy)),
                Err(error) => {
                    tracing::error!(
                        error,
                        workspace_id,
                        "stored capture settings do not read; not capturing"
                    );
                    None
                }
            },
            None => None,
        };
        remember(
            &self.inner.limits_cache.captures,
            workspace_id,
            now,
            Arc::new(policy.clone()),
        );
        Ok(policy)
    }

    fn forget_limits(&self, org_id: &str, workspace_id: Option<&str>) {
        self.inner.limits_cache.forget_organization(org_id);
        if let Some(workspace_id) = workspace_id {
            self.inner
                .limits_cache
                .workspaces
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(workspace_id);
        }
    }

    /// Spend this calendar month (settled and reserved): the organization's, or one
    /// workspace's.
    pub async fn month_spend(
        &self,
        org_id: &str,
        workspace_id: Option<&str>,
    ) -> Result<NanoUsd, ServiceError> {
        let workspace = match workspace_id {
            Some(workspace_id) => workspace_id.to_owned(),
            None => self.store().default_workspace(org_id).await?.id,
        };
        let spend = self.store().month_spend(org_id, &workspace, self.now()).await?;
        Ok(if workspace_id.is_some() {
            spend.workspace
        } else {
            spend.organization
        })
    }

    pub async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, ServiceError> {
        Ok(self.store().audit_events(org_id).await?)
    }

    pub(crate) fn audit_entry(
        &self,
        org_id: &str,
        actor: &str,
        action: &str,
        subject: &str,
        details: String,
        reason: Option<&str>,
    ) -> AuditEntry {
        AuditEntry {
            org_id: org_id.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            details,
            reason: reason.map(str::to_owned),
            at: self.now(),
        }
    }

    /// Sets (or with `None` clears) the organization's own monthly spend limit, which may not
    /// exceed its tier's cap.
    pub async fn set_organization_spend_limit(
        &self,
        org_id: &str,
        limit: Option<NanoUsd>,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        let current = self.load_organization_limits(org_id, self.now()).await?;
        if let Some(limit) = limit {
            validate_organization_limit(limit, current.tier_cap())
                .map_err(|error| ServiceError::Invalid(error.to_string()))?;
        }
        let details = match limit {
            Some(limit) => format!("organization monthly spend limit set to {limit}"),
            None => "organization monthly spend limit cleared".to_owned(),
        };
        let audit = self.audit_entry(
            org_id,
            actor,
            "limits.organization_spend_limit",
            org_id,
            details,
            reason,
        );
        self.store()
            .set_organization_spend_limit(org_id, limit, audit)
            .await?;
        self.forget_limits(org_id, None);
        Ok(())
    }

    /// Puts the organization on a custom limit set (an enterprise agreement), or with `None`
    /// back on the ladder.
    pub async fn set_organization_limit_set(
        &self,
        org_id: &str,
        limit_set: Option<&str>,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        if let Some(name) = limit_set
            && !self.settings().policy.limit_sets.contains_key(name)
        {
            let known: Vec<&str> = self
                .settings()
                .policy
                .limit_sets
                .keys()
                .map(String::as_str)
                .collect();
            return Err(ServiceError::Invalid(format!(
                "no limit set is named '{name}' (configured: {})",
                known.join(", ")
            )));
        }
        let details = match limit_set {
            Some(name) => format!("limit set '{name}' assigned"),
            None => "back on the tier ladder".to_owned(),
        };
        let audit = self.audit_entry(org_id, actor, "limits.limit_set", org_id, details, reason);
        if !self
            .store()
            .set_organization_limit_set(org_id, limit_set, audit)
            .await?
        {
            return Err(ServiceError::NotFound(format!(
                "no organization has the id '{org_id}'"
            )));
        }
        self.forget_limits(org_id, None);
        Ok(())
    }

    /// Replaces a workspace's limits. Each may only be lower than the organization's:
    /// "Your spend limit cannot exceed your current tier's cap".
    pub async fn set_workspace_limits(
        &self,
        workspace_id: &str,
        limits: WorkspaceLimits,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        let workspace = self
            .store()
            .workspace(workspace_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no workspace has the id '{workspace_id}'")))?;
        if workspace.is_default {
            return Err(ServiceError::Invalid(
                "the Default workspace takes no limits of its own".into(),
            ));
        }
        let organization = self
            .load_organization_limits(&workspace.org_id, self.now())
            .await?;
        if let Some(limit) = limits.spend_limit {
            validate_workspace_limit(limit, organization.billing.spend_limit, organization.tier_cap())
                .map_err(|error| ServiceError::Invalid(error.to_string()))?;
        }
        if let Some(limit) = limits.user_spend_limit {
            validate_user_limit(
                limit,
                limits.spend_limit,
                organization.billing.spend_limit,
                organization.tier_cap(),
            )
            .map_err(|error| ServiceError::Invalid(error.to_string()))?;
        }
        for (class, overrides) in &limits.rate_limits {
            let ceiling = organization.rate_limits(class).ok_or_else(|| {
                let known: Vec<&str> = organization
                    .limits
                    .rate_limits
                    .keys()
                    .map(String::as_str)
                    .collect();
                ServiceError::Invalid(format!(
                    "no model class is named '{class}' (known: {})",
                    known.join(", ")
                ))
            })?;
            let checks = [
                (
                    "requests per minute",
                    overrides.requests_per_minute,
                    ceiling.requests_per_minute,
                ),
                (
                    "input tokens per minute",
                    overrides.input_tokens_per_minute,
                    ceiling.input_tokens_per_minute,
                ),
                (
                    "output tokens per minute",
                    overrides.output_tokens_per_minute,
                    ceiling.output_tokens_per_minute,
                ),
            ];
            for (name, value, ceiling) in checks {
                match value {
                    Some(0) => return Err(ServiceError::Invalid(format!("{class} {name} must be positive"))),
                    Some(value) if value > ceiling => {
                        return Err(ServiceError::Invalid(format!(
                            "a workspace's {class} {name} ({value}) cannot exceed its organization's ({ceiling})"
                        )));
                    }
                    _ => {}
                }
            }
        }
        let details = describe_workspace_limits(&limits);
        let audit = self.audit_entry(
            &workspace.org_id,
            actor,
            "limits.workspace",
            workspace_id,
            details,
            reason,
        );
        self.store()
            .set_workspace_limits(workspace_id, &limits, audit)
            .await?;
        self.forget_limits(&workspace.org_id, Some(workspace_id));
        Ok(())
    }
}

fn describe_workspace_limits(limits: &WorkspaceLimits) -> String {
    let spend = limits.spend_limit.map_or("no spend limit".to_owned(), |limit| {
        format!("spend limit {limit}")
    });
    let per_user = limits
        .user_spend_limit
        .map_or("no per-user spend limit".to_owned(), |limit| {
            format!("per-user spend limit {limit}")
        });
    let rates: BTreeMap<&String, String> = limits
        .rate_limits
        .iter()
        .map(|(class, overrides)| {
            (
                class,
                format!(
                    "rpm {:?} itpm {:?} otpm {:?}",
                    overrides.requests_per_minute,
                    overrides.input_tokens_per_minute,
                    overrides.output_tokens_per_minute
                ),
            )
        })
        .collect();
    format!("{spend}; {per_user}; rate limits {rates:?}")
}
