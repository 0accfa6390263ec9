//! Single sign-on's two pages: `/console/sso/start` sends the browser to the identity
//! provider, and `/console/sso/callback` is where it comes back with a code. The attempt's
//! `state` is bound to the browser that started it by a short-lived cookie (HttpOnly,
//! SameSite=Lax, only under `/console/sso`), so a code obtained in someone else's browser
//! cannot sign this one in; the service checks everything else (`tollgate_service::sso`).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tollgate_core::sso::SsoRefusal;
use tollgate_service::{SSO_ATTEMPT_MINUTES, ServiceError, SsoSignInError};

use crate::ConsoleState;
use crate::auth::{WaysIn, sign_in_form, start as start_session};
use crate::error::PageError;
use crate::session::{is_secure, same_secret};

const STATE_COOKIE: &str = "tollgate_sso_state";
/// The page to return to once signed in (checked again by `after_sign_in` when used).
const NEXT_COOKIE: &str = "tollgate_sso_next";

/// The address the provider sends the browser back to: as configured, or this server's own
/// as the browser reached it.
fn callback_url(state: &ConsoleState, headers: &HeaderMap) -> Result<String, PageError> {
    if let Some(configured) = state
        .tollgate
        .single_sign_on()
        .and_then(|settings| settings.redirect_url.clone())
    {
        return Ok(configured);
    }
    Ok(format!("{}/console/sso/callback", own_origin(headers)?))
}

/// This server's origin as the client reached it: the `Host` it asked for, over https when
/// a proxy in front says so (`X-Forwarded-Proto`).
pub(crate) fn own_origin(headers: &HeaderMap) -> Result<String, PageError> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']))
        .ok_or_else(|| PageError::Invalid("The request did not say which host it was for.".into()))?;
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let scheme = if forwarded_tls { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// Where to go after signing in: `next` if it is one of the Console's own pages, else the
/// overview. Nothing else is followed, so a link cannot send a person elsewhere.
pub(crate) fn after_sign_in(next: Option<&str>) -> &str {
    next.filter(|next| {
        next.starts_with("/console/")
            && !next.contains("//")
            && !next.contains(['\\', '\r', '\n'])
            && next.len() <= 512
    })
    .unwrap_or("/console/overview")
}

fn sso_cookie(name: &str, value: &str, secure: bool, max_age_seconds: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console/sso; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.to_owned())
}

#[derive(Deserialize)]
pub(crate) struct StartQuery {
    next: Option<String>,
}

pub(crate) async fn start(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<StartQuery>,
) -> Result<Response, PageError> {
    if state.tollgate.single_sign_on().is_none() {
        return Err(PageError::NotFound("Single sign-on is not configured.".into()));
    }
    let redirect_uri = callback_url(&state, &headers)?;
    let started = match state.tollgate.begin_sso_sign_in(&redirect_uri).await {
        Ok(started) => started,
        Err(ServiceError::Unavailable(detail)) => return Ok(provider_unreachable(&state, &detail)),
        Err(error) => return Err(error.into()),
    };
    let mut response = Redirect::to(&started.location).into_response();
    let secure = is_secure(&headers, &state);
    response.headers_mut().insert(
        header::SET_COOKIE,
        sso_cookie(
            STATE_COOKIE,
            started.state.expose_secret(),
            secure,
            SSO_ATTEMPT_MINUTES * 60,
        ),
    );
    let next = after_sign_in(query.next.as_deref());
    let next: String = serde_urlencoded::to_string([("", next)]).unwrap_or_default();
    response.headers_mut().append(
        header::SET_COOKIE,
        sso_cookie(NEXT_COOKIE, &next[1..], secure, SSO_ATTEMPT_MINUTES * 60),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn refused(state: &ConsoleState, refusal: SsoRefusal) -> Response {
    let status = match refusal {
        SsoRefusal::DomainNotAllowed | SsoRefusal::NoAllowedGroup | SsoRefusal::Deactivated => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::UNAUTHORIZED,
    };
    let message = format!("Single sign-on did not sign you in: {refusal}.");
    let page = sign_in_form("", Some(&message), WaysIn::of(state));
    (status, Html(page.into_string())).into_response()
}

fn provider_unreachable(state: &ConsoleState, detail: &str) -> Response {
    tracing::warn!(%detail, "single sign-on could not reach the identity provider");
    let page = sign_in_form(
        "",
        Some("The identity provider could not be reached: try again in a moment."),
        WaysIn::of(state),
    );
    (StatusCode::BAD_GATEWAY, Html(page.into_string())).into_response()
}

pub(crate) async fn callback(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let secure = is_secure(&headers, &state);
    let mut response = finish(&state, &headers, query).await?;
    // The attempt is over either way: its cookies go.
    for name in [STATE_COOKIE, NEXT_COOKIE] {
        response
            .headers_mut()
            .append(header::SET_COOKIE, sso_cookie(name, "", secure, 0));
    }
    Ok(response)
}

async fn finish(
    state: &ConsoleState,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Response, PageError> {
    if state.tollgate.single_sign_on().is_none() {
        return Err(PageError::NotFound("Single sign-on is not configured.".into()));
    }
    let returned = query.state.unwrap_or_default();
    let bound = cookie(headers, STATE_COOKIE)
        .is_some_and(|cookie| !returned.is_empty() && same_secret(&cookie, &returned));
    if !bound {
        return Ok(refused(state, SsoRefusal::BadState));
    }
    let code = match (query.error, query.code) {
        (None, Some(code)) if !code.is_empty() => code,
        _ => return Ok(refused(state, SsoRefusal::ProviderRefused)),
    };
    match state.tollgate.finish_sso_sign_in(&returned, &code).await {
        Ok(signed_in) => {
            let next = cookie(headers, NEXT_COOKIE).and_then(|next| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("n={next}"))
                    .ok()?
                    .pop()
                    .map(|(_, next)| next)
            });
            start_session(state, headers, signed_in, after_sign_in(next.as_deref())).await
        }
        Err(SsoSignInError::Refused(refusal)) => Ok(refused(state, refusal)),
        Err(SsoSignInError::Service(ServiceError::Unavailable(detail))) => {
            Ok(provider_unreachable(state, &detail))
        }
        Err(SsoSignInError::Service(error)) => Err(error.into()),
    }
}
