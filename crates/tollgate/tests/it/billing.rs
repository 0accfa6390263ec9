//! The Console's billing contract end to end: rate limits with their headers and 429s,
//! monthly spend limits in their three shapes, purchases that advance the tier, auto-reload
//! that buys once however many requests cross the threshold, programmes and expiry.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_core::keys::KeyKind;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::payments::{TEST_CARD_DECLINED, TEST_CARD_OK};
use tollgate_service::{
    Grant, PurchaseRequest, PurchaseStatus, RateLimitOverrides, ServiceError, WorkspaceLimits,
};

use crate::helpers::{Options, TestApp, message_body, spawn_app_with};

fn contract() -> Options {
    Options {
        contract_tiers: true,
        manual_clock: true,
        ..Options::default()
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("header {name}"))
}

async fn purchase(
    app: &TestApp,
    usd: i64,
    card: &str,
    key: &str,
) -> Result<tollgate_service::Purchase, ServiceError> {
    app.tollgate
        .purchase(PurchaseRequest {
            org_id: &app.org_id,
            amount: NanoUsd::from_usd(usd),
            payment_method: card,
            idempotency_key: key,
            actor: "test",
        })
        .await
}

/// A key in a new workspace, for tests of workspace limits.
async fn workspace_key(app: &TestApp, name: &str) -> (String, String) {
    let workspace = app
        .tollgate
        .create_workspace(&app.org_id, name)
        .await
        .expect("workspace");
    let key = app
        .tollgate
        .create_key(KeyKind::Api, &app.org_id, Some(&workspace.id), "ws key")
        .await
        .expect("key");
    (workspace.id, key.secret.expose_secret().to_owned())
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn every_response_carries_the_rate_limit_headers() {
    let app = spawn_app_with(contract()).await;
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 200);
    // Evaluation tier, Sonnet: 50 RPM, 30,000 ITPM, 8,000 OTPM.
    assert_eq!(header(&response, "anthropic-ratelimit-requests-limit"), "50");
    assert_eq!(header(&response, "anthropic-ratelimit-requests-remaining"), "49");
    assert_eq!(
        header(&response, "anthropic-ratelimit-input-tokens-limit"),
        "30000"
    );
    assert_eq!(
        header(&response, "anthropic-ratelimit-output-tokens-limit"),
        "8000"
    );
    // 100 max_tokens taken from 8,000, rounded to the nearest thousand.
    assert_eq!(
        header(&response, "anthropic-ratelimit-output-tokens-remaining"),
        "8000"
    );
    assert_eq!(
        header(&response, "anthropic-ratelimit-tokens-limit"),
        "8000",
        "the most restrictive token limit"
    );
    let reset = header(&response, "anthropic-ratelimit-requests-reset");
    assert!(
        chrono::DateTime::parse_from_rfc3339(reset).is_ok() && reset.ends_with('Z'),
        "{reset}"
    );
}

#[tokio::test]
async fn over_the_rpm_limit_is_a_429_whose_retry_after_works() {
    let app = spawn_app_with(contract()).await;
    for _ in 0..50 {
        assert_eq!(
            app.post_messages(&message_body("claude-haiku-4-5"))
                .await
                .status(),
            200
        );
    }
    let before = app.balance().await;
    let refused = app.post_messages(&message_body("claude-haiku-4-5")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: i64 = header(&refused, "retry-after").parse().expect("whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let envelope: Value = refused.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "rate_limit_error");
    let message = envelope["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("50 requests per minute")
            && message.contains("claude-haiku-4-5")
            && message.contains(&app.org_id),
        "{message}"
    );
    assert_eq!(app.balance().await, before, "a refused request holds nothing");
    // Another class has its own bucket.
    assert_eq!(
        app.post_messages(&message_body("claude-sonnet-4-6"))
            .await
            .status(),
        200
    );
    let clock = app.clock.as_ref().expect("manual clock");
    clock.advance(chrono::Duration::seconds(retry_after - 1));
    assert_eq!(
        app.post_messages(&message_body("claude-haiku-4-5"))
            .await
            .status(),
        429,
        "not before retry-after"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        app.post_messages(&message_body("claude-haiku-4-5"))
            .await
            .status(),
        200,
        "at retry-after it succeeds"
    );
}

#[tokio::test]
async fn a_request_larger_than_the_bucket_is_told_so_not_throttled_forever() {
    let app = spawn_app_with(contract()).await;
    let mut body = message_body("claude-sonnet-4-6");
    // About 40,000 input tokens against Evaluation's 30,000 ITPM.
    body["messages"][0]["content"] = json!("word ".repeat(32_000));
    let response = app.post_messages(&body).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("retry-after").is_none());
    let envelope: Value = response.json().await.expect("json");
    let message = envelope["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("can never be admitted") && message.contains("30000"),
        "{message}"
    );
    assert_eq!(app.balance().await, (5_000_000_000, 0, 0));
    // The refusal consumed nothing: the full 50 requests are still there.
    let next = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(header(&next, "anthropic-ratelimit-requests-remaining"), "49");
}

#[tokio::test]
async fn a_workspace_rate_limit_refuses_without_touching_the_organizations_buckets() {
    let app = spawn_app_with(contract()).await;
    let (workspace_id, key) = workspace_key(&app, "batch").await;
    let limits = WorkspaceLimits {
        spend_limit: None,
        user_spend_limit: None,
        rate_limits: [(
            "sonnet".to_owned(),
            RateLimitOverrides {
                requests_per_minute: Some(2),
                ..RateLimitOverrides::default()
            },
        )]
        .into(),
    };
    app.tollgate
        .set_workspace_limits(&workspace_id, limits, "test", None)
        .await
        .expect("lower is allowed");
    for _ in 0..2 {
        let response = post_with_key(&app, &key, &message_body("claude-sonnet-4-6")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "anthropic-ratelimit-requests-limit"),
            "2",
            "the binding scope's figures"
        );
    }
    let refused = post_with_key(&app, &key, &message_body("claude-sonnet-4-6")).await;
    assert_eq!(refused.status(), 429);
    let envelope: Value = refused.json().await.expect("json");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .expect("message")
            .contains("workspace")
    );
    // The organization's bucket saw only the two admitted requests.
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(header(&response, "anthropic-ratelimit-requests-remaining"), "47");
    let too_high = WorkspaceLimits {
        spend_limit: None,
        user_spend_limit: None,
        rate_limits: [(
            "sonnet".to_owned(),
            RateLimitOverrides {
                requests_per_minute: Some(51),
                ..RateLimitOverrides::default()
            },
        )]
        .into(),
    };
    let error = app
        .tollgate
        .set_workspace_limits(&workspace_id, too_high, "test", None)
        .await
        .expect_err("never higher");
    assert!(error.to_string().contains("cannot exceed"), "{error}");
}

#[tokio::test]
async fn spend_limits_refuse_in_the_contracts_three_shapes() {
    let tiny = r#"
        [limit_sets.tiny]
        monthly_spend_limit_usd = "0.001"
        count_tokens_requests_per_minute = 100
        rate_limits.sonnet = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 100000 }
        rate_limits.opus = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 100000 }
        rate_limits.haiku = { requests_per_minute = 100, input_tokens_per_minute = 100000, output_tokens_per_minute = 100000 }
    "#;
    let app = spawn_app_with(Options {
        extra_config: tiny,
        ..contract()
    })
    .await;
    // Workspace limit: 400, "specified workspace API usage limits".
    let (workspace_id, key) = workspace_key(&app, "capped").await;
    let limits = WorkspaceLimits {
        spend_limit: Some(NanoUsd::from_nanos(1_000)),
        ..WorkspaceLimits::default()
    };
    app.tollgate
        .set_workspace_limits(&workspace_id, limits, "test", Some("pilot"))
        .await
        .expect("set");
    let response = post_with_key(&app, &key, &message_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    let message = envelope["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with(
            "You have reached your specified workspace API usage limits. You will regain access on "
        ),
        "{message}"
    );
    assert!(message.ends_with("-01 at 00:00 UTC."), "{message}");
    // Organization limit: 400, "specified API usage limits".
    app.tollgate
        .set_organization_spend_limit(&app.org_id, Some(NanoUsd::from_nanos(1_000)), "test", None)
        .await
        .expect("below the tier cap");
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.expect("json");
    assert!(
        envelope["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("You have reached your specified API usage limits.")
    );
    // Tier cap: 429 with error_code and without retry-after.
    app.tollgate
        .set_organization_spend_limit(&app.org_id, None, "test", None)
        .await
        .expect("cleared");
    app.tollgate
        .set_organization_limit_set(&app.org_id, Some("tiny"), "test", Some("test agreement"))
        .await
        .expect("assigned");
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
    let envelope: Value = response.json().await.expect("json");
    assert_eq!(envelope["error"]["type"], "rate_limit_error");
    assert_eq!(
        envelope["error"]["details"]["error_code"],
        "enforced_spend_limit_reached"
    );
    assert!(
        envelope["error"]["message"]
            .as_str()
            .expect("message")
            .contains("set based on your organization's API tier")
    );
    assert_eq!(
        app.balance().await,
        (5_000_000_000, 0, 0),
        "refusals spend nothing"
    );
    // Above the tier cap is refused with the contract's words.
    let error = app
        .tollgate
        .set_organization_spend_limit(&app.org_id, Some(NanoUsd::from_usd(1)), "test", None)
        .await
        .expect_err("above the cap");
    assert!(
        error
            .to_string()
            .contains("Your spend limit cannot exceed your current tier's cap"),
        "{error}"
    );
    let actions: Vec<String> = app
        .tollgate
        .audit_events(&app.org_id)
        .await
        .expect("audit")
        .into_iter()
        .map(|event| event.action)
        .collect();
    for action in [
        "credit.granted",
        "limits.workspace",
        "limits.organization_spend_limit",
        "limits.limit_set",
    ] {
        assert!(
            actions.iter().any(|logged| logged == action),
            "{action} audited: {actions:?}"
        );
    }
}

#[tokio::test]
async fn purchases_advance_the_tier_at_once_and_are_idempotent() {
    let app = spawn_app_with(contract()).await;
    assert_eq!(
        app.tollgate
            .tier_standing(&app.org_id)
            .await
            .expect("standing")
            .current,
        "Evaluation"
    );
    let first = purchase(&app, 5, TEST_CARD_OK, "order-1").await.expect("bought");
    assert_eq!(first.status, PurchaseStatus::Succeeded);
    assert_eq!(
        app.tollgate
            .tier_standing(&app.org_id)
            .await
            .expect("standing")
            .current,
        "Tier 1"
    );
    // A retry with the same key buys nothing more.
    let again = purchase(&app, 5, TEST_CARD_OK, "order-1")
        .await
        .expect("same purchase");
    assert_eq!(again.id, first.id);
    let conflict = purchase(&app, 6, TEST_CARD_OK, "order-1")
        .await
        .expect_err("same key, other amount");
    assert!(matches!(conflict, ServiceError::Conflict(_)), "{conflict}");
    purchase(&app, 35, TEST_CARD_OK, "order-2").await.expect("bought");
    let standing = app.tollgate.tier_standing(&app.org_id).await.expect("standing");
    assert_eq!(standing.current, "Tier 2");
    assert_eq!(standing.cumulative_purchases, NanoUsd::from_usd(40));
    assert_eq!(
        standing
            .next
            .as_ref()
            .map(|(name, missing)| (name.as_str(), *missing)),
        Some(("Tier 3", NanoUsd::from_usd(160)))
    );
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(
        header(&response, "anthropic-ratelimit-requests-limit"),
        "1000",
        "Tier 2 limits apply at once"
    );
    // Starter and promotional credit don't count toward the tier.
    app.tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Promotional,
            amount: NanoUsd::from_usd(500),
            expires_at: None,
            memo: "promo",
            programme: None,
            actor: "test",
        })
        .await
        .expect("granted");
    assert_eq!(
        app.tollgate
            .tier_standing(&app.org_id)
            .await
            .expect("standing")
            .current,
        "Tier 2"
    );
    // A single purchase above the tier's maximum, a declined card, a zero amount: refused, nothing bought.
    let available = app.balance().await.0;
    assert!(matches!(
        purchase(&app, 501, TEST_CARD_OK, "too-big").await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(matches!(
        purchase(&app, 10, TEST_CARD_DECLINED, "declined").await,
        Err(ServiceError::Payment(_))
    ));
    assert!(matches!(
        purchase(&app, 0, TEST_CARD_OK, "zero").await,
        Err(ServiceError::Invalid(_))
    ));
    assert_eq!(app.balance().await.0, available);
    let lots = app.tollgate.lots(&app.org_id).await.expect("lots");
    let purchased: Vec<_> = lots
        .iter()
        .filter(|lot| lot.lot.kind == LotKind::Purchase)
        .collect();
    assert_eq!(purchased.len(), 2);
    let year_later = purchased[0]
        .lot
        .granted_at
        .checked_add_months(chrono::Months::new(12));
    assert_eq!(
        purchased[0].lot.expires_at, year_later,
        "purchases expire a year after purchase"
    );
}

#[tokio::test]
async fn a_hundred_requests_crossing_the_threshold_reload_exactly_once() {
    let app = Arc::new(spawn_app_with(Options::default()).await);
    // Any charge takes the $5.00 starter credit below $4.9999.
    app.tollgate
        .set_auto_reload(
            &app.org_id,
            NanoUsd::parse_usd("4.9999").expect("usd"),
            NanoUsd::from_usd(20),
            TEST_CARD_OK,
            "test",
        )
        .await
        .expect("set");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.post_messages(&message_body("fake-sonnet"))
                .await
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    app.wait_for_settlement().await;
    for _ in 0..100 {
        let purchases = app.tollgate.purchases(&app.org_id).await.expect("purchases");
        if !purchases.is_empty()
            && app
                .tollgate
                .auto_reload(&app.org_id)
                .await
                .expect("settings")
                .and_then(|settings| settings.in_flight_since)
                .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let purchases = app.tollgate.purchases(&app.org_id).await.expect("purchases");
    assert_eq!(purchases.len(), 1, "exactly one reload: {purchases:?}");
    assert_eq!(purchases[0].amount, NanoUsd::from_usd(20));
    let (available, held, spent) = app.balance().await;
    assert_eq!(held, 0);
    assert_eq!(available + spent, 25_000_000_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_declined_reload_turns_auto_reload_off_and_spends_nothing_extra() {
    let app = spawn_app_with(Options::default()).await;
    app.tollgate
        .set_auto_reload(
            &app.org_id,
            NanoUsd::from_usd(5),
            NanoUsd::from_usd(20),
            TEST_CARD_DECLINED,
            "test",
        )
        .await
        .expect("set");
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
    let mut settings = None;
    for _ in 0..100 {
        settings = app.tollgate.auto_reload(&app.org_id).await.expect("settings");
        if settings.as_ref().is_some_and(|settings| !settings.enabled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settings = settings.expect("settings");
    assert!(!settings.enabled, "a declined reload turns it off");
    assert!(
        settings
            .notice
            .as_deref()
            .unwrap_or_default()
            .contains("declined"),
        "{:?}",
        settings.notice
    );
    let (available, _, spent) = app.balance().await;
    assert_eq!(available + spent, 5_000_000_000, "no credit appeared");
    let purchases = app.tollgate.purchases(&app.org_id).await.expect("purchases");
    assert!(
        purchases
            .iter()
            .all(|purchase| purchase.status == PurchaseStatus::Declined)
    );
}

#[tokio::test]
async fn a_programme_grant_uplifts_rate_limits_while_its_credit_lasts() {
    let app = spawn_app_with(contract()).await;
    let error = app
        .tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Promotional,
            amount: NanoUsd::from_usd(100),
            expires_at: None,
            memo: "x",
            programme: Some("unknown"),
            actor: "test",
        })
        .await
        .expect_err("unknown programme");
    assert!(error.to_string().contains("no programme"), "{error}");
    let expires_at = app.tollgate.now() + chrono::Duration::days(30);
    app.tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Promotional,
            amount: NanoUsd::from_usd(100),
            expires_at: Some(expires_at),
            memo: "startup credit",
            programme: Some("startup"),
            actor: "test",
        })
        .await
        .expect("granted");
    let response = app.post_messages(&message_body("claude-sonnet-4-6")).await;
    assert_eq!(
        header(&response, "anthropic-ratelimit-requests-limit"),
        "1000",
        "the startup limit set"
    );
    let clock = app.clock.as_ref().expect("manual clock");
    clock.advance(chrono::Duration::days(31));
    app.tollgate.maintain().await.expect("maintenance");
    let limits = app
        .tollgate
        .organization_limits(&app.org_id)
        .await
        .expect("limits");
    assert_eq!(
        limits.limits.rate_limits["sonnet"].requests_per_minute, 50,
        "back to the tier once the credit expired"
    );
}

#[tokio::test]
async fn expired_credit_leaves_the_balance_at_the_instant_and_is_reported() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        ..Options::default()
    })
    .await;
    let clock = app.clock.as_ref().expect("manual clock");
    let expires_at = app.tollgate.now() + chrono::Duration::hours(1);
    app.tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Promotional,
            amount: NanoUsd::from_usd(7),
            expires_at: Some(expires_at),
            memo: "trial",
            programme: None,
            actor: "test",
        })
        .await
        .expect("granted");
    assert_eq!(app.balance().await.0, 12_000_000_000);
    clock.set(expires_at);
    assert_eq!(
        app.balance().await.0,
        5_000_000_000,
        "gone at the instant, before any sweep"
    );
    app.tollgate.maintain().await.expect("maintenance");
    let balance = app.tollgate.balance(&app.org_id).await.expect("balance");
    assert_eq!(balance.expired, NanoUsd::from_usd(7));
    let events = app.tollgate.audit_events(&app.org_id).await.expect("audit");
    assert!(events.iter().any(|event| event.action == "credit.expired"));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn parallel_requests_never_pass_a_low_rpm_or_a_low_spend_limit() {
    // The clock stands still, so no bucket refills while 120 requests race for 50 RPM.
    let app = Arc::new(spawn_app_with(contract()).await);
    let mut tasks = Vec::new();
    for _ in 0..120 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.post_messages(&message_body("claude-haiku-4-5"))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        50,
        "exactly the RPM limit"
    );
    assert_eq!(statuses.iter().filter(|status| **status == 429).count(), 70);

    // A workspace capped at $0.01 a month: each request reserves about $0.008 and is charged
    // $0.00033, so one fits at a time and a few in sequence; never more than $0.01. Fewer
    // requests than the Sonnet RPM, so only the spend limit refuses.
    let (workspace_id, key) = workspace_key(&app, "capped").await;
    let limit = NanoUsd::parse_usd("0.01").expect("usd");
    let limits = WorkspaceLimits {
        spend_limit: Some(limit),
        ..WorkspaceLimits::default()
    };
    app.tollgate
        .set_workspace_limits(&workspace_id, limits, "test", None)
        .await
        .expect("set");
    let key = Arc::new(key);
    let mut tasks = Vec::new();
    for _ in 0..45 {
        let (app, key) = (app.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            post_with_key(&app, &key, &message_body("fake-sonnet"))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        match task.await.expect("task") {
            200 => succeeded += 1,
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    app.wait_for_settlement().await;
    let spent = app
        .tollgate
        .month_spend(&app.org_id, Some(&workspace_id))
        .await
        .expect("spend");
    assert!(spent <= limit, "spent {spent} of {limit}");
    assert!(succeeded > 0);
    assert_eq!(
        spent,
        NanoUsd::from_nanos(succeeded * 330_000),
        "each success charged exactly its usage"
    );
    app.assert_ledger_clean().await;
}
