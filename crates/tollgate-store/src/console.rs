//! The façade over the Console's sign-in state: passwords (as argon2id PHC strings, hashed
//! by the caller), sessions and one-time setup links (stored as the SHA-256 of their token,
//! hashed by the caller), and the failed sign-in counters that rate-limit guessing across
//! every replica sharing the database. No money and no password checking here: the store
//! keeps what the service decided.

use tollgate_core::Timestamp;

use crate::Store;
use crate::admin_model::UserRecord;
use crate::error::StoreError;

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
    /// Sets (or replaces) the user's password hash. Returns false if no such user.
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

    pub async fn insert_setup_token(
        &self,
        token_hash: &str,
        org_id: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self.insert_setup_token(token_hash, org_id, created_at, expires_at))
    }

    /// Marks an unused, unexpired setup token used and returns its organization; at most one
    /// caller gets `Some` for a token, across processes.
    pub async fn redeem_setup_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        dispatch!(self.redeem_setup_token(token_hash, now))
    }

    /// Whether an unused, unexpired setup token with this hash exists.
    pub async fn setup_token_valid(&self, token_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        dispatch!(self.setup_token_valid(token_hash, now))
    }

    /// Failed sign-ins of `bucket` counted in the window that started at `window_start`
    /// (0 when the stored count belongs to an older window).
    pub async fn sign_in_failures(&self, bucket: &str, window_start: Timestamp) -> Result<u64, StoreError> {
        dispatch!(self.sign_in_failures(bucket, window_start))
    }

    /// Counts one more failure of `bucket` in the window that started at `window_start`
    /// (an older window's count starts again from zero) and returns the new count.
    pub async fn record_sign_in_failure(
        &self,
        bucket: &str,
        window_start: Timestamp,
    ) -> Result<u64, StoreError> {
        dispatch!(self.record_sign_in_failure(bucket, window_start))
    }

    /// Forgets a bucket's failures (after a successful sign-in).
    pub async fn clear_sign_in_failures(&self, bucket: &str) -> Result<(), StoreError> {
        dispatch!(self.clear_sign_in_failures(bucket))
    }
}
