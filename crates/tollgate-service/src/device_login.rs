//! Claude Code's `/login` against the gateway: the OAuth device authorization grant (RFC
//! 8628) as Claude Code's gateway protocol uses it. The client asks for a grant (no client
//! id, no scope) and polls for it; the person opens the Console's device page, signs in
//! (single sign-on, or a password where allowed), and approves the grant's user code for one
//! of their workspaces. The first poll after that is issued a personal key of that person in
//! that workspace (the access token, good for `ACCESS_TOKEN_MINUTES`) and a refresh token
//! (used once; each refresh gives the same key a new secret and expiry, and hands out the next
//! refresh token), so one sign-in is one key however long it lasts.
//!
//! So the credential is an ordinary personal key: metered, limited and reported like any
//! other, and stopped with its person. Removing or deactivating the person archives the key
//! (refused within the key cache's bound) and refusing every refresh (`invalid_grant`); a
//! refresh is refused too once the person's role no longer reaches the key's workspace
//! (the rule that offers workspaces at approval).
//! The device code and refresh tokens are kept only as SHA-256.

use rand::Rng;
use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::roles::effective_workspace_role;
use tollgate_store::{DevicePoll, UserRecord, Workspace};

use crate::admin::NewApiKey;
use crate::console::{ConsoleUser, SecretToken, token_hash, window_start};
use crate::error::ServiceError;
use crate::organizations::DEFAULT_NAME;
use crate::{Tollgate, random};

/// How long a grant waits for its approval.
pub(crate) const DEVICE_GRANT_SECONDS: i64 = 600;
/// How often the client may poll.
pub(crate) const DEVICE_POLL_INTERVAL_SECONDS: i64 = 5;
/// A poll this much sooner than the interval still counts as on time: a client's sleep
/// and the network's delays are not exact.
const POLL_SLACK_MILLIS: i64 = 1_000;
/// How long an access token works before a refresh.
pub const ACCESS_TOKEN_MINUTES: i64 = 60;
/// How long a refresh token can be used.
pub(crate) const REFRESH_TOKEN_DAYS: i64 = 30;
/// The name of the keys sign-ins issue.
pub const DEVICE_KEY_NAME: &str = "Claude Code sign-in";
/// Grants one client address may start in a sign-in window (`SIGN_IN_WINDOW_MINUTES`).
pub(crate) const DEVICE_GRANTS_PER_CLIENT_MAX: u64 = 30;
/// User codes are drawn from consonants only, so they spell no words and read unambiguously.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A grant just made: what the client shows and polls with.
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: SecretToken,
    /// `XXXX-XXXX`.
    pub user_code: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// Tokens issued to a client.
#[derive(Debug)]
pub struct DeviceTokens {
    pub access_token: String,
    pub refresh_token: SecretToken,
    pub expires_in: i64,
}

/// The OAuth error a token request gets (RFC 8628 3.5, RFC 6749 5.2).
#[derive(Debug, thiserror::Error)]
pub enum DeviceTokenError {
    #[error("authorization_pending")]
    AuthorizationPending,
    #[error("slow_down")]
    SlowDown,
    #[error("expired_token")]
    ExpiredToken,
    #[error("invalid_grant")]
    InvalidGrant,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl DeviceTokenError {
    /// The `error` code of the OAuth response.
    pub fn code(&self) -> &'static str {
        match self {
            DeviceTokenError::AuthorizationPending => "authorization_pending",
            DeviceTokenError::SlowDown => "slow_down",
            DeviceTokenError::ExpiredToken => "expired_token",
            DeviceTokenError::InvalidGrant => "invalid_grant",
            DeviceTokenError::Service(_) => "temporarily_unavailable",
        }
    }
}

impl From<tollgate_store::StoreError> for DeviceTokenError {
    fn from(error: tollgate_store::StoreError) -> DeviceTokenError {
        DeviceTokenError::Service(error.into())
    }
}

fn user_code() -> String {
    let mut rng = rand::rng();
    let mut pick = || char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())]);
    let first: String = (0..4).map(|_| pick()).collect();
    let second: String = (0..4).map(|_| pick()).collect();
    format!("{first}-{second}")
}

/// A user code as a person may type it: any case, with or without the dash or spaces.
pub fn normalize_user_code(text: &str) -> String {
    let letters: String = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|letter| letter.to_ascii_uppercase())
        .collect();
    match letters.len() {
        8 => format!("{}-{}", &letters[..4], &letters[4..]),
        _ => letters,
    }
}

impl Tollgate {
    /// A new grant for a client to poll, from the client address `client`; `None` when that
    /// address started `DEVICE_GRANTS_PER_CLIENT_MAX` in the current window already.
    pub async fn start_device_login(
        &self,
        client: &str,
    ) -> Result<Option<DeviceAuthorization>, ServiceError> {
        let now = self.now();
        let bucket = format!("device:{client}");
        if !self
            .store()
            .claim_sign_in_attempt(
                &[(bucket.as_str(), DEVICE_GRANTS_PER_CLIENT_MAX)],
                window_start(now),
            )
            .await?
        {
            return Ok(None);
        }
        let expires_at = now + chrono::Duration::seconds(DEVICE_GRANT_SECONDS);
        // A user code is unique among live grants; a clash draws again.
        for _ in 0..8 {
            let device_code = SecretToken::generate();
            let code = user_code();
            if self
                .store()
                .insert_device_grant(&token_hash(device_code.expose_secret()), &code, now, expires_at)
                .await?
            {
                return Ok(Some(DeviceAuthorization {
                    device_code,
                    user_code: code,
                    expires_in: DEVICE_GRANT_SECONDS,
                    interval: DEVICE_POLL_INTERVAL_SECONDS,
                }));
            }
        }
        Err(ServiceError::Unavailable("no free user code: try again".into()))
    }

    /// Whether a user code names a grant still waiting for its approval.
    pub async fn device_login_pending(&self, user_code: &str) -> Result<bool, ServiceError> {
        Ok(self
            .store()
            .device_grant_pending(&normalize_user_code(user_code), self.now())
            .await?)
    }

    /// The workspaces a person may connect a client to: the Default workspace, and every
    /// other active one their role reaches.
    pub async fn device_login_workspaces(
        &self,
        signed_in: &ConsoleUser,
    ) -> Result<Vec<Workspace>, ServiceError> {
        let user = &signed_in.user;
        let mut workspaces = Vec::new();
        for workspace in self.workspaces(&user.org_id).await? {
            if self.device_login_reaches(user, &workspace).await? {
                workspaces.push(workspace);
            }
        }
        Ok(workspaces)
    }

    /// Whether a person may have a client connected to a workspace: an active one that is
    /// the Default workspace or that their role reaches. Approving a grant and every
    /// refresh ask the same.
    async fn device_login_reaches(
        &self,
        user: &UserRecord,
        workspace: &Workspace,
    ) -> Result<bool, ServiceError> {
        if workspace.archived_at.is_some() {
            return Ok(false);
        }
        if workspace.is_default || workspace.name == DEFAULT_NAME {
            return Ok(true);
        }
        let assigned = self
            .store()
            .member(&workspace.id, &user.id)
            .await?
            .map(|member| member.role);
        Ok(effective_workspace_role(user.role, assigned).is_some())
    }

    /// A signed-in person approves a grant for one of their workspaces.
    pub async fn approve_device_login(
        &self,
        signed_in: &ConsoleUser,
        user_code: &str,
        workspace_id: &str,
    ) -> Result<(), ServiceError> {
        let workspaces = self.device_login_workspaces(signed_in).await?;
        if !workspaces.iter().any(|workspace| workspace.id == workspace_id) {
            return Err(ServiceError::Invalid(
                "you cannot connect a client to that workspace".into(),
            ));
        }
        let approved = self
            .store()
            .approve_device_grant(
                &normalize_user_code(user_code),
                &signed_in.user.id,
                workspace_id,
                self.now(),
            )
            .await?;
        if !approved {
            return Err(ServiceError::NotFound(
                "that code is unknown, used already or expired: start the sign-in again in your terminal"
                    .into(),
            ));
        }
        Ok(())
    }

    /// One poll of a client: tokens once the grant is approved.
    pub async fn poll_device_login(&self, device_code: &str) -> Result<DeviceTokens, DeviceTokenError> {
        let poll = self
            .store()
            .poll_device_grant(
                &token_hash(device_code),
                self.now(),
                DEVICE_POLL_INTERVAL_SECONDS * 1000 - POLL_SLACK_MILLIS,
            )
            .await?;
        match poll {
            DevicePoll::Expired => Err(DeviceTokenError::ExpiredToken),
            DevicePoll::Pending { too_soon: true } => Err(DeviceTokenError::SlowDown),
            DevicePoll::Pending { too_soon: false } => Err(DeviceTokenError::AuthorizationPending),
            DevicePoll::Issued {
                user_id,
                workspace_id,
            } => {
                let user = self
                    .store()
                    .user(&user_id)
                    .await?
                    .ok_or(DeviceTokenError::ExpiredToken)?;
                let organization = self
                    .store()
                    .organization(&user.org_id)
                    .await?
                    .ok_or(DeviceTokenError::ExpiredToken)?;
                // The Default workspace has no public id: a key there names none.
                let workspace = self
                    .store()
                    .workspace(&workspace_id)
                    .await?
                    .ok_or(DeviceTokenError::ExpiredToken)?;
                let created = self
                    .operator_of(&organization, "claude-code-sign-in")
                    .create_api_key(NewApiKey {
                        name: DEVICE_KEY_NAME.to_owned(),
                        workspace_id: (!workspace.is_default).then_some(workspace_id),
                        expires_at: Some(self.access_token_expiry()),
                        user_id: Some(user.id.clone()),
                        service_account_id: None,
                        allowed_models: AllowedModels::all(),
                    })
                    .await?;
                let access_token = created.secret.expose_secret().to_owned();
                self.issue_refresh(&created.key.record.id, &user.id, access_token)
                    .await
            }
        }
    }

    /// A refresh, while the person is still in the organization, active, and has a role that
    /// reaches the key's workspace: the sign-in's key gets a new secret (the next access
    /// token; the last one stops) good for another `ACCESS_TOKEN_MINUTES`, and the next
    /// refresh token.
    pub async fn refresh_device_login(&self, refresh_token: &str) -> Result<DeviceTokens, DeviceTokenError> {
        let (key_id, user_id) = self
            .store()
            .take_device_refresh_token(&token_hash(refresh_token), self.now())
            .await?
            .ok_or(DeviceTokenError::InvalidGrant)?;
        let Some(user) = self.store().user(&user_id).await? else {
            return Err(DeviceTokenError::InvalidGrant);
        };
        if self.store().user_deactivated_at(&user_id).await?.is_some() {
            return Err(DeviceTokenError::InvalidGrant);
        }
        // The person's role must still reach the key's workspace (a key naming none is in
        // the Default workspace): losing it at the identity provider ends the client's
        // access at its next refresh, as losing the workspace in the Console does.
        let key = self
            .store()
            .key(&key_id)
            .await?
            .ok_or(DeviceTokenError::InvalidGrant)?;
        let workspace = match &key.workspace_id {
            Some(workspace_id) => self.store().workspace(workspace_id).await?,
            None => Some(self.store().default_workspace(&user.org_id).await?),
        };
        match workspace {
            Some(workspace) if self.device_login_reaches(&user, &workspace).await? => {}
            _ => return Err(DeviceTokenError::InvalidGrant),
        }
        let secret = random::key(KeyKind::Api);
        let rotated = self
            .store()
            .rotate_key_secret(
                &key_id,
                &secret.hash(),
                &secret.hint(),
                self.access_token_expiry(),
            )
            .await?;
        if !rotated {
            return Err(DeviceTokenError::InvalidGrant);
        }
        self.issue_refresh(&key_id, &user_id, secret.expose_secret().to_owned())
            .await
    }

    fn access_token_expiry(&self) -> tollgate_core::Timestamp {
        self.now() + chrono::Duration::minutes(ACCESS_TOKEN_MINUTES)
    }

    async fn issue_refresh(
        &self,
        key_id: &str,
        user_id: &str,
        access_token: String,
    ) -> Result<DeviceTokens, DeviceTokenError> {
        let refresh_token = SecretToken::generate();
        let now = self.now();
        self.store()
            .insert_device_refresh_token(
                &token_hash(refresh_token.expose_secret()),
                key_id,
                user_id,
                now,
                now + chrono::Duration::days(REFRESH_TOKEN_DAYS),
            )
            .await?;
        Ok(DeviceTokens {
            access_token,
            refresh_token,
            expires_in: ACCESS_TOKEN_MINUTES * 60,
        })
    }
}
