//! The pure domain of tollgate: money, ids, prices, the model catalogue, ledger rules and
//! key formats.
//!
//! Nothing here does I/O, reads a clock or draws randomness: callers pass `now` and random
//! bytes in, and get decisions and deltas out. That keeps every money rule deterministic
//! and testable without a database. Types here are not `Serialize`: wire shapes belong to
//! the HTTP crates.
#![deny(clippy::float_arithmetic)]

pub mod alerts;
pub mod attribution;
pub mod catalog;
pub mod files;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod ratelimit;
pub mod refunds;
pub mod reports;
pub mod roles;
pub mod service_accounts;
pub mod signature;
pub mod spend;
pub mod sso;
pub mod tiers;
pub mod usage;

/// An instant, always UTC. The shell reads the clock; the core is handed instants.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
