//! Service accounts: named non-human callers of an organization, with an organization
//! role of their own and a role in each workspace they belong to. Their keys are bound to
//! them as a personal key is to its user. This holds the rules about what an account may
//! be called and which roles it may hold; the store keeps them and the service applies
//! these rules before anything is written.

use crate::roles::{MembershipError, OrgRole, WorkspaceRole, check_membership};

/// The longest service account name, in characters.
pub const SERVICE_ACCOUNT_NAME_MAX: usize = 255;

/// The longest description of a service account, in characters.
pub const SERVICE_ACCOUNT_DESCRIPTION_MAX: usize = 2000;

/// A service account's name: a slug of lowercase ASCII letters, digits and hyphens
/// (`ci-deploy-bot`), unique within its organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountName(String);

/// Why a service account, or one of its memberships, can't be as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAccountRejection {
    #[error("a service account name has 1 to 255 lowercase letters, digits and hyphens")]
    BadName,
    #[error("a service account description has at most 2000 characters")]
    DescriptionTooLong,
    #[error("a service account cannot hold the admin role")]
    RoleNotAssignable,
    #[error("{0}")]
    Membership(MembershipError),
}

impl ServiceAccountName {
    pub fn parse(text: &str) -> Result<ServiceAccountName, ServiceAccountRejection> {
        let well_formed = !text.is_empty()
            && text.chars().count() <= SERVICE_ACCOUNT_NAME_MAX
            && text.chars().all(|character| {
                character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
            });
        if !well_formed {
            return Err(ServiceAccountRejection::BadName);
        }
        Ok(ServiceAccountName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description as kept: trimmed, and at most `SERVICE_ACCOUNT_DESCRIPTION_MAX` characters.
pub fn description(text: &str) -> Result<String, ServiceAccountRejection> {
    let text = text.trim();
    if text.chars().count() > SERVICE_ACCOUNT_DESCRIPTION_MAX {
        return Err(ServiceAccountRejection::DescriptionTooLong);
    }
    Ok(text.to_owned())
}

/// Whether a service account may hold `role` in its organization: whatever the Admin API
/// may assign to a user (never `admin`, so an admin key can't mint an admin).
pub fn check_role(role: OrgRole) -> Result<OrgRole, ServiceAccountRejection> {
    if !role.assignable() {
        return Err(ServiceAccountRejection::RoleNotAssignable);
    }
    Ok(role)
}

/// Whether a service account of organization role `org_role` may be given `role` in a
/// workspace: the rule for users (`roles::check_membership`).
pub fn check_workspace_role(
    org_role: OrgRole,
    role: WorkspaceRole,
) -> Result<WorkspaceRole, ServiceAccountRejection> {
    check_membership(org_role, role).map_err(ServiceAccountRejection::Membership)?;
    Ok(role)
}

#[cfg(test)]
mod tests;
