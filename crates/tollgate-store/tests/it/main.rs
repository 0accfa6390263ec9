//! Integration tests of tollgate-store, one binary (style §5.5).
//!
//! `conformance`, `billing` and `directory` are the storage conformance suite: plain async
//! functions over a `Backend`, which every adapter must pass. This file runs it against SQLite, each
//! test on a fresh database file in its own temporary directory, and against PostgreSQL,
//! each test in a fresh schema of the machine's server (`TOLLGATE_TEST_DATABASE_URL`). `model` drives a seeded random
//! workload against a reference auditor.

mod billing;
mod conformance;
mod console;
mod directory;
mod fixtures;
mod model;
mod postgres_backend;
mod sqlite_backend;

/// One `#[tokio::test]` per conformance function, each against a fresh backend.
macro_rules! conformance_tests {
    ($backend:ty; $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let backend = <$backend>::open().await;
                crate::$module::$name(&backend).await;
                backend.close().await;
            }
        )*
    };
}

/// The same, on a two-thread runtime, for tests whose tasks must really race.
macro_rules! concurrent_conformance_tests {
    ($backend:ty; $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = <$backend>::open().await;
                crate::$module::$name(&backend).await;
                backend.close().await;
            }
        )*
    };
}

/// The whole conformance suite against one backend type.
macro_rules! the_conformance_suite {
    ($backend:ty) => {
        conformance_tests!($backend; conformance;
            organization_creation_makes_accounts_and_default_workspace,
            duplicate_names_are_refused,
            workspaces_are_created_and_found,
            grants_are_validated,
            grant_posts_from_the_source_account_to_a_new_lot,
            reserve_draws_lots_in_drawdown_order,
            insufficient_credit_leaves_everything_unchanged,
            reserve_of_a_non_positive_amount_is_a_bug,
            expired_lots_are_not_reserved_from,
            settle_posts_one_journal_row_per_lot_and_releases_the_rest,
            settle_twice_is_idempotent,
            void_returns_everything,
            cost_above_the_reservation_is_capped,
            settling_an_unknown_reservation_is_a_bug,
            reaper_voids_only_past_deadline_reservations,
            reaper_ends_more_than_one_batch,
            expiry_moves_only_the_unreserved_remainder,
            audit_detects_a_tampered_account,
            keys_are_inserted_found_listed_and_updated,
            usage_records_round_trip,
        );

        conformance_tests!($backend; billing;
            spend_limit_refusal_writes_nothing_and_names_the_scope,
            spend_counters_follow_settle_void_and_reap,
            a_reservation_counts_in_the_month_it_was_made,
            purchase_claims_are_idempotent_by_key,
            a_paid_purchase_grants_its_lot_and_raises_cumulative_purchases,
            an_unpaid_purchase_writes_no_lot,
            a_stale_auto_reload_claim_can_be_taken_over,
            finishing_with_a_notice_disables_auto_reload,
            limits_round_trip_and_are_audited,
            active_programmes_are_unexpired_promotional_lots_with_credit,
            grants_and_expiry_are_audited,
        );

        conformance_tests!($backend; console;
            sessions_are_found_by_hash_until_they_expire,
            a_setup_token_is_redeemed_once,
            sign_in_failures_are_counted_per_window,
        );

        conformance_tests!($backend; directory;
            keys_remember_their_creator,
            capped_workspace_creation_counts_only_active_ones,
            workspaces_are_renamed_and_archived,
            users_and_members_round_trip,
            invites_are_pending_until_accepted_once,
            usage_reports_roll_records_up,
            usage_reports_equal_the_settled_charges,
        );

        concurrent_conformance_tests!($backend; directory;
            racing_capped_creations_respect_the_cap,
            racing_invites_leave_one_pending,
        );

        concurrent_conformance_tests!($backend; conformance;
            concurrent_reservations_never_overspend,
            racing_ends_of_one_reservation_resolve_once,
            a_failing_operation_leaves_its_neighbours_whole,
            an_operation_failing_midway_is_undone_alone,
            refusals_inside_a_batch_keep_their_neighbours_changes,
            settlements_and_reservations_mixed_in_batches_all_land,
            concurrent_settlements_across_lots_are_exact,
        );

        concurrent_conformance_tests!($backend; billing;
            concurrent_reservations_never_exceed_a_workspace_spend_limit,
            only_one_auto_reload_claim_wins,
        );
    };
}

mod sqlite {
    //! The conformance suite on SQLite, plus what only SQLite has (files, reopening).

    use crate::sqlite_backend::SqliteBackend;

    the_conformance_suite!(SqliteBackend);

    #[tokio::test]
    async fn reopening_keeps_the_data_and_skips_applied_migrations() {
        crate::sqlite_backend::reopening_keeps_the_data_and_skips_applied_migrations().await;
    }

    #[tokio::test]
    async fn migrating_an_existing_database_backfills_spend_counters() {
        crate::sqlite_backend::migrating_an_existing_database_backfills_spend_counters().await;
    }
}

mod postgres {
    //! The conformance suite on PostgreSQL.

    use crate::postgres_backend::PostgresBackend;

    the_conformance_suite!(PostgresBackend);
}
