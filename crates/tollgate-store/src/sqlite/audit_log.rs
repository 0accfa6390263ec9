//! The audit log: who changed money or limits, what, and why. Entries are appended in the
//! same transaction as the change they describe, so the log never claims a change that
//! rolled back nor misses one that committed. The table is append-only (triggers refuse
//! updates and deletes).
//!
//! Not to be confused with `audit`, the ledger's self-check.

use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use crate::error::StoreError;
use crate::model::AuditEntry;
use crate::sqlite::{SqliteStore, column, invariant, millis, store_error, timestamp_from_sql};

/// Actions the store writes by itself (the others are named by the caller's entry).
pub(crate) const CREDIT_GRANTED: &str = "credit.granted";
pub(crate) const CREDIT_EXPIRED: &str = "credit.expired";
pub(crate) const CREDIT_PURCHASED: &str = "credit.purchased";
pub(crate) const CREDIT_PURCHASE_DECLINED: &str = "credit.purchase_declined";
pub(crate) const CREDIT_PURCHASE_FAILED: &str = "credit.purchase_failed";
pub(crate) const AUTO_RELOAD_DISABLED: &str = "autoreload.disabled";
/// The actor of what the store does on its own schedule (expiry, auto-reload shut-off).
pub(crate) const SYSTEM_ACTOR: &str = "system";

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

/// A caller's entry must describe a change to the organization it is filed under; filing it
/// under another would show one tenant's change in another's log.
pub(crate) fn check_entry_scope(entry: &AuditEntry, org_id: &str) -> Result<(), StoreError> {
    if entry.org_id != org_id {
        return Err(invariant(format!(
            "an audit entry of organization {} describes a change to organization {org_id}",
            entry.org_id
        )));
    }
    Ok(())
}

fn audit_entry_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        org_id: column(row, "org_id")?,
        actor: column(row, "actor")?,
        action: column(row, "action")?,
        subject: column(row, "subject")?,
        details: column(row, "details")?,
        reason: column(row, "reason")?,
        at: timestamp_from_sql(column(row, "created_at")?)?,
    })
}
