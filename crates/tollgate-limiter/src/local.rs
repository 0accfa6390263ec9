//! Embedded mode: every bucket in one in-process map behind one `std` mutex, held only for
//! the few microseconds of core arithmetic and never across an `.await`. One lock (rather
//! than shards) keeps multi-bucket admission atomic without a lock order to get wrong; the
//! critical section is a handful of map lookups, far from being the gateway's bottleneck.
//!
//! A full bucket carries no information, so it is not stored: an absent key is a full
//! bucket, and buckets that have been full for a while are pruned every so often, which
//! bounds memory by the keys active in the last couple of minutes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tollgate_core::ratelimit::{self, BucketDemand, BucketSnapshot, BucketState, Refusal, WINDOW_NANOS};

use crate::{Admitted, BucketKey, Demand, LimitRefusal, merge};

/// In-process buckets; clones share them.
#[derive(Clone, Default)]
pub struct LocalLimiter {
    buckets: Arc<Mutex<Buckets>>,
}

impl fmt::Debug for LocalLimiter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("LocalLimiter").finish_non_exhaustive()
    }
}

impl LocalLimiter {
    /// How many buckets are stored (the rest are full); for metrics and tests.
    pub fn tracked_buckets(&self) -> usize {
        self.lock().states.len()
    }

    /// A limiter that prunes after every `writes` writes at least (`None`: never), so tests
    /// can compare pruning against keeping everything.
    #[cfg(test)]
    pub(crate) fn with_prune_interval(writes: Option<usize>) -> LocalLimiter {
        let buckets = Buckets {
            prune_interval_writes_min: writes,
            ..Buckets::default()
        };
        LocalLimiter {
            buckets: Arc::new(Mutex::new(buckets)),
        }
    }

    pub(crate) fn admit(&self, demands: &[Demand], now_nanos: i64) -> Result<Admitted, LimitRefusal> {
        let (merged, merged_index) = merge(demands);

        let mut buckets = self.lock();
        let core_demands: Vec<BucketDemand> = merged
            .iter()
            .map(|entry| BucketDemand {
                state: buckets.state(entry.key),
                per_minute: entry.per_minute,
                amount: entry.amount,
                credit: entry.credit,
            })
            .collect();
        match ratelimit::admit(&core_demands, now_nanos) {
            Ok(states) => {
                for (entry, state) in merged.iter().zip(&states) {
                    // Taking nothing (or from a zero limit) leaves the state as it was,
                    // and absent stays absent.
                    if entry.amount.saturating_add(entry.credit) > 0 && entry.per_minute > 0 {
                        buckets.states.insert(entry.key.clone(), *state);
                    }
                }
                buckets.after_write(now_nanos);
                drop(buckets);
                let snapshots = demands
                    .iter()
                    .zip(&merged_index)
                    .map(|(demand, &index)| ratelimit::snapshot(states[index], demand.per_minute, now_nanos))
                    .collect();
                Ok(Admitted { snapshots })
            }
            Err(Refusal::Exhausted {
                index,
                retry_after_nanos,
            }) => {
                let entry = &merged[index];
                Err(LimitRefusal::Exhausted {
                    key: entry.key.clone(),
                    per_minute: entry.per_minute,
                    retry_after_nanos,
                })
            }
            Err(Refusal::ExceedsCapacity { index }) => {
                let entry = &merged[index];
                Err(LimitRefusal::ExceedsCapacity {
                    key: entry.key.clone(),
                    per_minute: entry.per_minute,
                    amount: entry.amount,
                })
            }
        }
    }

    pub(crate) fn adjust(&self, key: &BucketKey, per_minute: u64, delta_refund: i64, now_nanos: i64) {
        if delta_refund == 0 {
            return;
        }
        let mut buckets = self.lock();
        let stored = buckets.states.get(key).copied();
        let state = stored.unwrap_or(FULL);
        let amount = delta_refund.unsigned_abs();
        let adjusted = if delta_refund > 0 {
            ratelimit::refund(state, per_minute, amount, now_nanos)
        } else {
            ratelimit::charge_unconditionally(state, per_minute, amount, now_nanos)
        };
        if stored.is_some() || adjusted.tat_nanos > now_nanos {
            buckets.states.insert(key.clone(), adjusted);
        }
        buckets.after_write(now_nanos);
    }

    pub(crate) fn peek(&self, demands: &[Demand], now_nanos: i64) -> Vec<BucketSnapshot> {
        let buckets = self.lock();
        demands
            .iter()
            .map(|demand| ratelimit::snapshot(buckets.state(&demand.key), demand.per_minute, now_nanos))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // The core's arithmetic cannot panic halfway through a write, so a poisoned map is
        // still consistent.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bucket that is full at every instant: what an absent key means.
const FULL: BucketState = BucketState { tat_nanos: i64::MIN };

/// Writes between prunes, at least; a larger map waits for as many writes as it has
/// entries, so pruning costs O(1) per write however many keys are active.
const PRUNE_INTERVAL_WRITES_MIN: usize = 1_024;

/// How long a bucket stays stored after it is full again. Callers' instants are not
/// strictly ordered (a request stamped earlier can reach the lock later), so a bucket is
/// dropped only once it has been full for a whole window: to any caller whose `now` is
/// within a window of the pruning one, a dropped bucket and a kept one look the same.
const PRUNE_GRACE_NANOS: i64 = WINDOW_NANOS;

struct Buckets {
    states: HashMap<BucketKey, BucketState>,
    writes_since_prune: usize,
    prune_interval_writes_min: Option<usize>,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets {
            states: HashMap::new(),
            writes_since_prune: 0,
            prune_interval_writes_min: Some(PRUNE_INTERVAL_WRITES_MIN),
        }
    }
}

impl Buckets {
    fn state(&self, key: &BucketKey) -> BucketState {
        self.states.get(key).copied().unwrap_or(FULL)
    }

    fn after_write(&mut self, now_nanos: i64) {
        let Some(interval_min) = self.prune_interval_writes_min else {
            return;
        };
        self.writes_since_prune += 1;
        if self.writes_since_prune >= interval_min.max(self.states.len()) {
            let full_before = now_nanos.saturating_sub(PRUNE_GRACE_NANOS);
            self.states.retain(|_, state| state.tat_nanos > full_before);
            self.writes_since_prune = 0;
        }
    }
}

#[cfg(test)]
mod tests;
