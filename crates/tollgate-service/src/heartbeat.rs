//! The heartbeat of requests still running in this process: their reservation ids, and the
//! maintenance pass's first duty, which moves their deadlines to `now` + the reservation TTL
//! before the reaper looks for overdue ones. A request that runs longer than the TTL (a
//! long stream, a slow simulated model, a chain of failovers) thus keeps its reservation,
//! and only a process that died leaves one to pass its deadline. Each replica beats for its
//! own requests; the TTL must exceed two maintenance intervals so that a beat always lands
//! in time (checked at start).
//!
//! It moves deadlines only, never amounts; a `Live` also counts its reservation, and the
//! amount it holds, in the process's metrics while it lives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tollgate_core::money::NanoUsd;

/// The reservations of this process's running requests.
#[derive(Debug, Default)]
pub(crate) struct LiveReservations {
    ids: Mutex<HashSet<String>>,
}

/// One running request's reservation; dropping it ends its heartbeat.
#[derive(Debug)]
pub(crate) struct Live {
    registry: Arc<LiveReservations>,
    reservation_id: String,
    amount: NanoUsd,
}

impl LiveReservations {
    pub(crate) fn register(self: &Arc<LiveReservations>, reservation_id: &str, amount: NanoUsd) -> Live {
        self.ids().insert(reservation_id.to_owned());
        crate::telemetry::held(amount, true);
        Live {
            registry: self.clone(),
            reservation_id: reservation_id.to_owned(),
            amount,
        }
    }

    /// Every live reservation id, in no particular order.
    pub(crate) fn ids_now(&self) -> Vec<String> {
        self.ids().iter().cloned().collect()
    }

    fn ids(&self) -> MutexGuard<'_, HashSet<String>> {
        // Every update leaves the set whole, so a panic elsewhere cannot corrupt it.
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.registry.ids().remove(&self.reservation_id);
        crate::telemetry::held(self.amount, false);
    }
}
