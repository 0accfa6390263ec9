//! Integration tests of tollgate-store, one binary (style §5.5).
//!
//! `conformance` and `billing` are the storage conformance suite: plain async functions
//! over a `Backend`, which every adapter must pass. This file runs it against SQLite, each
//! test on a fresh database file in its own temporary directory; a PostgreSQL adapter adds
//! its own `Backend` and other invocations of `conformance_tests!`. `model` drives a seeded random
//! workload against a reference auditor.

mod billing;
mod conformance;
mod fixtures;
mod model;
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

mod sqlite {
    //! The conformance suite on SQLite, plus what only SQLite has (files, reopening).

    use crate::sqlite_backend::SqliteBackend;

    conformance_tests!(SqliteBackend; conformance;
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

    conformance_tests!(SqliteBackend; billing;
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

    concurrent_conformance_tests!(SqliteBackend; conformance;
        concurrent_reservations_never_overspend,
        racing_ends_of_one_reservation_resolve_once,
        a_failing_operation_leaves_its_neighbours_whole,
    );

    concurrent_conformance_tests!(SqliteBackend; billing;
        concurrent_reservations_never_exceed_a_workspace_spend_limit,
        only_one_auto_reload_claim_wins,
    );

    #[tokio::test]
    async fn reopening_keeps_the_data_and_skips_applied_migrations() {
        crate::sqlite_backend::reopening_keeps_the_data_and_skips_applied_migrations().await;
    }

    #[tokio::test]
    async fn migrating_an_existing_database_backfills_spend_counters() {
        crate::sqlite_backend::migrating_an_existing_database_backfills_spend_counters().await;
    }
}
