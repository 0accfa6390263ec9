//! Workspaces: the list with this month's spend, create, rename, archive, spend and rate
//! limits (never above the organization's: the service checks), and members.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::money::NanoUsd;
use tollgate_core::roles::WorkspaceRole;
use tollgate_service::{Access, ConsoleArea, RateLimitOverrides};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

pub(crate) async fn list(Signed(user): Signed) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::View)?;
    let may_change = user.may(ConsoleArea::Workspaces, Access::Change);
    let workspaces = admin.workspaces(true).await?;
    let mut rows = Vec::new();
    for workspace in &workspaces {
        let spend = if workspace.archived_at.is_none() {
            Some(admin.month_spend(Some(&workspace.id)).await?)
        } else {
            None
        };
        let limits = admin.workspace_limits(&workspace.id).await?;
        rows.push((workspace, spend, limits.spend_limit));
    }
    let content = html! {
        @if may_change {
            form.inline.card method="post" action="/console/workspaces" {
                (csrf(&user))
                label for="workspace-name" { "New workspace name" }
                input id="workspace-name" name="name" type="text" maxlength="40" required;
                button type="submit" { "Create workspace" }
            }
        }
        div.scroll {
            table id="workspaces" {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Spent this month" }
                    th scope="col" { "Spend limit" } th scope="col" { "Status" }
                } }
                tbody {
                    tr {
                        th scope="row" { "Default" }
                        td { "—" } td { "—" } td { "organization's" } td { "active" }
                    }
                    @for (workspace, spend, limit) in &rows {
                        tr {
                            th scope="row" { a href=(format!("/console/workspaces/{}", workspace.id)) { (workspace.name) } }
                            td { (layout::day(workspace.created_at)) }
                            td { (spend.map_or_else(|| "—".to_owned(), |spend| spend.to_string())) }
                            td { (layout::optional_usd(*limit)) }
                            td { @if workspace.archived_at.is_some() { "archived" } @else { "active" } }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/workspaces", "Workspaces", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct NameForm {
    name: String,
}

pub(crate) async fn create(Signed(user): Signed, Form(form): Form<NameForm>) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    let workspace = admin.create_workspace(&form.name).await?;
    Ok(Redirect::to(&format!("/console/workspaces/{}", workspace.id)).into_response())
}

pub(crate) async fn detail(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::View)?;
    let may_change = user.may(ConsoleArea::Workspaces, Access::Change);
    let workspace = admin.workspace(&workspace_id).await?;
    let archived = workspace.archived_at.is_some();
    let limits = admin.workspace_limits(&workspace.id).await?;
    let spend = admin.month_spend(Some(&workspace.id)).await?;
    let capture = if user.may(ConsoleArea::Workspaces, Access::Change) {
        admin.capture_settings(&workspace.id).await?
    } else {
        None
    };
    let members = if user.may(ConsoleArea::Members, Access::View) {
        admin.members(&workspace.id).await?
    } else {
        Vec::new()
    };
    let users = if user.may(ConsoleArea::Members, Access::View) {
        admin.users(None, &[]).await?
    } else {
        Vec::new()
    };
    let email_of = |user_id: &str| {
        users
            .iter()
            .find(|user| user.id == user_id)
            .map_or_else(|| user_id.to_owned(), |user| user.email.clone())
    };
    let mut classes: Vec<String> = state
        .catalog
        .models()
        .iter()
        .map(|model| model.class.clone())
        .collect();
    classes.sort();
    classes.dedup();
    let action = |what: &str| format!("/console/workspaces/{}/{what}", workspace.id);
    let content = html! {
        div.stats {
            (layout::stat("Spent this month", &spend.to_string(), "workspace-spend"))
            (layout::stat("Spend limit", &layout::optional_usd(limits.spend_limit), "workspace-limit"))
            (layout::stat("Per-user spend limit", &layout::optional_usd(limits.user_spend_limit), "workspace-user-limit"))
            (layout::stat("Status", if archived { "archived" } else { "active" }, "workspace-status"))
        }
        p { a href=(format!("/console/keys?workspace={}", workspace.id)) { "API keys of this workspace" } }
        @if !archived {
            (crate::capture::settings_form(&user, &workspace.id, capture.as_ref()))
        }
        @if may_change && !archived {
            section.card {
                h2 { "Rename" }
                form.inline method="post" action=(action("rename")) {
                    (csrf(&user))
                    label for="rename" { "Name" }
                    input id="rename" name="name" type="text" maxlength="40" required value=(workspace.name);
                    button type="submit" { "Rename" }
                }
            }
            section.card {
                h2 { "Limits" }
                p.hint { "Each limit may only be lower than the organization's." }
                form method="post" action=(action("limits")) {
                    (csrf(&user))
                    label for="spend-limit" { "Monthly spend limit in USD (empty: none)" }
                    input id="spend-limit" name="spend_limit" type="text" inputmode="decimal"
                        value=(limits.spend_limit.map(|limit| limit.to_usd_decimal()).unwrap_or_default());
                    label for="user-spend-limit" { "Monthly spend limit per user in USD, for personal keys (empty: none)" }
                    input id="user-spend-limit" name="user_spend_limit" type="text" inputmode="decimal"
                        value=(limits.user_spend_limit.map(|limit| limit.to_usd_decimal()).unwrap_or_default());
                    label for="class" { "Model class for the rate limits below" }
                    select id="class" name="class" {
                        @for class in &classes { option value=(class) { (class) } }
                    }
                    label for="rpm" { "Requests per minute (empty: the organization's)" }
                    input id="rpm" name="rpm" type="number" min="1";
                    label for="itpm" { "Input tokens per minute" }
                    input id="itpm" name="itpm" type="number" min="1";
                    label for="otpm" { "Output tokens per minute" }
                    input id="otpm" name="otpm" type="number" min="1";
                    button type="submit" { "Save limits" }
                }
                @if !limits.rate_limits.is_empty() {
                    table {
                        thead { tr { th scope="col" { "Class" } th scope="col" { "RPM" } th scope="col" { "ITPM" } th scope="col" { "OTPM" } } }
                        tbody {
                            @for (class, overrides) in &limits.rate_limits {
                                tr {
                                    th scope="row" { (class) }
                                    td { (overrides.requests_per_minute.map_or("—".into(), layout::count)) }
                                    td { (overrides.input_tokens_per_minute.map_or("—".into(), layout::count)) }
                                    td { (overrides.output_tokens_per_minute.map_or("—".into(), layout::count)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !members.is_empty() || !users.is_empty() {
            section.card {
                h2 { "Members" }
                table {
                    thead { tr { th scope="col" { "Member" } th scope="col" { "Workspace role" } } }
                    tbody {
                        @for member in &members {
                            tr { th scope="row" { (email_of(&member.user_id)) } td { (member.role.as_str()) } }
                        }
                    }
                }
                @if may_change && !archived {
                    form.inline method="post" action=(action("members")) {
                        (csrf(&user))
                        label for="member-user" { "User" }
                        select id="member-user" name="user_id" {
                            @for one in &users { option value=(one.id) { (one.email) } }
                        }
                        label for="member-role" { "Role" }
                        select id="member-role" name="role" {
                            @for role in ["workspace_user", "workspace_developer", "workspace_admin"] {
                                option value=(role) { (role) }
                            }
                        }
                        button type="submit" { "Set role" }
                    }
                }
            }
        }
        @if may_change && !archived {
            section.card.danger {
                h2 { "Archive" }
                p { "Archiving cannot be undone. Its API keys stop working; its history stays." }
                form method="post" action=(action("archive")) {
                    (csrf(&user))
                    button.danger type="submit" { "Archive " (workspace.name) }
                }
            }
        }
    };
    let title = format!("Workspace {}", workspace.name);
    Ok(Html(
        layout::page(&user, "/console/workspaces", &title, content).into_string(),
    ))
}

pub(crate) async fn rename(
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    admin.rename_workspace(&workspace_id, &form.name).await?;
    Ok(Redirect::to(&format!("/console/workspaces/{workspace_id}")).into_response())
}

pub(crate) async fn archive(
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    admin.archive_workspace(&workspace_id).await?;
    Ok(Redirect::to("/console/workspaces").into_response())
}

#[derive(Deserialize)]
pub(crate) struct LimitsForm {
    #[serde(default)]
    spend_limit: String,
    /// Absent (a form of before the field) keeps the per-user limit; empty clears it.
    user_spend_limit: Option<String>,
    #[serde(default)]
    class: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    itpm: String,
    #[serde(default)]
    otpm: String,
}

fn optional_usd(label: &str, text: &str) -> Result<Option<NanoUsd>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NanoUsd::parse_usd(text)
        .map(Some)
        .map_err(|error| PageError::Invalid(format!("{label}: {error}")))
}

fn optional_count(label: &str, text: &str) -> Result<Option<u64>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| PageError::Invalid(format!("{label} must be a whole number")))
}

pub(crate) async fn set_limits(
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
    Form(form): Form<LimitsForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    let mut limits = admin.workspace_limits(&workspace_id).await?;
    limits.spend_limit = optional_usd("spend limit", &form.spend_limit)?;
    if let Some(user_spend_limit) = &form.user_spend_limit {
        limits.user_spend_limit = optional_usd("per-user spend limit", user_spend_limit)?;
    }
    let overrides = RateLimitOverrides {
        requests_per_minute: optional_count("requests per minute", &form.rpm)?,
        input_tokens_per_minute: optional_count("input tokens per minute", &form.itpm)?,
        output_tokens_per_minute: optional_count("output tokens per minute", &form.otpm)?,
    };
    if !form.class.is_empty() {
        if overrides == RateLimitOverrides::default() {
            limits.rate_limits.remove(&form.class);
        } else {
            limits.rate_limits.insert(form.class.clone(), overrides);
        }
    }
    admin.set_workspace_limits(&workspace_id, limits).await?;
    Ok(Redirect::to(&format!("/console/workspaces/{workspace_id}")).into_response())
}

#[derive(Deserialize)]
pub(crate) struct MemberForm {
    user_id: String,
    role: String,
}

pub(crate) async fn set_member(
    Signed(user): Signed,
    Path(workspace_id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Workspaces, Access::Change)?;
    let role = WorkspaceRole::parse(&form.role)
        .ok_or_else(|| PageError::Invalid(format!("'{}' is not a workspace role", form.role)))?;
    admin.set_member(&workspace_id, &form.user_id, role).await?;
    Ok(Redirect::to(&format!("/console/workspaces/{workspace_id}")).into_response())
}
