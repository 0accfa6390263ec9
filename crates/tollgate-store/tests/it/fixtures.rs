//! Shared test data: a fixed clock, amounts, and builders for the store's input rows.

use tollgate_core::Timestamp;
use tollgate_core::attribution::Attribution;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::SpendLimits;
use tollgate_core::usage::TokenUsage;
use tollgate_store::{LotView, NewLot, NewReservation, Settlement, Store, UsageRecord, UsageStatus};

/// 2026-01-01T00:00:00Z: every test's clock starts here.
const EPOCH_MILLIS: i64 = 1_767_225_600_000;

/// The instant `minutes` after the test epoch.
pub(crate) fn at(minutes: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(EPOCH_MILLIS + minutes * 60_000).expect("in range")
}

pub(crate) fn usd(whole_dollars: i64) -> NanoUsd {
    NanoUsd::from_usd(whole_dollars)
}

pub(crate) fn cents(whole_cents: i64) -> NanoUsd {
    NanoUsd::from_nanos(whole_cents * 10_000_000)
}

#[derive(Clone, Debug)]
pub(crate) struct TestOrg {
    pub(crate) org_id: String,
    pub(crate) workspace_id: String,
}

/// An organization named `name` with ids derived from the name.
pub(crate) async fn create_org(store: &Store, name: &str) -> TestOrg {
    let org = TestOrg {
        org_id: format!("org_{name}"),
        workspace_id: format!("wrkspc_{name}"),
    };
    store
        .create_organization(&org.org_id, name, &org.workspace_id, at(0))
        .await
        .expect("create organization");
    org
}

pub(crate) fn new_lot(
    org: &TestOrg,
    lot_id: &str,
    kind: LotKind,
    amount: NanoUsd,
    granted_at: Timestamp,
    expires_at: Option<Timestamp>,
) -> NewLot {
    NewLot {
        lot_id: lot_id.to_owned(),
        org_id: org.org_id.clone(),
        kind,
        amount,
        granted_at,
        expires_at,
        memo: format!("{} for tests", kind.as_str()),
        programme: None,
        actor: "tests".to_owned(),
    }
}

pub(crate) async fn grant(
    store: &Store,
    org: &TestOrg,
    lot_id: &str,
    kind: LotKind,
    amount: NanoUsd,
    granted_at: Timestamp,
    expires_at: Option<Timestamp>,
) -> LotView {
    store
        .grant_lot(new_lot(org, lot_id, kind, amount, granted_at, expires_at))
        .await
        .expect("grant")
}

pub(crate) fn new_reservation(
    org: &TestOrg,
    reservation_id: &str,
    amount: NanoUsd,
    created_at: Timestamp,
    deadline: Timestamp,
) -> NewReservation {
    NewReservation {
        reservation_id: reservation_id.to_owned(),
        org_id: org.org_id.clone(),
        workspace_id: org.workspace_id.clone(),
        api_key_id: None,
        user_id: None,
        request_id: format!("req_{reservation_id}"),
        model: "claude-haiku-4-5".to_owned(),
        amount,
        created_at,
        deadline,
        spend_limits: SpendLimits::default(),
        written_at_settlement: false,
    }
}

/// A successful request's record, `cost` as charged.
pub(crate) fn usage_record(
    org: &TestOrg,
    request_id: &str,
    cost: NanoUsd,
    started_at: Timestamp,
    ended_at: Timestamp,
) -> UsageRecord {
    UsageRecord {
        request_id: request_id.to_owned(),
        org_id: org.org_id.clone(),
        workspace_id: org.workspace_id.clone(),
        api_key_id: None,
        model: "claude-haiku-4-5".to_owned(),
        usage: TokenUsage {
            input_tokens: 120,
            output_tokens: 45,
            cache_creation_5m_input_tokens: 3,
            cache_creation_1h_input_tokens: 2,
            cache_read_input_tokens: 1,
            web_search_requests: 4,
            speed: Some(tollgate_core::usage::Speed::Fast),
            resident: None,
        },
        cost,
        status: if cost.is_positive() {
            UsageStatus::Succeeded
        } else {
            UsageStatus::Failed
        },
        error_type: None,
        latency_ms: 250,
        started_at,
        ended_at,
        attribution: Attribution::default(),
        served_model: Some("claude-haiku-4-5-20251001".to_owned()),
        multipliers: tollgate_core::pricing::Multipliers {
            batch: false,
            fast: true,
            geo: true,
        },
        // The whole cost on its output line, so that a report splits it exactly.
        lines: tollgate_core::pricing::CostLines {
            output: cost,
            ..Default::default()
        },
        upstream_attempts: vec![
            tollgate_core::catalog::UpstreamAttempt {
                deployment: "primary/claude-haiku-4-5".to_owned(),
                error: Some("overloaded (529)".to_owned()),
            },
            tollgate_core::catalog::UpstreamAttempt {
                deployment: "backup/claude-haiku-4-5".to_owned(),
                error: None,
            },
        ],
    }
}

pub(crate) fn settlement(org: &TestOrg, reservation_id: &str, cost: NanoUsd, now: Timestamp) -> Settlement {
    Settlement {
        reservation_id: reservation_id.to_owned(),
        cost,
        now,
        record: usage_record(org, &format!("req_{reservation_id}"), cost, now, now),
    }
}

pub(crate) async fn assert_healthy(store: &Store) {
    let report = store.audit().await.expect("audit");
    assert!(
        report.problems.is_empty(),
        "audit found problems: {:#?}",
        report.problems
    );
}
