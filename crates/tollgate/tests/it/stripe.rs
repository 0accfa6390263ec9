//! Stripe end to end against the fake Stripe server: credit arrives only with Stripe's
//! signed event, once however often (or however concurrently) it is delivered and in
//! whatever order events come; forged, stale and rotated signatures; off-session charges
//! for auto-reload, declined and needing authentication.

use std::sync::Arc;

use serde_json::Value;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::{PaymentError, PurchaseRequest, PurchaseStatus, ServiceError};
use tollgate_testkit::{CARD_AUTHENTICATION_REQUIRED, CARD_DECLINED, CARD_OK, CARD_PROCESSING, FakeStripe};

use crate::helpers::{Options, TestApp, spawn_app_with};

const SECRET: &str = "whsec_current";
const PREVIOUS: &str = "whsec_previous";

async fn stripe_app() -> (TestApp, FakeStripe) {
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
        "#,
        base = stripe.base_url()
    );
    let app = spawn_app_with(Options {
        extra_config: Box::leak(config.into_boxed_str()),
        ..Options::default()
    })
    .await;
    (app, stripe)
}

impl TestApp {
    fn webhook_url(&self) -> String {
        self.url("/webhooks/stripe")
    }

    /// Delivers `event` signed now under the current secret; returns the status code.
    async fn deliver(&self, event: &Value) -> u16 {
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

fn of_type<'a>(events: &'a [Value], kind: &str) -> &'a Value {
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
