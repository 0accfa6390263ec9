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
use crate::fixtures::{TestOrg, assert_healthy, at, create_org, grant, settlement, usd};

pub(crate) struct SqliteBackend {
    store: Store,
    path: PathBuf,
    _directory: TempDir,
}

impl SqliteBackend {
    pub(crate) async fn open() -> SqliteBackend {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("tollgate.db");
        let store = Store::open_sqlite(&path, tollgate_store::SqliteOptions::default())
            .await
            .expect("open the store");
        SqliteBackend {
            store,
            path,
            _directory: directory,
        }
    }

    /// Another store on the same file, as a restarted process would open it.
    pub(crate) async fn reopen(&self) -> Store {
        Store::open_sqlite(&self.path, tollgate_store::SqliteOptions::default())
            .await
            .expect("reopen the store")
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

    fn keeps_holds(&self) -> bool {
        true
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

    async fn tamper_with_spend_counter(&self, org_id: &str, workspace_id: &str, extra_held: NanoUsd) {
        let mut connection = self.raw_connection().await;
        let result = sqlx::query(
            "UPDATE spend_counters SET held_nanos = held_nanos + ?
             WHERE org_id = ? AND workspace_id = ? AND month = 202601",
        )
        .bind(extra_held.nanos())
        .bind(org_id)
        .bind(workspace_id)
        .execute(&mut connection)
        .await
        .expect("tamper");
        assert_eq!(result.rows_affected(), 1);
        connection.close().await.expect("close");
    }

    async fn tamper_with_user_spend_counter(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        extra_held: NanoUsd,
    ) {
        let mut connection = self.raw_connection().await;
        let result = sqlx::query(
            "UPDATE user_spend_counters SET held_nanos = held_nanos + ?
             WHERE org_id = ? AND workspace_id = ? AND user_id = ? AND month = 202601",
        )
        .bind(extra_held.nanos())
        .bind(org_id)
        .bind(workspace_id)
        .bind(user_id)
        .execute(&mut connection)
        .await
        .expect("tamper");
        assert_eq!(result.rows_affected(), 1);
        connection.close().await.expect("close");
    }

    async fn tamper_with_cumulative_purchases(&self, org_id: &str, extra: NanoUsd) {
        let mut connection = self.raw_connection().await;
        let result = sqlx::query(
            "UPDATE organizations SET cumulative_purchases_nanos = cumulative_purchases_nanos + ?
             WHERE id = ?",
        )
        .bind(extra.nanos())
        .bind(org_id)
        .execute(&mut connection)
        .await
        .expect("tamper");
        assert_eq!(result.rows_affected(), 1);
        connection.close().await.expect("close");
    }

    async fn refuse_reservation_updates(&self) {
        let mut connection = self.raw_connection().await;
        sqlx::query(
            "CREATE TRIGGER no_reservation_updates BEFORE UPDATE ON reservations
             BEGIN SELECT RAISE(ABORT, 'reservations are not updated'); END",
        )
        .execute(&mut connection)
        .await
        .expect("trigger");
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

    let reopened = Store::open_sqlite(&backend.path, tollgate_store::SqliteOptions::default())
        .await
        .expect("reopen");
    let balance = reopened.balance(&org.org_id, at(1)).await.expect("balance");
    assert_eq!(balance.available, usd(7));
    assert_eq!(reopened.list_organizations().await.expect("list").len(), 1);
    assert_healthy(&reopened).await;
    reopened.close().await;
}

/// Goal: a database the store creates has 1 KiB pages (each commit writes its changed pages
/// whole), and a file made with SQLite's default 4 KiB pages keeps them and its data.
pub(crate) async fn new_databases_have_small_pages_and_old_ones_keep_theirs() {
    async fn page_size(path: &std::path::Path) -> i64 {
        let mut connection = SqliteConnectOptions::new()
            .filename(path)
            .connect()
            .await
            .expect("connect");
        let size = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut connection)
            .await
            .expect("page size");
        connection.close().await.expect("close");
        size
    }
    let backend = SqliteBackend::open().await;
    backend.store.close().await;
    assert_eq!(page_size(&backend.path).await, 1024);

    let directory = TempDir::new().expect("temp dir");
    let path = directory.path().join("old.db");
    let mut connection = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .expect("create");
    sqlx::query("CREATE TABLE before_upgrade (id INTEGER PRIMARY KEY)")
        .execute(&mut connection)
        .await
        .expect("a first table");
    connection.close().await.expect("close");
    assert_eq!(page_size(&path).await, 4096);
    let store = Store::open_sqlite(&path, tollgate_store::SqliteOptions::default())
        .await
        .expect("open and migrate");
    let org = create_org(&store, "acme").await;
    grant(&store, &org, "lot_a", LotKind::Purchase, usd(7), at(0), None).await;
    assert_eq!(
        store
            .balance(&org.org_id, at(1))
            .await
            .expect("balance")
            .available,
        usd(7)
    );
    assert_healthy(&store).await;
    store.close().await;
    assert_eq!(page_size(&path).await, 4096);
}

/// Goal: a database written before the billing migration gets spend counters for its
/// reservations, by the month each was made in, so the audit balances at once and an open
/// reservation from before the upgrade still ends cleanly.
pub(crate) async fn migrating_an_existing_database_backfills_spend_counters() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("tollgate.db");
    let first_only = directory.path().join("migrations");
    std::fs::create_dir(&first_only).expect("migrations directory");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/0001_initial.sql"),
        first_only.join("0001_initial.sql"),
    )
    .expect("copy the first migration");

    let mut connection = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .expect("connect");
    let migrator = sqlx::migrate::Migrator::new(first_only.as_path())
        .await
        .expect("read the first migration");
    migrator.run(&mut connection).await.expect("migrate to 0001");
    // An org with a $10 purchase lot, a reservation settled for $1 of $2 (made on
    // 2025-12-31) and one pending for $3 (made on 2026-01-15), as the old store wrote them.
    let december = at(-60).timestamp_millis();
    let january = at(14 * 24 * 60).timestamp_millis();
    let usd_nanos = |whole: i64| usd(whole).nanos();
    let statements = [
        format!("INSERT INTO organizations (id, name, created_at) VALUES ('org_old', 'old', {december})"),
        "INSERT INTO accounts (id, org_id, kind) VALUES (1, 'org_old', 'starter_grants'),
            (2, 'org_old', 'promotional_grants'), (3, 'org_old', 'purchases'), (4, 'org_old', 'spend'),
            (5, 'org_old', 'expired')"
            .to_owned(),
        format!(
            "INSERT INTO accounts (id, org_id, kind, debits_pending, debits_posted, credits_posted)
             VALUES (6, 'org_old', 'lot', {}, {}, {})",
            usd_nanos(3),
            usd_nanos(1),
            usd_nanos(10)
        ),
        format!("UPDATE accounts SET debits_posted = {} WHERE id = 3", usd_nanos(10)),
        format!(
            "UPDATE accounts SET credits_posted = {}, credits_pending = {} WHERE id = 4",
            usd_nanos(1),
            usd_nanos(3)
        ),
        format!(
            "INSERT INTO workspaces (id, org_id, name, is_default, created_at)
             VALUES ('wrkspc_old', 'org_old', 'Default', 1, {december})"
        ),
        format!(
            "INSERT INTO lots (id, org_id, account_id, kind, amount, granted_at, memo)
             VALUES ('lot_old', 'org_old', 6, 'purchase', {}, {december}, 'old purchase')",
            usd_nanos(10)
        ),
        format!(
            "INSERT INTO reservations (id, org_id, workspace_id, request_id, model, amount, state,
                 created_at, deadline, ended_at, charged)
             VALUES ('rsv_settled', 'org_old', 'wrkspc_old', 'req_1', 'claude-haiku-4-5', {}, 'settled',
                 {december}, {january}, {january}, {})",
            usd_nanos(2),
            usd_nanos(1)
        ),
        format!(
            "INSERT INTO reservations (id, org_id, workspace_id, request_id, model, amount, state,
                 created_at, deadline)
             VALUES ('rsv_pending', 'org_old', 'wrkspc_old', 'req_2', 'claude-haiku-4-5', {}, 'pending',
                 {january}, {january} + 600000)",
            usd_nanos(3)
        ),
        format!(
            "INSERT INTO reservation_lines (reservation_id, line_no, lot_id, account_id, amount)
             VALUES ('rsv_settled', 0, 'lot_old', 6, {}), ('rsv_pending', 0, 'lot_old', 6, {})",
            usd_nanos(2),
            usd_nanos(3)
        ),
        format!(
            "INSERT INTO transfers (org_id, debit_account_id, credit_account_id, amount, kind, lot_id, created_at)
             VALUES ('org_old', 3, 6, {}, 'grant', 'lot_old', {december})",
            usd_nanos(10)
        ),
        format!(
            "INSERT INTO transfers (org_id, debit_account_id, credit_account_id, amount, kind,
                 reservation_id, lot_id, created_at)
             VALUES ('org_old', 6, 4, {}, 'usage', 'rsv_settled', 'lot_old', {january})",
            usd_nanos(1)
        ),
        // Settling wrote the usage record in the same transaction.
        format!(
            "INSERT INTO usage_records (request_id, org_id, workspace_id, model, input_tokens,
                 output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
                 cache_read_input_tokens, cost_nanos, status, latency_ms, started_at, ended_at,
                 reservation_id)
             VALUES ('req_1', 'org_old', 'wrkspc_old', 'claude-haiku-4-5', 10, 20, 0, 0, 0, {},
                 'succeeded', 250, {december}, {january}, 'rsv_settled')",
            usd_nanos(1)
        ),
    ];
    for statement in &statements {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    connection.close().await.expect("close");

    let store = Store::open_sqlite(&path, tollgate_store::SqliteOptions::default())
        .await
        .expect("open and migrate");
    assert_healthy(&store).await;
    let month = async |minute| {
        store
            .month_spend("org_old", "wrkspc_old", at(minute))
            .await
            .expect("month spend")
    };
    assert_eq!(month(-60).await.workspace, usd(1));
    assert_eq!(month(14 * 24 * 60).await.workspace, usd(3));
    let org = TestOrg {
        org_id: "org_old".to_owned(),
        workspace_id: "wrkspc_old".to_owned(),
    };
    store
        .settle(settlement(&org, "rsv_pending", usd(2), at(14 * 24 * 60 + 1)))
        .await
        .expect("settle a reservation from before the upgrade");
    assert_eq!(month(14 * 24 * 60).await.organization, usd(2));
    let billing = store
        .organization_billing("org_old", at(0))
        .await
        .expect("billing")
        .expect("the org");
    assert_eq!(billing.cumulative_purchases, NanoUsd::ZERO);
    assert_healthy(&store).await;
    store.close().await;
}

/// Goal (#21): keeping a Responses API reply does not drop the writer's book. Measured
/// before: each one, committed by the store's pool, changed `data_version`, so the next
/// batch reloaded the organization's lots and counters, and the stored Responses path
/// carried 27 % of the plain one's throughput at 32 connections. A write by any other
/// connection still drops it, as it must.
pub(crate) async fn keeping_a_response_leaves_the_writers_book_in_place() {
    let backend = SqliteBackend::open().await;
    let store = &backend.store;
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    let request = |reservation_id: &'static str| {
        let store = store.clone();
        let org = org.clone();
        async move {
            store
                .reserve(crate::fixtures::new_reservation(
                    &org,
                    reservation_id,
                    usd(1),
                    at(1),
                    at(100),
                ))
                .await
                .expect("reserve");
            store
                .settle(settlement(&org, reservation_id, usd(1), at(2)))
                .await
                .expect("settle");
        }
    };
    request("rsv_0").await;
    let loaded = store.book_reloads();
    for (reservation_id, response_id) in [("rsv_1", "resp_1"), ("rsv_2", "resp_2"), ("rsv_3", "resp_3")] {
        store
            .insert_stored_response(crate::conformance::stored_response(&org, response_id, 2))
            .await
            .expect("keep the response");
        request(reservation_id).await;
    }
    assert_eq!(store.book_reloads(), loaded, "no response dropped the book");

    let mut raw = backend.raw_connection().await;
    sqlx::query("UPDATE organizations SET name = name")
        .execute(&mut raw)
        .await
        .expect("a write beside the store");
    raw.close().await.expect("close");
    request("rsv_4").await;
    assert_eq!(
        store.book_reloads(),
        loaded + 1,
        "another connection's write drops it"
    );
    assert_eq!(store.balance(&org.org_id, at(3)).await.unwrap().spent, usd(5));
    assert_healthy(store).await;
    backend.close().await;
}
