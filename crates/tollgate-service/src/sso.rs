//! Single sign-on to the Console with OpenID Connect: the authorization code flow with PKCE
//! (S256) against the configured issuer, found through its discovery document.
//!
//! `begin_sso_sign_in` keeps a one-use attempt in the store (the SHA-256 of its `state`, a
//! nonce and the PKCE verifier, for ten minutes) and gives the provider's address to send
//! the browser to. `finish_sso_sign_in` takes the attempt back by the `state` the browser
//! returned (once: a second use finds nothing), exchanges the code at the token endpoint
//! with the client's secret and the verifier, checks the ID token's signature against the
//! provider's JWKS (fetched again when a token names a key it does not list, so a rotated
//! key is picked up), and hands the claims to `tollgate_core::sso` for the rules: issuer,
//! audience, expiry, nonce, verified email, allowed domains, and the roles the groups give.
//!
//! A person who passes is provisioned on the spot in the configured organization, or found
//! there by email, and their organization role and their roles in the workspaces the group
//! map names are set from their groups at every sign-in. A known person whose groups no
//! longer give access is refused, every Console session of theirs ends and their personal
//! keys are archived; a deactivated person is refused. With password sign-in turned off,
//! the setup link, invites and passwords sign nobody in.
//!
//! Groups are also asked again between sign-ins: a sign-in that got a refresh token (the
//! scope `offline_access` is asked for when the provider offers it) keeps it, and
//! `recheck_sso_groups` (run by maintenance) refreshes it every `recheck_minutes`, checks
//! the new ID token with the sign-in's rules (but the nonce) and applies its groups as a
//! sign-in does. A provider that refuses the refresh with `invalid_grant` ends the person's
//! access as lost groups do; one that cannot be reached changes nothing until it answers.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_core::Timestamp;
use tollgate_core::roles::WorkspaceRole;
use tollgate_core::sso::{
    ClaimsPolicy, GroupMap, IdTokenClaims, RoleAssignment, SsoRefusal, assign_roles, check_claims,
    check_refreshed_claims,
};
use tollgate_store::{MemberRecord, SsoAttempt, SsoRefreshToken, UserRecord};

use crate::Tollgate;
use crate::console::{SecretToken, SignedIn, token_hash};
use crate::error::ServiceError;

/// How long a sign-in attempt may take at the identity provider.
pub const SSO_ATTEMPT_MINUTES: i64 = 10;
/// How long one call to the identity provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Single sign-on, from configuration.
#[derive(Clone)]
pub struct SsoSettings {
    /// The issuer; its discovery document is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// The scopes asked for, `openid` among them.
    pub scopes: String,
    /// The ID-token claim that lists the person's groups.
    pub group_claim: String,
    /// Lowercase domains an email must be in; empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Refuse tokens that do not say the email is verified.
    pub require_verified_email: bool,
    /// Which groups may sign in, and the roles each gives.
    pub groups: GroupMap,
    /// The organization people sign in to, by name.
    pub organization: String,
    /// Where the provider sends the browser back; `None`: this server's own address, as the
    /// browser reached it, at `/console/sso/callback`.
    pub redirect_url: Option<String>,
    /// Whether email and password still sign people in.
    pub password_sign_in: bool,
    /// How often each person's groups are asked of the provider again, with the refresh
    /// token their sign-in got; 0: never.
    pub recheck_minutes: i64,
}

/// The secret stays out of debug output.
impl std::fmt::Debug for SsoSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SsoSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("organization", &self.organization)
            .field("password_sign_in", &self.password_sign_in)
            .field("recheck_minutes", &self.recheck_minutes)
            .finish_non_exhaustive()
    }
}

/// The provider's discovery document: the parts the flow reads.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
}

/// The provider, its discovery document and signing keys cached.
pub(crate) struct SsoClient {
    settings: SsoSettings,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<Discovery>>,
    keys: tokio::sync::Mutex<Option<jsonwebtoken::jwk::JwkSet>>,
}

/// Single sign-on's place in the service: set once at start, if configured.
#[derive(Default)]
pub(crate) struct SsoState(OnceLock<SsoClient>);

/// What the token endpoint gave.
struct ProviderTokens {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

impl ProviderTokens {
    async fn read(response: reqwest::Response) -> Result<ProviderTokens, ServiceError> {
        let tokens: Value = response
            .json()
            .await
            .map_err(|error| unavailable("token response", error))?;
        let text = |name: &str| tokens.get(name).and_then(Value::as_str).map(str::to_owned);
        Ok(ProviderTokens {
            id_token: text("id_token"),
            refresh_token: text("refresh_token"),
        })
    }
}

/// How a refresh at the provider went.
enum RefreshOutcome {
    Tokens(ProviderTokens),
    /// `invalid_grant`: the provider will not refresh this person's sign-in any more.
    GrantEnded,
    /// The provider could not be asked (the network, a 5xx, anything unexpected).
    Unavailable(String),
}

/// What one re-check of single sign-on's groups did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsoRecheckReport {
    /// People whose groups the provider was asked for.
    pub checked: u64,
    /// People whose roles changed with their groups.
    pub roles_changed: u64,
    /// People whose groups no longer give access, or whose sign-in the provider ended:
    /// signed out, personal keys archived.
    pub access_ended: u64,
    /// People left as they were: the provider could not be asked, or gave no answer that
    /// could be used.
    pub unchanged: u64,
}

/// Where to send the browser, and the `state` to bind to it (a cookie) until it returns.
#[derive(Debug)]
pub struct SsoStart {
    pub location: String,
    pub state: SecretToken,
}

/// Why a single sign-on did not sign anyone in.
#[derive(Debug, thiserror::Error)]
pub enum SsoSignInError {
    #[error(transparent)]
    Refused(#[from] SsoRefusal),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<tollgate_store::StoreError> for SsoSignInError {
    fn from(error: tollgate_store::StoreError) -> SsoSignInError {
        SsoSignInError::Service(error.into())
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> ServiceError {
    ServiceError::Unavailable(format!(
        "the identity provider's {what} could not be read: {error}"
    ))
}

fn random_text() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier (RFC 7636 4.2).
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Signature algorithms an ID token may use: asymmetric ones only (never `none` or a
/// shared-secret HMAC, whose "key" a JWKS would publish).
fn asymmetric(algorithm: jsonwebtoken::Algorithm) -> bool {
    use jsonwebtoken::Algorithm as A;
    matches!(
        algorithm,
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 | A::ES256 | A::ES384 | A::EdDSA
    )
}

/// The configured scopes, and `offline_access` when groups are re-checked and the provider
/// offers it, so the sign-in gets a refresh token to re-check with.
fn scopes_to_ask(settings: &SsoSettings, discovery: &Discovery) -> String {
    let offline = "offline_access";
    let asked = settings.scopes.split_whitespace().any(|scope| scope == offline);
    let offered = discovery.scopes_supported.iter().any(|scope| scope == offline);
    if settings.recheck_minutes > 0 && offered && !asked {
        format!("{} {offline}", settings.scopes)
    } else {
        settings.scopes.clone()
    }
}

/// The claims the rules read, from a verified token's payload.
pub(crate) fn claims_from_payload(payload: &Value, group_claim: &str) -> Result<IdTokenClaims, SsoRefusal> {
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    let strings = |value: Option<&Value>| -> Vec<String> {
        match value {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let expires_at = payload
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|seconds| Timestamp::from_timestamp(seconds, 0))
        .ok_or(SsoRefusal::Expired)?;
    let email_verified = match payload.get("email_verified") {
        Some(Value::Bool(verified)) => Some(*verified),
        // Some providers send it as a string.
        Some(Value::String(verified)) => Some(verified == "true"),
        _ => None,
    };
    Ok(IdTokenClaims {
        issuer: text("iss").ok_or(SsoRefusal::WrongIssuer)?,
        audiences: strings(payload.get("aud")),
        authorized_party: text("azp"),
        subject: text("sub").ok_or(SsoRefusal::ProviderRefused)?,
        expires_at,
        nonce: text("nonce"),
        email: text("email"),
        email_verified,
        name: text("name"),
        groups: strings(payload.get(group_claim)),
    })
}

/// What a re-check did for one person.
enum Recheck {
    /// Left as they were (see the log).
    Unchanged,
    /// Asked; the same roles.
    Kept,
    RolesChanged,
    AccessEnded,
}

impl SsoClient {
    /// The rules an ID token's claims must pass.
    fn policy(&self) -> ClaimsPolicy {
        let settings = &self.settings;
        ClaimsPolicy {
            issuer: settings.issuer.clone(),
            client_id: settings.client_id.clone(),
            allowed_email_domains: settings.allowed_email_domains.clone(),
            require_verified_email: settings.require_verified_email,
        }
    }

    fn new(settings: SsoSettings) -> SsoClient {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        SsoClient {
            settings,
            http,
            discovery: tokio::sync::Mutex::default(),
            keys: tokio::sync::Mutex::default(),
        }
    }

    /// The discovery document, read once (again after a failure).
    async fn discovery(&self) -> Result<Discovery, ServiceError> {
        let mut cached = self.discovery.lock().await;
        if let Some(discovery) = cached.as_ref() {
            return Ok(discovery.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| unavailable("discovery document", error))?
            .json()
            .await
            .map_err(|error| unavailable("discovery document", error))?;
        // OpenID Connect Discovery 4.3: the document must name the issuer it was read from.
        if discovery.issuer != self.settings.issuer {
            return Err(ServiceError::Unavailable(format!(
                "the identity provider's discovery document names the issuer '{}', not the configured '{}'",
                discovery.issuer, self.settings.issuer
            )));
        }
        *cached = Some(discovery.clone());
        Ok(discovery)
    }

    /// The key that signed a token naming `key_id`: from the cached JWKS, or from a fresh
    /// copy when the cache does not list it (the provider rotated its keys).
    async fn signing_key(
        &self,
        jwks_uri: &str,
        key_id: Option<&str>,
    ) -> Result<jsonwebtoken::DecodingKey, SsoSignInError> {
        let mut cached = self.keys.lock().await;
        for fresh in [false, true] {
            if fresh || cached.is_none() {
                let keys: jsonwebtoken::jwk::JwkSet = self
                    .http
                    .get(jwks_uri)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|error| unavailable("signing keys", error))?
                    .json()
                    .await
                    .map_err(|error| unavailable("signing keys", error))?;
                *cached = Some(keys);
            }
            let Some(keys) = cached.as_ref() else { continue };
            let found = match key_id {
                Some(key_id) => keys.find(key_id),
                None if keys.keys.len() == 1 => keys.keys.first(),
                None => None,
            };
            if let Some(jwk) = found {
                return jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| SsoRefusal::BadSignature.into());
            }
            if fresh {
                break;
            }
        }
        Err(SsoRefusal::BadSignature.into())
    }

    /// Exchanges the code for the provider's ID token (and a refresh token, if it gave one).
    async fn exchange(
        &self,
        discovery: &Discovery,
        attempt: &SsoAttempt,
        code: &str,
    ) -> Result<ProviderTokens, SsoSignInError> {
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", attempt.redirect_uri.as_str()),
            ("code_verifier", attempt.pkce_verifier.as_str()),
        ];
        let response = self
            .token_request(discovery, form)
            .send()
            .await
            .map_err(|error| unavailable("token endpoint", error))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            tracing::warn!(%status, body = %body.chars().take(300).collect::<String>(), "the identity provider refused the code");
            return Err(SsoRefusal::ProviderRefused.into());
        }
        let tokens = ProviderTokens::read(response).await?;
        if tokens.id_token.is_none() {
            return Err(SsoRefusal::ProviderRefused.into());
        }
        Ok(tokens)
    }

    /// Asks the provider for fresh tokens with a refresh token (RFC 6749 6).
    async fn refresh(&self, discovery: &Discovery, refresh_token: &str) -> RefreshOutcome {
        let form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        let response = match self.token_request(discovery, form).send().await {
            Ok(response) => response,
            Err(error) => return RefreshOutcome::Unavailable(error.to_string()),
        };
        let status = response.status();
        if status.is_success() {
            return match ProviderTokens::read(response).await {
                Ok(tokens) => RefreshOutcome::Tokens(tokens),
                Err(error) => RefreshOutcome::Unavailable(error.to_string()),
            };
        }
        let body = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|body| body.get("error").and_then(Value::as_str).map(str::to_owned));
        // RFC 6749 5.2: `invalid_grant` is the provider saying the grant is over (the
        // person was disabled, or signed out everywhere). Anything else (a 5xx, a
        // misconfigured client) says nothing about the person.
        if status == reqwest::StatusCode::BAD_REQUEST && error.as_deref() == Some("invalid_grant") {
            return RefreshOutcome::GrantEnded;
        }
        RefreshOutcome::Unavailable(format!(
            "{status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }

    /// A request to the token endpoint with this form, authenticated as the client.
    fn token_request<'a>(
        &'a self,
        discovery: &Discovery,
        mut form: Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        let settings = &self.settings;
        let methods = &discovery.token_endpoint_auth_methods_supported;
        // `client_secret_basic` is the default (OpenID Connect Core 9); the form only when
        // the provider offers that and not Basic.
        let in_form = methods.iter().any(|method| method == "client_secret_post")
            && !methods.iter().any(|method| method == "client_secret_basic");
        let mut request = self.http.post(&discovery.token_endpoint);
        if in_form {
            form.push(("client_id", settings.client_id.as_str()));
            form.push(("client_secret", settings.client_secret.as_str()));
        } else {
            // RFC 6749 2.3.1: both parts form-encoded before Basic.
            let encode =
                |text: &str| serde_urlencoded::to_string([("", text)]).unwrap_or_default()[1..].to_owned();
            request = request.basic_auth(encode(&settings.client_id), Some(encode(&settings.client_secret)));
            form.push(("client_id", settings.client_id.as_str()));
        }
        request.form(&form)
    }

    /// The payload of an ID token whose signature checks out against the provider's keys.
    async fn verified_payload(&self, discovery: &Discovery, id_token: &str) -> Result<Value, SsoSignInError> {
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| SsoRefusal::BadSignature)?;
        if !asymmetric(header.alg) {
            return Err(SsoRefusal::BadSignature.into());
        }
        let key = self
            .signing_key(&discovery.jwks_uri, header.kid.as_deref())
            .await?;
        // The claims are checked by `tollgate_core::sso` against the injected clock.
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(id_token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|_| SsoRefusal::BadSignature.into())
    }
}

impl Tollgate {
    /// Turns single sign-on on (once, at start).
    pub fn set_single_sign_on(&self, settings: SsoSettings) {
        let _ = self.inner.sso.0.set(SsoClient::new(settings));
    }

    /// The single sign-on settings, when it is on.
    pub fn single_sign_on(&self) -> Option<&SsoSettings> {
        self.inner.sso.0.get().map(|client| &client.settings)
    }

    /// Whether email and password sign people in.
    pub fn password_sign_in(&self) -> bool {
        self.single_sign_on()
            .is_none_or(|settings| settings.password_sign_in)
    }

    fn sso_client(&self) -> Result<&SsoClient, ServiceError> {
        self.inner
            .sso
            .0
            .get()
            .ok_or_else(|| ServiceError::NotFound("single sign-on is not configured".into()))
    }

    /// Starts a sign-in at the identity provider, which is to send the browser back to
    /// `redirect_uri`.
    pub async fn begin_sso_sign_in(&self, redirect_uri: &str) -> Result<SsoStart, ServiceError> {
        let client = self.sso_client()?;
        let discovery = client.discovery().await?;
        let state = SecretToken::generate();
        let nonce = random_text();
        let verifier = random_text();
        let now = self.now();
        self.store()
            .insert_sso_attempt(&SsoAttempt {
                state_hash: token_hash(state.expose_secret()),
                nonce: nonce.clone(),
                pkce_verifier: verifier.clone(),
                redirect_uri: redirect_uri.to_owned(),
                created_at: now,
                expires_at: now + chrono::Duration::minutes(SSO_ATTEMPT_MINUTES),
            })
            .await?;
        let mut location = reqwest::Url::parse(&discovery.authorization_endpoint)
            .map_err(|error| unavailable("authorization endpoint", error))?;
        let scopes = scopes_to_ask(&client.settings, &discovery);
        location.query_pairs_mut().extend_pairs([
            ("response_type", "code"),
            ("client_id", client.settings.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scopes.as_str()),
            ("state", state.expose_secret()),
            ("nonce", nonce.as_str()),
            ("code_challenge", pkce_challenge(&verifier).as_str()),
            ("code_challenge_method", "S256"),
        ]);
        Ok(SsoStart {
            location: location.into(),
            state,
        })
    }

    /// Completes a sign-in the provider sent back with `code` for the attempt of `state`.
    pub async fn finish_sso_sign_in(&self, state: &str, code: &str) -> Result<SignedIn, SsoSignInError> {
        let client = self.sso_client()?;
        let attempt = self
            .store()
            .take_sso_attempt(&token_hash(state), self.now())
            .await?
            .ok_or(SsoRefusal::BadState)?;
        let discovery = client.discovery().await?;
        let tokens = client.exchange(&discovery, &attempt, code).await?;
        let id_token = tokens.id_token.unwrap_or_default();
        let payload = client.verified_payload(&discovery, &id_token).await?;
        let settings = &client.settings;
        let claims = claims_from_payload(&payload, &settings.group_claim)?;
        let identity = check_claims(&claims, &client.policy(), &attempt.nonce, self.now())?;
        let organization = self.organization_named(&settings.organization).await?;
        let operator = self.operator_of(&organization, "sso");
        let known = operator
            .users(Some(&identity.email), &[])
            .await?
            .into_iter()
            .next();
        let assignment = match assign_roles(&claims.groups, &settings.groups) {
            Ok(assignment) => assignment,
            Err(refusal) => {
                // Someone who lost their groups is out of every session they had.
                if let Some(user) = known {
                    self.groups_lost(&user, &refusal.to_string()).await?;
                }
                return Err(refusal.into());
            }
        };
        let user = match known {
            Some(user) if self.store().user_deactivated_at(&user.id).await?.is_some() => {
                return Err(SsoRefusal::Deactivated.into());
            }
            Some(user) => user,
            None => match operator
                .add_user(&identity.email, &identity.name, assignment.org_role)
                .await
            {
                Ok(user) => user,
                // A first sign-in of the same person in another tab or on another replica
                // added them first.
                Err(error) => operator
                    .users(Some(&identity.email), &[])
                    .await?
                    .into_iter()
                    .next()
                    .ok_or(error)?,
            },
        };
        let (user, _) = self
            .apply_roles(user, &assignment, &settings.groups, "at sign-in")
            .await?;
        if let Some(refresh_token) = tokens.refresh_token
            && settings.recheck_minutes > 0
        {
            self.store()
                .keep_sso_refresh_token(&SsoRefreshToken {
                    user_id: user.id.clone(),
                    subject: identity.subject.clone(),
                    refresh_token,
                    checked_at: self.now(),
                })
                .await?;
        }
        Ok(self.start_session(user).await?)
    }

    /// Asks the provider again for the groups of everyone whose kept refresh token was last
    /// used `recheck_minutes` ago or more, and applies them as a sign-in would: roles follow
    /// the groups; someone whose groups no longer give access, or whose sign-in the provider
    /// ended (`invalid_grant`), is signed out everywhere and their personal keys (Claude
    /// Code's among them) are archived. A provider that cannot be asked changes nothing:
    /// the next round asks again.
    pub async fn recheck_sso_groups(&self) -> Result<SsoRecheckReport, ServiceError> {
        let mut report = SsoRecheckReport::default();
        let Some(client) = self.inner.sso.0.get() else {
            return Ok(report);
        };
        if client.settings.recheck_minutes <= 0 {
            return Ok(report);
        }
        let now = self.now();
        let due = self
            .store()
            .sso_refresh_tokens_checked_before(
                now - chrono::Duration::minutes(client.settings.recheck_minutes),
            )
            .await?;
        if due.is_empty() {
            return Ok(report);
        }
        let discovery = match client.discovery().await {
            Ok(discovery) => discovery,
            Err(error) => {
                tracing::warn!(%error, people = due.len(), "single sign-on's groups were not re-checked: the identity provider is unreachable");
                report.unchanged = u64::try_from(due.len()).unwrap_or(u64::MAX);
                return Ok(report);
            }
        };
        for kept in due {
            // One replica checks a token at a time, and a sign-in meanwhile wins.
            if !self.store().claim_sso_refresh_check(&kept, now).await? {
                continue;
            }
            report.checked += 1;
            match self.recheck_person(client, &discovery, &kept).await? {
                Recheck::Unchanged => report.unchanged += 1,
                Recheck::Kept => {}
                Recheck::RolesChanged => report.roles_changed += 1,
                Recheck::AccessEnded => report.access_ended += 1,
            }
        }
        Ok(report)
    }

    async fn recheck_person(
        &self,
        client: &SsoClient,
        discovery: &Discovery,
        kept: &SsoRefreshToken,
    ) -> Result<Recheck, ServiceError> {
        let Some(user) = self.store().user(&kept.user_id).await? else {
            return Ok(Recheck::Unchanged);
        };
        let tokens = match client.refresh(discovery, &kept.refresh_token).await {
            RefreshOutcome::Tokens(tokens) => tokens,
            RefreshOutcome::GrantEnded => {
                // Unless a sign-in replaced the token meanwhile, the provider ended this
                // person's sign-in: they lose access as if their groups had gone.
                if self
                    .store()
                    .delete_sso_refresh_token(&user.id, &kept.refresh_token)
                    .await?
                {
                    self.groups_lost(&user, "the identity provider ended the sign-in (invalid_grant)")
                        .await?;
                    return Ok(Recheck::AccessEnded);
                }
                return Ok(Recheck::Unchanged);
            }
            RefreshOutcome::Unavailable(error) => {
                tracing::warn!(user = %user.id, %error, "single sign-on's groups were not re-checked: the identity provider did not answer; trying again next round");
                return Ok(Recheck::Unchanged);
            }
        };
        // A provider that rotates refresh tokens gives the next one with every refresh.
        let next_token = tokens.refresh_token.as_deref().unwrap_or(&kept.refresh_token);
        if !self
            .store()
            .checked_sso_refresh_token(&user.id, &kept.refresh_token, next_token, self.now())
            .await?
        {
            return Ok(Recheck::Unchanged);
        }
        let Some(id_token) = tokens.id_token else {
            tracing::warn!(user = %user.id, "single sign-on's groups were not re-checked: the identity provider's refresh returned no ID token");
            return Ok(Recheck::Unchanged);
        };
        let settings = &client.settings;
        let claims = match client
            .verified_payload(discovery, &id_token)
            .await
            .and_then(|payload| {
                let claims = claims_from_payload(&payload, &settings.group_claim)?;
                check_refreshed_claims(&claims, &client.policy(), &kept.subject, self.now())?;
                Ok(claims)
            }) {
            Ok(claims) => claims,
            Err(SsoSignInError::Service(error)) => {
                tracing::warn!(user = %user.id, %error, "single sign-on's groups were not re-checked; trying again next round");
                return Ok(Recheck::Unchanged);
            }
            Err(SsoSignInError::Refused(refusal)) => {
                tracing::warn!(user = %user.id, %refusal, "single sign-on's groups were not re-checked: the refreshed ID token was refused");
                return Ok(Recheck::Unchanged);
            }
        };
        if self.store().user_deactivated_at(&user.id).await?.is_some() {
            return Ok(Recheck::Kept);
        }
        match assign_roles(&claims.groups, &settings.groups) {
            Err(refusal) => {
                self.store()
                    .delete_sso_refresh_token(&user.id, next_token)
                    .await?;
                self.groups_lost(&user, &refusal.to_string()).await?;
                Ok(Recheck::AccessEnded)
            }
            Ok(assignment) => {
                let (_, changed) = self
                    .apply_roles(
                        user,
                        &assignment,
                        &settings.groups,
                        "groups re-checked at the identity provider",
                    )
                    .await?;
                Ok(if changed {
                    Recheck::RolesChanged
                } else {
                    Recheck::Kept
                })
            }
        }
    }

    /// Ends the access of a person whose groups no longer give any (found at a sign-in or a
    /// re-check) or whose sign-in the provider ended: as a deactivation does, every Console
    /// session of theirs ends and their personal keys are archived (refused within the key
    /// cache's bound; a Claude Code refresh is refused once its key is archived). Not
    /// deactivated: a sign-in whose groups give access again lets them back in.
    async fn groups_lost(&self, user: &UserRecord, why: &str) -> Result<(), ServiceError> {
        let archived = self.store().end_user_access(&user.id).await?;
        tracing::info!(user = %user.id, archived, why, "single sign-on ended a person's access");
        let audit = self.audit_entry(
            &user.org_id,
            "sso",
            "sso.access_ended",
            &user.id,
            format!("signed out and {archived} personal keys archived: {why}"),
            None,
        );
        self.store().record_audit(audit).await?;
        Ok(())
    }

    /// Sets a person's organization role and their roles in the workspaces the group map
    /// names (adding, changing or ending those memberships) to what their groups give, and
    /// writes what changed, if anything, to the audit log (`sso.roles_changed`; `when`
    /// says at a sign-in or a re-check). The person as they are now, and whether anything
    /// changed.
    async fn apply_roles(
        &self,
        user: UserRecord,
        assignment: &RoleAssignment,
        groups: &GroupMap,
        when: &str,
    ) -> Result<(UserRecord, bool), ServiceError> {
        let mut changes = Vec::new();
        if user.role != assignment.org_role {
            self.store().set_user_role(&user.id, assignment.org_role).await?;
            changes.push(format!(
                "organization role {} -> {}",
                user.role.as_str(),
                assignment.org_role.as_str()
            ));
        }
        let workspaces = self.workspaces(&user.org_id).await?;
        for configured in groups.workspaces() {
            let Some(workspace) = workspaces
                .iter()
                .find(|workspace| workspace.id == configured || workspace.name == configured)
            else {
                tracing::warn!(workspace = %configured, "single sign-on's group map names a workspace that does not exist");
                continue;
            };
            let before = self
                .store()
                .member(&workspace.id, &user.id)
                .await?
                .map(|member| member.role);
            let role_text = |role: Option<WorkspaceRole>| role.map_or("none", WorkspaceRole::as_str);
            match assignment.workspace_roles.get(&configured) {
                Some(role) if workspace.archived_at.is_none() => {
                    if before != Some(*role) {
                        changes.push(format!(
                            "workspace {}: {} -> {}",
                            workspace.name,
                            role_text(before),
                            role.as_str()
                        ));
                    }
                    self.store()
                        .set_member(
                            &user.org_id,
                            &MemberRecord {
                                workspace_id: workspace.id.clone(),
                                user_id: user.id.clone(),
                                role: *role,
                                added_at: self.now(),
                            },
                        )
                        .await?;
                }
                Some(_) => {}
                None => {
                    if before.is_some() {
                        changes.push(format!(
                            "workspace {}: {} -> none",
                            workspace.name,
                            role_text(before)
                        ));
                    }
                    self.store().delete_member(&workspace.id, &user.id).await?;
                }
            }
        }
        let changed = !changes.is_empty();
        if changed {
            let audit = self.audit_entry(
                &user.org_id,
                "sso",
                "sso.roles_changed",
                &user.id,
                format!("{} ({when})", changes.join("; ")),
                None,
            );
            self.store().record_audit(audit).await?;
        }
        Ok((
            UserRecord {
                role: assignment.org_role,
                ..user
            },
            changed,
        ))
    }

    /// Refuses a way in that signs someone in with a password when passwords are off.
    pub(crate) fn check_password_sign_in(&self) -> Result<(), ServiceError> {
        if self.password_sign_in() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(
                "password sign-in is turned off: sign in with single sign-on".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
