//! Upstream calls in flight per organization, capped so that one organization cannot hold
//! every connection and upstream call of the process (a flood of slow streams from one key
//! would otherwise starve everyone else). A call holds its slot from admission until its
//! reservation ends; the count is this process's (each replica caps its own share).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Calls in flight per organization when the configuration does not say.
pub(crate) const DEFAULT_LIMIT: usize = 10_000;

/// The count of calls in flight of every organization that has any.
#[derive(Debug)]
pub(crate) struct InFlight {
    limit: AtomicUsize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One call in flight; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct CallSlot {
    in_flight: Arc<InFlight>,
    org_id: String,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> InFlight {
        InFlight {
            limit: AtomicUsize::new(limit),
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A slot for one more call of `org_id`, or the limit it would exceed.
    pub(crate) fn try_take(self: &Arc<InFlight>, org_id: &str) -> Result<CallSlot, usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut counts = self.counts();
        let count = counts.entry(org_id.to_owned()).or_insert(0);
        if *count >= limit {
            return Err(limit);
        }
        *count += 1;
        Ok(CallSlot {
            in_flight: self.clone(),
            org_id: org_id.to_owned(),
        })
    }

    #[cfg(test)]
    pub(crate) fn count(&self, org_id: &str) -> usize {
        self.counts().get(org_id).copied().unwrap_or(0)
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Every update leaves the map whole, so a panic elsewhere cannot corrupt it.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut counts = self.in_flight.counts();
        if let Some(count) = counts.get_mut(&self.org_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Only organizations with calls in flight are kept.
                counts.remove(&self.org_id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
