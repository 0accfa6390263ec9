//! Monthly spend counters: one row per (organization, workspace, month) holding what the
//! month's open reservations hold and what its ended ones charged, and likewise one per
//! (organization, workspace, user, month) for the reservations a user's key made.
//!
//! The rows are loaded and added up here with checked `NanoUsd` arithmetic, never summed in
//! SQL; `check_spend` in tollgate-core decides whether a reservation fits. A reservation
//! counts in the month it was made (`month_key` of its `created_at`), including when it
//! ends after midnight on the 1st, so its settlement moves the counter of the month it was
//! admitted against. Counter rows are written compare-and-set against the values loaded and
//! read back before commit, like accounts.

use sqlx::SqliteConnection;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{MonthSpend, month_key};

use crate::error::StoreError;
use crate::journal::{SpendCounter, month_spend_of};
use crate::sqlite::{SqliteStore, column, store_error};

impl SqliteStore {
    pub(crate) async fn month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        now: Timestamp,
    ) -> Result<MonthSpend, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(store_error)?;
        load_month_spend(&mut connection, org_id, workspace_id, month_key(now)).await
    }

    pub(crate) async fn user_month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(store_error)?;
        let row = sqlx::query(
            "SELECT settled_nanos, held_nanos FROM user_spend_counters
             WHERE org_id = ? AND workspace_id = ? AND user_id = ? AND month = ?",
        )
        .bind(org_id)
        .bind(workspace_id)
        .bind(user_id)
        .bind(month_key(now))
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
        let counter = match row {
            Some(row) => SpendCounter {
                settled: NanoUsd::from_nanos(column(&row, "settled_nanos")?),
                held: NanoUsd::from_nanos(column(&row, "held_nanos")?),
            },
            None => SpendCounter::default(),
        };
        counter.spend()
    }
}

/// The organization's spend in `month` (every workspace) and the workspace's, from one
/// read of the month's counter rows.
pub(crate) async fn load_month_spend(
    connection: &mut SqliteConnection,
    org_id: &str,
    workspace_id: &str,
    month: i64,
) -> Result<MonthSpend, StoreError> {
    let rows = sqlx::query(
        "SELECT workspace_id, settled_nanos, held_nanos FROM spend_counters
         WHERE org_id = ? AND month = ?",
    )
    .bind(org_id)
    .bind(month)
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    let counters = rows
        .iter()
        .map(|row| {
            let counter = SpendCounter {
                settled: NanoUsd::from_nanos(column(row, "settled_nanos")?),
                held: NanoUsd::from_nanos(column(row, "held_nanos")?),
            };
            Ok((column(row, "workspace_id")?, counter))
        })
        .collect::<Result<Vec<(String, SpendCounter)>, StoreError>>()?;
    month_spend_of(org_id, workspace_id, month, counters)
}
