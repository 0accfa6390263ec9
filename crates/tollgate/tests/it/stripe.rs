//! Stripe end to end against the fake Stripe server: credit arrives only with Stripe's
//! signed event, once however often (or however concurrently) it is delivered and in
//! whatever order events come; forged, stale and rotated signatures; off-session charges
//! for auto-reload, declined and needing authentication. Refunds and lost disputes take
//! back what the purchase's lot still has and record the rest, once however often their
//! events come, and lower the tier; receipts are scoped to their organization; card
//! numbers never reach tollgate under Stripe.

use std::sync::Arc;

use serde_json::Value;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{PaymentError, PurchaseRequest, PurchaseStatus, ServiceError};
use tollgate_testkit::{CARD_AUTHENTICATION_REQUIRED, CARD_DECLINED, CARD_OK, CARD_PROCESSING, FakeStripe};

use crate::helpers::{Options, TestApp, spawn_app_with};

pub(crate) const SECRET: &str = "whsec_current";
const PREVIOUS: &str = "whsec_previous";

pub(crate) async fn stripe_app() -> (TestApp, FakeStripe) {
    stripe_app_with(Options::default()).await
}

/// An app with the Stripe provider pointed at a new fake Stripe; `options` as for any app
/// (their `extra_config` is replaced by Stripe's).
async fn stripe_app_with(options: Options) -> (TestApp, FakeStripe) {
    let stripe = FakeStripe::start().await;
    let config = format!(
        r#"
        [payments]
        provider = "stripe"
        [payments.stripe]
        secret_key = "sk_test_123"
        webhook_secret = "{SECRET}"
        previous_webhook_secret = "{PREVIOUS}"
        api_base = "{base}"
        public_url = "https://console.example"
        checkout_origin = "{base}"
        "#,
        base = stripe.base_url()
    );
    let app = spawn_app_with(Options {
        extra_config: Box::leak(config.into_boxed_str()),
        ..options
    })
    .await;
    (app, stripe)
}

impl TestApp {
    pub(crate) fn webhook_url(&self) -> String {
        self.url("/webhooks/stripe")
    }

    /// Delivers `event` signed now under the current secret; returns the status code.
    pub(crate) async fn deliver(&self, event: &Value) -> u16 {
        let now = self.tollgate.now().timestamp();
        FakeStripe::deliver(&self.webhook_url(), event, SECRET, now).await
    }

    async fn purchase(&self, purchase_id: &str) -> tollgate_service::Purchase {
        self.tollgate
            .store()
            .purchase(purchase_id)
            .await
            .expect("read")
            .expect("purchase")
    }

    async fn purchased_lots(&self) -> usize {
        self.tollgate
            .lots(&self.org_id)
            .await
            .expect("lots")
            .iter()
            .filter(|lot| lot.lot.kind == LotKind::Purchase)
            .count()
    }

    /// Starts a $25 Checkout with `key`; returns the purchase id and the session id.
    async fn checkout(&self, key: &str) -> (String, String) {
        let started = self
            .tollgate
            .start_checkout(&self.org_id, NanoUsd::from_usd(25), key, "http://unused")
            .await
            .expect("checkout starts");
        let url = started.url.expect("a Stripe page");
        let session = url.rsplit('/').next().expect("a session id").to_owned();
        (started.purchase.id, session)
    }
}

pub(crate) fn of_type<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|event| event["type"] == kind)
        .unwrap_or_else(|| panic!("a {kind} event in {events:?}"))
}

#[tokio::test]
async fn a_double_clicked_checkout_and_redelivered_events_grant_once() {
    let (app, stripe) = stripe_app().await;
    let (available_before, _, _) = app.balance().await;
    let (purchase_id, session_id) = app.checkout("buy-1").await;
    // The second click of the same form: the same purchase and the same Stripe session.
    let (again, same_session) = app.checkout("buy-1").await;
    assert_eq!(
        (again, same_session.clone()),
        (purchase_id.clone(), session_id.clone())
    );
    let session = stripe.session(&session_id).expect("session");
    assert_eq!(session["amount_total"], 2500);
    assert_eq!(
        session["success_url"],
        format!("https://console.example/console/billing/receipts/{purchase_id}")
    );
    let checkout_posts: Vec<_> = stripe
        .posts()
        .into_iter()
        .filter(|(path, _)| path == "/v1/checkout/sessions")
        .collect();
    assert_eq!(checkout_posts.len(), 2);
    assert_eq!(
        checkout_posts[0].1, checkout_posts[1].1,
        "one Idempotency-Key for both clicks"
    );
    // Nothing is granted on the buyer's return, only on Stripe's event.
    assert_eq!(app.balance().await.0, available_before);
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    let completed = of_type(&events, "checkout.session.completed");
    let succeeded = of_type(&events, "payment_intent.succeeded");
    for event in [completed, completed, succeeded, succeeded, completed] {
        assert_eq!(app.deliver(event).await, 200);
    }
    assert_eq!(app.purchased_lots().await, 1);
    assert_eq!(
        app.balance().await.0 - available_before,
        NanoUsd::from_usd(25).nanos()
    );
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(purchase.status, PurchaseStatus::Succeeded);
    assert_eq!(
        purchase.payment_reference.as_deref(),
        succeeded["data"]["object"]["id"].as_str()
    );
    // The card is kept for auto-reload as ids and brand/last4 only.
    let customer = app
        .tollgate
        .payment_customer(&app.org_id)
        .await
        .expect("read")
        .expect("a customer");
    assert_eq!(customer.payment_method_id.as_deref(), Some(CARD_OK));
    assert_eq!(
        (customer.card_brand.as_deref(), customer.card_last4.as_deref()),
        (Some("visa"), Some("4242"))
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn many_concurrent_deliveries_of_one_event_grant_once() {
    let (app, stripe) = stripe_app().await;
    let (_, session_id) = app.checkout("concurrent").await;
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    let completed = Arc::new(of_type(&events, "checkout.session.completed").clone());
    let url = app.webhook_url();
    let now = app.tollgate.now().timestamp();
    let deliveries: Vec<_> = (0..20)
        .map(|_| {
            let (event, url) = (completed.clone(), url.clone());
            tokio::spawn(async move { FakeStripe::deliver(&url, &event, SECRET, now).await })
        })
        .collect();
    for delivery in deliveries {
        assert_eq!(delivery.await.expect("delivered"), 200);
    }
    assert_eq!(app.purchased_lots().await, 1);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn events_out_of_order_end_the_purchase_once() {
    let (app, stripe) = stripe_app().await;
    let (purchase_id, session_id) = app.checkout("retry-card").await;
    // The buyer's first card is declined on Stripe's page; the second pays.
    let declined = stripe.pay_checkout(&session_id, CARD_DECLINED);
    let failed = of_type(&declined, "payment_intent.payment_failed").clone();
    let paid = stripe.pay_checkout(&session_id, CARD_OK);
    let completed = of_type(&paid, "checkout.session.completed");
    // The success arrives first, the older failure late: the purchase stays paid.
    assert_eq!(app.deliver(completed).await, 200);
    assert_eq!(app.deliver(&failed).await, 200);
    let expired = stripe.expire_checkout(&session_id);
    assert_eq!(app.deliver(&expired).await, 200);
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(purchase.status, PurchaseStatus::Succeeded);
    assert_eq!(app.purchased_lots().await, 1);

    // In the other order: the failure is shown with Stripe's reason while the purchase
    // stays open, and the later success still grants.
    let (second_id, second_session) = app.checkout("retry-card-2").await;
    let declined = stripe.pay_checkout(&second_session, CARD_DECLINED);
    assert_eq!(
        app.deliver(of_type(&declined, "payment_intent.payment_failed"))
            .await,
        200
    );
    let pending = app.purchase(&second_id).await;
    assert_eq!(pending.status, PurchaseStatus::Pending);
    assert_eq!(
        pending.failure_reason.as_deref(),
        Some("Your card was declined. (generic_decline)")
    );
    let paid = stripe.pay_checkout(&second_session, CARD_OK);
    assert_eq!(app.deliver(of_type(&paid, "payment_intent.succeeded")).await, 200);
    assert_eq!(app.purchased_lots().await, 2);

    // A session that expires unpaid ends the purchase failed, with no credit.
    let (third_id, third_session) = app.checkout("abandoned").await;
    let expired = stripe.expire_checkout(&third_session);
    assert_eq!(app.deliver(&expired).await, 200);
    let abandoned = app.purchase(&third_id).await;
    assert_eq!(abandoned.status, PurchaseStatus::Failed);
    assert_eq!(app.purchased_lots().await, 2);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn forged_and_stale_signatures_are_refused_and_a_rotated_secret_is_accepted() {
    let (app, stripe) = stripe_app().await;
    let (_, session_id) = app.checkout("signatures").await;
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    let body = of_type(&events, "checkout.session.completed").to_string();
    let now = app.tollgate.now().timestamp();
    let url = app.webhook_url();
    let forged = FakeStripe::signature(&["whsec_forged"], now, &body);
    assert_eq!(FakeStripe::deliver_raw(&url, &body, &forged).await, 400);
    // Signed over other bytes than those delivered.
    let tampered = body.replace("2500", "250000");
    let signed = FakeStripe::signature(&[SECRET], now, &body);
    assert_eq!(FakeStripe::deliver_raw(&url, &tampered, &signed).await, 400);
    let stale = FakeStripe::signature(&[SECRET], now - 301, &body);
    assert_eq!(FakeStripe::deliver_raw(&url, &body, &stale).await, 400);
    assert_eq!(FakeStripe::deliver_raw(&url, &body, "").await, 400);
    assert_eq!(
        app.purchased_lots().await,
        0,
        "no refused delivery granted anything"
    );
    // During rotation Stripe signs with both secrets; either may match.
    let rotated = FakeStripe::signature(&["whsec_unknown", PREVIOUS], now, &body);
    assert_eq!(FakeStripe::deliver_raw(&url, &body, &rotated).await, 200);
    assert_eq!(app.purchased_lots().await, 1);
}

#[tokio::test]
async fn off_session_charges_grant_at_once_or_are_refused_with_stripes_reason() {
    let (app, stripe) = stripe_app().await;
    let buy = |payment_method: &'static str, key: &'static str| {
        let tollgate = app.tollgate.clone();
        let org_id = app.org_id.clone();
        async move {
            tollgate
                .purchase(PurchaseRequest {
                    org_id: &org_id,
                    amount: NanoUsd::from_usd(10),
                    payment_method,
                    idempotency_key: key,
                    actor: "test",
                })
                .await
        }
    };
    let paid = buy(CARD_OK, "direct").await.expect("paid");
    assert_eq!(paid.status, PurchaseStatus::Succeeded);
    // Stripe's event for the same payment changes nothing more.
    let succeeded = stripe
        .events()
        .into_iter()
        .find(|event| event["type"] == "payment_intent.succeeded")
        .expect("event");
    assert_eq!(app.deliver(&succeeded).await, 200);
    assert_eq!(app.purchased_lots().await, 1);
    let posts = stripe.posts();
    let intent_key = &posts
        .iter()
        .find(|(path, _)| path == "/v1/payment_intents")
        .expect("post")
        .1;
    assert_eq!(intent_key, &format!("{}:direct", app.org_id));

    match buy(CARD_DECLINED, "declined").await {
        Err(ServiceError::Payment(PaymentError::Declined(reason))) => {
            assert_eq!(reason, "Your card was declined. (generic_decline)");
        }
        other => panic!("a decline, not {other:?}"),
    }
    match buy(CARD_AUTHENTICATION_REQUIRED, "3ds").await {
        Err(ServiceError::Payment(PaymentError::Declined(reason))) => {
            assert!(reason.contains("requires authentication"), "{reason}");
        }
        other => panic!("a decline, not {other:?}"),
    }
    // A payment still processing stays pending until Stripe's event settles it.
    let processing = buy(CARD_PROCESSING, "slow").await.expect("accepted");
    assert_eq!(processing.status, PurchaseStatus::Pending);
    assert_eq!(app.purchased_lots().await, 1);
    let settled = stripe.settle(&stripe.intent_for(&processing.id).expect("an intent"));
    assert_eq!(app.deliver(&settled).await, 200);
    assert_eq!(app.purchased_lots().await, 2);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_declined_auto_reload_turns_auto_reload_off_with_stripes_reason() {
    let (app, stripe) = stripe_app().await;
    // Without a saved card there is nothing to reload with.
    let refused = app
        .tollgate
        .set_auto_reload(
            &app.org_id,
            NanoUsd::from_usd(100),
            NanoUsd::from_usd(20),
            "",
            "test",
        )
        .await;
    assert!(matches!(refused, Err(ServiceError::Invalid(_))), "{refused:?}");
    // A Checkout payment saves the card; auto-reload then uses it off-session.
    let (_, session_id) = app.checkout("first").await;
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    assert_eq!(
        app.deliver(of_type(&events, "payment_intent.succeeded")).await,
        200
    );
    app.tollgate
        .set_auto_reload(
            &app.org_id,
            NanoUsd::from_usd(100),
            NanoUsd::from_usd(20),
            "",
            "test",
        )
        .await
        .expect("set with the saved card");
    let settings = app
        .tollgate
        .auto_reload(&app.org_id)
        .await
        .expect("read")
        .expect("settings");
    assert_eq!(settings.payment_method, CARD_OK);
    app.tollgate.auto_reload_if_needed(&app.org_id).await;
    assert_eq!(app.purchased_lots().await, 2, "the reload was bought");

    // The card is declined now: auto-reload turns itself off and says why.
    app.tollgate
        .set_auto_reload(
            &app.org_id,
            NanoUsd::from_usd(1000),
            NanoUsd::from_usd(20),
            CARD_DECLINED,
            "test",
        )
        .await
        .expect("set");
    app.tollgate.auto_reload_if_needed(&app.org_id).await;
    let settings = app
        .tollgate
        .auto_reload(&app.org_id)
        .await
        .expect("read")
        .expect("settings");
    assert!(!settings.enabled);
    let notice = settings.notice.expect("a notice");
    assert!(notice.contains("Your card was declined"), "{notice}");
    assert_eq!(app.purchased_lots().await, 2);
    app.assert_ledger_clean().await;
}

/// The value of `<input … name="NAME" value="…">` in a page.
fn form_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in the page"))
        + marker.len();
    page[start..].split('"').next().expect("a value").to_owned()
}

#[tokio::test]
async fn the_console_sends_the_buyer_to_checkout_and_shows_credit_only_after_the_event() {
    let (app, stripe) = stripe_app().await;
    app.tollgate
        .create_console_admin(
            &app.org_id,
            "ada@example.com",
            "Ada",
            "correct horse battery staple",
        )
        .await
        .expect("admin");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = client
        .post(app.url("/console/sign-in"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", "correct horse battery staple"),
        ])
        .send()
        .await
        .expect("sign-in");
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let page = |path: &'static str| {
        let request = client.get(app.url(path)).header("cookie", &cookie);
        async move { request.send().await.expect("page").text().await.expect("body") }
    };
    let billing = page("/console/billing").await;
    assert!(!billing.contains("name=\"card\""), "no card field with Stripe");
    let before = app.balance().await.0;
    let form = [
        ("csrf", form_value(&billing, "csrf")),
        ("idempotency_key", form_value(&billing, "idempotency_key")),
        ("amount", "25.00".to_owned()),
    ];
    let mut locations = Vec::new();
    // A double click: the same form twice leads to the same Stripe page.
    for _ in 0..2 {
        let response = client
            .post(app.url("/console/billing/purchase"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .expect("purchase");
        assert_eq!(response.status().as_u16(), 303);
        let location = response.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        assert!(location.starts_with(&stripe.base_url()), "{location}");
        locations.push(location);
    }
    assert_eq!(locations[0], locations[1]);
    assert_eq!(app.balance().await.0, before, "nothing before Stripe's event");
    let session_id = locations[0].rsplit('/').next().expect("id").to_owned();
    let purchase_id = stripe.session(&session_id).expect("session")["client_reference_id"]
        .as_str()
        .expect("purchase id")
        .to_owned();
    let receipt_path: &'static str =
        Box::leak(format!("/console/billing/receipts/{purchase_id}").into_boxed_str());
    assert!(
        page(receipt_path)
            .await
            .contains("Waiting for the payment to be confirmed")
    );
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    assert_eq!(
        app.deliver(of_type(&events, "checkout.session.completed")).await,
        200
    );
    assert!(page(receipt_path).await.contains("Payment received"));
    assert_eq!(app.balance().await.0 - before, NanoUsd::from_usd(25).nanos());
}

impl TestApp {
    /// A $25 Checkout paid and confirmed by Stripe's event: the purchase id and its
    /// PaymentIntent.
    async fn paid_checkout(&self, stripe: &FakeStripe, key: &str) -> (String, String) {
        let (purchase_id, session_id) = self.checkout(key).await;
        let events = stripe.pay_checkout(&session_id, CARD_OK);
        let completed = of_type(&events, "checkout.session.completed");
        assert_eq!(self.deliver(completed).await, 200);
        let payment_intent = completed["data"]["object"]["payment_intent"]
            .as_str()
            .expect("paid")
            .to_owned();
        (purchase_id, payment_intent)
    }

    /// What the lot of `purchase_id` still has available.
    async fn lot_available(&self, purchase_id: &str) -> NanoUsd {
        let lot_id = self.purchase(purchase_id).await.lot_id.expect("a lot");
        self.tollgate
            .lots(&self.org_id)
            .await
            .expect("lots")
            .into_iter()
            .find(|lot| lot.lot.lot_id == lot_id)
            .expect("the purchase's lot")
            .lot
            .account
            .available()
    }

    async fn cumulative_purchases(&self) -> NanoUsd {
        self.tollgate
            .tier_standing(&self.org_id)
            .await
            .expect("standing")
            .cumulative_purchases
    }

    /// The purchase as the Admin API shows it.
    async fn purchase_json(&self, purchase_id: &str) -> Value {
        let page: Value = self
            .client
            .get(self.url("/v1/organizations/credits/purchases"))
            .header("x-api-key", &self.admin_key)
            .send()
            .await
            .expect("purchases")
            .json()
            .await
            .expect("json");
        page["data"]
            .as_array()
            .expect("a page")
            .iter()
            .find(|purchase| purchase["id"] == purchase_id)
            .cloned()
            .expect("the purchase is listed")
    }
}

fn cents(amount: i64) -> NanoUsd {
    NanoUsd::from_nanos(amount * 10_000_000)
}

#[tokio::test]
async fn a_full_refund_of_an_unspent_purchase_takes_its_credit_back() {
    let (app, stripe) = stripe_app().await;
    let (available_before, _, _) = app.balance().await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "refund-all").await;
    assert_eq!(app.cumulative_purchases().await, NanoUsd::from_usd(25));
    let refunded = stripe.refund(&payment_intent, 2500);
    assert_eq!(app.deliver(&refunded).await, 200);
    assert_eq!(app.balance().await.0, available_before);
    assert_eq!(app.lot_available(&purchase_id).await, NanoUsd::ZERO);
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(
        (purchase.refunded, purchase.disputed, purchase.unrecovered),
        (NanoUsd::from_usd(25), NanoUsd::ZERO, NanoUsd::ZERO)
    );
    assert_eq!(
        purchase.status,
        PurchaseStatus::Succeeded,
        "a refund does not unpay it"
    );
    assert_eq!(app.cumulative_purchases().await, NanoUsd::ZERO);
    let shown = app.purchase_json(&purchase_id).await;
    assert_eq!(
        (
            &shown["refunded_amount"],
            &shown["disputed_amount"],
            &shown["unrecovered_amount"]
        ),
        (
            &Value::from("2500.00"),
            &Value::from("0.00"),
            &Value::from("0.00")
        )
    );
    // Redelivered: nothing more is taken.
    assert_eq!(app.deliver(&refunded).await, 200);
    assert_eq!(app.balance().await.0, available_before);
    app.assert_ledger_clean().await;
    let audit = app.tollgate.store().check_ledger().await.expect("check");
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

#[tokio::test]
async fn partial_refunds_reverse_only_what_each_cumulative_total_adds() {
    let (app, stripe) = stripe_app().await;
    let (available_before, _, _) = app.balance().await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "refund-twice").await;
    let first = stripe.refund(&payment_intent, 1000);
    let second = stripe.refund(&payment_intent, 500);
    assert_eq!(second["data"]["object"]["amount_refunded"], 1500);
    // In order, redelivered, and the older total arriving last: $15 reversed in all.
    for event in [&first, &second, &first, &second] {
        assert_eq!(app.deliver(event).await, 200);
    }
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(purchase.refunded, NanoUsd::from_usd(15));
    assert_eq!(app.lot_available(&purchase_id).await, NanoUsd::from_usd(10));
    assert_eq!(
        app.balance().await.0 - available_before,
        NanoUsd::from_usd(10).nanos()
    );
    assert_eq!(app.cumulative_purchases().await, NanoUsd::from_usd(10));

    // Out of order on another purchase: the later total first, then the older one.
    let (other_id, other_intent) = app.paid_checkout(&stripe, "refund-reordered").await;
    let older = stripe.refund(&other_intent, 300);
    let newer = stripe.refund(&other_intent, 200);
    assert_eq!(app.deliver(&newer).await, 200);
    assert_eq!(app.deliver(&older).await, 200);
    assert_eq!(app.purchase(&other_id).await.refunded, cents(500));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_refund_after_part_was_spent_records_the_rest_unrecovered() {
    let (app, stripe) = stripe_app_with(Options {
        starter_grant_usd: "0",
        ..Options::default()
    })
    .await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "spent").await;
    // Spend part of the purchase: 40,000 output tokens at $15 per million.
    app.fake
        .set_behavior(tollgate_testkit::Behavior::Ok(tollgate_testkit::Reply {
            input_tokens: 10,
            output_tokens: 40_000,
            ..tollgate_testkit::Reply::default()
        }));
    let response = app
        .post_messages(&serde_json::json!({
            "model": "fake-sonnet",
            "max_tokens": 40_000,
            "messages": [{"role": "user", "content": "Write at length"}],
        }))
        .await;
    assert_eq!(response.status(), 200);
    app.wait_for_settlement().await;
    let spent = crate::helpers::sonnet_cost(10, 40_000);
    assert_eq!(app.balance().await.2, spent);
    let refunded = stripe.refund(&payment_intent, 2500);
    assert_eq!(app.deliver(&refunded).await, 200);
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(purchase.refunded, NanoUsd::from_usd(25));
    assert_eq!(purchase.unrecovered, NanoUsd::from_nanos(spent));
    assert_eq!(app.balance().await.0, 0, "what was left is taken back");
    let reversals = app
        .tollgate
        .store()
        .purchase_reversals(&purchase_id)
        .await
        .expect("reversals");
    assert_eq!(reversals.len(), 1);
    assert_eq!(
        (reversals[0].recovered, reversals[0].unrecovered),
        (
            NanoUsd::from_nanos(NanoUsd::from_usd(25).nanos() - spent),
            NanoUsd::from_nanos(spent)
        )
    );
    let entries = app
        .tollgate
        .store()
        .audit_events(&app.org_id)
        .await
        .expect("audit log");
    assert!(
        entries
            .iter()
            .any(|entry| entry.action == "credit.reversed" && entry.subject == purchase_id),
        "the reversal is in the audit log"
    );
    assert_eq!(app.cumulative_purchases().await, NanoUsd::ZERO);
    app.assert_ledger_clean().await;
    let audit = app.tollgate.store().check_ledger().await.expect("check");
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

#[tokio::test]
async fn a_lost_dispute_takes_the_purchase_back_once() {
    let (app, stripe) = stripe_app().await;
    let (available_before, _, _) = app.balance().await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "disputed").await;
    let lost = stripe.lose_dispute(&payment_intent);
    assert!(lost["data"]["object"]["metadata"]["purchase_id"].is_null());
    assert_eq!(app.deliver(&lost).await, 200);
    assert_eq!(app.deliver(&lost).await, 200);
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(
        (purchase.refunded, purchase.disputed),
        (NanoUsd::ZERO, NanoUsd::from_usd(25))
    );
    assert_eq!(app.balance().await.0, available_before);
    assert_eq!(
        app.purchase_json(&purchase_id).await["disputed_amount"],
        "2500.00"
    );
    // A dispute that is won takes nothing.
    let (kept_id, kept_intent) = app.paid_checkout(&stripe, "dispute-won").await;
    let mut won = stripe.lose_dispute(&kept_intent);
    won["data"]["object"]["status"] = Value::from("won");
    won["id"] = Value::from("evt_won");
    assert_eq!(app.deliver(&won).await, 200);
    assert_eq!(app.purchase(&kept_id).await.disputed, NanoUsd::ZERO);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_refund_reverse_it_once() {
    let (app, stripe) = stripe_app().await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "refund-race").await;
    let refunded = Arc::new(stripe.refund(&payment_intent, 1000));
    let url = app.webhook_url();
    let now = app.tollgate.now().timestamp();
    let deliveries: Vec<_> = (0..50)
        .map(|_| {
            let (event, url) = (refunded.clone(), url.clone());
            tokio::spawn(async move { FakeStripe::deliver(&url, &event, SECRET, now).await })
        })
        .collect();
    for delivery in deliveries {
        assert_eq!(delivery.await.expect("delivered"), 200);
    }
    assert_eq!(app.purchase(&purchase_id).await.refunded, NanoUsd::from_usd(10));
    assert_eq!(app.lot_available(&purchase_id).await, NanoUsd::from_usd(15));
    let reversals = app
        .tollgate
        .store()
        .purchase_reversals(&purchase_id)
        .await
        .expect("reversals");
    assert_eq!(reversals.len(), 1);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_refund_before_its_payment_is_known_is_refused_until_it_is() {
    let (app, stripe) = stripe_app().await;
    let (available_before, _, _) = app.balance().await;
    let (purchase_id, session_id) = app.checkout("refund-early").await;
    let events = stripe.pay_checkout(&session_id, CARD_OK);
    let completed = of_type(&events, "checkout.session.completed");
    let payment_intent = completed["data"]["object"]["payment_intent"]
        .as_str()
        .expect("paid");
    let refunded = stripe.refund(payment_intent, 2500);
    // Stripe's refund event overtakes the payment's: 409, so Stripe delivers it again.
    assert_eq!(app.deliver(&refunded).await, 409);
    assert_eq!(app.purchase(&purchase_id).await.refunded, NanoUsd::ZERO);
    assert_eq!(app.deliver(completed).await, 200);
    assert_eq!(app.deliver(&refunded).await, 200);
    let purchase = app.purchase(&purchase_id).await;
    assert_eq!(purchase.refunded, NanoUsd::from_usd(25));
    assert_eq!(app.balance().await.0, available_before);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_tier_drops_when_refunds_lower_cumulative_purchases() {
    let (app, stripe) = stripe_app_with(Options {
        contract_tiers: true,
        ..Options::default()
    })
    .await;
    let tier = || async {
        app.tollgate
            .tier_standing(&app.org_id)
            .await
            .expect("standing")
            .current
    };
    assert_eq!(tier().await, "Evaluation");
    let (_, first_intent) = app.paid_checkout(&stripe, "tier-1").await;
    let (_, second_intent) = app.paid_checkout(&stripe, "tier-2").await;
    assert_eq!(app.cumulative_purchases().await, NanoUsd::from_usd(50));
    assert_eq!(tier().await, "Tier 2");
    assert_eq!(app.deliver(&stripe.refund(&second_intent, 2500)).await, 200);
    assert_eq!(app.cumulative_purchases().await, NanoUsd::from_usd(25));
    assert_eq!(tier().await, "Tier 1");
    assert_eq!(app.deliver(&stripe.lose_dispute(&first_intent)).await, 200);
    assert_eq!(app.cumulative_purchases().await, NanoUsd::ZERO);
    assert_eq!(tier().await, "Evaluation");
    app.assert_ledger_clean().await;
}

/// Signs `email` in to the Console of `org_id` as an admin; returns a client that shows
/// redirects and the session's cookie.
async fn console_session(app: &TestApp, org_id: &str, email: &str) -> (reqwest::Client, String) {
    const PASSWORD: &str = "correct horse battery staple";
    app.tollgate
        .create_console_admin(org_id, email, "Admin", PASSWORD)
        .await
        .expect("admin");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = client
        .post(app.url("/console/sign-in"))
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .expect("sign-in");
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("a session cookie")
        .to_owned();
    (client, cookie)
}

#[tokio::test]
async fn a_receipt_shows_the_purchase_and_its_refunds_and_downloads_only_in_its_organization() {
    let (app, stripe) = stripe_app().await;
    let (purchase_id, payment_intent) = app.paid_checkout(&stripe, "receipt").await;
    assert_eq!(app.deliver(&stripe.refund(&payment_intent, 500)).await, 200);
    let purchase = app.purchase(&purchase_id).await;
    let lot_id = purchase.lot_id.clone().expect("a lot");
    let organization = app
        .tollgate
        .store()
        .organization(&app.org_id)
        .await
        .expect("read")
        .expect("organization");
    let (client, cookie) = console_session(&app, &app.org_id, "ada@example.com").await;
    let get = |path: String| {
        let request = client.get(app.url(&path)).header("cookie", &cookie);
        async move { request.send().await.expect("answer") }
    };
    let page = get(format!("/console/billing/receipts/{purchase_id}"))
        .await
        .text()
        .await
        .expect("page");
    let download = get(format!("/console/billing/receipts/{purchase_id}/download")).await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.headers()["content-disposition"],
        format!("attachment; filename=\"receipt-{purchase_id}.html\"").as_str()
    );
    assert!(
        download.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let file = download.text().await.expect("file");
    assert!(file.starts_with("<!DOCTYPE html>"), "a standalone document");
    for text in [&page, &file] {
        for expected in [
            organization.name.as_str(),
            "$25.00",
            lot_id.as_str(),
            payment_intent.as_str(),
            "Expires",
            "Refunded",
            "$5.00",
            stripe_charge_of(&stripe, &payment_intent).as_str(),
        ] {
            assert!(text.contains(expected), "{expected} is on the receipt: {text}");
        }
    }
    assert!(
        !file.contains("/console/assets"),
        "the file needs nothing of the server"
    );

    // Another organization's admin finds neither, exactly as for a purchase that does not exist.
    let other = app
        .tollgate
        .create_organization("Globex")
        .await
        .expect("organization");
    let (other_client, other_cookie) = console_session(&app, &other.id, "eve@example.com").await;
    for path in [
        format!("/console/billing/receipts/{purchase_id}"),
        format!("/console/billing/receipts/{purchase_id}/download"),
        "/console/billing/receipts/pur_nothing/download".to_owned(),
    ] {
        let response = other_client
            .get(app.url(&path))
            .header("cookie", &other_cookie)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 404, "{path}");
        assert!(!response.text().await.expect("body").contains(&payment_intent));
    }
}

/// The charge id of a PaymentIntent, as the refund event names it.
fn stripe_charge_of(stripe: &FakeStripe, payment_intent: &str) -> String {
    stripe
        .events()
        .into_iter()
        .find(|event| {
            event["type"] == "charge.refunded" && event["data"]["object"]["payment_intent"] == payment_intent
        })
        .and_then(|event| event["data"]["object"]["id"].as_str().map(str::to_owned))
        .expect("a refund of the charge")
}

#[tokio::test]
async fn card_numbers_are_refused_under_stripe_and_taken_by_the_test_provider() {
    let (app, _stripe) = stripe_app().await;
    let (client, cookie) = console_session(&app, &app.org_id, "ada@example.com").await;
    let billing = client
        .get(app.url("/console/billing"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(!billing.contains("name=\"card\""), "no card field with Stripe");
    let csrf = form_value(&billing, "csrf");
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let request = client.post(app.url(path)).header("cookie", &cookie).form(&form);
        async move { request.send().await.expect("answer") }
    };
    let purchase = post(
        "/console/billing/purchase",
        vec![
            ("csrf", csrf.clone()),
            ("idempotency_key", "card-smuggled".to_owned()),
            ("amount", "25.00".to_owned()),
            ("card", "4242424242424242".to_owned()),
        ],
    )
    .await;
    assert_eq!(purchase.status(), 400);
    assert!(
        purchase
            .text()
            .await
            .expect("body")
            .contains("Card numbers are not accepted here")
    );
    let reload = post(
        "/console/billing/auto-reload",
        vec![
            ("csrf", csrf),
            ("enabled", "on".to_owned()),
            ("threshold", "10".to_owned()),
            ("amount", "20".to_owned()),
            ("card", "4242424242424242".to_owned()),
        ],
    )
    .await;
    assert_eq!(reload.status(), 400);
    assert!(
        app.tollgate
            .purchases(&app.org_id)
            .await
            .expect("purchases")
            .is_empty(),
        "nothing was claimed"
    );
    assert!(
        app.tollgate
            .auto_reload(&app.org_id)
            .await
            .expect("read")
            .is_none()
    );

    // The test provider keeps its card field.
    let test_app = crate::helpers::spawn_app().await;
    let (test_client, test_cookie) = test_app.console_admin_session().await;
    let test_billing = test_client
        .get(test_app.url("/console/billing"))
        .header("cookie", &test_cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(test_billing.contains("name=\"card\""));
}
