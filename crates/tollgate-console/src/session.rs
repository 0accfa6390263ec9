//! Sessions and request forgery: the session cookie, the `Signed` extractor every page
//! takes, and the guard every POST passes — a cross-site request (by `Sec-Fetch-Site` or an
//! `Origin` that is not this host) is refused with 403 before anything else, and a signed-in
//! POST must carry the session's CSRF token (form field `csrf`, or the `x-csrf-token`
//! header of the Workbench's fetch).
//!
//! The cookie is `__Host-tollgate_session` (HttpOnly, SameSite=Lax, Path=/, Secure) when the
//! request is secure: over TLS, or to a loopback host, where browsers accept `Secure`
//! cookies on plain http. On plain http to any other host a browser would drop a
//! `__Host-`/`Secure` cookie, so the cookie is then named `tollgate_session` and not
//! marked `Secure`; put the Console behind TLS for real use.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tollgate_service::{ConsoleUser, SESSION_LIFETIME_HOURS};

use crate::ConsoleState;
use crate::error::PageError;

pub(crate) const SECURE_COOKIE: &str = "__Host-tollgate_session";
pub(crate) const PLAIN_COOKIE: &str = "tollgate_session";
/// Largest form body the guard reads to find the CSRF token.
const FORM_BYTES_MAX: usize = 1024 * 1024;
/// Pages that take a POST without a session (they start one), below `/console`.
const PUBLIC_POSTS: [&str; 2] = ["/sign-in", "/setup"];

/// The signed-in person, for pages that need one; without a valid session the page
/// redirects to sign-in.
pub(crate) struct Signed(pub(crate) ConsoleUser);

impl FromRequestParts<ConsoleState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Signed, Response> {
        if let Some(user) = parts.extensions.get::<ConsoleUser>() {
            return Ok(Signed(user.clone()));
        }
        match signed_in(&parts.headers, state).await {
            Ok(Some(user)) => Ok(Signed(user)),
            Ok(None) => Err(Redirect::to("/console/sign-in").into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

/// The session token the request's cookie carries, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    let mut plain = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == SECURE_COOKIE {
                return Some(value.to_owned());
            }
            if name == PLAIN_COOKIE {
                plain = Some(value.to_owned());
            }
        }
    }
    plain
}

/// The signed-in person of the request's session, if any.
pub(crate) async fn signed_in(
    headers: &HeaderMap,
    state: &ConsoleState,
) -> Result<Option<ConsoleUser>, PageError> {
    match session_token(headers) {
        Some(token) => Ok(state.tollgate.console_user(&token).await?),
        None => Ok(None),
    }
}

/// Whether this request may carry a `Secure` cookie (see the module doc).
pub(crate) fn is_secure(headers: &HeaderMap, state: &ConsoleState) -> bool {
    if let Some(configured) = state.settings.secure_cookies {
        return configured;
    }
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    forwarded_tls || host_name(headers).is_some_and(is_loopback)
}

fn host_name(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host == "::1" || host.starts_with("127.")
}

/// The `Set-Cookie` value that starts a session.
pub(crate) fn session_cookie(token: &str, secure: bool) -> HeaderValue {
    let max_age = SESSION_LIFETIME_HOURS * 3600;
    let text = if secure {
        format!("{SECURE_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age={max_age}")
    } else {
        format!("{PLAIN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}")
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that ends a session.
pub(crate) fn cleared_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "__Host-tollgate_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0",
        )
    } else {
        HeaderValue::from_static("tollgate_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }
}

/// Whether the request comes from another site: by the browser's `Sec-Fetch-Site`, or an
/// `Origin` that is not this host. Requests without either (non-browser clients) are not
/// cross-site; they still need the CSRF token to change anything.
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else { return true };
        let Some(host) = headers.get(header::HOST).and_then(|value| value.to_str().ok()) else {
            return true;
        };
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        return origin_host != Some(host);
    }
    false
}

/// Compares secrets in time independent of where they first differ.
pub(crate) fn same_secret(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// The guard of every POST (see the module doc). A signed-in request goes on with its
/// `ConsoleUser` in the extensions, so the page does not look the session up again.
pub(crate) async fn guard(State(state): State<ConsoleState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if is_cross_site(request.headers()) {
        return PageError::Forbidden("This form was sent from another site, so it was refused.".into())
            .into_response();
    }
    // Inside the nested router the path has lost its `/console` prefix.
    let path = request.uri().path();
    let path = path.strip_prefix("/console").unwrap_or(path);
    if PUBLIC_POSTS.contains(&path) || path.starts_with("/invites/") {
        return next.run(request).await;
    }
    let user = match signed_in(request.headers(), &state).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/console/sign-in").into_response(),
        Err(error) => return error.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_BYTES_MAX).await else {
        return PageError::Invalid("The form is too large.".into()).into_response();
    };
    let presented = match parts.headers.get("x-csrf-token") {
        Some(value) => value.to_str().ok().map(str::to_owned),
        None => serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|fields| fields.into_iter().find(|(name, _)| name == "csrf"))
            .map(|(_, value)| value),
    };
    if !presented.is_some_and(|token| same_secret(&token, &user.session.csrf_token)) {
        return PageError::Forbidden(
            "The form's security token is missing or stale: reload the page and try again.".into(),
        )
        .into_response();
    }
    parts.extensions.insert(user);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The Console's content security policy: only our own assets, no framing, and forms that
/// lead only to the Console or to the payment provider's page (a form's redirect is held
/// to `form-action` too, so Stripe Checkout's origin must be named or the browser stops
/// the buyer on the billing page).
pub(crate) fn content_security_policy(payment_page_origin: Option<&str>) -> HeaderValue {
    let policy = format!(
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         frame-ancestors 'none'; form-action 'self'{}",
        payment_page_origin
            .map(|origin| format!(" {origin}"))
            .unwrap_or_default()
    );
    // Configuration has checked the origin; one that is still not a header value is left out.
    HeaderValue::from_str(&policy).unwrap_or_else(|_| content_security_policy(None))
}

/// Headers of every Console response: no framing by other sites, no sniffing, no caching
/// of pages that show account data, and the content security policy.
pub(crate) async fn security_headers(policy: HeaderValue, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("content-security-policy", policy);
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A 303 to `location` that also sets or clears the session cookie.
pub(crate) fn redirect_with_cookie(location: &str, cookie: HeaderValue) -> Response {
    let mut response = Redirect::to(location).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}
