//! The shell's source of randomness for ids and key secrets (the core takes the bytes).

use rand::RngCore;
use tollgate_core::Timestamp;
use tollgate_core::ids::{IdKind, new_id, new_time_ordered_id};
use tollgate_core::keys::{KeyKind, WellFormedKey};

pub fn id(kind: IdKind) -> String {
    let mut bytes = [0_u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    new_id(kind, bytes)
}

/// An id whose leading bits are `now` (see `new_time_ordered_id`): for rows written on
/// every request, whose indexes then grow at one end. The time orders them only; no rule
/// reads it back.
pub fn ordered_id(kind: IdKind, now: Timestamp) -> String {
    let unix_millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0_u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    new_time_ordered_id(kind, unix_millis, bytes)
}

/// 32 random bytes in base62: a signing secret.
pub fn secret_text() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    tollgate_core::ids::base62_encode(&bytes)
}

pub fn key(kind: KeyKind) -> WellFormedKey {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    WellFormedKey::generate(kind, bytes)
}
