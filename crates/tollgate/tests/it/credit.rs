//! Prepaid credit: requests the balance can't cover are refused before the upstream is
//! called; under concurrency the total charged never exceeds the credit; reservations of
//! requests that never end are voided by the reaper, and those whose client left while
//! they were being written end at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Value, json};
use tollgate_core::attribution::Attribution;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{Finish, Grant, RequestPlan, UsageStatus};
use tollgate_testkit::{Behavior, Reply};

use crate::helpers::{Options, message_body, spawn_app_with};

const CREDIT_TOO_LOW: &str = "Your credit balance is too low to access the tollgate API. Please go to Plans & Billing to upgrade or purchase credits.";

#[tokio::test]
async fn without_credit_requests_are_refused_before_the_upstream() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "0.001",
        ..Options::default()
    })
    .await;
    // 100 max_tokens of Sonnet output alone may cost $0.0015: more than the balance.
    let response = app.post_messages(&message_body("fake-sonnet")).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "invalid_request_error");
    assert_eq!(envelope["error"]["message"], CREDIT_TOO_LOW);
    assert_eq!(app.fake.request_count(), 0, "the upstream was never called");
    assert_eq!(app.balance().await, (1_000_000, 0, 0));
    let records = app.usage_records().await;
    assert_eq!(records[0].status.as_str(), "refused");
    // A purchase makes the same request succeed at once.
    app.tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Purchase,
            amount: NanoUsd::from_usd(10),
            expires_at: None,
            memo: "test purchase",
            programme: None,
            actor: "test",
        })
        .await
        .expect("granted");
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
}

#[tokio::test]
async fn count_tokens_is_refused_on_an_empty_balance() {
    let app = spawn_app_with(Options {
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let response = app
        .client
        .post(app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &app.api_key)
        .json(&json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["message"], CREDIT_TOO_LOW);
}

#[tokio::test]
async fn two_hundred_parallel_requests_never_spend_more_than_the_credit() {
    // Each request reserves its bound (body bytes + overhead at the dearest input price, plus
    // 100 output tokens) but the upstream reports little usage, so many fit in sequence and
    // only some fit at once. Credit: $0.50.
    let app = Arc::new(
        spawn_app_with(Options {
            starter_grant_usd: "0.50",
            ..Options::default()
        })
        .await,
    );
    app.fake.set_behavior(Behavior::Ok(Reply {
        input_tokens: 2_000,
        output_tokens: 100,
        latency: Duration::from_millis(20),
        ..Reply::default()
    }));
    let mut tasks = Vec::new();
    for index in 0..200 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = message_body("fake-sonnet");
            body["stream"] = json!(index % 2 == 0);
            let response = app.post_messages(&body).await;
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }));
    }
    let mut succeeded = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            200 => succeeded += 1,
            400 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    app.wait_for_settlement().await;
    let (available, held, spent) = app.balance().await;
    let credit = 500_000_000;
    assert!(spent <= credit, "spent {spent} of {credit}");
    assert_eq!(held, 0);
    assert_eq!(available + spent, credit);
    // Every success is charged exactly 2,000 input and 100 output tokens at Sonnet prices.
    assert_eq!(spent, succeeded * (2_000 * 3_000 + 100 * 15_000));
    assert!(
        succeeded > 0 && refused > 0,
        "{succeeded} succeeded, {refused} refused"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_reaper_voids_reservations_of_requests_that_never_ended() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let (caller, model) = app.caller_and_model("claude-sonnet-4-6").await;
    // A request that reserved and then "died" with its process: nothing ran to end it. The
    // process is a second service on the same database, so that its heartbeat (which keeps
    // a running request's reservation from the reaper) is not the app's.
    let clock = app.clock.clone().expect("manual clock");
    let store = tollgate::app::open_store(&app.config).await.expect("store");
    let crashed = tollgate::app::service(&app.config, store, clock)
        .await
        .expect("service");
    let open = crashed
        .begin(
            &caller,
            RequestPlan {
                request_id: "req_crashed",
                model: &model,
                cost_bound: NanoUsd::from_usd(1),
                input_tokens_estimate: 10,
                max_tokens: 10,
                attribution: &Attribution::default(),
                multipliers: Default::default(),
                priced_at: app.tollgate.now(),
                settled_before_reply: false,
            },
        )
        .await
        .expect("reserved");
    std::mem::forget(open);
    assert_eq!(app.balance().await.1, 1_000_000_000, "held while in flight");
    let clock = app.clock.as_ref().expect("manual clock");
    clock.advance(chrono::Duration::minutes(14));
    assert_eq!(
        app.tollgate
            .maintain()
            .await
            .expect("maintain")
            .reservations_voided,
        0,
        "not before the bound"
    );
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(
        app.tollgate
            .maintain()
            .await
            .expect("maintain")
            .reservations_voided,
        1
    );
    assert_eq!(
        app.balance().await,
        (5_000_000_000, 0, 0),
        "released in full, nothing charged"
    );
    assert_eq!(
        app.tollgate
            .maintain()
            .await
            .expect("maintain")
            .reservations_voided,
        0,
        "voided once"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_request_dropped_while_its_hold_is_written_leaves_no_hold() {
    let app = spawn_app_with(Options::default()).await;
    let (caller, model) = app.caller_and_model("claude-sonnet-4-6").await;
    let attribution = Attribution::default();
    let plan = |request_id| RequestPlan {
        request_id,
        model: &model,
        // $0.10: all 22 fit in the $5 starter grant at once.
        cost_bound: NanoUsd::from_nanos(100_000_000),
        input_tokens_estimate: 10,
        max_tokens: 10,
        attribution: &attribution,
        multipliers: Default::default(),
        priced_at: app.tollgate.now(),
        settled_before_reply: false,
    };
    // A first request fills the limit caches, so that the next ones reach their holds at
    // their first poll.
    let first = app
        .tollgate
        .begin(&caller, plan("req_first"))
        .await
        .expect("reserved");
    app.tollgate
        .finish(
            first,
            Finish {
                usage: Default::default(),
                status: UsageStatus::Failed,
                error_type: None,
            },
        )
        .await
        .expect("ended");
    // Handlers dropped while their holds are being written, as when their clients
    // disconnect: polled once, then dropped.
    let dropped: Vec<String> = (0..20).map(|n| format!("req_dropped_{n}")).collect();
    for request_id in &dropped {
        let begin = app.tollgate.begin(&caller, plan(request_id));
        assert!(begin.now_or_never().is_none(), "the hold is still being written");
    }
    // And a reservation dropped by its owner without being finished.
    drop(
        app.tollgate
            .begin(&caller, plan("req_forgotten"))
            .await
            .expect("reserved"),
    );
    app.wait_for_settlement().await;
    assert_eq!(
        app.balance().await,
        (5_000_000_000, 0, 0),
        "every hold released, nothing charged"
    );
    let records = app.usage_records().await;
    let ended: Vec<_> = records
        .iter()
        .filter(|record| record.request_id != "req_first")
        .collect();
    assert_eq!(ended.len(), dropped.len() + 1, "one record per request");
    for record in ended {
        assert_eq!(record.status.as_str(), "client_disconnected");
        assert_eq!(record.cost, NanoUsd::ZERO);
    }
    app.assert_ledger_clean().await;
}
