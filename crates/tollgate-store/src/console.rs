//! The façade over the Console's sign-in state: passwords (as argon2id PHC strings, hashed
//! by the caller), sessions and the one setup link (stored as the SHA-256 of their token,
//! hashed by the caller), and the sign-in attempt counters that rate-limit guessing across
//! every replica sharing the database. No money and no password checking here: the store
//! keeps what the service decided.
//!
//! The queries are written once for both backends over `Dialect` (`ConsoleSignIn`). Each
//! write is one statement, or one write transaction (`Dialect::begin_write`) where a check
//! guards it: a password replaces the setup link, and an attempt is counted only while its
//! buckets have room.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::Store;
use crate::admin_model::UserRecord;
use crate::codec::{count_from_sql, millis, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::rows::{DbRow, column, user_from_row};

/// A signed-in browser, found by the hash of its cookie's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Hex SHA-256 of the session token; the token itself is only in the cookie.
    pub token_hash: String,
    pub user_id: String,
    /// Put into every form of the session's pages and checked on every POST.
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Store {
    /// Sets (or replaces) the user's password hash, and deletes the setup link: once someone
    /// can sign in, no link makes another admin. Returns false if no such user.
    pub async fn set_password_hash(
        &self,
        user_id: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.set_password_hash(user_id, password_hash, now))
    }

    /// Users with this email (in any organization) who have a password, each with its
    /// hash, oldest first.
    pub async fn sign_in_candidates(&self, email: &str) -> Result<Vec<(UserRecord, String)>, StoreError> {
        dispatch!(self.sign_in_candidates(email))
    }

    /// Whether any user of any organization has a password yet.
    pub async fn any_password_set(&self) -> Result<bool, StoreError> {
        dispatch!(self.any_password_set())
    }

    pub async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        dispatch!(self.insert_console_session(session))
    }

    /// The unexpired session with this token hash, with its user.
    pub async fn console_session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(ConsoleSession, UserRecord)>, StoreError> {
        dispatch!(self.console_session(token_hash, now))
    }

    /// Ends a session; returns false if there was none.
    pub async fn delete_console_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        dispatch!(self.delete_console_session(token_hash))
    }

    /// Deletes sessions past their expiry; returns how many.
    pub async fn delete_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.delete_expired_console_sessions(now))
    }

    /// Makes this the setup link, replacing any earlier one (one link at a time, across
    /// replicas), unless someone can sign in already (a user has a password) or an
    /// organization has an admin: then nothing is written and the answer is false.
    pub async fn mint_setup_link(
        &self,
        token_hash: &str,
        org_id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.mint_setup_link(token_hash, org_id, created_at, expires_at))
    }

    /// Uses the setup link with this token hash, if it is the current one, unexpired, and
    /// no one can sign in yet nor is an admin: deletes it and returns its organization. At
    /// most one caller gets `Some`, across processes.
    pub async fn redeem_setup_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self.redeem_setup_link(token_hash, now))
    }

    /// Whether `redeem_setup_link` would accept this token hash now.
    pub async fn setup_link_valid(&self, token_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        dispatch!(self.setup_link_valid(token_hash, now))
    }

    /// Sign-in attempts of `bucket` counted in the window that started at `window_start`
    /// (0 when the stored count belongs to an older window).
    pub async fn sign_in_attempts(&self, bucket: &str, window_start: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.sign_in_attempts(bucket, window_start))
    }

    /// Counts one more sign-in attempt in each of `buckets`, each `(bucket, most)`, in the
    /// window that started at `window_start` (an older window's count starts again from
    /// zero), before the password is checked: all or nothing, and refused (false, nothing
    /// counted) when any bucket already holds its `most`. Atomic across processes, so
    /// concurrent attempts cannot all pass one check of the count.
    pub async fn claim_sign_in_attempt(
        &self,
        buckets: &[(&str, u64)],
        window_start: Timestamp,
    ) -> Result<bool, StoreError> {
        dispatch!(self.claim_sign_in_attempt(buckets, window_start))
    }

    /// Takes back one attempt claimed in `bucket` in that window (a sign-in that
    /// succeeded), if it is still counted.
    pub async fn return_sign_in_attempt(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.return_sign_in_attempt(bucket, window_start))
    }

    /// Forgets a bucket's attempts (after a successful sign-in).
    pub async fn clear_sign_in_attempts(&self, bucket: &str) -> Result<(), StoreError> {
        dispatch!(self.clear_sign_in_attempts(bucket))
    }
}

/// The condition under which a setup link may be minted, shown or used: no one can sign
/// in yet and no organization has an admin.
const NO_ADMIN_YET: &str = "NOT EXISTS (SELECT 1 FROM user_credentials)
    AND NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin')";

/// The Console's sign-in queries, the same on every backend.
pub(crate) trait ConsoleSignIn: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn set_password_hash(
        &self,
        user_id: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
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
        .map_err(Self::store_error)?;
        sqlx::query("DELETE FROM console_setup_link")
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    async fn sign_in_candidates(&self, email: &str) -> Result<Vec<(UserRecord, String)>, StoreError> {
        sqlx::query(
            "SELECT u.id, u.org_id, u.email, u.name, u.role, u.added_at, c.password_hash
             FROM users u JOIN user_credentials c ON c.user_id = u.id
             WHERE u.email = $1 ORDER BY u.added_at, u.id",
        )
        .bind(email)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(|row| Ok((user_from_row(row)?, column(row, "password_hash")?)))
        .collect()
    }

    async fn any_password_set(&self) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM user_credentials LIMIT 1")
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(found.is_some())
    }

    async fn insert_console_session(&self, session: &ConsoleSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session.token_hash.as_str())
        .bind(session.user_id.as_str())
        .bind(session.csrf_token.as_str())
        .bind(millis(session.created_at))
        .bind(millis(session.expires_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn console_session(
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
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
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

    async fn delete_console_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted) > 0)
    }

    async fn delete_expired_console_sessions(&self, now: Timestamp) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&deleted))
    }

    async fn mint_setup_link(
        &self,
        token_hash: &str,
        org_id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // One statement: the check that no one can sign in and the replacement of the one
        // row in place are a single write, so two replicas starting at once leave one link,
        // the later writer's.
        let written = sqlx::query(&format!(
            "INSERT INTO console_setup_link (slot, token_hash, org_id, created_at, expires_at)
             SELECT 1, $1, $2, $3, $4 WHERE {NO_ADMIN_YET}
             ON CONFLICT (slot) DO UPDATE SET token_hash = excluded.token_hash,
                 org_id = excluded.org_id, created_at = excluded.created_at,
                 expires_at = excluded.expires_at"
        ))
        .bind(token_hash)
        .bind(org_id)
        .bind(millis(created_at))
        .bind(millis(expires_at))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&written) == 1)
    }

    async fn redeem_setup_link(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        // One statement: the guard and the deletion are a single compare-and-set.
        let row = sqlx::query(&format!(
            "DELETE FROM console_setup_link
             WHERE slot = 1 AND token_hash = $1 AND expires_at > $2 AND {NO_ADMIN_YET}
             RETURNING org_id"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        row.map(|row| column(&row, "org_id")).transpose()
    }

    async fn setup_link_valid(&self, token_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT 1 FROM console_setup_link
             WHERE slot = 1 AND token_hash = $1 AND expires_at > $2 AND {NO_ADMIN_YET}"
        ))
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(found.is_some())
    }

    async fn sign_in_attempts(&self, bucket: &str, window_start: Timestamp) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT failures FROM console_sign_in_failures WHERE bucket = $1 AND window_start = $2",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        let attempts: Option<i64> = row.map(|row| column(&row, "failures")).transpose()?;
        count_from_sql(attempts.unwrap_or(0))
    }

    async fn claim_sign_in_attempt(
        &self,
        buckets: &[(&str, u64)],
        window_start: Timestamp,
    ) -> Result<bool, StoreError> {
        // Each upsert holds its bucket until the commit (PostgreSQL's row lock, SQLite's one
        // write lock), so concurrent claims of one bucket queue and each reads the count the
        // one before it wrote. Buckets are taken in name order, so two claims never wait on
        // each other's rows in a cycle. A refusal rolls the increments back (the
        // transaction is dropped).
        let mut ordered = buckets.to_vec();
        ordered.sort_unstable();
        let mut transaction = self.begin_write().await?;
        for (bucket, most) in ordered {
            let row = sqlx::query(
                "INSERT INTO console_sign_in_failures (bucket, window_start, failures) VALUES ($1, $2, 1)
                 ON CONFLICT (bucket) DO UPDATE SET
                     failures = CASE WHEN console_sign_in_failures.window_start = excluded.window_start
                         THEN console_sign_in_failures.failures + 1 ELSE 1 END,
                     window_start = excluded.window_start
                 RETURNING failures",
            )
            .bind(bucket)
            .bind(millis(window_start))
            .fetch_one(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if count_from_sql(column(&row, "failures")?)? > most {
                return Ok(false);
            }
        }
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(true)
    }

    async fn return_sign_in_attempt(&self, bucket: &str, window_start: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE console_sign_in_failures SET failures = failures - 1
             WHERE bucket = $1 AND window_start = $2 AND failures > 0",
        )
        .bind(bucket)
        .bind(millis(window_start))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn clear_sign_in_attempts(&self, bucket: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sign_in_failures WHERE bucket = $1")
            .bind(bucket)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(())
    }
}
