//! Alerts (#17): a crossing fires once, even under 100 concurrent requests, and is
//! re-armed when credit lifts the balance back; webhooks are signed so that a receiver's
//! `verify` accepts them and refuses a tampered body or an old timestamp; a receiver that
//! answers 500 gets retries, each recorded and listed; email arrives over real SMTP.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use tollgate_core::alerts::{AlertKind, REPLAY_WINDOW_SECONDS, SIGNATURE_HEADER, VerifyError, verify};
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_service::Grant;
use tollgate_testkit::{FakeSmtp, FakeWebhook, ReceivedWebhook};

use crate::helpers::{Options, TestApp, message_body, spawn_app_with};

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("x-api-key", &app.admin_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers a destination; its answer (with the signing secret for a webhook).
async fn add_destination(app: &TestApp, channel: &str, target: &str) -> Value {
    let (status, destination) = admin(
        app,
        reqwest::Method::POST,
        "/v1/organizations/alert_destinations",
        Some(json!({"channel": channel, "target": target})),
    )
    .await;
    assert_eq!(status, 200, "{destination}");
    destination
}

async fn set_threshold(app: &TestApp, cents: &str) {
    let (status, settings) = admin(
        app,
        reqwest::Method::POST,
        "/v1/organizations/alert_settings",
        Some(json!({"balance_threshold_amount": cents})),
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["balance_threshold_amount"], cents);
}

/// Waits (bounded) until `done` holds of the received webhooks.
async fn wait_for(webhook: &FakeWebhook, done: impl Fn(&[ReceivedWebhook]) -> bool) -> Vec<ReceivedWebhook> {
    for _ in 0..400 {
        let received = webhook.received();
        if done(&received) {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the webhook never got what was expected: {:?}",
        webhook.received()
    );
}

/// Waits (bounded) until the newest delivery has `status`; that delivery.
async fn newest_delivery_when(app: &TestApp, status: &str) -> Value {
    let mut newest = Value::Null;
    for _ in 0..400 {
        let (answered, deliveries) = admin(
            app,
            reqwest::Method::GET,
            "/v1/organizations/alert_deliveries",
            None,
        )
        .await;
        assert_eq!(answered, 200);
        newest = deliveries["data"][0].clone();
        if newest["status"] == status {
            return newest;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the newest delivery never became {status}: {newest}");
}

fn event(received: &ReceivedWebhook) -> Value {
    serde_json::from_slice(&received.body).expect("json event")
}

fn of_kind(received: &[ReceivedWebhook], kind: &str) -> usize {
    received
        .iter()
        .filter(|webhook| event(webhook)["type"] == kind)
        .count()
}

const FAST_ALERTS: &str = "[alerts]\npoll_interval_millis = 20\nretry_first_delay_seconds = 1\nretry_max_delay_seconds = 1\nattempts_max = 3";

/// Goal: 100 concurrent requests, each of which leaves the balance below the threshold,
/// fire one alert; the webhook's signature verifies over the raw body, and a tampered
/// body, a wrong secret or a stale timestamp does not. A grant that lifts the balance back
/// re-arms the alert, and the next crossing fires again.
#[tokio::test]
async fn a_balance_threshold_crossed_by_100_concurrent_requests_fires_once_signed() {
    let app = spawn_app_with(Options {
        extra_config: FAST_ALERTS,
        ..Options::default()
    })
    .await;
    let webhook = FakeWebhook::start().await;
    let destination = add_destination(&app, "webhook", &webhook.url()).await;
    let secret = destination["signing_secret"]
        .as_str()
        .expect("secret shown at creation")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = admin(
        &app,
        reqwest::Method::GET,
        "/v1/organizations/alert_destinations",
        None,
    )
    .await;
    assert_eq!(listed["data"][0]["id"], destination["id"]);
    assert!(
        listed["data"][0].get("signing_secret").is_none(),
        "a secret is shown once"
    );
    // $5.00 granted; the first request's charge takes the balance below $4.9999.
    set_threshold(&app, "499.99").await;

    let body = message_body("fake-sonnet");
    let responses = join_all((0..100).map(|_| app.post_messages(&body))).await;
    assert!(responses.iter().all(|response| response.status() == 200));
    app.wait_for_settlement().await;
    wait_for(&webhook, |received| !received.is_empty()).await;
    // Give any duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = webhook.received();
    assert_eq!(
        of_kind(&received, "balance_below_threshold"),
        1,
        "fired once: {received:?}"
    );
    let alert = &received[0];
    let payload = event(alert);
    assert_eq!(payload["organization_id"], app.org_id.as_str());
    assert_eq!(
        payload["data"]["threshold_nano_usd"],
        NanoUsd::from_nanos(4_999_900_000).nanos()
    );
    assert!(payload["data"]["available_nano_usd"].as_i64().expect("available") < 4_999_900_000);

    let header = alert.headers.get(SIGNATURE_HEADER).expect("signed");
    let now = app.tollgate.now();
    assert_eq!(
        verify(&secret, header, &alert.body, now, REPLAY_WINDOW_SECONDS),
        Ok(())
    );
    let mut tampered = alert.body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        verify(&secret, header, &tampered, now, REPLAY_WINDOW_SECONDS),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify("whsec_wrong", header, &alert.body, now, REPLAY_WINDOW_SECONDS),
        Err(VerifyError::Mismatch)
    );
    let later = now + chrono::Duration::seconds(REPLAY_WINDOW_SECONDS + 5);
    assert_eq!(
        verify(&secret, header, &alert.body, later, REPLAY_WINDOW_SECONDS),
        Err(VerifyError::OutsideWindow)
    );

    // Credit lifts the balance over the threshold: re-armed; the next crossing fires again.
    app.tollgate
        .grant(Grant {
            org_id: &app.org_id,
            kind: LotKind::Promotional,
            amount: NanoUsd::from_usd(1),
            expires_at: None,
            memo: "top-up",
            programme: None,
            actor: "test",
        })
        .await
        .expect("granted");
    set_threshold(&app, "599.99").await;
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
    let received = wait_for(&webhook, |received| {
        of_kind(received, "balance_below_threshold") == 2
    })
    .await;
    assert_eq!(of_kind(&received, "balance_below_threshold"), 2);
    app.assert_ledger_clean().await;
}

/// Goal: the store's claim lets exactly one of many concurrent firings of one crossing
/// through (on PostgreSQL, from concurrent transactions), and re-arming lets the next in.
#[tokio::test]
async fn concurrent_firings_of_one_crossing_claim_it_once() {
    let app = spawn_app_with(Options::default()).await;
    let fire = || {
        app.tollgate
            .fire(&app.org_id, AlertKind::SpendLimit75, "2030-01", "75 %", json!({}))
    };
    let fired = join_all((0..50).map(|_| fire())).await;
    let landed = fired
        .into_iter()
        .map(|fired| fired.expect("claimed or not"))
        .filter(|landed| *landed)
        .count();
    assert_eq!(landed, 1);
    assert!(!fire().await.expect("claim"), "still claimed");
    let other_month = app
        .tollgate
        .fire(&app.org_id, AlertKind::SpendLimit75, "2030-02", "75 %", json!({}))
        .await
        .expect("claim");
    assert!(other_month, "a new month is a new crossing");
}

/// Goal: a receiver that answers 500 is tried again with backoff until the attempts are
/// spent; the deliveries list shows each attempt with its status and the next attempt's
/// time, and the delivery as failed.
#[tokio::test]
async fn a_receiver_answering_500_gets_retries_and_the_list_shows_each_attempt() {
    let app = spawn_app_with(Options {
        extra_config: FAST_ALERTS,
        ..Options::default()
    })
    .await;
    let webhook = FakeWebhook::start().await;
    webhook.answer_with(500);
    add_destination(&app, "webhook", &webhook.url()).await;
    assert!(
        app.tollgate
            .fire(
                &app.org_id,
                AlertKind::AutoReloadDeclined,
                "reload-1",
                "declined",
                json!({})
            )
            .await
            .expect("fired")
    );
    for _ in 0..400 {
        if webhook.received().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, deliveries) = admin(
        &app,
        reqwest::Method::GET,
        "/v1/organizations/alert_deliveries",
        None,
    )
    .await;
    assert!(webhook.received().len() >= 3, "{deliveries}");
    let delivery = newest_delivery_when(&app, "failed").await;
    assert_eq!(delivery["alert"], "auto_reload_declined");
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{delivery}");
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], index + 1);
        assert_eq!(attempt["outcome"], "failed");
        assert_eq!(attempt["response_status"], 500);
        assert_eq!(attempt["next_attempt_at"].is_string(), index < 2, "{attempt}");
    }
    assert_eq!(webhook.received().len(), 3, "no attempt after the last");

    // A receiver that recovers gets the next alert at the first attempt.
    webhook.answer_with(200);
    app.tollgate
        .fire(
            &app.org_id,
            AlertKind::AutoReloadDeclined,
            "reload-2",
            "declined",
            json!({}),
        )
        .await
        .expect("fired");
    wait_for(&webhook, |received| received.len() == 4).await;
    let delivered = newest_delivery_when(&app, "delivered").await;
    assert_eq!(delivered["attempts"][0]["response_status"], 200);
}

/// An app whose alert email goes to `smtp` (with `alerts_extra` lines in `[alerts]`), an
/// email destination, and a balance threshold its first request's settlement crosses;
/// that request has been made.
async fn app_emailing_an_alert(smtp: &FakeSmtp, alerts_extra: &str) -> TestApp {
    let config = format!(
        "[alerts]\npoll_interval_millis = 20\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_from = \"alerts@tollgate.test\"\n{alerts_extra}",
        smtp.port()
    );
    let app = spawn_app_with(Options {
        extra_config: Box::leak(config.into_boxed_str()),
        ..Options::default()
    })
    .await;
    add_destination(&app, "email", "billing@example.com").await;
    set_threshold(&app, "499.99").await;
    assert_eq!(
        app.post_messages(&message_body("fake-sonnet")).await.status(),
        200
    );
    app
}

/// Waits (bounded) until the relay has mail; what it has then.
async fn mails_when_any(smtp: &FakeSmtp) -> Vec<tollgate_testkit::ReceivedMail> {
    let mut mails = Vec::new();
    for _ in 0..400 {
        mails = smtp.mails();
        if !mails.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    mails
}

/// Goal: an email destination gets the alert through a real SMTP dialogue, with a subject
/// naming the alert and a body with the summary and the organization.
#[tokio::test]
async fn an_email_alert_arrives_over_smtp_with_its_subject_and_body() {
    let smtp = FakeSmtp::start().await;
    let app = app_emailing_an_alert(&smtp, "").await;
    let mails = mails_when_any(&smtp).await;
    let (_, deliveries) = admin(
        &app,
        reqwest::Method::GET,
        "/v1/organizations/alert_deliveries",
        None,
    )
    .await;
    assert_eq!(mails.len(), 1, "one email: {deliveries}");
    let mail = &mails[0];
    assert_eq!(mail.from, "alerts@tollgate.test");
    assert_eq!(mail.to, vec!["billing@example.com".to_owned()]);
    let subject = mail.header("Subject").expect("subject");
    assert_eq!(
        subject,
        format!("[tollgate] Balance below threshold ({})", app.org_id)
    );
    let body = mail.body();
    assert!(body.contains("below the threshold of $4.9999"), "{body}");
    assert!(body.contains(&app.org_id), "{body}");
    // The delivery is recorded with the relay's reply code.
    let delivered = newest_delivery_when(&app, "delivered").await;
    assert_eq!(delivered["attempts"][0]["response_status"], 250);
}

/// Goal (#17): a relay that requires STARTTLS gets the alert over TLS when tollgate is told
/// to use it and trusts the relay's authority (`smtp_ca_file`); with only the public
/// authorities, the relay's certificate is refused, nothing is sent in the clear, and the
/// delivery records why.
#[tokio::test]
async fn an_email_alert_goes_over_starttls_to_a_relay_whose_authority_is_trusted() {
    for trusted in [true, false] {
        let smtp = FakeSmtp::start_tls().await;
        let ca = if trusted {
            format!("smtp_ca_file = \"{}\"\n", tollgate_testkit::TEST_CA_PEM_PATH)
        } else {
            String::new()
        };
        let app = app_emailing_an_alert(
            &smtp,
            &format!("retry_first_delay_seconds = 60\nsmtp_security = \"starttls\"\n{ca}"),
        )
        .await;
        if trusted {
            let mails = mails_when_any(&smtp).await;
            assert_eq!(mails.len(), 1);
            assert!(mails[0].secured, "sent after STARTTLS");
            assert_eq!(mails[0].to, vec!["billing@example.com".to_owned()]);
            let delivered = newest_delivery_when(&app, "delivered").await;
            assert_eq!(delivered["attempts"][0]["response_status"], 250);
        } else {
            let mut waited = 0;
            let attempt = loop {
                waited += 1;
                assert!(waited < 400, "no attempt was recorded");
                let (_, deliveries) = admin(
                    &app,
                    reqwest::Method::GET,
                    "/v1/organizations/alert_deliveries",
                    None,
                )
                .await;
                if let Some(attempt) = deliveries["data"][0]["attempts"].get(0) {
                    break attempt.clone();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            };
            let error = attempt["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("certificate") || error.contains("tls") || error.contains("TLS"),
                "{attempt}"
            );
            assert!(smtp.mails().is_empty(), "nothing sent in the clear");
        }
    }
}

/// Goal: an organization admin configures alerts on the Console's Alerts page: a webhook's
/// signing secret is shown once, on the page that created it, never on the list; the
/// threshold set there is the organization's.
#[tokio::test]
async fn an_admin_configures_alerts_on_the_console() {
    let app = spawn_app_with(Options::default()).await;
    let (client, cookie) = app.console_admin_session().await;
    let page = |path: &'static str| {
        client
            .get(app.url(path))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
    };
    let alerts = page("/console/alerts").await.expect("page");
    assert_eq!(alerts.status(), 200);
    let html = alerts.text().await.expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let mut fields = form;
        fields.push(("csrf", csrf.clone()));
        client
            .post(app.url(&path))
            .header(reqwest::header::COOKIE, &cookie)
            .form(&fields)
            .send()
    };
    let created = post(
        "/console/alerts/destinations".to_owned(),
        vec![
            ("channel", "webhook".to_owned()),
            ("target", "https://ops.example.com/hook".to_owned()),
        ],
    )
    .await
    .expect("created");
    assert_eq!(created.status(), 200);
    let created = created.text().await.expect("html");
    let secret = created
        .split("id=\"signing-secret\" type=\"text\" readonly value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the secret, shown once")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    let saved = post(
        "/console/alerts/settings".to_owned(),
        vec![
            ("threshold", "12.50".to_owned()),
            ("key_expiry_days", "3".to_owned()),
        ],
    )
    .await
    .expect("saved");
    assert_eq!(saved.status(), 303);
    let settings = app.tollgate.alert_settings(&app.org_id).await.expect("settings");
    assert_eq!(
        settings.balance_threshold,
        Some(NanoUsd::from_nanos(12_500_000_000))
    );
    assert_eq!(settings.key_expiry_days, 3);
    let listed = page("/console/alerts")
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(listed.contains("https://ops.example.com/hook"));
    assert!(!listed.contains(&secret), "the secret is not shown again");

    // Every kind is ticked at first; unticking all but two keeps those two.
    let destinations = app
        .tollgate
        .alert_destinations(&app.org_id)
        .await
        .expect("destinations");
    let destination_id = destinations[0].id.clone();
    assert_eq!(destinations[0].kinds, None, "every kind");
    assert_eq!(
        listed.matches("name=\"kinds\" value=").count(),
        AlertKind::ALL.len()
    );
    assert_eq!(listed.matches(" checked").count(), AlertKind::ALL.len());
    let saved = post(
        format!("/console/alerts/destinations/{destination_id}/kinds"),
        vec![
            ("kinds", "deployment_down".to_owned()),
            ("kinds", "balance_below_threshold".to_owned()),
        ],
    )
    .await
    .expect("saved");
    assert_eq!(saved.status(), 303);
    let destinations = app
        .tollgate
        .alert_destinations(&app.org_id)
        .await
        .expect("destinations");
    assert_eq!(
        destinations[0].kinds,
        Some(vec![AlertKind::BalanceBelowThreshold, AlertKind::DeploymentDown])
    );
    let listed = page("/console/alerts")
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert_eq!(listed.matches(" checked").count(), 2, "the two kinds stay ticked");
}

/// Goal: a destination receives only the alert kinds it chose (every kind when it chose
/// none); the update route changes the choice, and refuses an unknown kind or none.
#[tokio::test]
async fn a_destination_receives_only_the_alert_kinds_it_chose() {
    let app = spawn_app_with(Options {
        extra_config: FAST_ALERTS,
        ..Options::default()
    })
    .await;
    let (choosy, everything) = (FakeWebhook::start().await, FakeWebhook::start().await);
    let (status, chosen) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/organizations/alert_destinations",
        Some(json!({"channel": "webhook", "target": choosy.url(), "alert_kinds": ["key_expiring"]})),
    )
    .await;
    assert_eq!(status, 200, "{chosen}");
    assert_eq!(chosen["alert_kinds"], json!(["key_expiring"]));
    let all = add_destination(&app, "webhook", &everything.url()).await;
    assert_eq!(
        all["alert_kinds"].as_array().map(Vec::len),
        Some(AlertKind::ALL.len())
    );
    let fire = |subject: &'static str| {
        app.tollgate.fire(
            &app.org_id,
            AlertKind::AutoReloadDeclined,
            subject,
            "declined",
            json!({}),
        )
    };
    assert!(fire("reload-1").await.expect("fired"));
    wait_for(&everything, |received| received.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(choosy.received().is_empty(), "not a kind it chose");

    let path = format!(
        "/v1/organizations/alert_destinations/{}",
        chosen["id"].as_str().expect("id")
    );
    let (status, updated) = admin(
        &app,
        reqwest::Method::POST,
        &path,
        Some(json!({"alert_kinds": ["auto_reload_declined", "key_expiring"]})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        updated["alert_kinds"],
        json!(["auto_reload_declined", "key_expiring"])
    );
    assert!(updated.get("signing_secret").is_none(), "shown once, at creation");
    assert!(fire("reload-2").await.expect("fired"));
    let received = wait_for(&choosy, |received| received.len() == 1).await;
    assert_eq!(event(&received[0])["type"], "auto_reload_declined");
    wait_for(&everything, |received| received.len() == 2).await;

    for refused in [json!({"alert_kinds": ["sunspots"]}), json!({"alert_kinds": []})] {
        let (status, body) = admin(&app, reqwest::Method::POST, &path, Some(refused)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (status, every) = admin(
        &app,
        reqwest::Method::POST,
        &path,
        Some(json!({"alert_kinds": null})),
    )
    .await;
    assert_eq!(status, 200, "{every}");
    assert_eq!(every["alert_kinds"], all["alert_kinds"], "null: every kind");
    let (status, missing) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/organizations/alert_destinations/alrtdst_nope",
        Some(json!({"alert_kinds": null})),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
}

/// Goal: a key created with an expiry through the Admin API shows it, works until then,
/// alerts its organization once within the notice period, and is refused from its expiry
/// with a 401 `authentication_error` in the API's own envelope (checked on the cached
/// record, so no cache period passes first).
#[tokio::test]
async fn a_key_alerts_before_it_expires_and_is_refused_after() {
    let app = spawn_app_with(Options {
        manual_clock: true,
        extra_config: FAST_ALERTS,
        ..Options::default()
    })
    .await;
    let clock = app.clock.clone().expect("manual clock");
    let webhook = FakeWebhook::start().await;
    add_destination(&app, "webhook", &webhook.url()).await;
    let expires_at = app.tollgate.now() + chrono::Duration::days(10);
    let (status, created) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/organizations/api_keys",
        Some(json!({"name": "expiring", "expires_at": expires_at.to_rfc3339()})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert!(created["expires_at"].is_string(), "{created}");
    let secret = created["api_key_secret"].as_str().expect("secret").to_owned();
    let (status, past) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/organizations/api_keys",
        Some(json!({"name": "already gone", "expires_at": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 400, "{past}");
    let call = || {
        app.client
            .post(app.url("/v1/messages"))
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01")
            .json(&message_body("fake-sonnet"))
            .send()
    };
    assert_eq!(call().await.expect("sent").status(), 200);

    // Outside the 7-day notice: nothing. Inside it: one alert, however many passes.
    app.tollgate.maintain().await.expect("maintenance");
    clock.advance(chrono::Duration::days(4));
    app.tollgate.maintain().await.expect("maintenance");
    app.tollgate.maintain().await.expect("maintenance");
    let received = wait_for(&webhook, |received| !received.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(of_kind(&webhook.received(), "key_expiring"), 1, "{received:?}");
    assert_eq!(event(&received[0])["data"]["api_key_id"], created["id"]);

    clock.advance(chrono::Duration::days(6));
    let refused = call().await.expect("sent");
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("expired")),
        "{body}"
    );
}

/// Goal: spending toward the organization's monthly limit alerts once at 75 % (seen by a
/// settlement) and once at 100 % (when a request is refused for the limit), however many
/// requests follow.
#[tokio::test]
async fn the_monthly_spend_limit_alerts_once_at_75_and_once_at_100_percent() {
    let app = spawn_app_with(Options {
        extra_config: FAST_ALERTS,
        ..Options::default()
    })
    .await;
    let webhook = FakeWebhook::start().await;
    add_destination(&app, "webhook", &webhook.url()).await;
    let (status, limits) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/organizations/limits",
        // Several requests' bounds: admission keeps each bound within the limit, so a
        // limit of one bound would refuse before a settlement saw 75 %.
        Some(json!({"spend_limit_amount": "5"})),
    )
    .await;
    assert_eq!(status, 200, "{limits}");
    let mut refused = 0;
    let body = message_body("fake-sonnet");
    for _ in 0..1000 {
        if app.post_messages(&body).await.status() != 200 {
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "the limit was reached");
    let received = wait_for(&webhook, |received| {
        of_kind(received, "spend_limit_75") == 1 && of_kind(received, "spend_limit_100") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received_now = webhook.received();
    assert_eq!(of_kind(&received_now, "spend_limit_75"), 1, "{received:?}");
    assert_eq!(of_kind(&received_now, "spend_limit_100"), 1, "{received_now:?}");
    let first_75 = received_now
        .iter()
        .position(|webhook| event(webhook)["type"] == "spend_limit_75");
    let first_100 = received_now
        .iter()
        .position(|webhook| event(webhook)["type"] == "spend_limit_100");
    assert!(first_75 < first_100, "75 % before 100 %");
}

/// `routed`: a primary (`{fake0}`, cooldown 30 s) first, a backup (`{fake1}`) second.
const ROUTED_FAST_ALERTS: &str = r#"
    [providers.primary]
    kind = "anthropic"
    base_url = "{fake0}"
    cooldown_seconds = 30
    [providers.backup]
    kind = "anthropic"
    base_url = "{fake1}"
    [models.routed]
    class = "sonnet"
    input = "3"
    output = "15"
    [[models.routed.deployments]]
    provider = "primary"
    upstream_model = "claude-sonnet-4-6"
    [[models.routed.deployments]]
    provider = "backup"
    upstream_model = "claude-sonnet-4-6"
    priority = 1
    [alerts]
    poll_interval_millis = 20
    retry_first_delay_seconds = 1
    retry_max_delay_seconds = 1
    attempts_max = 3
"#;

/// An app on `ROUTED_FAST_ALERTS`, its two fakes the primary and the backup, on a manual
/// clock.
async fn routed_app() -> TestApp {
    spawn_app_with(Options {
        extra_config: ROUTED_FAST_ALERTS,
        extra_fakes: 2,
        manual_clock: true,
        ..Options::default()
    })
    .await
}

/// Goal: a deployment that fails into cooldown alerts the organization whose request
/// found it failing, once: failing again after its cooldown, with no success between,
/// is the same crossing. Once it answers again the alert is re-armed, and the next
/// failure alerts again. The event names the deployment and how it failed.
#[tokio::test]
async fn a_deployment_going_down_alerts_once_until_it_answers_again() {
    let app = routed_app().await;
    let clock = app.clock.clone().expect("manual clock");
    let webhook = FakeWebhook::start().await;
    add_destination(&app, "webhook", &webhook.url()).await;
    let (primary, backup) = (&app.extra_fakes[0], &app.extra_fakes[1]);
    let body = message_body("routed");
    let past_cooldown = || clock.advance(chrono::Duration::seconds(31));

    // Down: the request fails over to the backup; the alert fires once.
    primary.push_behavior(tollgate_testkit::Behavior::Status(529));
    assert_eq!(app.post_messages(&body).await.status(), 200);
    assert_eq!((primary.request_count(), backup.request_count()), (1, 1));
    let received = wait_for(&webhook, |received| !received.is_empty()).await;
    let down = event(&received[0]);
    assert_eq!(down["type"], "deployment_down");
    assert_eq!(down["organization_id"], app.org_id.as_str());
    assert_eq!(down["data"]["provider"], "primary");
    assert_eq!(down["data"]["upstream_model"], "claude-sonnet-4-6");
    assert_eq!(down["data"]["error"], "overloaded (529)");
    assert_eq!(down["data"]["cooldown_seconds"], 30);

    // Still down after its cooldown, failing again: the same crossing, no new alert.
    past_cooldown();
    primary.push_behavior(tollgate_testkit::Behavior::Status(503));
    assert_eq!(app.post_messages(&body).await.status(), 200);
    assert_eq!((primary.request_count(), backup.request_count()), (2, 2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(of_kind(&webhook.received(), "deployment_down"), 1);

    // It answers: re-armed. Failing again is a new crossing.
    past_cooldown();
    assert_eq!(app.post_messages(&body).await.status(), 200);
    assert_eq!((primary.request_count(), backup.request_count()), (3, 2));
    primary.push_behavior(tollgate_testkit::Behavior::Status(500));
    assert_eq!(app.post_messages(&body).await.status(), 200);
    let received = wait_for(&webhook, |received| of_kind(received, "deployment_down") == 2).await;
    assert_eq!(event(&received[1])["data"]["error"], "server_error (500)");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(of_kind(&webhook.received(), "deployment_down"), 2);
    app.assert_ledger_clean().await;
}

/// Another organization, with its own webhook destination, that sent one request for
/// `model` if given; its id.
async fn tenant_with_traffic(
    app: &TestApp,
    name: &str,
    webhook: &FakeWebhook,
    model: Option<&str>,
) -> String {
    let organization = app
        .tollgate
        .create_organization(name)
        .await
        .expect("organization");
    app.tollgate
        .create_alert_destination(
            &organization.id,
            tollgate_service::AlertChannel::Webhook,
            &webhook.url(),
            None,
        )
        .await
        .expect("destination");
    if let Some(model) = model {
        let workspace = app
            .tollgate
            .store()
            .default_workspace(&organization.id)
            .await
            .expect("default workspace");
        let key = app
            .tollgate
            .create_key(
                tollgate_core::keys::KeyKind::Api,
                &organization.id,
                Some(&workspace.id),
                "caller",
            )
            .await
            .expect("api key");
        let response = app
            .client
            .post(app.url("/v1/messages"))
            .header("x-api-key", key.secret.expose_secret())
            .header("anthropic-version", "2023-06-01")
            .json(&message_body(model))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{name}'s request");
    }
    organization.id
}

/// Goal (#17): a deployment going down concerns every organization whose traffic it
/// carries, not only the one whose request found it failing: each organization with a
/// charged request for a model it serves in the last day is told once, and an organization
/// that never used it is not told.
#[tokio::test]
async fn a_deployment_going_down_alerts_every_organization_that_used_it() {
    let app = routed_app().await;
    let webhook = FakeWebhook::start().await;
    add_destination(&app, "webhook", &webhook.url()).await;
    let (other, unconcerned) = (FakeWebhook::start().await, FakeWebhook::start().await);
    let other_org = tenant_with_traffic(&app, "Tenant B", &other, Some("routed")).await;
    tenant_with_traffic(&app, "Tenant C", &unconcerned, Some("fake-sonnet")).await;
    tenant_with_traffic(&app, "Tenant D", &unconcerned, None).await;

    app.extra_fakes[0].push_behavior(tollgate_testkit::Behavior::Status(529));
    assert_eq!(app.post_messages(&message_body("routed")).await.status(), 200);
    let received = wait_for(&webhook, |received| !received.is_empty()).await;
    assert_eq!(event(&received[0])["data"]["models"], json!(["routed"]));
    let received = wait_for(&other, |received| !received.is_empty()).await;
    let told = event(&received[0]);
    assert_eq!(told["type"], "deployment_down");
    assert_eq!(told["organization_id"], other_org.as_str());
    assert_eq!(told["data"]["provider"], "primary");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(of_kind(&webhook.received(), "deployment_down"), 1);
    assert_eq!(of_kind(&other.received(), "deployment_down"), 1);
    assert!(unconcerned.received().is_empty(), "{:?}", unconcerned.received());
    app.assert_ledger_clean().await;
}
