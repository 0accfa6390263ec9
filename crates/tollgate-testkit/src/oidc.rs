//! `FakeOidc`: a real OpenID Connect provider on loopback, for single sign-on tests. It
//! serves the discovery document, a JWKS with the current and the previous signing key
//! (RS256; `rotate_key` moves to the other one), an authorization endpoint that signs in
//! whichever person the test set (as an identity provider with a live session would) and
//! sends the browser back with a one-use code, and a token endpoint that checks the
//! client's secret (HTTP Basic or in the form), the redirect URI and the PKCE verifier
//! before it issues an ID token. A code is good once: a second exchange gets
//! `invalid_grant`, as from a real provider.
//!
//! Knobs for the refusals a relying party must make: the next tokens' audience, lifetime and
//! issuer, and an authorization that hands out an already used code.
//!
//! An authorization that asked for `offline_access` (listed in `scopes_supported`) also gets
//! a refresh token; `grant_type=refresh_token` answers with a fresh ID token carrying the
//! person's groups as they are now (`set_groups`) and the next refresh token (the used one
//! stops), `invalid_grant` once the person is disabled (`disable`), and a 503 while the
//! token endpoint is down (`set_down`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The client the fake knows.
pub const OIDC_CLIENT_ID: &str = "tollgate-console";
pub const OIDC_CLIENT_SECRET: &str = "oidc-client-secret";

const SIGNING_KEYS: [&str; 2] = [
    include_str!("../keys/oidc-signing-1.key.pem"),
    include_str!("../keys/oidc-signing-2.key.pem"),
];

/// The person the provider signs in.
#[derive(Clone, Debug)]
pub struct OidcPerson {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub groups: Vec<String>,
}

impl OidcPerson {
    pub fn new(email: &str, groups: &[&str]) -> OidcPerson {
        OidcPerson {
            subject: format!("sub-{email}"),
            email: email.to_owned(),
            email_verified: true,
            name: email.split('@').next().unwrap_or(email).to_owned(),
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
        }
    }
}

struct Grant {
    person: OidcPerson,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    offline: bool,
    used: bool,
}

struct Shared {
    issuer: String,
    person: Option<OidcPerson>,
    /// Index of the key that signs now.
    key: usize,
    codes: HashMap<String, Grant>,
    last_code: Option<String>,
    /// The next authorization hands out the last code again.
    replay_code: bool,
    audience: Option<String>,
    lifetime_seconds: i64,
    issuer_claim: Option<String>,
    next_code: u64,
    token_requests: u64,
    /// Each person as the provider knows them now, by subject.
    people: HashMap<String, OidcPerson>,
    disabled: std::collections::HashSet<String>,
    /// Live refresh token → subject.
    refresh_tokens: HashMap<String, String>,
    refresh_requests: u64,
    down: bool,
}

/// The provider; it stops when dropped.
pub struct FakeOidc {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOidc {
    pub async fn start() -> FakeOidc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the identity provider");
        let addr = listener.local_addr().expect("bound");
        let shared = Arc::new(Mutex::new(Shared {
            issuer: format!("http://{addr}"),
            person: None,
            key: 0,
            codes: HashMap::new(),
            last_code: None,
            replay_code: false,
            audience: None,
            lifetime_seconds: 300,
            issuer_claim: None,
            next_code: 0,
            token_requests: 0,
            people: HashMap::new(),
            disabled: std::collections::HashSet::new(),
            refresh_tokens: HashMap::new(),
            refresh_requests: 0,
            down: false,
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOidc { addr, shared, server }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issuer (also the base of every endpoint).
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The person the next authorizations sign in.
    pub fn sign_in_as(&self, person: OidcPerson) {
        self.shared().person = Some(person);
    }

    /// Tokens from now on are signed with the other key; the JWKS lists both.
    pub fn rotate_key(&self) {
        let mut shared = self.shared();
        shared.key = 1 - shared.key;
    }

    /// Tokens from now on are for this audience instead of the client (`None`: the client).
    pub fn issue_for_audience(&self, audience: Option<&str>) {
        self.shared().audience = audience.map(str::to_owned);
    }

    /// Tokens from now on expire this many seconds after they are issued (negative: already
    /// expired).
    pub fn issue_lifetime(&self, seconds: i64) {
        self.shared().lifetime_seconds = seconds;
    }

    /// Tokens from now on name this issuer (`None`: the real one).
    pub fn issue_as(&self, issuer: Option<&str>) {
        self.shared().issuer_claim = issuer.map(str::to_owned);
    }

    /// The next authorization hands out the last code issued, used or not.
    pub fn replay_last_code(&self) {
        self.shared().replay_code = true;
    }

    /// Codes exchanged (or tried) at the token endpoint.
    pub fn token_requests(&self) -> u64 {
        self.shared().token_requests
    }

    /// The person signed in as `email` is in these groups from now on: their next refresh
    /// says so (and so does their next sign-in, if they are the one `sign_in_as` set).
    pub fn set_groups(&self, email: &str, groups: &[&str]) {
        let groups: Vec<String> = groups.iter().map(|group| (*group).to_owned()).collect();
        let mut shared = self.shared();
        for person in shared.people.values_mut().filter(|person| person.email == email) {
            person.groups.clone_from(&groups);
        }
        if let Some(person) = shared.person.as_mut().filter(|person| person.email == email) {
            person.groups = groups;
        }
    }

    /// The person signed in as `email` is disabled: every refresh of theirs gets
    /// `invalid_grant`.
    pub fn disable(&self, email: &str) {
        let mut shared = self.shared();
        let subjects: Vec<String> = shared
            .people
            .values()
            .filter(|person| person.email == email)
            .map(|person| person.subject.clone())
            .collect();
        shared.disabled.extend(subjects);
    }

    /// While down, the token endpoint answers 503 to every request.
    pub fn set_down(&self, down: bool) {
        self.shared().down = down;
    }

    /// Refreshes asked for (answered or not).
    pub fn refresh_requests(&self) -> u64 {
        self.shared().refresh_requests
    }
}

impl Drop for FakeOidc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The provider is another party, with a clock of its own: the wall clock.
#[expect(
    clippy::disallowed_methods,
    reason = "the identity provider's own clock, not tollgate's"
)]
fn provider_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn discovery(State(shared): State<Arc<Mutex<Shared>>>) -> Json<Value> {
    let issuer = lock(&shared).issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
        "claims_supported": ["sub", "email", "email_verified", "name", "groups"],
    }))
}

fn key_id(index: usize) -> String {
    format!("fake-oidc-{}", index + 1)
}

fn encoding_key(index: usize) -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_rsa_pem(SIGNING_KEYS[index].as_bytes())
        .expect("the test signing key parses")
}

async fn jwks() -> Json<Value> {
    let keys: Vec<Value> = (0..SIGNING_KEYS.len())
        .map(|index| {
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
                &encoding_key(index),
                jsonwebtoken::Algorithm::RS256,
            )
            .expect("a JWK of the test key");
            jwk.common.key_id = Some(key_id(index));
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            serde_json::to_value(jwk).expect("a JWK serializes")
        })
        .collect();
    Json(json!({ "keys": keys }))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    let Some(redirect_uri) = query.redirect_uri else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is required").into_response();
    };
    if query.client_id.as_deref() != Some(OIDC_CLIENT_ID) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let state = query.state.unwrap_or_default();
    let back = |pairs: &[(&str, &str)]| {
        let mut url = reqwest::Url::parse(&redirect_uri).expect("an absolute redirect_uri");
        url.query_pairs_mut().extend_pairs(pairs);
        Redirect::to(url.as_str()).into_response()
    };
    let scopes = query.scope.unwrap_or_default();
    if query.response_type.as_deref() != Some("code")
        || !scopes.split(' ').any(|scope| scope == "openid")
        || query.code_challenge_method.as_deref() != Some("S256")
        || query.code_challenge.as_deref().is_none_or(str::is_empty)
    {
        return back(&[("error", "invalid_request"), ("state", &state)]);
    }
    let mut shared = lock(&shared);
    let Some(person) = shared.person.clone() else {
        return back(&[("error", "access_denied"), ("state", &state)]);
    };
    if shared.replay_code {
        shared.replay_code = false;
        if let Some(code) = shared.last_code.clone() {
            return back(&[("code", &code), ("state", &state)]);
        }
    }
    shared.next_code += 1;
    let code = format!(
        "code-{}-{}",
        shared.next_code,
        hex::encode(Sha256::digest(state.as_bytes()))
    );
    shared.codes.insert(
        code.clone(),
        Grant {
            person,
            redirect_uri: redirect_uri.clone(),
            challenge: query.code_challenge.unwrap_or_default(),
            nonce: query.nonce,
            offline: scopes.split(' ').any(|scope| scope == "offline_access"),
            used: false,
        },
    );
    shared.last_code = Some(code.clone());
    back(&[("code", &code), ("state", &state)])
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    refresh_token: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// The client's id and secret from HTTP Basic (form-urlencoded parts), else from the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let id = form_decode(id)?;
        let secret = form_decode(secret)?;
        return Some((id, secret));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

fn form_decode(text: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
        .ok()?
        .pop()
        .map(|(_, value)| value)
}

async fn token(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let mut shared = lock(&shared);
    shared.token_requests += 1;
    if client_credentials(&headers, &form) != Some((OIDC_CLIENT_ID.to_owned(), OIDC_CLIENT_SECRET.to_owned()))
    {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if shared.down {
        return token_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the provider is down",
        );
    }
    if form.grant_type.as_deref() == Some("refresh_token") {
        return refresh(&mut shared, form.refresh_token.as_deref().unwrap_or_default());
    }
    if form.grant_type.as_deref() != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code and refresh_token",
        );
    }
    let code = form.code.unwrap_or_default();
    let Some(grant) = shared.codes.get_mut(&code) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code is not known");
    };
    if grant.used {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was used already",
        );
    }
    grant.used = true;
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri does not match",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != grant.challenge {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    let person = grant.person.clone();
    let nonce = grant.nonce.clone();
    let offline = grant.offline;
    // The person as the provider knows them from now on; a refresh reads them here.
    let person = shared
        .people
        .entry(person.subject.clone())
        .and_modify(|known| *known = person.clone())
        .or_insert(person)
        .clone();
    let refresh_token = offline.then(|| new_refresh_token(&mut shared, &person.subject));
    let id_token = id_token(&shared, &person, nonce);
    let mut tokens = json!({
        "access_token": format!("access-{code}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": id_token,
    });
    if let Some(refresh_token) = refresh_token {
        tokens["refresh_token"] = json!(refresh_token);
    }
    Json(tokens).into_response()
}

fn new_refresh_token(shared: &mut Shared, subject: &str) -> String {
    shared.next_code += 1;
    let token = format!(
        "refresh-{}-{}",
        shared.next_code,
        hex::encode(Sha256::digest(subject.as_bytes()))
    );
    shared.refresh_tokens.insert(token.clone(), subject.to_owned());
    token
}

/// `grant_type=refresh_token`: the person's groups as they are now, and the next token.
fn refresh(shared: &mut Shared, refresh_token: &str) -> Response {
    shared.refresh_requests += 1;
    let Some(subject) = shared.refresh_tokens.remove(refresh_token) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the refresh token is not known",
        );
    };
    if shared.disabled.contains(&subject) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the user is disabled");
    }
    let Some(person) = shared.people.get(&subject).cloned() else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the user is unknown");
    };
    let next = new_refresh_token(shared, &subject);
    let id_token = id_token(shared, &person, None);
    Json(json!({
        "access_token": format!("access-{next}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "id_token": id_token,
        "refresh_token": next,
    }))
    .into_response()
}

/// An ID token for `person`, signed with the current key, with the knobs applied.
fn id_token(shared: &Shared, person: &OidcPerson, nonce: Option<String>) -> String {
    let now = provider_now();
    let claims = json!({
        "iss": shared.issuer_claim.clone().unwrap_or_else(|| shared.issuer.clone()),
        "aud": shared.audience.clone().unwrap_or_else(|| OIDC_CLIENT_ID.to_owned()),
        "sub": person.subject,
        "iat": now,
        "exp": now + shared.lifetime_seconds,
        "nonce": nonce,
        "email": person.email,
        "email_verified": person.email_verified,
        "name": person.name,
        "groups": person.groups,
    });
    let mut token_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    token_header.kid = Some(key_id(shared.key));
    jsonwebtoken::encode(&token_header, &claims, &encoding_key(shared.key)).expect("an ID token")
}
