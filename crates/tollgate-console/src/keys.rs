//! API keys: the list (hint, workspace, type — workspace, personal or service_account — and
//! linked account, allowed models, creator, created, last used, status) filtered by
//! workspace and status; create a workspace key or
//! a user's personal key (the secret is shown once, with a copy button), rename, change
//! the allowed models, disable or enable, archive. Creating a key moves no money.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::keys::AllowedModels;
use tollgate_service::{
    Access, ConsoleArea, CreatedBy, KeyBinding, KeyFilter, KeyStatus, KeyUpdate, NewApiKey,
};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

/// The models typed into a form, separated by commas or spaces; blank: every model.
fn allowed_models(text: &str, state: &ConsoleState) -> Result<AllowedModels, PageError> {
    let entries: Vec<&str> = text
        .split(|character: char| character == ',' || character.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .collect();
    AllowedModels::parse(&entries, &state.catalog).map_err(|error| PageError::Invalid(error.to_string()))
}

fn models_text(allowed: &AllowedModels) -> String {
    allowed.entries().join(", ")
}

#[derive(Deserialize, Default)]
pub(crate) struct KeyQuery {
    /// A workspace id, "default", or empty for all.
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    status: String,
}

pub(crate) async fn list(
    Signed(user): Signed,
    Query(query): Query<KeyQuery>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::ApiKeys, Access::View)?;
    let may_change = user.may(ConsoleArea::ApiKeys, Access::Change);
    let filter = KeyFilter {
        workspace_id: match query.workspace.as_str() {
            "" => None,
            "default" => Some(None),
            id => Some(Some(id.to_owned())),
        },
        status: KeyStatus::parse(&query.status),
        created_by_user_id: None,
        user_id: None,
        service_account_id: None,
        expired: false,
    };
    let keys = admin.api_keys(&filter).await?;
    let workspaces = admin.workspaces(true).await?;
    let default_workspace = admin.default_workspace_id().await?;
    let workspace_names: HashMap<&str, &str> = workspaces
        .iter()
        .map(|workspace| (workspace.id.as_str(), workspace.name.as_str()))
        .chain([(default_workspace.as_str(), "Default")])
        .collect();
    let users = admin.users(None, &[]).await.unwrap_or_default();
    let service_accounts = admin.service_accounts(true).await.unwrap_or_default();
    let account = |binding: KeyBinding<'_>| match binding {
        KeyBinding::Workspace => "—".to_owned(),
        KeyBinding::User(user_id) => users
            .iter()
            .find(|user| user.id == user_id)
            .map_or_else(|| format!("{user_id} (removed)"), |user| user.email.clone()),
        KeyBinding::ServiceAccount(id) => service_accounts
            .iter()
            .find(|service_account| service_account.id == id)
            .map_or_else(|| id.to_owned(), |service_account| service_account.name.clone()),
    };
    let creator = |created_by: &CreatedBy| match created_by {
        CreatedBy::User(id) => users
            .iter()
            .find(|user| &user.id == id)
            .map_or_else(|| id.clone(), |user| user.email.clone()),
        CreatedBy::AdminKey(id) => format!("admin key {id}"),
        CreatedBy::System(what) => what.clone(),
    };
    let content = html! {
        @if may_change {
            section.card {
                h2 { "Create a key" }
                form method="post" action="/console/keys" {
                    (csrf(&user))
                    label for="key-name" { "Name" }
                    input id="key-name" name="name" type="text" maxlength="500" required;
                    label for="key-workspace" { "Workspace" }
                    select id="key-workspace" name="workspace" {
                        option value="default" { "Default" }
                        @for workspace in workspaces.iter().filter(|workspace| workspace.archived_at.is_none()) {
                            option value=(workspace.id) selected[workspace.id == query.workspace] { (workspace.name) }
                        }
                    }
                    label for="key-user" { "Linked account" }
                    select id="key-user" name="user" {
                        option value="" { "None: a workspace key" }
                        @for member in &users {
                            option value=(member.id) { "Personal key of " (member.email) }
                        }
                    }
                    label for="key-expires" { "Expires on (UTC date; blank for never)" }
                    input id="key-expires" name="expires" type="date";
                    label for="key-models" { "Allowed models (ids or aliases, comma-separated; blank for all)" }
                    input id="key-models" name="models" type="text";
                    button type="submit" { "Create key" }
                }
            }
        }
        form.filters method="get" action="/console/keys" {
            label for="filter-workspace" { "Workspace" }
            select id="filter-workspace" name="workspace" {
                option value="" { "All" }
                option value="default" selected[query.workspace == "default"] { "Default" }
                @for workspace in &workspaces {
                    option value=(workspace.id) selected[workspace.id == query.workspace] { (workspace.name) }
                }
            }
            label for="filter-status" { "Status" }
            select id="filter-status" name="status" {
                option value="" { "All" }
                @for status in KeyStatus::ALL {
                    option value=(status.as_str()) selected[status.as_str() == query.status] { (status.as_str()) }
                }
            }
            button type="submit" { "Filter" }
        }
        div.scroll {
            table id="keys" {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Workspace" }
                    th scope="col" { "Type" } th scope="col" { "Linked account" } th scope="col" { "Models" }
                    th scope="col" { "Created by" } th scope="col" { "Created" } th scope="col" { "Last used" }
                    th scope="col" { "Expires" } th scope="col" { "Status" }
                    @if may_change { th scope="col" { "Change" } }
                } }
                tbody {
                    @for key in &keys {
                        @let record = &key.record;
                        tr {
                            th scope="row" { (record.name) }
                            td { code { (record.hint) } }
                            td { (record.workspace_id.as_deref().and_then(|id| workspace_names.get(id).copied()).unwrap_or("—")) }
                            td { (record.binding().key_type()) }
                            td { (account(record.binding())) }
                            td {
                                @if record.allowed_models.allows_all() { "all" } @else { (models_text(&record.allowed_models)) }
                            }
                            td { (creator(&key.created_by)) }
                            td { (layout::day(record.created_at)) }
                            td { (layout::optional_instant(record.last_used_at)) }
                            td { (record.expires_at.map_or_else(|| "never".to_owned(), layout::day)) }
                            td { (record.status.as_str()) }
                            @if may_change {
                                td.actions {
                                    @if record.status != KeyStatus::Archived {
                                        form.inline method="post" action=(format!("/console/keys/{}/rename", record.id)) {
                                            (csrf(&user))
                                            label.visually-hidden for=(format!("rename-{}", record.id)) { "New name for " (record.name) }
                                            input id=(format!("rename-{}", record.id)) name="name" type="text" required value=(record.name);
                                            button type="submit" { "Rename" }
                                        }
                                        form.inline method="post" action=(format!("/console/keys/{}/models", record.id)) {
                                            (csrf(&user))
                                            label.visually-hidden for=(format!("models-{}", record.id)) { "Allowed models of " (record.name) }
                                            input id=(format!("models-{}", record.id)) name="models" type="text" placeholder="all" value=(models_text(&record.allowed_models));
                                            button type="submit" { "Set models" }
                                        }
                                        form.inline method="post" action=(format!("/console/keys/{}/status", record.id)) {
                                            (csrf(&user))
                                            @if record.status == KeyStatus::Active {
                                                button type="submit" name="status" value="inactive" { "Disable" }
                                            } @else {
                                                button type="submit" name="status" value="active" { "Enable" }
                                            }
                                            button.danger type="submit" name="status" value="archived" { "Archive" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if keys.is_empty() {
                        tr { td colspan="12" { "No keys match." } }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/keys", "API keys", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct CreateForm {
    name: String,
    #[serde(default)]
    workspace: String,
    /// `YYYY-MM-DD`: the key expires at the start of that day (UTC); blank: never.
    #[serde(default)]
    expires: String,
    /// A user id: their personal key; blank: a workspace key.
    #[serde(default)]
    user: String,
    /// Allowed models, comma- or space-separated; blank: every model.
    #[serde(default)]
    models: String,
}

pub(crate) async fn create(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Form(form): Form<CreateForm>,
) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::ApiKeys, Access::Change)?;
    let workspace = match form.workspace.as_str() {
        "" | "default" => None,
        id => Some(id),
    };
    let expires_at = match form.expires.trim() {
        "" => None,
        text => Some(
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| PageError::Invalid(format!("'{text}' is not a date (YYYY-MM-DD)")))?
                .and_time(chrono::NaiveTime::MIN)
                .and_utc(),
        ),
    };
    let created = admin
        .create_api_key(NewApiKey {
            name: form.name,
            workspace_id: workspace.map(str::to_owned),
            expires_at,
            user_id: Some(form.user).filter(|user_id| !user_id.is_empty()),
            service_account_id: None,
            allowed_models: allowed_models(&form.models, &state)?,
        })
        .await?;
    let content = html! {
        section.card {
            h2 { "Key " (created.key.record.name) " created" }
            p role="status" { "Copy the key now: it is shown only once, and only its hint is kept." }
            label for="new-key" { "Secret key" }
            div.copy {
                input id="new-key" type="text" readonly value=(created.secret.expose_secret());
                button type="button" data-copy="new-key" { "Copy" }
            }
            p { a href="/console/keys" { "Back to API keys" } }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/keys", "New API key", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct RenameForm {
    name: String,
}

pub(crate) async fn rename(
    Signed(user): Signed,
    Path(key_id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::ApiKeys, Access::Change)?;
    admin
        .update_api_key(
            &key_id,
            KeyUpdate {
                name: Some(form.name),
                ..KeyUpdate::default()
            },
        )
        .await?;
    Ok(Redirect::to("/console/keys").into_response())
}

#[derive(Deserialize)]
pub(crate) struct StatusForm {
    status: String,
}

pub(crate) async fn set_status(
    Signed(user): Signed,
    Path(key_id): Path<String>,
    Form(form): Form<StatusForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::ApiKeys, Access::Change)?;
    let status = KeyStatus::parse(&form.status)
        .ok_or_else(|| PageError::Invalid(format!("'{}' is not a key status", form.status)))?;
    admin
        .update_api_key(
            &key_id,
            KeyUpdate {
                status: Some(status),
                ..KeyUpdate::default()
            },
        )
        .await?;
    Ok(Redirect::to("/console/keys").into_response())
}

#[derive(Deserialize)]
pub(crate) struct ModelsForm {
    #[serde(default)]
    models: String,
}

pub(crate) async fn set_models(
    State(state): State<ConsoleState>,
    Signed(user): Signed,
    Path(key_id): Path<String>,
    Form(form): Form<ModelsForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::ApiKeys, Access::Change)?;
    admin
        .update_api_key(
            &key_id,
            KeyUpdate {
                allowed_models: Some(allowed_models(&form.models, &state)?),
                ..KeyUpdate::default()
            },
        )
        .await?;
    Ok(Redirect::to("/console/keys").into_response())
}
