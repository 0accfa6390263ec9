//! The `tollgate` command line: `serve`, and the administrative commands that work on the
//! same data whether or not a server is running. This is the only module that prints.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tollgate::app::{Application, open_store, service};
use tollgate::config::{Config, Overrides};
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{FirstStart, KeyStatus, SystemClock, Tollgate};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A self-hosted LLM API gateway with prepaid credit"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GlobalArgs {
    /// TOML configuration file, layered over the built-in defaults.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the SQLite database (created if absent).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Create the database or bring its schema up to date, then exit.
    Migrate,
    /// API keys (for the Messages API).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Admin keys (for the Admin API).
    AdminKeys {
        #[command(subcommand)]
        command: AdminKeysCommand,
    },
    /// Credit: grants, balance, lots.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; prints the secret alone on stdout (it is not shown again).
    Create {
        #[arg(long, default_value = "Default")]
        workspace: String,
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long, default_value = "API key")]
        name: String,
    },
    /// List API keys (secrets are never shown, only hints).
    List {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke (archive) a key by id; it stops working within a second on every server.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum AdminKeysCommand {
    /// Create an admin key; prints the secret alone on stdout.
    Create {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long, default_value = "Admin key")]
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GrantKind {
    Starter,
    Purchase,
    Promotional,
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add a credit lot.
    Grant {
        #[arg(long, default_value = "Default")]
        org: String,
        /// Amount in USD, e.g. 25 or 12.50.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long, value_enum)]
        kind: GrantKind,
        /// When the lot expires (RFC 3339). Purchases default to one year from now.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Show the organization's balance.
    Balance {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// List the organization's credit lots.
    Lots {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(global: &GlobalArgs, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
    let file = match &global.config {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let environment: HashMap<String, String> = std::env::vars().collect();
    Config::parse(
        file.as_deref(),
        &environment,
        &Overrides {
            listen,
            data_dir: global.data_dir.clone(),
        },
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let config = load_config(&cli.global, listen)?;
    if let Command::Serve { .. } = cli.command {
        return serve(&config).await;
    }
    let store = open_store(&config).await?;
    let tollgate = service(&config, store, Arc::new(SystemClock))?;
    if let Some(first_start) = tollgate.first_start().await? {
        // Commands print their own result on stdout; the one-time secrets go to stderr.
        eprintln!("{}", first_start_notice(&first_start, &config));
    }
    match cli.command {
        Command::Serve { .. } => Ok(()),
        Command::Migrate => {
            eprintln!("database ready at {}", config.database_path().display());
            Ok(())
        }
        Command::Keys { command } => keys(&tollgate, command).await,
        Command::AdminKeys {
            command: AdminKeysCommand::Create { org, name },
        } => {
            let org = tollgate.organization_named(&org).await?;
            let created = tollgate.create_key(KeyKind::Admin, &org.id, None, &name).await?;
            println!("{}", created.secret.expose_secret());
            Ok(())
        }
        Command::Credits { command } => credits(&tollgate, command).await,
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    init_tracing();
    let mut application = Application::build(config).await?;
    let address = application.local_addr()?;
    if let Some(first_start) = application.take_first_start() {
        println!("{}", first_start_notice(&first_start, config));
    }
    println!(
        "tollgate is listening on http://{address} (data in {})",
        config.data_dir.display()
    );
    application.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

fn first_start_notice(first_start: &FirstStart, config: &Config) -> String {
    let api_key = first_start.api_key.secret.expose_secret();
    format!(
        "First start: created organization \"{org}\" with workspace \"{workspace}\" and a starter credit of {grant}.\n\
         These keys are shown once; keep them safe.\n\
         \n  API key:   {api_key}\n  Admin key: {admin_key}\n\n\
         Try it:\n  curl http://{listen}/v1/messages -H 'x-api-key: {api_key}' -H 'anthropic-version: 2023-06-01' \
         -H 'content-type: application/json' \
         -d '{{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":256,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n",
        org = first_start.organization.name,
        workspace = first_start.workspace.name,
        grant = tollgate_settings_grant(config),
        admin_key = first_start.admin_key.secret.expose_secret(),
        listen = config.listen,
    )
}

fn tollgate_settings_grant(config: &Config) -> NanoUsd {
    config.starter_grant().unwrap_or(NanoUsd::ZERO)
}

async fn keys(tollgate: &Tollgate, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { workspace, org, name } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace = tollgate.workspace_named(&org.id, &workspace).await?;
            let created = tollgate
                .create_key(KeyKind::Api, &org.id, Some(&workspace.id), &name)
                .await?;
            println!("{}", created.secret.expose_secret());
        }
        KeysCommand::List { org, workspace, json } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace_id = match workspace {
                Some(name) => Some(tollgate.workspace_named(&org.id, &name).await?.id),
                None => None,
            };
            let keys = tollgate
                .keys(&org.id, KeyKind::Api, workspace_id.as_deref())
                .await?;
            if json {
                let rows: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|key| {
                        serde_json::json!({
                            "id": key.id, "name": key.name, "workspace_id": key.workspace_id,
                            "partial_key_hint": key.hint, "status": key.status.as_str(),
                            "created_at": key.created_at.to_rfc3339(), "last_used_at": key.last_used_at.map(|at| at.to_rfc3339()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:<10} {:<28} {:<24} NAME",
                    "ID", "STATUS", "HINT", "LAST USED"
                );
                for key in keys {
                    let last_used = key.last_used_at.map_or("never".to_owned(), |at| {
                        at.format("%Y-%m-%d %H:%M:%S").to_string()
                    });
                    println!(
                        "{:<32} {:<10} {:<28} {:<24} {}",
                        key.id,
                        key.status.as_str(),
                        key.hint,
                        last_used,
                        key.name
                    );
                }
            }
        }
        KeysCommand::Revoke { key_id } => {
            tollgate.set_key_status(&key_id, KeyStatus::Archived).await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

async fn credits(tollgate: &Tollgate, command: CreditsCommand) -> anyhow::Result<()> {
    match command {
        CreditsCommand::Grant {
            org,
            amount,
            kind,
            expires,
            memo,
        } => {
            let org = tollgate.organization_named(&org).await?;
            let amount = NanoUsd::parse_usd(&amount).context("--amount")?;
            let kind = match kind {
                GrantKind::Starter => LotKind::Starter,
                GrantKind::Purchase => LotKind::Purchase,
                GrantKind::Promotional => LotKind::Promotional,
            };
            let expires_at = match expires {
                Some(text) => Some(
                    chrono::DateTime::parse_from_rfc3339(&text)
                        .context("--expires must be RFC 3339, e.g. 2027-01-31T00:00:00Z")?
                        .to_utc(),
                ),
                None => None,
            };
            let memo = if memo.is_empty() {
                format!("{} grant", kind.as_str())
            } else {
                memo
            };
            let lot = tollgate.grant(&org.id, kind, amount, expires_at, &memo).await?;
            println!("granted {} to {} as lot {}", lot.amount, org.name, lot.lot.lot_id);
        }
        CreditsCommand::Balance { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let balance = tollgate.balance(&org.id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "organization_id": org.id,
                        "available_nanos": balance.available.nanos(),
                        "held_nanos": balance.held.nanos(),
                        "spent_nanos": balance.spent.nanos(),
                        "expired_nanos": balance.expired.nanos(),
                    })
                );
            } else {
                println!(
                    "{}: available {}, held {}, spent {} (expired {})",
                    org.name, balance.available, balance.held, balance.spent, balance.expired
                );
            }
        }
        CreditsCommand::Lots { org, json } => {
            let org = tollgate.organization_named(&org).await?;
            let lots = tollgate.lots(&org.id).await?;
            if json {
                let rows: Vec<serde_json::Value> = lots
                    .iter()
                    .map(|lot| {
                        serde_json::json!({
                            "id": lot.lot.lot_id, "kind": lot.lot.kind.as_str(), "amount_nanos": lot.amount.nanos(),
                            "remaining_nanos": lot.lot.account.posted_balance().nanos(),
                            "held_nanos": lot.lot.account.debits_pending.nanos(),
                            "granted_at": lot.lot.granted_at.to_rfc3339(),
                            "expires_at": lot.lot.expires_at.map(|at| at.to_rfc3339()), "memo": lot.memo,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:<12} {:>16} {:>16} {:<26} MEMO",
                    "LOT", "KIND", "AMOUNT", "REMAINING", "EXPIRES"
                );
                for lot in lots {
                    let expires = lot.lot.expires_at.map_or("never".to_owned(), |at| {
                        at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                    });
                    println!(
                        "{:<32} {:<12} {:>16} {:>16} {:<26} {}",
                        lot.lot.lot_id,
                        lot.lot.kind.as_str(),
                        lot.amount.to_string(),
                        lot.lot.account.posted_balance().to_string(),
                        expires,
                        lot.memo
                    );
                }
            }
        }
    }
    Ok(())
}
