//! `FakeStripe`: a real HTTP server on loopback speaking Stripe's API wire format for the
//! endpoints tollgate uses — form-encoded POSTs to `/v1/customers`, `/v1/payment_intents`,
//! `/v1/checkout/sessions`, `GET /v1/payment_methods/{id}`, JSON answers and Stripe's error
//! envelope — with `Idempotency-Key` semantics as Stripe documents them (the same key and
//! parameters replay the first answer; other parameters are a 400 `idempotency_error`).
//!
//! Cards are Stripe's test payment methods: `pm_card_visa` succeeds,
//! `pm_card_chargeDeclined` is declined, `pm_card_authenticationRequired` needs 3-D Secure
//! (refused off-session), `pm_card_processing` stays `processing`. A payment that succeeds
//! makes its charge (carrying the PaymentIntent's metadata, as Stripe copies it), which a
//! test may refund (`charge.refunded`, with the charge's cumulative `amount_refunded`) or
//! lose a dispute on (`charge.dispute.closed`, status `lost`). Every state change makes the
//! event Stripe would send; a test delivers them, signed, to tollgate — once, twice,
//! reordered, late, or with a forged signature.
//!
//! A Checkout Session's `url` is a page a browser can use: `GET /pay/{id}` shows the amount
//! and a Pay button, and paying (`POST /pay/{id}`, the card's payment method in `card`) does
//! what `FakeStripe::pay_checkout` does, then sends the buyer to the session's
//! `success_url`. The events are kept for the test to deliver, as for every other change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A payment method that succeeds.
pub const CARD_OK: &str = "pm_card_visa";
/// A payment method the issuer declines.
pub const CARD_DECLINED: &str = "pm_card_chargeDeclined";
/// A payment method that needs 3-D Secure, which an off-session payment cannot do.
pub const CARD_AUTHENTICATION_REQUIRED: &str = "pm_card_authenticationRequired";
/// A payment method whose payment stays `processing` until the test settles it.
pub const CARD_PROCESSING: &str = "pm_card_processing";

/// A request's parameters, and the status and answer it got.
type Remembered = (Vec<(String, String)>, u16, Value);

#[derive(Default)]
struct Stripe {
    base_url: String,
    next_id: u64,
    payment_intents: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    /// Charges of succeeded PaymentIntents, by id.
    charges: HashMap<String, Value>,
    /// (path, key) → (parameters, status, answer).
    idempotent: HashMap<(String, String), Remembered>,
    /// Every POST: (path, Idempotency-Key).
    posts: Vec<(String, String)>,
    events: Vec<Value>,
}

impl Stripe {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}", self.next_id)
    }

    fn event(&mut self, kind: &str, object: &Value) -> Value {
        let event = json!({
            "id": self.id("evt"),
            "object": "event",
            "type": kind,
            "data": { "object": object },
        });
        self.events.push(event.clone());
        event
    }

    /// Confirms a new PaymentIntent with `payment_method`: (status, answer, events).
    fn confirm(&mut self, mut intent: Value, payment_method: &str, off_session: bool) -> (u16, Value) {
        let id = self.id("pi");
        intent["id"] = json!(id);
        intent["object"] = json!("payment_intent");
        intent["payment_method"] = json!(payment_method);
        intent["latest_charge"] = json!(self.id("ch"));
        let decline = match payment_method {
            CARD_DECLINED => Some((
                "card_declined",
                Some("generic_decline"),
                "Your card was declined.",
            )),
            CARD_AUTHENTICATION_REQUIRED if off_session => Some((
                "authentication_required",
                Some("authentication_required"),
                "Your card was declined. This transaction requires authentication.",
            )),
            _ => None,
        };
        if let Some((code, decline_code, message)) = decline {
            let error = json!({ "type": "card_error", "code": code, "decline_code": decline_code, "message": message });
            intent["status"] = json!("requires_payment_method");
            intent["last_payment_error"] = error.clone();
            self.payment_intents.insert(id, intent.clone());
            self.event("payment_intent.payment_failed", &intent);
            let mut error = error;
            error["payment_intent"] = intent;
            return (402, json!({ "error": error }));
        }
        if payment_method == CARD_AUTHENTICATION_REQUIRED {
            intent["status"] = json!("requires_action");
            self.payment_intents.insert(id, intent.clone());
            return (200, intent);
        }
        if payment_method == CARD_PROCESSING {
            intent["status"] = json!("processing");
            self.payment_intents.insert(id, intent.clone());
            return (200, intent);
        }
        intent["status"] = json!("succeeded");
        intent["amount_received"] = intent["amount"].clone();
        self.payment_intents.insert(id, intent.clone());
        self.charge(&intent);
        self.event("payment_intent.succeeded", &intent);
        (200, intent)
    }

    /// The charge of a PaymentIntent that has just succeeded.
    fn charge(&mut self, intent: &Value) {
        let charge_id = intent["latest_charge"].as_str().unwrap_or_default().to_owned();
        let charge = json!({
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "currency": intent["currency"],
            "customer": intent["customer"],
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "metadata": intent["metadata"],
            "paid": true,
            "refunded": false,
            "disputed": false,
            "status": "succeeded",
        });
        self.charges.insert(charge_id, charge);
    }

    /// The charge of a PaymentIntent, which must have succeeded.
    fn charge_of(&self, payment_intent_id: &str) -> Value {
        let charge_id = self.payment_intents[payment_intent_id]["latest_charge"]
            .as_str()
            .expect("a charge id")
            .to_owned();
        self.charges
            .get(&charge_id)
            .cloned()
            .expect("the PaymentIntent succeeded, so it has a charge")
    }
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `metadata[x]=y` fields (with `prefix`) as a JSON object.
fn metadata(form: &[(String, String)], prefix: &str) -> Value {
    let mut object = serde_json::Map::new();
    for (key, value) in form {
        if let Some(name) = key.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(']')) {
            object.insert(name.to_owned(), json!(value));
        }
    }
    Value::Object(object)
}

fn amount(text: Option<&str>) -> Value {
    text.and_then(|text| text.parse::<i64>().ok())
        .map_or(Value::Null, |amount| json!(amount))
}

/// The fake; it stops when dropped.
pub struct FakeStripe {
    addr: SocketAddr,
    state: Arc<Mutex<Stripe>>,
    server: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<Stripe>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Stripe> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the fake Stripe");
        let addr = listener.local_addr().expect("bound");
        let state: Shared = Arc::new(Mutex::new(Stripe {
            base_url: format!("http://{addr}"),
            ..Stripe::default()
        }));
        let app = Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/payment_intents", post(create_payment_intent))
            .route("/v1/checkout/sessions", post(create_session))
            .route("/v1/payment_methods/{id}", get(payment_method))
            .route("/pay/{id}", get(checkout_page).post(pay_on_page))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { addr, state, server }
    }

    /// Where tollgate's `payments.stripe.api_base` points.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every POST received: (path, Idempotency-Key).
    pub fn posts(&self) -> Vec<(String, String)> {
        lock(&self.state).posts.clone()
    }

    /// Every event made so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events.clone()
    }

    /// The id of the latest PaymentIntent made for tollgate's purchase `purchase_id`.
    pub fn intent_for(&self, purchase_id: &str) -> Option<String> {
        let stripe = lock(&self.state);
        stripe
            .payment_intents
            .values()
            .filter(|intent| intent["metadata"]["purchase_id"] == purchase_id)
            .filter_map(|intent| intent["id"].as_str().map(str::to_owned))
            .max()
    }

    /// The Checkout Session with this id.
    pub fn session(&self, session_id: &str) -> Option<Value> {
        lock(&self.state).sessions.get(session_id).cloned()
    }

    /// The buyer pays on the Checkout page with `payment_method`. A decline keeps the
    /// session open (the buyer may try another card). Returns the events Stripe sends.
    pub fn pay_checkout(&self, session_id: &str, payment_method: &str) -> Vec<Value> {
        lock(&self.state).pay_session(session_id, payment_method)
    }

    /// The session expires unpaid; returns the event.
    pub fn expire_checkout(&self, session_id: &str) -> Value {
        let mut stripe = lock(&self.state);
        let mut session = stripe.sessions.get(session_id).cloned().expect("a known session");
        session["status"] = json!("expired");
        stripe.sessions.insert(session_id.to_owned(), session.clone());
        stripe.event("checkout.session.expired", &session)
    }

    /// A `processing` PaymentIntent settles; returns the `payment_intent.succeeded` event.
    pub fn settle(&self, payment_intent_id: &str) -> Value {
        let mut stripe = lock(&self.state);
        let mut intent = stripe
            .payment_intents
            .get(payment_intent_id)
            .cloned()
            .expect("a known intent");
        intent["status"] = json!("succeeded");
        intent["amount_received"] = intent["amount"].clone();
        stripe
            .payment_intents
            .insert(payment_intent_id.to_owned(), intent.clone());
        stripe.charge(&intent);
        stripe.event("payment_intent.succeeded", &intent)
    }

    /// Refunds `amount` (minor units) more of a succeeded PaymentIntent's charge, as an
    /// operator does in Stripe's Dashboard; returns the `charge.refunded` event, whose
    /// `amount_refunded` is the charge's total refunded so far.
    pub fn refund(&self, payment_intent_id: &str, amount: i64) -> Value {
        let mut stripe = lock(&self.state);
        let mut charge = stripe.charge_of(payment_intent_id);
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
        assert!(
            refunded <= charge["amount"].as_i64().unwrap_or(0),
            "Stripe refuses to refund more than was charged"
        );
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        let id = charge["id"].as_str().unwrap_or_default().to_owned();
        stripe.charges.insert(id, charge.clone());
        stripe.event("charge.refunded", &charge)
    }

    /// The buyer disputes a succeeded PaymentIntent's charge and the dispute is lost;
    /// returns the `charge.dispute.closed` event (a dispute names the charge and the
    /// PaymentIntent, and carries no metadata of tollgate's).
    pub fn lose_dispute(&self, payment_intent_id: &str) -> Value {
        let mut stripe = lock(&self.state);
        let mut charge = stripe.charge_of(payment_intent_id);
        charge["disputed"] = json!(true);
        let charge_id = charge["id"].as_str().unwrap_or_default().to_owned();
        stripe.charges.insert(charge_id.clone(), charge.clone());
        let dispute = json!({
            "id": stripe.id("dp"),
            "object": "dispute",
            "amount": charge["amount"],
            "currency": charge["currency"],
            "charge": charge_id,
            "payment_intent": payment_intent_id,
            "reason": "fraudulent",
            "status": "lost",
            "metadata": {},
        });
        stripe.event("charge.dispute.closed", &dispute)
    }

    /// The `Stripe-Signature` header Stripe would send for `body` at `timestamp` (unix
    /// seconds) under each of `secrets`.
    pub fn signature(secrets: &[&str], timestamp: i64, body: &str) -> String {
        let mut header = format!("t={timestamp}");
        for secret in secrets {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(format!("{timestamp}.{body}").as_bytes());
            header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
        }
        header
    }

    /// Delivers `event` to `url` signed at `timestamp` (unix seconds: tollgate's now) under
    /// `secret`; returns the status code.
    pub async fn deliver(url: &str, event: &Value, secret: &str, timestamp: i64) -> u16 {
        let body = event.to_string();
        let header = FakeStripe::signature(&[secret], timestamp, &body);
        FakeStripe::deliver_raw(url, &body, &header).await
    }

    /// Delivers `body` with the given `Stripe-Signature` header; returns the status code.
    pub async fn deliver_raw(url: &str, body: &str, signature: &str) -> u16 {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("tollgate answers the webhook")
            .status()
            .as_u16()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn stripe_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "type": kind, "message": message } })),
    )
        .into_response()
}

/// Checks the secret key and applies Stripe's idempotency: a replay answers as the first
/// time; the same key with other parameters is refused.
fn idempotent(
    state: &Shared,
    path: &str,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
    create: impl FnOnce(&mut Stripe, &[(String, String)]) -> (u16, Value),
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer sk_"));
    if !authorized {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut stripe = lock(state);
    stripe.posts.push((path.to_owned(), key.clone()));
    let (status, answer) = match stripe.idempotent.get(&(path.to_owned(), key.clone())) {
        Some((parameters, _, _)) if *parameters != form => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            );
        }
        Some((_, status, answer)) => (*status, answer.clone()),
        None => {
            let (status, answer) = create(&mut stripe, &form);
            if !key.is_empty() {
                stripe
                    .idempotent
                    .insert((path.to_owned(), key), (form, status, answer.clone()));
            }
            (status, answer)
        }
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(answer),
    )
        .into_response()
}

impl Stripe {
    /// Pays the open session with `payment_method`; a decline keeps it open. Returns the
    /// events Stripe sends.
    fn pay_session(&mut self, session_id: &str, payment_method: &str) -> Vec<Value> {
        let before = self.events.len();
        let session = self.sessions.get(session_id).cloned().expect("a known session");
        let intent = json!({
            "amount": session["amount_total"],
            "currency": session["currency"],
            "customer": session["customer"],
            "metadata": session["payment_intent_metadata"],
            "setup_future_usage": "off_session",
        });
        let (status, answer) = self.confirm(intent, payment_method, false);
        if status == 200 && answer["status"] == "succeeded" {
            let mut session = session;
            session["status"] = json!("complete");
            session["payment_status"] = json!("paid");
            session["payment_intent"] = answer["id"].clone();
            self.sessions.insert(session_id.to_owned(), session.clone());
            self.event("checkout.session.completed", &session);
        }
        self.events[before..].to_vec()
    }
}

async fn create_customer(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    idempotent(&state, "/v1/customers", &headers, form, |stripe, form| {
        let id = stripe.id("cus");
        (
            200,
            json!({ "id": id, "object": "customer", "name": field(form, "name"), "metadata": metadata(form, "metadata[") }),
        )
    })
}

async fn create_payment_intent(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    idempotent(&state, "/v1/payment_intents", &headers, form, |stripe, form| {
        let intent = json!({
            "amount": amount(field(form, "amount")),
            "currency": field(form, "currency"),
            "customer": field(form, "customer"),
            "metadata": metadata(form, "metadata["),
        });
        let payment_method = field(form, "payment_method").unwrap_or_default().to_owned();
        stripe.confirm(
            intent,
            &payment_method,
            field(form, "off_session") == Some("true"),
        )
    })
}

async fn create_session(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    idempotent(&state, "/v1/checkout/sessions", &headers, form, |stripe, form| {
        let id = stripe.id("cs_test");
        let session = json!({
            "id": id,
            "object": "checkout.session",
            "url": format!("{}/pay/{id}", stripe.base_url),
            "mode": field(form, "mode"),
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount(field(form, "line_items[0][price_data][unit_amount]")),
            "currency": field(form, "line_items[0][price_data][currency]"),
            "customer": field(form, "customer"),
            "client_reference_id": field(form, "client_reference_id"),
            "success_url": field(form, "success_url"),
            "metadata": metadata(form, "metadata["),
            "payment_intent": null,
            "payment_intent_metadata": metadata(form, "payment_intent_data[metadata]["),
        });
        stripe.sessions.insert(id, session.clone());
        (200, session)
    })
}

async fn payment_method(State(_state): State<Shared>, Path(id): Path<String>) -> Response {
    let (brand, last4) = match id.as_str() {
        CARD_DECLINED => ("visa", "0002"),
        CARD_AUTHENTICATION_REQUIRED => ("visa", "3184"),
        _ => ("visa", "4242"),
    };
    Json(json!({ "id": id, "object": "payment_method", "type": "card", "card": { "brand": brand, "last4": last4 } }))
        .into_response()
}

/// The Checkout page a session's `url` points to: the amount and a Pay button.
async fn checkout_page(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let Some(session) = lock(&state).sessions.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, "No such checkout session").into_response();
    };
    let cents = session["amount_total"].as_i64().unwrap_or(0);
    let page = format!(
        "<!doctype html><html><head><title>Checkout</title></head><body>\
         <h1 id=\"total\">Pay ${}.{:02}</h1><p id=\"status\">{}</p>\
         <form method=\"post\" action=\"/pay/{id}\">\
         <label for=\"card\">Card</label><input id=\"card\" name=\"card\" value=\"{CARD_OK}\">\
         <button id=\"pay\" type=\"submit\">Pay</button></form></body></html>",
        cents / 100,
        cents % 100,
        session["status"].as_str().unwrap_or_default(),
    );
    axum::response::Html(page).into_response()
}

/// The buyer pressed Pay: the card is charged and, once paid, the buyer is sent to the
/// session's `success_url`; a decline shows the page again.
async fn pay_on_page(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let mut stripe = lock(&state);
    if !stripe.sessions.contains_key(&id) {
        return (StatusCode::NOT_FOUND, "No such checkout session").into_response();
    }
    stripe.pay_session(&id, field(&form, "card").unwrap_or_default());
    let session = stripe.sessions.get(&id).cloned().unwrap_or_default();
    let next = match (session["status"].as_str(), session["success_url"].as_str()) {
        (Some("complete"), Some(success)) => success.to_owned(),
        _ => format!("/pay/{id}"),
    };
    (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, next)]).into_response()
}
