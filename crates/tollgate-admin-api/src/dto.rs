//! The Admin API's wire shapes, hand-converted from the service's types so that a refactor
//! inside can't drift the contract. Field names follow Anthropic's Admin API (checked
//! against its published types); our additions (credits, tiers, limits, auto-reload, the
//! audit log) follow the same style: `type` names the object, times are RFC 3339, amounts
//! are decimal strings in US cents.

use serde::{Deserialize, Serialize};
use tollgate_core::ids::base62_encode;
use tollgate_core::money::NanoUsd;
use tollgate_service::{
    AuditEntry, AutoReload, BalanceView, CreatedBy, Invite, KeyBinding, KeyView, LotView, Member,
    Organization, Purchase, ServiceAccountMembership, ServiceAccountRecord, UserRecord, Workspace,
};
use utoipa::ToSchema;

use crate::extract::instant;

pub(crate) fn cents(amount: NanoUsd) -> String {
    amount.to_cents_decimal()
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrganizationDto {
    pub(crate) id: String,
    /// Always `organization`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) name: String,
}

impl OrganizationDto {
    pub(crate) fn from(organization: &Organization) -> OrganizationDto {
        OrganizationDto {
            id: organization.id.clone(),
            kind: "organization",
            name: organization.name.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceDto {
    pub(crate) id: String,
    /// Always `workspace`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    /// Hex colour the Console shows the workspace in; derived from the id.
    pub(crate) display_color: String,
    pub(crate) created_at: String,
    pub(crate) archived_at: Option<String>,
}

/// The Console's workspace colours; a workspace keeps one, picked by its id.
const DISPLAY_COLORS: [&str; 8] = [
    "#6C5BB9", "#C7563D", "#3D8BC7", "#4C9F70", "#C79A3D", "#B95B8E", "#5B6CB9", "#7A7A7A",
];

impl WorkspaceDto {
    pub(crate) fn from(workspace: &Workspace) -> WorkspaceDto {
        let index = workspace.id.bytes().map(usize::from).sum::<usize>() % DISPLAY_COLORS.len();
        WorkspaceDto {
            id: workspace.id.clone(),
            kind: "workspace",
            name: workspace.name.clone(),
            display_color: DISPLAY_COLORS[index].to_owned(),
            created_at: instant(workspace.created_at),
            archived_at: workspace.archived_at.map(instant),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateWorkspace {
    /// 1 to 40 characters, unique within the organization.
    pub(crate) name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateWorkspace {
    pub(crate) name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Actor {
    pub(crate) id: String,
    /// `user`, `admin_key` or `system`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyDto {
    pub(crate) id: String,
    /// Always `api_key`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    /// `null` for the Default workspace.
    pub(crate) workspace_id: Option<String>,
    pub(crate) created_at: String,
    pub(crate) created_by: Actor,
    /// When the key stops working (RFC 3339); `null`: never.
    pub(crate) expires_at: Option<String>,
    pub(crate) partial_key_hint: String,
    /// `active`, `inactive` or `archived`.
    pub(crate) status: &'static str,
    /// When the key was last used (tollgate's addition, as the Console shows it).
    pub(crate) last_used_at: Option<String>,
    /// `personal` (bound to a user: archived when the user is removed),
    /// `service_account` (bound to one: archived when it is archived or leaves the key's
    /// workspace) or `workspace`.
    pub(crate) key_type: &'static str,
    /// The user or service account the key is bound to; `null` for a workspace key.
    pub(crate) linked_account: Option<LinkedAccount>,
    /// The model ids and aliases the key may call; empty: every model.
    pub(crate) allowed_models: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkedAccount {
    pub(crate) id: String,
    /// `user` or `service_account`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

impl ApiKeyDto {
    pub(crate) fn from(key: &KeyView, default_workspace: &str) -> ApiKeyDto {
        let record = &key.record;
        ApiKeyDto {
            id: record.id.clone(),
            kind: "api_key",
            name: record.name.clone(),
            workspace_id: record
                .workspace_id
                .clone()
                .filter(|workspace_id| workspace_id != default_workspace),
            created_at: instant(record.created_at),
            created_by: actor(&key.created_by),
            expires_at: record.expires_at.map(instant),
            partial_key_hint: record.hint.clone(),
            status: record.status.as_str(),
            last_used_at: record.last_used_at.map(instant),
            key_type: record.binding().key_type(),
            linked_account: match record.binding() {
                KeyBinding::Workspace => None,
                KeyBinding::User(user_id) => Some(LinkedAccount {
                    id: user_id.to_owned(),
                    kind: "user",
                }),
                KeyBinding::ServiceAccount(service_account_id) => Some(LinkedAccount {
                    id: service_account_id.to_owned(),
                    kind: "service_account",
                }),
            },
            allowed_models: record.allowed_models.entries().to_vec(),
        }
    }
}

fn actor(created_by: &CreatedBy) -> Actor {
    Actor {
        id: created_by.id().to_owned(),
        kind: created_by.kind(),
    }
}

/// A key just created: the key object and, this once, its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedApiKeyDto {
    #[serde(flatten)]
    pub(crate) key: ApiKeyDto,
    /// The secret, shown only in this response; only its hash is stored.
    pub(crate) api_key_secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateApiKey {
    pub(crate) name: String,
    /// The workspace; omitted or `null` is the Default workspace.
    pub(crate) workspace_id: Option<String>,
    /// RFC 3339, in the future: the key is refused from then on. Omitted or `null`: never.
    #[serde(default)]
    pub(crate) expires_at: Option<String>,
    /// A user of the organization: the key is their personal key, archived when they are
    /// removed. Omitted or `null`: a workspace key.
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    /// A service account that belongs to the key's workspace: the key is bound to it,
    /// archived when it is archived or leaves the workspace. Not with `user_id`.
    #[serde(default)]
    pub(crate) service_account_id: Option<String>,
    /// Model ids or aliases of the catalogue; omitted, `null` or empty: every model.
    #[serde(default)]
    pub(crate) allowed_models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateApiKey {
    pub(crate) name: Option<String>,
    /// `active`, `inactive` or `archived` (archiving is final).
    pub(crate) status: Option<String>,
    /// Replaces the key's allowed models; an empty list allows every model.
    #[serde(default)]
    pub(crate) allowed_models: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserDto {
    pub(crate) id: String,
    /// Always `user`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) email: String,
    pub(crate) name: String,
    /// `user`, `developer`, `billing`, `admin` or `claude_code_user`.
    pub(crate) role: &'static str,
    pub(crate) added_at: String,
}

impl UserDto {
    pub(crate) fn from(user: &UserRecord) -> UserDto {
        UserDto {
            id: user.id.clone(),
            kind: "user",
            email: user.email.clone(),
            name: user.name.clone(),
            role: user.role.as_str(),
            added_at: instant(user.added_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateUser {
    /// Any role but `admin`.
    pub(crate) role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    pub(crate) id: String,
    /// `user_deleted`, `invite_deleted`, `workspace_member_deleted`, `service_account_deleted`
    /// or `service_account_workspace_member_deleted`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InviteDto {
    pub(crate) id: String,
    /// Always `invite`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) email: String,
    pub(crate) role: &'static str,
    /// `pending`, `accepted` or `expired`.
    pub(crate) status: &'static str,
    pub(crate) invited_at: String,
    pub(crate) expires_at: String,
}

impl InviteDto {
    pub(crate) fn from(invite: &Invite) -> InviteDto {
        InviteDto {
            id: invite.record.id.clone(),
            kind: "invite",
            email: invite.record.email.clone(),
            role: invite.record.role.as_str(),
            status: invite.status.as_str(),
            invited_at: instant(invite.record.invited_at),
            expires_at: instant(invite.record.expires_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateInvite {
    pub(crate) email: String,
    /// Any role but `admin`.
    pub(crate) role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberDto {
    /// Always `workspace_member`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) user_id: String,
    pub(crate) workspace_id: String,
    pub(crate) workspace_role: &'static str,
}

impl MemberDto {
    pub(crate) fn from(member: &Member) -> MemberDto {
        MemberDto {
            kind: "workspace_member",
            user_id: member.user_id.clone(),
            workspace_id: member.workspace_id.clone(),
            workspace_role: member.role.as_str(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateMember {
    pub(crate) user_id: String,
    /// `workspace_user`, `workspace_developer` or `workspace_admin`.
    pub(crate) workspace_role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateMember {
    pub(crate) workspace_role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreditBalanceDto {
    /// Always `credit_balance`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// Always `USD`.
    pub(crate) currency: &'static str,
    /// Reservable now, in cents.
    pub(crate) available_amount: String,
    /// Reserved by requests in flight, in cents.
    pub(crate) held_amount: String,
    /// Settled charges, all time, in cents.
    pub(crate) spent_amount: String,
    /// Lost to expiry, all time, in cents.
    pub(crate) expired_amount: String,
    /// Every lot ever granted, in cents.
    pub(crate) granted_amount: String,
}

impl CreditBalanceDto {
    pub(crate) fn from(balance: &BalanceView) -> CreditBalanceDto {
        CreditBalanceDto {
            kind: "credit_balance",
            currency: "USD",
            available_amount: cents(balance.available),
            held_amount: cents(balance.held),
            spent_amount: cents(balance.spent),
            expired_amount: cents(balance.expired),
            granted_amount: cents(balance.granted),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreditLotDto {
    pub(crate) id: String,
    /// Always `credit_lot`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    /// `starter`, `purchase` or `promotional`.
    pub(crate) lot_kind: &'static str,
    pub(crate) amount: String,
    /// What is left and not reserved, in cents.
    pub(crate) available_amount: String,
    pub(crate) granted_at: String,
    pub(crate) expires_at: Option<String>,
    pub(crate) programme: Option<String>,
    pub(crate) memo: String,
}

impl CreditLotDto {
    pub(crate) fn from(lot: &LotView) -> CreditLotDto {
        CreditLotDto {
            id: lot.lot.lot_id.clone(),
            kind: "credit_lot",
            lot_kind: lot.lot.kind.as_str(),
            amount: cents(lot.amount),
            available_amount: cents(lot.lot.account.available()),
            granted_at: instant(lot.lot.granted_at),
            expires_at: lot.lot.expires_at.map(instant),
            programme: lot.programme.clone(),
            memo: lot.memo.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PurchaseDto {
    pub(crate) id: String,
    /// Always `credit_purchase`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) amount: String,
    /// `manual` or `auto_reload`.
    pub(crate) source: &'static str,
    /// `pending`, `succeeded`, `declined` or `failed`.
    pub(crate) status: &'static str,
    pub(crate) idempotency_key: String,
    pub(crate) payment_reference: Option<String>,
    pub(crate) failure_reason: Option<String>,
    pub(crate) lot_id: Option<String>,
    pub(crate) created_at: String,
    pub(crate) completed_at: Option<String>,
    /// Refunded so far (Stripe's refunds of the payment), in cents.
    pub(crate) refunded_amount: String,
    /// Lost in disputes, in cents.
    pub(crate) disputed_amount: String,
    /// The part of the refunded and disputed amounts the purchase's lot no longer held
    /// (spent, held or expired): recorded against the organization, not taken back.
    pub(crate) unrecovered_amount: String,
}

impl PurchaseDto {
    pub(crate) fn from(purchase: &Purchase) -> PurchaseDto {
        PurchaseDto {
            id: purchase.id.clone(),
            kind: "credit_purchase",
            amount: cents(purchase.amount),
            source: purchase.source.as_str(),
            status: purchase.status.as_str(),
            idempotency_key: purchase.idempotency_key.clone(),
            payment_reference: purchase.payment_reference.clone(),
            failure_reason: purchase.failure_reason.clone(),
            lot_id: purchase.lot_id.clone(),
            created_at: instant(purchase.created_at),
            completed_at: purchase.completed_at.map(instant),
            refunded_amount: cents(purchase.refunded),
            disputed_amount: cents(purchase.disputed),
            unrecovered_amount: cents(purchase.unrecovered),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreatePurchase {
    /// In cents, e.g. "2500" for $25.
    pub(crate) amount: String,
    /// A card number (the `test` provider: 4242424242424242 succeeds).
    pub(crate) payment_method: String,
    /// Retrying with the same key buys once. Default: a new key.
    pub(crate) idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateGrant {
    /// In cents.
    pub(crate) amount: String,
    /// `starter`, `purchase` or `promotional`.
    pub(crate) lot_kind: String,
    /// RFC 3339; default: the kind's (purchases expire after a year).
    pub(crate) expires_at: Option<String>,
    pub(crate) programme: Option<String>,
    pub(crate) memo: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AutoReloadDto {
    /// Always `auto_reload`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) enabled: bool,
    pub(crate) threshold_amount: String,
    pub(crate) amount: String,
    /// The card, masked to its last four digits.
    pub(crate) payment_method_hint: String,
    /// Why auto-reload was turned off, until it is turned on again.
    pub(crate) notice: Option<String>,
}

impl AutoReloadDto {
    pub(crate) fn from(settings: &AutoReload) -> AutoReloadDto {
        let digits: Vec<char> = settings.payment_method.chars().collect();
        let last_four: String = digits[digits.len().saturating_sub(4)..].iter().collect();
        AutoReloadDto {
            kind: "auto_reload",
            enabled: settings.enabled,
            threshold_amount: cents(settings.threshold),
            amount: cents(settings.amount),
            payment_method_hint: format!("…{last_four}"),
            notice: settings.notice.clone(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SetAutoReload {
    /// Buy when the available balance falls below this, in cents.
    pub(crate) threshold_amount: String,
    /// How much to buy, in cents.
    pub(crate) amount: String,
    pub(crate) payment_method: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEventDto {
    /// Stable within the organization: its place in the log.
    pub(crate) id: String,
    /// Always `audit_event`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) subject: String,
    pub(crate) details: String,
    pub(crate) reason: Option<String>,
    pub(crate) created_at: String,
}

impl AuditEventDto {
    /// `position` is the entry's 0-based place in the organization's log, which is
    /// append-only, so the id never changes.
    pub(crate) fn from(position: usize, entry: &AuditEntry) -> AuditEventDto {
        AuditEventDto {
            id: format!("auditevt_{}", base62_encode(&(position as u64 + 1).to_be_bytes())),
            kind: "audit_event",
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            subject: entry.subject.clone(),
            details: entry.details.clone(),
            reason: entry.reason.clone(),
            created_at: instant(entry.at),
        }
    }
}

/// A service account (Anthropic's `ServiceAccount`, without the actor ids, which the audit
/// log keeps).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceAccountDto {
    pub(crate) id: String,
    /// Always `service_account`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) description: String,
    /// Any organization role but `admin`.
    pub(crate) organization_role: &'static str,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    /// When it was archived with its keys; `null`: in use.
    pub(crate) archived_at: Option<String>,
}

impl ServiceAccountDto {
    pub(crate) fn from(account: &ServiceAccountRecord) -> ServiceAccountDto {
        ServiceAccountDto {
            id: account.id.clone(),
            kind: "service_account",
            name: account.name.clone(),
            description: account.description.clone(),
            organization_role: account.role.as_str(),
            created_at: instant(account.created_at),
            updated_at: instant(account.updated_at),
            archived_at: account.archived_at.map(instant),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateServiceAccount {
    /// Lowercase letters, digits and hyphens; unique in the organization.
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Any role but `admin`; omitted: `developer`.
    #[serde(default)]
    pub(crate) organization_role: Option<String>,
}

/// Only the description and the role change; the name never does.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateServiceAccount {
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) organization_role: Option<String>,
}

/// A service account's role in a workspace (Anthropic's `ServiceAccountWorkspaceMember`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceAccountMemberDto {
    /// Always `service_account_workspace_member`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) service_account_id: String,
    pub(crate) workspace_id: String,
    pub(crate) workspace_role: &'static str,
    /// Always `false`: tollgate has no implicit memberships.
    pub(crate) implicit: bool,
}

impl ServiceAccountMemberDto {
    pub(crate) fn from(membership: &ServiceAccountMembership) -> ServiceAccountMemberDto {
        ServiceAccountMemberDto {
            kind: "service_account_workspace_member",
            service_account_id: membership.service_account_id.clone(),
            workspace_id: membership.workspace_id.clone(),
            workspace_role: membership.role.as_str(),
            implicit: false,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateServiceAccountMember {
    pub(crate) service_account_id: String,
    /// `workspace_user`, `workspace_developer` or `workspace_admin`.
    pub(crate) workspace_role: String,
}

/// The same membership, addressed from the service account's side.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AddServiceAccountWorkspace {
    pub(crate) workspace_id: String,
    /// `workspace_user`, `workspace_developer` or `workspace_admin`.
    pub(crate) workspace_role: String,
}
