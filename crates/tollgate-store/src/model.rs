//! The rows the store hands out and takes in: plain structs of core types with public
//! fields. They carry no behaviour beyond converting their enums to and from the text
//! stored in the database; rules about them live in tollgate-core and tollgate-service.

use tollgate_core::Timestamp;
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::{Lot, LotKind, ReservationLine};
use tollgate_core::money::NanoUsd;
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
    pub request_id: String,
    pub model: String,
    pub amount: NanoUsd,
    /// Also the instant lot expiry is judged at.
    pub created_at: Timestamp,
    /// After this the reaper voids the reservation if it has not ended.
    pub deadline: Timestamp,
}

/// A pending reservation and the lots it draws on, in drawdown order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub org_id: String,
    pub amount: NanoUsd,
    pub lines: Vec<ReservationLine>,
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
