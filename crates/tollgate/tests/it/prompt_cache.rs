//! Cache-aware input limits end to end: Claude Code's turns (the same long prompt, cached
//! upstream after the first, behind a `cache_control` breakpoint) on the Evaluation tier's
//! 30,000 input tokens a minute wait only for their new input, and a cache that misses is
//! charged to the bucket at settlement, so later requests wait for it.

use serde_json::{Value, json};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{Options, TestApp, spawn_app_with};

/// System prompt bytes: about 27,800 input tokens at four bytes a token, with the tools
/// and the first message about 28,000, Claude Code's size.
const SYSTEM_PROMPT_BYTES: usize = 111_000;

/// A Claude-Code-like request: tools, a long system prompt with a breakpoint, and the
/// conversation so far with a breakpoint on the newest message.
fn turn(system_prompt: &str, user_turns: &[&str]) -> Value {
    let mut messages = Vec::new();
    for (index, text) in user_turns.iter().enumerate() {
        if index > 0 {
            messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "Done."}]}));
        }
        messages.push(json!({"role": "user", "content": [{"type": "text", "text": text}]}));
    }
    if let Some(last) = messages.last_mut() {
        last["content"][0]["cache_control"] = json!({"type": "ephemeral"});
    }
    json!({
        "model": "fake-sonnet",
        "max_tokens": 32000,
        "stream": true,
        "tools": [{"name": "Bash", "description": "Runs a shell command.", "input_schema": {"type": "object"}}],
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": system_prompt, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": messages,
    })
}

/// The upstream's usage for one turn: `cached` tokens read from its cache (or, for the first
/// turn, written to it) and `uncached` new ones.
fn reply(uncached: u64, cache_written: u64, cache_read: u64) -> Behavior {
    Behavior::Ok(Reply {
        input_tokens: uncached,
        output_tokens: 20,
        cache_creation_input_tokens: cache_written,
        cache_read_input_tokens: cache_read,
        ..Reply::default()
    })
}

/// Sends a turn and reads its stream to the end (by then it is settled); returns the status.
async fn send(app: &TestApp, body: &Value) -> u16 {
    let response = app.post_messages(body).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("the body");
    if status == 200 {
        assert!(text.contains("message_stop"), "{text}");
        app.wait_for_settlement().await;
    }
    status
}

fn retry_after_seconds(response: &reqwest::Response) -> i64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a retry-after in whole seconds")
}

#[tokio::test]
async fn claude_codes_cached_turns_on_tier_one_wait_only_for_their_new_input() {
    let app = spawn_app_with(Options {
        contract_tiers: true,
        manual_clock: true,
        starter_grant_usd: "50.00",
        ..Options::default()
    })
    .await;
    let clock = app.clock.as_ref().expect("manual clock");
    let system_prompt = "x".repeat(SYSTEM_PROMPT_BYTES);
    let step = || clock.advance(chrono::Duration::milliseconds(1_500));

    // Turn one writes the cache: 28,000 of the 30,000 a minute.
    app.fake.push_behavior(reply(200, 27_800, 0));
    assert_eq!(send(&app, &turn(&system_prompt, &["list the files"])).await, 200);
    step();

    // The same size without a cached prefix must wait, as every turn did before: ~50 s.
    let other_prompt = "y".repeat(SYSTEM_PROMPT_BYTES);
    let uncached = app.post_messages(&turn(&other_prompt, &["list the files"])).await;
    assert_eq!(uncached.status(), 429);
    let waited_uncached = retry_after_seconds(&uncached);
    assert!((45..=55).contains(&waited_uncached), "{waited_uncached} s");

    // Turns two and three read the prefix from the cache: admitted at once.
    app.fake.push_behavior(reply(150, 100, 27_800));
    let second = turn(&system_prompt, &["list the files", "count them"]);
    assert_eq!(send(&app, &second).await, 200);
    step();
    app.fake.push_behavior(reply(150, 100, 27_900));
    let third = turn(&system_prompt, &["list the files", "count them", "sort them"]);
    assert_eq!(send(&app, &third).await, 200);
    step();
    assert_eq!(
        app.fake.requests().len(),
        3,
        "the refused request never reached the upstream"
    );

    // Turn four misses the cache (evicted upstream): admitted on its prediction, then
    // charged whole at settlement, so the bucket is in debt and the next turn waits for it.
    app.fake.push_behavior(reply(28_300, 0, 0));
    let fourth = turn(
        &system_prompt,
        &["list the files", "count them", "sort them", "again"],
    );
    assert_eq!(send(&app, &fourth).await, 200);
    let fifth = turn(
        &system_prompt,
        &["list the files", "count them", "sort them", "again", "thanks"],
    );
    let refused = app.post_messages(&fifth).await;
    assert_eq!(refused.status(), 429, "the miss was charged to the bucket");
    let waited = retry_after_seconds(&refused);
    assert!((1..=60).contains(&waited), "{waited} s");
    clock.advance(chrono::Duration::seconds(waited));
    app.fake.push_behavior(reply(150, 28_300, 0));
    assert_eq!(send(&app, &fifth).await, 200);

    // Every turn was charged what the upstream reported.
    let records = app.usage_records().await;
    let cache_reads: u64 = records
        .iter()
        .map(|record| record.usage.cache_read_input_tokens)
        .sum();
    assert_eq!(cache_reads, 27_800 + 27_900);
    app.assert_ledger_clean().await;
}
