//! Use cases shared by the gateway, the CLI and (later) the admin API and console: one way
//! to do each thing. Owns the order of steps (authenticate, reserve, settle, grant); the
//! money rules themselves live in `tollgate-core` and their storage in `tollgate-store`.
//! Knows nothing of HTTP or wire JSON.

pub mod clock;
mod credits;
mod error;
mod keys;
mod maintenance;
pub use crate::maintenance::MaintenanceReport;
mod metering;
mod organizations;
pub mod random;

use std::sync::Arc;

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_store::Store;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::ServiceError;
pub use crate::keys::{ApiCaller, AuthRefusal, CreatedKey};
pub use crate::metering::{Finish, OpenReservation};
pub use crate::organizations::FirstStart;
pub use tollgate_store::{
    BalanceView, KeyRecord, KeyStatus, LotView, Organization, SettleOutcome, UsageRecord, UsageStatus,
    Workspace,
};

/// Figures the use cases need from configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Credit every new organization gets once.
    pub starter_grant: NanoUsd,
    /// How long the starter grant lasts; `None`: until used.
    pub starter_grant_lifetime: Option<chrono::Duration>,
    /// A reservation not ended within this time is voided by the reaper. Must exceed the
    /// longest a request can take (upstream timeouts plus the disconnect drain).
    pub reservation_ttl: chrono::Duration,
    /// How long a key lookup is cached. Revocation takes effect within this time.
    pub key_cache_ttl: chrono::Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            starter_grant: NanoUsd::from_usd(5),
            starter_grant_lifetime: None,
            reservation_ttl: chrono::Duration::minutes(15),
            key_cache_ttl: chrono::Duration::seconds(1),
        }
    }
}

/// The service façade. Cheap to clone.
#[derive(Clone)]
pub struct Tollgate {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: Settings,
    key_cache: keys::KeyCache,
}

impl Tollgate {
    pub fn new(store: Store, clock: Arc<dyn Clock>, settings: Settings) -> Tollgate {
        Tollgate {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
                key_cache: keys::KeyCache::default(),
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}
