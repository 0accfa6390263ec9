//! `tollgate ledger check`: the store's own audit of the ledger (`Store::check_ledger`),
//! for operators and monitoring, on SQLite or PostgreSQL, with or without a server running.
//! It only reads. It works on the store directly, not through a service use case: it checks
//! the stored data itself, so it must not create the first organization as other commands do.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use tollgate::app::open_store;
use tollgate::config::{Backend, Config};

use crate::cli::print_json;

#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Check every account against the journal, that debits equal credits, each charge
    /// against its usage transfers, the spend counters and purchases, and the usage rollup
    /// against the usage records. Exits non-zero if anything disagrees.
    Check {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(config: &Config, command: &LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Check { json } => check(config, *json).await,
    }
}

async fn check(config: &Config, json: bool) -> anyhow::Result<()> {
    // Opening SQLite creates a missing file: a check of nothing would pass.
    if let Backend::Sqlite(path) = config.backend()?
        && !path.is_file()
    {
        bail!("no database at {}", path.display());
    }
    let store = open_store(config).await?;
    let report = store.check_ledger().await;
    store.close().await;
    let report = report.context("the ledger check could not read the database")?;
    let problem_count = report.problems.len();
    if json {
        print_json(&json!({
            "ok": report.is_healthy(),
            "backend": store.backend_name(),
            "accounts_checked": report.accounts_checked,
            "problems": report.problems,
        }))?;
    } else if report.is_healthy() {
        println!(
            "ledger clean: {} accounts agree with the journal ({})",
            report.accounts_checked,
            config.database_description()
        );
    } else {
        println!(
            "ledger check: {problem_count} problems ({}, {} accounts checked)",
            config.database_description(),
            report.accounts_checked
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
    if problem_count > 0 {
        bail!("the ledger check found {problem_count} problems");
    }
    Ok(())
}
