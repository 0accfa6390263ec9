//! Single sign-on's refresh tokens: the one a person's last sign-in got from the identity
//! provider, kept so the service can ask the provider again which groups they are in, and
//! when it last asked. The service decides what a re-check means; this keeps the tokens.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::Store;
use crate::codec::{millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A person's refresh token at the identity provider.
#[derive(Clone, PartialEq, Eq)]
pub struct SsoRefreshToken {
    pub user_id: String,
    /// The person's `sub` at the provider.
    pub subject: String,
    pub refresh_token: String,
    /// When the provider was last asked (or the person signed in).
    pub checked_at: Timestamp,
}

/// The token stays out of debug output.
impl std::fmt::Debug for SsoRefreshToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SsoRefreshToken")
            .field("user_id", &self.user_id)
            .field("subject", &self.subject)
            .field("checked_at", &self.checked_at)
            .finish_non_exhaustive()
    }
}

fn refresh_token_from_row(row: &impl DbRow) -> Result<SsoRefreshToken, StoreError> {
    Ok(SsoRefreshToken {
        user_id: row.text("user_id").map_err(store_decode)?,
        subject: row.text("subject").map_err(store_decode)?,
        refresh_token: row.text("refresh_token").map_err(store_decode)?,
        checked_at: timestamp_from_sql(row.integer("checked_at").map_err(store_decode)?)?,
    })
}

/// The refresh-token queries, the same on every backend.
pub(crate) trait SsoRefreshTokens: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn keep_sso_refresh_token(&self, token: &SsoRefreshToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sso_refresh_tokens (user_id, subject, refresh_token, checked_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET subject = excluded.subject,
                 refresh_token = excluded.refresh_token, checked_at = excluded.checked_at",
        )
        .bind(token.user_id.as_str())
        .bind(token.subject.as_str())
        .bind(token.refresh_token.as_str())
        .bind(millis(token.checked_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn sso_refresh_tokens_checked_before(
        &self,
        before: Timestamp,
    ) -> Result<Vec<SsoRefreshToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, subject, refresh_token, checked_at FROM sso_refresh_tokens
             WHERE checked_at <= $1 ORDER BY checked_at, user_id",
        )
        .bind(millis(before))
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        rows.iter().map(refresh_token_from_row).collect()
    }

    async fn claim_sso_refresh_check(
        &self,
        token: &SsoRefreshToken,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE sso_refresh_tokens SET checked_at = $1
             WHERE user_id = $2 AND refresh_token = $3 AND checked_at = $4",
        )
        .bind(millis(now))
        .bind(token.user_id.as_str())
        .bind(token.refresh_token.as_str())
        .bind(millis(token.checked_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&claimed) > 0)
    }

    async fn checked_sso_refresh_token(
        &self,
        user_id: &str,
        previous_token: &str,
        next_token: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE sso_refresh_tokens SET refresh_token = $1, checked_at = $2
             WHERE user_id = $3 AND refresh_token = $4",
        )
        .bind(next_token)
        .bind(millis(now))
        .bind(user_id)
        .bind(previous_token)
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&updated) > 0)
    }

    async fn delete_sso_refresh_token(&self, user_id: &str, token: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM sso_refresh_tokens WHERE user_id = $1 AND refresh_token = $2")
            .bind(user_id)
            .bind(token)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted) > 0)
    }
}

/// The façade over single sign-on's refresh tokens.
impl Store {
    /// Keeps the refresh token a person's sign-in got, in place of any earlier one.
    pub async fn keep_sso_refresh_token(&self, token: &SsoRefreshToken) -> Result<(), StoreError> {
        dispatch!(self.keep_sso_refresh_token(token))
    }

    /// The tokens last checked at or before `before`, the longest unchecked first.
    pub async fn sso_refresh_tokens_checked_before(
        &self,
        before: Timestamp,
    ) -> Result<Vec<SsoRefreshToken>, StoreError> {
        dispatch!(self.sso_refresh_tokens_checked_before(before))
    }

    /// Claims the next check of a token as read, marking it checked at `now`: `false` when
    /// another replica claimed it first or a sign-in replaced it, so one check runs at a
    /// time (a provider that rotates refresh tokens refuses the second use of one).
    pub async fn claim_sso_refresh_check(
        &self,
        token: &SsoRefreshToken,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.claim_sso_refresh_check(token, now))
    }

    /// Records a check of a person's `previous_token`, keeping `next_token` (the same, or
    /// the one the provider rotated to); `false` when the token was replaced meanwhile (a
    /// sign-in, or another replica's check), which then wins.
    pub async fn checked_sso_refresh_token(
        &self,
        user_id: &str,
        previous_token: &str,
        next_token: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.checked_sso_refresh_token(user_id, previous_token, next_token, now))
    }

    /// Forgets a person's token, unless a sign-in replaced it meanwhile; whether it did.
    pub async fn delete_sso_refresh_token(&self, user_id: &str, token: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_sso_refresh_token(user_id, token))
    }
}
