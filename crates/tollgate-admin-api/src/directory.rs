//! The organization (`/me`), workspaces, API keys, users, invites and workspace members:
//! Anthropic's Admin API shapes, over the organization-scoped `OrgAdmin`.

use axum::Json;
use axum::extract::{Path, State};
use tollgate_core::keys::AllowedModels;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_service::{KeyFilter, KeyStatus, KeyUpdate, NewApiKey};

use crate::AdminState;
use crate::dto::{
    ApiKeyDto, CreateApiKey, CreateInvite, CreateMember, CreateWorkspace, CreatedApiKeyDto, Deleted,
    InviteDto, MemberDto, OrganizationDto, UpdateApiKey, UpdateMember, UpdateUser, UpdateWorkspace, UserDto,
    WorkspaceDto,
};
use crate::error::{ApiError, ErrorEnvelope};
use crate::extract::{Admin, Body, QueryPairs};
use crate::pagination::{Page, PageRequest, paginate};

type Reply<T> = Result<Json<T>, ApiError>;

pub(crate) fn org_role(text: &str) -> Result<OrgRole, ApiError> {
    OrgRole::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "role: '{text}' is not one of user, developer, billing, claude_code_user"
        ))
    })
}

pub(crate) fn workspace_role(text: &str) -> Result<WorkspaceRole, ApiError> {
    WorkspaceRole::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "workspace_role: '{text}' is not one of workspace_user, workspace_developer, workspace_admin"
        ))
    })
}

fn allowed_models(entries: &[String], state: &AdminState) -> Result<AllowedModels, ApiError> {
    AllowedModels::parse(entries, &state.catalog)
        .map_err(|error| ApiError::invalid(format!("allowed_models: {error}")))
}

fn key_status(text: &str) -> Result<KeyStatus, ApiError> {
    KeyStatus::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "status: '{text}' is not one of active, inactive, archived"
        ))
    })
}

/// The organization the admin key belongs to.
#[utoipa::path(get, path = "/v1/organizations/me", tag = "Organization",
    responses((status = 200, body = OrganizationDto), (status = 401, body = ErrorEnvelope)))]
pub(crate) async fn me(Admin(admin): Admin) -> Reply<OrganizationDto> {
    Ok(Json(OrganizationDto::from(&admin.organization().await?)))
}

/// Workspaces other than the Default one, oldest first.
#[utoipa::path(get, path = "/v1/organizations/workspaces", tag = "Workspaces",
    params(("include_archived" = Option<bool>, Query), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<WorkspaceDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_workspaces(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<WorkspaceDto>> {
    let page = PageRequest::parse(&query)?;
    let workspaces = admin.workspaces(query.boolean("include_archived")?).await?;
    let dtos = workspaces.iter().map(WorkspaceDto::from).collect();
    Ok(Json(paginate(
        dtos,
        |workspace: &WorkspaceDto| workspace.id.clone(),
        &page,
    )?))
}

#[utoipa::path(post, path = "/v1/organizations/workspaces", tag = "Workspaces",
    request_body = CreateWorkspace,
    responses((status = 200, body = WorkspaceDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn create_workspace(
    Admin(admin): Admin,
    Body(body): Body<CreateWorkspace>,
) -> Reply<WorkspaceDto> {
    Ok(Json(WorkspaceDto::from(
        &admin.create_workspace(&body.name).await?,
    )))
}

#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}", tag = "Workspaces",
    params(("workspace_id" = String, Path)),
    responses((status = 200, body = WorkspaceDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_workspace(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
) -> Reply<WorkspaceDto> {
    Ok(Json(WorkspaceDto::from(&admin.workspace(&workspace_id).await?)))
}

/// Renames a workspace (the Default workspace can't be renamed: it has no id here).
#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}", tag = "Workspaces",
    params(("workspace_id" = String, Path)), request_body = UpdateWorkspace,
    responses((status = 200, body = WorkspaceDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_workspace(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    Body(body): Body<UpdateWorkspace>,
) -> Reply<WorkspaceDto> {
    let workspace = match body.name {
        Some(name) => admin.rename_workspace(&workspace_id, &name).await?,
        None => admin.workspace(&workspace_id).await?,
    };
    Ok(Json(WorkspaceDto::from(&workspace)))
}

/// Archives a workspace for good and archives its keys; usage history stays.
#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/archive", tag = "Workspaces",
    params(("workspace_id" = String, Path)),
    responses((status = 200, body = WorkspaceDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn archive_workspace(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
) -> Reply<WorkspaceDto> {
    Ok(Json(WorkspaceDto::from(
        &admin.archive_workspace(&workspace_id).await?,
    )))
}

/// API keys, newest first, filtered by `workspace_id`, `status` (`expired`: past their
/// `expires_at`, whatever their stored status), `created_by_user_id`, `user_id` (the
/// personal keys of a user) and `service_account_id` (the keys bound to it).
#[utoipa::path(get, path = "/v1/organizations/api_keys", tag = "API keys",
    params(("workspace_id" = Option<String>, Query), ("status" = Option<String>, Query),
           ("created_by_user_id" = Option<String>, Query), ("user_id" = Option<String>, Query),
           ("service_account_id" = Option<String>, Query), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<ApiKeyDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_api_keys(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<ApiKeyDto>> {
    let page = PageRequest::parse(&query)?;
    let status = query.one("status")?;
    let expired = status == Some("expired");
    let status = status.filter(|_| !expired).map(key_status).transpose()?;
    let workspace_id = query.one("workspace_id")?.map(str::to_owned);
    if let Some(workspace_id) = &workspace_id {
        admin.workspace(workspace_id).await?;
    }
    let filter = KeyFilter {
        workspace_id: workspace_id.map(Some),
        status,
        created_by_user_id: query.one("created_by_user_id")?.map(str::to_owned),
        user_id: query.one("user_id")?.map(str::to_owned),
        service_account_id: query.one("service_account_id")?.map(str::to_owned),
        expired,
    };
    let default_workspace = admin.default_workspace_id().await?;
    let keys = admin.api_keys(&filter).await?;
    let dtos = keys
        .iter()
        .map(|key| ApiKeyDto::from(key, &default_workspace))
        .collect();
    Ok(Json(paginate(dtos, |key: &ApiKeyDto| key.id.clone(), &page)?))
}

/// Creates an API key (tollgate's addition): the secret is in this response only. With a
/// `user_id`, a personal key of that user; with a `service_account_id`, a key of that
/// service account, which must belong to the key's workspace.
#[utoipa::path(post, path = "/v1/organizations/api_keys", tag = "API keys",
    request_body = CreateApiKey,
    responses((status = 200, body = CreatedApiKeyDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn create_api_key(
    State(state): State<AdminState>,
    Admin(admin): Admin,
    Body(body): Body<CreateApiKey>,
) -> Reply<CreatedApiKeyDto> {
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|text| crate::extract::parse_timestamp("expires_at", text))
        .transpose()?;
    let allowed_models = allowed_models(&body.allowed_models.unwrap_or_default(), &state)?;
    let created = admin
        .create_api_key(NewApiKey {
            name: body.name,
            workspace_id: body.workspace_id,
            expires_at,
            user_id: body.user_id,
            service_account_id: body.service_account_id,
            allowed_models,
        })
        .await?;
    let default_workspace = admin.default_workspace_id().await?;
    Ok(Json(CreatedApiKeyDto {
        key: ApiKeyDto::from(&created.key, &default_workspace),
        api_key_secret: created.secret.expose_secret().to_owned(),
    }))
}

#[utoipa::path(get, path = "/v1/organizations/api_keys/{api_key_id}", tag = "API keys",
    params(("api_key_id" = String, Path)),
    responses((status = 200, body = ApiKeyDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_api_key(Admin(admin): Admin, Path(api_key_id): Path<String>) -> Reply<ApiKeyDto> {
    let key = admin.api_key(&api_key_id).await?;
    Ok(Json(ApiKeyDto::from(&key, &admin.default_workspace_id().await?)))
}

/// Renames a key, changes its status (`active`, `inactive`, or `archived` for good) or its
/// allowed models (in force on every replica within the key-cache TTL).
#[utoipa::path(post, path = "/v1/organizations/api_keys/{api_key_id}", tag = "API keys",
    params(("api_key_id" = String, Path)), request_body = UpdateApiKey,
    responses((status = 200, body = ApiKeyDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_api_key(
    State(state): State<AdminState>,
    Admin(admin): Admin,
    Path(api_key_id): Path<String>,
    Body(body): Body<UpdateApiKey>,
) -> Reply<ApiKeyDto> {
    admin.api_key(&api_key_id).await?;
    let update = KeyUpdate {
        name: body.name,
        status: body.status.as_deref().map(key_status).transpose()?,
        allowed_models: body
            .allowed_models
            .map(|entries| allowed_models(&entries, &state))
            .transpose()?,
    };
    let key = admin.update_api_key(&api_key_id, update).await?;
    Ok(Json(ApiKeyDto::from(&key, &admin.default_workspace_id().await?)))
}

#[utoipa::path(get, path = "/v1/organizations/users", tag = "Users",
    params(("email" = Option<String>, Query), ("roles[]" = Option<Vec<String>>, Query), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<UserDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_users(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<UserDto>> {
    let page = PageRequest::parse(&query)?;
    let roles = query
        .all("roles")
        .into_iter()
        .map(|text| {
            OrgRole::parse(text).ok_or_else(|| {
                ApiError::invalid(format!(
                    "roles: '{text}' is not one of user, developer, billing, admin, claude_code_user"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let users = admin.users(query.one("email")?, &roles).await?;
    let dtos = users.iter().map(UserDto::from).collect();
    Ok(Json(paginate(dtos, |user: &UserDto| user.id.clone(), &page)?))
}

#[utoipa::path(get, path = "/v1/organizations/users/{user_id}", tag = "Users",
    params(("user_id" = String, Path)),
    responses((status = 200, body = UserDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_user(Admin(admin): Admin, Path(user_id): Path<String>) -> Reply<UserDto> {
    Ok(Json(UserDto::from(&admin.user(&user_id).await?)))
}

/// Changes a user's role; `admin` is neither granted nor taken away through the API.
#[utoipa::path(post, path = "/v1/organizations/users/{user_id}", tag = "Users",
    params(("user_id" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_user(
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    Body(body): Body<UpdateUser>,
) -> Reply<UserDto> {
    admin.user(&user_id).await?;
    let role = org_role(&body.role)?;
    Ok(Json(UserDto::from(&admin.set_user_role(&user_id, role).await?)))
}

#[utoipa::path(delete, path = "/v1/organizations/users/{user_id}", tag = "Users",
    params(("user_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete_user(Admin(admin): Admin, Path(user_id): Path<String>) -> Reply<Deleted> {
    admin.remove_user(&user_id).await?;
    Ok(Json(Deleted {
        id: user_id,
        kind: "user_deleted",
    }))
}

#[utoipa::path(get, path = "/v1/organizations/invites", tag = "Invites",
    params(("limit" = Option<u32>, Query), ("after_id" = Option<String>, Query),
           ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<InviteDto>), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list_invites(Admin(admin): Admin, query: QueryPairs) -> Reply<Page<InviteDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin.invites().await?.iter().map(InviteDto::from).collect();
    Ok(Json(paginate(
        dtos,
        |invite: &InviteDto| invite.id.clone(),
        &page,
    )?))
}

/// Invites an email to the organization with any role but `admin`, for 21 days.
#[utoipa::path(post, path = "/v1/organizations/invites", tag = "Invites",
    request_body = CreateInvite,
    responses((status = 200, body = InviteDto), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn create_invite(Admin(admin): Admin, Body(body): Body<CreateInvite>) -> Reply<InviteDto> {
    let role = org_role(&body.role)?;
    Ok(Json(InviteDto::from(
        &admin.create_invite(&body.email, role).await?,
    )))
}

#[utoipa::path(get, path = "/v1/organizations/invites/{invite_id}", tag = "Invites",
    params(("invite_id" = String, Path)),
    responses((status = 200, body = InviteDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_invite(Admin(admin): Admin, Path(invite_id): Path<String>) -> Reply<InviteDto> {
    Ok(Json(InviteDto::from(&admin.invite(&invite_id).await?)))
}

#[utoipa::path(delete, path = "/v1/organizations/invites/{invite_id}", tag = "Invites",
    params(("invite_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete_invite(Admin(admin): Admin, Path(invite_id): Path<String>) -> Reply<Deleted> {
    admin.delete_invite(&invite_id).await?;
    Ok(Json(Deleted {
        id: invite_id,
        kind: "invite_deleted",
    }))
}

/// A workspace's members, including the organization's admins and billing users, who hold
/// their role in every workspace.
#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/members", tag = "Workspace members",
    params(("workspace_id" = String, Path), ("limit" = Option<u32>, Query),
           ("after_id" = Option<String>, Query), ("before_id" = Option<String>, Query)),
    responses((status = 200, body = Page<MemberDto>), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn list_members(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    query: QueryPairs,
) -> Reply<Page<MemberDto>> {
    let page = PageRequest::parse(&query)?;
    let dtos = admin
        .members(&workspace_id)
        .await?
        .iter()
        .map(MemberDto::from)
        .collect();
    Ok(Json(paginate(
        dtos,
        |member: &MemberDto| member.user_id.clone(),
        &page,
    )?))
}

#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/members", tag = "Workspace members",
    params(("workspace_id" = String, Path)), request_body = CreateMember,
    responses((status = 200, body = MemberDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn create_member(
    Admin(admin): Admin,
    Path(workspace_id): Path<String>,
    Body(body): Body<CreateMember>,
) -> Reply<MemberDto> {
    admin.workspace(&workspace_id).await?;
    admin.user(&body.user_id).await?;
    let role = workspace_role(&body.workspace_role)?;
    Ok(Json(MemberDto::from(
        &admin.set_member(&workspace_id, &body.user_id, role).await?,
    )))
}

#[utoipa::path(get, path = "/v1/organizations/workspaces/{workspace_id}/members/{user_id}", tag = "Workspace members",
    params(("workspace_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = MemberDto), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn get_member(
    Admin(admin): Admin,
    Path((workspace_id, user_id)): Path<(String, String)>,
) -> Reply<MemberDto> {
    Ok(Json(MemberDto::from(
        &admin.member(&workspace_id, &user_id).await?,
    )))
}

#[utoipa::path(post, path = "/v1/organizations/workspaces/{workspace_id}/members/{user_id}", tag = "Workspace members",
    params(("workspace_id" = String, Path), ("user_id" = String, Path)), request_body = UpdateMember,
    responses((status = 200, body = MemberDto), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update_member(
    Admin(admin): Admin,
    Path((workspace_id, user_id)): Path<(String, String)>,
    Body(body): Body<UpdateMember>,
) -> Reply<MemberDto> {
    admin.member(&workspace_id, &user_id).await?;
    let role = workspace_role(&body.workspace_role)?;
    Ok(Json(MemberDto::from(
        &admin.update_member(&workspace_id, &user_id, role).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/organizations/workspaces/{workspace_id}/members/{user_id}", tag = "Workspace members",
    params(("workspace_id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete_member(
    Admin(admin): Admin,
    Path((workspace_id, user_id)): Path<(String, String)>,
) -> Reply<Deleted> {
    admin.remove_member(&workspace_id, &user_id).await?;
    Ok(Json(Deleted {
        id: user_id,
        kind: "workspace_member_deleted",
    }))
}
