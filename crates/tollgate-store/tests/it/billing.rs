//! The conformance suite, continued: monthly spend limits and counters, purchases and the
//! tier's cumulative total, auto-reload claims, limits and the audit log. Same rules as
//! `conformance`: plain async functions over a `Backend`, each ending with a clean audit.

use std::collections::BTreeMap;
use std::sync::Arc;

use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{MonthSpend, SpendLimitReached, SpendLimits, SpendScope};
use tollgate_store::{
    AuditEntry, AutoReload, IdempotencyKeyReused, NewPurchase, NewReservation, Purchase, PurchaseClaim,
    PurchaseOutcome, PurchaseSource, PurchaseStatus, RateLimitOverrides, ReserveRejection, StoreError,
    TxError, WorkspaceLimits,
};

use crate::conformance::Backend;
use crate::fixtures::{
    TestOrg, assert_healthy, at, cents, create_org, grant, new_lot, new_reservation, settlement, usd,
};

/// 2026-02-01T00:00:00Z, `at(FEBRUARY)`: January's limits reset here.
const FEBRUARY: i64 = 31 * 24 * 60;

fn limits(workspace: Option<NanoUsd>, organization: Option<NanoUsd>, tier: Option<NanoUsd>) -> SpendLimits {
    SpendLimits {
        tier,
        organization,
        workspace,
        user: None,
    }
}

fn spend(organization: NanoUsd, workspace: NanoUsd) -> MonthSpend {
    MonthSpend {
        organization,
        workspace,
        user: NanoUsd::ZERO,
    }
}

fn audit_entry(org: &TestOrg, action: &str, subject: &str, minute: i64) -> AuditEntry {
    AuditEntry {
        org_id: org.org_id.clone(),
        actor: "user_alice".to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details: format!("{action} in tests"),
        reason: Some("asked by support".to_owned()),
        at: at(minute),
    }
}

fn actions(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.action.as_str()).collect()
}

fn new_purchase(org: &TestOrg, purchase_id: &str, key: &str, amount: NanoUsd) -> NewPurchase {
    NewPurchase {
        purchase_id: purchase_id.to_owned(),
        org_id: org.org_id.clone(),
        idempotency_key: key.to_owned(),
        amount,
        source: PurchaseSource::Manual,
        created_at: at(1),
    }
}

/// The success a payment provider reports, with the purchase lot it pays for.
fn paid(org: &TestOrg, purchase: &Purchase, lot_id: &str, minute: i64) -> PurchaseOutcome {
    let mut lot = new_lot(
        org,
        lot_id,
        LotKind::Purchase,
        purchase.amount,
        at(minute),
        Some(at(minute + 525_600)),
    );
    lot.actor = "user_alice".to_owned();
    PurchaseOutcome::Succeeded {
        payment_reference: format!("pay_{lot_id}"),
        lot,
    }
}

async fn claim_new(backend: &impl Backend, purchase: NewPurchase) -> Purchase {
    match backend.store().claim_purchase(purchase).await {
        Ok(PurchaseClaim::New(purchase)) => purchase,
        other => panic!("expected a new claim, got {other:?}"),
    }
}

fn reload_settings(org: &TestOrg) -> AutoReload {
    AutoReload {
        org_id: org.org_id.clone(),
        enabled: true,
        threshold: usd(5),
        amount: usd(20),
        payment_method: "4242424242424242".to_owned(),
        // Inputs the store ignores.
        in_flight_since: Some(at(99)),
        notice: Some("ignored".to_owned()),
    }
}

/// Goal: a reservation over a monthly limit is refused before the credit is looked at,
/// names the most specific scope reached and when it resets, and writes nothing.
pub(crate) async fn spend_limit_refusal_writes_nothing_and_names_the_scope(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let research = TestOrg {
        workspace_id: "wrkspc_research".to_owned(),
        ..org.clone()
    };
    store
        .create_workspace(&org.org_id, &research.workspace_id, "research", at(0))
        .await
        .unwrap();
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;

    let mut first = new_reservation(&research, "rsv_research", usd(3), at(1), at(100));
    first.spend_limits = limits(Some(usd(5)), None, None);
    store.reserve(first).await.unwrap();
    store
        .reserve(new_reservation(&org, "rsv_default", usd(3), at(2), at(100)))
        .await
        .unwrap();
    assert_eq!(
        store
            .month_spend(&org.org_id, &research.workspace_id, at(3))
            .await
            .unwrap(),
        spend(usd(6), usd(3))
    );

    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    let journal = backend.journal(&org.org_id).await;
    let refusals = [
        // Research has $3 of $5: $3 more is over its own limit.
        (
            &research,
            usd(3),
            limits(Some(usd(5)), Some(usd(50)), Some(usd(100))),
            SpendScope::Workspace,
            usd(5),
        ),
        // The org has $6 of its own $8 limit; the workspace's $10 is not reached.
        (
            &org,
            usd(3),
            limits(Some(usd(10)), Some(usd(8)), Some(usd(8))),
            SpendScope::Organization,
            usd(8),
        ),
        // Only the tier's $7 cap binds.
        (
            &org,
            usd(2),
            limits(None, None, Some(usd(7))),
            SpendScope::Tier,
            usd(7),
        ),
        // Over the limit and over the credit: the limit is what the caller is told.
        (
            &org,
            usd(500),
            limits(None, None, Some(usd(7))),
            SpendScope::Tier,
            usd(7),
        ),
    ];
    for (index, (owner, amount, spend_limits, scope, limit)) in refusals.into_iter().enumerate() {
        let mut reservation = new_reservation(owner, &format!("rsv_refused_{index}"), amount, at(3), at(100));
        reservation.spend_limits = spend_limits;
        let refused = store.reserve(reservation).await;
        match refused {
            Err(TxError::Rejected(ReserveRejection::SpendLimitReached(reached))) => assert_eq!(
                reached,
                SpendLimitReached {
                    scope,
                    limit,
                    resets_at: at(FEBRUARY),
                },
                "refusal {index}"
            ),
            other => panic!("refusal {index}: expected a spend limit, got {other:?}"),
        }
    }

    // Nothing was written by any refusal.
    assert_eq!(store.balance(&org.org_id, at(3)).await.unwrap(), balance);
    assert_eq!(backend.journal(&org.org_id).await, journal);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 2);
    assert_eq!(
        store
            .month_spend(&org.org_id, &research.workspace_id, at(3))
            .await
            .unwrap(),
        spend(usd(6), usd(3))
    );
    // Exactly up to the limit is allowed.
    let mut exact = new_reservation(&research, "rsv_exact", usd(2), at(4), at(100));
    exact.spend_limits = limits(Some(usd(5)), Some(usd(8)), Some(usd(8)));
    store.reserve(exact).await.unwrap();
    assert_healthy(store).await;
}

/// Goal: the month's counter holds a reservation until it ends, then keeps what it charged:
/// settled, voided and reaped alike; the audit recomputes the counters and notices one
/// changed behind the store's back.
pub(crate) async fn spend_counters_follow_settle_void_and_reap(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .create_workspace(&org.org_id, "wrkspc_other", "other", at(0))
        .await
        .unwrap();
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    let month = |minute| store.month_spend(&org.org_id, &org.workspace_id, at(minute));

    assert_eq!(month(0).await.unwrap(), MonthSpend::default());
    for (reservation_id, amount, deadline) in [
        ("rsv_settled", 4, 100),
        ("rsv_voided", 2, 100),
        ("rsv_reaped", 5, 10),
    ] {
        store
            .reserve(new_reservation(
                &org,
                reservation_id,
                usd(amount),
                at(1),
                at(deadline),
            ))
            .await
            .unwrap();
    }
    assert_eq!(month(2).await.unwrap(), spend(usd(11), usd(11)));
    assert_healthy(store).await;

    store
        .settle(settlement(&org, "rsv_settled", usd(1), at(3)))
        .await
        .unwrap();
    assert_eq!(month(3).await.unwrap(), spend(usd(8), usd(8)));
    store
        .settle(settlement(&org, "rsv_voided", NanoUsd::ZERO, at(4)))
        .await
        .unwrap();
    assert_eq!(month(4).await.unwrap(), spend(usd(6), usd(6)));
    assert_eq!(store.reap_reservations(at(10)).await.unwrap(), 1);
    assert_eq!(month(10).await.unwrap(), spend(usd(1), usd(1)));
    // Ending again moves nothing.
    store
        .settle(settlement(&org, "rsv_settled", usd(4), at(11)))
        .await
        .unwrap();
    assert_eq!(month(11).await.unwrap(), spend(usd(1), usd(1)));

    // Another workspace's spend counts for the organization only.
    assert_eq!(
        store
            .month_spend(&org.org_id, "wrkspc_other", at(11))
            .await
            .unwrap(),
        spend(usd(1), NanoUsd::ZERO)
    );
    assert_healthy(store).await;

    backend
        .tamper_with_spend_counter(&org.org_id, &org.workspace_id, cents(1))
        .await;
    let report = store.audit().await.unwrap();
    assert!(
        report.problems.iter().any(
            |problem| problem.starts_with("spend counter of org_acme workspace wrkspc_acme month 202601")
        ),
        "{:#?}",
        report.problems
    );
}

/// A reservation in `workspace` made by `user_id`'s key, held to a per-user limit.
fn user_reservation(
    workspace: &TestOrg,
    user_id: &str,
    reservation_id: &str,
    amount: NanoUsd,
    minute: i64,
    deadline: i64,
) -> NewReservation {
    let mut reservation = new_reservation(workspace, reservation_id, amount, at(minute), at(deadline));
    reservation.user_id = Some(user_id.to_owned());
    reservation.spend_limits = SpendLimits {
        user: Some(usd(5)),
        ..limits(Some(usd(20)), None, None)
    };
    reservation
}

/// Goal: a workspace's per-user limit refuses the user over it (named as the user scope,
/// writing nothing) while their teammates and the workspace's own keys are served; each
/// user's counter holds their open reservations and keeps what their ended ones charged —
/// settled, and reaped, when the reservation is read back from the tables — and the audit
/// recomputes the users' counters and notices one changed behind the store's back.
pub(crate) async fn a_per_user_limit_binds_each_user_and_their_counter_follows_their_reservations(
    backend: &impl Backend,
) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let research = TestOrg {
        workspace_id: "wrkspc_research".to_owned(),
        ..org.clone()
    };
    store
        .create_workspace(&org.org_id, &research.workspace_id, "research", at(0))
        .await
        .unwrap();
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    let user_spend = |user_id: &'static str, minute| {
        store.user_month_spend(&org.org_id, &research.workspace_id, user_id, at(minute))
    };

    store
        .reserve(user_reservation(
            &research,
            "user_alice",
            "rsv_alice_1",
            usd(3),
            1,
            100,
        ))
        .await
        .unwrap();
    let balance = store.balance(&org.org_id, at(1)).await.unwrap();
    let refused = store
        .reserve(user_reservation(
            &research,
            "user_alice",
            "rsv_alice_2",
            usd(3),
            1,
            100,
        ))
        .await;
    match refused {
        Err(TxError::Rejected(ReserveRejection::SpendLimitReached(reached))) => assert_eq!(
            reached,
            SpendLimitReached {
                scope: SpendScope::User,
                limit: usd(5),
                resets_at: at(FEBRUARY),
            }
        ),
        other => panic!("expected the per-user limit, got {other:?}"),
    }
    assert_eq!(store.balance(&org.org_id, at(1)).await.unwrap(), balance);
    // Bob, and the workspace's own keys (no user), are not held to Alice's spend.
    store
        .reserve(user_reservation(&research, "user_bob", "rsv_bob", usd(4), 2, 10))
        .await
        .unwrap();
    let mut team = new_reservation(&research, "rsv_team", usd(6), at(2), at(100));
    team.spend_limits = limits(Some(usd(20)), None, None);
    store.reserve(team).await.unwrap();
    assert_eq!(user_spend("user_alice", 2).await.unwrap(), usd(3));
    assert_eq!(user_spend("user_bob", 2).await.unwrap(), usd(4));
    assert_eq!(
        store
            .month_spend(&org.org_id, &research.workspace_id, at(2))
            .await
            .unwrap(),
        spend(usd(13), usd(13))
    );
    assert_healthy(store).await;

    // A grant through another connection makes SQLite's writer read its book again, so the
    // settlement below finds Alice's reservation, and its user, in the tables (PostgreSQL
    // always does).
    grant(store, &org, "lot_b", LotKind::Purchase, usd(1), at(3), None).await;
    store
        .settle(settlement(&research, "rsv_alice_1", usd(1), at(4)))
        .await
        .unwrap();
    assert_eq!(user_spend("user_alice", 4).await.unwrap(), usd(1));
    store
        .reserve(user_reservation(
            &research,
            "user_alice",
            "rsv_alice_3",
            usd(4),
            5,
            100,
        ))
        .await
        .expect("$1 settled and $4 held: exactly the limit");
    // Bob's reservation is reaped: his counter lets go of it.
    assert_eq!(store.reap_reservations(at(10)).await.unwrap(), 1);
    assert_eq!(user_spend("user_bob", 10).await.unwrap(), NanoUsd::ZERO);
    assert_eq!(user_spend("user_alice", 10).await.unwrap(), usd(5));
    // A month later everyone starts from nothing.
    assert_eq!(user_spend("user_alice", FEBRUARY).await.unwrap(), NanoUsd::ZERO);
    assert_healthy(store).await;

    backend
        .tamper_with_user_spend_counter(&org.org_id, &research.workspace_id, "user_alice", cents(1))
        .await;
    let report = store.audit().await.unwrap();
    assert!(
        report.problems.iter().any(|problem| problem
            .starts_with("spend counter of org_acme workspace wrkspc_research user user_alice month 202601")),
        "{:#?}",
        report.problems
    );
}

/// Goal: one user's reservations racing each other never take their spend above the
/// per-user limit, whatever the batches they fall into: exactly as many fit as the limit
/// allows, the rest are refused as the user's, and the counters agree with the ledger.
pub(crate) async fn racing_reservations_of_one_user_never_exceed_the_per_user_limit(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    let mut racing = tokio::task::JoinSet::new();
    for index in 0..40 {
        let store = store.clone();
        let reservation = user_reservation(&org, "user_alice", &format!("rsv_{index:02}"), cents(30), 1, 100);
        racing.spawn(async move { store.reserve(reservation).await });
    }
    let (mut made, mut refused) = (0, 0);
    while let Some(joined) = racing.join_next().await {
        match joined.expect("task") {
            Ok(_) => made += 1,
            Err(TxError::Rejected(ReserveRejection::SpendLimitReached(reached))) => {
                assert_eq!(reached.scope, SpendScope::User);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // $5 at 30 cents a reservation: 16 fit ($4.80), the 17th would make $5.10.
    assert_eq!((made, refused), (16, 24));
    assert_eq!(
        store
            .user_month_spend(&org.org_id, &org.workspace_id, "user_alice", at(2))
            .await
            .unwrap(),
        cents(480)
    );
    assert_healthy(store).await;
}

/// Goal: a reservation counts in the month it was made, even when it settles after
/// midnight on the 1st; the new month starts from nothing.
pub(crate) async fn a_reservation_counts_in_the_month_it_was_made(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    let mut late = new_reservation(&org, "rsv_late", usd(4), at(FEBRUARY - 1), at(FEBRUARY + 60));
    late.spend_limits = limits(Some(usd(5)), None, None);
    store.reserve(late).await.unwrap();
    store
        .settle(settlement(&org, "rsv_late", usd(3), at(FEBRUARY + 1)))
        .await
        .unwrap();

    let january = store
        .month_spend(&org.org_id, &org.workspace_id, at(FEBRUARY - 1))
        .await
        .unwrap();
    assert_eq!(january, spend(usd(3), usd(3)));
    let february = store
        .month_spend(&org.org_id, &org.workspace_id, at(FEBRUARY + 1))
        .await
        .unwrap();
    assert_eq!(february, MonthSpend::default());

    // February's whole limit is available although January's request ended in February.
    let mut next = new_reservation(&org, "rsv_february", usd(5), at(FEBRUARY + 2), at(FEBRUARY + 60));
    next.spend_limits = limits(Some(usd(5)), None, None);
    store.reserve(next).await.unwrap();
    assert_eq!(
        store
            .month_spend(&org.org_id, &org.workspace_id, at(FEBRUARY + 2))
            .await
            .unwrap(),
        spend(usd(5), usd(5))
    );
    assert_healthy(store).await;
}

/// Goal: many requests racing against a low workspace limit never take its month's spend
/// above the limit; every refusal names the workspace, and the counters stay exact.
pub(crate) async fn concurrent_reservations_never_exceed_a_workspace_spend_limit(backend: &impl Backend) {
    const TASKS: usize = 200;
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    let limit = usd(20);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(500), at(0), None).await;

    let mut tasks = Vec::with_capacity(TASKS);
    for task_no in 0..TASKS {
        let store = store.clone();
        let org = Arc::clone(&org);
        tasks.push(tokio::spawn(async move {
            let reservation_id = format!("rsv_{task_no:03}");
            let mut reservation = new_reservation(&org, &reservation_id, usd(1), at(1), at(100));
            reservation.spend_limits = limits(Some(limit), None, Some(usd(100)));
            match store.reserve(reservation).await {
                Ok(_) => {}
                Err(TxError::Rejected(ReserveRejection::SpendLimitReached(reached))) => {
                    assert_eq!(reached.scope, SpendScope::Workspace);
                    return None;
                }
                Err(other) => panic!("reserve failed: {other:?}"),
            }
            let spent = store
                .month_spend(&org.org_id, &org.workspace_id, at(1))
                .await
                .expect("month spend");
            assert!(
                spent.workspace <= limit,
                "spend {} above the limit",
                spent.workspace
            );
            tokio::task::yield_now().await;
            // Failed requests release their whole reservation, which later ones may use.
            let cost = match task_no % 4 {
                0 => NanoUsd::ZERO,
                1 => cents(40),
                _ => usd(1),
            };
            let outcome = store
                .settle(settlement(&org, &reservation_id, cost, at(2)))
                .await
                .expect("settle");
            Some(outcome.charged)
        }));
    }
    let mut succeeded = 0;
    let mut charged = NanoUsd::ZERO;
    for task in tasks {
        if let Some(task_charged) = task.await.expect("task") {
            succeeded += 1;
            charged = charged.checked_add(task_charged).unwrap();
        }
    }
    assert!(succeeded >= 20, "only {succeeded} reservations succeeded");
    assert!(charged <= limit, "charged {charged} over the limit {limit}");
    let spent = store
        .month_spend(&org.org_id, &org.workspace_id, at(3))
        .await
        .unwrap();
    assert_eq!(spent, spend(charged, charged));
    assert_eq!(store.balance(&org.org_id, at(3)).await.unwrap().spent, charged);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_healthy(store).await;
}

/// Goal: a purchase is claimed once per (organization, idempotency key): the same key and
/// amount returns the stored purchase, another amount is refused, and neither writes.
pub(crate) async fn purchase_claims_are_idempotent_by_key(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;

    let claimed = claim_new(backend, new_purchase(&org, "pur_1", "key-1", usd(25))).await;
    assert_eq!(
        claimed,
        Purchase {
            id: "pur_1".to_owned(),
            org_id: org.org_id.clone(),
            idempotency_key: "key-1".to_owned(),
            amount: usd(25),
            source: PurchaseSource::Manual,
            status: PurchaseStatus::Pending,
            payment_reference: None,
            failure_reason: None,
            lot_id: None,
            created_at: at(1),
            completed_at: None,
            refunded: NanoUsd::ZERO,
            disputed: NanoUsd::ZERO,
            unrecovered: NanoUsd::ZERO,
        }
    );

    let again = store
        .claim_purchase(new_purchase(&org, "pur_2", "key-1", usd(25)))
        .await
        .unwrap();
    assert_eq!(again, PurchaseClaim::Existing(claimed.clone()));
    let reused = store
        .claim_purchase(new_purchase(&org, "pur_3", "key-1", usd(30)))
        .await;
    match reused {
        Err(TxError::Rejected(IdempotencyKeyReused { existing_amount })) => {
            assert_eq!(existing_amount, usd(25))
        }
        other => panic!("expected a reused key, got {other:?}"),
    }
    assert_eq!(store.purchases(&org.org_id).await.unwrap(), vec![claimed.clone()]);
    assert_eq!(
        store.purchase_by_key(&org.org_id, "key-1").await.unwrap(),
        Some(claimed)
    );
    assert_eq!(store.purchase_by_key(&org.org_id, "key-2").await.unwrap(), None);

    // Keys are per organization.
    claim_new(backend, new_purchase(&other, "pur_4", "key-1", usd(30))).await;
    // A new key is a new purchase; the newest is listed first.
    let mut later = new_purchase(&org, "pur_5", "key-2", usd(25));
    later.created_at = at(2);
    later.source = PurchaseSource::AutoReload;
    claim_new(backend, later).await;
    let ids: Vec<String> = store
        .purchases(&org.org_id)
        .await
        .unwrap()
        .into_iter()
        .map(|purchase| purchase.id)
        .collect();
    assert_eq!(ids, vec!["pur_5", "pur_1"]);

    // Claims move no money and are not audited: nothing happened yet.
    assert_eq!(
        store.balance(&org.org_id, at(3)).await.unwrap().granted,
        NanoUsd::ZERO
    );
    assert!(store.audit_events(&org.org_id).await.unwrap().is_empty());
    let billing = store
        .organization_billing(&org.org_id, at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.cumulative_purchases, NanoUsd::ZERO);
    assert_healthy(store).await;
}

/// Goal: a paid purchase grants its lot and raises cumulative purchases in one transaction,
/// is logged, and completing it again changes nothing.
pub(crate) async fn a_paid_purchase_grants_its_lot_and_raises_cumulative_purchases(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let purchase = claim_new(backend, new_purchase(&org, "pur_1", "key-1", cents(1250))).await;

    let completed = store
        .complete_purchase("pur_1", paid(&org, &purchase, "lot_paid", 2), "user_alice", at(2))
        .await
        .unwrap();
    assert_eq!(
        completed,
        Purchase {
            status: PurchaseStatus::Succeeded,
            payment_reference: Some("pay_lot_paid".to_owned()),
            lot_id: Some("lot_paid".to_owned()),
            completed_at: Some(at(2)),
            ..purchase.clone()
        }
    );
    let lots = store.lots(&org.org_id).await.unwrap();
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0].lot.kind, LotKind::Purchase);
    assert_eq!(lots[0].amount, cents(1250));
    assert_eq!(
        store.balance(&org.org_id, at(3)).await.unwrap().available,
        cents(1250)
    );
    let billing = store
        .organization_billing(&org.org_id, at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.cumulative_purchases, cents(1250));

    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(actions(&events), vec!["credit.granted", "credit.purchased"]);
    assert_eq!(events[0].subject, "lot_paid");
    assert!(
        events[0]
            .details
            .starts_with("purchase lot of $12.50, expires 2027-"),
        "{}",
        events[0].details
    );
    assert_eq!(events[1].subject, "pur_1");
    assert_eq!(events[1].actor, "user_alice");
    assert!(events[1].details.contains("$12.50"), "{}", events[1].details);

    // Completing again, whatever the outcome says, returns the first ending.
    let declined = PurchaseOutcome::Declined {
        reason: "too late".to_owned(),
    };
    for outcome in [paid(&org, &purchase, "lot_again", 4), declined] {
        let again = store
            .complete_purchase("pur_1", outcome, "user_alice", at(4))
            .await
            .unwrap();
        assert_eq!(again, completed);
    }
    assert_eq!(store.lots(&org.org_id).await.unwrap().len(), 1);
    assert_eq!(store.audit_events(&org.org_id).await.unwrap().len(), 2);

    // A second purchase adds to the total.
    let second = claim_new(backend, new_purchase(&org, "pur_2", "key-2", usd(40))).await;
    store
        .complete_purchase("pur_2", paid(&org, &second, "lot_second", 5), "user_alice", at(5))
        .await
        .unwrap();
    let billing = store
        .organization_billing(&org.org_id, at(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.cumulative_purchases, cents(5250));

    // A lot that does not match the purchase is a bug, and nothing of it is written.
    let third = claim_new(backend, new_purchase(&org, "pur_3", "key-3", usd(10))).await;
    let mut wrong = paid(&org, &third, "lot_wrong", 6);
    if let PurchaseOutcome::Succeeded { lot, .. } = &mut wrong {
        lot.amount = usd(11);
    }
    let refused = store.complete_purchase("pur_3", wrong, "user_alice", at(6)).await;
    assert!(matches!(refused, Err(StoreError::Invariant(_))), "{refused:?}");
    let unknown = store
        .complete_purchase("pur_nobody", paid(&org, &third, "lot_x", 6), "user_alice", at(6))
        .await;
    assert!(matches!(unknown, Err(StoreError::Invariant(_))), "{unknown:?}");
    assert_eq!(
        store
            .purchase_by_key(&org.org_id, "key-3")
            .await
            .unwrap()
            .unwrap()
            .status,
        PurchaseStatus::Pending
    );
    assert_eq!(store.lots(&org.org_id).await.unwrap().len(), 2);
    assert_healthy(store).await;

    // The audit ties cumulative purchases to the purchases.
    backend
        .tamper_with_cumulative_purchases(&org.org_id, usd(1))
        .await;
    let report = store.audit().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.starts_with("organization org_acme: cumulative purchases")),
        "{:#?}",
        report.problems
    );
}

/// Goal: a declined or failed payment ends the purchase with its reason, grants no lot and
/// leaves the tier where it was.
pub(crate) async fn an_unpaid_purchase_writes_no_lot(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    claim_new(backend, new_purchase(&org, "pur_declined", "key-1", usd(25))).await;
    claim_new(backend, new_purchase(&org, "pur_failed", "key-2", usd(25))).await;

    let declined = store
        .complete_purchase(
            "pur_declined",
            PurchaseOutcome::Declined {
                reason: "insufficient funds".to_owned(),
            },
            "user_alice",
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(declined.status, PurchaseStatus::Declined);
    assert_eq!(declined.failure_reason.as_deref(), Some("insufficient funds"));
    assert_eq!(declined.lot_id, None);
    assert_eq!(declined.completed_at, Some(at(2)));
    let failed = store
        .complete_purchase(
            "pur_failed",
            PurchaseOutcome::Failed {
                reason: "provider unavailable".to_owned(),
            },
            "auto-reload",
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(failed.status, PurchaseStatus::Failed);

    assert!(store.lots(&org.org_id).await.unwrap().is_empty());
    assert!(backend.journal(&org.org_id).await.is_empty());
    let billing = store
        .organization_billing(&org.org_id, at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.cumulative_purchases, NanoUsd::ZERO);
    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(
        actions(&events),
        vec!["credit.purchase_declined", "credit.purchase_failed"]
    );
    assert_eq!(events[0].reason.as_deref(), Some("insufficient funds"));
    assert_eq!(events[1].actor, "auto-reload");
    assert_healthy(store).await;
}

/// Goal: of many processes claiming an organization's reload at once, exactly one wins;
/// once it finishes, the next claim can win again.
pub(crate) async fn only_one_auto_reload_claim_wins(backend: &impl Backend) {
    const CLAIMERS: usize = 100;
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .set_auto_reload(
            &reload_settings(&org),
            audit_entry(&org, "autoreload.set", &org.org_id, 0),
            at(0),
        )
        .await
        .unwrap();
    let mut claims = Vec::with_capacity(CLAIMERS);
    for _ in 0..CLAIMERS {
        let store = store.clone();
        let org_id = org.org_id.clone();
        claims.push(tokio::spawn(async move {
            store
                .claim_auto_reload(&org_id, at(1), chrono::Duration::minutes(5))
                .await
                .expect("claim")
        }));
    }
    let mut winners = Vec::new();
    for claim in claims {
        if let Some(claimed) = claim.await.expect("task") {
            winners.push(claimed);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claimer wins");
    assert_eq!(winners[0].in_flight_since, Some(at(1)));
    assert_eq!(winners[0].amount, usd(20));

    store.finish_auto_reload(&org.org_id, None, at(2)).await.unwrap();
    let settings = store.auto_reload(&org.org_id).await.unwrap().unwrap();
    assert_eq!(settings.in_flight_since, None);
    assert!(settings.enabled);
    assert!(
        store
            .claim_auto_reload(&org.org_id, at(3), chrono::Duration::minutes(5))
            .await
            .unwrap()
            .is_some()
    );
    assert_healthy(store).await;
}

/// Goal: a claim whose process died (older than the stale bound) can be taken over; a
/// fresh one, a disabled reload or none at all cannot be claimed.
pub(crate) async fn a_stale_auto_reload_claim_can_be_taken_over(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let stale_after = chrono::Duration::minutes(5);
    assert_eq!(
        store
            .claim_auto_reload(&org.org_id, at(0), stale_after)
            .await
            .unwrap(),
        None
    );
    store
        .set_auto_reload(
            &reload_settings(&org),
            audit_entry(&org, "autoreload.set", &org.org_id, 0),
            at(0),
        )
        .await
        .unwrap();
    let settings = store.auto_reload(&org.org_id).await.unwrap().unwrap();
    assert_eq!(
        settings,
        AutoReload {
            in_flight_since: None,
            notice: None,
            ..reload_settings(&org)
        }
    );

    assert!(
        store
            .claim_auto_reload(&org.org_id, at(1), stale_after)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store
            .claim_auto_reload(&org.org_id, at(4), stale_after)
            .await
            .unwrap(),
        None
    );
    let taken_over = store
        .claim_auto_reload(&org.org_id, at(7), stale_after)
        .await
        .unwrap()
        .expect("a stale claim is taken over");
    assert_eq!(taken_over.in_flight_since, Some(at(7)));
    assert_eq!(
        store
            .claim_auto_reload(&org.org_id, at(8), stale_after)
            .await
            .unwrap(),
        None
    );

    // Updating the settings keeps a claim in flight.
    let mut changed = reload_settings(&org);
    changed.threshold = usd(8);
    store
        .set_auto_reload(
            &changed,
            audit_entry(&org, "autoreload.set", &org.org_id, 9),
            at(9),
        )
        .await
        .unwrap();
    let settings = store.auto_reload(&org.org_id).await.unwrap().unwrap();
    assert_eq!(settings.threshold, usd(8));
    assert_eq!(settings.in_flight_since, Some(at(7)));

    store.finish_auto_reload(&org.org_id, None, at(10)).await.unwrap();
    assert!(
        store
            .disable_auto_reload(
                &org.org_id,
                None,
                audit_entry(&org, "autoreload.off", &org.org_id, 11)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_auto_reload(&org.org_id, at(12), stale_after)
            .await
            .unwrap(),
        None,
        "a disabled reload is never claimed"
    );
    assert_healthy(store).await;
}

/// Goal: a reload that could not be bought turns auto-reload off with a notice, logged;
/// turning it on again clears the notice; turning it off needs it set up.
pub(crate) async fn finishing_with_a_notice_disables_auto_reload(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    store
        .set_auto_reload(
            &reload_settings(&org),
            audit_entry(&org, "autoreload.set", &org.org_id, 0),
            at(0),
        )
        .await
        .unwrap();
    store
        .claim_auto_reload(&org.org_id, at(1), chrono::Duration::minutes(5))
        .await
        .unwrap()
        .expect("claimed");
    store
        .finish_auto_reload(&org.org_id, Some("auto-reload turned off: card declined"), at(2))
        .await
        .unwrap();
    let settings = store.auto_reload(&org.org_id).await.unwrap().unwrap();
    assert!(!settings.enabled);
    assert_eq!(settings.in_flight_since, None);
    assert_eq!(
        settings.notice.as_deref(),
        Some("auto-reload turned off: card declined")
    );
    assert_eq!(
        store
            .claim_auto_reload(&org.org_id, at(3), chrono::Duration::minutes(5))
            .await
            .unwrap(),
        None
    );
    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(actions(&events), vec!["autoreload.set", "autoreload.disabled"]);
    assert_eq!(events[1].actor, "system");
    assert_eq!(events[1].at, at(2));
    assert_eq!(
        events[1].reason.as_deref(),
        Some("auto-reload turned off: card declined")
    );

    store
        .set_auto_reload(
            &reload_settings(&org),
            audit_entry(&org, "autoreload.set", &org.org_id, 4),
            at(4),
        )
        .await
        .unwrap();
    let settings = store.auto_reload(&org.org_id).await.unwrap().unwrap();
    assert!(settings.enabled);
    assert_eq!(settings.notice, None);

    assert!(
        !store
            .disable_auto_reload(
                &other.org_id,
                None,
                audit_entry(&other, "autoreload.off", &other.org_id, 5)
            )
            .await
            .unwrap()
    );
    assert!(store.audit_events(&other.org_id).await.unwrap().is_empty());
    // An entry filed under another organization is a bug, and nothing is written.
    let misfiled = store
        .disable_auto_reload(
            &org.org_id,
            None,
            audit_entry(&other, "autoreload.off", &org.org_id, 5),
        )
        .await;
    assert!(matches!(misfiled, Err(StoreError::Invariant(_))), "{misfiled:?}");
    assert!(store.auto_reload(&org.org_id).await.unwrap().unwrap().enabled);
    assert_eq!(store.auto_reload(&other.org_id).await.unwrap(), None);
    assert_healthy(store).await;
}

/// Goal: organization and workspace limits read back as written, are replaced wholesale,
/// refuse unknown subjects, and each change is logged; workspaces list default first.
pub(crate) async fn limits_round_trip_and_are_audited(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    // Created "before" the default workspace, yet listed after it.
    let research = store
        .create_workspace(&org.org_id, "wrkspc_research", "research", at(-5))
        .await
        .unwrap();
    store
        .create_workspace(&org.org_id, "wrkspc_batch", "batch", at(3))
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list_workspaces(&org.org_id)
        .await
        .unwrap()
        .into_iter()
        .map(|workspace| workspace.id)
        .collect();
    assert_eq!(
        ids,
        vec![org.workspace_id.as_str(), "wrkspc_research", "wrkspc_batch"]
    );
    assert!(store.list_workspaces("org_nobody").await.unwrap().is_empty());

    let billing = store
        .organization_billing(&org.org_id, at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.org_id, org.org_id);
    assert_eq!(billing.spend_limit, None);
    assert_eq!(billing.limit_set, None);
    assert!(billing.active_programmes.is_empty());
    assert_eq!(
        store.organization_billing("org_nobody", at(1)).await.unwrap(),
        None
    );

    let entry = |action: &str, subject: &str, minute| audit_entry(&org, action, subject, minute);
    assert!(
        store
            .set_organization_spend_limit(
                &org.org_id,
                Some(usd(50)),
                entry("limits.organization_spend_limit", &org.org_id, 1)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_organization_limit_set(
                &org.org_id,
                Some("enterprise"),
                entry("limits.limit_set", &org.org_id, 2)
            )
            .await
            .unwrap()
    );
    let billing = store
        .organization_billing(&org.org_id, at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing.spend_limit, Some(usd(50)));
    assert_eq!(billing.limit_set.as_deref(), Some("enterprise"));
    store
        .set_organization_spend_limit(
            &org.org_id,
            None,
            entry("limits.organization_spend_limit", &org.org_id, 3),
        )
        .await
        .unwrap();
    store
        .set_organization_limit_set(&org.org_id, None, entry("limits.limit_set", &org.org_id, 4))
        .await
        .unwrap();
    let billing = store
        .organization_billing(&org.org_id, at(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((billing.spend_limit, billing.limit_set), (None, None));
    let nobody = TestOrg {
        org_id: "org_nobody".to_owned(),
        workspace_id: String::new(),
    };
    assert!(
        !store
            .set_organization_spend_limit(
                "org_nobody",
                Some(usd(5)),
                audit_entry(&nobody, "limits.organization_spend_limit", "org_nobody", 5)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_organization_limit_set(
                "org_nobody",
                Some("x"),
                audit_entry(&nobody, "limits.limit_set", "org_nobody", 5)
            )
            .await
            .unwrap()
    );

    assert_eq!(
        store.workspace_limits(&research.id).await.unwrap(),
        WorkspaceLimits::default()
    );
    let full = WorkspaceLimits {
        spend_limit: Some(usd(20)),
        user_spend_limit: Some(usd(5)),
        rate_limits: BTreeMap::from([
            (
                "opus".to_owned(),
                RateLimitOverrides {
                    requests_per_minute: Some(10),
                    input_tokens_per_minute: None,
                    output_tokens_per_minute: Some(4_000),
                },
            ),
            (
                "haiku".to_owned(),
                RateLimitOverrides {
                    requests_per_minute: None,
                    input_tokens_per_minute: Some(u64::from(u32::MAX) * 4),
                    output_tokens_per_minute: None,
                },
            ),
        ]),
    };
    assert!(
        store
            .set_workspace_limits(&research.id, &full, entry("limits.workspace", &research.id, 6))
            .await
            .unwrap()
    );
    assert_eq!(store.workspace_limits(&research.id).await.unwrap(), full);
    assert_eq!(
        store.workspace_limits("wrkspc_batch").await.unwrap(),
        WorkspaceLimits::default()
    );
    let smaller = WorkspaceLimits {
        spend_limit: None,
        user_spend_limit: None,
        rate_limits: BTreeMap::from([("haiku".to_owned(), RateLimitOverrides::default())]),
    };
    store
        .set_workspace_limits(&research.id, &smaller, entry("limits.workspace", &research.id, 7))
        .await
        .unwrap();
    assert_eq!(store.workspace_limits(&research.id).await.unwrap(), smaller);
    assert!(
        !store
            .set_workspace_limits(
                "wrkspc_nobody",
                &full,
                entry("limits.workspace", "wrkspc_nobody", 8)
            )
            .await
            .unwrap()
    );
    // An entry of another organization, or a zero limit, is a caller bug that writes nothing.
    let globex = create_org(store, "globex").await;
    let misfiled = store
        .set_workspace_limits(
            &research.id,
            &full,
            audit_entry(&globex, "limits.workspace", &research.id, 8),
        )
        .await;
    assert!(matches!(misfiled, Err(StoreError::Invariant(_))), "{misfiled:?}");
    let zero = WorkspaceLimits {
        spend_limit: Some(NanoUsd::ZERO),
        ..WorkspaceLimits::default()
    };
    let refused = store
        .set_workspace_limits(&research.id, &zero, entry("limits.workspace", &research.id, 8))
        .await;
    assert!(matches!(refused, Err(StoreError::Invariant(_))), "{refused:?}");
    assert_eq!(store.workspace_limits(&research.id).await.unwrap(), smaller);

    // An entry recorded directly joins the log in order.
    store
        .record_audit(entry("keys.created", "apikey_1", 9))
        .await
        .unwrap();
    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(
        actions(&events),
        vec![
            "limits.organization_spend_limit",
            "limits.limit_set",
            "limits.organization_spend_limit",
            "limits.limit_set",
            "limits.workspace",
            "limits.workspace",
            "keys.created",
        ]
    );
    assert_eq!(events[4], entry("limits.workspace", &research.id, 6));
    assert!(store.audit_events(&globex.org_id).await.unwrap().is_empty());
    assert_healthy(store).await;
}

/// Goal: an organization's active programmes are those of its promotional lots that are
/// unexpired and still have credit to reserve, each named once, in order.
pub(crate) async fn active_programmes_are_unexpired_promotional_lots_with_credit(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let promotional = |lot_id: &str, programme: Option<&str>, amount, expires_at| {
        let mut lot = new_lot(
            &org,
            lot_id,
            LotKind::Promotional,
            amount,
            at(0),
            Some(at(expires_at)),
        );
        lot.programme = programme.map(str::to_owned);
        lot
    };
    for lot in [
        promotional("lot_startup_1", Some("startup"), usd(10), 100),
        promotional("lot_startup_2", Some("startup"), usd(5), 200),
        promotional("lot_research", Some("research"), usd(5), 10),
        promotional("lot_partner", Some("partner"), usd(2), 100),
        promotional("lot_plain", None, usd(1), 100),
    ] {
        store.grant_lot(lot).await.unwrap();
    }
    let programmes = async |minute| {
        store
            .organization_billing(&org.org_id, at(minute))
            .await
            .unwrap()
            .unwrap()
            .active_programmes
    };
    assert_eq!(programmes(1).await, vec!["partner", "research", "startup"]);
    let programme_of: BTreeMap<String, Option<String>> = store
        .lots(&org.org_id)
        .await
        .unwrap()
        .into_iter()
        .map(|view| (view.lot.lot_id, view.programme))
        .collect();
    assert_eq!(programme_of["lot_startup_2"].as_deref(), Some("startup"));
    assert_eq!(programme_of["lot_plain"], None);

    // Reserved to the last cent, a lot's programme is no longer active: research's lot
    // expires soonest so it is drawn first, then partner's (first by id at equal expiry).
    store
        .reserve(new_reservation(&org, "rsv_1", usd(5), at(1), at(50)))
        .await
        .unwrap();
    assert_eq!(programmes(2).await, vec!["partner", "startup"]);
    store
        .reserve(new_reservation(&org, "rsv_2", usd(2), at(2), at(50)))
        .await
        .unwrap();
    assert_eq!(programmes(3).await, vec!["startup"]);
    assert_eq!(programmes(100).await, vec!["startup"]);
    assert!(programmes(200).await.is_empty());

    // Only a promotional lot belongs to a programme.
    let mut purchase = new_lot(&org, "lot_purchase", LotKind::Purchase, usd(5), at(3), None);
    purchase.programme = Some("startup".to_owned());
    let refused = store.grant_lot(purchase).await;
    assert!(
        matches!(refused, Err(TxError::Store(StoreError::Invariant(_)))),
        "{refused:?}"
    );
    assert_eq!(store.lots(&org.org_id).await.unwrap().len(), 5);
    assert_healthy(store).await;
}

/// Goal: grants and expiry are logged in the same transaction as the money they move:
/// who granted what, with its expiry, and how much expired.
pub(crate) async fn grants_and_expiry_are_audited(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let mut promotional = new_lot(
        &org,
        "lot_promo",
        LotKind::Promotional,
        cents(2500),
        at(0),
        Some(at(10)),
    );
    promotional.programme = Some("startup".to_owned());
    promotional.actor = "user_admin".to_owned();
    promotional.memo = "startup programme".to_owned();
    store.grant_lot(promotional).await.unwrap();
    grant(store, &org, "lot_starter", LotKind::Starter, usd(5), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(1), at(1), at(60)))
        .await
        .unwrap();
    assert_eq!(store.expire_lots(at(10)).await.unwrap(), 1);

    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(
        actions(&events),
        vec!["credit.granted", "credit.granted", "credit.expired"]
    );
    assert_eq!(
        events[0],
        AuditEntry {
            org_id: org.org_id.clone(),
            actor: "user_admin".to_owned(),
            action: "credit.granted".to_owned(),
            subject: "lot_promo".to_owned(),
            details: "promotional lot of $25.00 (programme startup), expires 2026-01-01T00:10:00Z".to_owned(),
            reason: Some("startup programme".to_owned()),
            at: at(0),
        }
    );
    assert_eq!(events[1].details, "starter lot of $5.00, never expires");
    assert_eq!(events[1].actor, "tests");
    assert_eq!(events[2].actor, "system");
    assert_eq!(events[2].subject, "lot_promo");
    assert_eq!(events[2].at, at(10));
    assert!(events[2].details.starts_with("$24.00 "), "{}", events[2].details);
    assert_healthy(store).await;
}
