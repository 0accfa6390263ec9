//! End-to-end tests: the real server over real HTTP, a real SQLite database per test, and
//! fake upstream servers speaking Anthropic's and OpenAI's wire formats. `it_postgres`
//! runs the same modules on PostgreSQL and Redis.

/// Where this binary's apps keep their state.
pub(crate) const BACKEND: helpers::TestBackend = helpers::TestBackend::Sqlite;

mod admin_api;
mod admin_isolation;
mod admin_reports;
mod alerts;
mod bad_input;
mod batches;
mod billing;
mod capture;
mod chat;
mod claude_code;
mod cli;
mod clouds;
mod codex;
mod console;
mod console_security;
mod credit;
mod device_login;
mod durability;
mod embeddings;
mod exhaustion;
mod failover;
mod files;
mod gemini;
mod helpers;
mod idempotency;
mod messages;
mod observability;
mod pass_through;
mod personal_keys;
mod prompt_cache;
mod responses;
mod sdk;
mod service_accounts;
mod serving;
mod sso;
mod sso_recheck;
mod stripe;
mod tidy;
mod upstream_failures;
mod user_spend_limits;
