//! The end-to-end suite of `tests/it` again, every app on the machine's PostgreSQL (a fresh
//! schema per test) with its rate limits in Redis (a fresh key prefix per test), plus what
//! only a shared database allows: several replicas at once (`replicas`).
//!
//! The modules are `tests/it`'s own files, compiled a second time with `BACKEND` set here;
//! `tidy` (checks of the repository itself) runs once, in `it`.

/// Where this binary's apps keep their state.
pub(crate) const BACKEND: helpers::TestBackend = helpers::TestBackend::PostgresRedis;

#[path = "../it/admin_api.rs"]
mod admin_api;
#[path = "../it/admin_isolation.rs"]
mod admin_isolation;
#[path = "../it/admin_reports.rs"]
mod admin_reports;
#[path = "../it/alerts.rs"]
mod alerts;
#[path = "../it/bad_input.rs"]
mod bad_input;
#[path = "../it/batches.rs"]
mod batches;
#[path = "../it/billing.rs"]
mod billing;
#[path = "../it/capture.rs"]
mod capture;
#[path = "../it/chat.rs"]
mod chat;
#[path = "../it/cli.rs"]
mod cli;
#[path = "../it/clouds.rs"]
mod clouds;
#[path = "../it/codex.rs"]
mod codex;
#[path = "../it/console.rs"]
mod console;
#[path = "../it/console_security.rs"]
mod console_security;
#[path = "../it/credit.rs"]
mod credit;
#[path = "../it/embeddings.rs"]
mod embeddings;
#[path = "../it/failover.rs"]
mod failover;
#[path = "../it/files.rs"]
mod files;
#[path = "../it/gemini.rs"]
mod gemini;
#[path = "../it/helpers.rs"]
mod helpers;
#[path = "../it/idempotency.rs"]
mod idempotency;
#[path = "../it/messages.rs"]
mod messages;
#[path = "../it/observability.rs"]
mod observability;
#[path = "../it/personal_keys.rs"]
mod personal_keys;
#[path = "../it/prompt_cache.rs"]
mod prompt_cache;
mod replicas;
#[path = "../it/responses.rs"]
mod responses;
#[path = "../it/sdk.rs"]
mod sdk;
#[path = "../it/service_accounts.rs"]
mod service_accounts;
#[path = "../it/serving.rs"]
mod serving;
#[path = "../it/sso.rs"]
mod sso;
#[path = "../it/sso_recheck.rs"]
mod sso_recheck;
#[path = "../it/stripe.rs"]
mod stripe;
#[path = "../it/upstream_failures.rs"]
mod upstream_failures;
#[path = "../it/user_spend_limits.rs"]
mod user_spend_limits;
