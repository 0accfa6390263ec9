//! The façade over the Console's sign-in state: passwords (as argon2id PHC strings, hashed
//! by the caller), sessions and the one setup link (stored as the SHA-256 of their token,
//! hashed by the caller), and the sign-in attempt counters that rate-limit guessing across
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
