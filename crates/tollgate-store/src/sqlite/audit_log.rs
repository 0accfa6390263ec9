//! The SQLite adapter's door to the audit log (`crate::audit_log`, written once for both
//! backends): the façade's methods, `insert_audit_event` for this adapter's transaction
//! scripts, and the action names they file entries under.

use sqlx::SqliteConnection;

use crate::audit_log::AuditLog;
use crate::error::StoreError;
pub(crate) use crate::journal::{
    AUTO_RELOAD_DISABLED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED, CREDIT_PURCHASED, SYSTEM_ACTOR,
    check_entry_scope,
};
use crate::model::AuditEntry;
use crate::sqlite::SqliteStore;

pub(crate) async fn insert_audit_event(
    connection: &mut SqliteConnection,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    SqliteStore::insert_audit_event(connection, entry).await
}
