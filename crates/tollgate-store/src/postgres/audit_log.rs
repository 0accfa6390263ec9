//! PostgreSQL twin of `sqlite/audit_log.rs`: the audit log of who changed money or limits.
//! Entries are appended in the same transaction as the change they describe.

use sqlx::PgConnection;

use crate::error::StoreError;
pub(crate) use crate::journal::{
    AUTO_RELOAD_DISABLED, CREDIT_EXPIRED, CREDIT_GRANTED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED,
    CREDIT_PURCHASED, SYSTEM_ACTOR, check_entry_scope,
};
use crate::model::AuditEntry;
use crate::postgres::{PgStore, millis, store_error};
use crate::rows::audit_entry_from_row;

impl PgStore {
    pub(crate) async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut connection = self.pool().acquire().await.map_err(store_error)?;
        insert_audit_event(&mut connection, &entry).await
    }

    pub(crate) async fn audit_events(&self, org_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        sqlx::query(
            "SELECT org_id, actor, action, subject, details, reason, created_at
             FROM audit_events WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(self.pool())
        .await
        .map_err(store_error)?
        .iter()
        .map(audit_entry_from_row)
        .collect()
    }
}

pub(crate) async fn insert_audit_event(
    connection: &mut PgConnection,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (org_id, actor, action, subject, details, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
