//! Usage tiers and limit sets. A tier carries a monthly spend limit, a largest single
//! purchase and a rate-limit table per model class; organizations climb the ladder on
//! cumulative credit purchases (starter and promotional credit don't count). A limit set
//! outside the ladder (an enterprise agreement, a startup programme) has the same shape.

use std::collections::BTreeMap;

use crate::money::NanoUsd;

/// Per-minute limits for one model class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub requests_per_minute: u64,
    pub input_tokens_per_minute: u64,
    pub output_tokens_per_minute: u64,
}

impl RateLimits {
    /// The larger of each limit (an uplift never lowers a limit).
    pub fn max(self, other: RateLimits) -> RateLimits {
        RateLimits {
            requests_per_minute: self.requests_per_minute.max(other.requests_per_minute),
            input_tokens_per_minute: self.input_tokens_per_minute.max(other.input_tokens_per_minute),
            output_tokens_per_minute: self.output_tokens_per_minute.max(other.output_tokens_per_minute),
        }
    }

    /// The smaller of each limit, where `other` sets one (a workspace may only lower).
    pub fn min(self, other: RateLimits) -> RateLimits {
        RateLimits {
            requests_per_minute: self.requests_per_minute.min(other.requests_per_minute),
            input_tokens_per_minute: self.input_tokens_per_minute.min(other.input_tokens_per_minute),
            output_tokens_per_minute: self.output_tokens_per_minute.min(other.output_tokens_per_minute),
        }
    }

    /// Whether every limit is at most `ceiling`'s.
    pub fn within(&self, ceiling: &RateLimits) -> bool {
        self.requests_per_minute <= ceiling.requests_per_minute
            && self.input_tokens_per_minute <= ceiling.input_tokens_per_minute
            && self.output_tokens_per_minute <= ceiling.output_tokens_per_minute
    }
}

/// The limits an organization works under: a tier of the ladder or a custom set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSet {
    pub name: String,
    /// `None`: no monthly cap.
    pub monthly_spend_limit: Option<NanoUsd>,
    /// `None`: no cap on one purchase.
    pub max_single_purchase: Option<NanoUsd>,
    /// By model class (`opus`, `sonnet`, `haiku`, …).
    pub rate_limits: BTreeMap<String, RateLimits>,
    pub count_tokens_requests_per_minute: u64,
}

impl LimitSet {
    /// Element-wise the more generous of two sets: what a promotional programme's uplift
    /// gives on top of the organization's own limits.
    pub fn uplift(&self, programme: &LimitSet) -> LimitSet {
        let mut rate_limits = self.rate_limits.clone();
        for (class, limits) in &programme.rate_limits {
            rate_limits
                .entry(class.clone())
                .and_modify(|own| *own = own.max(*limits))
                .or_insert(*limits);
        }
        let larger = |own: Option<NanoUsd>, other: Option<NanoUsd>| match (own, other) {
            (None, _) | (_, None) => None,
            (Some(own), Some(other)) => Some(own.max(other)),
        };
        LimitSet {
            name: format!("{} + {}", self.name, programme.name),
            monthly_spend_limit: larger(self.monthly_spend_limit, programme.monthly_spend_limit),
            max_single_purchase: larger(self.max_single_purchase, programme.max_single_purchase),
            rate_limits,
            count_tokens_requests_per_minute: self
                .count_tokens_requests_per_minute
                .max(programme.count_tokens_requests_per_minute),
        }
    }
}

/// A rung of the ladder: its limits and the cumulative purchases that reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    pub limits: LimitSet,
    pub cumulative_purchases_min: NanoUsd,
}

/// The tier ladder, lowest first. The first rung is reached with no purchase at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierLadder {
    tiers: Vec<Tier>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("the tier ladder is empty")]
    Empty,
    #[error("the first tier ('{0}') must need no purchases")]
    FirstTierNotFree(String),
    #[error("tier '{0}' needs no more purchases than the tier below it")]
    NotAscending(String),
    #[error("tier name '{0}' is used twice")]
    DuplicateName(String),
}

impl TierLadder {
    pub fn new(tiers: Vec<Tier>) -> Result<TierLadder, LadderError> {
        let first = tiers.first().ok_or(LadderError::Empty)?;
        if first.cumulative_purchases_min != NanoUsd::ZERO {
            return Err(LadderError::FirstTierNotFree(first.limits.name.clone()));
        }
        for (index, tier) in tiers.iter().enumerate().skip(1) {
            if tier.cumulative_purchases_min <= tiers[index - 1].cumulative_purchases_min {
                return Err(LadderError::NotAscending(tier.limits.name.clone()));
            }
        }
        for (index, tier) in tiers.iter().enumerate() {
            if tiers[..index]
                .iter()
                .any(|other| other.limits.name == tier.limits.name)
            {
                return Err(LadderError::DuplicateName(tier.limits.name.clone()));
            }
        }
        Ok(TierLadder { tiers })
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The highest tier whose threshold `cumulative_purchases` reaches.
    pub fn tier_for(&self, cumulative_purchases: NanoUsd) -> &Tier {
        self.tiers
            .iter()
            .rev()
            .find(|tier| cumulative_purchases >= tier.cumulative_purchases_min)
            .unwrap_or(&self.tiers[0])
    }

    /// The tier above `name`, if any: what the next purchases lead to.
    pub fn next_after(&self, name: &str) -> Option<&Tier> {
        let index = self.tiers.iter().position(|tier| tier.limits.name == name)?;
        self.tiers.get(index + 1)
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|tier| tier.limits.name == name)
    }
}

/// Everything that decides an organization's limits: the ladder, custom limit sets an
/// admin can assign, and promotional programmes with the limit set they uplift to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingPolicy {
    pub ladder: TierLadder,
    pub limit_sets: BTreeMap<String, LimitSet>,
    /// Programme name → the limit set its members are uplifted to.
    pub programmes: BTreeMap<String, String>,
}

impl BillingPolicy {
    /// The organization's own limits: its custom set if it has one, else its tier.
    pub fn base_limits(&self, cumulative_purchases: NanoUsd, limit_set: Option<&str>) -> &LimitSet {
        limit_set
            .and_then(|name| self.limit_sets.get(name))
            .unwrap_or(&self.ladder.tier_for(cumulative_purchases).limits)
    }

    /// The limits in force: the base, uplifted by every programme the organization is an
    /// active member of (it holds unexpired promotional credit of that programme).
    pub fn effective_limits(
        &self,
        cumulative_purchases: NanoUsd,
        limit_set: Option<&str>,
        active_programmes: &[String],
    ) -> LimitSet {
        let mut limits = self.base_limits(cumulative_purchases, limit_set).clone();
        for programme in active_programmes {
            if let Some(uplift) = self
                .programmes
                .get(programme)
                .and_then(|set| self.limit_sets.get(set))
            {
                limits = limits.uplift(uplift);
            }
        }
        limits
    }
}

#[cfg(test)]
mod tests;
