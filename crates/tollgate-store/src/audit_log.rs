//! The audit log: who changed money or limits, what, and why. Entries are appended in the
//! same transaction as the change they describe, so the log never claims a change that
//! rolled back nor misses one that committed. The table is append-only (triggers refuse
//! updates and deletes).
//!
//! Written once for both backends over `Dialect`; each adapter's `audit_log` module only
//! forwards to it. Not to be confused with `audit`, the ledger's self-check.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use crate::codec::millis;
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::AuditEntry;
use crate::rows::{DbRow, audit_entry_from_row};

/// The audit log's queries, the same on every backend. The bounds name what they ask of the
/// sqlx driver; both drivers have it.
pub(crate) trait AuditLog: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut connection = self.write_pool().acquire().await.map_err(Self::store_error)?;
        Self::insert_audit_event(&mut connection, &entry).await
    }

    async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        sqlx::query(
            "SELECT org_id, actor, action, subject, details, reason, created_at
             FROM audit_events WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(audit_entry_from_row)
        .collect()
    }

    /// Appends `entry` on `connection`, inside the caller's transaction if it has one.
    async fn insert_audit_event(
        connection: &mut <Self::Db as Database>::Connection,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (org_id, actor, action, subject, details, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.org_id.as_str())
        .bind(entry.actor.as_str())
        .bind(entry.action.as_str())
        .bind(entry.subject.as_str())
        .bind(entry.details.as_str())
        .bind(entry.reason.as_deref())
        .bind(millis(entry.at))
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }
}
