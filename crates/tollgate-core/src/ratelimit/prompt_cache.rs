//! Which part of a request's input an upstream is expected to read from its prompt cache,
//! so that admission can take that part on credit rather than require it to fit (cache
//! reads do not count against an input-tokens-per-minute limit).
//!
//! A request's cacheable prefixes are described by [`CacheablePrefixes`]: one
//! [`PrefixBoundary`] per content block (in the cache's order: tools, system, messages),
//! carrying a hash of everything up to it and the input tokens estimated up to it, and a
//! lifetime where a `cache_control` breakpoint ends. [`PrefixMemory`] remembers, per scope,
//! the boundaries that ended a breakpoint of a request the upstream reported caching for,
//! until their lifetime passes; the next request whose prefix reaches a remembered boundary
//! is expected to read that much from the cache.
//!
//! A prediction only moves tokens between what must fit and what is taken on credit;
//! settlement corrects the bucket to the actual count whatever was predicted. So the memory
//! may be per process, forget, or be wrong without loosening a limit beyond the bound in
//! `ratelimit`. Hashing the request body is the gateway's; this module sees only numbers
//! and reads no clock.

use std::collections::HashMap;

/// The default lifetime of a cache entry: five minutes.
pub const TTL_DEFAULT_NANOS: i64 = 5 * 60 * 1_000_000_000;
/// The lifetime of a cache entry written with `"ttl": "1h"`.
pub const TTL_ONE_HOUR_NANOS: i64 = 60 * 60 * 1_000_000_000;
/// Entries remembered at most by default; beyond that, expired ones are dropped and, if
/// that is not enough, everything is (which only costs predictions).
pub const ENTRIES_MAX_DEFAULT: usize = 100_000;

/// One content-block boundary of a request's prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixBoundary {
    /// A hash of the prompt up to this boundary (the model and every block before it, each
    /// without its `cache_control` marker).
    pub hash: u64,
    /// Input tokens estimated up to this boundary, by the estimator of the whole request.
    pub input_tokens_estimate: u64,
    /// Set where a `cache_control` breakpoint ends: the lifetime of the entry the request
    /// writes or refreshes there.
    pub breakpoint_ttl_nanos: Option<i64>,
}

/// The boundaries of one request at which the upstream could read or write its cache, in
/// prompt order. Empty when the request sets no breakpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheablePrefixes {
    pub boundaries: Vec<PrefixBoundary>,
}

impl CacheablePrefixes {
    pub fn is_empty(&self) -> bool {
        self.boundaries.is_empty()
    }
}

/// Splits an input estimate into what must fit in the bucket (`amount`) and what is taken
/// on credit (`credit`, the expected cache read, never more than the estimate).
pub fn split_input_estimate(input_tokens_estimate: u64, cache_read_expected: u64) -> (u64, u64) {
    let credit = cache_read_expected.min(input_tokens_estimate);
    (input_tokens_estimate - credit, credit)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    expires_at_nanos: i64,
    ttl_nanos: i64,
}

/// Prefixes recently cached, per scope (an organization and model). Pure: every method
/// takes `now`.
#[derive(Clone, Debug)]
pub struct PrefixMemory {
    scopes: HashMap<String, HashMap<u64, Entry>>,
    entries: usize,
    entries_max: usize,
}

impl Default for PrefixMemory {
    fn default() -> PrefixMemory {
        PrefixMemory::with_entries_max(ENTRIES_MAX_DEFAULT)
    }
}

impl PrefixMemory {
    pub fn with_entries_max(entries_max: usize) -> PrefixMemory {
        PrefixMemory {
            scopes: HashMap::new(),
            entries: 0,
            entries_max,
        }
    }

    /// How many boundaries are remembered (expired ones until they are pruned).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The input tokens `prefixes` is expected to read from the cache at `now_nanos`: the
    /// estimate up to its furthest boundary remembered in `scope` and not yet expired, or
    /// zero.
    pub fn cache_read_expected(&self, scope: &str, prefixes: &CacheablePrefixes, now_nanos: i64) -> u64 {
        let Some(entries) = self.scopes.get(scope) else {
            return 0;
        };
        prefixes
            .boundaries
            .iter()
            .filter(|boundary| {
                entries
                    .get(&boundary.hash)
                    .is_some_and(|entry| entry.expires_at_nanos > now_nanos)
            })
            .map(|boundary| boundary.input_tokens_estimate)
            .max()
            .unwrap_or(0)
    }

    /// Records that the upstream cached `prefixes` at `now_nanos` (it reported a cache
    /// write or read): every breakpoint is remembered for its lifetime, and every other
    /// boundary still remembered is refreshed, as a cache read refreshes its entry. Never
    /// shortens a lifetime.
    pub fn remember(&mut self, scope: &str, prefixes: &CacheablePrefixes, now_nanos: i64) {
        if prefixes.is_empty() {
            return;
        }
        if self.entries >= self.entries_max {
            self.prune(now_nanos);
        }
        let entries = self.scopes.entry(scope.to_owned()).or_default();
        for boundary in &prefixes.boundaries {
            let existing = entries
                .get(&boundary.hash)
                .copied()
                .filter(|entry| entry.expires_at_nanos > now_nanos);
            let ttl_nanos = match (boundary.breakpoint_ttl_nanos, existing) {
                (Some(ttl), Some(entry)) => ttl.max(entry.ttl_nanos),
                (Some(ttl), None) => ttl,
                (None, Some(entry)) => entry.ttl_nanos,
                (None, None) => continue,
            };
            let expires_at_nanos = now_nanos.saturating_add(ttl_nanos);
            let refreshed = Entry {
                expires_at_nanos: existing.map_or(expires_at_nanos, |entry| {
                    entry.expires_at_nanos.max(expires_at_nanos)
                }),
                ttl_nanos,
            };
            if entries.insert(boundary.hash, refreshed).is_none() {
                self.entries += 1;
            }
        }
    }

    /// Drops expired entries, and everything if that is not enough to get under the cap.
    fn prune(&mut self, now_nanos: i64) {
        for entries in self.scopes.values_mut() {
            entries.retain(|_, entry| entry.expires_at_nanos > now_nanos);
        }
        self.scopes.retain(|_, entries| !entries.is_empty());
        self.entries = self.scopes.values().map(HashMap::len).sum();
        if self.entries >= self.entries_max {
            self.scopes.clear();
            self.entries = 0;
        }
    }
}

#[cfg(test)]
mod tests;
