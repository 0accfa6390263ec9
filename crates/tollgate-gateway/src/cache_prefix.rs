//! The cacheable prefixes of a Messages request, for cache-aware input limits: walks the
//! prompt in the order an upstream caches it (tools, then system, then messages), hashes it
//! up to each content block, and marks the blocks that end a `cache_control` breakpoint.
//!
//! It reads the parsed body and never changes it. A block is hashed without its own
//! `cache_control` marker, because a conversation's next turn sends the same blocks with the
//! marker moved to its newest message, and the upstream still reads the old prefix from its
//! cache. Only the boundaries an upstream looks at are kept: each breakpoint and the
//! [`LOOKBACK_BLOCKS`] blocks before it. What is remembered and predicted from them is in
//! `tollgate_core::ratelimit::prompt_cache`; a wrong prediction is corrected at settlement,
//! so the hash needs to tell prompts apart, not to resist forgery.

use std::hash::{DefaultHasher, Hasher};
use std::io;

use serde_json::Value;
use tollgate_core::pricing::input_tokens_estimate;
use tollgate_core::ratelimit::prompt_cache::{
    CacheablePrefixes, PrefixBoundary, TTL_DEFAULT_NANOS, TTL_ONE_HOUR_NANOS,
};

/// How many blocks up to a breakpoint an upstream checks for an earlier cache entry
/// (Anthropic: about 20).
pub(crate) const LOOKBACK_BLOCKS: usize = 20;

/// The request's cacheable prefixes for `model`; empty when no block (and not the request
/// itself) carries `cache_control`.
pub(crate) fn cacheable_prefixes(body: &Value, model: &str) -> CacheablePrefixes {
    let blocks = prompt_blocks(body);
    let mut breakpoints: Vec<(usize, i64)> = blocks
        .iter()
        .enumerate()
        .filter_map(|(index, block)| breakpoint_ttl(block.content).map(|ttl| (index, ttl)))
        .collect();
    // A request-level `cache_control` caches up to the last block.
    if let (Some(ttl), Some(last)) = (breakpoint_ttl(body), blocks.len().checked_sub(1))
        && breakpoints.last().is_none_or(|&(index, _)| index < last)
    {
        breakpoints.push((last, ttl));
    }
    let Some(&(last_breakpoint, _)) = breakpoints.last() else {
        return CacheablePrefixes::default();
    };
    let mut looked_at = vec![false; last_breakpoint + 1];
    for &(index, _) in &breakpoints {
        let first = (index + 1).saturating_sub(LOOKBACK_BLOCKS);
        looked_at[first..=index].fill(true);
    }

    let mut writer = HashingWriter::default();
    writer.write_marker(b"model", model);
    let mut boundaries = Vec::new();
    for (index, block) in blocks.iter().take(last_breakpoint + 1).enumerate() {
        if let Some(role) = block.opens_message {
            writer.write_marker(b"message", role);
        }
        writer.write_marker(block.section, "");
        writer.write_block(block.content);
        if looked_at[index] {
            boundaries.push(PrefixBoundary {
                hash: writer.hasher.finish(),
                input_tokens_estimate: input_tokens_estimate(writer.bytes),
                breakpoint_ttl_nanos: breakpoints
                    .iter()
                    .find(|&&(breakpoint, _)| breakpoint == index)
                    .map(|&(_, ttl)| ttl),
            });
        }
    }
    CacheablePrefixes { boundaries }
}

/// One content block of the prompt, in cache order.
struct Block<'a> {
    section: &'static [u8],
    /// The role of the message this block opens, if it is a message's first block.
    opens_message: Option<&'a str>,
    content: &'a Value,
}

/// Tools, system blocks (a string is one block), then each message's blocks (a string
/// content is one block).
fn prompt_blocks(body: &Value) -> Vec<Block<'_>> {
    let mut blocks = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        blocks.extend(tools.iter().map(|tool| Block {
            section: b"tool",
            opens_message: None,
            content: tool,
        }));
    }
    match body.get("system") {
        Some(Value::Array(system)) => blocks.extend(system.iter().map(|block| Block {
            section: b"system",
            opens_message: None,
            content: block,
        })),
        Some(system @ Value::String(_)) => blocks.push(Block {
            section: b"system",
            opens_message: None,
            content: system,
        }),
        _ => {}
    }
    for message in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let contents: &[Value] = match message.get("content") {
            Some(Value::Array(contents)) => contents,
            Some(content) => std::slice::from_ref(content),
            None => &[],
        };
        blocks.extend(contents.iter().enumerate().map(|(position, content)| Block {
            section: b"content",
            opens_message: (position == 0).then_some(role),
            content,
        }));
    }
    blocks
}

/// The lifetime a `cache_control` on `value` asks for, if it has one.
fn breakpoint_ttl(value: &Value) -> Option<i64> {
    let cache_control = value.get("cache_control")?;
    if cache_control.is_null() {
        return None;
    }
    Some(match cache_control.get("ttl").and_then(Value::as_str) {
        Some("1h") => TTL_ONE_HOUR_NANOS,
        _ => TTL_DEFAULT_NANOS,
    })
}

/// Feeds serialized JSON into a hasher and counts its bytes.
#[derive(Default)]
struct HashingWriter {
    hasher: DefaultHasher,
    bytes: usize,
}

impl HashingWriter {
    /// A separator no JSON text contains (a raw control byte), then a name and a value.
    fn write_marker(&mut self, name: &[u8], value: &str) {
        self.hasher.write_u8(0x1e);
        self.hasher.write(name);
        self.hasher.write_u8(0x1f);
        self.hasher.write(value.as_bytes());
    }

    /// The block as compact JSON, without its `cache_control` marker (the other fields in
    /// their order).
    fn write_block(&mut self, block: &Value) {
        let Value::Object(fields) = block else {
            self.write_json(block);
            return;
        };
        self.write_raw(b"{");
        for (key, value) in fields.iter().filter(|(key, _)| *key != "cache_control") {
            self.write_json(key.as_str());
            self.write_raw(b":");
            self.write_json(value);
            self.write_raw(b",");
        }
        self.write_raw(b"}");
    }

    fn write_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Writing to a hasher cannot fail, and a `Value` always serializes.
        let written = serde_json::to_writer(&mut *self, value);
        debug_assert!(written.is_ok());
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.hasher.write(bytes);
        self.bytes += bytes.len();
    }
}

impl io::Write for HashingWriter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.write_raw(buffer);
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
