//! What the service records for `/metrics`, through the `metrics` facade (a no-op until the
//! binary installs a recorder): tokens and cost of every settlement, reservations held by
//! this process, rate-limit and spend decisions, the reaper, auto-reloads. The families
//! are described once, in the binary's `telemetry.rs`.
//!
//! Labels stay bounded: models and metrics are few; organizations beyond a configured count
//! are labelled `other` (`OrganizationLabels`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tollgate_core::money::NanoUsd;
use tollgate_core::usage::TokenUsage;
use tollgate_limiter::Metric;

use crate::ServiceError;
use tollgate_store::SettleOutcome;

/// The label every organization beyond the bound shares.
pub(crate) const OTHER_ORGANIZATIONS: &str = "other";

/// The organizations with a label of their own: the first `max` seen by this process.
#[derive(Debug)]
pub(crate) struct OrganizationLabels {
    max: AtomicUsize,
    labelled: Mutex<HashSet<String>>,
}

impl Default for OrganizationLabels {
    fn default() -> OrganizationLabels {
        OrganizationLabels {
            max: AtomicUsize::new(100),
            labelled: Mutex::default(),
        }
    }
}

impl OrganizationLabels {
    pub(crate) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// `org_id` itself while fewer than the bound have a label (or it has one), else `other`.
    pub(crate) fn label(&self, org_id: &str) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        if labelled.contains(org_id) {
            return org_id.to_owned();
        }
        if labelled.len() < self.max.load(Ordering::Relaxed) {
            labelled.insert(org_id.to_owned());
            return org_id.to_owned();
        }
        OTHER_ORGANIZATIONS.to_owned()
    }
}

/// A reservation's end: its tokens and cost when charged, and how it ended.
pub(crate) fn settled(
    model: &str,
    organization: String,
    usage: &TokenUsage,
    outcome: &Result<SettleOutcome, ServiceError>,
) {
    let result = match outcome {
        Ok(outcome) if outcome.charged.is_positive() => "charged",
        Ok(_) => "voided",
        Err(_) => "failed",
    };
    metrics::counter!("tollgate_settlements_total", "result" => result).increment(1);
    let Ok(outcome) = outcome else {
        return;
    };
    if !outcome.charged.is_positive() {
        return;
    }
    for (kind, tokens) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_write_5m", usage.cache_creation_5m_input_tokens),
        ("cache_write_1h", usage.cache_creation_1h_input_tokens),
        ("cache_read", usage.cache_read_input_tokens),
    ] {
        if tokens > 0 {
            metrics::counter!("tollgate_tokens_total", "model" => model.to_owned(), "kind" => kind)
                .increment(tokens);
        }
    }
    metrics::counter!(
        "tollgate_cost_nanousd_total",
        "model" => model.to_owned(),
        "organization" => organization
    )
    .increment(nanos(outcome.charged));
}

/// A reservation of a request running here began (`true`) or ended (`false`). The credit
/// held is two exact counters, placed and ended, whose difference is what is held now (a
/// gauge would carry nano-USD as a float).
pub(crate) fn held(amount: NanoUsd, began: bool) {
    if began {
        metrics::gauge!("tollgate_reservations_open").increment(1);
        metrics::counter!("tollgate_holds_placed_nanousd_total").increment(nanos(amount));
    } else {
        metrics::gauge!("tollgate_reservations_open").decrement(1);
        metrics::counter!("tollgate_holds_ended_nanousd_total").increment(nanos(amount));
    }
}

/// A rate-limit admission over one bucket: `scope` is `organization` or `workspace`.
pub(crate) fn rate_limit(metric: Metric, scope: &'static str, admitted: bool) {
    let metric = match metric {
        Metric::Requests => "requests",
        Metric::InputTokens => "input_tokens",
        Metric::OutputTokens => "output_tokens",
        Metric::CountTokensRequests => "count_tokens_requests",
    };
    let decision = if admitted { "admitted" } else { "refused" };
    metrics::counter!(
        "tollgate_ratelimit_decisions_total",
        "metric" => metric,
        "scope" => scope,
        "decision" => decision
    )
    .increment(1);
}

/// A reservation refused for lack of credit (`credit`) or a spent limit (`spend_limit`).
pub(crate) fn spend_refused(reason: &'static str) {
    metrics::counter!("tollgate_spend_refusals_total", "reason" => reason).increment(1);
}

pub(crate) fn reaped(voided: usize) {
    metrics::counter!("tollgate_reaper_voids_total").increment(voided as u64);
}

/// An auto-reload that ran to a payment: `succeeded`, `declined` or `failed`.
pub(crate) fn auto_reload(result: &'static str) {
    metrics::counter!("tollgate_auto_reloads_total", "result" => result).increment(1);
}

fn nanos(amount: NanoUsd) -> u64 {
    u64::try_from(amount.nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizations_beyond_the_bound_share_one_label() {
        let labels = OrganizationLabels::default();
        labels.set_max(2);
        assert_eq!(labels.label("org_a"), "org_a");
        assert_eq!(labels.label("org_b"), "org_b");
        assert_eq!(labels.label("org_c"), OTHER_ORGANIZATIONS);
        // The first ones keep theirs, however many come later.
        assert_eq!(labels.label("org_a"), "org_a");
        assert_eq!(labels.label("org_d"), OTHER_ORGANIZATIONS);
    }
}
