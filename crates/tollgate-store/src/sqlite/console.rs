//! SQLite twin of the Console's sign-in state (`crate::console`): passwords, sessions,
//! the setup link and sign-in attempt counters. Each write is one statement, or one write
//! transaction where a check guards it (a setup link is redeemed once, an attempt is
//! counted only while its buckets have room).

use tollgate_core::Timestamp;

use crate::admin_model::UserRecord;
use crate::console::ConsoleSession;
use crate::error::StoreError;
use crate::rows::user_from_row;
use crate::sqlite::{SqliteStore, column, count_from_sql, millis, store_error, timestamp_from_sql};

/// The condition under which a setup link may be minted, shown or used: no one can sign
/// in yet and no organization has an admin.
const NO_ADMIN_YET: &str = "NOT EXISTS (SELECT 1 FROM user_credentials)
    AND NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin')";

impl SqliteStore {
    pub(crate) async fn set_password_hash(
        &self,
        user_id: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(store_error)?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_credentials (user_id, password_hash, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,
                 updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(password_hash)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        sqlx::query("DELETE FROM console_setup_link")
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
             WHERE u.email = ? ORDER BY u.added_at, u.id",
        )
        .bind(email)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((user_from_row(row)?, column(row, "password_hash")?)))
        .collect()
    }

    pub(crate) async fn any_password_set(&self) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM user_credentials LIMIT 1")
            .fetch_optional(&self.reader)
            .await
            .map_err(store_error)?;
        Ok(found.is_some())
    }

    pub(crate) async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&session.token_hash)
        .bind(&session.user_id)
        .bind(&session.csrf_token)
        .bind(millis(session.created_at))
        .bind(millis(session.expires_at))
        .execute(&self.writer)
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
             WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.reader)
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
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    pub(crate) async fn delete_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?")
            .bind(millis(now))
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(deleted.rows_affected())
    }

    pub(crate) async fn mint_setup_link(
        &self,
        token_hash: &str,
        org_id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement: the check that no one can sign in and the replacement of the one
        // row are a single write.
        let written = sqlx::query(&format!(
            "INSERT INTO console_setup_link (slot, token_hash, org_id, created_at, expires_at)
             SELECT 1, ?, ?, ?, ? WHERE {NO_ADMIN_YET}
             ON CONFLICT (slot) DO UPDATE SET token_hash = excluded.token_hash,
                 org_id = excluded.org_id, created_at = excluded.created_at,
                 expires_at = excluded.expires_at"
        ))
        .bind(token_hash)
        .bind(org_id)
        .bind(millis(created_at))
        .bind(millis(expires_at))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(written.rows_affected() == 1)
    }

    pub(crate) async fn redeem_setup_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        // One statement: the guard and the deletion are a single compare-and-set.
        sqlx::query_scalar(&format!(
            "DELETE FROM console_setup_link
             WHERE slot = 1 AND token_hash = ? AND expires_at > ? AND {NO_ADMIN_YET}
             RETURNING org_id"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.writer)
        .await
        .map_err(store_error)
    }

    pub(crate) async fn setup_link_valid(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT 1 FROM console_setup_link
             WHERE slot = 1 AND token_hash = ? AND expires_at > ? AND {NO_ADMIN_YET}"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        Ok(found.is_some())
    }

    pub(crate) async fn sign_in_attempts(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<u64, StoreError> {
        let attempts: Option<i64> = sqlx::query_scalar(
            "SELECT failures FROM console_sign_in_failures WHERE bucket = ? AND window_start = ?",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .fetch_optional(&self.reader)
        .await
        .map_err(store_error)?;
        count_from_sql(attempts.unwrap_or(0))
    }

    pub(crate) async fn claim_sign_in_attempt(
        &self,
        buckets: &[(&str, u64)],
        window_start: Timestamp,
    ) -> Result<bool, StoreError> {
        // The write transaction holds SQLite's one write lock, so the counts read back are
        // the latest; a refusal rolls the increments back (the transaction is dropped).
        let mut transaction = self.begin_write().await?;
        for (bucket, most) in buckets {
            let attempts: i64 = sqlx::query_scalar(
                "INSERT INTO console_sign_in_failures (bucket, window_start, failures) VALUES (?, ?, 1)
                 ON CONFLICT (bucket) DO UPDATE SET
                     failures = CASE WHEN window_start = excluded.window_start THEN failures + 1 ELSE 1 END,
                     window_start = excluded.window_start
                 RETURNING failures",
            )
            .bind(bucket)
            .bind(millis(window_start))
            .fetch_one(&mut *transaction)
            .await
            .map_err(store_error)?;
            if count_from_sql(attempts)? > *most {
                return Ok(false);
            }
        }
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }

    pub(crate) async fn return_sign_in_attempt(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE console_sign_in_failures SET failures = failures - 1
             WHERE bucket = ? AND window_start = ? AND failures > 0",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .execute(&self.writer)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn clear_sign_in_attempts(&self, bucket: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sign_in_failures WHERE bucket = ?")
            .bind(bucket)
            .execute(&self.writer)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
