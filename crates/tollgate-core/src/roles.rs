//! Organization and workspace roles, and the rules about who may be given which: the
//! contract's Console roles. Pure: callers load the user and the membership and ask here.

/// A user's role in their organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrgRole {
    User,
    ClaudeCodeUser,
    Developer,
    Billing,
    Admin,
}

impl OrgRole {
    pub const ALL: [OrgRole; 5] = [
        OrgRole::User,
        OrgRole::ClaudeCodeUser,
        OrgRole::Developer,
        OrgRole::Billing,
        OrgRole::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::User => "user",
            OrgRole::ClaudeCodeUser => "claude_code_user",
            OrgRole::Developer => "developer",
            OrgRole::Billing => "billing",
            OrgRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<OrgRole> {
        OrgRole::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether the role may be given or taken through the Admin API: `admin` may not (an
    /// admin is made in the Console, so an admin key can't mint more admins).
    pub fn assignable(self) -> bool {
        self != OrgRole::Admin
    }
}

/// A user's role in one workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkspaceRole {
    User,
    Developer,
    Admin,
    Billing,
}

impl WorkspaceRole {
    pub const ALL: [WorkspaceRole; 4] = [
        WorkspaceRole::User,
        WorkspaceRole::Developer,
        WorkspaceRole::Admin,
        WorkspaceRole::Billing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceRole::User => "workspace_user",
            WorkspaceRole::Developer => "workspace_developer",
            WorkspaceRole::Admin => "workspace_admin",
            WorkspaceRole::Billing => "workspace_billing",
        }
    }

    pub fn parse(text: &str) -> Option<WorkspaceRole> {
        WorkspaceRole::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// Why a workspace role can't be given to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("workspace_billing is inherited from the organization's billing role and cannot be assigned")]
    BillingNotAssignable,
    #[error("an organization admin is a workspace_admin of every workspace; their role cannot be changed")]
    AdminIsAdminEverywhere,
    #[error(
        "an organization billing user is workspace_billing in every workspace; their role cannot be changed"
    )]
    BillingIsBillingEverywhere,
}

/// Whether `role` may be set for a user whose organization role is `org_role`.
pub fn check_membership(org_role: OrgRole, role: WorkspaceRole) -> Result<(), MembershipError> {
    match (org_role, role) {
        (OrgRole::Admin, _) => Err(MembershipError::AdminIsAdminEverywhere),
        (OrgRole::Billing, _) => Err(MembershipError::BillingIsBillingEverywhere),
        (_, WorkspaceRole::Billing) => Err(MembershipError::BillingNotAssignable),
        _ => Ok(()),
    }
}

/// The role a user holds in a workspace: org admins are admins everywhere and org billing
/// users are billing everywhere (inherited); everyone else holds what they were given, if
/// anything.
pub fn effective_workspace_role(org_role: OrgRole, assigned: Option<WorkspaceRole>) -> Option<WorkspaceRole> {
    match org_role {
        OrgRole::Admin => Some(WorkspaceRole::Admin),
        OrgRole::Billing => Some(WorkspaceRole::Billing),
        _ => assigned,
    }
}

#[cfg(test)]
mod tests;
