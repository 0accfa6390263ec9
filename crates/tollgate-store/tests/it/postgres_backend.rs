//! The PostgreSQL `Backend` of the conformance suite: the machine's server (see
//! `TOLLGATE_TEST_DATABASE_URL`), a fresh schema per test, dropped at close (or, when a
//! test fails before closing, when the backend is dropped), and a raw connection into the
//! same schema to look behind the store's back.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tollgate_core::money::NanoUsd;
use tollgate_store::{PostgresOptions, Store};

use crate::conformance::{Backend, JournalRow};

/// The server the PostgreSQL tests use unless `TOLLGATE_TEST_DATABASE_URL` names another.
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub(crate) fn test_database_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// A schema name no other test (or test process) uses.
pub(crate) fn unique_schema() -> String {
    format!("store_test_{}_{:016x}", std::process::id(), rand::random::<u64>())
}

pub(crate) struct PostgresBackend {
    store: Store,
    schema: String,
    closed: AtomicBool,
}

impl PostgresBackend {
    pub(crate) async fn open() -> PostgresBackend {
        let schema = unique_schema();
        let store = Store::open_postgres(&PostgresOptions {
            url: test_database_url(),
            max_connections: 8,
            schema: Some(schema.clone()),
            asynchronous_commit: true,
        })
        .await
        .expect("open the store (is PostgreSQL running? see README)");
        PostgresBackend {
            store,
            schema,
            closed: AtomicBool::new(false),
        }
    }

    /// Another store on the same schema, as a second replica would open it.
    pub(crate) async fn second_replica(&self) -> Store {
        Store::open_postgres(&PostgresOptions {
            url: test_database_url(),
            max_connections: 8,
            schema: Some(self.schema.clone()),
            asynchronous_commit: true,
        })
        .await
        .expect("open a second store on the schema")
    }

    pub(crate) async fn close(&self) {
        self.store.close().await;
        let mut connection = self.raw_connection().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut connection)
            .await
            .expect("drop the test schema");
        connection.close().await.expect("close");
        self.closed.store(true, Ordering::SeqCst);
    }

    /// A connection outside the store's pool, into the test's schema.
    async fn raw_connection(&self) -> PgConnection {
        let options: PgConnectOptions = test_database_url().parse().expect("database URL");
        options
            .options([("search_path", self.schema.as_str())])
            .connect()
            .await
            .expect("raw connection")
    }

    async fn execute_one(&self, sql: &str, amount: NanoUsd, keys: &[&str]) {
        let mut connection = self.raw_connection().await;
        let mut query = sqlx::query(sql).bind(amount.nanos());
        for key in keys {
            query = query.bind(*key);
        }
        let result = query.execute(&mut connection).await.expect("tamper");
        assert_eq!(result.rows_affected(), 1);
        connection.close().await.expect("close");
    }
}

impl Drop for PostgresBackend {
    /// A test that failed before `close` still leaves no schema behind. Drop runs inside the
    /// test's runtime, which cannot block on a future, so the schema is dropped from a
    /// thread with its own; a lock another connection still holds makes it give up after
    /// two seconds rather than hang.
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&test_database_url()).await?;
                sqlx::query("SET lock_timeout = '2s'")
                    .execute(&mut connection)
                    .await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut connection)
                    .await?;
                connection.close().await?;
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
    }
}

impl Backend for PostgresBackend {
    fn store(&self) -> &Store {
        &self.store
    }

    fn keeps_holds(&self) -> bool {
        false
    }

    async fn journal(&self, org_id: &str) -> Vec<JournalRow> {
        let mut connection = self.raw_connection().await;
        let rows = sqlx::query(
            "SELECT t.kind, t.lot_id, t.reservation_id, t.amount,
                    d.kind AS debit_kind, c.kind AS credit_kind
             FROM transfers t
             JOIN accounts d ON d.id = t.debit_account_id
             JOIN accounts c ON c.id = t.credit_account_id
             WHERE t.org_id = $1 ORDER BY t.id",
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
        self.execute_one(
            "UPDATE accounts SET credits_posted = credits_posted + $1 WHERE org_id = $2 AND kind = $3",
            extra_credits_posted,
            &[org_id, account_kind],
        )
        .await;
    }

    async fn tamper_with_spend_counter(&self, org_id: &str, workspace_id: &str, extra_held: NanoUsd) {
        self.execute_one(
            "UPDATE spend_counters SET held_nanos = held_nanos + $1
             WHERE org_id = $2 AND workspace_id = $3 AND month = 202601",
            extra_held,
            &[org_id, workspace_id],
        )
        .await;
    }

    async fn tamper_with_user_spend_counter(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        extra_held: NanoUsd,
    ) {
        self.execute_one(
            "UPDATE user_spend_counters SET held_nanos = held_nanos + $1
             WHERE org_id = $2 AND workspace_id = $3 AND user_id = $4 AND month = 202601",
            extra_held,
            &[org_id, workspace_id, user_id],
        )
        .await;
    }

    async fn tamper_with_cumulative_purchases(&self, org_id: &str, extra: NanoUsd) {
        self.execute_one(
            "UPDATE organizations SET cumulative_purchases_nanos = cumulative_purchases_nanos + $1
             WHERE id = $2",
            extra,
            &[org_id],
        )
        .await;
    }

    async fn refuse_reservation_updates(&self) {
        let mut connection = self.raw_connection().await;
        sqlx::raw_sql(
            "CREATE FUNCTION no_reservation_updates() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'reservations are not updated'; END $$;
             CREATE TRIGGER no_reservation_updates BEFORE UPDATE ON reservations
             FOR EACH ROW EXECUTE FUNCTION no_reservation_updates()",
        )
        .execute(&mut connection)
        .await
        .expect("trigger");
        connection.close().await.expect("close");
    }
}
