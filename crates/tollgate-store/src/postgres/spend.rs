//! PostgreSQL twin of `sqlite/spend.rs`: monthly spend counters, one row per (organization,
//! workspace, month), and users' counters, one row per (organization, workspace, user,
//! month). Rows are added up with checked `NanoUsd` arithmetic in
//! `journal::month_spend_of`, never summed in SQL, and written compare-and-set against the
//! values loaded, read back through `RETURNING`. Scripts that write a counter hold the
//! organization's row lock, so nothing else changes it between load and write.

use std::collections::HashMap;

use sqlx::PgConnection;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{MonthSpend, month_key};

use crate::book::{UserCounterChange, UserCounterKey};
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

    pub(crate) async fn user_month_spend(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<NanoUsd, StoreError> {
        let mut connection = self.pool().acquire().await.map_err(store_error)?;
        let key = (
            org_id.to_owned(),
            workspace_id.to_owned(),
            user_id.to_owned(),
            month_key(now),
        );
        load_user_month_spend(&mut connection, &key).await
    }
}

/// A user's spend in a workspace in a month (zero with no row).
pub(crate) async fn load_user_month_spend(
    connection: &mut PgConnection,
    key: &UserCounterKey,
) -> Result<NanoUsd, StoreError> {
    let mut loaded = load_user_counters(connection, std::slice::from_ref(key)).await?;
    loaded.remove(key).unwrap_or_default().spend()
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
    let mut of_months = load_month_counters(connection, &[(org_id, month)]).await?;
    Ok(of_months.remove(&(org_id.to_owned(), month)).unwrap_or_default())
}

/// `load_counters` for several (organization, month) pairs, in one query; a pair without
/// counters is left out.
pub(crate) async fn load_month_counters(
    connection: &mut PgConnection,
    months: &[(&str, i64)],
) -> Result<HashMap<(String, i64), Vec<(String, SpendCounter)>>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.org_id, c.month, c.workspace_id, c.settled_nanos, c.held_nanos
         FROM UNNEST($1::text[], $2::bigint[]) AS wanted (org_id, month)
         JOIN spend_counters c ON c.org_id = wanted.org_id AND c.month = wanted.month",
    )
    .bind(months.iter().map(|(org_id, _)| *org_id).collect::<Vec<_>>())
    .bind(months.iter().map(|(_, month)| *month).collect::<Vec<_>>())
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    let mut of_months: HashMap<(String, i64), Vec<(String, SpendCounter)>> = HashMap::new();
    for row in &rows {
        let counter = SpendCounter {
            settled: NanoUsd::from_nanos(column(row, "settled_nanos")?),
            held: NanoUsd::from_nanos(column(row, "held_nanos")?),
        };
        of_months
            .entry((column(row, "org_id")?, column(row, "month")?))
            .or_default()
            .push((column(row, "workspace_id")?, counter));
    }
    Ok(of_months)
}

/// A counter to write: (organization, workspace, month), as loaded, as it is to be.
pub(crate) type CounterChange<'a> = ((&'a str, &'a str, i64), Option<SpendCounter>, SpendCounter);

/// Writes counters compare-and-set against what was loaded (None: there was no row, so it
/// is inserted): new ones inserted in one statement, changed ones updated in another, and
/// every one read back.
pub(crate) async fn write_counters(
    connection: &mut PgConnection,
    changes: &[CounterChange<'_>],
) -> Result<(), StoreError> {
    let label = |(org_id, workspace_id, month): (&str, &str, i64)| {
        format!("spend counter of workspace {workspace_id} ({org_id}) for month {month}")
    };
    let mut inserts: Vec<CounterWrite<'_>> = Vec::new();
    let mut updates: Vec<CounterWrite<'_>> = Vec::new();
    for &(key, loaded, current) in changes {
        if current.settled.is_negative() || current.held.is_negative() {
            return Err(invariant(format!(
                "{} would go negative: {current:?}",
                label(key)
            )));
        }
        match loaded {
            None => inserts.push((key, SpendCounter::default(), current)),
            Some(loaded) if loaded != current => updates.push((key, loaded, current)),
            Some(_) => {}
        }
    }
    let mut stored = Vec::new();
    if !inserts.is_empty() {
        let (org_ids, workspace_ids) = counter_keys(&inserts);
        stored.extend(
            sqlx::query(
                "INSERT INTO spend_counters (org_id, workspace_id, month, settled_nanos, held_nanos)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                 RETURNING org_id, workspace_id, month, settled_nanos, held_nanos",
            )
            .bind(&org_ids)
            .bind(&workspace_ids)
            .bind(counter_column(&inserts, |((_, _, month), _, _)| *month))
            .bind(counter_column(&inserts, |(_, _, current)| {
                current.settled.nanos()
            }))
            .bind(counter_column(&inserts, |(_, _, current)| current.held.nanos()))
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?,
        );
    }
    if !updates.is_empty() {
        let (org_ids, workspace_ids) = counter_keys(&updates);
        stored.extend(
            sqlx::query(
                "UPDATE spend_counters c SET settled_nanos = v.settled, held_nanos = v.held
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                             $6::bigint[], $7::bigint[])
                      AS v (org_id, workspace_id, month, settled, held, loaded_settled, loaded_held)
                 WHERE c.org_id = v.org_id AND c.workspace_id = v.workspace_id AND c.month = v.month
                   AND c.settled_nanos = v.loaded_settled AND c.held_nanos = v.loaded_held
                 RETURNING c.org_id, c.workspace_id, c.month, c.settled_nanos, c.held_nanos",
            )
            .bind(&org_ids)
            .bind(&workspace_ids)
            .bind(counter_column(&updates, |((_, _, month), _, _)| *month))
            .bind(counter_column(&updates, |(_, _, current)| {
                current.settled.nanos()
            }))
            .bind(counter_column(&updates, |(_, _, current)| current.held.nanos()))
            .bind(counter_column(&updates, |(_, loaded, _)| loaded.settled.nanos()))
            .bind(counter_column(&updates, |(_, loaded, _)| loaded.held.nanos()))
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?,
        );
    }
    let mut written: HashMap<(String, String, i64), SpendCounter> = HashMap::new();
    for row in &stored {
        let counter = SpendCounter {
            settled: NanoUsd::from_nanos(column(row, "settled_nanos")?),
            held: NanoUsd::from_nanos(column(row, "held_nanos")?),
        };
        written.insert(
            (
                column(row, "org_id")?,
                column(row, "workspace_id")?,
                column(row, "month")?,
            ),
            counter,
        );
    }
    for (key, _, current) in inserts.iter().chain(&updates) {
        let (org_id, workspace_id, month) = *key;
        match written.get(&(org_id.to_owned(), workspace_id.to_owned(), month)) {
            None => {
                return Err(invariant(format!(
                    "{} changed after it was loaded in the same transaction",
                    label(*key)
                )));
            }
            Some(stored) if stored != current => {
                return Err(invariant(format!(
                    "{} reads back as {stored:?} after writing {current:?}",
                    label(*key)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A counter to write: (organization, workspace, month), as loaded (zero: new), to be.
type CounterWrite<'a> = ((&'a str, &'a str, i64), SpendCounter, SpendCounter);

fn counter_keys<'a>(writes: &[CounterWrite<'a>]) -> (Vec<&'a str>, Vec<&'a str>) {
    writes
        .iter()
        .map(|((org_id, workspace_id, _), _, _)| (*org_id, *workspace_id))
        .unzip()
}

fn counter_column(writes: &[CounterWrite<'_>], pick: fn(&CounterWrite<'_>) -> i64) -> Vec<i64> {
    writes.iter().map(pick).collect()
}

/// Users' counters, in one query; a key without a row is left out.
pub(crate) async fn load_user_counters(
    connection: &mut PgConnection,
    keys: &[UserCounterKey],
) -> Result<HashMap<UserCounterKey, SpendCounter>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT c.org_id, c.workspace_id, c.user_id, c.month, c.settled_nanos, c.held_nanos
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
              AS wanted (org_id, workspace_id, user_id, month)
         JOIN user_spend_counters c
             ON c.org_id = wanted.org_id AND c.workspace_id = wanted.workspace_id
            AND c.user_id = wanted.user_id AND c.month = wanted.month",
    )
    .bind(keys.iter().map(|key| key.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| key.1.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| key.2.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| key.3).collect::<Vec<_>>())
    .fetch_all(&mut *connection)
    .await
    .map_err(store_error)?;
    user_counters_from_rows(&rows)
}

fn user_counters_from_rows(
    rows: &[sqlx::postgres::PgRow],
) -> Result<HashMap<UserCounterKey, SpendCounter>, StoreError> {
    let mut counters = HashMap::with_capacity(rows.len());
    for row in rows {
        counters.insert(
            (
                column(row, "org_id")?,
                column(row, "workspace_id")?,
                column(row, "user_id")?,
                column(row, "month")?,
            ),
            SpendCounter {
                settled: NanoUsd::from_nanos(column(row, "settled_nanos")?),
                held: NanoUsd::from_nanos(column(row, "held_nanos")?),
            },
        );
    }
    Ok(counters)
}

/// Writes users' counters as `write_counters` writes the workspaces': new ones inserted in
/// one statement, changed ones updated compare-and-set in another, every one read back.
pub(crate) async fn write_user_counters(
    connection: &mut PgConnection,
    changes: &[UserCounterChange<'_>],
) -> Result<(), StoreError> {
    let label = |(org_id, workspace_id, user_id, month): &UserCounterKey| {
        format!("spend counter of user {user_id} in workspace {workspace_id} ({org_id}) for month {month}")
    };
    let (inserts, updates): (Vec<_>, Vec<_>) = changes
        .iter()
        .filter(|(_, loaded, current)| *loaded != Some(*current))
        .partition(|(_, loaded, _)| loaded.is_none());
    let mut stored = Vec::new();
    if !inserts.is_empty() {
        let (org_ids, workspace_ids, user_ids, months) = user_counter_keys(&inserts);
        stored.extend(
            sqlx::query(
                "INSERT INTO user_spend_counters
                     (org_id, workspace_id, user_id, month, settled_nanos, held_nanos)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                      $6::bigint[])
                 RETURNING org_id, workspace_id, user_id, month, settled_nanos, held_nanos",
            )
            .bind(&org_ids)
            .bind(&workspace_ids)
            .bind(&user_ids)
            .bind(&months)
            .bind(
                inserts
                    .iter()
                    .map(|(_, _, now)| now.settled.nanos())
                    .collect::<Vec<_>>(),
            )
            .bind(
                inserts
                    .iter()
                    .map(|(_, _, now)| now.held.nanos())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?,
        );
    }
    if !updates.is_empty() {
        let (org_ids, workspace_ids, user_ids, months) = user_counter_keys(&updates);
        let loaded = |pick: fn(&SpendCounter) -> i64| -> Vec<i64> {
            updates
                .iter()
                .map(|(_, loaded, _)| loaded.as_ref().map_or(0, pick))
                .collect()
        };
        stored.extend(
            sqlx::query(
                "UPDATE user_spend_counters c SET settled_nanos = v.settled, held_nanos = v.held
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::bigint[], $7::bigint[], $8::bigint[])
                      AS v (org_id, workspace_id, user_id, month, settled, held, loaded_settled,
                            loaded_held)
                 WHERE c.org_id = v.org_id AND c.workspace_id = v.workspace_id
                   AND c.user_id = v.user_id AND c.month = v.month
                   AND c.settled_nanos = v.loaded_settled AND c.held_nanos = v.loaded_held
                 RETURNING c.org_id, c.workspace_id, c.user_id, c.month, c.settled_nanos, c.held_nanos",
            )
            .bind(&org_ids)
            .bind(&workspace_ids)
            .bind(&user_ids)
            .bind(&months)
            .bind(
                updates
                    .iter()
                    .map(|(_, _, now)| now.settled.nanos())
                    .collect::<Vec<_>>(),
            )
            .bind(
                updates
                    .iter()
                    .map(|(_, _, now)| now.held.nanos())
                    .collect::<Vec<_>>(),
            )
            .bind(loaded(|counter| counter.settled.nanos()))
            .bind(loaded(|counter| counter.held.nanos()))
            .fetch_all(&mut *connection)
            .await
            .map_err(store_error)?,
        );
    }
    let written = user_counters_from_rows(&stored)?;
    for (key, _, current) in inserts.iter().chain(&updates) {
        match written.get(*key) {
            None => {
                return Err(invariant(format!(
                    "{} changed after it was loaded in the same transaction",
                    label(key)
                )));
            }
            Some(stored) if stored != current => {
                return Err(invariant(format!(
                    "{} reads back as {stored:?} after writing {current:?}",
                    label(key)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The key columns of users' counters to write, one array a column.
fn user_counter_keys<'d>(
    writes: &[&UserCounterChange<'d>],
) -> (Vec<&'d str>, Vec<&'d str>, Vec<&'d str>, Vec<i64>) {
    (
        writes.iter().map(|(key, _, _)| key.0.as_str()).collect(),
        writes.iter().map(|(key, _, _)| key.1.as_str()).collect(),
        writes.iter().map(|(key, _, _)| key.2.as_str()).collect(),
        writes.iter().map(|(key, _, _)| key.3).collect(),
    )
}
