//! Wiring: opens the store, builds the service, the providers and the router, and binds
//! the listener. `Application::build` binds first, so tests can ask for port 0 and read the
//! address back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tollgate_console::ConsoleSettings;
use tollgate_gateway::{GatewayState, router};
use tollgate_limiter::RedisLimiter;
use tollgate_service::{Clock, FirstStart, Limiter, SystemClock, Tollgate};
use tollgate_store::{SqliteOptions, Store};

use crate::config::{Backend, Config, redact_password};
use crate::serve::ServerSettings;
use crate::telemetry::{self, MetricsEndpoint};
use metrics_exporter_prometheus::PrometheusHandle;

/// Opens the configured database (SQLite in the data directory, created if needed, or
/// PostgreSQL), with migrations run.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    match config.backend()? {
        Backend::Sqlite(path) => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
            let options = SqliteOptions {
                sync_interval: Duration::from_millis(config.database.sync_interval_millis),
            };
            Store::open_sqlite(&path, options)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))
        }
        Backend::Postgres(options) => Store::open_postgres(&options)
            .await
            .with_context(|| format!("cannot open the database at {}", redact_password(&options.url))),
    }
}

/// The rate limiter: Redis when `limits.redis_url` is set (replicas share the buckets),
/// otherwise this process's memory.
pub async fn limiter(config: &Config) -> anyhow::Result<Limiter> {
    let url = config.limits.redis_url.trim();
    if url.is_empty() {
        return Ok(Limiter::local());
    }
    let redis = RedisLimiter::connect_with(
        url,
        &config.limits.redis_key_prefix,
        config.redis_clock()?,
        config.redis_timeouts()?,
    )
    .await
    .with_context(|| format!("cannot reach Redis at {}", redact_password(url)))?;
    Ok(Limiter::Redis(redis))
}

/// The service over `store`, with the configured settings, rate limiter and clock.
pub async fn service(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Tollgate> {
    let tollgate = Tollgate::new(
        store,
        limiter(config).await?,
        config.payment_provider()?,
        clock,
        config.service_settings()?,
    );
    tollgate.set_alerting(config.alerting_settings()?);
    tollgate.set_file_settings(config.file_settings());
    if let Some(sso) = config.console.sso.settings()? {
        tollgate.set_single_sign_on(sso);
    }
    tollgate.set_max_concurrent_calls_per_organization(
        config.gateway.max_concurrent_requests_per_organization.max(1),
    );
    Ok(tollgate)
}

pub struct Application {
    listener: TcpListener,
    state: GatewayState,
    maintenance_interval: Duration,
    batch_runner: tollgate_gateway::BatchRunnerSettings,
    /// Whether this process runs an alert delivery loop.
    deliver_alerts: bool,
    server: ServerSettings,
    console: ConsoleSettings,
    first_start: Option<FirstStart>,
    metrics: Metrics,
}

/// `/metrics`, as `[observability]` configures it.
struct Metrics {
    /// The process's recorder, when metrics are on.
    handle: Option<PrometheusHandle>,
    /// The token a scrape on the main listener bears.
    token: Option<String>,
    /// A listener of their own.
    listener: Option<TcpListener>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Application> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        config.check_replica_safety()?;
        config.check_reservation_ttl()?;
        let store = open_store(config).await?;
        let tollgate = service(config, store, clock).await?;
        // Settlements the store refused are kept here until it takes them (#24).
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        let pending_settlements = config.data_dir.join(tollgate_service::PENDING_SETTLEMENTS_FILE);
        tollgate
            .keep_pending_settlements_in(pending_settlements.clone())
            .with_context(|| format!("cannot read {}", pending_settlements.display()))?;
        let first_start = tollgate
            .first_start()
            .await
            .context("cannot set up the Default organization")?;
        let catalog = config.catalog()?;
        warn_of_simulated_defaults(config, &catalog);
        let state = GatewayState {
            tollgate,
            catalog: Arc::new(catalog),
            providers: Arc::new(config.providers()?),
            settings: config.gateway_settings(),
            cooldowns: Default::default(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = match config.metrics_endpoint()? {
            MetricsEndpoint::Off => Metrics {
                handle: None,
                token: None,
                listener: None,
            },
            MetricsEndpoint::Token(token) => Metrics {
                handle: Some(telemetry::recorder()),
                token: Some(token),
                listener: None,
            },
            MetricsEndpoint::Listen(address) => Metrics {
                handle: Some(telemetry::recorder()),
                token: None,
                listener: Some(
                    TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen for metrics on {address}"))?,
                ),
            },
        };
        state
            .tollgate
            .set_metrics_organizations(config.observability.metrics_max_organizations);
        Ok(Application {
            listener,
            state,
            maintenance_interval: Duration::from_secs(config.gateway.maintenance_interval_seconds.max(1)),
            batch_runner: tollgate_gateway::BatchRunnerSettings {
                concurrency: config.batches.concurrency,
                lease: Duration::from_secs(config.batches.lease_seconds.max(1)),
                upstream_poll: Duration::from_millis(config.batches.upstream_poll_millis.max(1)),
            },
            deliver_alerts: config.alerts.deliver,
            server: config.server_settings()?,
            console: config.console_settings()?,
            first_start,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` has a listener of its own, if it has one.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics
            .listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    pub fn tollgate(&self) -> &Tollgate {
        &self.state.tollgate
    }

    /// What the first start created (secrets included), once.
    pub fn take_first_start(&mut self) -> Option<FirstStart> {
        self.first_start.take()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The control plane shares the listener; its router has no fallback of its own.
        let admin = tollgate_admin_api::router(tollgate_admin_api::AdminState {
            tollgate: self.state.tollgate.clone(),
            catalog: self.state.catalog.clone(),
        });
        let maintenance = tokio::spawn(
            self.state
                .tollgate
                .clone()
                .run_maintenance(self.maintenance_interval),
        );
        // Which deployments any replica alerted as down, read as often as maintenance runs.
        let deployment_alerts = tokio::spawn(tollgate_gateway::watch_deployment_alerts(
            self.state.clone(),
            self.maintenance_interval,
        ));
        // Message Batches run in the background, claimed request by request in the store.
        // None at all with `concurrency = 0`: this process leaves them to the others.
        let batch_runner = (self.batch_runner.concurrency > 0).then(|| {
            tokio::spawn(tollgate_gateway::run_batches(
                self.state.clone(),
                self.batch_runner,
            ))
        });
        // Alert deliveries wait in the store; every replica's loop sends its share.
        let alert_deliveries = self.deliver_alerts.then(|| {
            let owner = format!(
                "alerts-{}",
                tollgate_service::random::id(tollgate_core::ids::IdKind::Request)
            );
            tokio::spawn(self.state.tollgate.clone().run_alert_deliveries(owner))
        });
        // So is the Console, under /console; it sees client addresses for its sign-in limit.
        let console = crate::console::router(&self.state, self.console);
        let webhooks = crate::webhooks::router(self.state.tollgate.clone());
        let mut routes = router(self.state).merge(admin).merge(console).merge(webhooks);
        let mut metrics_tasks = Vec::new();
        if let Some(handle) = self.metrics.handle {
            metrics_tasks.push(telemetry::spawn_upkeep(handle.clone()));
            if let Some(token) = &self.metrics.token {
                routes = routes.merge(telemetry::router(handle.clone(), Some(token)));
            }
            if let Some(listener) = self.metrics.listener {
                let metrics_routes = telemetry::router(handle, None);
                metrics_tasks.push(tokio::spawn(async move {
                    if let Err(error) = axum::serve(listener, metrics_routes).await {
                        tracing::error!(%error, "the metrics listener stopped");
                    }
                }));
            }
        }
        crate::serve::serve(self.listener, routes, self.server, shutdown).await;
        maintenance.abort();
        deployment_alerts.abort();
        metrics_tasks.iter().for_each(tokio::task::JoinHandle::abort);
        if let Some(batch_runner) = batch_runner {
            batch_runner.abort();
        }
        if let Some(alert_deliveries) = alert_deliveries {
            alert_deliveries.abort();
        }
        Ok(())
    }
}

/// A config that sets up a real provider but keeps the built-in catalogue leaves some
/// models to the simulated one, which answers (and bills) them: say which, and how to drop
/// them.
fn warn_of_simulated_defaults(config: &Config, catalog: &tollgate_core::catalog::Catalog) {
    let has_real_provider = config
        .providers
        .values()
        .any(|provider| !matches!(provider, crate::config::ProviderConfig::Simulated { .. }));
    if !has_real_provider || !config.default_models {
        return;
    }
    let simulated: Vec<&str> = catalog
        .models()
        .iter()
        .filter(|model| {
            model.deployments.iter().any(|deployment| {
                matches!(
                    config.providers.get(&deployment.provider),
                    Some(crate::config::ProviderConfig::Simulated { .. })
                )
            })
        })
        .map(|model| model.id.as_str())
        .collect();
    if !simulated.is_empty() {
        tracing::warn!(
            models = simulated.join(", "),
            "these models are answered by the simulated model beside the configured providers; \
             set `default_models = false` in the config file to serve only the models it defines"
        );
    }
}
