//! PostgreSQL twin of `sqlite/spend.rs`: monthly spend counters, one row per (organization,
//! workspace, month). Rows are added up with checked `NanoUsd` arithmetic in
//! `journal::month_spend_of`, never summed in SQL, and written compare-and-set against the
//! values loaded, read back through `RETURNING`. Scripts that write a counter hold the
//! organization's row lock, so nothing else changes it between load and write.

use sqlx::PgConnection;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{MonthSpend, month_key};

use crate::error::StoreError;
use crate::journal::{SpendCounter, month_spend_of};
use crate::postgres::{PgStore, column, invariant, store_error};

impl PgStore {
    pub(crate) async fn month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        now: Timestamp,
    ) -> Result<MonthSpend, StoreError> {
        let mut connection = self.pool().acquire().await.map_err(store_error)?;
        load_month_spend(&mut connection, org_id, workspace_id, month_key(now)).await
    }
}

/// The organization's spend in `month` (every workspace) and the workspace's.
pub(crate) async fn load_month_spend(
    connection: &mut PgConnection,
    org_id: &str,
    workspace_id: &str,
    month: i64,
) -> Result<MonthSpend, StoreError> {
    let counters = load_counters(connection, org_id, month).await?;
    month_spend_of(org_id, workspace_id, month, counters)
}

/// Every workspace's counter of the organization for `month`, by workspace id.
pub(crate) async fn load_counters(
    connection: &mut PgConnection,
    org_id: &str,
    month: i64,
) -> Result<Vec<(String, SpendCounter)>, StoreError> {
    sqlx::query(
        "SELECT workspace_id, settled_nanos, held_nanos FROM spend_counters
         WHERE org_id = $1 AND month = $2",
    )
    .bind(org_id)
    .bind(month)
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?
    .iter()
    .map(|row| {
        let counter = SpendCounter {
            settled: NanoUsd::from_nanos(column(row, "settled_nanos")?),
            held: NanoUsd::from_nanos(column(row, "held_nanos")?),
        };
        Ok((column(row, "workspace_id")?, counter))
    })
    .collect()
}

/// Writes a workspace's counter compare-and-set against what was loaded (None: there was
/// no row, so it is inserted) and checks what the database stored.
pub(crate) async fn write_counter(
    connection: &mut PgConnection,
    (org_id, workspace_id, month): (&str, &str, i64),
    loaded: Option<SpendCounter>,
    current: SpendCounter,
) -> Result<(), StoreError> {
    let label = || format!("spend counter of workspace {workspace_id} ({org_id}) for month {month}");
    if current.settled.is_negative() || current.held.is_negative() {
        return Err(invariant(format!("{} would go negative: {current:?}", label())));
    }
    if loaded == Some(current) {
        return Ok(());
    }
    let stored = match loaded {
        None => {
            sqlx::query(
                "INSERT INTO spend_counters (org_id, workspace_id, month, settled_nanos, held_nanos)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING settled_nanos, held_nanos",
            )
            .bind(org_id)
            .bind(workspace_id)
            .bind(month)
            .bind(current.settled.nanos())
            .bind(current.held.nanos())
            .fetch_optional(&mut *connection)
            .await
        }
        Some(loaded) => {
            sqlx::query(
                "UPDATE spend_counters SET settled_nanos = $1, held_nanos = $2
             WHERE org_id = $3 AND workspace_id = $4 AND month = $5
               AND settled_nanos = $6 AND held_nanos = $7
             RETURNING settled_nanos, held_nanos",
            )
            .bind(current.settled.nanos())
            .bind(current.held.nanos())
            .bind(org_id)
            .bind(workspace_id)
            .bind(month)
            .bind(loaded.settled.nanos())
            .bind(loaded.held.nanos())
            .fetch_optional(&mut *connection)
            .await
        }
    }
    .map_err(store_error)?;
    let Some(stored) = stored else {
        return Err(invariant(format!(
            "{} changed after it was loaded in the same transaction",
            label()
        )));
    };
    let stored = SpendCounter {
        settled: NanoUsd::from_nanos(column(&stored, "settled_nanos")?),
        held: NanoUsd::from_nanos(column(&stored, "held_nanos")?),
    };
    if stored != current {
        return Err(invariant(format!(
            "{} reads back as {stored:?} after writing {current:?}",
            label()
        )));
    }
    Ok(())
}
