//! The Console: the control plane's web pages under `/console` — sign-in (with a password
//! or single sign-on), overview,
//! workspaces, API keys, billing, limits, usage and cost, members, and the Workbench —
//! rendered on the server. It owns sessions (cookies), CSRF protection and the HTML; every
//! decision is a `tollgate-service` use case reached through the signed-in person's
//! `ConsoleUser`, whose role check hands out the organization-scoped handle. It never
//! touches the database, never computes money (amounts are `NanoUsd` from the service,
//! printed as they are), and does not depend on the gateway: the Workbench runs its
//! requests through a `WorkbenchRunner` the binary provides. The billing forms take an
//! `Idempotency-Key` header through tollgate-edge's middleware, as the Admin API does.
//!
//! HTML is written with `maud`: templates are Rust expressions checked at compile time,
//! every interpolation is escaped unless marked otherwise, and there are no template files
//! to ship or find at run time. The stylesheet and the one small script are embedded with
//! `include_str!`; nothing is loaded from anywhere else, so no Node or CDN is needed to
//! build or run it. Charts are SVG drawn on the server.

mod alerts;
mod auth;
mod billing;
mod capture;
mod chart;
mod client_address;
mod device;
mod error;
mod idempotency;
mod keys;
mod layout;
mod members;
mod overview;
mod requests;
mod session;
mod sso;
mod usage;
mod workbench;
mod workspaces;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tollgate_core::catalog::Catalog;
use tollgate_service::{ApiCaller, Tollgate};

pub use crate::client_address::TrustedProxies;

/// Runs a Workbench request through the data plane's metered path: the same admission,
/// reservation, upstream call and settlement as an API request of `caller`.
pub trait WorkbenchRunner: Send + Sync + 'static {
    /// `body` is a Messages API request with `"stream": true`; the answer is the data
    /// plane's response (an SSE stream, or an error envelope), with a `request-id` header.
    fn run(&self, caller: ApiCaller, body: Bytes) -> Pin<Box<dyn Future<Output = Response> + Send>>;
}

/// Settings of the Console from configuration.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSettings {
    /// `Some(true)`: always mark the session cookie `Secure` (behind a TLS proxy);
    /// `Some(false)`: never; `None`: when the request came over TLS
    /// (`X-Forwarded-Proto: https`) or to a loopback host, which browsers treat as secure.
    pub secure_cookies: Option<bool>,
    /// Proxies whose forwarding header names the client, for the sign-in limit per client.
    pub trusted_proxies: TrustedProxies,
    /// The payment provider's page the billing forms send the buyer to (Stripe Checkout's
    /// origin), allowed as a form's destination by the content security policy.
    pub payment_page_origin: Option<String>,
}

/// What every page shares. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub tollgate: Tollgate,
    /// Model names for the reports, and the models the Workbench offers.
    pub catalog: Arc<Catalog>,
    pub workbench: Arc<dyn WorkbenchRunner>,
    pub settings: ConsoleSettings,
}

const STYLESHEET: &str = include_str!("../assets/console.css");
const SCRIPT: &str = include_str!("../assets/console.js");

/// The Console's router, to be merged at the root: every page is under `/console`; the
/// device sign-in's protocol endpoints (`/.well-known/oauth-authorization-server`,
/// `/oauth/*`, `/managed/settings`) are at the root, where Claude Code looks for them.
pub fn router(state: ConsoleState) -> Router {
    let policy = session::content_security_policy(state.settings.payment_page_origin.as_deref());
    // `Idempotency-Key` on the billing forms' POSTs (tollgate-edge's middleware), inside the
    // session guard, which has checked the session and the CSRF token by then.
    let idempotent = axum::middleware::from_fn_with_state(
        idempotency::BillingChanges,
        tollgate_edge::idempotency::<idempotency::BillingChanges>,
    );
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/console/overview") }))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/sso/start", get(sso::start))
        .route("/sso/callback", get(sso::callback))
        .route("/device", get(device::page).post(device::approve))
        .route("/setup", get(auth::setup_page).post(auth::setup))
        .route(
            "/invites/{invite_id}/accept",
            get(auth::accept_invite_page).post(auth::accept_invite),
        )
        .route("/overview", get(overview::page))
        .route("/workspaces", get(workspaces::list).post(workspaces::create))
        .route("/workspaces/{workspace_id}", get(workspaces::detail))
        .route("/workspaces/{workspace_id}/rename", post(workspaces::rename))
        .route("/workspaces/{workspace_id}/archive", post(workspaces::archive))
        .route("/workspaces/{workspace_id}/limits", post(workspaces::set_limits))
        .route("/workspaces/{workspace_id}/members", post(workspaces::set_member))
        .route("/workspaces/{workspace_id}/capture", post(capture::set_settings))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{key_id}/rename", post(keys::rename))
        .route("/keys/{key_id}/status", post(keys::set_status))
        .route("/keys/{key_id}/models", post(keys::set_models))
        .route("/billing", get(billing::page))
        .route(
            "/billing/purchase",
            post(billing::purchase).route_layer(idempotent.clone()),
        )
        .route(
            "/billing/auto-reload",
            post(billing::auto_reload).route_layer(idempotent),
        )
        .route("/billing/receipts/{purchase_id}", get(billing::receipt))
        .route(
            "/billing/receipts/{purchase_id}/download",
            get(billing::receipt_download),
        )
        .route("/limits", get(billing::limits))
        .route("/usage", get(usage::page))
        .route("/usage.csv", get(usage::csv))
        .route("/requests", get(requests::page))
        .route("/requests/{request_id}", get(capture::request_detail))
        .route("/workbench", get(workbench::page))
        .route("/workbench/run", post(workbench::run))
        .route("/workbench/result/{request_id}", get(workbench::result))
        .route("/alerts", get(alerts::page))
        .route("/alerts/settings", post(alerts::set_settings))
        .route("/alerts/destinations", post(alerts::create_destination))
        .route(
            "/alerts/destinations/{destination_id}/kinds",
            post(alerts::set_destination_kinds),
        )
        .route(
            "/alerts/destinations/{destination_id}/delete",
            post(alerts::delete_destination),
        )
        .route("/members", get(members::page))
        .route("/members/invite", post(members::invite))
        .route("/members/{user_id}/role", post(members::set_role))
        .route("/members/{user_id}/deactivate", post(members::deactivate))
        .route("/members/{user_id}/reactivate", post(members::reactivate))
        .route(
            "/members/invites/{invite_id}/delete",
            post(members::delete_invite),
        )
        .route(
            "/assets/console.css",
            get(|| async { asset(STYLESHEET, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .fallback(|| async { error::PageError::NotFound("no page has this address".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::guard,
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            session::security_headers(policy.clone(), request, next)
        }))
        .with_state(state.clone());
    Router::new()
        .nest("/console", pages)
        .merge(device::protocol_routes(state))
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

#[cfg(test)]
mod tests;
