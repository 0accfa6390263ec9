//! The `tollgate` command line: `serve`, and the administrative commands that work on the
//! same data whether or not a server is running. This module and `cli` are the only ones
//! that print: people-readable tables by default, `--json` for scripts.
#![allow(clippy::print_stdout)]

mod cli;

/// mimalloc instead of the system allocator: each request allocates and frees small buffers
/// on whichever worker thread polls it, and glibc's per-thread arenas both cost CPU there
/// (`malloc`/`free` were several percent of a profile) and hold freed memory, which
/// counted against the memory of 10,000 open streams (see BENCHMARKS.md). Built without
/// transparent huge pages (`no_thp`): mimalloc would otherwise advise them on its arenas,
/// and every 2 MiB region a stream's buffers touch became resident whole (peak memory under
/// 10,000 streams fell from 490–580 MiB to 350–390 MiB without them).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tollgate::app::{Application, open_store, service};
use tollgate::config::{Config, LogFormat, Overrides};
use tollgate_core::keys::KeyKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{FirstStart, SystemClock};

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
    /// A PostgreSQL database shared by several replicas, instead of SQLite in the data
    /// directory: postgres://user@host:5432/database.
    #[arg(long, global = true, env = "DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Keep rate-limit buckets in Redis, shared by every replica: redis://host:6379.
        #[arg(long)]
        redis_url: Option<String>,
        /// Start on a shared PostgreSQL database without Redis (one replica only: each
        /// replica would enforce the whole rate limit by itself).
        #[arg(long)]
        allow_local_limits: bool,
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
    /// Credit: purchases, grants, balance, lots, purchase history.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Organizations.
    Orgs {
        #[command(subcommand)]
        command: OrgsCommand,
    },
    /// Workspaces and their limits.
    Workspaces {
        #[command(subcommand)]
        command: WorkspacesCommand,
    },
    /// Buy credit automatically when the balance runs low.
    Autoreload {
        #[command(subcommand)]
        command: AutoreloadCommand,
    },
    /// The usage-tier ladder and where the organization stands on it.
    Tiers {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// Spend and rate limits in force.
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Usage and cost reports for a window (the Admin API's), as JSON or CSV.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
    /// People who sign in to the Console.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The audit log: grants, purchases, expiries and limit changes.
    Audit {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// Copy the SQLite database to FILE with SQLite's online backup, safe while `serve`
    /// runs. PostgreSQL is refused: use pg_dump.
    Backup {
        /// The backup file (replaced if it exists).
        #[arg(long)]
        to: PathBuf,
    },
    /// The ledger's self-check.
    Ledger {
        #[command(subcommand)]
        command: cli::ledger::LedgerCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum UsersCommand {
    /// Create a Console admin (or make an existing user one) with a password from stdin:
    /// `echo "$PASSWORD" | tollgate users create --admin --email ada@example.com --password-stdin`.
    Create {
        #[arg(long)]
        email: String,
        /// Display name (default: the email's local part).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "Default")]
        org: String,
        /// Make the user an admin (the only kind created here; invite the others).
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (required when it is not a terminal).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ReportsCommand {
    /// Token usage by bucket: `--from 2026-03-01 --to 2026-04-01 [--group-by model] [--csv]`.
    Usage {
        #[arg(long, default_value = "Default")]
        org: String,
        /// Start of the window: a date (UTC) or an RFC 3339 instant.
        #[arg(long)]
        from: String,
        /// End of the window (exclusive).
        #[arg(long)]
        to: String,
        /// 1m, 1h or 1d.
        #[arg(long, default_value = "1d")]
        bucket_width: String,
        /// api_key_id, workspace_id, model, service_tier or context_window; repeatable.
        #[arg(long)]
        group_by: Vec<String>,
        #[arg(long)]
        csv: bool,
    },
    /// Daily cost in cents from the ledger's charges.
    Cost {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// workspace_id or description; repeatable.
        #[arg(long)]
        group_by: Vec<String>,
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum OrgsCommand {
    /// Create an organization (with its Default workspace and starter credit).
    Create { name: String },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum WorkspacesCommand {
    Create {
        name: String,
        #[arg(long, default_value = "Default")]
        org: String,
    },
    List {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
    /// Set a workspace's limits, each at most the organization's. Replaces what was set
    /// for the given model class; `--spend-limit none` clears the spend limit.
    SetLimits {
        #[arg(long)]
        workspace: String,
        #[arg(long, default_value = "Default")]
        org: String,
        /// Monthly spend limit in USD, or `none`.
        #[arg(long)]
        spend_limit: Option<String>,
        /// Monthly spend limit of each user (their personal keys) in USD, at most the
        /// workspace's, or `none`.
        #[arg(long)]
        user_spend_limit: Option<String>,
        /// Model class the rate limits below apply to (opus, sonnet, haiku, …).
        #[arg(long)]
        class: Option<String>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        itpm: Option<u64>,
        #[arg(long)]
        otpm: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AutoreloadCommand {
    /// When the available balance falls below --threshold, buy --amount with --card.
    Set {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        threshold: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        card: String,
    },
    Off {
        #[arg(long, default_value = "Default")]
        org: String,
    },
    Show {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum LimitsCommand {
    /// The limits in force for an organization, or for one of its workspaces.
    Show {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set the organization's own monthly spend limit (at most its tier's cap), or put it
    /// on a custom limit set.
    SetOrg {
        #[arg(long, default_value = "Default")]
        org: String,
        /// USD, or `none` to clear.
        #[arg(long)]
        spend_limit: Option<String>,
        /// A configured limit set, or `none` to return to the tier ladder.
        #[arg(long)]
        limit_set: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
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
pub(crate) enum GrantKind {
    Starter,
    Purchase,
    Promotional,
}

#[derive(Subcommand)]
pub(crate) enum CreditsCommand {
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
        /// The promotional programme the credit belongs to (e.g. startup).
        #[arg(long)]
        programme: Option<String>,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Buy credit through the payment provider.
    Purchase {
        #[arg(long, default_value = "Default")]
        org: String,
        /// Amount in USD.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        /// Card number (the test provider: 4242424242424242 succeeds).
        #[arg(long)]
        card: String,
        /// Retrying with the same key buys once. Default: a new key per call.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Purchase history with receipts.
    Purchases {
        #[arg(long, default_value = "Default")]
        org: String,
        #[arg(long)]
        json: bool,
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
    let config = match load_config(&cli.global, serve_overrides(&cli.command)) {
        Ok(config) => config,
        Err(error) => return failed(&error),
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads(cores))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => failed(&error),
    }
}

/// Prints the error once, with its causes, and one newline: some causes (a TOML parse
/// error) end their text with a newline of their own.
fn failed(error: &anyhow::Error) -> std::process::ExitCode {
    let message = format!("{error:#}");
    eprintln!("error: {}", message.trim_end());
    std::process::ExitCode::FAILURE
}

/// What `serve`'s flags set over the configuration.
fn serve_overrides(command: &Command) -> Overrides {
    match command {
        Command::Serve {
            listen,
            redis_url,
            allow_local_limits,
        } => Overrides {
            listen: *listen,
            redis_url: redis_url.clone(),
            allow_local_limits: *allow_local_limits,
            ..Overrides::default()
        },
        _ => Overrides::default(),
    }
}

fn load_config(global: &GlobalArgs, serve: Overrides) -> anyhow::Result<Config> {
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
            data_dir: global.data_dir.clone(),
            database_url: global.database_url.clone(),
            ..serve
        },
    )
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    if let Command::Serve { .. } = cli.command {
        return serve(&config).await;
    }
    // Commands on the stored data itself: no service, so no first start either.
    match &cli.command {
        Command::Backup { to } => return cli::backup::run(&config, to).await,
        Command::Ledger { command } => return cli::ledger::run(&config, command).await,
        _ => {}
    }
    let store = open_store(&config).await?;
    let tollgate = service(&config, store, Arc::new(SystemClock)).await?;
    if let Some(first_start) = tollgate.first_start().await? {
        // Commands print their own result on stdout; the one-time secrets go to stderr.
        eprintln!("{}", first_start_notice(&first_start, &config));
    }
    match cli.command {
        Command::Serve { .. } | Command::Backup { .. } | Command::Ledger { .. } => Ok(()),
        Command::Migrate => {
            eprintln!("database ready: {}", config.database_description());
            Ok(())
        }
        Command::Keys { command } => cli::keys::run(&tollgate, command).await,
        Command::AdminKeys {
            command: AdminKeysCommand::Create { org, name },
        } => {
            let org = tollgate.organization_named(&org).await?;
            let created = tollgate.create_key(KeyKind::Admin, &org.id, None, &name).await?;
            println!("{}", created.secret.expose_secret());
            Ok(())
        }
        Command::Credits { command } => cli::credits::run(&tollgate, command).await,
        Command::Orgs { command } => cli::orgs::run(&tollgate, command).await,
        Command::Workspaces { command } => cli::orgs::workspaces(&tollgate, command).await,
        Command::Autoreload { command } => cli::credits::autoreload(&tollgate, command).await,
        Command::Tiers { org, json } => cli::limits::tiers(&tollgate, &org, json).await,
        Command::Limits { command } => cli::limits::run(&tollgate, command).await,
        Command::Users { command } => cli::users::run(&tollgate, command).await,
        Command::Audit { org, json } => cli::orgs::audit(&tollgate, &org, json).await,
        Command::Reports { command } => cli::reports::run(&tollgate, &config.catalog()?, command).await,
    }
}

/// Log lines to stderr (`RUST_LOG` filters them), and, with a tracer, spans to OpenTelemetry:
/// the request spans and their children (debug-level spans of tollgate's own crates, which
/// cost nothing when no layer wants them), whatever `RUST_LOG` says.
fn init_tracing(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        // One object a line, with the fields of the request's span (its id) on every line.
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let spans = tracer.map(|tracer| {
        let ours = tracing_subscriber::filter::Targets::new()
            .with_target("tollgate", tracing::Level::DEBUG)
            .with_default(tracing::Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(ours)
    });
    tracing_subscriber::registry().with(lines).with(spans).init();
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let traces = config
        .trace_settings()?
        .map(|settings| tollgate::telemetry::tracer_provider(&settings))
        .transpose()?;
    init_tracing(
        config.log_format()?,
        traces
            .as_ref()
            .map(|provider| opentelemetry::trace::TracerProvider::tracer(provider, "tollgate")),
    );
    let served = serve_until_shutdown(config).await;
    if let Some(provider) = traces {
        // Sends what is still batched; a blocking call.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    served
}

async fn serve_until_shutdown(config: &Config) -> anyhow::Result<()> {
    let mut application = Application::build(config).await?;
    let address = application.local_addr()?;
    if let Some(first_start) = application.take_first_start() {
        println!("{}", first_start_notice(&first_start, config));
    }
    println!(
        "tollgate is listening on http://{address} (data: {})",
        config.database_description()
    );
    // Until someone can sign in to the Console, each start prints a fresh one-time link,
    // which replaces the link of any earlier start (of this or another replica).
    if let Some(token) = application.tollgate().console_setup_token().await? {
        println!(
            "Set up the Console (this link works once, for 24 hours, until a newer one is printed or an admin exists): http://{address}/console/setup?token={}",
            token.expose_secret()
        );
    }
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
        grant = config.starter_grant().unwrap_or(NanoUsd::ZERO),
        admin_key = first_start.admin_key.secret.expose_secret(),
        listen = config.listen,
    )
}
