//! API and admin keys: creation (the secret is returned once), listing, revocation, and
//! authentication of a presented secret with a short-lived cache, so that the hot path
//! costs a hash and a map lookup while a revocation still takes effect within the TTL.

use std::collections::HashMap;
use std::sync::RwLock;

use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::keys::{AllowedModels, KeyFormatError, KeyKind, WellFormedKey};
use tollgate_store::{NewKey, StoreError};

use crate::error::ServiceError;
use crate::random;
use crate::{KeyRecord, KeyStatus, Tollgate};

/// A key just created: the only time its secret exists outside the client.
pub struct CreatedKey {
    pub secret: WellFormedKey,
    pub record: KeyRecord,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreatedKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Who is calling the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCaller {
    pub key_id: String,
    pub org_id: String,
    pub workspace_id: String,
    /// The user a personal key is bound to: the workspace's per-user spend limit binds
    /// their requests. `None` for workspace and service-account keys.
    pub user_id: Option<String>,
    /// The models the key may call (`AllowedModels::allows`, asked by the gateway once the
    /// request's model is resolved).
    pub allowed_models: AllowedModels,
}

impl ApiCaller {
    /// A caller the control plane vouches for, or one a batch was created by (whose models
    /// were checked when the batch was created): any model.
    pub fn of_key(key_id: &str, org_id: &str, workspace_id: &str) -> ApiCaller {
        ApiCaller {
            key_id: key_id.to_owned(),
            org_id: org_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            user_id: None,
            allowed_models: AllowedModels::all(),
        }
    }
}

/// Why a presented credential is not accepted, on either plane.
#[derive(Debug, thiserror::Error)]
pub enum AuthRefusal {
    #[error("no key was given")]
    Missing,
    #[error("the key is malformed: {0}")]
    Malformed(KeyFormatError),
    #[error("the key is not known")]
    Unknown,
    #[error("the key is {0}")]
    NotActive(&'static str),
    /// A valid key of the other kind: API keys call the data plane, admin keys the Admin
    /// API, never the other way round. Carries the kind that was presented.
    #[error("a {} key cannot call this endpoint", .0.as_str())]
    WrongKind(KeyKind),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The steps every credential check shares: present and well formed (checked before any
/// lookup), then known, of the `expected` kind, active, and not expired at `now` (checked
/// on the record, cached or not, so a key stops at its expiry, not a cache period later).
pub(crate) async fn check_presented<F, Fut>(
    presented: Option<&str>,
    expected: KeyKind,
    now: Timestamp,
    lookup: F,
) -> Result<KeyRecord, AuthRefusal>
where
    F: FnOnce(WellFormedKey) -> Fut,
    Fut: std::future::Future<Output = Result<Option<KeyRecord>, StoreError>>,
{
    let presented = presented.map(str::trim).filter(|secret| !secret.is_empty());
    let key = WellFormedKey::parse(presented.ok_or(AuthRefusal::Missing)?).map_err(AuthRefusal::Malformed)?;
    let record = lookup(key).await?.ok_or(AuthRefusal::Unknown)?;
    check_record(record, expected, now)
}

/// A known key's record: of the `expected` kind, active, and not expired at `now`.
pub(crate) fn check_record(
    record: KeyRecord,
    expected: KeyKind,
    now: Timestamp,
) -> Result<KeyRecord, AuthRefusal> {
    if record.kind != expected {
        return Err(AuthRefusal::WrongKind(record.kind));
    }
    if record.status != KeyStatus::Active {
        return Err(AuthRefusal::NotActive(record.status.as_str()));
    }
    if record.expires_at.is_some_and(|expires_at| expires_at <= now) {
        return Err(AuthRefusal::NotActive("expired"));
    }
    Ok(record)
}

/// Lookups by secret hash, each with when it was fetched and when `last_used_at` was last
/// written (written at most once a minute per key, to keep writes off the hot path).
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<String, CacheEntry>>,
}

#[derive(Clone)]
struct CacheEntry {
    record: Option<KeyRecord>,
    fetched_at: Timestamp,
    touched_at: Option<Timestamp>,
}

const TOUCH_INTERVAL_SECONDS: i64 = 60;
/// Bound on cached lookups, so a flood of random well-formed keys cannot grow memory.
const KEY_CACHE_CAPACITY: usize = 100_000;

impl Tollgate {
    pub async fn create_key(
        &self,
        kind: KeyKind,
        org_id: &str,
        workspace_id: Option<&str>,
        name: &str,
    ) -> Result<CreatedKey, ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 500 {
            return Err(ServiceError::Invalid("a key name has 1 to 500 characters".into()));
        }
        if kind == KeyKind::Api && workspace_id.is_none() {
            return Err(ServiceError::Invalid("an API key belongs to a workspace".into()));
        }
        let secret = random::key(kind);
        let record = self
            .store()
            .insert_key(NewKey {
                id: random::id(IdKind::ApiKey),
                kind,
                org_id: org_id.to_owned(),
                workspace_id: workspace_id.map(str::to_owned),
                name: name.to_owned(),
                secret_hash: secret.hash(),
                hint: secret.hint(),
                created_at: self.now(),
                expires_at: None,
                user_id: None,
                service_account_id: None,
                allowed_models: AllowedModels::all(),
            })
            .await?;
        Ok(CreatedKey { secret, record })
    }

    pub async fn keys(
        &self,
        org_id: &str,
        kind: KeyKind,
        workspace_id: Option<&str>,
    ) -> Result<Vec<KeyRecord>, ServiceError> {
        Ok(self.store().list_keys(org_id, kind, workspace_id).await?)
    }

    pub async fn set_key_status(&self, key_id: &str, status: KeyStatus) -> Result<(), ServiceError> {
        let key = self
            .store()
            .key(key_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no key has the id '{key_id}'")))?;
        if key.status == KeyStatus::Archived && status != KeyStatus::Archived {
            return Err(ServiceError::Invalid(
                "an archived key cannot be reactivated".into(),
            ));
        }
        self.store().set_key_status(key_id, status).await?;
        Ok(())
    }

    /// Checks a secret presented on the data plane.
    pub async fn authenticate_api_key(&self, presented: Option<&str>) -> Result<ApiCaller, AuthRefusal> {
        let record = check_presented(presented, KeyKind::Api, self.now(), |key| async move {
            self.lookup_key(&key).await
        })
        .await?;
        let workspace_id = record.workspace_id.clone().ok_or(AuthRefusal::Unknown)?;
        Ok(ApiCaller {
            key_id: record.id,
            org_id: record.org_id,
            workspace_id,
            user_id: record.user_id,
            allowed_models: record.allowed_models,
        })
    }

    async fn lookup_key(&self, key: &WellFormedKey) -> Result<Option<KeyRecord>, StoreError> {
        let hash = key.hash();
        let now = self.now();
        let ttl = self.settings().key_cache_ttl;
        let cached = |now: Timestamp| {
            let entries = self
                .inner
                .key_cache
                .entries
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries
                .get(&hash)
                .filter(|entry| now - entry.fetched_at < ttl)
                .cloned()
        };
        let entry = match cached(now) {
            Some(entry) => entry,
            None => {
                let _loading = self.inner.loads.lock(&hash).await;
                if let Some(entry) = cached(self.now()) {
                    return Ok(entry.record);
                }
                let record = self.store().key_by_hash(&hash).await?;
                let mut entries = self
                    .inner
                    .key_cache
                    .entries
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if entries.len() >= KEY_CACHE_CAPACITY {
                    entries.retain(|_, entry| now - entry.fetched_at < ttl);
                    if entries.len() >= KEY_CACHE_CAPACITY {
                        entries.clear();
                    }
                }
                let touched_at = entries.get(&hash).and_then(|entry| entry.touched_at);
                let entry = CacheEntry {
                    record,
                    fetched_at: now,
                    touched_at,
                };
                entries.insert(hash.clone(), entry.clone());
                entry
            }
        };
        if let Some(record) = &entry.record {
            let due = entry
                .touched_at
                .is_none_or(|touched_at| (now - touched_at).num_seconds() >= TOUCH_INTERVAL_SECONDS);
            if due && record.status == KeyStatus::Active {
                self.touch_key_in_background(&hash, &record.id, now);
            }
        }
        Ok(entry.record)
    }

    fn touch_key_in_background(&self, hash: &str, key_id: &str, now: Timestamp) {
        if let Some(entry) = self
            .inner
            .key_cache
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_mut(hash)
        {
            entry.touched_at = Some(now);
        }
        let store = self.store().clone();
        let key_id = key_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store.touch_key(&key_id, now).await {
                tracing::warn!(%error, key_id, "could not record the key's last use");
            }
        });
    }
}
