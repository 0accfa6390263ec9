//! The ledger audit: recomputes every account's totals from the journal and the open
//! reservations, every monthly spend counter from the reservations made that month, and
//! every organization's cumulative purchases from its succeeded purchases (less their
//! refunds and lost disputes), every purchase's reversal totals from its reversals, and compares
//! them with the totals the transaction scripts stored; and checks that every ended
//! reservation has its one usage record.
//!
//! This is the one place where money is summed in SQL, because the sums are the check: they
//! are computed a different way from the running totals they are compared with. The audit
//! only reads, from one snapshot, and reports problems in words instead of failing; the
//! words are `journal`'s.
//!
//! Written once for both backends over `Dialect`. They differ in two things: the calendar
//! that puts a reservation in its month (`Dialect::month_of_millis`), and the type of a sum,
//! which PostgreSQL widens to NUMERIC; so every sum (and the one computed count) is cast to
//! BIGINT, which both read as `i64`, as in `journal::REVERSAL_CROSS_CHECKS`.

use sqlx::{Database, Executor, IntoArguments};
use tollgate_core::ledger::Account;

use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::journal::{CROSS_CHECK_DESCRIPTIONS, REVERSAL_CROSS_CHECKS, RecomputedTotals, compare_accounts};
use crate::model::AuditReport;
use crate::rows::{DbRow, account_from_row, column};

/// The ledger audit, the same on every backend.
pub(crate) trait LedgerAudit: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
{
    async fn audit(&self) -> Result<AuditReport, StoreError> {
        let mut transaction = self.begin_read().await?;

        let account_rows = sqlx::query(
            "SELECT id AS account_id, org_id, kind AS account_kind, debits_pending,
                    debits_posted, credits_pending, credits_posted
             FROM accounts ORDER BY id",
        )
        .fetch_all(&mut *transaction)
        .await
        .map_err(Self::store_error)?;
        let mut accounts: Vec<(String, Account)> = Vec::with_capacity(account_rows.len());
        for row in &account_rows {
            accounts.push((column(row, "org_id")?, account_from_row(row)?));
        }

        let mut recomputed = RecomputedTotals::default();
        let sums = [
            (
                &mut recomputed.debits_posted,
                "SELECT debit_account_id AS account_id, CAST(SUM(amount) AS BIGINT) AS total
                 FROM transfers GROUP BY debit_account_id",
            ),
            (
                &mut recomputed.credits_posted,
                "SELECT credit_account_id AS account_id, CAST(SUM(amount) AS BIGINT) AS total
                 FROM transfers GROUP BY credit_account_id",
            ),
            (
                &mut recomputed.debits_pending,
                "SELECT l.account_id AS account_id, CAST(SUM(l.amount) AS BIGINT) AS total
                 FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id
                 WHERE r.state = 'pending'
                 GROUP BY l.account_id",
            ),
            // Every line of a reservation is pending towards its organization's spend account.
            (
                &mut recomputed.credits_pending,
                "SELECT s.id AS account_id, CAST(SUM(l.amount) AS BIGINT) AS total
                 FROM reservation_lines l
                 JOIN reservations r ON r.id = l.reservation_id
                 JOIN accounts s ON s.org_id = r.org_id AND s.kind = 'spend'
                 WHERE r.state = 'pending'
                 GROUP BY s.id",
            ),
        ];
        for (totals, query) in sums {
            let rows = sqlx::query(query)
                .fetch_all(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            totals.reserve(rows.len());
            for row in &rows {
                totals.insert(column(row, "account_id")?, column(row, "total")?);
            }
        }
        let mut problems = compare_accounts(&accounts, &recomputed);

        let cross_checks = cross_checks(&Self::month_of_millis("created_at"));
        let checks = cross_checks
            .iter()
            .map(String::as_str)
            .zip(CROSS_CHECK_DESCRIPTIONS)
            .chain(REVERSAL_CROSS_CHECKS);
        for (query, describe) in checks {
            let rows = sqlx::query(query)
                .fetch_all(&mut *transaction)
                .await
                .map_err(Self::store_error)?;
            for row in &rows {
                let subject: String = column(row, "subject")?;
                let stored: i64 = column(row, "stored")?;
                let recomputed: i64 = column(row, "recomputed")?;
                problems.push(describe(&subject, stored, recomputed));
            }
        }
        transaction.commit().await.map_err(Self::store_error)?;

        Ok(AuditReport {
            accounts_checked: accounts.len(),
            problems,
        })
    }
}

/// The queries of the checks that relate rows of different tables, in the order of
/// `CROSS_CHECK_DESCRIPTIONS`, with `month` the backend's month of `created_at`. Each
/// returns only the rows that disagree, as (subject, stored, recomputed), all BIGINT but
/// the subject.
fn cross_checks(month: &str) -> [String; 12] {
    [
        "SELECT l.id AS subject, l.amount AS stored,
                CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) AS recomputed
         FROM lots l LEFT JOIN transfers t ON t.lot_id = l.id AND t.kind = 'grant'
         GROUP BY l.id, l.amount
         HAVING l.amount <> COALESCE(SUM(t.amount), 0)"
            .to_owned(),
        "SELECT r.id AS subject, r.amount AS stored,
                CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) AS recomputed
         FROM reservations r LEFT JOIN reservation_lines l ON l.reservation_id = r.id
         GROUP BY r.id, r.amount
         HAVING r.amount <> COALESCE(SUM(l.amount), 0)"
            .to_owned(),
        "SELECT r.id AS subject, COALESCE(r.charged, -1) AS stored,
                CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) AS recomputed
         FROM reservations r
         LEFT JOIN transfers t ON t.reservation_id = r.id AND t.kind = 'usage'
         WHERE r.state <> 'pending'
         GROUP BY r.id, r.charged
         HAVING r.charged IS NULL OR r.charged <> COALESCE(SUM(t.amount), 0)"
            .to_owned(),
        "SELECT CAST(t.id AS TEXT) AS subject, t.debit_account_id AS stored,
                t.credit_account_id AS recomputed
         FROM transfers t
         JOIN accounts d ON d.id = t.debit_account_id
         JOIN accounts c ON c.id = t.credit_account_id
         WHERE d.org_id <> t.org_id OR c.org_id <> t.org_id"
            .to_owned(),
        "SELECT rl.reservation_id || ' line ' || rl.line_no AS subject,
                rl.account_id AS stored, l.account_id AS recomputed
         FROM reservation_lines rl JOIN lots l ON l.id = rl.lot_id
         WHERE rl.account_id <> l.account_id"
            .to_owned(),
        // The month is recomputed here with the database's calendar, independently of the
        // core's `month_key` that the transaction scripts use.
        format!(
            "WITH recomputed AS (
                 SELECT org_id, workspace_id, {month} AS month,
                        SUM(CASE WHEN state = 'pending' THEN amount ELSE 0 END) AS held
                 FROM reservations GROUP BY org_id, workspace_id, month
             ),
             counter_keys AS (
                 SELECT org_id, workspace_id, month FROM recomputed
                 UNION SELECT org_id, workspace_id, month FROM spend_counters
             )
             SELECT k.org_id || ' workspace ' || k.workspace_id || ' month ' || k.month AS subject,
                    COALESCE(c.held_nanos, 0) AS stored,
                    CAST(COALESCE(r.held, 0) AS BIGINT) AS recomputed
             FROM counter_keys k
             LEFT JOIN spend_counters c
                 ON c.org_id = k.org_id AND c.workspace_id = k.workspace_id AND c.month = k.month
             LEFT JOIN recomputed r
                 ON r.org_id = k.org_id AND r.workspace_id = k.workspace_id AND r.month = k.month
             WHERE COALESCE(c.held_nanos, 0) <> COALESCE(r.held, 0)"
        ),
        format!(
            "WITH recomputed AS (
                 SELECT org_id, workspace_id, {month} AS month,
                        SUM(CASE WHEN state = 'settled' THEN charged ELSE 0 END) AS settled
                 FROM reservations GROUP BY org_id, workspace_id, month
             ),
             counter_keys AS (
                 SELECT org_id, workspace_id, month FROM recomputed
                 UNION SELECT org_id, workspace_id, month FROM spend_counters
             )
             SELECT k.org_id || ' workspace ' || k.workspace_id || ' month ' || k.month AS subject,
                    COALESCE(c.settled_nanos, 0) AS stored,
                    CAST(COALESCE(r.settled, 0) AS BIGINT) AS recomputed
             FROM counter_keys k
             LEFT JOIN spend_counters c
                 ON c.org_id = k.org_id AND c.workspace_id = k.workspace_id AND c.month = k.month
             LEFT JOIN recomputed r
                 ON r.org_id = k.org_id AND r.workspace_id = k.workspace_id AND r.month = k.month
             WHERE COALESCE(c.settled_nanos, 0) <> COALESCE(r.settled, 0)"
        ),
        "SELECT o.id AS subject, o.cumulative_purchases_nanos AS stored,
                CAST(COALESCE(SUM(p.amount_nanos - p.refunded_nanos - p.disputed_nanos), 0) AS BIGINT)
                    AS recomputed
         FROM organizations o
         LEFT JOIN purchases p ON p.org_id = o.id AND p.status = 'succeeded'
         GROUP BY o.id, o.cumulative_purchases_nanos
         HAVING o.cumulative_purchases_nanos <> COALESCE(SUM(p.amount_nanos - p.refunded_nanos - p.disputed_nanos), 0)"
            .to_owned(),
        // A paid purchase granted exactly its amount as a purchase lot of its organization.
        "SELECT p.id AS subject, p.amount_nanos AS stored, COALESCE(l.amount, 0) AS recomputed
         FROM purchases p
         LEFT JOIN lots l ON l.id = p.lot_id AND l.kind = 'purchase' AND l.org_id = p.org_id
         WHERE p.status = 'succeeded' AND (l.id IS NULL OR l.amount <> p.amount_nanos)"
            .to_owned(),
        // Every charge has its usage record: an ended reservation has exactly one, written in
        // the transaction that ended it; an open one has none.
        "SELECT r.id AS subject, COUNT(u.id) AS stored,
                CAST(CASE WHEN r.state = 'pending' THEN 0 ELSE 1 END AS BIGINT) AS recomputed
         FROM reservations r LEFT JOIN usage_records u ON u.reservation_id = r.id
         GROUP BY r.id, r.state
         HAVING COUNT(u.id) <> CASE WHEN r.state = 'pending' THEN 0 ELSE 1 END"
            .to_owned(),
        // A user's spend counter against their open reservations, and against the charges,
        // of its month (as the workspace's two above).
        format!(
            "WITH recomputed AS (
                 SELECT org_id, workspace_id, user_id, {month} AS month,
                        SUM(CASE WHEN state = 'pending' THEN amount ELSE 0 END) AS held
                 FROM reservations WHERE user_id IS NOT NULL
                 GROUP BY org_id, workspace_id, user_id, month
             ),
             counter_keys AS (
                 SELECT org_id, workspace_id, user_id, month FROM recomputed
                 UNION SELECT org_id, workspace_id, user_id, month FROM user_spend_counters
             )
             SELECT k.org_id || ' workspace ' || k.workspace_id || ' user ' || k.user_id || ' month ' || k.month AS subject,
                    COALESCE(c.held_nanos, 0) AS stored,
                    CAST(COALESCE(r.held, 0) AS BIGINT) AS recomputed
             FROM counter_keys k
             LEFT JOIN user_spend_counters c
                 ON c.org_id = k.org_id AND c.workspace_id = k.workspace_id AND c.user_id = k.user_id
                AND c.month = k.month
             LEFT JOIN recomputed r
                 ON r.org_id = k.org_id AND r.workspace_id = k.workspace_id AND r.user_id = k.user_id
                AND r.month = k.month
             WHERE COALESCE(c.held_nanos, 0) <> COALESCE(r.held, 0)"
        ),
        format!(
            "WITH recomputed AS (
                 SELECT org_id, workspace_id, user_id, {month} AS month,
                        SUM(CASE WHEN state = 'settled' THEN charged ELSE 0 END) AS settled
                 FROM reservations WHERE user_id IS NOT NULL
                 GROUP BY org_id, workspace_id, user_id, month
             ),
             counter_keys AS (
                 SELECT org_id, workspace_id, user_id, month FROM recomputed
                 UNION SELECT org_id, workspace_id, user_id, month FROM user_spend_counters
             )
             SELECT k.org_id || ' workspace ' || k.workspace_id || ' user ' || k.user_id || ' month ' || k.month AS subject,
                    COALESCE(c.settled_nanos, 0) AS stored,
                    CAST(COALESCE(r.settled, 0) AS BIGINT) AS recomputed
             FROM counter_keys k
             LEFT JOIN user_spend_counters c
                 ON c.org_id = k.org_id AND c.workspace_id = k.workspace_id AND c.user_id = k.user_id
                AND c.month = k.month
             LEFT JOIN recomputed r
                 ON r.org_id = k.org_id AND r.workspace_id = k.workspace_id AND r.user_id = k.user_id
                AND r.month = k.month
             WHERE COALESCE(c.settled_nanos, 0) <> COALESCE(r.settled, 0)"
        ),
    ]
}
