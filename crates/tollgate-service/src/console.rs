//! The Console's people: passwords (argon2id, default parameters), sign-in with a rate
//! limit on attempts per email and per client, sessions, the one-time setup link that lets
//! the first admin choose a password, invites accepted with a password, and what each
//! organization role may see and change in the Console.
//!
//! Guessing is bounded twice. A sign-in attempt is counted in the store before its password
//! is checked (a right password takes its count back), so concurrent guesses cannot all
//! pass one look at the count; and at most `PASSWORD_CHECKS_MAX` argon2 computations run at
//! once in this process (each holds about 19 MiB for tens of milliseconds), a sign-in
//! beyond them being refused at once rather than queued.
//!
//! A session token and a setup token exist only in the browser and in the link; the store
//! keeps their SHA-256. A signed-in person gets a `ConsoleUser`, whose organization-scoped
//! `OrgAdmin` handle is handed out only through `ConsoleUser::authority`, after the role
//! check, so no page can act on an area its role does not reach. Knows nothing of HTTP.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::keys::KeyKind;
use tollgate_core::roles::OrgRole;
use tollgate_store::{ConsoleSession, CreatedBy, NewKey, UserRecord};

use crate::admin::OrgAdmin;
use crate::error::ServiceError;
use crate::keys::ApiCaller;
use crate::organizations::DEFAULT_NAME;
use crate::{KeyStatus, Tollgate, UsageRecord, random, users};

/// How long a Console session lasts after sign-in.
pub const SESSION_LIFETIME_HOURS: i64 = 12;
/// How long a setup link works (unless a newer one replaces it or an admin appears).
pub(crate) const SETUP_LINK_LIFETIME_HOURS: i64 = 24;
/// Sign-in attempts are counted in fixed windows of this length.
pub(crate) const SIGN_IN_WINDOW_MINUTES: i64 = 15;
/// Attempts per email within a window (successful ones given back) before further tries
/// are refused.
pub(crate) const SIGN_IN_ATTEMPTS_PER_EMAIL_MAX: u64 = 10;
/// Attempts per client address within a window (successful ones given back) before
/// further tries are refused.
pub(crate) const SIGN_IN_ATTEMPTS_PER_CLIENT_MAX: u64 = 50;
/// Password hashes computed or checked at once by this process. Argon2id with the default
/// parameters holds 19 MiB while it runs, so this bounds their memory to about 150 MiB.
pub const PASSWORD_CHECKS_MAX: usize = 8;
/// Passwords have at least this many characters.
pub const PASSWORD_LENGTH_MIN: usize = 10;
/// The name of the key each workspace's Workbench requests are billed to.
pub const WORKBENCH_KEY_NAME: &str = "Workbench";
/// Who creates the Workbench keys.
const WORKBENCH_KEY_CREATOR: &str = "console-workbench";

/// The parts of the Console a role may see or change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleArea {
    Overview,
    Workspaces,
    ApiKeys,
    Billing,
    Limits,
    Usage,
    Workbench,
    Members,
    /// Alert destinations, thresholds and deliveries.
    Alerts,
}

/// Looking, or changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    View,
    Change,
}

/// What each organization role may do in the Console. Billing is for admins and billing
/// users only; keys are managed by admins and developers; workspaces and members by admins.
pub fn role_allows(role: OrgRole, area: ConsoleArea, access: Access) -> bool {
    use ConsoleArea::*;
    match (area, access) {
        (Overview | Limits | Usage, Access::View) => true,
        (Overview | Limits | Usage, Access::Change) => false,
        (Workspaces | ApiKeys, Access::View) => role != OrgRole::ClaudeCodeUser,
        (Workspaces, Access::Change) => role == OrgRole::Admin,
        (ApiKeys, Access::Change) => matches!(role, OrgRole::Admin | OrgRole::Developer),
        (Billing, _) => matches!(role, OrgRole::Admin | OrgRole::Billing),
        (Workbench, _) => role != OrgRole::ClaudeCodeUser,
        (Members, Access::View) => matches!(role, OrgRole::Admin | OrgRole::Billing | OrgRole::Developer),
        (Members, Access::Change) => role == OrgRole::Admin,
        (Alerts, _) => role == OrgRole::Admin,
    }
}

/// The role does not reach that part of the Console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("your role does not allow this")]
pub struct Denied;

/// The permits for argon2 computations (`PASSWORD_CHECKS_MAX`), shared by every use case
/// of one `Tollgate`.
pub(crate) struct PasswordChecks(Arc<Semaphore>);

impl Default for PasswordChecks {
    fn default() -> PasswordChecks {
        PasswordChecks(Arc::new(Semaphore::new(PASSWORD_CHECKS_MAX)))
    }
}

impl PasswordChecks {
    /// A permit now, or `None` when every one is taken: for sign-in, which anyone may try.
    fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }

    /// A permit when one is free: for setting a password, which only the holder of a
    /// one-time link or invite (or the operator) can reach.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        Arc::clone(&self.0)
            .acquire_owned()
            .await
            .map_err(|error| ServiceError::Unavailable(format!("the password checks stopped: {error}")))
    }
}

/// A secret shown once: a session token (for the cookie) or a setup token (for the link).
pub struct SecretToken(String);

impl SecretToken {
    pub(crate) fn generate() -> SecretToken {
        let mut bytes = [0_u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SecretToken(hex(&bytes))
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretToken(…)")
    }
}

/// A signed-in person, as every Console page sees them.
#[derive(Clone, Debug)]
pub struct ConsoleUser {
    pub user: UserRecord,
    pub session: ConsoleSession,
    admin: OrgAdmin,
}

impl ConsoleUser {
    pub fn role(&self) -> OrgRole {
        self.user.role
    }

    pub fn may(&self, area: ConsoleArea, access: Access) -> bool {
        role_allows(self.user.role, area, access)
    }

    /// The organization-scoped handle, for an area and access the role allows.
    pub fn authority(&self, area: ConsoleArea, access: Access) -> Result<&OrgAdmin, Denied> {
        if self.may(area, access) {
            Ok(&self.admin)
        } else {
            Err(Denied)
        }
    }

    /// Who the Workbench's requests in a workspace (`None`: the Default one) are billed as:
    /// that workspace's Workbench key, created on first use, so they go through the same
    /// rate limits, reservation and settlement as any API request and show in the reports.
    pub async fn workbench_caller(&self, workspace_id: Option<&str>) -> Result<ApiCaller, ServiceError> {
        let admin = self
            .authority(ConsoleArea::Workbench, Access::Change)
            .map_err(|denied| ServiceError::Invalid(denied.to_string()))?;
        let workspace_id = match workspace_id {
            Some(workspace_id) => {
                let workspace = admin.workspace(workspace_id).await?;
                if workspace.archived_at.is_some() {
                    return Err(ServiceError::Invalid("the workspace is archived".into()));
                }
                workspace.id
            }
            None => admin.default_workspace_id().await?,
        };
        let tollgate = admin.tollgate();
        let creator = CreatedBy::System(WORKBENCH_KEY_CREATOR.to_owned());
        let existing = tollgate
            .store()
            .key_views(admin.org_id(), KeyKind::Api)
            .await?
            .into_iter()
            .find(|key| {
                key.created_by == creator
                    && key.record.status == KeyStatus::Active
                    && key.record.workspace_id.as_deref() == Some(workspace_id.as_str())
            });
        let key_id = match existing {
            Some(key) => key.record.id,
            None => {
                // The secret is never shown: the Console itself is the only caller.
                let secret = random::key(KeyKind::Api);
                tollgate
                    .store()
                    .insert_key_by(
                        NewKey {
                            id: random::id(IdKind::ApiKey),
                            kind: KeyKind::Api,
                            org_id: admin.org_id().to_owned(),
                            workspace_id: Some(workspace_id.clone()),
                            name: WORKBENCH_KEY_NAME.to_owned(),
                            secret_hash: secret.hash(),
                            hint: secret.hint(),
                            created_at: tollgate.now(),
                            expires_at: None,
                            user_id: None,
                            service_account_id: None,
                            allowed_models: Default::default(),
                        },
                        &creator,
                    )
                    .await?
                    .record
                    .id
            }
        };
        Ok(ApiCaller::of_key(&key_id, admin.org_id(), &workspace_id))
    }
}

impl ConsoleUser {
    /// The usage record of a Workbench request of this organization, once it has ended.
    pub async fn workbench_result(&self, request_id: &str) -> Result<Option<UsageRecord>, ServiceError> {
        let admin = self
            .authority(ConsoleArea::Workbench, Access::View)
            .map_err(|denied| ServiceError::Invalid(denied.to_string()))?;
        Ok(admin
            .tollgate()
            .store()
            .usage_record(admin.org_id(), request_id)
            .await?)
    }
}

/// A successful sign-in: the session's token goes into the cookie, once.
#[derive(Debug)]
pub struct SignedIn {
    pub token: SecretToken,
    pub user: ConsoleUser,
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInRefusal {
    /// Wrong email or password; which of the two is not said.
    #[error("the email or password is not right")]
    BadCredentials,
    #[error("too many failed sign-ins: wait a few minutes and try again")]
    TooManyAttempts,
    /// Every password check this process allows at once is running.
    #[error("too many sign-ins are being checked right now: try again in a moment")]
    Busy,
    /// Single sign-on is the only way in.
    #[error("password sign-in is turned off: sign in with single sign-on")]
    PasswordsOff,
    /// The right password, of a deactivated user.
    #[error("your account is deactivated: ask an admin of the organization")]
    Deactivated,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<tollgate_store::StoreError> for SignInRefusal {
    fn from(error: tollgate_store::StoreError) -> SignInRefusal {
        SignInRefusal::Service(error.into())
    }
}

/// The hex SHA-256 of a token: what the store keeps.
pub(crate) fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check_password_rules(password: &str) -> Result<(), ServiceError> {
    let length = password.chars().count();
    if !(PASSWORD_LENGTH_MIN..=1024).contains(&length) {
        return Err(ServiceError::Invalid(format!(
            "a password has {PASSWORD_LENGTH_MIN} to 1024 characters"
        )));
    }
    Ok(())
}

/// Hashes a password with argon2id and a fresh salt, off the async threads (it takes tens
/// of milliseconds on purpose). The permit is held until the hash is done, even if the
/// caller has gone.
async fn hash_password(permit: OwnedSemaphorePermit, password: &str) -> Result<String, ServiceError> {
    let password = password.to_owned();
    let mut salt = [0_u8; 16];
    rand::rng().fill_bytes(&mut salt);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|error| ServiceError::Invalid(format!("cannot make a salt: {error}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| ServiceError::Invalid(format!("cannot hash the password: {error}")))
    })
    .await
    .map_err(|error| ServiceError::Unavailable(format!("the password hasher stopped: {error}")))?
}

/// Whether `password` matches one of `hashes`; the index of the first match. With no hash
/// at all a dummy one is checked, so an unknown email takes as long as a wrong password.
/// The permit is held until the check is done, even if the caller has gone.
async fn verify_password(
    permit: OwnedSemaphorePermit,
    password: &str,
    hashes: Vec<String>,
) -> Result<Option<usize>, ServiceError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let argon2 = Argon2::default();
        if hashes.is_empty() {
            let salt = SaltString::encode_b64(&[0_u8; 16]).ok();
            if let Some(salt) = salt {
                let _ = argon2.hash_password(password.as_bytes(), &salt);
            }
            return None;
        }
        hashes.iter().position(|stored| {
            PasswordHash::new(stored)
                .is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
    })
    .await
    .map_err(|error| ServiceError::Unavailable(format!("the password checker stopped: {error}")))
}

pub(crate) fn window_start(now: Timestamp) -> Timestamp {
    let window_millis = SIGN_IN_WINDOW_MINUTES * 60_000;
    let millis = now.timestamp_millis();
    chrono::DateTime::from_timestamp_millis(millis - millis.rem_euclid(window_millis)).unwrap_or(now)
}

impl Tollgate {
    /// Signs a person in with email and password, from the client address `client`.
    ///
    /// The attempt is counted (per email and per client) before the password is checked:
    /// a guess refused by the count costs no argon2 work, and guesses sent at once cannot
    /// all see a count below the limit. A right password gives its attempt back.
    pub async fn console_sign_in(
        &self,
        email_text: &str,
        password: &str,
        client: &str,
    ) -> Result<SignedIn, SignInRefusal> {
        if !self.password_sign_in() {
            return Err(SignInRefusal::PasswordsOff);
        }
        let email = email_text.trim().to_ascii_lowercase();
        // Taken first, so a refusal for being busy writes nothing.
        let permit = self
            .inner
            .password_checks
            .try_permit()
            .ok_or(SignInRefusal::Busy)?;
        let window = window_start(self.now());
        let email_bucket = format!("email:{email}");
        let client_bucket = format!("client:{client}");
        let claimed = self
            .store()
            .claim_sign_in_attempt(
                &[
                    (email_bucket.as_str(), SIGN_IN_ATTEMPTS_PER_EMAIL_MAX),
                    (client_bucket.as_str(), SIGN_IN_ATTEMPTS_PER_CLIENT_MAX),
                ],
                window,
            )
            .await?;
        if !claimed {
            return Err(SignInRefusal::TooManyAttempts);
        }
        let candidates = self.store().sign_in_candidates(&email).await?;
        let hashes = candidates.iter().map(|(_, hash)| hash.clone()).collect();
        match verify_password(permit, password, hashes).await? {
            Some(index) => {
                self.store().clear_sign_in_attempts(&email_bucket).await?;
                self.store()
                    .return_sign_in_attempt(&client_bucket, window)
                    .await?;
                let user = candidates[index].0.clone();
                if self.store().user_deactivated_at(&user.id).await?.is_some() {
                    return Err(SignInRefusal::Deactivated);
                }
                Ok(self.start_session(user).await?)
            }
            None => Err(SignInRefusal::BadCredentials),
        }
    }

    /// A new session for `user`, with a fresh token and CSRF token.
    pub(crate) async fn start_session(&self, user: UserRecord) -> Result<SignedIn, ServiceError> {
        let token = SecretToken::generate();
        let now = self.now();
        let session = ConsoleSession {
            token_hash: token_hash(token.expose_secret()),
            user_id: user.id.clone(),
            csrf_token: SecretToken::generate().0,
            created_at: now,
            expires_at: now + chrono::Duration::hours(SESSION_LIFETIME_HOURS),
        };
        self.store().insert_console_session(&session).await?;
        // Clearing out old sessions now and then keeps the table small.
        self.store().delete_expired_console_sessions(now).await?;
        let admin = self.admin_for_user(&user);
        Ok(SignedIn {
            token,
            user: ConsoleUser { user, session, admin },
        })
    }

    /// The signed-in person a session token belongs to, if it is valid.
    pub async fn console_user(&self, token: &str) -> Result<Option<ConsoleUser>, ServiceError> {
        let found = self
            .store()
            .console_session(&token_hash(token), self.now())
            .await?;
        Ok(found.map(|(session, user)| ConsoleUser {
            admin: self.admin_for_user(&user),
            user,
            session,
        }))
    }

    /// Ends the session of this token (signing out).
    pub async fn console_sign_out(&self, token: &str) -> Result<(), ServiceError> {
        self.store().delete_console_session(&token_hash(token)).await?;
        Ok(())
    }

    /// Makes `email` an admin of the organization with this password (the operator's
    /// `users create --admin`): added if new, promoted and given the password if not.
    pub async fn create_console_admin(
        &self,
        org_id: &str,
        email_text: &str,
        name: &str,
        password: &str,
    ) -> Result<UserRecord, ServiceError> {
        check_password_rules(password)?;
        let email = users::email(email_text)?;
        let organization = self
            .store()
            .organization(org_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("organization '{org_id}' was not found")))?;
        let operator = self.operator_of(&organization, "cli");
        let existing = operator.users(Some(&email), &[]).await?.into_iter().next();
        let user = match existing {
            Some(user) => {
                self.store().set_user_role(&user.id, OrgRole::Admin).await?;
                operator.user(&user.id).await?
            }
            None => operator.add_user(&email, name, OrgRole::Admin).await?,
        };
        self.set_console_password(&user.id, password).await?;
        Ok(user)
    }

    /// Sets a user's password.
    pub async fn set_console_password(&self, user_id: &str, password: &str) -> Result<(), ServiceError> {
        check_password_rules(password)?;
        let permit = self.inner.password_checks.permit().await?;
        let hash = hash_password(permit, password).await?;
        if !self.store().set_password_hash(user_id, &hash, self.now()).await? {
            return Err(ServiceError::NotFound(format!("user '{user_id}' was not found")));
        }
        Ok(())
    }

    /// While no one can sign in and no organization has an admin: a one-time token for the
    /// setup link of the Default organization (or the oldest one), which replaces any link
    /// minted before (by this start or another replica's). `None` once someone can sign in
    /// or an admin exists: then no link is minted at all.
    pub async fn console_setup_token(&self) -> Result<Option<SecretToken>, ServiceError> {
        if !self.password_sign_in() {
            return Ok(None);
        }
        let organizations = self.store().list_organizations().await?;
        let Some(organization) = organizations
            .iter()
            .find(|organization| organization.name == DEFAULT_NAME)
            .or(organizations.first())
        else {
            return Ok(None);
        };
        let token = SecretToken::generate();
        let now = self.now();
        let minted = self
            .store()
            .mint_setup_link(
                &token_hash(token.expose_secret()),
                &organization.id,
                now,
                now + chrono::Duration::hours(SETUP_LINK_LIFETIME_HOURS),
            )
            .await?;
        Ok(minted.then_some(token))
    }

    /// Whether a setup link's token can still be used.
    pub async fn console_setup_token_valid(&self, token: &str) -> Result<bool, ServiceError> {
        Ok(self
            .store()
            .setup_link_valid(&token_hash(token), self.now())
            .await?)
    }

    /// Uses a setup link: the person becomes an admin with this password, and is signed in.
    /// The link is used up first, so two people racing with it cannot both get in.
    pub async fn redeem_console_setup(
        &self,
        token: &str,
        email_text: &str,
        name: &str,
        password: &str,
    ) -> Result<SignedIn, ServiceError> {
        self.check_password_sign_in()?;
        check_password_rules(password)?;
        users::email(email_text)?;
        let org_id = self
            .store()
            .redeem_setup_link(&token_hash(token), self.now())
            .await?
            .ok_or_else(|| {
                ServiceError::Invalid(
                    "this setup link was used already, was replaced by a newer one, or has expired".into(),
                )
            })?;
        let user = self
            .create_console_admin(&org_id, email_text, name, password)
            .await?;
        self.start_session(user).await
    }

    /// An invitee joins with a name and a password, and is signed in. The invite's id is
    /// the secret of the invitation link.
    pub async fn accept_console_invite(
        &self,
        invite_id: &str,
        name: &str,
        password: &str,
    ) -> Result<SignedIn, ServiceError> {
        self.check_password_sign_in()?;
        check_password_rules(password)?;
        let invite = self
            .store()
            .invite(invite_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("the invite was not found".into()))?;
        let organization = self
            .store()
            .organization(&invite.org_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("the invite was not found".into()))?;
        let operator = self.operator_of(&organization, "invite");
        let user = operator.accept_invite(invite_id, name).await?;
        self.set_console_password(&user.id, password).await?;
        self.start_session(user).await
    }
}

#[cfg(test)]
mod tests;
