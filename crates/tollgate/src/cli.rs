//! Handlers of the administrative commands. Each resolves names to ids, calls one
//! `tollgate-service` use case and prints: a table for people, JSON with `--json`. `backup`
//! and `ledger` are the exceptions: they work on the stored data itself, through the store.

pub(crate) mod backup;
pub(crate) mod credits;
pub(crate) mod keys;
pub(crate) mod ledger;
pub(crate) mod limits;
pub(crate) mod orgs;
pub(crate) mod reports;
pub(crate) mod users;

use anyhow::Context;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;

/// Who the audit log names for changes made from the command line.
pub(crate) const CLI_ACTOR: &str = "cli";

/// A USD amount given on the command line.
pub(crate) fn usd(flag: &str, text: &str) -> anyhow::Result<NanoUsd> {
    NanoUsd::parse_usd(text).with_context(|| format!("{flag} must be an amount in USD, e.g. 25 or 12.50"))
}

/// A USD amount, or `none` (to clear a limit).
pub(crate) fn usd_or_none(flag: &str, text: &str) -> anyhow::Result<Option<NanoUsd>> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    usd(flag, text).map(Some)
}

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(crate) fn instant(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn optional_usd(amount: Option<NanoUsd>) -> String {
    amount.map_or("no limit".to_owned(), |amount| amount.to_string())
}
