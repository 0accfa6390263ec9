//! Extractors that turn every bad input into the Admin API's envelope: the admin key
//! (`x-api-key` or `Authorization: Bearer`, read by tollgate-edge as the gateway reads it),
//! JSON bodies, and query strings with repeated (`group_by[]=…`) parameters.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tollgate_core::money::NanoUsd;
use tollgate_edge::Credential;
use tollgate_service::OrgAdmin;

use crate::AdminState;
use crate::error::ApiError;

/// The caller's authority over their organization, from a valid admin key.
pub(crate) struct Admin(pub(crate) OrgAdmin);

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Admin, ApiError> {
        // The idempotency middleware authenticated this request already.
        if let Some(admin) = parts.extensions.get::<OrgAdmin>() {
            return Ok(Admin(admin.clone()));
        }
        let (key, credential) = match tollgate_edge::presented_key(&parts.headers) {
            Some((key, credential)) => (Some(key), credential),
            None => (None, Credential::ApiKeyHeader),
        };
        let admin = state
            .tollgate
            .authenticate_admin_key(key)
            .await
            .map_err(|refusal| ApiError::auth_refused(refusal, credential))?;
        Ok(Admin(admin))
    }
}

/// A JSON body; a malformed one is a 400 in the envelope.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Body<T>, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        Ok(Body(value))
    }
}

/// The query string as name/value pairs, in order; `name[]` and `name` are the same name.
pub(crate) struct QueryPairs(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<QueryPairs, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|error| ApiError::invalid(format!("the query string is malformed: {error}")))?;
        Ok(QueryPairs(
            pairs
                .into_iter()
                .map(|(name, value)| (name.trim_end_matches("[]").to_owned(), value))
                .collect(),
        ))
    }
}

impl QueryPairs {
    /// The one value of `name`; given twice is an error.
    pub(crate) fn one<'a>(&'a self, name: &str) -> Result<Option<&'a str>, ApiError> {
        let mut values = self.all(name).into_iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::invalid(format!("{name}: give it once")));
        }
        Ok(first)
    }

    /// Every value of `name` (`name=a&name=b` or `name[]=a&name[]=b`).
    pub(crate) fn all<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<bool, ApiError> {
        match self.one(name)? {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::invalid(format!(
                "{name}: '{other}' is not a boolean (true or false)"
            ))),
        }
    }

    pub(crate) fn timestamp(&self, name: &str) -> Result<Option<tollgate_core::Timestamp>, ApiError> {
        self.one(name)?
            .map(|text| parse_timestamp(name, text))
            .transpose()
    }
}

pub(crate) fn parse_timestamp(name: &str, text: &str) -> Result<tollgate_core::Timestamp, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&chrono::Utc))
        .map_err(|_| ApiError::invalid(format!("{name}: '{text}' is not an RFC 3339 timestamp")))
}

/// An amount in US cents as a decimal string ("500" is $5.00; at most 7 decimals, a
/// nano-dollar), as the Admin API writes amounts.
pub(crate) fn parse_cents(name: &str, text: &str) -> Result<NanoUsd, ApiError> {
    let invalid = || {
        ApiError::invalid(format!(
            "{name}: '{text}' is not an amount in cents, e.g. \"500\" or \"12.5\""
        ))
    };
    if text.trim().starts_with('-') || text.trim().starts_with('$') {
        return Err(invalid());
    }
    // Read as if dollars, then scale: cents have two more decimal places than dollars.
    let as_dollars = NanoUsd::parse_usd(text).map_err(|_| invalid())?;
    if as_dollars.nanos() % 100 != 0 {
        return Err(ApiError::invalid(format!(
            "{name}: '{text}' is finer than a nano-dollar (0.0000001 cents)"
        )));
    }
    Ok(NanoUsd::from_nanos(as_dollars.nanos() / 100))
}

pub(crate) fn instant(at: tollgate_core::Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
