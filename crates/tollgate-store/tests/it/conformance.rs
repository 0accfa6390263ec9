//! The storage conformance suite: what every adapter behind `Store` must do, written once
//! against the public API. Each function takes a fresh `Backend` and ends with a clean
//! audit. A backend also offers two ways to look behind the façade: the journal, and a
//! raw write that corrupts a stored total (to prove the audit notices).

use std::sync::Arc;

use tollgate_core::attribution::{Attribution, ClientLabel};
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::{InsufficientCredit, LotKind};
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::BucketWidth;
use tollgate_store::{
    BalanceView, GrantRejection, KeyStatus, NameTaken, NewKey, ReserveRejection, SettleOutcome, Store,
    StoreError, StoredResponse, TxError, UsageStatus,
};

use crate::fixtures::{
    TestOrg, assert_healthy, at, cents, create_org, grant, new_lot, new_reservation, settlement,
    usage_record, usd,
};

/// One row of the journal, with the kinds of the accounts it moves money between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JournalRow {
    pub(crate) kind: String,
    pub(crate) lot_id: Option<String>,
    pub(crate) reservation_id: Option<String>,
    pub(crate) amount: NanoUsd,
    pub(crate) debit_kind: String,
    pub(crate) credit_kind: String,
}

pub(crate) trait Backend {
    fn store(&self) -> &Store;
    /// Whether the writer holds in memory the reservations written at their settlement
    /// (`NewReservation::written_at_settlement`): SQLite's, whose one writer owns the
    /// database.
    fn keeps_holds(&self) -> bool;
    /// The organization's journal, oldest first.
    async fn journal(&self, org_id: &str) -> Vec<JournalRow>;
    /// Adds to one stored total directly, bypassing the journal.
    async fn tamper_with_account(&self, org_id: &str, account_kind: &str, extra_credits_posted: NanoUsd);
    /// Adds to what a workspace's spend counter holds in the test epoch's month (January
    /// 2026), bypassing the reservations.
    async fn tamper_with_spend_counter(&self, org_id: &str, workspace_id: &str, extra_held: NanoUsd);
    /// Adds to what a user's spend counter in a workspace holds in January 2026, bypassing
    /// the reservations.
    async fn tamper_with_user_spend_counter(
        &self,
        org_id: &str,
        workspace_id: &str,
        user_id: &str,
        extra_held: NanoUsd,
    );
    /// Adds to an organization's cumulative purchases, bypassing the purchases.
    async fn tamper_with_cumulative_purchases(&self, org_id: &str, extra: NanoUsd);
    /// Makes the database refuse every `UPDATE` of a reservation from now on.
    async fn refuse_reservation_updates(&self);
}

fn usage_rows(journal: &[JournalRow]) -> Vec<(String, NanoUsd)> {
    journal
        .iter()
        .filter(|row| row.kind == "usage")
        .map(|row| (row.lot_id.clone().unwrap_or_default(), row.amount))
        .collect()
}

/// Goal: a new organization comes with its five system accounts, its default workspace and
/// an empty, balanced ledger.
pub(crate) async fn organization_creation_makes_accounts_and_default_workspace(backend: &impl Backend) {
    let store = backend.store();
    let organization = store
        .create_organization("org_acme", "acme", "wrkspc_acme", at(0))
        .await
        .expect("create");
    assert_eq!(organization.id, "org_acme");
    assert_eq!(organization.name, "acme");
    assert_eq!(organization.created_at, at(0));

    assert_eq!(
        store.organization("org_acme").await.unwrap(),
        Some(organization.clone())
    );
    assert_eq!(
        store.organization_by_name("acme").await.unwrap(),
        Some(organization.clone())
    );
    assert_eq!(store.organization("org_nobody").await.unwrap(), None);
    assert_eq!(store.list_organizations().await.unwrap(), vec![organization]);

    let workspace = store.default_workspace("org_acme").await.unwrap();
    assert_eq!(workspace.id, "wrkspc_acme");
    assert_eq!(workspace.name, "Default");
    assert!(workspace.is_default);
    assert_eq!(workspace.archived_at, None);
    assert_eq!(store.workspace("wrkspc_acme").await.unwrap(), Some(workspace));

    assert_eq!(
        store.balance("org_acme", at(1)).await.unwrap(),
        BalanceView::default()
    );
    let report = store.audit().await.unwrap();
    assert_eq!(report.accounts_checked, 5);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(backend.journal("org_acme").await.is_empty());
}

/// Goal: organization names are unique, workspace names unique within their org; a refused
/// creation writes nothing.
pub(crate) async fn duplicate_names_are_refused(backend: &impl Backend) {
    let store = backend.store();
    create_org(store, "acme").await;
    let refused = store
        .create_organization("org_other", "acme", "wrkspc_other", at(1))
        .await;
    assert!(matches!(refused, Err(TxError::Rejected(NameTaken(ref name))) if name == "acme"));
    assert_eq!(store.list_organizations().await.unwrap().len(), 1);
    assert_eq!(store.organization("org_other").await.unwrap(), None);
    assert_eq!(store.workspace("wrkspc_other").await.unwrap(), None);

    let refused = store
        .create_workspace("org_acme", "wrkspc_second_default", "Default", at(1))
        .await;
    assert!(matches!(refused, Err(TxError::Rejected(NameTaken(ref name))) if name == "Default"));
    store
        .create_workspace("org_acme", "wrkspc_research", "research", at(1))
        .await
        .unwrap();
    let refused = store
        .create_workspace("org_acme", "wrkspc_research_2", "research", at(2))
        .await;
    assert!(matches!(refused, Err(TxError::Rejected(NameTaken(_)))));

    // The same workspace name in another organization is fine.
    create_org(store, "globex").await;
    store
        .create_workspace("org_globex", "wrkspc_globex_research", "research", at(3))
        .await
        .unwrap();
    assert_healthy(store).await;
}

/// Goal: workspaces are found by id and by name, and only the first is the default.
pub(crate) async fn workspaces_are_created_and_found(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let workspace = store
        .create_workspace(&org.org_id, "wrkspc_research", "research", at(5))
        .await
        .unwrap();
    assert_eq!(workspace.org_id, org.org_id);
    assert!(!workspace.is_default);
    assert_eq!(workspace.created_at, at(5));
    assert_eq!(
        store.workspace("wrkspc_research").await.unwrap(),
        Some(workspace.clone())
    );
    assert_eq!(
        store.workspace_by_name(&org.org_id, "research").await.unwrap(),
        Some(workspace)
    );
    assert_eq!(store.workspace_by_name(&org.org_id, "nope").await.unwrap(), None);
    assert_eq!(
        store.workspace_by_name("org_nobody", "research").await.unwrap(),
        None
    );
    assert_eq!(
        store.default_workspace(&org.org_id).await.unwrap().id,
        org.workspace_id
    );
    assert!(matches!(
        store.default_workspace("org_nobody").await,
        Err(StoreError::Invariant(_))
    ));

    // A row that names another organization's workspace is refused by the schema, a
    // second line of defence behind the service's tenant checks.
    let other = create_org(store, "globex").await;
    grant(
        store,
        &other,
        "lot_globex",
        LotKind::Purchase,
        usd(5),
        at(0),
        None,
    )
    .await;
    let mut foreign = new_reservation(&other, "rsv_foreign", usd(1), at(1), at(10));
    foreign.workspace_id = org.workspace_id.clone();
    let refused = store.reserve(foreign).await;
    assert!(
        matches!(refused, Err(TxError::Store(StoreError::Database(_)))),
        "{refused:?}"
    );
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_eq!(
        store.balance(&other.org_id, at(1)).await.unwrap().available,
        usd(5)
    );
    assert_healthy(store).await;
}

/// Goal: every refused grant is refused for its own reason and writes nothing.
pub(crate) async fn grants_are_validated(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let refusal = |result| match result {
        Err(TxError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    };

    let zero = new_lot(&org, "lot_zero", LotKind::Purchase, NanoUsd::ZERO, at(0), None);
    assert_eq!(
        refusal(store.grant_lot(zero).await),
        GrantRejection::AmountNotPositive
    );
    let negative = new_lot(&org, "lot_negative", LotKind::Purchase, usd(-1), at(0), None);
    assert_eq!(
        refusal(store.grant_lot(negative).await),
        GrantRejection::AmountNotPositive
    );

    let mut unknown = new_lot(&org, "lot_unknown", LotKind::Purchase, usd(1), at(0), None);
    unknown.org_id = "org_nobody".to_owned();
    assert_eq!(
        refusal(store.grant_lot(unknown).await),
        GrantRejection::UnknownOrganization
    );

    let expired_now = new_lot(
        &org,
        "lot_late",
        LotKind::Promotional,
        usd(1),
        at(10),
        Some(at(10)),
    );
    assert_eq!(
        refusal(store.grant_lot(expired_now).await),
        GrantRejection::AlreadyExpired
    );
    let expired_before = new_lot(&org, "lot_later", LotKind::Purchase, usd(1), at(10), Some(at(9)));
    assert_eq!(
        refusal(store.grant_lot(expired_before).await),
        GrantRejection::AlreadyExpired
    );

    grant(
        store,
        &org,
        "lot_starter",
        LotKind::Starter,
        cents(500),
        at(0),
        None,
    )
    .await;
    let second_starter = new_lot(&org, "lot_starter_2", LotKind::Starter, usd(5), at(1), None);
    assert_eq!(
        refusal(store.grant_lot(second_starter).await),
        GrantRejection::StarterAlreadyGranted
    );

    // Only the one starter lot was written.
    let lots = store.lots(&org.org_id).await.unwrap();
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0].lot.lot_id, "lot_starter");
    assert_eq!(backend.journal(&org.org_id).await.len(), 1);
    let balance = store.balance(&org.org_id, at(1)).await.unwrap();
    assert_eq!(balance.granted, usd(5));
    assert_eq!(balance.available, usd(5));

    // Another organization still gets its own starter credit.
    let other = create_org(store, "globex").await;
    grant(
        store,
        &other,
        "lot_globex_starter",
        LotKind::Starter,
        usd(5),
        at(2),
        None,
    )
    .await;
    assert_healthy(store).await;
}

/// Goal: a grant is one journal row from the kind's source account to a new lot account.
pub(crate) async fn grant_posts_from_the_source_account_to_a_new_lot(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let purchase = grant(
        store,
        &org,
        "lot_purchase",
        LotKind::Purchase,
        usd(20),
        at(1),
        Some(at(500)),
    )
    .await;
    assert_eq!(purchase.amount, usd(20));
    assert_eq!(purchase.memo, "purchase for tests");
    assert_eq!(purchase.lot.lot_id, "lot_purchase");
    assert_eq!(purchase.lot.kind, LotKind::Purchase);
    assert_eq!(purchase.lot.granted_at, at(1));
    assert_eq!(purchase.lot.expires_at, Some(at(500)));
    assert_eq!(purchase.lot.account.credits_posted, usd(20));
    assert_eq!(purchase.lot.account.available(), usd(20));
    grant(
        store,
        &org,
        "lot_promo",
        LotKind::Promotional,
        usd(3),
        at(2),
        None,
    )
    .await;
    grant(store, &org, "lot_starter", LotKind::Starter, usd(1), at(3), None).await;

    let journal = backend.journal(&org.org_id).await;
    let summary: Vec<(&str, &str, &str, NanoUsd)> = journal
        .iter()
        .map(|row| {
            (
                row.kind.as_str(),
                row.debit_kind.as_str(),
                row.credit_kind.as_str(),
                row.amount,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("grant", "purchases", "lot", usd(20)),
            ("grant", "promotional_grants", "lot", usd(3)),
            ("grant", "starter_grants", "lot", usd(1)),
        ]
    );
    assert_eq!(journal[0].lot_id.as_deref(), Some("lot_purchase"));

    let lots = store.lots(&org.org_id).await.unwrap();
    assert_eq!(lots[0], purchase);
    assert_eq!(
        store.balance(&org.org_id, at(4)).await.unwrap(),
        BalanceView {
            available: usd(24),
            held: NanoUsd::ZERO,
            spent: NanoUsd::ZERO,
            expired: NanoUsd::ZERO,
            granted: usd(24),
        }
    );
    let report = store.audit().await.unwrap();
    assert_eq!(report.accounts_checked, 8);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Goal: a reservation takes lots soonest-expiring first (promotional before starter before
/// purchase at equal expiry, never-expiring last), and holds exactly its amount.
pub(crate) async fn reserve_draws_lots_in_drawdown_order(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_forever",
        LotKind::Purchase,
        usd(10),
        at(0),
        None,
    )
    .await;
    grant(
        store,
        &org,
        "lot_starter",
        LotKind::Starter,
        usd(3),
        at(0),
        Some(at(60)),
    )
    .await;
    grant(
        store,
        &org,
        "lot_promo",
        LotKind::Promotional,
        usd(5),
        at(0),
        Some(at(60)),
    )
    .await;
    grant(
        store,
        &org,
        "lot_soon",
        LotKind::Purchase,
        usd(4),
        at(0),
        Some(at(30)),
    )
    .await;

    let reservation = store
        .reserve(new_reservation(&org, "rsv_1", usd(15), at(1), at(11)))
        .await
        .unwrap();
    assert_eq!(reservation.id, "rsv_1");
    assert_eq!(reservation.org_id, org.org_id);
    assert_eq!(reservation.amount, usd(15));
    let lines: Vec<(&str, NanoUsd)> = reservation
        .lines
        .iter()
        .map(|line| (line.lot_id.as_str(), line.amount))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("lot_soon", usd(4)),
            ("lot_promo", usd(5)),
            ("lot_starter", usd(3)),
            ("lot_forever", usd(3)),
        ]
    );
    let balance = store.balance(&org.org_id, at(2)).await.unwrap();
    assert_eq!(balance.available, usd(7));
    assert_eq!(balance.held, usd(15));
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        1
    );
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 1);
    assert_eq!(
        store.pending_reservation_count(Some("org_nobody")).await.unwrap(),
        0
    );
    // Reserving writes no journal rows: pending amounts live on the reservation's lines.
    assert_eq!(backend.journal(&org.org_id).await.len(), 4);

    // The next reservation starts where the last one stopped.
    let next = store
        .reserve(new_reservation(&org, "rsv_2", usd(2), at(2), at(12)))
        .await
        .unwrap();
    assert_eq!(next.lines.len(), 1);
    assert_eq!(next.lines[0].lot_id, "lot_forever");
    assert_healthy(store).await;
}

/// Goal: a reservation that does not fit is refused with the credit available and changes
/// nothing, even when some lots could have covered part of it.
pub(crate) async fn insufficient_credit_leaves_everything_unchanged(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(3), at(0), None).await;
    grant(
        store,
        &org,
        "lot_b",
        LotKind::Promotional,
        usd(2),
        at(0),
        Some(at(100)),
    )
    .await;
    store
        .reserve(new_reservation(&org, "rsv_small", usd(1), at(1), at(10)))
        .await
        .unwrap();
    let lots_before = store.lots(&org.org_id).await.unwrap();
    let balance_before = store.balance(&org.org_id, at(2)).await.unwrap();

    let refused = store
        .reserve(new_reservation(&org, "rsv_big", usd(5), at(2), at(12)))
        .await;
    match refused {
        Err(TxError::Rejected(ReserveRejection::InsufficientCredit(InsufficientCredit {
            available,
            required,
        }))) => {
            assert_eq!(available, usd(4));
            assert_eq!(required, usd(5));
        }
        other => panic!("expected insufficient credit, got {other:?}"),
    }
    assert_eq!(store.lots(&org.org_id).await.unwrap(), lots_before);
    assert_eq!(store.balance(&org.org_id, at(2)).await.unwrap(), balance_before);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 1);

    // The refused id was not written: reserving it again (smaller) works.
    store
        .reserve(new_reservation(&org, "rsv_big", usd(4), at(3), at(13)))
        .await
        .unwrap();
    assert_eq!(
        store.balance(&org.org_id, at(3)).await.unwrap().available,
        NanoUsd::ZERO
    );

    // An organization with no credit at all is refused the same way.
    let broke = create_org(store, "broke").await;
    let refused = store
        .reserve(new_reservation(&broke, "rsv_broke", cents(1), at(1), at(10)))
        .await;
    assert!(matches!(
        refused,
        Err(TxError::Rejected(ReserveRejection::InsufficientCredit(InsufficientCredit { available, .. }))) if available == NanoUsd::ZERO
    ));
    assert_healthy(store).await;
}

/// Goal: a reservation is an upper bound on a request's cost, so it is positive; anything
/// else is a caller bug, reported as such and not written.
pub(crate) async fn reserve_of_a_non_positive_amount_is_a_bug(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(3), at(0), None).await;
    for amount in [NanoUsd::ZERO, usd(-1)] {
        let result = store
            .reserve(new_reservation(&org, "rsv_zero", amount, at(1), at(10)))
            .await;
        assert!(
            matches!(result, Err(TxError::Store(StoreError::Invariant(_)))),
            "{result:?}"
        );
    }
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_healthy(store).await;
}

/// Goal: a lot past its expiry is never reserved from, even before the expiry sweep ran.
pub(crate) async fn expired_lots_are_not_reserved_from(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_old",
        LotKind::Promotional,
        usd(10),
        at(0),
        Some(at(10)),
    )
    .await;
    grant(store, &org, "lot_new", LotKind::Purchase, usd(2), at(0), None).await;

    let balance = store.balance(&org.org_id, at(10)).await.unwrap();
    assert_eq!(balance.available, usd(2));
    let refused = store
        .reserve(new_reservation(&org, "rsv_1", usd(3), at(10), at(20)))
        .await;
    assert!(matches!(refused, Err(TxError::Rejected(_))));
    let reservation = store
        .reserve(new_reservation(&org, "rsv_2", usd(2), at(10), at(20)))
        .await
        .unwrap();
    assert_eq!(reservation.lines.len(), 1);
    assert_eq!(reservation.lines[0].lot_id, "lot_new");
    assert_healthy(store).await;
}

/// Goal: settling posts the cost lot by lot in the reservation's order, one journal row per
/// lot charged, releases the rest, and writes the usage record in the same transaction.
pub(crate) async fn settle_posts_one_journal_row_per_lot_and_releases_the_rest(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_a",
        LotKind::Purchase,
        usd(4),
        at(0),
        Some(at(100)),
    )
    .await;
    grant(store, &org, "lot_b", LotKind::Purchase, usd(6), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(7), at(1), at(11)))
        .await
        .unwrap();

    let outcome = store
        .settle(settlement(&org, "rsv_1", usd(5), at(2)))
        .await
        .unwrap();
    let balance_after = store.balance(&org.org_id, at(2)).await.unwrap();
    assert_eq!(
        outcome,
        SettleOutcome {
            charged: usd(5),
            released: usd(2),
            uncovered: NanoUsd::ZERO,
            already_ended: false,
            // What the settlement's write saw: the balance as read after it, and this
            // month's spend, which is the one charge.
            standing: Some(tollgate_store::Standing {
                available: balance_after.available,
                month_spend: usd(5),
            }),
        }
    );
    let journal = backend.journal(&org.org_id).await;
    assert_eq!(
        usage_rows(&journal),
        vec![("lot_a".to_owned(), usd(4)), ("lot_b".to_owned(), usd(1))]
    );
    assert!(
        journal
            .iter()
            .filter(|row| row.kind == "usage")
            .all(|row| row.debit_kind == "lot"
                && row.credit_kind == "spend"
                && row.reservation_id.as_deref() == Some("rsv_1"))
    );
    assert_eq!(
        store.balance(&org.org_id, at(3)).await.unwrap(),
        BalanceView {
            available: usd(5),
            held: NanoUsd::ZERO,
            spent: usd(5),
            expired: NanoUsd::ZERO,
            granted: usd(10),
        }
    );
    let records = store.usage_records(&org.org_id).await.unwrap();
    assert_eq!(records, vec![settlement(&org, "rsv_1", usd(5), at(2)).record]);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);

    // A cost that fits in the first lot touches only that lot.
    store
        .reserve(new_reservation(&org, "rsv_2", usd(5), at(3), at(13)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_2", cents(50), at(4)))
        .await
        .unwrap();
    let journal = backend.journal(&org.org_id).await;
    assert_eq!(usage_rows(&journal).len(), 3);
    assert_eq!(usage_rows(&journal)[2], ("lot_b".to_owned(), cents(50)));
    assert_healthy(store).await;
}

/// Goal: a reservation ends exactly once. Settling again changes nothing and writes no
/// second usage record, whatever the second cost says.
pub(crate) async fn settle_twice_is_idempotent(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(4), at(1), at(11)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_1", usd(3), at(2)))
        .await
        .unwrap();
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    let journal = backend.journal(&org.org_id).await;

    for cost in [usd(3), usd(1), NanoUsd::ZERO] {
        let again = store
            .settle(settlement(&org, "rsv_1", cost, at(3)))
            .await
            .unwrap();
        assert_eq!(
            again,
            SettleOutcome {
                already_ended: true,
                ..SettleOutcome::default()
            }
        );
    }
    assert_eq!(store.balance(&org.org_id, at(3)).await.unwrap(), balance);
    assert_eq!(backend.journal(&org.org_id).await, journal);
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 1);
    assert_healthy(store).await;
}

/// Goal: a void (cost zero) releases the whole reservation and posts nothing.
pub(crate) async fn void_returns_everything(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_a",
        LotKind::Promotional,
        usd(2),
        at(0),
        Some(at(100)),
    )
    .await;
    grant(store, &org, "lot_b", LotKind::Purchase, usd(8), at(0), None).await;
    let before = store.balance(&org.org_id, at(1)).await.unwrap();
    store
        .reserve(new_reservation(&org, "rsv_1", usd(5), at(1), at(11)))
        .await
        .unwrap();
    let outcome = store
        .settle(settlement(&org, "rsv_1", NanoUsd::ZERO, at(2)))
        .await
        .unwrap();
    assert_eq!(outcome.charged, NanoUsd::ZERO);
    assert_eq!(outcome.released, usd(5));
    assert!(!outcome.already_ended);
    assert_eq!(store.balance(&org.org_id, at(2)).await.unwrap(), before);
    assert!(usage_rows(&backend.journal(&org.org_id).await).is_empty());
    let records = store.usage_records(&org.org_id).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, UsageStatus::Failed);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_healthy(store).await;
}

/// Goal: a cost above the reservation (a metering bug upstream) is charged only up to the
/// reservation, and the excess is reported instead of overdrawing a lot.
pub(crate) async fn cost_above_the_reservation_is_capped(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(2), at(1), at(11)))
        .await
        .unwrap();
    let outcome = store
        .settle(settlement(&org, "rsv_1", usd(3), at(2)))
        .await
        .unwrap();
    assert_eq!(outcome.charged, usd(2));
    assert_eq!(outcome.released, NanoUsd::ZERO);
    assert_eq!(outcome.uncovered, usd(1));
    assert_eq!(store.balance(&org.org_id, at(2)).await.unwrap().spent, usd(2));
    assert_healthy(store).await;
}

/// Goal: settling a reservation that never existed, or for a negative cost, is a bug.
pub(crate) async fn settling_an_unknown_reservation_is_a_bug(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let result = store.settle(settlement(&org, "rsv_missing", usd(1), at(1))).await;
    assert!(matches!(result, Err(StoreError::Invariant(_))), "{result:?}");

    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(2), at(1), at(11)))
        .await
        .unwrap();
    let result = store.settle(settlement(&org, "rsv_1", usd(-1), at(2))).await;
    assert!(matches!(result, Err(StoreError::Invariant(_))), "{result:?}");
    // Nothing was written: the reservation is still open and can end normally.
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 1);
    assert!(store.usage_records(&org.org_id).await.unwrap().is_empty());
    store
        .settle(settlement(&org, "rsv_1", usd(1), at(3)))
        .await
        .unwrap();
    assert_healthy(store).await;
}

/// Goal: the reaper voids exactly the reservations whose deadline has come (deadline <= now),
/// records them as abandoned, and a late settlement of a reaped reservation does nothing.
pub(crate) async fn reaper_voids_only_past_deadline_reservations(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_early", usd(2), at(1), at(5)))
        .await
        .unwrap();
    store
        .reserve(new_reservation(&org, "rsv_late", usd(3), at(1), at(10)))
        .await
        .unwrap();

    assert_eq!(store.reap_reservations(at(4)).await.unwrap(), 0);
    assert_eq!(store.reap_reservations(at(5)).await.unwrap(), 1);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 1);
    let balance = store.balance(&org.org_id, at(5)).await.unwrap();
    assert_eq!(balance.held, usd(3));
    assert_eq!(balance.available, usd(7));

    let records = store.usage_records(&org.org_id).await.unwrap();
    assert_eq!(records.len(), 1);
    let abandoned = &records[0];
    assert_eq!(abandoned.request_id, "req_rsv_early");
    assert_eq!(abandoned.workspace_id, org.workspace_id);
    assert_eq!(abandoned.model, "claude-haiku-4-5");
    assert_eq!(abandoned.status, UsageStatus::Abandoned);
    assert_eq!(abandoned.cost, NanoUsd::ZERO);
    assert!(abandoned.usage.is_zero());
    assert_eq!(abandoned.started_at, at(1));
    assert_eq!(abandoned.ended_at, at(5));
    assert_eq!(abandoned.latency_ms, 4 * 60_000);

    let late = store
        .settle(settlement(&org, "rsv_early", usd(1), at(6)))
        .await
        .unwrap();
    assert!(late.already_ended);
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 1);

    assert_eq!(store.reap_reservations(at(30)).await.unwrap(), 1);
    assert_eq!(store.reap_reservations(at(31)).await.unwrap(), 0);
    let balance = store.balance(&org.org_id, at(31)).await.unwrap();
    assert_eq!(balance.available, usd(10));
    assert_eq!(balance.spent, NanoUsd::ZERO);
    assert_healthy(store).await;
}

/// Goal: the heartbeat moves the deadlines of the reservations it names, only forward and
/// only while they are pending, so the reaper passes over a request still running (#24).
pub(crate) async fn extended_reservations_outlive_their_first_deadline(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    for (id, deadline) in [("rsv_live", 5), ("rsv_other", 5), ("rsv_far", 60)] {
        store
            .reserve(new_reservation(&org, id, usd(1), at(1), at(deadline)))
            .await
            .unwrap();
    }
    let named = [
        "rsv_live".to_owned(),
        "rsv_far".to_owned(),
        "rsv_unknown".to_owned(),
    ];
    assert_eq!(store.extend_reservations(&[], at(20)).await.unwrap(), 0);
    assert_eq!(
        store.extend_reservations(&named, at(20)).await.unwrap(),
        1,
        "only rsv_live: rsv_far's deadline is later already, rsv_unknown does not exist"
    );
    assert_eq!(store.reap_reservations(at(5)).await.unwrap(), 1, "rsv_other only");
    assert_eq!(store.reap_reservations(at(19)).await.unwrap(), 0);
    store
        .settle(settlement(&org, "rsv_live", usd(1), at(19)))
        .await
        .unwrap();
    assert_eq!(
        store.extend_reservations(&named, at(70)).await.unwrap(),
        1,
        "a settled reservation stays settled; rsv_far moves on"
    );
    assert_eq!(store.reap_reservations(at(60)).await.unwrap(), 0);
    assert_eq!(store.reap_reservations(at(70)).await.unwrap(), 1);
    let balance = store.balance(&org.org_id, at(70)).await.unwrap();
    assert_eq!((balance.spent, balance.held), (usd(1), NanoUsd::ZERO));
    assert_healthy(store).await;
}

/// Goal: the reaper works in batches (to keep each write transaction short) and still ends
/// every overdue reservation in one call.
pub(crate) async fn reaper_ends_more_than_one_batch(backend: &impl Backend) {
    const OVERDUE: usize = 230;
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(1000), at(0), None).await;
    for reservation_no in 0..OVERDUE {
        let reservation_id = format!("rsv_{reservation_no:03}");
        store
            .reserve(new_reservation(&org, &reservation_id, usd(1), at(1), at(5)))
            .await
            .unwrap();
    }
    store
        .reserve(new_reservation(&org, "rsv_not_due", usd(1), at(1), at(6)))
        .await
        .unwrap();
    assert_eq!(store.reap_reservations(at(5)).await.unwrap(), OVERDUE);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 1);
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), OVERDUE);
    assert_eq!(store.balance(&org.org_id, at(5)).await.unwrap().held, usd(1));
    assert_healthy(store).await;
}

/// Goal: expiry moves only what is not reserved; reserved credit stays until its reservation
/// ends, and what a later void releases is swept by the next expiry run.
pub(crate) async fn expiry_moves_only_the_unreserved_remainder(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_expiring",
        LotKind::Purchase,
        usd(10),
        at(0),
        Some(at(10)),
    )
    .await;
    grant(store, &org, "lot_forever", LotKind::Purchase, usd(5), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_settled", usd(3), at(1), at(60)))
        .await
        .unwrap();
    store
        .reserve(new_reservation(&org, "rsv_voided", usd(4), at(1), at(60)))
        .await
        .unwrap();

    assert_eq!(store.expire_lots(at(9)).await.unwrap(), 0);
    assert_eq!(store.expire_lots(at(10)).await.unwrap(), 1);
    let balance = store.balance(&org.org_id, at(10)).await.unwrap();
    assert_eq!(balance.expired, usd(3));
    assert_eq!(balance.held, usd(7));
    assert_eq!(balance.available, usd(5));
    // Nothing left to move until a reservation ends.
    assert_eq!(store.expire_lots(at(11)).await.unwrap(), 0);

    // A settlement after expiry still charges the expired lot it reserved from.
    let outcome = store
        .settle(settlement(&org, "rsv_settled", usd(1), at(12)))
        .await
        .unwrap();
    assert_eq!(outcome.charged, usd(1));
    store
        .settle(settlement(&org, "rsv_voided", NanoUsd::ZERO, at(13)))
        .await
        .unwrap();
    let balance = store.balance(&org.org_id, at(13)).await.unwrap();
    assert_eq!(
        balance.available,
        usd(5),
        "released credit of an expired lot is not available"
    );
    assert_eq!(balance.held, NanoUsd::ZERO);

    assert_eq!(store.expire_lots(at(14)).await.unwrap(), 1);
    assert_eq!(store.expire_lots(at(15)).await.unwrap(), 0);
    assert_eq!(
        store.balance(&org.org_id, at(15)).await.unwrap(),
        BalanceView {
            available: usd(5),
            held: NanoUsd::ZERO,
            spent: usd(1),
            expired: usd(9),
            granted: usd(15),
        }
    );
    let expiry_rows: Vec<NanoUsd> = backend
        .journal(&org.org_id)
        .await
        .iter()
        .filter(|row| row.kind == "expiry")
        .inspect(|row| {
            assert_eq!(
                (row.debit_kind.as_str(), row.credit_kind.as_str()),
                ("lot", "expired")
            );
            assert_eq!(row.lot_id.as_deref(), Some("lot_expiring"));
        })
        .map(|row| row.amount)
        .collect();
    assert_eq!(expiry_rows, vec![usd(3), usd(6)]);
    assert_healthy(store).await;
}

/// Goal: the audit recomputes totals independently, so a total changed behind the store's
/// back is reported, naming the account.
pub(crate) async fn audit_detects_a_tampered_account(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", usd(4), at(1), at(11)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_1", usd(2), at(2)))
        .await
        .unwrap();
    store
        .reserve(new_reservation(&org, "rsv_2", usd(1), at(3), at(13)))
        .await
        .unwrap();
    assert_healthy(store).await;

    backend.tamper_with_account(&org.org_id, "spend", cents(1)).await;
    let report = store.audit().await.unwrap();
    assert_eq!(report.accounts_checked, 6);
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.contains("spend of org_acme") && problem.contains("credits_posted")),
        "{:#?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|problem| problem.starts_with("all accounts: posted debits")),
        "{:#?}",
        report.problems
    );
}

/// Goal: keys are stored by hash, found by hash or id, listed newest first (optionally by
/// workspace), and their status and last use can change.
pub(crate) async fn keys_are_inserted_found_listed_and_updated(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .create_workspace(&org.org_id, "wrkspc_research", "research", at(0))
        .await
        .unwrap();
    let new_key = |id: &str, kind: KeyKind, workspace_id: Option<&str>, minute: i64| NewKey {
        id: id.to_owned(),
        kind,
        org_id: org.org_id.clone(),
        workspace_id: workspace_id.map(str::to_owned),
        name: format!("{id} name"),
        secret_hash: format!("hash_of_{id}"),
        hint: format!("sk-tg-...{id}"),
        created_at: at(minute),
        expires_at: None,
        user_id: None,
        service_account_id: None,
        allowed_models: Default::default(),
    };
    let first = store
        .insert_key(new_key("apikey_1", KeyKind::Api, Some(&org.workspace_id), 1))
        .await
        .unwrap();
    assert_eq!(first.status, KeyStatus::Active);
    assert_eq!(first.last_used_at, None);
    assert_eq!(first.created_at, at(1));
    store
        .insert_key(new_key("apikey_2", KeyKind::Api, Some("wrkspc_research"), 2))
        .await
        .unwrap();
    store
        .insert_key(new_key("apikey_3", KeyKind::Api, Some(&org.workspace_id), 3))
        .await
        .unwrap();
    let admin = store
        .insert_key(new_key("adminkey_1", KeyKind::Admin, None, 4))
        .await
        .unwrap();

    assert_eq!(
        store.key_by_hash("hash_of_apikey_1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.key_by_hash("hash_of_nothing").await.unwrap(), None);
    assert_eq!(store.key("adminkey_1").await.unwrap(), Some(admin));
    assert_eq!(store.key("apikey_missing").await.unwrap(), None);

    let ids = |keys: Vec<tollgate_store::KeyRecord>| -> Vec<String> {
        keys.into_iter().map(|key| key.id).collect()
    };
    assert_eq!(
        ids(store.list_keys(&org.org_id, KeyKind::Api, None).await.unwrap()),
        vec!["apikey_3", "apikey_2", "apikey_1"]
    );
    assert_eq!(
        ids(store
            .list_keys(&org.org_id, KeyKind::Api, Some(&org.workspace_id))
            .await
            .unwrap()),
        vec!["apikey_3", "apikey_1"]
    );
    assert_eq!(
        ids(store.list_keys(&org.org_id, KeyKind::Admin, None).await.unwrap()),
        vec!["adminkey_1"]
    );
    assert!(
        store
            .list_keys("org_nobody", KeyKind::Api, None)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        store
            .set_key_status("apikey_1", KeyStatus::Inactive)
            .await
            .unwrap()
    );
    assert_eq!(
        store.key("apikey_1").await.unwrap().unwrap().status,
        KeyStatus::Inactive
    );
    assert!(
        store
            .set_key_status("apikey_1", KeyStatus::Archived)
            .await
            .unwrap()
    );
    assert_eq!(
        store.key("apikey_1").await.unwrap().unwrap().status,
        KeyStatus::Archived
    );
    assert!(
        !store
            .set_key_status("apikey_missing", KeyStatus::Active)
            .await
            .unwrap()
    );

    store.touch_key("apikey_2", at(10)).await.unwrap();
    store.touch_key("apikey_2", at(8)).await.unwrap();
    assert_eq!(
        store.key("apikey_2").await.unwrap().unwrap().last_used_at,
        Some(at(10))
    );
    store.touch_key("apikey_missing", at(10)).await.unwrap();

    // A second key with the same secret hash is refused by the store.
    let duplicate = store
        .insert_key(NewKey {
            secret_hash: "hash_of_apikey_1".to_owned(),
            ..new_key("apikey_4", KeyKind::Api, None, 5)
        })
        .await;
    assert!(matches!(duplicate, Err(StoreError::Database(_))), "{duplicate:?}");
    assert_healthy(store).await;
}

/// Goal: usage records of requests that never reserved are stored whole and listed oldest
/// first, per organization.
pub(crate) async fn usage_records_round_trip(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    let mut refused = usage_record(&org, "req_refused", NanoUsd::ZERO, at(5), at(6));
    refused.status = UsageStatus::Refused;
    refused.error_type = Some("invalid_request_error".to_owned());
    refused.latency_ms = 3;
    let earlier = usage_record(&org, "req_earlier", NanoUsd::ZERO, at(1), at(2));
    let elsewhere = usage_record(&other, "req_elsewhere", NanoUsd::ZERO, at(1), at(2));
    for record in [refused.clone(), earlier.clone(), elsewhere.clone()] {
        store.insert_usage_record(record).await.unwrap();
    }
    assert_eq!(
        store.usage_records(&org.org_id).await.unwrap(),
        vec![earlier, refused]
    );
    assert_eq!(store.usage_records(&other.org_id).await.unwrap(), vec![elsewhere]);
    assert!(store.usage_records("org_nobody").await.unwrap().is_empty());
    assert_healthy(store).await;
}

fn label(text: &str) -> Option<ClientLabel> {
    ClientLabel::parse(text.as_bytes())
}

/// Goal: a record's client session, agent and parent agent ids come back as written, both
/// from a direct insert and from a settlement on the hot-path writer; a record without
/// them comes back without them.
pub(crate) async fn usage_records_keep_their_client_attribution(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    let attribution = Attribution {
        session_id: label("5f0c1a9e-3b7d-4c2a-9e61-0a4b8c2d7e13"),
        agent_id: label("agent-7"),
        parent_agent_id: label("agent-1"),
    };
    let mut direct = usage_record(&org, "req_direct", NanoUsd::ZERO, at(1), at(2));
    direct.attribution = attribution.clone();
    store.insert_usage_record(direct.clone()).await.unwrap();
    store
        .reserve(new_reservation(&org, "rsv_1", usd(1), at(2), at(20)))
        .await
        .unwrap();
    let mut settled = settlement(&org, "rsv_1", cents(30), at(3));
    settled.record.attribution = Attribution {
        session_id: label("abc"),
        ..Attribution::default()
    };
    store.settle(settled.clone()).await.unwrap();
    let plain = usage_record(&org, "req_plain", NanoUsd::ZERO, at(4), at(5));
    store.insert_usage_record(plain.clone()).await.unwrap();
    assert_eq!(
        store.usage_records(&org.org_id).await.unwrap(),
        vec![direct, settled.record.clone(), plain]
    );
    assert_eq!(
        store
            .usage_record(&org.org_id, "req_rsv_1")
            .await
            .unwrap()
            .map(|record| record.attribution),
        Some(settled.record.attribution)
    );
    assert_healthy(store).await;
}

/// Goal: the usage read by session carries each charged record's session (`None` for none)
/// with the ledger's charge, bucketed at the width asked, and a session filter keeps only
/// those sessions; failed requests count nowhere, as in the rollup.
pub(crate) async fn usage_by_session_groups_and_filters_charged_records(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    grant(store, &other, "lot_b", LotKind::Purchase, usd(10), at(0), None).await;
    for (who, id, session, cost, minute) in [
        (&org, "rsv_a1", Some("session-a"), cents(150), 2),
        (&org, "rsv_a2", Some("session-a"), cents(25), 70),
        (&org, "rsv_b", Some("session-b"), cents(40), 3),
        (&org, "rsv_none", None, cents(5), 4),
        (&org, "rsv_failed", Some("session-a"), NanoUsd::ZERO, 5),
        (&other, "rsv_other", Some("session-a"), cents(99), 2),
    ] {
        store
            .reserve(new_reservation(who, id, usd(2), at(minute - 1), at(minute + 10)))
            .await
            .unwrap();
        let mut ended = settlement(who, id, cost, at(minute));
        ended.record.attribution.session_id = session.and_then(label);
        store.settle(ended).await.unwrap();
    }
    let summary = |rows: Vec<tollgate_store::UsageRollupRow>| {
        rows.into_iter()
            .map(|row| (row.bucket_start, row.session_id, row.requests, row.charged))
            .collect::<Vec<_>>()
    };
    let by_hour = summary(
        store
            .usage_by_session(&org.org_id, at(0), at(120), BucketWidth::Hour, &[])
            .await
            .unwrap(),
    );
    assert_eq!(by_hour.len(), 4, "{by_hour:#?}");
    for expected in [
        (at(0), Some("session-a".to_owned()), 1, cents(150)),
        (at(0), Some("session-b".to_owned()), 1, cents(40)),
        (at(0), None, 1, cents(5)),
        (at(60), Some("session-a".to_owned()), 1, cents(25)),
    ] {
        assert!(by_hour.contains(&expected), "{expected:?} in {by_hour:#?}");
    }
    let by_day = summary(
        store
            .usage_by_session(
                &org.org_id,
                at(0),
                at(24 * 60),
                BucketWidth::Day,
                &["session-a".to_owned()],
            )
            .await
            .unwrap(),
    );
    assert_eq!(by_day, vec![(at(0), Some("session-a".to_owned()), 2, cents(175))]);
    let two = summary(
        store
            .usage_by_session(
                &org.org_id,
                at(0),
                at(60),
                BucketWidth::Minute,
                &["session-b".to_owned(), "session-none".to_owned()],
            )
            .await
            .unwrap(),
    );
    assert_eq!(two, vec![(at(3), Some("session-b".to_owned()), 1, cents(40))]);
    assert_eq!(store.usage_rollup_problems().await.unwrap(), Vec::<String>::new());
    assert_healthy(store).await;
}

/// Goal: many requests racing for little credit never spend more than was granted, every
/// reservation ends, and the ledger stays balanced.
pub(crate) async fn concurrent_reservations_never_overspend(backend: &impl Backend) {
    const TASKS: usize = 200;
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    let credit = usd(50);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(30), at(0), None).await;
    grant(
        store,
        &org,
        "lot_b",
        LotKind::Promotional,
        usd(20),
        at(0),
        Some(at(1000)),
    )
    .await;

    let mut tasks = Vec::with_capacity(TASKS);
    for task_no in 0..TASKS {
        let store = store.clone();
        let org = Arc::clone(&org);
        tasks.push(tokio::spawn(async move {
            let reservation_id = format!("rsv_{task_no:03}");
            let reserved = store
                .reserve(new_reservation(&org, &reservation_id, usd(1), at(1), at(100)))
                .await;
            match reserved {
                Ok(_) => {}
                Err(TxError::Rejected(_)) => return None,
                Err(TxError::Store(error)) => panic!("reserve failed: {error}"),
            }
            tokio::task::yield_now().await;
            // Most requests cost their whole reservation, some less, some fail.
            let cost = match task_no % 5 {
                0 => NanoUsd::ZERO,
                1 => cents(40),
                _ => usd(1),
            };
            let outcome = store
                .settle(settlement(&org, &reservation_id, cost, at(2)))
                .await
                .expect("settle");
            assert!(!outcome.already_ended);
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
    assert!(succeeded >= 50, "only {succeeded} reservations succeeded");
    assert!(charged <= credit, "charged {charged} of {credit}");
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!(balance.spent, charged);
    assert_eq!(balance.held, NanoUsd::ZERO);
    assert_eq!(balance.available.checked_add(balance.spent), Some(credit));
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), succeeded);
    assert_healthy(store).await;
}

/// Goal: settlements, voids and the reaper racing to end the same reservations end each
/// exactly once: one winner per reservation, every other attempt sees `already_ended`,
/// and the ledger holds exactly the winners' charges.
pub(crate) async fn racing_ends_of_one_reservation_resolve_once(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    let reservations = 20;
    for index in 0..reservations {
        store
            .reserve(new_reservation(
                &org,
                &format!("rsv_{index}"),
                usd(2),
                at(1),
                at(5),
            ))
            .await
            .unwrap();
    }
    let mut attempts = Vec::new();
    for index in 0..reservations {
        for attempt in 0..4_i64 {
            let store = store.clone();
            // Costs 0 (void), 1, 2 and 3 dollars (above the reservation: capped) race.
            let ending = settlement(&org, &format!("rsv_{index}"), usd(attempt), at(6));
            attempts.push(tokio::spawn(async move { store.settle(ending).await.unwrap() }));
        }
    }
    let reaper = {
        let store = store.clone();
        tokio::spawn(async move { store.reap_reservations(at(6)).await.unwrap() })
    };
    let mut winners = 0;
    let mut charged = NanoUsd::ZERO;
    for attempt in attempts {
        let outcome = attempt.await.unwrap();
        if !outcome.already_ended {
            winners += 1;
            charged = charged.checked_add(outcome.charged).unwrap();
        }
    }
    let reaped = reaper.await.unwrap();
    assert_eq!(
        winners + reaped,
        reservations,
        "each reservation ended exactly once"
    );
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        0
    );
    let balance = store.balance(&org.org_id, at(7)).await.unwrap();
    assert_eq!(
        balance.spent, charged,
        "the ledger holds exactly the winners' charges"
    );
    assert_eq!(balance.held, NanoUsd::ZERO);
    assert_eq!(
        balance.available.checked_add(balance.spent).unwrap(),
        usd(100),
        "credit is conserved"
    );
    assert_healthy(store).await;
}

/// Goal: operations that fail (a settlement of an unknown reservation is a bug) or are
/// refused (no credit) while others run at the same moment — in one write batch where the
/// store groups commits — leave their neighbours' effects whole and write nothing themselves.
pub(crate) async fn a_failing_operation_leaves_its_neighbours_whole(backend: &impl Backend) {
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    let mut tasks = Vec::new();
    for task_no in 0..60_usize {
        let store = store.clone();
        let org = Arc::clone(&org);
        tasks.push(tokio::spawn(async move {
            match task_no % 3 {
                // A bug: nothing to settle.
                0 => store
                    .settle(settlement(&org, &format!("rsv_missing_{task_no}"), usd(1), at(2)))
                    .await
                    .is_err(),
                // Refused: more than the credit.
                1 => matches!(
                    store
                        .reserve(new_reservation(
                            &org,
                            &format!("rsv_big_{task_no}"),
                            usd(11),
                            at(1),
                            at(100)
                        ))
                        .await,
                    Err(TxError::Rejected(_))
                ),
                // Fits: reserve and settle for a tenth of a dollar.
                _ => {
                    let reservation_id = format!("rsv_ok_{task_no}");
                    store
                        .reserve(new_reservation(&org, &reservation_id, cents(10), at(1), at(100)))
                        .await
                        .is_ok()
                        && store
                            .settle(settlement(&org, &reservation_id, cents(10), at(2)))
                            .await
                            .is_ok()
                }
            }
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap(), "each operation had its own outcome");
    }
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!(
        balance.spent,
        usd(2),
        "the 20 good requests were charged, nothing else"
    );
    assert_eq!(balance.held, NanoUsd::ZERO);
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        0
    );
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 20);
    assert_healthy(store).await;
}

/// A response to keep, made at minute `minute`.
pub(crate) fn stored_response(org: &TestOrg, id: &str, minute: i64) -> StoredResponse {
    StoredResponse {
        id: id.to_owned(),
        org_id: org.org_id.clone(),
        workspace_id: org.workspace_id.clone(),
        api_key_id: "key_tests".to_owned(),
        created_at: at(minute),
        expires_at: at(minute + 60),
        input_items: r#"[{"role":"user","content":"hi"}]"#.to_owned(),
        response: format!(r#"{{"id":"{id}"}}"#),
    }
}

/// Goal (#21): stored responses ride the money's write batches, and one that cannot be
/// written (its id taken) fails alone: the reservations and settlements beside it, and
/// the other responses, all land.
pub(crate) async fn stored_responses_share_batches_and_fail_alone(backend: &impl Backend) {
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .insert_stored_response(stored_response(&org, "resp_taken", 1))
        .await
        .expect("a first response");
    let mut tasks = Vec::new();
    for task_no in 0..60_usize {
        let store = store.clone();
        let org = Arc::clone(&org);
        tasks.push(tokio::spawn(async move {
            match task_no % 3 {
                0 => store
                    .insert_stored_response(stored_response(&org, "resp_taken", 2))
                    .await
                    .is_err(),
                1 => store
                    .insert_stored_response(stored_response(&org, &format!("resp_{task_no}"), 2))
                    .await
                    .is_ok(),
                _ => {
                    let reservation_id = format!("rsv_{task_no}");
                    store
                        .reserve(new_reservation(&org, &reservation_id, cents(10), at(1), at(100)))
                        .await
                        .is_ok()
                        && store
                            .settle(settlement(&org, &reservation_id, cents(10), at(2)))
                            .await
                            .is_ok()
                }
            }
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap(), "each operation had its own outcome");
    }
    for task_no in (1..60).step_by(3) {
        let id = format!("resp_{task_no}");
        let kept = store
            .stored_response(&org.workspace_id, &id, at(3))
            .await
            .unwrap()
            .expect("kept");
        assert_eq!(kept, stored_response(&org, &id, 2));
    }
    let first = store
        .stored_response(&org.workspace_id, "resp_taken", at(3))
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(first.created_at, at(1), "the first keeps its place");
    assert_eq!(store.balance(&org.org_id, at(3)).await.unwrap().spent, usd(2));
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 20);
    assert_healthy(store).await;
}

/// Goal: a reservation is answered once the book has decided it, before its batch is
/// written, and its commit says whether it was: here the batch fails after the decision
/// (the id is taken, which only the write finds), so nothing of it exists, it holds
/// nothing, and its commit says so; the next one commits.
pub(crate) async fn a_reservation_decided_but_not_written_says_so_at_commit(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_taken", cents(10), at(1), at(100)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_taken", cents(10), at(2)))
        .await
        .unwrap();
    let (reserved, commit) = store
        .reserve_decided(new_reservation(&org, "rsv_taken", cents(30), at(3), at(100)))
        .await
        .expect("the book decides it");
    assert_eq!((reserved.id.as_str(), reserved.amount), ("rsv_taken", cents(30)));
    assert!(
        matches!(commit.committed().await, Err(TxError::Store(_))),
        "its batch failed, and so did the reservation alone"
    );
    let balance = store.balance(&org.org_id, at(4)).await.unwrap();
    assert_eq!((balance.held, balance.spent), (NanoUsd::ZERO, cents(10)));
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        0
    );
    let (_, commit) = store
        .reserve_decided(new_reservation(&org, "rsv_kept", cents(10), at(6), at(100)))
        .await
        .unwrap();
    commit.committed().await.expect("written");
    assert_eq!(store.balance(&org.org_id, at(7)).await.unwrap().held, cents(10));
    store
        .settle(settlement(&org, "rsv_kept", cents(10), at(7)))
        .await
        .unwrap();
    assert_eq!(store.balance(&org.org_id, at(8)).await.unwrap().spent, cents(20));
    assert_healthy(store).await;
}

/// Goal: an operation that fails only after it has started writing (here a settlement
/// whose month counter was tampered with, caught at the counter, after its journal rows and
/// accounts) is undone alone: its reservation stays pending with nothing of it written,
/// while the operations beside it — in the same write batch where the store groups
/// commits — stand whole.
pub(crate) async fn an_operation_failing_midway_is_undone_alone(backend: &impl Backend) {
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    store
        .create_workspace(&org.org_id, "wrkspc_broken", "broken", at(0))
        .await
        .unwrap();
    let broken = TestOrg {
        org_id: org.org_id.clone(),
        workspace_id: "wrkspc_broken".into(),
    };
    store
        .reserve(new_reservation(&broken, "rsv_broken", cents(10), at(1), at(100)))
        .await
        .unwrap();
    // Task 20 settles the broken reservation, every other one a good reservation.
    for task_no in (0..41).filter(|task_no| *task_no != 20) {
        let reservation_id = format!("rsv_ok_{task_no}");
        store
            .reserve(new_reservation(&org, &reservation_id, cents(10), at(1), at(100)))
            .await
            .unwrap();
    }
    // The broken workspace's counter no longer holds its reservation.
    backend
        .tamper_with_spend_counter(
            &org.org_id,
            "wrkspc_broken",
            NanoUsd::from_nanos(-cents(10).nanos()),
        )
        .await;
    let mut tasks = Vec::new();
    for task_no in 0..41_usize {
        let store = store.clone();
        let (owner, reservation_id) = match task_no {
            20 => (broken.clone(), "rsv_broken".to_owned()),
            _ => (org.as_ref().clone(), format!("rsv_ok_{task_no}")),
        };
        tasks.push(tokio::spawn(async move {
            let settled = store
                .settle(settlement(&owner, &reservation_id, cents(4), at(2)))
                .await;
            (reservation_id, settled.is_ok())
        }));
    }
    for task in tasks {
        let (reservation_id, settled) = task.await.unwrap();
        assert_eq!(settled, reservation_id != "rsv_broken", "{reservation_id}");
    }
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!(
        balance.spent,
        cents(4 * 40),
        "the 40 good settlements, nothing else"
    );
    assert_eq!(balance.held, cents(10), "the broken reservation is still held");
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        1
    );
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 40);
    let journal = backend.journal(&org.org_id).await;
    assert!(
        journal
            .iter()
            .all(|row| row.reservation_id.as_deref() != Some("rsv_broken")),
        "no journal row of the failed settlement"
    );
    // Repaired, it settles like any other, and the ledger is whole.
    backend
        .tamper_with_spend_counter(&org.org_id, "wrkspc_broken", cents(10))
        .await;
    store
        .settle(settlement(&broken, "rsv_broken", cents(4), at(2)))
        .await
        .unwrap();
    assert_healthy(store).await;
}

/// Goal: inside one write batch, credit a settlement releases funds a reservation queued
/// right after it: the batch decides each operation on the rows as the operations before
/// it left them, not as first read. Both calls are queued before the writer runs (on this
/// one-thread runtime, `join!` polls them in order), so on PostgreSQL they share a batch;
/// SQLite's writer thread may take them in one batch or two.
pub(crate) async fn credit_released_in_a_batch_funds_the_next_reservation_in_it(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, cents(10), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_first", cents(10), at(1), at(100)))
        .await
        .expect("the first reservation holds all the credit");
    let (voided, reserved) = tokio::join!(
        store.settle(settlement(&org, "rsv_first", NanoUsd::ZERO, at(2))),
        store.reserve(new_reservation(&org, "rsv_second", cents(10), at(2), at(100))),
    );
    assert_eq!(voided.expect("void the first").released, cents(10));
    reserved.expect("the released credit funds the reservation queued after the release");
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!((balance.held, balance.available), (cents(10), NanoUsd::ZERO));
    assert_healthy(store).await;
}

/// Goal: refusals inside a write batch leave the changes of the operations around them
/// whole: reservations racing for too little credit, many of them in one batch, hold
/// exactly the credit there is, and the month's counter and the ledger agree.
pub(crate) async fn refusals_inside_a_batch_keep_their_neighbours_changes(backend: &impl Backend) {
    const TASKS: usize = 30;
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(20), at(0), None).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task_no| {
            let store = store.clone();
            let org = Arc::clone(&org);
            tokio::spawn(async move {
                let reservation_id = format!("rsv_{task_no:03}");
                match store
                    .reserve(new_reservation(&org, &reservation_id, usd(1), at(1), at(100)))
                    .await
                {
                    Ok(_) => true,
                    Err(TxError::Rejected(_)) => false,
                    Err(TxError::Store(error)) => panic!("reserve failed: {error}"),
                }
            })
        })
        .collect();
    let mut reserved = 0;
    for task in tasks {
        reserved += usize::from(task.await.unwrap());
    }
    assert_eq!(reserved, 20, "exactly the credit there is");
    let balance = store.balance(&org.org_id, at(2)).await.unwrap();
    assert_eq!((balance.available, balance.held), (NanoUsd::ZERO, usd(20)));
    let spend = store
        .month_spend(&org.org_id, &org.workspace_id, at(2))
        .await
        .unwrap();
    assert_eq!(
        spend.organization,
        usd(20),
        "the month's counter holds every hold"
    );
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        20
    );
    assert_healthy(store).await;
}

/// Goal: settlements and new reservations of one organization in the same write batches,
/// in any order, all land: a batch that settles before it first reserves must not lose
/// either's change to the lots they share.
pub(crate) async fn settlements_and_reservations_mixed_in_batches_all_land(backend: &impl Backend) {
    const ROUNDS: usize = 40;
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    grant(store, &org, "lot_a", LotKind::Purchase, usd(100), at(0), None).await;
    for round in 0..ROUNDS {
        store
            .reserve(new_reservation(
                &org,
                &format!("rsv_first_{round}"),
                cents(10),
                at(1),
                at(100),
            ))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for round in 0..ROUNDS {
        for settles in [true, false] {
            let store = store.clone();
            let org = Arc::clone(&org);
            tasks.push(tokio::spawn(async move {
                if settles {
                    let id = format!("rsv_first_{round}");
                    store
                        .settle(settlement(&org, &id, cents(4), at(2)))
                        .await
                        .unwrap();
                } else {
                    let id = format!("rsv_second_{round}");
                    store
                        .reserve(new_reservation(&org, &id, cents(10), at(2), at(100)))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!(balance.spent, cents(4 * ROUNDS as i64));
    assert_eq!(balance.held, cents(10 * ROUNDS as i64));
    assert_eq!(balance.available, cents(10_000 - 14 * ROUNDS as i64));
    assert_healthy(store).await;
}

/// Goal: many settlements of one organization racing, each ending a reservation that draws
/// on several lots (so each writes several lot accounts, journal rows and the spend
/// account at once), all succeed without a contention error reaching the caller, charge
/// exactly what was planned, and leave an audit-clean ledger.
pub(crate) async fn concurrent_settlements_across_lots_are_exact(backend: &impl Backend) {
    const RESERVATIONS: usize = 200;
    const LOT_CENTS: i64 = 5;
    const RESERVATION_CENTS: i64 = 10;
    let store = backend.store();
    let org = Arc::new(create_org(store, "acme").await);
    // A 2-cent lot first, then 5-cent lots: every 10-cent reservation draws 2 + 5 + 3 cents
    // from three lots, and leaves 2 cents in the last for the next one.
    let lot_count = 1 + RESERVATIONS * (RESERVATION_CENTS / LOT_CENTS) as usize;
    let mut credit = NanoUsd::ZERO;
    for lot_no in 0..lot_count {
        let amount = if lot_no == 0 { cents(2) } else { cents(LOT_CENTS) };
        grant(
            store,
            &org,
            &format!("lot_{lot_no:04}"),
            LotKind::Purchase,
            amount,
            at(0),
            None,
        )
        .await;
        credit = credit.checked_add(amount).unwrap();
    }
    for reservation_no in 0..RESERVATIONS {
        let reservation = store
            .reserve(new_reservation(
                &org,
                &format!("rsv_{reservation_no:03}"),
                cents(RESERVATION_CENTS),
                at(1),
                at(100),
            ))
            .await
            .expect("reserve");
        assert!(
            reservation.lines.len() >= 3,
            "reservation {reservation_no} draws on {} lots",
            reservation.lines.len()
        );
    }

    // Nothing charged, part of the first lot, across two lots, everything.
    let cost_of = |reservation_no: usize| match reservation_no % 4 {
        0 => NanoUsd::ZERO,
        1 => cents(1),
        2 => cents(7),
        _ => cents(RESERVATION_CENTS),
    };
    let mut tasks = Vec::with_capacity(RESERVATIONS);
    for reservation_no in 0..RESERVATIONS {
        let store = store.clone();
        let org = Arc::clone(&org);
        let cost = cost_of(reservation_no);
        tasks.push(tokio::spawn(async move {
            let reservation_id = format!("rsv_{reservation_no:03}");
            store
                .settle(settlement(&org, &reservation_id, cost, at(2)))
                .await
                .unwrap_or_else(|error| panic!("settling {reservation_id} failed: {error}"))
        }));
    }
    let mut expected = NanoUsd::ZERO;
    for (reservation_no, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.expect("task");
        let cost = cost_of(reservation_no);
        assert!(!outcome.already_ended);
        assert_eq!(outcome.charged, cost);
        assert_eq!(
            outcome.released,
            cents(RESERVATION_CENTS).checked_sub(cost).unwrap()
        );
        assert_eq!(outcome.uncovered, NanoUsd::ZERO);
        expected = expected.checked_add(cost).unwrap();
    }

    let balance = store.balance(&org.org_id, at(3)).await.unwrap();
    assert_eq!(balance.spent, expected);
    assert_eq!(balance.held, NanoUsd::ZERO);
    assert_eq!(balance.granted, credit);
    assert_eq!(balance.available.checked_add(expected), Some(credit));
    let usage: Vec<(String, NanoUsd)> = usage_rows(&backend.journal(&org.org_id).await);
    let posted = usage.iter().fold(NanoUsd::ZERO, |total, (_, amount)| {
        total.checked_add(*amount).unwrap()
    });
    assert_eq!(posted, expected);
    assert_eq!(store.pending_reservation_count(None).await.unwrap(), 0);
    assert_eq!(
        store.usage_records(&org.org_id).await.unwrap().len(),
        RESERVATIONS
    );
    assert_healthy(store).await;
}

/// Goal: the writer's book never decides on a stale balance. Once an organization is in it,
/// credit granted through another connection funds the next reservation, and a total
/// changed behind the store's back is what the next reservation sees (the audit then
/// reports the tampering; the writer does not paper over it).
pub(crate) async fn the_book_follows_writes_made_elsewhere(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, cents(100), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_1", cents(60), at(1), at(100)))
        .await
        .expect("the first lot funds it");
    grant(store, &org, "lot_b", LotKind::Purchase, cents(100), at(2), None).await;
    let reserved = store
        .reserve(new_reservation(&org, "rsv_2", cents(120), at(3), at(100)))
        .await
        .expect("the lot granted after the book loaded funds it");
    assert_eq!(reserved.lines.len(), 2, "it draws on both lots: {reserved:?}");
    store
        .settle(settlement(&org, "rsv_1", cents(60), at(4)))
        .await
        .expect("settle");
    store
        .settle(settlement(&org, "rsv_2", cents(100), at(4)))
        .await
        .expect("settle");
    assert_healthy(store).await;
    // 40 cents of credit are left and $1.60 is this month's spend. Behind the store's
    // back, the workspace's counter gains 30 cents held: a workspace limit of $2 now leaves
    // 10 cents, where the book last saw 40.
    backend
        .tamper_with_spend_counter(&org.org_id, &org.workspace_id, cents(30))
        .await;
    let mut over_the_limit = new_reservation(&org, "rsv_3", cents(35), at(5), at(100));
    over_the_limit.spend_limits.workspace = Some(usd(2));
    let refused = store.reserve(over_the_limit).await;
    assert!(
        matches!(
            refused,
            Err(TxError::Rejected(ReserveRejection::SpendLimitReached(_)))
        ),
        "the counter as the table holds it decides: {refused:?}"
    );
}

/// Goal: a reservation written at its settlement holds its credit from the moment it is
/// decided, on every backend. A backend that keeps holds in memory writes no row of it
/// before its settlement, keeps the hold through a reload of its book (a grant written
/// beside the writer), and writes it with its settlement; one that does not writes it at
/// once. Either way the ledger ends the same, to the nano-dollar.
pub(crate) async fn a_reservation_written_at_its_settlement_holds_from_its_decision(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, cents(100), at(0), None).await;
    let mut held = new_reservation(&org, "rsv_held", cents(60), at(1), at(100));
    held.written_at_settlement = true;
    let (reserved, commit) = store.reserve_decided(held).await.expect("decided");
    assert_eq!(reserved.held_in_memory, backend.keeps_holds());
    commit
        .committed()
        .await
        .expect("nothing left to write, or written");
    assert_eq!(
        store.pending_reservation_count(Some(&org.org_id)).await.unwrap(),
        usize::from(!backend.keeps_holds()),
        "a row only where holds are written"
    );
    let balance = store.balance(&org.org_id, at(1)).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (cents(40), cents(60)),
        "balances show the hold wherever it is"
    );
    assert_eq!(
        store.lots(&org.org_id).await.unwrap()[0].lot.account.available(),
        cents(40)
    );
    let refused = store
        .reserve(new_reservation(&org, "rsv_more", cents(60), at(2), at(100)))
        .await;
    assert!(
        matches!(
            refused,
            Err(TxError::Rejected(ReserveRejection::InsufficientCredit(InsufficientCredit { available, .. })))
                if available == cents(40)
        ),
        "the hold counts at once: {refused:?}"
    );
    // Written beside the writer: SQLite's writer drops its book and loads it again.
    grant(store, &org, "lot_b", LotKind::Purchase, cents(10), at(3), None).await;
    let refused = store
        .reserve(new_reservation(&org, "rsv_more", cents(60), at(4), at(100)))
        .await;
    assert!(
        matches!(
            refused,
            Err(TxError::Rejected(ReserveRejection::InsufficientCredit(InsufficientCredit { available, .. })))
                if available == cents(50)
        ),
        "the hold outlives the reload: {refused:?}"
    );
    if backend.keeps_holds() {
        // A hold in memory is written by its settlement in its final state: its row is
        // inserted ended, never updated (nor ever among the pending reservations' indexes).
        backend.refuse_reservation_updates().await;
    }
    let settled = store
        .settle(settlement(&org, "rsv_held", cents(45), at(5)))
        .await
        .expect("settled");
    assert_eq!((settled.charged, settled.released), (cents(45), cents(15)));
    assert!(
        store
            .settle(settlement(&org, "rsv_held", cents(45), at(6)))
            .await
            .expect("ended once")
            .already_ended
    );
    let balance = store.balance(&org.org_id, at(7)).await.unwrap();
    assert_eq!((balance.held, balance.spent), (NanoUsd::ZERO, cents(45)));
    assert_eq!(
        usage_rows(&backend.journal(&org.org_id).await),
        vec![("lot_a".to_owned(), cents(45))]
    );
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 1);
    assert_healthy(store).await;
}

/// Goal: a reservation held in memory whose settlement cannot be written (here its usage
/// record names another organization, which the store refuses once it has started writing
/// the reservation) releases its credit: nothing of it is written, nothing is charged, and
/// the next request may use the credit. Where holds are written, the reservation stays
/// pending instead, as any whose settlement failed.
pub(crate) async fn a_hold_in_memory_whose_settlement_fails_is_released(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, cents(100), at(0), None).await;
    store
        .reserve(new_reservation(&org, "rsv_before", cents(10), at(1), at(100)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_before", cents(10), at(1)))
        .await
        .unwrap();
    let mut held = new_reservation(&org, "rsv_held", cents(60), at(2), at(100));
    held.written_at_settlement = true;
    let (_, commit) = store.reserve_decided(held).await.expect("decided");
    commit.committed().await.expect("held");
    let other = create_org(store, "other").await;
    let mut misfiled = settlement(&org, "rsv_held", cents(45), at(3));
    misfiled.record = usage_record(&other, "req_rsv_held", cents(45), at(3), at(3));
    let failed = store.settle(misfiled).await;
    // Where the hold was in memory, the caller is told it was released: nothing to retry.
    assert!(
        match failed {
            Err(StoreError::Released(ref cause)) => backend.keeps_holds() && cause.contains("invariant"),
            Err(StoreError::Invariant(_)) => !backend.keeps_holds(),
            _ => false,
        },
        "another organization's record: {failed:?}"
    );
    let balance = store.balance(&org.org_id, at(4)).await.unwrap();
    assert_eq!(balance.spent, cents(10), "nothing of it charged");
    assert_eq!(store.usage_records(&org.org_id).await.unwrap().len(), 1);
    if backend.keeps_holds() {
        assert_eq!(balance.held, NanoUsd::ZERO);
        store
            .reserve(new_reservation(&org, "rsv_after", cents(90), at(5), at(100)))
            .await
            .expect("the released credit funds the next request");
        store
            .settle(settlement(&org, "rsv_after", cents(90), at(6)))
            .await
            .unwrap();
    } else {
        assert_eq!(balance.held, cents(60), "still pending");
        store
            .settle(settlement(&org, "rsv_held", cents(45), at(6)))
            .await
            .unwrap();
    }
    assert_healthy(store).await;
}

/// Goal: expiry leaves what a reservation held in memory holds on an expiring lot, as it
/// leaves what a written one holds (`expiry_moves_only_the_unreserved_remainder`): the
/// sweep beside the writer counts the writer's holds in memory as reserved. The ledger ends
/// the same on every backend.
pub(crate) async fn expiry_leaves_what_a_hold_in_memory_holds(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(
        store,
        &org,
        "lot_expiring",
        LotKind::Purchase,
        usd(10),
        at(0),
        Some(at(10)),
    )
    .await;
    grant(store, &org, "lot_forever", LotKind::Purchase, usd(5), at(0), None).await;
    for (reservation_id, amount) in [("rsv_settled", usd(3)), ("rsv_voided", usd(4))] {
        let mut held = new_reservation(&org, reservation_id, amount, at(1), at(60));
        held.written_at_settlement = true;
        let (reserved, commit) = store.reserve_decided(held).await.unwrap();
        assert_eq!(reserved.held_in_memory, backend.keeps_holds());
        commit.committed().await.unwrap();
    }
    assert_eq!(store.expire_lots(at(10)).await.unwrap(), 1);
    assert_eq!(store.balance(&org.org_id, at(10)).await.unwrap().expired, usd(3));
    assert_eq!(store.expire_lots(at(11)).await.unwrap(), 0, "the holds stay");
    let outcome = store
        .settle(settlement(&org, "rsv_settled", usd(1), at(12)))
        .await
        .unwrap();
    assert_eq!(outcome.charged, usd(1));
    store
        .settle(settlement(&org, "rsv_voided", NanoUsd::ZERO, at(13)))
        .await
        .unwrap();
    assert_eq!(store.expire_lots(at(14)).await.unwrap(), 1);
    assert_eq!(
        store.balance(&org.org_id, at(15)).await.unwrap(),
        BalanceView {
            available: usd(5),
            held: NanoUsd::ZERO,
            spent: usd(1),
            expired: usd(9),
            granted: usd(15),
        }
    );
    assert_healthy(store).await;
}
