//! Members and invites: who belongs to the organization with which role, invitations (with
//! the link the invitee opens), role changes, and deactivating or reactivating a member. The admin role is never granted or taken
//! away here, as in the Admin API.

use axum::Form;
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_core::roles::OrgRole;
use tollgate_service::{Access, ConsoleArea, InviteStatus};

use crate::error::PageError;
use crate::layout::{self, csrf};
use crate::session::Signed;

const ASSIGNABLE: [OrgRole; 4] = [
    OrgRole::User,
    OrgRole::Developer,
    OrgRole::Billing,
    OrgRole::ClaudeCodeUser,
];

pub(crate) async fn page(Signed(user): Signed) -> Result<Html<String>, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::View)?;
    let may_change = user.may(ConsoleArea::Members, Access::Change);
    let users = admin.users(None, &[]).await?;
    let deactivated = admin.deactivated_users().await?;
    let invites = admin.invites().await?;
    let content = html! {
        div.scroll {
            table id="members" {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Added" } th scope="col" { "Status" } } }
                tbody {
                    @for member in &users {
                        tr {
                            th scope="row" { (member.email) }
                            td { (member.name) }
                            td {
                                @if may_change && member.role.assignable() {
                                    form.inline method="post" action=(format!("/console/members/{}/role", member.id)) {
                                        (csrf(&user))
                                        label.visually-hidden for=(format!("role-{}", member.id)) { "Role of " (member.email) }
                                        select id=(format!("role-{}", member.id)) name="role" {
                                            @for role in ASSIGNABLE {
                                                option value=(role.as_str()) selected[role == member.role] { (role.as_str()) }
                                            }
                                        }
                                        button type="submit" { "Change" }
                                    }
                                } @else {
                                    (member.role.as_str())
                                }
                            }
                            td { (layout::day(member.added_at)) }
                            td {
                                @match deactivated.get(&member.id) {
                                    Some(at) => { "Deactivated " (layout::day(*at)) }
                                    None => { "Active" }
                                }
                                @if may_change && member.role.assignable() && member.id != user.user.id {
                                    @let (action, label) = if deactivated.contains_key(&member.id) { ("reactivate", "Reactivate") } else { ("deactivate", "Deactivate") };
                                    form.inline method="post" action=(format!("/console/members/{}/{action}", member.id)) {
                                        (csrf(&user))
                                        button.danger[action == "deactivate"] type="submit" { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Invites" }
        @if may_change {
            form.inline.card method="post" action="/console/members/invite" {
                (csrf(&user))
                label for="invite-email" { "Email" }
                input id="invite-email" name="email" type="email" required;
                label for="invite-role" { "Role" }
                select id="invite-role" name="role" {
                    @for role in ASSIGNABLE { option value=(role.as_str()) { (role.as_str()) } }
                }
                button type="submit" { "Invite" }
            }
        }
        div.scroll {
            table id="invites" {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Status" } th scope="col" { "Expires" } th scope="col" { "Link" } } }
                tbody {
                    @for invite in &invites {
                        tr {
                            th scope="row" { (invite.record.email) }
                            td { (invite.record.role.as_str()) }
                            td { (invite.status.as_str()) }
                            td { (layout::day(invite.record.expires_at)) }
                            td {
                                @if invite.status == InviteStatus::Pending {
                                    code { "/console/invites/" (invite.record.id) "/accept" }
                                    @if may_change {
                                        form.inline method="post" action=(format!("/console/members/invites/{}/delete", invite.record.id)) {
                                            (csrf(&user))
                                            button.danger type="submit" { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if invites.is_empty() { tr { td colspan="5" { "No invites." } } }
                }
            }
        }
    };
    Ok(Html(
        layout::page(&user, "/console/members", "Members", content).into_string(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct InviteForm {
    email: String,
    role: String,
}

fn role(text: &str) -> Result<OrgRole, PageError> {
    OrgRole::parse(text).ok_or_else(|| PageError::Invalid(format!("'{text}' is not a role")))
}

pub(crate) async fn invite(
    Signed(user): Signed,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::Change)?;
    admin.create_invite(&form.email, role(&form.role)?).await?;
    Ok(Redirect::to("/console/members").into_response())
}

#[derive(Deserialize)]
pub(crate) struct RoleForm {
    role: String,
}

pub(crate) async fn set_role(
    Signed(user): Signed,
    Path(user_id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::Change)?;
    admin.set_user_role(&user_id, role(&form.role)?).await?;
    Ok(Redirect::to("/console/members").into_response())
}

/// Deactivating signs the person out everywhere and archives their personal keys.
pub(crate) async fn deactivate(
    Signed(user): Signed,
    Path(user_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::Change)?;
    if user_id == user.user.id {
        return Err(PageError::Invalid("You cannot deactivate yourself.".into()));
    }
    admin.deactivate_user(&user_id).await?;
    Ok(Redirect::to("/console/members").into_response())
}

pub(crate) async fn reactivate(
    Signed(user): Signed,
    Path(user_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::Change)?;
    admin.reactivate_user(&user_id).await?;
    Ok(Redirect::to("/console/members").into_response())
}

pub(crate) async fn delete_invite(
    Signed(user): Signed,
    Path(invite_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = user.authority(ConsoleArea::Members, Access::Change)?;
    admin.delete_invite(&invite_id).await?;
    Ok(Redirect::to("/console/members").into_response())
}
