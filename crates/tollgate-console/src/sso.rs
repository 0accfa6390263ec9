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
    Ok(format!("{scheme}://{host}/console/sso/callback"))
}

fn state_cookie(value: &str, secure: bool, max_age_seconds: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; Path=/console/sso; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie_state(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == STATE_COOKIE)
        .map(|(_, value)| value.to_owned())
}

pub(crate) async fn start(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
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
    response.headers_mut().insert(
        header::SET_COOKIE,
        state_cookie(
            started.state.expose_secret(),
            is_secure(&headers, &state),
            SSO_ATTEMPT_MINUTES * 60,
        ),
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
    // The attempt is over either way: its cookie goes.
    response
        .headers_mut()
        .append(header::SET_COOKIE, state_cookie("", secure, 0));
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
    let bound =
        cookie_state(headers).is_some_and(|cookie| !returned.is_empty() && same_secret(&cookie, &returned));
    if !bound {
        return Ok(refused(state, SsoRefusal::BadState));
    }
    let code = match (query.error, query.code) {
        (None, Some(code)) if !code.is_empty() => code,
        _ => return Ok(refused(state, SsoRefusal::ProviderRefused)),
    };
    match state.tollgate.finish_sso_sign_in(&returned, &code).await {
        Ok(signed_in) => start_session(state, headers, signed_in).await,
        Err(SsoSignInError::Refused(refusal)) => Ok(refused(state, refusal)),
        Err(SsoSignInError::Service(ServiceError::Unavailable(detail))) => {
            Ok(provider_unreachable(state, &detail))
        }
        Err(SsoSignInError::Service(error)) => Err(error.into()),
    }
}
