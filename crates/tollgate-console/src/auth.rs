//! Signing in and out, the first admin's setup link, and accepting an invite (single
//! sign-on's own pages are in `sso`). Each of
//! these that succeeds starts a new session (a fresh token: the session rotates at every
//! sign-in) and ends the one the browser had, if any.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_service::{PASSWORD_LENGTH_MIN, SignInRefusal, SignedIn};

use crate::ConsoleState;
use crate::error::PageError;
use crate::layout;
use crate::session::{
    Signed, cleared_cookie, is_secure, redirect_with_cookie, session_cookie, session_token,
};
use crate::sso::after_sign_in;

/// The client's address, for the sign-in rate limit: the peer's, or the one a trusted
/// proxy forwarded ("unknown" when the server was not started with connection info).
pub(crate) struct ClientAddress(pub(crate) String);

impl FromRequestParts<ConsoleState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<ClientAddress, Self::Rejection> {
        Ok(ClientAddress(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(
                || "unknown".to_owned(),
                |info| {
                    state
                        .settings
                        .trusted_proxies
                        .client_address(info.0.ip(), &parts.headers)
                        .to_string()
                },
            ),
        ))
    }
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    email: String,
    password: String,
    /// The page to return to once signed in.
    next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
}

/// The ways in the sign-in page offers.
#[derive(Clone, Copy)]
pub(crate) struct WaysIn {
    pub(crate) single_sign_on: bool,
    pub(crate) password: bool,
}

impl WaysIn {
    pub(crate) fn of(state: &ConsoleState) -> WaysIn {
        WaysIn {
            single_sign_on: state.tollgate.single_sign_on().is_some(),
            password: state.tollgate.password_sign_in(),
        }
    }
}

pub(crate) fn sign_in_form(email: &str, problem: Option<&str>, ways: WaysIn) -> Markup {
    sign_in_form_to(email, problem, ways, None)
}

/// The sign-in page, returning to `next` (one of the Console's pages) once signed in.
pub(crate) fn sign_in_form_to(
    email: &str,
    problem: Option<&str>,
    ways: WaysIn,
    next: Option<&str>,
) -> Markup {
    let next = next
        .map(|next| after_sign_in(Some(next)))
        .filter(|next| *next != "/console/overview");
    let sso = match next {
        Some(next) => format!(
            "/console/sso/start?{}",
            serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
        ),
        None => "/console/sso/start".to_owned(),
    };
    layout::bare(
        "Sign in",
        html! {
            h1 { "Sign in to tollgate" }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            @if ways.single_sign_on {
                p { a #sso.button href=(sso) { "Sign in with single sign-on" } }
            }
            @if ways.password {
                form.card method="post" action="/console/sign-in" {
                    @if let Some(next) = next {
                        input type="hidden" name="next" value=(next);
                    }
                    label for="email" { "Email" }
                    input id="email" name="email" type="email" autocomplete="username" required value=(email);
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub(crate) async fn sign_in_page(
    State(state): State<ConsoleState>,
    Query(query): Query<SignInQuery>,
) -> Html<String> {
    Html(sign_in_form_to("", None, WaysIn::of(&state), query.next.as_deref()).into_string())
}

pub(crate) async fn sign_in(
    State(state): State<ConsoleState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    match state
        .tollgate
        .console_sign_in(&form.email, &form.password, &client)
        .await
    {
        Ok(signed_in) => start(&state, &headers, signed_in, after_sign_in(form.next.as_deref())).await,
        Err(refusal @ SignInRefusal::BadCredentials) => {
            let page = sign_in_form(&form.email, Some(&refusal.to_string()), WaysIn::of(&state));
            Ok((StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response())
        }
        Err(refusal @ (SignInRefusal::PasswordsOff | SignInRefusal::Deactivated)) => {
            let page = sign_in_form("", Some(&refusal.to_string()), WaysIn::of(&state));
            Ok((StatusCode::FORBIDDEN, Html(page.into_string())).into_response())
        }
        Err(refusal @ (SignInRefusal::TooManyAttempts | SignInRefusal::Busy)) => {
            // A busy server is worth another try in a second; a full limit frees up only as
            // its 15-minute window ends.
            let retry_after_seconds = match refusal {
                SignInRefusal::Busy => "1",
                _ => "60",
            };
            let page = sign_in_form(&form.email, Some(&refusal.to_string()), WaysIn::of(&state));
            Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_seconds)],
                Html(page.into_string()),
            )
                .into_response())
        }
        Err(SignInRefusal::Service(error)) => Err(error.into()),
    }
}

/// Ends the browser's previous session, if any, sets the new one's cookie, and goes to
/// `next`.
pub(crate) async fn start(
    state: &ConsoleState,
    headers: &HeaderMap,
    signed_in: SignedIn,
    next: &str,
) -> Result<Response, PageError> {
    if let Some(previous) = session_token(headers) {
        state.tollgate.console_sign_out(&previous).await?;
    }
    let cookie = session_cookie(signed_in.token.expose_secret(), is_secure(headers, state));
    Ok(redirect_with_cookie(next, cookie))
}

pub(crate) async fn sign_out(
    State(state): State<ConsoleState>,
    Signed(_user): Signed,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(token) = session_token(&headers) {
        state.tollgate.console_sign_out(&token).await?;
    }
    Ok(redirect_with_cookie(
        "/console/sign-in",
        cleared_cookie(is_secure(&headers, &state)),
    ))
}

#[derive(Deserialize)]
pub(crate) struct SetupQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub(crate) struct SetupForm {
    token: String,
    email: String,
    name: String,
    password: String,
}

fn password_fields() -> Markup {
    html! {
        label for="password" { "Password (at least " (PASSWORD_LENGTH_MIN) " characters)" }
        input id="password" name="password" type="password" autocomplete="new-password"
            minlength=(PASSWORD_LENGTH_MIN) required;
    }
}

pub(crate) async fn setup_page(
    State(state): State<ConsoleState>,
    Query(query): Query<SetupQuery>,
) -> Result<Html<String>, PageError> {
    if !state.tollgate.console_setup_token_valid(&query.token).await? {
        return Err(PageError::NotFound(
            "This setup link was used already, was replaced by a newer one, or has expired; once an admin exists, no setup link works. Ask an admin, or run `tollgate users create --admin`."
                .into(),
        ));
    }
    Ok(Html(
        layout::bare(
            "Set up the Console",
            html! {
                h1 { "Create the first admin" }
                p { "This link works once, and only until someone can sign in. The account you create here is an admin of the organization." }
                form.card method="post" action="/console/setup" {
                    input type="hidden" name="token" value=(query.token);
                    label for="email" { "Email" }
                    input id="email" name="email" type="email" autocomplete="username" required;
                    label for="name" { "Name" }
                    input id="name" name="name" type="text" autocomplete="name" required;
                    (password_fields())
                    button type="submit" { "Create admin and sign in" }
                }
            },
        )
        .into_string(),
    ))
}

pub(crate) async fn setup(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Result<Response, PageError> {
    let signed_in = state
        .tollgate
        .redeem_console_setup(&form.token, &form.email, &form.name, &form.password)
        .await?;
    start(&state, &headers, signed_in, "/console/overview").await
}

#[derive(Deserialize)]
pub(crate) struct AcceptForm {
    name: String,
    password: String,
}

pub(crate) async fn accept_invite_page(Path(invite_id): Path<String>) -> Html<String> {
    Html(
        layout::bare(
            "Join an organization",
            html! {
                h1 { "Accept your invitation" }
                form.card method="post" action=(format!("/console/invites/{invite_id}/accept")) {
                    label for="name" { "Your name" }
                    input id="name" name="name" type="text" autocomplete="name" required;
                    (password_fields())
                    button type="submit" { "Join and sign in" }
                }
            },
        )
        .into_string(),
    )
}

pub(crate) async fn accept_invite(
    State(state): State<ConsoleState>,
    Path(invite_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> Result<Response, PageError> {
    let signed_in = state
        .tollgate
        .accept_console_invite(&invite_id, &form.name, &form.password)
        .await?;
    start(&state, &headers, signed_in, "/console/overview").await
}
