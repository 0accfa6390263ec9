//! Integration tests of tollgate-store, one binary (style §5.5).
//!
//! `conformance`, `billing` and `directory` are the storage conformance suite: plain async
//! functions over a `Backend`, which every adapter must pass. This file runs it against SQLite, each
//! test on a fresh database file in its own temporary directory, and against PostgreSQL,
//! each test in a fresh schema of the machine's server (`TOLLGATE_TEST_DATABASE_URL`). `model` drives a seeded random
//! workload against a reference auditor.

mod batches;
mod billing;
mod conformance;
mod console;
mod directory;
mod fixtures;
mod idempotency;
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
            credit_released_in_a_batch_funds_the_next_reservation_in_it,
            the_book_follows_writes_made_elsewhere,
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
            extended_reservations_outlive_their_first_deadline,
            expiry_moves_only_the_unreserved_remainder,
            expiry_leaves_what_a_hold_in_memory_holds,
            audit_detects_a_tampered_account,
            keys_are_inserted_found_listed_and_updated,
            usage_records_round_trip,
            usage_records_keep_their_client_attribution,
            usage_by_session_groups_and_filters_charged_records,
        );

        conformance_tests!($backend; batches;
            a_batch_is_claimed_once_and_ends_with_its_requests,
            cancel_and_expiry_end_only_unclaimed_requests,
        );

        conformance_tests!($backend; billing;
            spend_limit_refusal_writes_nothing_and_names_the_scope,
            spend_counters_follow_settle_void_and_reap,
            a_per_user_limit_binds_each_user_and_their_counter_follows_their_reservations,
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
            device_grants_are_approved_once_and_issued_once,
            a_setup_link_is_redeemed_once,
            only_the_latest_setup_link_is_valid,
            no_setup_link_once_someone_can_sign_in,
            no_setup_link_once_an_organization_has_an_admin,
            sign_in_attempts_are_claimed_per_window,
        );

        concurrent_conformance_tests!($backend; console;
            racing_sign_in_claims_never_exceed_the_limit,
        );

        concurrent_conformance_tests!($backend; billing;
            racing_reservations_of_one_user_never_exceed_the_per_user_limit,
        );

        conformance_tests!($backend; idempotency;
            idempotency_keys_are_claimed_once_per_organization,
            an_idempotency_key_given_back_may_be_claimed_again,
            an_expired_idempotency_key_is_taken_over_and_purged,
        );

        concurrent_conformance_tests!($backend; idempotency;
            racing_idempotency_claims_leave_one_claimant,
        );

        conformance_tests!($backend; directory;
            keys_remember_their_creator,
            capped_workspace_creation_counts_only_active_ones,
            workspaces_are_renamed_and_archived,
            users_and_members_round_trip,
            removing_a_user_archives_their_personal_keys,
            archiving_a_service_account_archives_its_keys,
            deactivating_a_user_archives_their_keys_and_ends_their_sessions,
            ending_access_and_refresh_tokens_of_single_sign_on,
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
            stored_responses_share_batches_and_fail_alone,
            a_reservation_decided_but_not_written_says_so_at_commit,
            a_reservation_written_at_its_settlement_holds_from_its_decision,
            a_hold_in_memory_whose_settlement_fails_is_released,
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

    #[tokio::test]
    async fn new_databases_have_small_pages_and_old_ones_keep_theirs() {
        crate::sqlite_backend::new_databases_have_small_pages_and_old_ones_keep_theirs().await;
    }

    #[tokio::test]
    async fn keeping_a_response_leaves_the_writers_book_in_place() {
        crate::sqlite_backend::keeping_a_response_leaves_the_writers_book_in_place().await;
    }
}

mod postgres {
    //! The conformance suite on PostgreSQL, plus what only PostgreSQL has (several
    //! replicas on one database).

    use std::sync::Arc;

    use tollgate_core::ledger::LotKind;

    use crate::conformance::Backend;
    use crate::fixtures::{assert_healthy, at, cents, create_org, grant, new_reservation, settlement, usd};
    use crate::postgres_backend::PostgresBackend;

    the_conformance_suite!(PostgresBackend);

    /// Goal: two replicas, each batching the reservations and settlements of several
    /// organizations into one transaction (their locks taken together), charge every
    /// request exactly once and leave an audit-clean ledger and an hourly rollup that
    /// agrees with the records, whichever replica reserved and whichever settled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_batching_several_organizations_charge_each_request_once() {
        const ORGS: usize = 4;
        const REQUESTS: usize = 60;
        let backend = PostgresBackend::open().await;
        let replicas = [backend.store().clone(), backend.second_replica().await];
        let mut orgs = Vec::new();
        for org_no in 0..ORGS {
            let org = create_org(&replicas[0], &format!("org{org_no}")).await;
            grant(
                &replicas[0],
                &org,
                &format!("lot_{org_no}"),
                LotKind::Purchase,
                usd(10),
                at(0),
                None,
            )
            .await;
            orgs.push(Arc::new(org));
        }
        let mut tasks = Vec::new();
        for request in 0..REQUESTS {
            for (org_no, org) in orgs.iter().enumerate() {
                let reserving = replicas[(request + org_no) % 2].clone();
                let settling = replicas[(request + org_no + request / 7) % 2].clone();
                let org = Arc::clone(org);
                tasks.push(tokio::spawn(async move {
                    let id = format!("rsv_{org_no}_{request:03}");
                    reserving
                        .reserve(new_reservation(&org, &id, cents(10), at(1), at(100)))
                        .await
                        .expect("reserve");
                    let outcome = settling
                        .settle(settlement(&org, &id, cents(4), at(2)))
                        .await
                        .expect("settle");
                    assert_eq!((outcome.charged, outcome.already_ended), (cents(4), false));
                    let again = reserving
                        .settle(settlement(&org, &id, cents(4), at(2)))
                        .await
                        .expect("settle again");
                    assert!(again.already_ended, "{id} ended twice");
                }));
            }
        }
        for task in tasks {
            task.await.expect("request task");
        }
        for org in &orgs {
            let balance = replicas[1].balance(&org.org_id, at(3)).await.expect("balance");
            assert_eq!(balance.spent, cents(4 * REQUESTS as i64), "{}", org.org_id);
            assert_eq!(balance.held, cents(0), "{}", org.org_id);
            let records = replicas[0].usage_records(&org.org_id).await.expect("records");
            assert_eq!(
                records.len(),
                REQUESTS,
                "{}: one usage record per request",
                org.org_id
            );
        }
        assert_healthy(&replicas[0]).await;
        // Each batch inserts its usage records in one statement; the hourly rollup agrees.
        assert_eq!(
            replicas[0].usage_rollup_problems().await.expect("rollup check"),
            Vec::<String>::new()
        );
        replicas[1].close().await;
        backend.close().await;
    }
}
