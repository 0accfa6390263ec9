//! Webhook signatures in Stripe's scheme, the one tollgate both signs its alerts with and
//! checks Stripe's events by: a header `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<raw body>">[,v1=…]`. Verification recomputes the HMAC over the raw body under each
//! secret it is given (two during a rotation), accepts any `v1` that matches, compares in
//! constant time (`Mac::verify_slice`), and refuses a timestamp outside the window, either
//! side of `now`. Schemes other than `v1`, and `v1` values that are not hex, are ignored, as
//! Stripe's libraries do.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Timestamp;

/// The header value signing `body` under `secret` at `now`.
pub fn signature_header(secret: &str, body: &[u8], now: Timestamp) -> String {
    let timestamp = now.timestamp();
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is not `t=<seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signed timestamp is outside the replay window")]
    OutsideWindow,
    #[error("no signature matches the body")]
    Mismatch,
}

/// Checks a header against the raw body as received, under one secret.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: Timestamp,
    window_seconds: i64,
) -> Result<(), VerifyError> {
    verify_any(&[secret], header, body, now, window_seconds)
}

/// Checks a header against the raw body as received: the timestamp must lie within
/// `window_seconds` of `now`, and one `v1` must be the HMAC under one of `secrets`.
pub fn verify_any(
    secrets: &[&str],
    header: &str,
    body: &[u8],
    now: Timestamp,
    window_seconds: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if now.timestamp().saturating_sub(timestamp).saturating_abs() > window_seconds {
        return Err(VerifyError::OutsideWindow);
    }
    let matches = secrets.iter().any(|secret| {
        let expected = mac(secret, timestamp, body);
        signatures
            .iter()
            .any(|signature| expected.clone().verify_slice(signature).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}
