//! Monthly spend limits. Spend in a calendar month (UTC) is the settled charges of the
//! reservations made in that month plus the reservations still open; a reservation that
//! would take any scope's spend above its limit is refused whole. Limits nest: the tier's
//! cap, an organization's own lower limit, a workspace's lower still, and the per-user limit
//! a workspace may set, which binds each person's own spend in it (a personal key's) and
//! no one else's.

use chrono::{Datelike, TimeZone, Utc};

use crate::Timestamp;
use crate::money::NanoUsd;

/// Whose limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpendScope {
    /// The cap of the organization's tier (or custom limit set).
    Tier,
    /// A lower limit the organization set for itself.
    Organization,
    /// A workspace's own limit.
    Workspace,
    /// The limit a workspace sets on each of its users' own spend (personal keys).
    User,
}

/// The monthly limits that apply to one request; `None` where a scope sets none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpendLimits {
    pub tier: Option<NanoUsd>,
    pub organization: Option<NanoUsd>,
    pub workspace: Option<NanoUsd>,
    /// The workspace's per-user limit; set only for a request made by a user.
    pub user: Option<NanoUsd>,
}

/// Spend so far this month (settled plus open reservations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonthSpend {
    pub organization: NanoUsd,
    pub workspace: NanoUsd,
    /// The requesting user's spend in the workspace (zero for a request made by no user).
    pub user: NanoUsd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("monthly spend limit reached ({scope:?}: {limit}); access resumes at {resets_at}")]
pub struct SpendLimitReached {
    pub scope: SpendScope,
    pub limit: NanoUsd,
    pub resets_at: Timestamp,
}

/// The first instant of the calendar month (UTC) that `now` falls in.
pub fn month_start(now: Timestamp) -> Timestamp {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// The first instant of the next calendar month (UTC): when monthly limits reset.
pub fn next_month_start(now: Timestamp) -> Timestamp {
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// A month as a number (`202611`), the key of monthly spend counters.
pub fn month_key(now: Timestamp) -> i64 {
    i64::from(now.year()) * 100 + i64::from(now.month())
}

/// Whether a reservation of `amount` fits every limit. The most specific scope is named
/// when several are reached, since it is the one the caller can change soonest.
pub fn check_spend(
    limits: &SpendLimits,
    spent: &MonthSpend,
    amount: NanoUsd,
    now: Timestamp,
) -> Result<(), SpendLimitReached> {
    let scopes = [
        (SpendScope::User, limits.user, spent.user),
        (SpendScope::Workspace, limits.workspace, spent.workspace),
        (SpendScope::Organization, limits.organization, spent.organization),
        (SpendScope::Tier, limits.tier, spent.organization),
    ];
    for (scope, limit, spent) in scopes {
        let Some(limit) = limit else { continue };
        let after = spent.saturating_add(amount);
        if after > limit {
            return Err(SpendLimitReached {
                scope,
                limit,
                resets_at: next_month_start(now),
            });
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitSettingError {
    #[error("a spend limit must be positive")]
    NotPositive,
    #[error("Your spend limit cannot exceed your current tier's cap of {0}")]
    AboveTierCap(NanoUsd),
    #[error("a workspace's spend limit cannot exceed its organization's limit of {0}")]
    AboveOrganization(NanoUsd),
    #[error("a workspace's per-user spend limit cannot exceed the workspace's limit of {0}")]
    AboveWorkspace(NanoUsd),
}

/// Checks an organization's own limit against its tier's cap.
pub fn validate_organization_limit(
    limit: NanoUsd,
    tier_cap: Option<NanoUsd>,
) -> Result<(), LimitSettingError> {
    if !limit.is_positive() {
        return Err(LimitSettingError::NotPositive);
    }
    match tier_cap {
        Some(cap) if limit > cap => Err(LimitSettingError::AboveTierCap(cap)),
        _ => Ok(()),
    }
}

/// Checks a workspace's limit against what binds its organization (its own limit, else the
/// tier's cap).
pub fn validate_workspace_limit(
    limit: NanoUsd,
    organization_limit: Option<NanoUsd>,
    tier_cap: Option<NanoUsd>,
) -> Result<(), LimitSettingError> {
    if !limit.is_positive() {
        return Err(LimitSettingError::NotPositive);
    }
    match organization_limit.or(tier_cap) {
        Some(ceiling) if limit > ceiling => Err(LimitSettingError::AboveOrganization(ceiling)),
        _ => Ok(()),
    }
}

/// Checks a workspace's per-user limit against what binds the workspace (its own limit,
/// else its organization's, else the tier's cap): like a workspace's, only ever lower.
pub fn validate_user_limit(
    limit: NanoUsd,
    workspace_limit: Option<NanoUsd>,
    organization_limit: Option<NanoUsd>,
    tier_cap: Option<NanoUsd>,
) -> Result<(), LimitSettingError> {
    if !limit.is_positive() {
        return Err(LimitSettingError::NotPositive);
    }
    match workspace_limit.or(organization_limit).or(tier_cap) {
        Some(ceiling) if limit > ceiling => Err(LimitSettingError::AboveWorkspace(ceiling)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
