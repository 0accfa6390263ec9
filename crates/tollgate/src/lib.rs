//! The tollgate binary's library half: configuration, wiring of concrete adapters, and the
//! `Application` that serves HTTP. The only crate that sees every other one; the CLI in
//! `main.rs` and the end-to-end tests both start from here.

pub mod app;
pub mod config;
mod console;
pub mod serve;
pub mod telemetry;
mod webhooks;
