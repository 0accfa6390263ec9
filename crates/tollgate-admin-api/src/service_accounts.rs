//! Service accounts and their workspace memberships, in Anthropic's Admin API shapes
//! (`/v1/organizations/service_accounts`, `/v1/organizations/workspaces/{id}/service_accounts`
//! and its mirror `/v1/organizations/service_accounts/{id}/workspaces`),
//! over the organization-scoped `OrgAdmin`. Archiving (Anthropic's `POST …/archive`, and
//! `DELETE`, which archives too so that its keys keep naming it) archives the account's keys.

use axum::Json;
use axum::extract::Path;
use tollgate_core::roles::OrgRole;
use tollgate_service::{NewServiceAccount, OrgAdmin, ServiceAccountMembership, ServiceAccountUpdate};

use crate::directory::{org_role, workspace_role};
use crate::dto::{
    AddServiceAccountWorkspace, CreateServiceAccount, CreateServiceAccountMember, Deleted, ServiceAccountDto,
    ServiceAccountMemberDto, UpdateServiceAccount,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, Body, QueryPairs};
use crate::pagination::{Page, PageRequest, paginate};

type Reply<T> = Result<Json<T>, ApiError>;

/// The organization's service accounts, oldest first; archived ones with `include_archived`.
#[utoipa::path(get, path = "/v1/organizations/service_accounts", tag = "Service accounts",
    params(("include_archived" = Option<bool>, Query), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<ServiceAccountDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_service_accounts(
    Admin(admin): Admin,
    query: QueryPairs,
) -> Reply<Page<ServiceAccountDto>> {
    let page = PageRequest::parse(&query)?;
    let accounts = admin.service_accounts(query.boolean("include_archived")?).await?;
    let dtos = accounts.iter().map(ServiceAccountDto::from).collect();
    Ok(Json(paginate(
        dtos,
        |account: &ServiceAccountDto| account.id.clone(),
        &page,
    )?))
}

/// Creates a service account with any organization role but `admin` (default `developer`).
#[utoipa::path(post, path = "/v1/organizations/service_accounts", tag = "Service accounts",
    request_body = CreateServiceAccount,
    responses((status = 200, body = ServiceAccountDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn create_service_account(
    Admin(admin): Admin,
    Body(body): Body<CreateServiceAccount>,
) -> Reply<ServiceAccountDto> {
    let role = match body.organization_role.as_deref() {
        Some(text) => org_role(text)?,
        None => OrgRole::Developer,
    };
    let account = admin
        .create_service_account(NewServiceAccount {
            name: body.name,
            description: body.description.unwrap_or_default(),
            role,
        })
        .await?;
    Ok(Json(ServiceAccountDto::from(&account)))
}

#[utoipa::path(get, path = "/v1/organizations/service_accounts/{service_account_id}", tag = "Service accounts",
    params(("service_account_id" = String, Path)),
    responses((status = 200, body = ServiceAccountDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_service_account(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
) -> Reply<ServiceAccountDto> {
    Ok(Json(ServiceAccountDto::from(
        &admin.service_account(&service_account_id).await?,
    )))
}

/// Changes a live service account's description and/or role (never to or from `admin`).
#[utoipa::path(post, path = "/v1/organizations/service_accounts/{service_account_id}", tag = "Service accounts",
    params(("service_account_id" = String, Path)), request_body = UpdateServiceAccount,
    responses((status = 200, body = ServiceAccountDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_service_account(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
    Body(body): Body<UpdateServiceAccount>,
) -> Reply<ServiceAccountDto> {
    admin.service_account(&service_account_id).await?;
    let update = ServiceAccountUpdate {
        description: body.description,
        role: body.organization_role.as_deref().map(org_role).transpose()?,
    };
    Ok(Json(ServiceAccountDto::from(
        &admin.update_service_account(&service_account_id, update).await?,
    )))
}

/// Deletes a service account: it is archived (kept for the history its keys and usage
/// name) and every key bound to it is archived, refused within the key-cache TTL.
#[utoipa::path(delete, path = "/v1/organizations/service_accounts/{service_account_id}", tag = "Service accounts",
    params(("service_account_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete_service_account(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
) -> Reply<Deleted> {
    admin.archive_service_account(&service_account_id).await?;
    Ok(Json(Deleted {
        id: service_account_id,
        kind: "service_account_deleted",
    }))
}

/// Archives a service account and every key bound to it (Anthropic's shape; idempotent).
#[utoipa::path(post, path = "/v1/organizations/service_accounts/{service_account_id}/archive", tag = "Service accounts",
    params(("service_account_id" = String, Path)),
    responses((status = 200, body = ServiceAccountDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn archive_service_account(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
) -> Reply<ServiceAccountDto> {
    Ok(Json(ServiceAccountDto::from(
        &admin.archive_service_account(&service_account_id).await?,
    )))
}

/// The live service accounts of a workspace with their role there.
#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/service_accounts", tag = "Service accounts",
    params(("workspace_id" = String, Path), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<ServiceAccountMemberDto>), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn list_workspace_service_accounts(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    query: QueryPairs,
) -> Reply<Page<ServiceAccountMemberDto>> {
    let memberships = admin.workspace_service_accounts(&workspace_id).await?;
    membership_page(&memberships, |member| member.service_account_id.clone(), &query)
}

/// Adds a service account to a workspace, or replaces its role there.
#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/service_accounts", tag = "Service accounts",
    params(("workspace_id" = String, Path)), request_body = CreateServiceAccountMember,
    responses((status = 200, body = ServiceAccountMemberDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn add_workspace_service_account(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    Body(body): Body<CreateServiceAccountMember>,
) -> Reply<ServiceAccountMemberDto> {
    add_membership(
        &admin,
        &workspace_id,
        &body.service_account_id,
        &body.workspace_role,
    )
    .await
}

#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/service_accounts/{service_account_id}",
    tag = "Service accounts",
    params(("workspace_id" = String, Path), ("service_account_id" = String, Path)),
    responses((status = 200, body = ServiceAccountMemberDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_workspace_service_account(
    Admin(admin): Admin,
    Path((workspace_id, service_account_id)): Path<(String, String)>,
) -> Reply<ServiceAccountMemberDto> {
    Ok(Json(ServiceAccountMemberDto::from(
        &admin
            .service_account_membership(&workspace_id, &service_account_id)
            .await?,
    )))
}

/// Removes a service account from a workspace; its keys there are archived.
#[utoipa::path(delete, path = "/v1/organizations/workspaces/{workspace_id}/service_accounts/{service_account_id}",
    tag = "Service accounts",
    params(("workspace_id" = String, Path), ("service_account_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn remove_workspace_service_account(
    Admin(admin): Admin,
    Path((workspace_id, service_account_id)): Path<(String, String)>,
) -> Reply<Deleted> {
    admin
        .remove_service_account_membership(&workspace_id, &service_account_id)
        .await?;
    Ok(Json(Deleted {
        id: service_account_id,
        kind: "service_account_workspace_member_deleted",
    }))
}

/// The workspaces of a service account (archived or not) with its role in each.
#[utoipa::path(get, path = "/v1/organizations/service_accounts/{service_account_id}/workspaces",
    tag = "Service accounts",
    params(("service_account_id" = String, Path), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<ServiceAccountMemberDto>), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn list_service_account_workspaces(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
    query: QueryPairs,
) -> Reply<Page<ServiceAccountMemberDto>> {
    let memberships = admin.service_account_workspaces(&service_account_id).await?;
    membership_page(&memberships, |member| member.workspace_id.clone(), &query)
}

/// Adds a service account to a workspace, or replaces its role there: the same membership
/// as `POST /workspaces/{workspace_id}/service_accounts`, addressed from the account.
#[utoipa::path(post, path = "/v1/organizations/service_accounts/{service_account_id}/workspaces",
    tag = "Service accounts",
    params(("service_account_id" = String, Path)), request_body = AddServiceAccountWorkspace,
    responses((status = 200, body = ServiceAccountMemberDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn add_service_account_workspace(
    Admin(admin): Admin,
    Path(service_account_id): Path<String>,
    Body(body): Body<AddServiceAccountWorkspace>,
) -> Reply<ServiceAccountMemberDto> {
    add_membership(
        &admin,
        &body.workspace_id,
        &service_account_id,
        &body.workspace_role,
    )
    .await
}

/// A page of memberships, each keyed in the cursor by `cursor`.
fn membership_page(
    memberships: &[ServiceAccountMembership],
    cursor: fn(&ServiceAccountMemberDto) -> String,
    query: &QueryPairs,
) -> Reply<Page<ServiceAccountMemberDto>> {
    let page = PageRequest::parse(query)?;
    let dtos = memberships.iter().map(ServiceAccountMemberDto::from).collect();
    Ok(Json(paginate(dtos, cursor, &page)?))
}

/// Adds the account to the workspace (both of this organization, else 404) with the role
/// `role_text` names, or replaces its role there: either side's POST.
async fn add_membership(
    admin: &OrgAdmin,
    workspace_id: &str,
    service_account_id: &str,
    role_text: &str,
) -> Reply<ServiceAccountMemberDto> {
    admin.workspace(workspace_id).await?;
    admin.service_account(service_account_id).await?;
    let role = workspace_role(role_text)?;
    Ok(Json(ServiceAccountMemberDto::from(
        &admin
            .set_service_account_membership(workspace_id, service_account_id, role)
            .await?,
    )))
}
