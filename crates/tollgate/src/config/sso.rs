//! `[console.sso]`: single sign-on to the Console with an OpenID Connect provider, read and
//! checked into the service's `SsoSettings` at start (a bad value stops the start, saying
//! which key).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_core::sso::{GroupGrant, GroupMap};
use tollgate_service::SsoSettings;

/// `[console.sso]`; off while `issuer` is empty.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: String,
    pub group_claim: String,
    pub allowed_email_domains: Vec<String>,
    pub require_verified_email: bool,
    pub organization: String,
    pub redirect_url: String,
    pub password_sign_in: bool,
    /// Minutes between asking the provider again for each person's groups; 0: never.
    pub recheck_minutes: i64,
    #[serde(default)]
    pub groups: BTreeMap<String, SsoGroupConfig>,
}

/// `[console.sso.groups."<group>"]`: what membership of one identity-provider group gives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoGroupConfig {
    /// The organization role.
    pub role: String,
    /// Workspace (id or name) → workspace role.
    #[serde(default)]
    pub workspaces: BTreeMap<String, String>,
}

/// The secret stays out of debug output.
impl std::fmt::Debug for SsoConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SsoConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

fn url_with_scheme(key: &str, text: &str) -> anyhow::Result<()> {
    let parsed: axum::http::Uri = text.parse().unwrap_or_default();
    if !matches!(parsed.scheme_str(), Some("https" | "http")) || parsed.host().is_none() {
        bail!("console.sso.{key} '{text}' must be an http(s) URL with a host");
    }
    Ok(())
}

impl SsoConfig {
    /// The service's settings, or `None` when single sign-on is off.
    pub fn settings(&self) -> anyhow::Result<Option<SsoSettings>> {
        if self.issuer.is_empty() {
            if !self.password_sign_in {
                bail!("console.sso.password_sign_in = false needs single sign-on: set console.sso.issuer");
            }
            return Ok(None);
        }
        url_with_scheme("issuer", &self.issuer)?;
        if self.client_id.is_empty() {
            bail!("console.sso.client_id is required with console.sso.issuer");
        }
        let client_secret = match (&self.client_secret_file, self.client_secret.is_empty()) {
            (Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| format!("console.sso.client_secret_file: cannot read {}", path.display()))?
                .trim()
                .to_owned(),
            (None, false) => self.client_secret.clone(),
            (None, true) => bail!("console.sso.client_secret (or client_secret_file) is required"),
        };
        if !self.scopes.split_whitespace().any(|scope| scope == "openid") {
            bail!("console.sso.scopes must include 'openid', not '{}'", self.scopes);
        }
        if !self.redirect_url.is_empty() {
            url_with_scheme("redirect_url", &self.redirect_url)?;
        }
        if !(0..=10_080).contains(&self.recheck_minutes) {
            bail!(
                "console.sso.recheck_minutes {} must be 0 (never) to 10080 (a week)",
                self.recheck_minutes
            );
        }
        if self.groups.is_empty() {
            bail!(
                "console.sso.groups must name at least one group: only members of a listed group may sign in"
            );
        }
        let mut grants = BTreeMap::new();
        for (group, grant) in &self.groups {
            let org_role = OrgRole::parse(&grant.role).with_context(|| {
                format!(
                    "console.sso.groups.\"{group}\".role '{}' is not a role ({})",
                    grant.role,
                    OrgRole::ALL.map(OrgRole::as_str).join(", ")
                )
            })?;
            let mut workspace_roles = BTreeMap::new();
            for (workspace, role) in &grant.workspaces {
                let role = WorkspaceRole::parse(role).with_context(|| {
                    format!(
                        "console.sso.groups.\"{group}\".workspaces.\"{workspace}\" '{role}' is not a workspace role ({})",
                        WorkspaceRole::ALL.map(WorkspaceRole::as_str).join(", ")
                    )
                })?;
                workspace_roles.insert(workspace.clone(), role);
            }
            grants.insert(
                group.clone(),
                GroupGrant {
                    org_role,
                    workspace_roles,
                },
            );
        }
        Ok(Some(SsoSettings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            scopes: self.scopes.clone(),
            group_claim: self.group_claim.clone(),
            allowed_email_domains: self
                .allowed_email_domains
                .iter()
                .map(|domain| domain.trim().trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            require_verified_email: self.require_verified_email,
            groups: GroupMap { grants },
            organization: self.organization.clone(),
            redirect_url: (!self.redirect_url.is_empty()).then(|| self.redirect_url.clone()),
            password_sign_in: self.password_sign_in,
            recheck_minutes: self.recheck_minutes,
        }))
    }
}
