//! Tests of the prompt-cache memory: a conversation growing turn by turn is expected to
//! read its previous prefix, lifetimes expire and are refreshed, scopes are apart, and the
//! memory agrees with a naive reference over random histories, however small its cap.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::ratelimit::prompt_cache::{
    CacheablePrefixes, PrefixBoundary, PrefixMemory, TTL_DEFAULT_NANOS, TTL_ONE_HOUR_NANOS,
    split_input_estimate,
};

const SECOND_NANOS: i64 = 1_000_000_000;
const NOW_NANOS: i64 = 1_767_225_600 * SECOND_NANOS;

fn boundary(hash: u64, input_tokens_estimate: u64, breakpoint_ttl_nanos: Option<i64>) -> PrefixBoundary {
    PrefixBoundary {
        hash,
        input_tokens_estimate,
        breakpoint_ttl_nanos,
    }
}

fn prefixes(boundaries: &[PrefixBoundary]) -> CacheablePrefixes {
    CacheablePrefixes {
        boundaries: boundaries.to_vec(),
    }
}

#[test]
fn the_next_turn_of_a_conversation_expects_to_read_the_previous_prefix() {
    let mut memory = PrefixMemory::default();
    // Turn one: system (breakpoint), tools and a first message (breakpoint).
    let first = prefixes(&[
        boundary(1, 20_000, Some(TTL_DEFAULT_NANOS)),
        boundary(2, 27_000, Some(TTL_DEFAULT_NANOS)),
    ]);
    assert_eq!(memory.cache_read_expected("org", &first, NOW_NANOS), 0);
    memory.remember("org", &first, NOW_NANOS);
    // Turn two: the same blocks (the old breakpoint is now a plain boundary), then more.
    let second = prefixes(&[
        boundary(1, 20_000, Some(TTL_DEFAULT_NANOS)),
        boundary(2, 27_000, None),
        boundary(3, 27_400, Some(TTL_DEFAULT_NANOS)),
    ]);
    let later = NOW_NANOS + 2 * SECOND_NANOS;
    assert_eq!(memory.cache_read_expected("org", &second, later), 27_000);
    assert_eq!(split_input_estimate(27_500, 27_000), (500, 27_000));
    // Another organization (or model) has its own cache.
    assert_eq!(memory.cache_read_expected("other", &second, later), 0);
}

#[test]
fn an_entry_expires_after_its_lifetime_unless_refreshed() {
    let mut memory = PrefixMemory::default();
    let short = prefixes(&[boundary(1, 1_000, Some(TTL_DEFAULT_NANOS))]);
    let long = prefixes(&[boundary(2, 5_000, Some(TTL_ONE_HOUR_NANOS))]);
    memory.remember("org", &short, NOW_NANOS);
    memory.remember("org", &long, NOW_NANOS);
    let both = prefixes(&[boundary(1, 1_000, None), boundary(2, 5_000, None)]);
    let just_before = NOW_NANOS + TTL_DEFAULT_NANOS - 1;
    assert_eq!(memory.cache_read_expected("org", &short, just_before), 1_000);
    assert_eq!(memory.cache_read_expected("org", &short, just_before + 1), 0);
    assert_eq!(memory.cache_read_expected("org", &both, just_before + 1), 5_000);
    // A read refreshes a remembered entry for its own lifetime, though not a breakpoint now.
    memory.remember("org", &prefixes(&[boundary(1, 1_000, None)]), just_before);
    assert_eq!(
        memory.cache_read_expected("org", &short, just_before + TTL_DEFAULT_NANOS - 1),
        1_000
    );
    // An expired entry is not brought back by a plain boundary.
    let expired_at = just_before + TTL_DEFAULT_NANOS;
    memory.remember("org", &prefixes(&[boundary(1, 1_000, None)]), expired_at);
    assert_eq!(memory.cache_read_expected("org", &short, expired_at), 0);
    // A five-minute write never shortens an hour's entry.
    memory.remember(
        "org",
        &prefixes(&[boundary(2, 5_000, Some(TTL_DEFAULT_NANOS))]),
        NOW_NANOS,
    );
    assert_eq!(
        memory.cache_read_expected("org", &long, NOW_NANOS + TTL_ONE_HOUR_NANOS - 1),
        5_000
    );
}

#[test]
fn a_full_memory_drops_expired_entries_first() {
    let mut memory = PrefixMemory::with_entries_max(2);
    memory.remember("a", &prefixes(&[boundary(1, 10, Some(SECOND_NANOS))]), NOW_NANOS);
    memory.remember(
        "b",
        &prefixes(&[boundary(2, 20, Some(TTL_DEFAULT_NANOS))]),
        NOW_NANOS,
    );
    assert_eq!(memory.len(), 2);
    let later = NOW_NANOS + 2 * SECOND_NANOS;
    memory.remember("c", &prefixes(&[boundary(3, 30, Some(TTL_DEFAULT_NANOS))]), later);
    assert_eq!(memory.len(), 2, "the expired entry of 'a' made room");
    let two = prefixes(&[boundary(2, 20, None)]);
    assert_eq!(memory.cache_read_expected("b", &two, later), 20);
}

#[derive(Clone, Debug)]
enum Call {
    Remember(u8, Vec<(u64, Option<i64>)>),
    Expect(u8, Vec<u64>),
}

fn call() -> impl Strategy<Value = (i64, Call)> {
    let wait = prop_oneof![3 => 0_i64..=10 * SECOND_NANOS, 1 => 0_i64..=2 * TTL_DEFAULT_NANOS];
    let ttl = prop_oneof![
        2 => Just(None),
        2 => Just(Some(TTL_DEFAULT_NANOS)),
        1 => Just(Some(TTL_ONE_HOUR_NANOS)),
        1 => (1_i64..=TTL_DEFAULT_NANOS).prop_map(Some),
    ];
    let call = prop_oneof![
        (0_u8..3, vec((0_u64..12, ttl), 0..5))
            .prop_map(|(scope, boundaries)| Call::Remember(scope, boundaries)),
        (0_u8..3, vec(0_u64..12, 0..6)).prop_map(|(scope, hashes)| Call::Expect(scope, hashes)),
    ];
    (wait, call)
}

/// Each hash's estimate is fixed (a hash stands for one prefix).
fn estimate_of(hash: u64) -> u64 {
    1_000 * (hash + 1)
}

proptest! {
    /// With room for everything, the memory predicts exactly what a log of every write and
    /// refresh predicts; with a small cap it never predicts a read the log would not.
    #[test]
    fn the_memory_agrees_with_a_reference_log(calls in vec(call(), 1..60), entries_max in prop_oneof![Just(1_000_usize), 1_usize..4]) {
        let mut memory = PrefixMemory::with_entries_max(entries_max);
        // (scope, hash) -> (expires at, lifetime)
        let mut log: std::collections::HashMap<(u8, u64), (i64, i64)> = std::collections::HashMap::new();
        let mut now_nanos = NOW_NANOS;
        for (wait, call) in calls {
            now_nanos += wait;
            match call {
                Call::Remember(scope, boundaries) => {
                    let request = prefixes(&boundaries.iter().map(|&(hash, ttl)| boundary(hash, estimate_of(hash), ttl)).collect::<Vec<_>>());
                    memory.remember(&scope.to_string(), &request, now_nanos);
                    for (hash, ttl) in boundaries {
                        let existing = log.get(&(scope, hash)).copied().filter(|(expires, _)| *expires > now_nanos);
                        let lifetime = match (ttl, existing) {
                            (Some(ttl), Some((_, old))) => ttl.max(old),
                            (Some(ttl), None) => ttl,
                            (None, Some((_, old))) => old,
                            (None, None) => continue,
                        };
                        let expires = existing.map_or(now_nanos + lifetime, |(old, _)| old.max(now_nanos + lifetime));
                        log.insert((scope, hash), (expires, lifetime));
                    }
                }
                Call::Expect(scope, hashes) => {
                    let request = prefixes(&hashes.iter().map(|&hash| boundary(hash, estimate_of(hash), None)).collect::<Vec<_>>());
                    let predicted = memory.cache_read_expected(&scope.to_string(), &request, now_nanos);
                    let reference = hashes
                        .iter()
                        .filter(|hash| log.get(&(scope, **hash)).is_some_and(|(expires, _)| *expires > now_nanos))
                        .map(|&hash| estimate_of(hash))
                        .max()
                        .unwrap_or(0);
                    if entries_max >= 1_000 {
                        prop_assert_eq!(predicted, reference);
                    } else {
                        prop_assert!(predicted <= reference, "{} predicted, {} remembered", predicted, reference);
                    }
                    // Pruned before each write, which adds at most its own boundaries.
                    prop_assert!(memory.len() <= entries_max + 5);
                }
            }
        }
    }

    /// The split never takes on credit more than the estimate, and adds up to it.
    #[test]
    fn the_split_adds_up(estimate in any::<u64>(), expected in any::<u64>()) {
        let (amount, credit) = split_input_estimate(estimate, expected);
        prop_assert_eq!(amount + credit, estimate);
        prop_assert!(credit <= expected);
    }
}
