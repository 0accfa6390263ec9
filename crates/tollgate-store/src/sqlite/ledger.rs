//! SQLite's side of the ledger (`crate::ledger`, written once for both backends): how its
//! scripts store changed accounts and journal rows, a statement per row, and the reserve
//! and settle that go to the hot path's writer (`writer.rs`). The doors the purchases'
//! scripts go through (`grant_in`, `load_lot_in`, `reverse_lot_in`) forward to the shared
//! scripts.

use sqlx::SqliteConnection;
use tollgate_core::ledger::{Account, AccountId};

use crate::batching::ReservationCommit;
use crate::error::{StoreError, TxError};
use crate::journal::{AccountSet, JournalEntry, check_read_back};
use crate::ledger::Ledger;
use crate::model::{NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement};
use crate::rows::{ACCOUNT_SELECT, account_from_row};
use crate::rules::check_amount_positive;
use crate::sqlite::{SqliteStore, invariant, millis, store_error};

impl SqliteStore {
    pub(crate) async fn reserve(
        &self,
        reservation: NewReservation,
    ) -> Result<(Reservation, ReservationCommit), TxError<ReserveRejection>> {
        check_amount_positive("reservation", &reservation.reservation_id, reservation.amount)?;
        self.hot.reserve(reservation).await
    }

    pub(crate) async fn settle(&self, settlement: Settlement) -> Result<SettleOutcome, StoreError> {
        self.hot.settle(settlement).await
    }
}

impl Ledger for SqliteStore {
    /// One compare-and-set `UPDATE` per changed account, then a read-back of each. The write
    /// only applies if the row still holds the totals that were loaded; the read-back checks
    /// what was stored.
    async fn write_accounts(
        connection: &mut SqliteConnection,
        accounts: &AccountSet,
    ) -> Result<(), StoreError> {
        let changed = accounts.changed()?;
        for (loaded, current) in &changed {
            let id = current.id;
            let updated = sqlx::query(
                "UPDATE accounts
                     SET debits_pending = ?, debits_posted = ?, credits_pending = ?, credits_posted = ?
                     WHERE id = ? AND debits_pending = ? AND debits_posted = ?
                       AND credits_pending = ? AND credits_posted = ?",
            )
            .bind(current.debits_pending.nanos())
            .bind(current.debits_posted.nanos())
            .bind(current.credits_pending.nanos())
            .bind(current.credits_posted.nanos())
            .bind(id.0)
            .bind(loaded.debits_pending.nanos())
            .bind(loaded.debits_posted.nanos())
            .bind(loaded.credits_pending.nanos())
            .bind(loaded.credits_posted.nanos())
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
            if updated.rows_affected() != 1 {
                return Err(invariant(format!(
                    "account {} changed after it was loaded in the same transaction",
                    id.0
                )));
            }
        }
        for (_, current) in &changed {
            let stored = load_account(&mut *connection, current.id).await?;
            check_read_back(&stored, current)?;
        }
        Ok(())
    }

    /// One `INSERT` per transfer, in order.
    async fn append_journal(
        connection: &mut SqliteConnection,
        entries: &[JournalEntry<'_>],
    ) -> Result<(), StoreError> {
        for entry in entries {
            sqlx::query(
                "INSERT INTO transfers
                    (org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id,
                     created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(entry.org_id)
            .bind(entry.debit.0)
            .bind(entry.credit.0)
            .bind(entry.amount.nanos())
            .bind(entry.kind.as_str())
            .bind(entry.reservation_id)
            .bind(entry.lot_id)
            .bind(millis(entry.created_at))
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
        }
        Ok(())
    }
}

async fn load_account(connection: &mut SqliteConnection, id: AccountId) -> Result<Account, StoreError> {
    let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
    match row {
        Some(row) => account_from_row(&row),
        None => Err(invariant(format!("account {} does not exist", id.0))),
    }
}
