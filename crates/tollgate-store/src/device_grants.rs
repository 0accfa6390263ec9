//! Claude Code's sign-in to the gateway (the OAuth device authorization grant): grants found
//! by the SHA-256 of their device code or by their user code, approved once by a signed-in
//! person for one workspace and issued once; the refresh tokens that follow, each taken
//! once; and the personal key a sign-in issued, given a new secret and expiry at each refresh.
//! The service decides; this keeps what it decided.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::Store;
use crate::codec::{millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::DbRow;

/// A device grant as the client polls it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevicePoll {
    /// Unknown, issued already, or expired.
    Expired,
    /// Not approved yet; `too_soon` when the last poll was within the interval.
    Pending { too_soon: bool },
    /// Approved, and now issued to this poll (no other poll gets it).
    Issued { user_id: String, workspace_id: String },
}

/// The device grant queries, the same on every backend.
pub(crate) trait DeviceGrants: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn insert_device_grant(
        &self,
        device_code_hash: &str,
        user_code: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Grants nobody finished are cleared out as new ones begin.
        sqlx::query("DELETE FROM device_grants WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        let inserted = sqlx::query(
            "INSERT INTO device_grants (device_code_hash, user_code, state, created_at, expires_at)
             VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(device_code_hash)
        .bind(user_code)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&inserted) > 0)
    }

    async fn device_grant_pending(&self, user_code: &str, now: Timestamp) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS found FROM device_grants
             WHERE user_code = $1 AND state = 'pending' AND expires_at > $2",
        )
        .bind(user_code)
        .bind(millis(now))
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(row.is_some())
    }

    async fn approve_device_grant(
        &self,
        user_code: &str,
        user_id: &str,
        workspace_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let approved = sqlx::query(
            "UPDATE device_grants SET state = 'approved', user_id = $2, workspace_id = $3
             WHERE user_code = $1 AND state = 'pending' AND expires_at > $4",
        )
        .bind(user_code)
        .bind(user_id)
        .bind(workspace_id)
        .bind(millis(now))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&approved) > 0)
    }

    async fn poll_device_grant(
        &self,
        device_code_hash: &str,
        now: Timestamp,
        interval_millis: i64,
    ) -> Result<DevicePoll, StoreError> {
        let issued = sqlx::query(
            "UPDATE device_grants SET state = 'issued'
             WHERE device_code_hash = $1 AND state = 'approved' AND expires_at > $2
             RETURNING user_id, workspace_id",
        )
        .bind(device_code_hash)
        .bind(millis(now))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        if let Some(row) = issued {
            return Ok(DevicePoll::Issued {
                user_id: row.text("user_id").map_err(store_decode)?,
                workspace_id: row.text("workspace_id").map_err(store_decode)?,
            });
        }
        // A poll spaced by the interval is recorded; one sooner leaves the record as it was.
        let polled = sqlx::query(
            "UPDATE device_grants SET last_polled_at = $2
             WHERE device_code_hash = $1 AND state = 'pending' AND expires_at > $2
               AND (last_polled_at IS NULL OR last_polled_at <= $3)",
        )
        .bind(device_code_hash)
        .bind(millis(now))
        .bind(millis(now) - interval_millis)
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&polled) > 0 {
            return Ok(DevicePoll::Pending { too_soon: false });
        }
        let pending = sqlx::query(
            "SELECT 1 AS found FROM device_grants
             WHERE device_code_hash = $1 AND state = 'pending' AND expires_at > $2",
        )
        .bind(device_code_hash)
        .bind(millis(now))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(match pending {
            Some(_) => DevicePoll::Pending { too_soon: true },
            None => DevicePoll::Expired,
        })
    }

    async fn insert_device_refresh_token(
        &self,
        token_hash: &str,
        key_id: &str,
        user_id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM device_refresh_tokens WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        sqlx::query(
            "INSERT INTO device_refresh_tokens (token_hash, key_id, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(key_id)
        .bind(user_id)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn take_device_refresh_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM device_refresh_tokens WHERE token_hash = $1 RETURNING key_id, user_id, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        let Some(row) = row else { return Ok(None) };
        if timestamp_from_sql(row.integer("expires_at").map_err(store_decode)?)? <= now {
            return Ok(None);
        }
        Ok(Some((
            row.text("key_id").map_err(store_decode)?,
            row.text("user_id").map_err(store_decode)?,
        )))
    }

    async fn rotate_key_secret(
        &self,
        key_id: &str,
        secret_hash: &str,
        hint: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let rotated = sqlx::query(
            "UPDATE api_keys SET secret_hash = $1, hint = $2, expires_at = $3 WHERE id = $4 AND status = 'active'",
        )
        .bind(secret_hash)
        .bind(hint)
        .bind(millis(expires_at))
        .bind(key_id)
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&rotated) > 0)
    }
}

/// The façade over device grants.
impl Store {
    /// Keeps a new grant; `false` when its user code is taken (pick another).
    pub async fn insert_device_grant(
        &self,
        device_code_hash: &str,
        user_code: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.insert_device_grant(device_code_hash, user_code, now, expires_at))
    }

    /// Whether a user code names a pending, unexpired grant.
    pub async fn device_grant_pending(&self, user_code: &str, now: Timestamp) -> Result<bool, StoreError> {
        dispatch!(self.device_grant_pending(user_code, now))
    }

    /// Approves a pending grant for a user and workspace; `false` if it was not pending.
    pub async fn approve_device_grant(
        &self,
        user_code: &str,
        user_id: &str,
        workspace_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.approve_device_grant(user_code, user_id, workspace_id, now))
    }

    /// One poll of a grant: issued to this poll if approved (once, across processes).
    pub async fn poll_device_grant(
        &self,
        device_code_hash: &str,
        now: Timestamp,
        interval_millis: i64,
    ) -> Result<DevicePoll, StoreError> {
        dispatch!(self.poll_device_grant(device_code_hash, now, interval_millis))
    }

    pub async fn insert_device_refresh_token(
        &self,
        token_hash: &str,
        key_id: &str,
        user_id: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.insert_device_refresh_token(token_hash, key_id, user_id, now, expires_at))
    }

    /// Takes a refresh token (deleted, whatever happens next): its key and user, if it had
    /// not expired.
    pub async fn take_device_refresh_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(String, String)>, StoreError> {
        dispatch!(self.take_device_refresh_token(token_hash, now))
    }

    /// Gives an active key a new secret and expiry (the old secret stops at once); `false`
    /// if the key is not active.
    pub async fn rotate_key_secret(
        &self,
        key_id: &str,
        secret_hash: &str,
        hint: &str,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.rotate_key_secret(key_id, secret_hash, hint, expires_at))
    }
}
