//! Deactivated users: kept in their organization with their history, but signed out and
//! kept out. Deactivating, in one transaction, records the deactivation, archives the
//! person's personal keys (for good: reactivating does not bring them back) and ends every
//! Console session of theirs; reactivating only removes the record. Ending a person's
//! access (single sign-on's re-check) does the same but records nothing. The service decides
//! who may do either; this keeps what it decided.
//!
//! Written once for both backends over `Dialect`.

use std::collections::HashMap;

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::Store;
use crate::codec::{millis, store_decode, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::KeyStatus;
use crate::rows::DbRow;

/// Archives a person's personal keys: `$1` the archived status, `$2` the user.
const ARCHIVE_PERSONAL_KEYS: &str = "UPDATE api_keys SET status = $1 WHERE user_id = $2 AND status <> $1";
/// Ends every Console session of `$1`.
const END_SESSIONS: &str = "DELETE FROM console_sessions WHERE user_id = $1";

/// The deactivation queries, the same on every backend.
pub(crate) trait Deactivations: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn deactivate_user(&self, user_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let recorded = sqlx::query(
            "INSERT INTO user_deactivations (user_id, deactivated_at)
             SELECT id, $2 FROM users WHERE id = $1
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        sqlx::query(ARCHIVE_PERSONAL_KEYS)
            .bind(KeyStatus::Archived.as_str())
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        sqlx::query(END_SESSIONS)
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(Self::rows_affected(&recorded) > 0)
    }

    async fn end_user_access(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut transaction = self.write_pool().begin().await.map_err(Self::store_error)?;
        let archived = sqlx::query(ARCHIVE_PERSONAL_KEYS)
            .bind(KeyStatus::Archived.as_str())
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        sqlx::query(END_SESSIONS)
            .bind(user_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
        transaction.commit().await.map_err(Self::store_error)?;
        Ok(Self::rows_affected(&archived))
    }

    async fn reactivate_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM user_deactivations WHERE user_id = $1")
            .bind(user_id)
            .execute(self.write_pool())
            .await
            .map_err(Self::store_error)?;
        Ok(Self::rows_affected(&removed) > 0)
    }

    async fn user_deactivated_at(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query("SELECT deactivated_at FROM user_deactivations WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?;
        row.map(|row| timestamp_from_sql(row.integer("deactivated_at").map_err(store_decode)?))
            .transpose()
    }

    async fn deactivated_users(&self, org_id: &str) -> Result<HashMap<String, Timestamp>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.user_id, d.deactivated_at FROM user_deactivations d
             JOIN users u ON u.id = d.user_id WHERE u.org_id = $1",
        )
        .bind(org_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.text("user_id").map_err(store_decode)?,
                    timestamp_from_sql(row.integer("deactivated_at").map_err(store_decode)?)?,
                ))
            })
            .collect()
    }
}

/// The façade over deactivations.
impl Store {
    /// Deactivates a user: recorded, their personal keys archived, their sessions ended,
    /// all at once. Whether they were active before.
    pub async fn deactivate_user(&self, user_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        dispatch!(self.deactivate_user(user_id, now))
    }

    /// Ends a person's access without deactivating them (single sign-on found their groups
    /// no longer give any): their personal keys archived and their sessions ended, at once,
    /// as deactivating does; they may sign in again if their groups come back. How many
    /// keys were archived.
    pub async fn end_user_access(&self, user_id: &str) -> Result<u64, StoreError> {
        dispatch!(self.end_user_access(user_id))
    }

    /// Lets a deactivated user sign in again; whether they were deactivated.
    pub async fn reactivate_user(&self, user_id: &str) -> Result<bool, StoreError> {
        dispatch!(self.reactivate_user(user_id))
    }

    /// When the user was deactivated; `None`: active (or unknown).
    pub async fn user_deactivated_at(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        dispatch!(self.user_deactivated_at(user_id))
    }

    /// The organization's deactivated users and when each was deactivated.
    pub async fn deactivated_users(&self, org_id: &str) -> Result<HashMap<String, Timestamp>, StoreError> {
        dispatch!(self.deactivated_users(org_id))
    }
}
