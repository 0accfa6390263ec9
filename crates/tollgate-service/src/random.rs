//! The shell's source of randomness for ids and key secrets (the core takes the bytes).

use rand::RngCore;
use tollgate_core::ids::{IdKind, new_id};
use tollgate_core::keys::{KeyKind, WellFormedKey};

pub fn id(kind: IdKind) -> String {
    let mut bytes = [0_u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    new_id(kind, bytes)
}

pub fn key(kind: KeyKind) -> WellFormedKey {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    WellFormedKey::generate(kind, bytes)
}
