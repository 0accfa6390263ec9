//! The SQLite `Backend` of the conformance suite: a fresh database file in a temporary
//! directory per test, and a second, raw connection to look behind the store's back.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use tempfile::TempDir;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_store::Store;

use crate::conformance::{Backend, JournalRow};
use crate::fixtures::{assert_healthy, at, create_org, grant, usd};

pub(crate) struct SqliteBackend {
    store: Store,
    path: PathBuf,
    _directory: TempDir,
}

impl SqliteBackend {
    pub(crate) async fn open() -> SqliteBackend {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("tollgate.db");
        let store = Store::open_sqlite(&path).await.expect("open the store");
        SqliteBackend {
            store,
            path,
            _directory: directory,
        }
    }

    pub(crate) async fn close(&self) {
        self.store.close().await;
    }

    /// A connection outside the store's pools, as another process would have.
    async fn raw_connection(&self) -> SqliteConnection {
        SqliteConnectOptions::new()
            .filename(&self.path)
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("raw connection")
    }
}

impl Backend for SqliteBackend {
    fn store(&self) -> &Store {
        &self.store
    }

    async fn journal(&self, org_id: &str) -> Vec<JournalRow> {
        let mut connection = self.raw_connection().await;
        let rows = sqlx::query(
            "SELECT t.kind, t.lot_id, t.reservation_id, t.amount,
                    d.kind AS debit_kind, c.kind AS credit_kind
             FROM transfers t
             JOIN accounts d ON d.id = t.debit_account_id
             JOIN accounts c ON c.id = t.credit_account_id
             WHERE t.org_id = ? ORDER BY t.id",
        )
        .bind(org_id)
        .fetch_all(&mut connection)
        .await
        .expect("read the journal");
        connection.close().await.expect("close");
        rows.iter()
            .map(|row| JournalRow {
                kind: row.get("kind"),
                lot_id: row.get("lot_id"),
                reservation_id: row.get("reservation_id"),
                amount: NanoUsd::from_nanos(row.get("amount")),
                debit_kind: row.get("debit_kind"),
                credit_kind: row.get("credit_kind"),
            })
            .collect()
    }

    async fn tamper_with_account(&self, org_id: &str, account_kind: &str, extra_credits_posted: NanoUsd) {
        let mut connection = self.raw_connection().await;
        let result = sqlx::query(
            "UPDATE accounts SET credits_posted = credits_posted + ? WHERE org_id = ? AND kind = ?",
        )
        .bind(extra_credits_posted.nanos())
        .bind(org_id)
        .bind(account_kind)
        .execute(&mut connection)
        .await
        .expect("tamper");
        assert_eq!(result.rows_affected(), 1);
        connection.close().await.expect("close");
    }
}

/// Goal: the database file is the state. Closing and reopening finds everything again, and
/// running the (already applied) migrations a second time is harmless.
pub(crate) async fn reopening_keeps_the_data_and_skips_applied_migrations() {
    let backend = SqliteBackend::open().await;
    let org = create_org(&backend.store, "acme").await;
    grant(
        &backend.store,
        &org,
        "lot_a",
        LotKind::Purchase,
        usd(7),
        at(0),
        None,
    )
    .await;
    backend.store.close().await;

    let reopened = Store::open_sqlite(&backend.path).await.expect("reopen");
    let balance = reopened.balance(&org.org_id, at(1)).await.expect("balance");
    assert_eq!(balance.available, usd(7));
    assert_eq!(reopened.list_organizations().await.expect("list").len(), 1);
    assert_healthy(&reopened).await;
    reopened.close().await;
}
