//! Single sign-on rules: whether an ID token's claims let a person into the Console
//! (issuer, audience, expiry, nonce, email domain, verified email), and which organization
//! role and workspace roles their groups give them. Pure: the shell verifies the token's
//! signature, reads the clock and hands the claims and `now` in; nothing here fetches keys
//! or talks to the identity provider.

use std::collections::BTreeMap;

use crate::Timestamp;
use crate::roles::{OrgRole, WorkspaceRole, check_membership};

/// The claims of a signature-checked ID token that the rules read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// `iss`.
    pub issuer: String,
    /// `aud`, one or many.
    pub audiences: Vec<String>,
    /// `azp`, the party the token was issued to.
    pub authorized_party: Option<String>,
    /// `sub`.
    pub subject: String,
    /// `exp`.
    pub expires_at: Timestamp,
    /// `nonce`.
    pub nonce: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    /// The configured group claim's values (absent: none).
    pub groups: Vec<String>,
}

/// What a token must say to be accepted, from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimsPolicy {
    /// The issuer exactly as the discovery document names it.
    pub issuer: String,
    /// This client's id: the audience the token must be for.
    pub client_id: String,
    /// Lowercase domains an email must be in (exactly, not their subdomains); empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Refuse a token that does not say `email_verified: true` (one that says `false` is
    /// always refused).
    pub require_verified_email: bool,
}

/// Clock skew tolerated on `exp`, in seconds.
pub const EXPIRY_LEEWAY_SECONDS: i64 = 60;

/// The person a token names, once its claims passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignOnIdentity {
    pub subject: String,
    /// Trimmed and lowercase.
    pub email: String,
    /// The token's name, or the email's local part.
    pub name: String,
}

/// Why a single sign-on was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SsoRefusal {
    #[error("the sign-in attempt is unknown, used already or expired: start again")]
    BadState,
    #[error("the identity provider refused to complete the sign-in")]
    ProviderRefused,
    #[error("the identity token's signature is not valid")]
    BadSignature,
    #[error("the identity token was issued by another identity provider")]
    WrongIssuer,
    #[error("the identity token was issued for another application")]
    WrongAudience,
    #[error("the identity token has expired")]
    Expired,
    #[error("the identity token does not belong to this sign-in attempt")]
    NonceMismatch,
    #[error("the identity provider did not give an email address")]
    NoEmail,
    #[error("the email address is not verified by the identity provider")]
    EmailNotVerified,
    #[error("accounts of this email domain may not sign in here")]
    DomainNotAllowed,
    #[error("none of your groups gives access to this Console")]
    NoAllowedGroup,
    #[error("your account is deactivated: ask an admin of the organization")]
    Deactivated,
}

/// Checks the claims of a token whose signature was verified, for the sign-in attempt that
/// sent `expected_nonce`, at `now`.
pub fn check_claims(
    claims: &IdTokenClaims,
    policy: &ClaimsPolicy,
    expected_nonce: &str,
    now: Timestamp,
) -> Result<SignOnIdentity, SsoRefusal> {
    check_claims_of(claims, policy, Some(expected_nonce), now)
}

/// Checks the claims of a token whose signature was verified, from a refresh of the
/// sign-in of the person `subject` at the provider, at `now`: the sign-in's rules but the
/// nonce (a refreshed ID token need not repeat it, OpenID Connect Core 12.2), and the
/// token must name the same person.
pub fn check_refreshed_claims(
    claims: &IdTokenClaims,
    policy: &ClaimsPolicy,
    subject: &str,
    now: Timestamp,
) -> Result<SignOnIdentity, SsoRefusal> {
    let identity = check_claims_of(claims, policy, None, now)?;
    if identity.subject != subject {
        return Err(SsoRefusal::ProviderRefused);
    }
    Ok(identity)
}

fn check_claims_of(
    claims: &IdTokenClaims,
    policy: &ClaimsPolicy,
    expected_nonce: Option<&str>,
    now: Timestamp,
) -> Result<SignOnIdentity, SsoRefusal> {
    if claims.issuer != policy.issuer {
        return Err(SsoRefusal::WrongIssuer);
    }
    if !claims.audiences.contains(&policy.client_id) {
        return Err(SsoRefusal::WrongAudience);
    }
    // With other audiences beside this one, the token must have been issued to this one
    // (OpenID Connect Core 3.1.3.7).
    let authorized_party_ok = match &claims.authorized_party {
        Some(party) => *party == policy.client_id,
        None => claims.audiences.len() == 1,
    };
    if !authorized_party_ok {
        return Err(SsoRefusal::WrongAudience);
    }
    if claims.expires_at + chrono::Duration::seconds(EXPIRY_LEEWAY_SECONDS) <= now {
        return Err(SsoRefusal::Expired);
    }
    if let Some(expected_nonce) = expected_nonce
        && claims.nonce.as_deref() != Some(expected_nonce)
    {
        return Err(SsoRefusal::NonceMismatch);
    }
    let email = claims
        .email
        .as_deref()
        .map(|email| email.trim().to_ascii_lowercase())
        .filter(|email| !email.is_empty())
        .ok_or(SsoRefusal::NoEmail)?;
    match claims.email_verified {
        Some(true) => {}
        Some(false) => return Err(SsoRefusal::EmailNotVerified),
        None if policy.require_verified_email => return Err(SsoRefusal::EmailNotVerified),
        None => {}
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(SsoRefusal::NoEmail);
    };
    if local.is_empty() || domain.is_empty() {
        return Err(SsoRefusal::NoEmail);
    }
    if !policy.allowed_email_domains.is_empty()
        && !policy
            .allowed_email_domains
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(domain))
    {
        return Err(SsoRefusal::DomainNotAllowed);
    }
    let name = claims
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .unwrap_or(local)
        .chars()
        .take(200)
        .collect();
    Ok(SignOnIdentity {
        subject: claims.subject.clone(),
        email,
        name,
    })
}

/// What one identity-provider group gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupGrant {
    pub org_role: OrgRole,
    /// Workspace (as configured: an id or a name) → role in it.
    pub workspace_roles: BTreeMap<String, WorkspaceRole>,
}

/// The configured groups: only members of at least one may sign in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMap {
    pub grants: BTreeMap<String, GroupGrant>,
}

impl GroupMap {
    /// Every workspace some group names: the memberships single sign-on manages (others
    /// are left as the Console set them).
    pub fn workspaces(&self) -> Vec<String> {
        let mut workspaces: Vec<String> = self
            .grants
            .values()
            .flat_map(|grant| grant.workspace_roles.keys().cloned())
            .collect();
        workspaces.sort();
        workspaces.dedup();
        workspaces
    }
}

/// The roles a person's groups give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    pub org_role: OrgRole,
    /// Workspace (as configured) → role, only where one can be given explicitly: an
    /// organization admin or billing user holds theirs in every workspace already.
    pub workspace_roles: BTreeMap<String, WorkspaceRole>,
}

/// Organization roles from most to least reaching: of several groups, the first wins.
const ORG_ROLE_PRECEDENCE: [OrgRole; 5] = [
    OrgRole::Admin,
    OrgRole::Developer,
    OrgRole::Billing,
    OrgRole::ClaudeCodeUser,
    OrgRole::User,
];

/// Workspace roles from most to least reaching.
const WORKSPACE_ROLE_PRECEDENCE: [WorkspaceRole; 4] = [
    WorkspaceRole::Admin,
    WorkspaceRole::Developer,
    WorkspaceRole::Billing,
    WorkspaceRole::User,
];

fn rank<T: PartialEq>(order: &[T], item: &T) -> usize {
    order
        .iter()
        .position(|candidate| candidate == item)
        .unwrap_or(order.len())
}

/// The roles `groups` give under `map`: the most reaching organization role of any mapped
/// group, and in each workspace the most reaching role any of them gives there. Groups the
/// map does not name are ignored; with none it names, the person may not sign in.
pub fn assign_roles(groups: &[String], map: &GroupMap) -> Result<RoleAssignment, SsoRefusal> {
    let grants: Vec<&GroupGrant> = groups.iter().filter_map(|group| map.grants.get(group)).collect();
    let org_role = grants
        .iter()
        .map(|grant| grant.org_role)
        .min_by_key(|role| rank(&ORG_ROLE_PRECEDENCE, role))
        .ok_or(SsoRefusal::NoAllowedGroup)?;
    let mut workspace_roles: BTreeMap<String, WorkspaceRole> = BTreeMap::new();
    for grant in &grants {
        for (workspace, role) in &grant.workspace_roles {
            if check_membership(org_role, *role).is_err() {
                continue;
            }
            let entry = workspace_roles.entry(workspace.clone()).or_insert(*role);
            if rank(&WORKSPACE_ROLE_PRECEDENCE, role) < rank(&WORKSPACE_ROLE_PRECEDENCE, entry) {
                *entry = *role;
            }
        }
    }
    Ok(RoleAssignment {
        org_role,
        workspace_roles,
    })
}

#[cfg(test)]
mod tests;
