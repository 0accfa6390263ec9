//! The audit log: who changed money or limits, what, and why. Entries are appended in the
//! same transaction as the change they describe, so the log never claims a change that
//! rolled back nor misses one that committed. The table is append-only (triggers refuse
//! updates and deletes).
//!
//! Not to be confused with `audit`, the ledger's self-check.

use sqlx::SqliteConnection;

use crate::error::StoreError;
pub(crate) use crate::journal::{
    AUTO_RELOAD_DISABLED, CREDIT_EXPIRED, CREDIT_GRANTED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED,
    CREDIT_PURCHASED, SYSTEM_ACTOR, check_entry_scope,
};
use crate::model::AuditEntry;
use crate::rows::audit_entry_from_row;
use crate::sqlite::{SqliteStore, millis, store_error};

impl SqliteStore {
    pub(crate) async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut connection = self.writer.acquire().await.map_err(store_error)?;
        insert_audit_event(&mut connection, &entry).await
    }

    pub(crate) async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        sqlx::query(
            "SELECT org_id, actor, action, subject, details, reason, created_at
             FROM audit_events WHERE org_id = ? ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(audit_entry_from_row)
        .collect()
    }
}

pub(crate) async fn insert_audit_event(
    connection: &mut SqliteConnection,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (org_id, actor, action, subject, details, reason, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&entry.org_id)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.details)
    .bind(&entry.reason)
    .bind(millis(entry.at))
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    Ok(())
}
