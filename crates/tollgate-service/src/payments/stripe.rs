//! The Stripe client: customers, PaymentIntents (confirmed at once, off-session, with the
//! saved payment method), Checkout Sessions (the card is entered on Stripe's page, never
//! here) and payment methods (brand and last four digits for display), over Stripe's
//! form-encoded API with our `Idempotency-Key` on every POST; and the verification of the
//! `Stripe-Signature` header of webhook events. No money is decided here: the caller turns
//! Stripe's answers into purchase outcomes.

use serde_json::Value;
use tollgate_core::Timestamp;
use tollgate_core::money::NanoUsd;
use tollgate_core::signature::{self, VerifyError};

use crate::payments::PaymentError;

/// Nano-USD per minor unit (cent) of a two-decimal currency.
const NANOS_PER_MINOR_UNIT: i64 = 10_000_000;

/// How the Stripe provider is set up.
#[derive(Clone, Debug)]
pub struct StripeSettings {
    pub secret_key: String,
    /// Every secret a webhook signature may be made with (more than one while rotating).
    pub webhook_secrets: Vec<String>,
    /// A three-letter currency with two decimals; one of its minor units buys one cent.
    pub currency: String,
    /// `https://api.stripe.com` in production.
    pub api_base: String,
    pub publishable_key: Option<String>,
    /// How old a signed webhook may be (and how far in the future).
    pub webhook_tolerance: chrono::Duration,
    /// This server's public address, where Checkout sends the buyer back; `None`: the
    /// address the Console was reached at.
    pub public_url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct StripePayments {
    settings: StripeSettings,
    client: reqwest::Client,
}

/// What a confirmed PaymentIntent came to without an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Paid now: the PaymentIntent's id.
    Paid(String),
    /// Accepted but not settled yet (`processing`): the webhook ends it.
    Processing(String),
}

/// A Checkout Session to send the customer to.
#[derive(Clone, Debug)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

impl StripePayments {
    pub fn new(settings: StripeSettings) -> StripePayments {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        StripePayments { settings, client }
    }

    pub fn settings(&self) -> &StripeSettings {
        &self.settings
    }

    /// Creates the organization's customer; the key makes a retry return the same one.
    pub async fn create_customer(&self, org_id: &str, name: &str) -> Result<String, PaymentError> {
        let form = vec![
            ("name".to_owned(), name.to_owned()),
            ("metadata[org_id]".to_owned(), org_id.to_owned()),
        ];
        let customer = self
            .post("/v1/customers", &form, &format!("customer:{org_id}"))
            .await?;
        text(&customer, "id")
    }

    /// Creates and confirms a PaymentIntent off-session with a saved payment method.
    pub async fn charge(
        &self,
        amount: NanoUsd,
        customer_id: &str,
        payment_method: &str,
        purchase_id: &str,
        idempotency_key: &str,
    ) -> Result<Charge, PaymentError> {
        let form = vec![
            ("amount".to_owned(), minor_units(amount)?.to_string()),
            ("currency".to_owned(), self.settings.currency.clone()),
            ("customer".to_owned(), customer_id.to_owned()),
            ("payment_method".to_owned(), payment_method.to_owned()),
            ("confirm".to_owned(), "true".to_owned()),
            ("off_session".to_owned(), "true".to_owned()),
            ("metadata[purchase_id]".to_owned(), purchase_id.to_owned()),
        ];
        let intent = self.post("/v1/payment_intents", &form, idempotency_key).await?;
        let id = text(&intent, "id")?;
        match intent["status"].as_str() {
            Some("succeeded") => Ok(Charge::Paid(id)),
            Some("processing") => Ok(Charge::Processing(id)),
            Some("requires_action") => Err(PaymentError::Declined(
                "the card requires authentication (3-D Secure), which an off-session payment cannot do"
                    .into(),
            )),
            Some(status) => Err(PaymentError::Declined(
                last_error(&intent).unwrap_or_else(|| format!("the payment ended as {status}")),
            )),
            None => Err(PaymentError::Failed("Stripe answered without a status".into())),
        }
    }

    /// Opens a Checkout Session for one purchase; the card is saved for off-session use.
    pub async fn checkout(
        &self,
        amount: NanoUsd,
        customer_id: &str,
        purchase_id: &str,
        success_url: &str,
        cancel_url: &str,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, PaymentError> {
        let form = vec![
            ("mode".to_owned(), "payment".to_owned()),
            ("customer".to_owned(), customer_id.to_owned()),
            ("client_reference_id".to_owned(), purchase_id.to_owned()),
            ("success_url".to_owned(), success_url.to_owned()),
            ("cancel_url".to_owned(), cancel_url.to_owned()),
            ("line_items[0][quantity]".to_owned(), "1".to_owned()),
            (
                "line_items[0][price_data][currency]".to_owned(),
                self.settings.currency.clone(),
            ),
            (
                "line_items[0][price_data][unit_amount]".to_owned(),
                minor_units(amount)?.to_string(),
            ),
            (
                "line_items[0][price_data][product_data][name]".to_owned(),
                "API credit".to_owned(),
            ),
            ("metadata[purchase_id]".to_owned(), purchase_id.to_owned()),
            (
                "payment_intent_data[metadata][purchase_id]".to_owned(),
                purchase_id.to_owned(),
            ),
            (
                "payment_intent_data[setup_future_usage]".to_owned(),
                "off_session".to_owned(),
            ),
        ];
        let session = self.post("/v1/checkout/sessions", &form, idempotency_key).await?;
        Ok(CheckoutSession {
            id: text(&session, "id")?,
            url: text(&session, "url")?,
        })
    }

    /// The card's brand and last four digits, for display.
    pub async fn card(&self, payment_method: &str) -> Result<(Option<String>, Option<String>), PaymentError> {
        let response = self
            .client
            .get(format!(
                "{}/v1/payment_methods/{payment_method}",
                self.settings.api_base
            ))
            .bearer_auth(&self.settings.secret_key)
            .send()
            .await
            .map_err(|error| PaymentError::Failed(format!("Stripe could not be reached: {error}")))?;
        let method = answer(response).await?;
        let card = &method["card"];
        Ok((
            card["brand"].as_str().map(str::to_owned),
            card["last4"].as_str().map(str::to_owned),
        ))
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<Value, PaymentError> {
        let response = self
            .client
            .post(format!("{}{path}", self.settings.api_base))
            .bearer_auth(&self.settings.secret_key)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|error| PaymentError::Failed(format!("Stripe could not be reached: {error}")))?;
        answer(response).await
    }
}

/// Stripe's JSON answer, or its error as a decline (a card error) or a failure.
async fn answer(response: reqwest::Response) -> Result<Value, PaymentError> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|error| PaymentError::Failed(format!("Stripe's answer was not JSON: {error}")))?;
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    let message = describe_error(error).unwrap_or_else(|| format!("Stripe answered {status}"));
    if error["type"].as_str() == Some("card_error") {
        Err(PaymentError::Declined(message))
    } else {
        Err(PaymentError::Failed(message))
    }
}

/// Stripe's message with its decline code, e.g. "Your card was declined. (insufficient_funds)".
fn describe_error(error: &Value) -> Option<String> {
    let message = error["message"].as_str()?;
    Some(
        match error["decline_code"].as_str().or_else(|| error["code"].as_str()) {
            Some(code) => format!("{message} ({code})"),
            None => message.to_owned(),
        },
    )
}

/// Why a PaymentIntent's last attempt failed, as Stripe words it.
pub fn last_error(intent: &Value) -> Option<String> {
    describe_error(&intent["last_payment_error"])
}

fn text(value: &Value, field: &str) -> Result<String, PaymentError> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PaymentError::Failed(format!("Stripe's answer has no {field}")))
}

/// The amount in the currency's minor units; credit is bought in whole cents.
pub fn minor_units(amount: NanoUsd) -> Result<i64, PaymentError> {
    let nanos = amount.nanos();
    if nanos % NANOS_PER_MINOR_UNIT != 0 {
        return Err(PaymentError::Declined(format!(
            "{amount} is not a whole number of cents"
        )));
    }
    Ok(nanos / NANOS_PER_MINOR_UNIT)
}

/// An amount Stripe reports in minor units as nano-USD (`None` if negative or too large).
pub fn from_minor_units(units: i64) -> Option<NanoUsd> {
    if units < 0 {
        return None;
    }
    units.checked_mul(NANOS_PER_MINOR_UNIT).map(NanoUsd::from_nanos)
}

/// Why a webhook's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches")]
    NoMatch,
}

/// Verifies `Stripe-Signature` as Stripe specifies: `t=<unix seconds>,v1=<hex>[,v1=…]`,
/// each `v1` an HMAC-SHA256 of `"{t}.{payload}"` under a webhook secret; any `v1` under
/// any configured secret may match (rotation), compared in constant time, and `t` must be
/// within `tolerance` of `now`.
pub fn verify_signature(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[String],
    tolerance: chrono::Duration,
    now: Timestamp,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    signature::verify_any(&secrets, header, payload, now, tolerance.num_seconds()).map_err(
        |error| match error {
            VerifyError::Malformed => SignatureError::Malformed,
            VerifyError::OutsideWindow => SignatureError::Stale,
            VerifyError::Mismatch => SignatureError::NoMatch,
        },
    )
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    fn check(header: Option<&str>, now: i64) -> Result<(), SignatureError> {
        verify_signature(
            b"{\"id\":\"evt_1\"}",
            header,
            &["whsec_new".to_owned(), "whsec_old".to_owned()],
            chrono::Duration::seconds(300),
            chrono::DateTime::from_timestamp(now, 0).unwrap(),
        )
    }

    #[test]
    fn signatures_are_checked_as_stripe_specifies() {
        let payload = b"{\"id\":\"evt_1\"}";
        let good = sign("whsec_old", 1000, payload);
        let other = sign("whsec_unknown", 1000, payload);
        assert_eq!(check(Some(&format!("t=1000,v1={good}")), 1000), Ok(()));
        // Rotation: any v1 may match, under any configured secret.
        assert_eq!(check(Some(&format!("t=1000,v1={other},v1={good}")), 1100), Ok(()));
        assert_eq!(
            check(Some(&format!("t=1000,v1={other}")), 1000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(Some(&format!("t=1001,v1={good}")), 1001),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            check(Some(&format!("t=1000,v1={good}")), 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            check(Some(&format!("t=1000,v0={good}")), 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(check(Some("garbage"), 1000), Err(SignatureError::Malformed));
        assert_eq!(check(None, 1000), Err(SignatureError::Missing));
    }

    #[test]
    fn amounts_are_whole_cents() {
        assert_eq!(minor_units(NanoUsd::from_nanos(25_000_000_000)), Ok(2500));
        assert!(minor_units(NanoUsd::from_nanos(25_000_000_001)).is_err());
    }
}
