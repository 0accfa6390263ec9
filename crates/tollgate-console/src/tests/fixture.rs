//! A Console over a fresh SQLite store, with a one-rung ladder, no models, and a
//! Workbench runner that is never called.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use tollgate_core::catalog::Catalog;
use tollgate_core::money::NanoUsd;
use tollgate_core::tiers::{BillingPolicy, LimitSet, Tier, TierLadder};
use tollgate_service::{ApiCaller, Limiter, PaymentProvider, Settings, SystemClock, Tollgate};
use tollgate_store::Store;

use crate::{ConsoleSettings, ConsoleState, WorkbenchRunner};

struct NoWorkbench;

impl WorkbenchRunner for NoWorkbench {
    fn run(
        &self,
        _caller: ApiCaller,
        _body: bytes::Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
        Box::pin(async { axum::http::StatusCode::NOT_IMPLEMENTED.into_response() })
    }
}

pub(crate) struct Fixture {
    pub(crate) state: ConsoleState,
    _directory: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn new() -> Fixture {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(
            &directory.path().join("console.db"),
            tollgate_store::SqliteOptions::default(),
        )
        .await
        .unwrap();
        let ladder = TierLadder::new(vec![Tier {
            limits: LimitSet {
                name: "Test".into(),
                monthly_spend_limit: None,
                max_single_purchase: None,
                rate_limits: BTreeMap::new(),
                count_tokens_requests_per_minute: 100,
            },
            cumulative_purchases_min: NanoUsd::ZERO,
        }])
        .unwrap();
        let tollgate = Tollgate::new(
            store,
            Limiter::local(),
            PaymentProvider::test(),
            Arc::new(SystemClock),
            Settings {
                policy: BillingPolicy {
                    ladder,
                    limit_sets: BTreeMap::new(),
                    programmes: BTreeMap::new(),
                },
                auto_reload_stale: chrono::Duration::minutes(5),
                starter_grant: NanoUsd::from_usd(5),
                starter_grant_lifetime: None,
                reservation_ttl: chrono::Duration::minutes(15),
                key_cache_ttl: chrono::Duration::seconds(1),
            },
        );
        tollgate.first_start().await.unwrap();
        Fixture {
            state: ConsoleState {
                tollgate,
                catalog: Arc::new(Catalog::new(Vec::new(), Vec::new()).unwrap()),
                workbench: Arc::new(NoWorkbench),
                settings: ConsoleSettings::default(),
            },
            _directory: directory,
        }
    }

    pub(crate) fn router(&self) -> axum::Router {
        crate::router(self.state.clone())
    }

    /// Makes an admin and signs them in; returns the session token.
    pub(crate) async fn signed_in_token(&self) -> String {
        let tollgate = &self.state.tollgate;
        let organization = tollgate.organization_named("Default").await.unwrap();
        tollgate
            .create_console_admin(
                &organization.id,
                "ada@example.com",
                "Ada",
                "correct horse battery",
            )
            .await
            .unwrap();
        let signed_in = tollgate
            .console_sign_in("ada@example.com", "correct horse battery", "127.0.0.1")
            .await
            .unwrap();
        signed_in.token.expose_secret().to_owned()
    }
}
