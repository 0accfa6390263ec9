//! Tests of the cacheable prefixes: a conversation's next turn reaches the boundary its
//! previous turn cached (the breakpoint having moved), a change anywhere before a boundary
//! changes its hash, and lifetimes, lookback and request-level breakpoints are read as an
//! upstream reads them.

use serde_json::{Value, json};
use tollgate_core::ratelimit::prompt_cache::{PrefixMemory, TTL_DEFAULT_NANOS, TTL_ONE_HOUR_NANOS};

use crate::cache_prefix::{LOOKBACK_BLOCKS, cacheable_prefixes};

const NOW_NANOS: i64 = 1_767_225_600_000_000_000;

/// A Claude-Code-like turn: tools, a long system prompt with a breakpoint, and the
/// conversation so far with a breakpoint on the newest message's last block.
fn turn(messages: &[(&str, &str)]) -> Value {
    let last = messages.len() - 1;
    let messages: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(index, (role, text))| {
            let mut block = json!({"type": "text", "text": text});
            if index == last {
                block["cache_control"] = json!({"type": "ephemeral"});
            }
            json!({"role": role, "content": [block]})
        })
        .collect();
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "tools": [{"name": "Bash", "description": "Runs a command.", "input_schema": {"type": "object"}}],
        "system": [
            {"type": "text", "text": "You are a coding agent."},
            {"type": "text", "text": "x".repeat(4_000), "cache_control": {"type": "ephemeral"}}
        ],
        "messages": messages,
    })
}

#[test]
fn the_next_turn_reaches_the_prefix_the_previous_turn_cached() {
    let first = cacheable_prefixes(&turn(&[("user", "list the files")]), "fake-sonnet");
    let second = cacheable_prefixes(
        &turn(&[
            ("user", "list the files"),
            ("assistant", "Here they are."),
            ("user", "now count them"),
        ]),
        "fake-sonnet",
    );
    // Tools, two system blocks, then the messages: every boundary is within the lookback.
    assert_eq!(first.boundaries.len(), 4);
    assert_eq!(second.boundaries.len(), 6);
    let prompt = |boundary: &tollgate_core::ratelimit::prompt_cache::PrefixBoundary| {
        (boundary.hash, boundary.input_tokens_estimate)
    };
    // The same prompt up to the first turn's end, though its breakpoint has moved on.
    assert!(
        first
            .boundaries
            .iter()
            .map(prompt)
            .eq(second.boundaries[..4].iter().map(prompt))
    );
    let breakpoints: Vec<Option<i64>> = second
        .boundaries
        .iter()
        .map(|boundary| boundary.breakpoint_ttl_nanos)
        .collect();
    assert_eq!(
        breakpoints,
        [
            None,
            None,
            Some(TTL_DEFAULT_NANOS),
            None,
            None,
            Some(TTL_DEFAULT_NANOS)
        ]
    );
    // Estimates grow with the prompt, about four bytes a token.
    let estimates: Vec<u64> = second
        .boundaries
        .iter()
        .map(|boundary| boundary.input_tokens_estimate)
        .collect();
    assert!(
        estimates.windows(2).all(|pair| pair[0] < pair[1]),
        "{estimates:?}"
    );
    assert!((1_000..1_100).contains(&estimates[2]), "{estimates:?}");

    let mut memory = PrefixMemory::default();
    memory.remember("org", &first, NOW_NANOS);
    assert_eq!(
        memory.cache_read_expected("org", &second, NOW_NANOS + 1),
        first.boundaries[3].input_tokens_estimate
    );
}

#[test]
fn a_change_before_a_boundary_changes_its_hash() {
    let base = turn(&[("user", "list the files")]);
    let hashes = |body: &Value, model: &str| -> Vec<u64> {
        cacheable_prefixes(body, model)
            .boundaries
            .iter()
            .map(|boundary| boundary.hash)
            .collect()
    };
    let original = hashes(&base, "fake-sonnet");
    assert_ne!(
        hashes(&base, "fake-opus"),
        original,
        "the model is part of the prefix"
    );
    let mut edited = base.clone();
    edited["system"][0]["text"] = json!("You are a careful coding agent.");
    let changed = hashes(&edited, "fake-sonnet");
    assert_eq!(changed[0], original[0], "the tools come before the system prompt");
    assert!(
        changed[1..]
            .iter()
            .zip(&original[1..])
            .all(|(new, old)| new != old)
    );
    // The same text under another role is another prompt.
    let mut other_role = base.clone();
    other_role["messages"][0]["role"] = json!("assistant");
    assert_ne!(hashes(&other_role, "fake-sonnet")[3], original[3]);
    // Moving the breakpoint or changing its lifetime does not change the prompt.
    let mut one_hour = base;
    one_hour["system"][1]["cache_control"] = json!({"type": "ephemeral", "ttl": "1h"});
    let prefixes = cacheable_prefixes(&one_hour, "fake-sonnet");
    assert_eq!(prefixes.boundaries[2].hash, original[2]);
    assert_eq!(
        prefixes.boundaries[2].breakpoint_ttl_nanos,
        Some(TTL_ONE_HOUR_NANOS)
    );
}

#[test]
fn without_a_breakpoint_nothing_is_cacheable() {
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
    });
    assert!(cacheable_prefixes(&body, "fake-sonnet").is_empty());
    // A request-level `cache_control` caches up to the last block.
    let mut automatic = body;
    automatic["cache_control"] = json!({"type": "ephemeral"});
    let prefixes = cacheable_prefixes(&automatic, "fake-sonnet");
    assert_eq!(prefixes.boundaries.len(), 2);
    assert_eq!(
        prefixes.boundaries[1].breakpoint_ttl_nanos,
        Some(TTL_DEFAULT_NANOS)
    );
}

#[test]
fn only_the_blocks_an_upstream_looks_back_at_are_kept() {
    let mut conversation = vec![("user", "start")];
    for _ in 0..30 {
        conversation.push(("assistant", "ok"));
        conversation.push(("user", "go on"));
    }
    let prefixes = cacheable_prefixes(&turn(&conversation), "fake-sonnet");
    // The system breakpoint and the blocks before it, then the last 20 messages.
    assert_eq!(prefixes.boundaries.len(), 3 + LOOKBACK_BLOCKS);
}
