//! Backend-neutral rules of the directory and of limits, with no database type in sight:
//! what a new organization is made of, which limits could never be stored, and which
//! promotional programmes count as active. (The ledger's are in `journal`.)

use std::collections::BTreeSet;

use tollgate_core::Timestamp;
use tollgate_core::ledger::{AccountKind, LotKind};
use tollgate_core::money::NanoUsd;

use crate::codec::invariant;
use crate::error::StoreError;
use crate::model::{LotView, WorkspaceLimits};

/// The accounts every organization has besides its lots.
pub(crate) const SYSTEM_ACCOUNT_KINDS: [AccountKind; 5] = [
    AccountKind::StarterGrants,
    AccountKind::PromotionalGrants,
    AccountKind::Purchases,
    AccountKind::Spend,
    AccountKind::Expired,
];

/// The name of the workspace every organization is created with.
pub(crate) const DEFAULT_WORKSPACE_NAME: &str = "Default";

/// A reservation or a purchase is for a positive amount; anything else is a caller's bug.
pub(crate) fn check_amount_positive(what: &str, id: &str, amount: NanoUsd) -> Result<(), StoreError> {
    if amount.is_positive() {
        Ok(())
    } else {
        Err(invariant(format!(
            "{what} {id} is for a non-positive amount {amount}"
        )))
    }
}

/// A spend limit is positive or absent; zero would refuse everything, which is what
/// archiving or deactivating keys is for.
pub(crate) fn check_limit_positive(limit: Option<NanoUsd>, scope: &str) -> Result<(), StoreError> {
    match limit {
        Some(limit) if !limit.is_positive() => Err(invariant(format!(
            "{scope} was given a non-positive spend limit {limit}"
        ))),
        _ => Ok(()),
    }
}

/// A workspace's limits as they may be stored: a positive spend limit or none, and every
/// rate limit positive or inherited.
pub(crate) fn check_workspace_limits(workspace_id: &str, limits: &WorkspaceLimits) -> Result<(), StoreError> {
    let label = format!("workspace {workspace_id}");
    check_limit_positive(limits.spend_limit, &label)?;
    check_limit_positive(limits.user_spend_limit, &format!("{label} (per user)"))?;
    for (model_class, overrides) in &limits.rate_limits {
        let values = [
            overrides.requests_per_minute,
            overrides.input_tokens_per_minute,
            overrides.output_tokens_per_minute,
        ];
        if values.contains(&Some(0)) {
            return Err(invariant(format!(
                "{label} was given a zero {model_class} rate limit; a limit is positive or inherited"
            )));
        }
    }
    Ok(())
}

/// The programmes of promotional lots unexpired at `now` with credit left, sorted and
/// deduplicated.
pub(crate) fn active_programmes(lots: Vec<LotView>, now: Timestamp) -> Vec<String> {
    let active: BTreeSet<String> = lots
        .into_iter()
        .filter(|view| {
            view.lot.kind == LotKind::Promotional
                && !view.lot.is_expired(now)
                && view.lot.account.available().is_positive()
        })
        .filter_map(|view| view.programme)
        .collect();
    active.into_iter().collect()
}
