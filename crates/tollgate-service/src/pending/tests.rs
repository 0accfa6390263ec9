//! Pending settlements survive a restart exactly as they were made, and a settlement the
//! store took leaves the file.

use tollgate_core::attribution::{Attribution, ClientLabel};
use tollgate_core::money::NanoUsd;
use tollgate_core::usage::TokenUsage;
use tollgate_store::{Settlement, UsageRecord, UsageStatus};

use crate::pending::{PENDING_SETTLEMENTS_FILE, PendingSettlements, decode, encode};

fn settlement(reservation_id: &str, cost_nanos: i64) -> Settlement {
    let at =
        |millis: i64| chrono::DateTime::from_timestamp_millis(1_780_000_000_000 + millis).expect("in range");
    Settlement {
        reservation_id: reservation_id.to_owned(),
        cost: NanoUsd::from_nanos(cost_nanos),
        now: at(900),
        record: UsageRecord {
            request_id: format!("req_{reservation_id}"),
            org_id: "org_1".to_owned(),
            workspace_id: "wrkspc_1".to_owned(),
            api_key_id: Some("apikey_1".to_owned()),
            model: "claude-sonnet-4-6".to_owned(),
            usage: TokenUsage {
                input_tokens: 7,
                output_tokens: 99,
                cache_creation_5m_input_tokens: 1,
                cache_creation_1h_input_tokens: 2,
                cache_read_input_tokens: 3,
                web_search_requests: 5,
                speed: Some(tollgate_core::usage::Speed::Fast),
                resident: None,
            },
            cost: NanoUsd::from_nanos(cost_nanos),
            status: UsageStatus::ClientDisconnected,
            error_type: Some("drain_bound_reached".to_owned()),
            latency_ms: 900,
            started_at: at(0),
            ended_at: at(900),
            attribution: Attribution {
                session_id: ClientLabel::parse(b"5f0c2a1e-session"),
                agent_id: None,
                parent_agent_id: ClientLabel::parse(b"agent-0"),
            },
            served_model: Some("claude-haiku-4-5".to_owned()),
            multipliers: tollgate_core::pricing::Multipliers {
                batch: true,
                fast: false,
                geo: true,
            },
            lines: tollgate_core::pricing::CostLines {
                input: NanoUsd::from_nanos(7),
                web_search: NanoUsd::from_nanos(50_000_000),
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
        },
    }
}

#[test]
fn a_settlement_reads_back_as_it_was_written() {
    let original = settlement("rsv_1", 1_506_000);
    assert_eq!(decode(&encode(&original)), Some(original.clone()));
    let mut bare = original;
    bare.record.api_key_id = None;
    bare.record.error_type = None;
    bare.record.attribution = Attribution::default();
    assert_eq!(decode(&encode(&bare)), Some(bare));
    assert_eq!(decode("{\"reservation_id\":\"rsv_1\""), None, "a torn line");
}

#[test]
fn pending_settlements_survive_a_restart_until_forgotten() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join(PENDING_SETTLEMENTS_FILE);
    let pending = PendingSettlements::default();
    assert_eq!(pending.open(path.clone()).expect("opens"), 0);
    pending.keep(settlement("rsv_1", 10));
    pending.keep(settlement("rsv_2", 20));
    // A crash mid-append leaves a torn last line.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).expect("file") + "{\"reservation_id\":",
    )
    .expect("write");

    let restarted = PendingSettlements::default();
    assert_eq!(restarted.open(path.clone()).expect("opens"), 2);
    assert_eq!(
        restarted.snapshot(),
        [settlement("rsv_1", 10), settlement("rsv_2", 20)]
    );
    restarted.forget(&["rsv_1".to_owned()]);
    assert_eq!(restarted.reservation_ids(), ["rsv_2"]);

    let again = PendingSettlements::default();
    assert_eq!(again.open(path.clone()).expect("opens"), 1);
    again.forget(&["rsv_2".to_owned()]);
    assert!(!path.exists(), "nothing pending, no file");
}
