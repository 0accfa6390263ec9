//! Use cases shared by the gateway, the CLI and (later) the admin API and console: one way
//! to do each thing. Owns the order of steps (authenticate, reserve, settle, grant); the
//! money rules themselves live in `tollgate-core` and their storage in `tollgate-store`.
//! Knows nothing of HTTP or wire JSON.

mod admin;
mod alerts;
mod batches;
mod billing;
pub mod capture;
mod checkout;
pub mod clock;
mod concurrency;
mod console;
mod credits;
mod device_login;
pub use crate::device_login::{
    ACCESS_TOKEN_MINUTES, DEVICE_KEY_NAME, DeviceAuthorization, DeviceTokenError, DeviceTokens,
    normalize_user_code,
};
mod error;
mod files;
pub use crate::files::{FileError, FileSettings, FileUpload};
mod health;
mod heartbeat;
mod idempotency;
mod keys;
mod limits;
mod maintenance;
pub use crate::maintenance::MaintenanceReport;
mod metering;
mod organizations;
pub mod payments;
mod pending;
pub mod random;
mod reports;
mod responses;
pub use crate::responses::RESPONSES_KEPT_DAYS;
mod service_accounts;
pub use crate::service_accounts::{NewServiceAccount, ServiceAccountUpdate};
mod single_flight;
mod sso;
pub use crate::sso::{SSO_ATTEMPT_MINUTES, SsoRecheckReport, SsoSettings, SsoSignInError, SsoStart};
mod telemetry;
mod users;

use std::sync::Arc;

use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::tiers::BillingPolicy;
use tollgate_store::Store;

pub use crate::admin::{CreatedApiKey, KeyFilter, KeyUpdate, MAX_ACTIVE_WORKSPACES, NewApiKey, OrgAdmin};
pub use crate::alerts::{
    AlertingSettings, CreatedDestination, DELIVERIES_LISTED_MAX, SmtpRoots, SmtpSecurity, SmtpSettings,
    email_text,
};
pub use crate::batches::{
    BATCH_LIFETIME_HOURS, BATCH_RESULTS_KEPT_DAYS, BatchHeaders, BatchMaintenance, BatchRequestPlan,
    batch_caller,
};
pub use crate::billing::{PurchaseRequest, Receipt, TierStanding};
pub use crate::checkout::{CheckoutStart, WebhookError, WebhookOutcome};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::console::{
    Access, ConsoleArea, ConsoleUser, Denied, PASSWORD_CHECKS_MAX, PASSWORD_LENGTH_MIN,
    SESSION_LIFETIME_HOURS, SecretToken, SignInRefusal, SignedIn, WORKBENCH_KEY_NAME, role_allows,
};
pub use crate::credits::Grant;
pub use crate::error::{LimitScope, RateLimited, ServiceError};
pub use crate::health::Readiness;
pub use crate::idempotency::{IdempotencyTicket, IdempotentStart};
pub use crate::keys::{ApiCaller, AuthRefusal, CreatedKey};
pub use crate::limits::{OrganizationLimits, workspace_rate_limits};
pub use crate::metering::{BatchClaim, Finish, OpenReservation, RateLimitView, RequestPlan};
pub use crate::organizations::FirstStart;
pub use crate::payments::{PaymentError, PaymentProvider};
pub use crate::pending::PENDING_SETTLEMENTS_FILE;
pub use crate::reports::{
    ADJUSTMENT_DESCRIPTION, CostDescription, CostFilters, CostGroupBy, CostResult, CostType, Report,
    ReportBucket, ReportPage, RequestLogPage, STANDARD_SERVICE_TIER, UsageFilters, UsageGroupBy, UsageResult,
    WEB_SEARCH_DESCRIPTION,
};
pub use crate::users::{INVITE_LIFETIME_DAYS, Invite, InviteStatus, Member};
pub use tollgate_limiter::{Limiter, Metric};
pub use tollgate_store::{
    AlertChannel, AlertDelivery, AlertDestination, AlertSettings, DeliveryAttempt, DeliveryState,
};
pub use tollgate_store::{
    AuditEntry, AutoReload, BalanceView, KeyBinding, KeyRecord, KeyStatus, LotView, Organization, Purchase,
    PurchaseReversal, PurchaseStatus, RateLimitOverrides, SettleOutcome, UsageRecord, UsageStatus, Workspace,
    WorkspaceLimits,
};
pub use tollgate_store::{
    BatchPage, BatchRequestCounts, BatchRequestState, BatchResult, BatchStatus, ClaimedBatchRequest,
    MessageBatch, StoredResponse,
};
pub use tollgate_store::{CaptureSettings, CapturedResponseKind, IdempotentAnswer, RequestCapture};
pub use tollgate_store::{
    CreatedBy, InviteRecord, KeyView, REQUEST_LOG_PAGE_MAX, RequestLogCursor, RequestLogEntry,
    RequestLogQuery, ServiceAccountMembership, ServiceAccountRecord, UserRecord,
};
pub use tollgate_store::{DeletedFile, StoredFile};

/// Figures the use cases need from configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tier ladder, custom limit sets and promotional programmes.
    pub policy: BillingPolicy,
    /// An auto-reload claimed this long ago and never finished may be claimed again.
    pub auto_reload_stale: chrono::Duration,
    /// Credit every new organization gets once.
    pub starter_grant: NanoUsd,
    /// How long the starter grant lasts; `None`: until used.
    pub starter_grant_lifetime: Option<chrono::Duration>,
    /// A reservation not ended within this time is voided by the reaper. The heartbeat moves
    /// a running request's deadline by this much at every maintenance pass, so it must exceed
    /// two maintenance intervals.
    pub reservation_ttl: chrono::Duration,
    /// How long a key lookup is cached. Revocation takes effect within this time.
    pub key_cache_ttl: chrono::Duration,
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
    limits_cache: limits::LimitsCache,
    /// Serializes reloads of one cached entry (keys, limits).
    loads: single_flight::SingleFlight,
    limiter: Limiter,
    payments: PaymentProvider,
    /// Upstream calls in flight per organization (`begin` takes a slot).
    in_flight: Arc<concurrency::InFlight>,
    /// Bounds the argon2 computations running at once (`console::PASSWORD_CHECKS_MAX`).
    password_checks: console::PasswordChecks,
    /// Reservations of requests running in this process, kept from the reaper.
    live: Arc<heartbeat::LiveReservations>,
    /// Which organizations get a label of their own in cost metrics.
    organization_labels: telemetry::OrganizationLabels,
    /// Settlements the store refused, written by a later maintenance pass.
    pending: pending::PendingSettlements,
    alerts: alerts::AlertState,
    sso: sso::SsoState,
    /// Where the Files API keeps bytes, once set.
    files: std::sync::OnceLock<files::FileSettings>,
}

impl Tollgate {
    pub fn new(
        store: Store,
        limiter: Limiter,
        payments: PaymentProvider,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Tollgate {
        Tollgate {
            inner: Arc::new(Inner {
                store,
                clock,
                settings,
                key_cache: keys::KeyCache::default(),
                limits_cache: limits::LimitsCache::default(),
                loads: single_flight::SingleFlight::default(),
                limiter,
                payments,
                in_flight: Arc::new(concurrency::InFlight::new(concurrency::DEFAULT_LIMIT)),
                password_checks: console::PasswordChecks::default(),
                live: Arc::default(),
                organization_labels: Default::default(),
                pending: pending::PendingSettlements::default(),
                alerts: alerts::AlertState::default(),
                sso: sso::SsoState::default(),
                files: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Caps the upstream calls one organization may have in flight in this process (a
    /// request holds its slot from admission until its reservation ends); beyond it,
    /// `begin` refuses with [`ServiceError::TooManyConcurrentCalls`].
    pub fn set_max_concurrent_calls_per_organization(&self, limit: usize) {
        self.inner.in_flight.set_limit(limit);
    }

    /// How many organizations get a label of their own in cost metrics; the rest share
    /// `other`.
    pub fn set_metrics_organizations(&self, max: usize) {
        self.inner.organization_labels.set_max(max);
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}
