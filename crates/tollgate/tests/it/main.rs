//! End-to-end tests: the real server over real HTTP, a real SQLite database per test, and
//! a fake upstream server speaking Anthropic's wire format.

mod bad_input;
mod billing;
mod cli;
mod credit;
mod helpers;
mod messages;
mod tidy;
mod upstream_failures;
