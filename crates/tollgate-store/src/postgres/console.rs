//! PostgreSQL twin of the Console's sign-in state (`crate::console`): passwords, sessions,
//! setup tokens and failed sign-in counters. Each write is one statement, or one write
//! transaction where a check guards it (a setup token is redeemed once).

use tollgate_core::Timestamp;

use crate::admin_model::UserRecord;
use crate::console::ConsoleSession;
use crate::error::StoreError;
use crate::postgres::{PgStore, column, count_from_sql, millis, store_error, timestamp_from_sql};
use crate::rows::user_from_row;

impl PgStore {
    pub(crate) async fn set_password_hash(
        &self,
        user_id: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,
                 updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }

    pub(crate) async fn sign_in_candidates(
        &self,
        email: &str,
    ) -> Result<Vec<(UserRecord, String)>, StoreError> {
        sqlx::query(
            "SELECT u.id, u.org_id, u.email, u.name, u.role, u.added_at, c.password_hash
             FROM users u JOIN user_credentials c ON c.user_id = u.id
             WHERE u.email = $1 ORDER BY u.added_at, u.id",
        )
        .bind(email)
        .fetch_all(self.pool())
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((user_from_row(row)?, column(row, "password_hash")?)))
        .collect()
    }

    pub(crate) async fn any_password_set(&self) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM user_credentials LIMIT 1")
            .fetch_optional(self.pool())
            .await
            .map_err(store_error)?;
        Ok(found.is_some())
    }

    pub(crate) async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.token_hash)
        .bind(&session.user_id)
        .bind(&session.csrf_token)
        .bind(millis(session.created_at))
        .bind(millis(session.expires_at))
        .execute(self.pool())
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn console_session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(ConsoleSession, UserRecord)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.token_hash, s.csrf_token, s.created_at AS session_created_at, s.expires_at,
                    u.id, u.org_id, u.email, u.name, u.role, u.added_at
             FROM console_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from_row(&row)?;
        let session = ConsoleSession {
            token_hash: column(&row, "token_hash")?,
            user_id: user.id.clone(),
            csrf_token: column(&row, "csrf_token")?,
            created_at: timestamp_from_sql(column(&row, "session_created_at")?)?,
            expires_at: timestamp_from_sql(column(&row, "expires_at")?)?,
        };
        Ok(Some((session, user)))
    }

    pub(crate) async fn delete_console_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(crate) async fn delete_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected())
    }

    pub(crate) async fn insert_setup_token(
        &self,
        token_hash: &str,
        org_id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_setup_tokens (token_hash, org_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(org_id)
        .bind(millis(created_at))
        .bind(millis(expires_at))
        .execute(self.pool())
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn redeem_setup_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        // One statement: the guard and the mark are a single compare-and-set.
        sqlx::query_scalar(
            "UPDATE console_setup_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING org_id",
        )
        .bind(millis(now))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)
    }

    pub(crate) async fn setup_token_valid(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let found = sqlx::query(
            "SELECT 1 FROM console_setup_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    pub(crate) async fn sign_in_failures(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<u64, StoreError> {
        let failures: Option<i64> = sqlx::query_scalar(
            "SELECT failures FROM console_sign_in_failures WHERE bucket = $1 AND window_start = $2",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .fetch_optional(self.pool())
        .await
        .map_err(store_error)?;
        count_from_sql(failures.unwrap_or(0))
    }

    pub(crate) async fn record_sign_in_failure(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<u64, StoreError> {
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO console_sign_in_failures (bucket, window_start, failures) VALUES ($1, $2, 1)
             ON CONFLICT (bucket) DO UPDATE SET
                 failures = CASE WHEN console_sign_in_failures.window_start = excluded.window_start
                     THEN console_sign_in_failures.failures + 1 ELSE 1 END,
                 window_start = excluded.window_start
             RETURNING failures",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .fetch_one(self.pool())
        .await
        .map_err(store_error)?;
        count_from_sql(failures)
    }

    pub(crate) async fn clear_sign_in_failures(&self, bucket: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sign_in_failures WHERE bucket = $1")
            .bind(bucket)
            .execute(self.pool())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
