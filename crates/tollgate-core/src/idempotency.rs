//! Idempotency keys of the control plane (#22): a client that sends a mutating request
//! again under the same `Idempotency-Key` gets the first answer back instead of a second
//! effect. The rules are here, pure: what a key may be, what identifies a request (its
//! method, path and the SHA-256 of its body), what a repeat gets, which answers are kept
//! (not a 5xx: the client may retry that), and how long a key lives. The store keeps the
//! claims and the edge's middleware applies the rules; nothing here does I/O or reads a
//! clock.

use sha2::{Digest, Sha256};

use crate::Timestamp;

/// The longest key accepted, in characters (Stripe's bound).
pub const KEY_LENGTH_MAX: usize = 255;

/// How long a key is kept after its first use; after that it is as if never used.
pub const KEY_LIFETIME_HOURS: i64 = 24;

/// A key as a client may send it: 1 to `KEY_LENGTH_MAX` printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("The Idempotency-Key header is empty; send a unique key of up to 255 characters.")]
    Empty,
    #[error("The Idempotency-Key header is {length} characters long; it may be at most 255 characters.")]
    TooLong { length: usize },
    #[error("The Idempotency-Key header may contain printable ASCII characters only.")]
    NotPrintable,
}

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, KeyRefusal> {
        if text.is_empty() {
            return Err(KeyRefusal::Empty);
        }
        let length = text.chars().count();
        if length > KEY_LENGTH_MAX {
            return Err(KeyRefusal::TooLong { length });
        }
        if !text.chars().all(|character| (' '..='~').contains(&character)) {
            return Err(KeyRefusal::NotPrintable);
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies a request for its key: a repeat must match it in every part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFingerprint {
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path with its query string, if any.
    pub path: String,
    /// The SHA-256 of the body, in lowercase hex.
    pub body_sha256: String,
}

impl RequestFingerprint {
    pub fn of(method: &str, path: &str, body: &[u8]) -> RequestFingerprint {
        RequestFingerprint {
            method: method.to_owned(),
            path: path.to_owned(),
            body_sha256: hex::encode(Sha256::digest(body)),
        }
    }
}

/// Where the first request under a key stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstUse {
    /// Still running: its answer is not known yet.
    InFlight,
    /// Answered, and its answer kept.
    Answered,
}

/// What a request gets when its key was used already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// The same request: the first answer again, without running it.
    Replay,
    /// Another request (method, path or body) under the same key: refused, whatever the
    /// first one's state, since waiting cannot make it the same request.
    Mismatch,
    /// The same request while the first still runs: refused, to be retried.
    InFlight,
}

/// Judges a request whose key was used first by `first`, now `state`.
pub fn judge_repeat(first: &RequestFingerprint, state: FirstUse, request: &RequestFingerprint) -> Repeat {
    if first != request {
        return Repeat::Mismatch;
    }
    match state {
        FirstUse::InFlight => Repeat::InFlight,
        FirstUse::Answered => Repeat::Replay,
    }
}

/// Whether an answer with this HTTP status is kept for replay. A 5xx is not: the failure
/// was ours, so the key is given back and the client may retry with it. Every other answer
/// (a 4xx included: the request itself was wrong) is what the key stands for.
pub fn keeps_answer(status: u16) -> bool {
    status < 500
}

/// When a key first used at `claimed_at` expires.
pub fn expires_at(claimed_at: Timestamp) -> Timestamp {
    claimed_at
        .checked_add_signed(chrono::Duration::hours(KEY_LIFETIME_HOURS))
        .unwrap_or(Timestamp::MAX_UTC)
}

#[cfg(test)]
mod tests;
