//! The rows the store hands out and takes in: plain structs of core types with public
//! fields. They carry no behaviour beyond converting their enums to and from the text
//! stored in the database; rules about them live in tollgate-core and tollgate-service.

use std::collections::BTreeMap;

use tollgate_core::Timestamp;
use tollgate_core::attribution::Attribution;
use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::ledger::{InsufficientCredit, Lot, LotKind, ReservationLine};
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::Multipliers;
use tollgate_core::refunds::{ReversalClaim, ReversalKind};
use tollgate_core::spend::{SpendLimitReached, SpendLimits};
use tollgate_core::usage::TokenUsage;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub is_default: bool,
    pub created_at: Timestamp,
    pub archived_at: Option<Timestamp>,
}

/// A name (of an organization, or of a workspace within its org) that is already in use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the name '{0}' is already taken")]
pub struct NameTaken(pub String);

/// Whether a key may be used. Only `Active` keys authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Inactive,
    Archived,
}

impl KeyStatus {
    pub const ALL: [KeyStatus; 3] = [KeyStatus::Active, KeyStatus::Inactive, KeyStatus::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Inactive => "inactive",
            KeyStatus::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Option<KeyStatus> {
        KeyStatus::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// A stored credential. The secret itself is never stored, only its hash, which is not
/// handed back out either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub kind: KeyKind,
    pub org_id: String,
    pub workspace_id: Option<String>,
    pub name: String,
    pub hint: String,
    pub status: KeyStatus,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// From then on the key is refused; `None`: never.
    pub expires_at: Option<Timestamp>,
    /// The user a personal key is bound to (archived when they are removed); `None`: a
    /// workspace key.
    pub user_id: Option<String>,
    /// The service account a key is bound to (archived when it is archived or leaves the
    /// key's workspace); `None`: a workspace or personal key.
    pub service_account_id: Option<String>,
    pub allowed_models: AllowedModels,
}

impl KeyRecord {
    /// A personal key (bound to a user) rather than a workspace key.
    pub fn is_personal(&self) -> bool {
        self.user_id.is_some()
    }

    /// Whom the key is bound to.
    pub fn binding(&self) -> KeyBinding<'_> {
        match (&self.user_id, &self.service_account_id) {
            (Some(user_id), _) => KeyBinding::User(user_id),
            (None, Some(service_account_id)) => KeyBinding::ServiceAccount(service_account_id),
            (None, None) => KeyBinding::Workspace,
        }
    }
}

/// Whom a key is bound to: its workspace only, a user (a personal key) or a service account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBinding<'a> {
    Workspace,
    User(&'a str),
    ServiceAccount(&'a str),
}

impl KeyBinding<'_> {
    /// The key's kind as the Admin API and the Console name it.
    pub fn key_type(self) -> &'static str {
        match self {
            KeyBinding::Workspace => "workspace",
            KeyBinding::User(_) => "personal",
            KeyBinding::ServiceAccount(_) => "service_account",
        }
    }
}

/// A key to insert; it starts `Active`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub id: String,
    pub kind: KeyKind,
    pub org_id: String,
    pub workspace_id: Option<String>,
    pub name: String,
    pub secret_hash: String,
    pub hint: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub user_id: Option<String>,
    pub service_account_id: Option<String>,
    pub allowed_models: AllowedModels,
}

/// A credit lot to grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLot {
    pub lot_id: String,
    pub org_id: String,
    pub kind: LotKind,
    pub amount: NanoUsd,
    /// Also the instant the grant is posted at.
    pub granted_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub memo: String,
    /// The promotional programme the lot is granted under (e.g. "startup"). Only a
    /// promotional lot may name one; anything else is a caller bug.
    pub programme: Option<String>,
    /// Who granted it, as the audit log records.
    pub actor: String,
}

/// Why a grant was refused; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantRejection {
    #[error("a grant must be of a positive amount")]
    AmountNotPositive,
    #[error("the organization has already received its starter credit")]
    StarterAlreadyGranted,
    #[error("no such organization")]
    UnknownOrganization,
    #[error("the lot would already be expired when granted")]
    AlreadyExpired,
}

/// A lot with its account totals as stored, the amount it was granted with and its memo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotView {
    pub lot: Lot,
    pub amount: NanoUsd,
    pub memo: String,
    pub programme: Option<String>,
}

/// An organization's credit at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceView {
    /// Reservable now: unexpired lots less what is reserved from them.
    pub available: NanoUsd,
    /// Reserved by requests in flight.
    pub held: NanoUsd,
    /// Settled charges, all time.
    pub spent: NanoUsd,
    /// Credit lost to expiry, all time.
    pub expired: NanoUsd,
    /// Every lot ever granted.
    pub granted: NanoUsd,
}

/// A reservation to make: `amount` is the request's upper bound on cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReservation {
    pub reservation_id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: Option<String>,
    /// The user whose personal key makes it: their month counter in the workspace holds
    /// it, and `spend_limits.user` binds it. `None` for keys bound to no user.
    pub user_id: Option<String>,
    pub request_id: String,
    pub model: String,
    pub amount: NanoUsd,
    /// Also the instant lot expiry is judged at.
    pub created_at: Timestamp,
    /// After this the reaper voids the reservation if it has not ended.
    pub deadline: Timestamp,
    /// The monthly limits to enforce, checked against the month of `created_at`.
    pub spend_limits: SpendLimits,
    /// The caller's client hears nothing before the settlement is written (a whole reply,
    /// not a stream): a backend whose one writer owns the database (SQLite) may then hold
    /// the credit in its book only and write the reservation with its settlement, in one
    /// commit (`Reservation::held_in_memory` says whether it did).
    pub written_at_settlement: bool,
}

/// Why a reservation was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReserveRejection {
    #[error(transparent)]
    InsufficientCredit(InsufficientCredit),
    #[error(transparent)]
    SpendLimitReached(SpendLimitReached),
}

impl From<InsufficientCredit> for ReserveRejection {
    fn from(rejection: InsufficientCredit) -> ReserveRejection {
        ReserveRejection::InsufficientCredit(rejection)
    }
}

impl From<SpendLimitReached> for ReserveRejection {
    fn from(rejection: SpendLimitReached) -> ReserveRejection {
        ReserveRejection::SpendLimitReached(rejection)
    }
}

/// A pending reservation and the lots it draws on, in drawdown order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub org_id: String,
    pub amount: NanoUsd,
    pub lines: Vec<ReservationLine>,
    /// Held in the writer's book only, not written: its settlement writes it, and a
    /// settlement that cannot be written releases it (`StoreError::Released`;
    /// `NewReservation::written_at_settlement`).
    pub held_in_memory: bool,
}

/// How a request ended, as its usage record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsageStatus {
    Succeeded,
    Failed,
    Refused,
    /// The client went away; what was generated is still charged.
    ClientDisconnected,
    /// The reservation passed its deadline and was voided by the reaper.
    Abandoned,
}

impl UsageStatus {
    pub const ALL: [UsageStatus; 5] = [
        UsageStatus::Succeeded,
        UsageStatus::Failed,
        UsageStatus::Refused,
        UsageStatus::ClientDisconnected,
        UsageStatus::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Succeeded => "succeeded",
            UsageStatus::Failed => "failed",
            UsageStatus::Refused => "refused",
            UsageStatus::ClientDisconnected => "client_disconnected",
            UsageStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<UsageStatus> {
        UsageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// One request as metered: what it used, what it cost and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub request_id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub api_key_id: Option<String>,
    pub model: String,
    pub usage: TokenUsage,
    pub cost: NanoUsd,
    pub status: UsageStatus,
    pub error_type: Option<String>,
    pub latency_ms: u64,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// The client's session and agent ids, as bounded labels; a report dimension only.
    pub attribution: Attribution,
    /// The model the upstream said served the request, when another than `model` (a
    /// server-side fallback, billed at its prices).
    pub served_model: Option<String>,
    /// The multipliers the cost applied (fast mode, data residency, batch).
    pub multipliers: Multipliers,
    /// The cost by what it paid for, at the rates applied (`Charge::lines`); all zero for
    /// a request not charged.
    pub lines: tollgate_core::pricing::CostLines,
    /// The upstream calls it made, in order (`catalog::served_by` names the one that
    /// answered); empty when none was made.
    pub upstream_attempts: Vec<tollgate_core::catalog::UpstreamAttempt>,
}

/// How a reservation ends: cost 0 voids it. `record` is written in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub reservation_id: String,
    pub cost: NanoUsd,
    pub now: Timestamp,
    pub record: UsageRecord,
}

/// What ending a reservation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleOutcome {
    pub charged: NanoUsd,
    pub released: NanoUsd,
    /// Cost above the reservation, which was not charged. The reservation is an upper
    /// bound, so a positive value is a bug upstream (logged as an error).
    pub uncovered: NanoUsd,
    /// The reservation had already ended: nothing was done and all amounts are zero.
    pub already_ended: bool,
    /// Where the organization stood right after this settlement, as the write that made it
    /// saw it; `None` when the reservation had already ended. Alerts read it, so that
    /// checking a threshold costs no query of its own.
    pub standing: Option<Standing>,
}

/// An organization's credit and month's spend, as of one settlement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Reservable credit: unexpired lots less what is reserved from them.
    pub available: NanoUsd,
    /// The organization's spend in the reservation's month (settled plus open reservations).
    pub month_spend: NanoUsd,
}

/// What the audit found. No problems means the stored totals agree with the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub accounts_checked: usize,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

// Billing: limits, purchases, auto-reload and the audit log.

/// An organization's billing state: what decides its tier and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationBilling {
    pub org_id: String,
    /// Succeeded purchases, all time; the tier advances on it.
    pub cumulative_purchases: NanoUsd,
    /// A custom limit set assigned by an operator; `None` = the tier ladder.
    pub limit_set: Option<String>,
    /// The organization's own monthly spend limit, below its tier's cap.
    pub spend_limit: Option<NanoUsd>,
    /// programmes of promotional lots unexpired at `now` with credit left (available > 0),
    /// sorted, deduplicated
    pub active_programmes: Vec<String>,
}

/// A workspace's rate limits for one model class; `None` inherits the organization's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitOverrides {
    pub requests_per_minute: Option<u64>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
}

/// A workspace's own limits, each only ever lower than its organization's (the caller
/// checks that).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkspaceLimits {
    pub spend_limit: Option<NanoUsd>,
    /// What each user may spend in the workspace a month (their personal keys' requests).
    pub user_spend_limit: Option<NanoUsd>,
    /// By model class.
    pub rate_limits: BTreeMap<String, RateLimitOverrides>,
}

/// What started a purchase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PurchaseSource {
    Manual,
    AutoReload,
}

impl PurchaseSource {
    pub const ALL: [PurchaseSource; 2] = [PurchaseSource::Manual, PurchaseSource::AutoReload];

    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseSource::Manual => "manual",
            PurchaseSource::AutoReload => "auto_reload",
        }
    }

    pub fn parse(text: &str) -> Option<PurchaseSource> {
        PurchaseSource::ALL
            .into_iter()
            .find(|source| source.as_str() == text)
    }
}

/// Where a purchase stands. It starts `Pending` and ends exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    Pending,
    Succeeded,
    Declined,
    Failed,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 4] = [
        PurchaseStatus::Pending,
        PurchaseStatus::Succeeded,
        PurchaseStatus::Declined,
        PurchaseStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "pending",
            PurchaseStatus::Succeeded => "succeeded",
            PurchaseStatus::Declined => "declined",
            PurchaseStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<PurchaseStatus> {
        PurchaseStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// A credit purchase as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    pub id: String,
    pub org_id: String,
    pub idempotency_key: String,
    pub amount: NanoUsd,
    pub source: PurchaseSource,
    pub status: PurchaseStatus,
    pub payment_reference: Option<String>,
    pub failure_reason: Option<String>,
    /// The lot a succeeded purchase granted.
    pub lot_id: Option<String>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Refunded so far, and lost in disputes (`tollgate_core::refunds`).
    pub refunded: NanoUsd,
    pub disputed: NanoUsd,
    /// The part of those reversals its lot no longer held (spent, held or expired):
    /// recorded instead of taken from the lot.
    pub unrecovered: NanoUsd,
}

/// A purchase to claim before the payment provider is charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPurchase {
    pub purchase_id: String,
    pub org_id: String,
    pub idempotency_key: String,
    pub amount: NanoUsd,
    pub source: PurchaseSource,
    pub created_at: Timestamp,
}

/// What claiming a purchase found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurchaseClaim {
    /// newly inserted as Pending: the caller now charges the payment provider
    New(Purchase),
    /// the key was used before with the same amount: nothing inserted; the caller
    /// returns/continues it
    Existing(Purchase),
}

/// The idempotency key names a purchase of another amount; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency key was already used for a purchase of {existing_amount}")]
pub struct IdempotencyKeyReused {
    pub existing_amount: NanoUsd,
}

/// How the payment provider answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// Paid: `lot` (of kind `Purchase`, the purchase's organization and amount) is granted
    /// and its id recorded on the purchase.
    Succeeded {
        payment_reference: String,
        lot: NewLot,
    },
    Declined {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

/// An organization's auto-reload settings: when the balance falls below `threshold`, buy
/// `amount` with `payment_method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoReload {
    pub org_id: String,
    pub enabled: bool,
    pub threshold: NanoUsd,
    pub amount: NanoUsd,
    pub payment_method: String,
    /// When the reload now being bought was claimed; `None` when none is in flight.
    pub in_flight_since: Option<Timestamp>,
    /// Why auto-reload was turned off, until it is turned on again.
    pub notice: Option<String>,
}

/// One entry of the audit log: who did what to which subject, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub org_id: String,
    pub actor: String,
    /// Dotted, e.g. "credit.granted", "limits.workspace".
    pub action: String,
    /// The id of what was changed.
    pub subject: String,
    pub details: String,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// An organization's customer at the payment provider and the payment method saved for
/// off-session charges: the provider's ids, and the card's brand and last four digits for
/// display. Never a card number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentCustomer {
    pub org_id: String,
    pub customer_id: String,
    pub payment_method_id: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
}

/// A payment provider's event, applied at most once by its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentEvent {
    pub event_id: String,
    pub event_type: String,
    pub received_at: Timestamp,
}

/// What a provider's event does to a pending purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentEventEffect {
    /// Ends the purchase (if still pending).
    Complete(PurchaseOutcome),
    /// Keeps it pending and records why the last attempt failed (the customer may retry on
    /// the provider's page).
    AttemptFailed { reason: String },
    /// Takes back part of a paid purchase, as `tollgate_core::refunds::plan_reversal`
    /// decides from the purchase and its lot as they stand in the event's transaction.
    Reverse(Reversal),
}

/// A refund or lost dispute a provider reported for a paid purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    pub claim: ReversalClaim,
    /// The provider's charge (a refund) or dispute id; a dispute is reversed at most once.
    pub reference: String,
}

/// One reversal of a purchase, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseReversal {
    pub kind: ReversalKind,
    pub reference: String,
    pub amount: NanoUsd,
    /// Removed from the purchase's lot.
    pub recovered: NanoUsd,
    /// Already spent, held or expired: recorded, not taken.
    pub unrecovered: NanoUsd,
    pub created_at: Timestamp,
}
