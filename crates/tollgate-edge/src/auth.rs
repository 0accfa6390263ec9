//! The key a client presents and what a refused one is told. Both surfaces read a key the
//! same way and name a refusal after the way the key came; only the wrong-kind message
//! (an admin key on the data plane, an API key on the Admin API) is theirs to word. It
//! must not check keys itself: tollgate-service does.

use axum::http::{HeaderMap, StatusCode, header};
use tollgate_service::AuthRefusal;

use crate::error::{ErrorKind, Problem};

/// How the client presented its key, which the refusal names as the API does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// `x-api-key` (or none at all).
    ApiKeyHeader,
    /// `Authorization: Bearer`.
    Bearer,
}

/// The presented key and how it came: `x-api-key`, else the token of
/// `Authorization: Bearer …`, whose scheme name is case-insensitive (RFC 9110).
pub fn presented_key(headers: &HeaderMap) -> Option<(&str, Credential)> {
    if let Some(key) = headers.get("x-api-key").and_then(|value| value.to_str().ok()) {
        return Some((key, Credential::ApiKeyHeader));
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| (token.trim(), Credential::Bearer))
}

/// What a refused key is told: "invalid x-api-key", or for a key sent as
/// `Authorization: Bearer`, "Invalid bearer token"; a valid key of the wrong kind gets the
/// surface's `wrong_kind_message`. A key store that could not be asked is ours to answer
/// for: a 503 that says so when the database is down, else a generic 500, the detail
/// going to the log.
pub fn refused(refusal: AuthRefusal, credential: Credential, wrong_kind_message: &str) -> Problem {
    let invalid = match credential {
        Credential::ApiKeyHeader => "invalid x-api-key",
        Credential::Bearer => "Invalid bearer token",
    };
    let unauthorized =
        |message: String| Problem::new(StatusCode::UNAUTHORIZED, ErrorKind::Authentication, message);
    match refusal {
        AuthRefusal::Missing => unauthorized("x-api-key header is required".to_owned()),
        AuthRefusal::Malformed(reason) => unauthorized(format!("{invalid}: {reason}")),
        AuthRefusal::Unknown => unauthorized(invalid.to_owned()),
        AuthRefusal::NotActive(status) => unauthorized(format!("{invalid}: this key is {status}")),
        AuthRefusal::WrongKind(_) => {
            Problem::new(StatusCode::FORBIDDEN, ErrorKind::Permission, wrong_kind_message)
        }
        AuthRefusal::Store(error) if error.is_unavailable() => Problem::unavailable("database", error),
        AuthRefusal::Store(error) => Problem::internal(error),
    }
}
