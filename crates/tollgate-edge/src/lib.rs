//! The HTTP edge both HTTP crates share, so each rule of it is written once: the contract's
//! error types (`ErrorKind`) and Anthropic's error envelope, the key a client presents
//! (`x-api-key`, or `Authorization: Bearer` with any casing of the scheme), what a refused
//! key is told, and the `req_…` id every response carries, with the router's own 405. The
//! control plane's `Idempotency-Key` middleware is here too, shared by the Admin API and
//! the Console, each saying who its caller is (`IdempotencyScope`).
//!
//! It renders and reads HTTP only: no routes, no handlers, no surface of its own (the
//! gateway's OpenAI envelope and upstream pass-through stay in the gateway), and never
//! sqlx, redis or money.

mod auth;
mod error;
mod idempotency;
mod request_id;
#[cfg(test)]
mod tests;
mod trace;

pub use crate::auth::{Credential, presented_key, refused};
pub use crate::error::{ErrorKind, Problem, envelope, json_response};
pub use crate::idempotency::{
    IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IN_FLIGHT_MESSAGE, IdempotencyScope, MISMATCH_MESSAGE, idempotency,
};
pub use crate::request_id::{
    RequestId, UpstreamTime, arrived, deferred, identified, new_request_id, server_timing, stamp,
    status_class,
};
pub use crate::trace::{inject_trace_context, request_span, sampled};
