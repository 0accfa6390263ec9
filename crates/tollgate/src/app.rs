//! Wiring: opens the store, builds the service, the providers and the router, and binds
//! the listener. `Application::build` binds first, so tests can ask for port 0 and read the
//! address back.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tollgate_gateway::{GatewayState, router};
use tollgate_service::{Clock, FirstStart, Limiter, SystemClock, Tollgate};
use tollgate_store::Store;

use crate::config::Config;

/// Opens (creating if needed) the data directory and its database, with migrations run.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let path = config.database_path();
    Store::open_sqlite(&path)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))
}

/// The service over `store`, with the configured settings and the given clock. Rate
/// limits are kept in this process (one server per database; see ARCHITECTURE.md).
pub fn service(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Tollgate> {
    Ok(Tollgate::new(
        store,
        Limiter::local(),
        config.payment_provider()?,
        clock,
        config.service_settings()?,
    ))
}

pub struct Application {
    listener: TcpListener,
    state: GatewayState,
    maintenance_interval: Duration,
    first_start: Option<FirstStart>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Application> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let store = open_store(config).await?;
        let tollgate = service(config, store, clock)?;
        let first_start = tollgate
            .first_start()
            .await
            .context("cannot set up the Default organization")?;
        let state = GatewayState {
            tollgate,
            catalog: Arc::new(config.catalog()?),
            providers: Arc::new(config.providers()?),
            settings: config.gateway_settings(),
            cooldowns: Default::default(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        Ok(Application {
            listener,
            state,
            maintenance_interval: Duration::from_secs(config.gateway.maintenance_interval_seconds.max(1)),
            first_start,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
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
        let served = axum::serve(self.listener, router(self.state).merge(admin))
            .with_graceful_shutdown(shutdown)
            .await
            .context("the HTTP server failed");
        maintenance.abort();
        served
    }
}
