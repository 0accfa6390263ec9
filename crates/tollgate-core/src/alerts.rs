//! Alerts as rules: which alerts there are, when a value has crossed an alert's threshold,
//! when a failed delivery is tried again, and how a webhook body is signed and verified.
//!
//! Pure: the shell passes the secret, the body and `now`, and decides nothing here about
//! who is told or whether an alert already fired (the store's claims decide that).
//!
//! The webhook signature is Stripe-like: the header `tollgate-signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256 of "<t>.<raw body>" under the destination's secret>`. A receiver
//! recomputes it over the raw body and refuses a timestamp outside its replay window
//! (`verify`). Both are `crate::signature`'s, the one scheme tollgate signs and checks
//! webhooks with (Stripe's verification uses it too).

pub use crate::signature::{VerifyError, signature_header, verify};

use crate::Timestamp;
use crate::money::NanoUsd;

/// The header carrying a webhook's timestamp and signature.
pub const SIGNATURE_HEADER: &str = "tollgate-signature";

/// How old a signed timestamp a receiver should accept, by default (and as documented).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;

/// The percentages of the monthly spend limit that alert, lowest first.
pub const SPEND_LIMIT_PERCENTS: [u8; 2] = [75, 100];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// The available balance fell below the organization's threshold.
    BalanceBelowThreshold,
    /// The month's spend reached 75 % of the organization's monthly limit.
    SpendLimit75,
    /// The month's spend reached the organization's monthly limit.
    SpendLimit100,
    /// An auto-reload's payment was declined (auto-reload is now off).
    AutoReloadDeclined,
    /// An upstream deployment stopped answering and was taken out of rotation.
    DeploymentDown,
    /// An API key expires within the organization's notice period.
    KeyExpiring,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::BalanceBelowThreshold,
        AlertKind::SpendLimit75,
        AlertKind::SpendLimit100,
        AlertKind::AutoReloadDeclined,
        AlertKind::DeploymentDown,
        AlertKind::KeyExpiring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BalanceBelowThreshold => "balance_below_threshold",
            AlertKind::SpendLimit75 => "spend_limit_75",
            AlertKind::SpendLimit100 => "spend_limit_100",
            AlertKind::AutoReloadDeclined => "auto_reload_declined",
            AlertKind::DeploymentDown => "deployment_down",
            AlertKind::KeyExpiring => "key_expiring",
        }
    }

    /// What people are shown: an email's subject, the Console's labels.
    pub fn title(self) -> &'static str {
        match self {
            AlertKind::BalanceBelowThreshold => "Balance below threshold",
            AlertKind::SpendLimit75 => "75% of the monthly spend limit reached",
            AlertKind::SpendLimit100 => "Monthly spend limit reached",
            AlertKind::AutoReloadDeclined => "Auto-reload declined",
            AlertKind::DeploymentDown => "Upstream deployment down",
            AlertKind::KeyExpiring => "API key about to expire",
        }
    }

    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The kinds a destination receives, as stored: `None` for every kind (so a kind added
/// later reaches it too), else the chosen ones once each, in `AlertKind::ALL`'s order.
/// Choosing every kind is the same as choosing none in particular: `None`.
pub fn kinds_received(chosen: &[AlertKind]) -> Option<Vec<AlertKind>> {
    let kinds: Vec<AlertKind> = AlertKind::ALL
        .into_iter()
        .filter(|kind| chosen.contains(kind))
        .collect();
    (kinds.len() < AlertKind::ALL.len()).then_some(kinds)
}

/// Whether `available` is below the threshold (no threshold: never).
pub fn balance_below(threshold: Option<NanoUsd>, available: NanoUsd) -> bool {
    threshold.is_some_and(|threshold| available < threshold)
}

/// The spend-limit alerts that `spent` has reached of `limit`, lowest first; none without
/// a (positive) limit.
pub fn spend_limit_reached(limit: Option<NanoUsd>, spent: NanoUsd) -> Vec<AlertKind> {
    let Some(limit) = limit.filter(|limit| limit.is_positive()) else {
        return Vec::new();
    };
    SPEND_LIMIT_PERCENTS
        .into_iter()
        .filter(|percent| i128::from(spent.nanos()) * 100 >= i128::from(limit.nanos()) * i128::from(*percent))
        .map(|percent| {
            if percent == 100 {
                AlertKind::SpendLimit100
            } else {
                AlertKind::SpendLimit75
            }
        })
        .collect()
}

/// How failed deliveries are tried again: the n-th retry waits `first_delay_seconds`
/// doubled n-1 times, capped at `max_delay_seconds`; after `attempts_max` attempts the
/// delivery has failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub first_delay_seconds: u64,
    pub max_delay_seconds: u64,
}

impl RetryPolicy {
    /// When to try again after `attempts_made` attempts failed, the last at `now`; `None`
    /// once the attempts are spent.
    pub fn next_attempt(&self, attempts_made: u32, now: Timestamp) -> Option<Timestamp> {
        if attempts_made >= self.attempts_max {
            return None;
        }
        let doublings = attempts_made.saturating_sub(1).min(32);
        let delay = self
            .first_delay_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay_seconds);
        let delay = chrono::TimeDelta::try_seconds(i64::try_from(delay).unwrap_or(i64::MAX))?;
        now.checked_add_signed(delay)
    }
}

#[cfg(test)]
mod tests;
