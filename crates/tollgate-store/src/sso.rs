//! Single sign-on's state in the store: the sign-in attempts sent to the identity provider
//! (found by the SHA-256 of their `state`, hashed by the caller, and taken once). Ending
//! the access of a person single sign-on refused is `Store::end_user_access`
//! (`deactivations.rs`). The service decides; this keeps what it decided.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::Store;
use crate::codec::{millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A sign-in attempt on its way through the identity provider.
#[derive(Clone, PartialEq, Eq)]
pub struct SsoAttempt {
    /// Hex SHA-256 of the `state` sent to the provider.
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where the provider sends the browser back; the token request repeats it.
    pub redirect_uri: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The secrets stay out of debug output.
impl std::fmt::Debug for SsoAttempt {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SsoAttempt")
            .field("redirect_uri", &self.redirect_uri)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn attempt_from_row(row: &impl DbRow) -> Result<SsoAttempt, StoreError> {
    Ok(SsoAttempt {
        state_hash: row.text("state_hash").map_err(store_decode)?,
        nonce: row.text("nonce").map_err(store_decode)?,
        pkce_verifier: row.text("pkce_verifier").map_err(store_decode)?,
        redirect_uri: row.text("redirect_uri").map_err(store_decode)?,
        created_at: timestamp_from_sql(row.integer("created_at").map_err(store_decode)?)?,
        expires_at: timestamp_from_sql(row.integer("expires_at").map_err(store_decode)?)?,
    })
}

/// The single sign-on queries, the same on every backend.
pub(crate) trait SsoAttempts: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_sso_attempt(&self, attempt: &SsoAttempt) -> Result<(), StoreError> {
        // Attempts nobody finished are cleared out as new ones begin.
        sqlx::query("DELETE FROM console_sso_attempts WHERE expires_at <= $1")
            .bind(millis(attempt.created_at))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        sqlx::query(
            "INSERT INTO console_sso_attempts (state_hash, nonce, pkce_verifier, redirect_uri, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(attempt.state_hash.as_str())
        .bind(attempt.nonce.as_str())
        .bind(attempt.pkce_verifier.as_str())
        .bind(attempt.redirect_uri.as_str())
        .bind(millis(attempt.created_at))
        .bind(millis(attempt.expires_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn take_sso_attempt(
        &self,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<Option<SsoAttempt>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM console_sso_attempts WHERE state_hash = $1
             RETURNING state_hash, nonce, pkce_verifier, redirect_uri, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        let attempt = row.as_ref().map(attempt_from_row).transpose()?;
        Ok(attempt.filter(|attempt| attempt.expires_at > now))
    }
}

/// The façade over single sign-on's state.
impl Store {
    /// Keeps a sign-in attempt until it is taken or expires.
    pub async fn insert_sso_attempt(&self, attempt: &SsoAttempt) -> Result<(), StoreError> {
        dispatch!(self.insert_sso_attempt(attempt))
    }

    /// Takes the attempt with this state hash: deletes it and returns it if it had not
    /// expired. At most one caller gets `Some`, across processes.
    pub async fn take_sso_attempt(
        &self,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<Option<SsoAttempt>, StoreError> {
        dispatch!(self.take_sso_attempt(state_hash, now))
    }
}
