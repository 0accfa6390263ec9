//! The Console's wiring: its router over the same service, and the Workbench runner that
//! sends Workbench requests through the gateway's metered path (the console crate does not
//! depend on the gateway; this is the one place that joins them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use tollgate_console::{ConsoleSettings, ConsoleState, WorkbenchRunner};
use tollgate_gateway::GatewayState;
use tollgate_service::ApiCaller;

/// Runs Workbench requests as the gateway runs `POST /v1/messages`.
struct GatewayWorkbench {
    gateway: GatewayState,
}

impl WorkbenchRunner for GatewayWorkbench {
    fn run(&self, caller: ApiCaller, body: Bytes) -> Pin<Box<dyn Future<Output = Response> + Send>> {
        let gateway = self.gateway.clone();
        Box::pin(async move { tollgate_gateway::run_for_caller(&gateway, &caller, body).await })
    }
}

/// The Console's router (every route under `/console`), to merge beside the gateway's.
pub(crate) fn router(gateway: &GatewayState, settings: ConsoleSettings) -> axum::Router {
    tollgate_console::router(ConsoleState {
        tollgate: gateway.tollgate.clone(),
        catalog: gateway.catalog.clone(),
        workbench: Arc::new(GatewayWorkbench {
            gateway: gateway.clone(),
        }),
        settings,
    })
}
