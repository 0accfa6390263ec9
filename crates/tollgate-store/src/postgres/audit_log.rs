//! PostgreSQL twin of `sqlite/audit_log.rs`: the adapter's door to the audit log
//! (`crate::audit_log`, written once for both backends).

use sqlx::PgConnection;

use crate::audit_log::AuditLog;
use crate::error::StoreError;
pub(crate) use crate::journal::{
    AUTO_RELOAD_DISABLED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED, CREDIT_PURCHASED, SYSTEM_ACTOR,
    check_entry_scope,
};
use crate::model::AuditEntry;
use crate::postgres::PgStore;

pub(crate) async fn insert_audit_event(
    connection: &mut PgConnection,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    PgStore::insert_audit_event(connection, entry).await
}
