//! The control plane's JSON API: Anthropic's Admin API under `/v1/organizations` (the
//! organization, workspaces, API keys, users, invites, workspace members, service accounts,
//! usage and cost reports, rate limits) and tollgate's additions in the same style (credits, tiers,
//! limits, auto-reload, the audit log, alerts), with its OpenAPI 3.1 document at
//! `/v1/openapi.json`, generated from the handlers' annotations by the same router that
//! serves them, so no route can be served undocumented.
//!
//! Every call authenticates an admin key and gets an organization-scoped `OrgAdmin` from
//! tollgate-service; handlers only parse, call it and convert to wire shapes. A mutating
//! call may carry an `Idempotency-Key` (tollgate-edge's middleware, scoped to the key's
//! organization). Never sqlx, never money arithmetic.

mod alerts;
mod billing;
mod captures;
pub mod csv;
mod directory;
mod dto;
mod error;
mod extract;
mod idempotency;
mod pagination;
mod reports;
mod request_id;
mod requests;
mod service_accounts;
#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use axum::{Json, Router};
use tollgate_core::catalog::Catalog;
use tollgate_service::Tollgate;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::error::{ApiError, ErrorKind};
pub use crate::reports::{
    BucketDto, CacheCreationDto, CostResultDto, ReportDto, ServerToolUseDto, UsageResultDto, cost_report_dto,
    page_token, usage_report_dto,
};

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    pub tollgate: Tollgate,
    /// For model names and prices in the cost report, and the models of rate-limit groups.
    pub catalog: Arc<Catalog>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate Admin API",
        description = "Anthropic's Admin API for a self-hosted gateway with prepaid credit. \
            Authenticate with an admin key (sk-tg-admin01-…) in x-api-key or as a \
            bearer token. Amounts are decimal strings in US cents."
    ),
    tags(
        (name = "Organization"), (name = "Workspaces"), (name = "API keys"), (name = "Users"),
        (name = "Invites"), (name = "Workspace members"), (name = "Service accounts"), (name = "Reports"),
        (name = "Credits"),
        (name = "Limits"), (name = "Audit"), (name = "Request log"), (name = "Alerts")
    )
)]
struct ApiDoc;

/// Where the document is served; the one operation that needs no admin key.
const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The OpenAPI document of this router (tollgate's `/v1/openapi.json`).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "Organization",
    responses((status = 200, description = "The OpenAPI 3.1 document of the Admin API")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi().clone())
}

fn api_router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .routes(routes!(directory::me))
        .routes(routes!(directory::list_workspaces, directory::create_workspace))
        .routes(routes!(directory::get_workspace, directory::update_workspace))
        .routes(routes!(directory::archive_workspace))
        .routes(routes!(directory::list_members, directory::create_member))
        .routes(routes!(
            directory::get_member,
            directory::update_member,
            directory::delete_member
        ))
        .routes(routes!(directory::list_api_keys, directory::create_api_key))
        .routes(routes!(directory::get_api_key, directory::update_api_key))
        .routes(routes!(directory::list_users))
        .routes(routes!(
            directory::get_user,
            directory::update_user,
            directory::delete_user
        ))
        .routes(routes!(directory::list_invites, directory::create_invite))
        .routes(routes!(directory::get_invite, directory::delete_invite))
        .routes(routes!(
            service_accounts::list_service_accounts,
            service_accounts::create_service_account
        ))
        .routes(routes!(
            service_accounts::get_service_account,
            service_accounts::update_service_account,
            service_accounts::delete_service_account
        ))
        .routes(routes!(service_accounts::archive_service_account))
        .routes(routes!(
            service_accounts::list_service_account_workspaces,
            service_accounts::add_service_account_workspace
        ))
        .routes(routes!(
            service_accounts::list_workspace_service_accounts,
            service_accounts::add_workspace_service_account
        ))
        .routes(routes!(
            service_accounts::get_workspace_service_account,
            service_accounts::remove_workspace_service_account
        ))
        .routes(routes!(reports::usage_report))
        .routes(routes!(reports::cost_report))
        .routes(routes!(billing::balance))
        .routes(routes!(billing::lots))
        .routes(routes!(billing::grant))
        .routes(routes!(billing::purchases, billing::purchase))
        .routes(routes!(billing::tiers))
        .routes(routes!(billing::get_limits, billing::update_limits))
        .routes(routes!(
            billing::get_workspace_limits,
            billing::set_workspace_limits
        ))
        .routes(routes!(billing::rate_limits))
        .routes(routes!(billing::workspace_rate_limits_list))
        .routes(routes!(
            billing::get_auto_reload,
            billing::set_auto_reload,
            billing::disable_auto_reload
        ))
        .routes(routes!(billing::audit_events))
        .routes(routes!(requests::requests))
        .routes(routes!(captures::request_body))
        .routes(routes!(captures::get_capture, captures::set_capture))
        .routes(routes!(
            alerts::list_alert_destinations,
            alerts::create_alert_destination
        ))
        .routes(routes!(
            alerts::update_alert_destination,
            alerts::delete_alert_destination
        ))
        .routes(routes!(alerts::get_alert_settings, alerts::set_alert_settings))
        .routes(routes!(alerts::alert_deliveries))
}

/// The generated OpenAPI document, built once, with how every operation authenticates.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = api_router().split_for_parts().1;
        declare_admin_key_security(&mut document);
        declare_idempotency_key(&mut document);
        document
    })
}

/// The security scheme names in the document: an admin key in `x-api-key`, or the same key
/// as a bearer token (`Authorization: Bearer`), as the `Admin` extractor accepts.
const API_KEY_SCHEME: &str = "x-api-key";
const BEARER_SCHEME: &str = "bearer";

/// Declares both ways to send an admin key and requires one of them on every operation but
/// the document itself, which anyone may read. Applied to the generated paths rather than
/// handler by handler, so a new route cannot be documented without it.
fn declare_admin_key_security(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "An admin key (sk-tg-admin01-…).",
        ))),
    );
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An admin key (sk-tg-admin01-…) as a bearer token."))
                .build(),
        ),
    );
    let either_scheme = vec![
        SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
    ];
    for (path, item) in document.paths.paths.iter_mut() {
        if path == OPENAPI_PATH {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(either_scheme.clone());
        }
    }
}

/// Declares the optional `Idempotency-Key` header on every mutating operation, where
/// tollgate-edge's middleware honours it; applied to the generated paths, like the
/// security requirement, so no mutating route can be documented without it.
fn declare_idempotency_key(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::Required;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let parameter = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Up to 255 printable ASCII characters, unique per request, kept 24 hours per \
             organization. The same key with the same request replays the first answer (with \
             `Idempotent-Replayed: true`); with another request it is a 422, and while the \
             first is still running a 409. A 5xx is not kept.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(tollgate_core::idempotency::KEY_LENGTH_MAX)),
        ))
        .build();
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(parameter.clone());
        }
    }
}

/// The Admin API router, with request ids and error envelopes on every response, and
/// `Idempotency-Key` on every mutating call. It has no fallback, so it merges with the
/// gateway's router, whose fallback answers unknown paths.
pub fn router(state: AdminState) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tollgate_edge::idempotency::<AdminState>,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(request_id::middleware))
}

/// Every (method, path) the router serves, read from the generated document.
pub fn routes() -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in &openapi().paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
        ];
        for (method, present) in methods {
            if present {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}
