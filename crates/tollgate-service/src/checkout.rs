//! Buying credit through Stripe: the organization's Stripe customer (made once, its id
//! kept), off-session charges with the saved card (auto-reload, the Admin API), the
//! Console's Checkout Session, and Stripe's signed webhook events — the only way a
//! Checkout purchase is granted. Each event is applied at most once, by its id, in the
//! transaction of its effect; a purchase ends once whatever order events arrive in. A
//! refund (`charge.refunded`) or lost dispute (`charge.dispute.closed`) reverses part of a
//! paid purchase (`tollgate_core::refunds`); one for a purchase not yet known to be paid
//! is refused as not yet applicable, so Stripe delivers it again later.

use serde_json::Value;
use tollgate_core::ids::IdKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::refunds::ReversalClaim;
use tollgate_store::{
    NewPurchase, PaymentCustomer, PaymentEvent, PaymentEventEffect, Purchase, PurchaseClaim, PurchaseOutcome,
    PurchaseSource, PurchaseStatus, Reversal,
};

use crate::Tollgate;
use crate::billing::{check_single_purchase, purchase_lot};
use crate::error::ServiceError;
use crate::payments::PaymentError;
use crate::payments::stripe::{self, Charge, SignatureError, StripePayments};
use crate::random;

/// The actor of what Stripe's events do, in the audit log.
const STRIPE_ACTOR: &str = "stripe";

/// Where a Checkout Session sends the customer, and the session.
#[derive(Clone, Debug)]
pub struct CheckoutStart {
    pub purchase: Purchase,
    /// Stripe's page, or `None` when the purchase with this key has already ended.
    pub url: Option<String>,
}

/// A webhook delivery refused (answered 400: Stripe shows it and retries).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the signature was refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("the event is not JSON Stripe sends: {0}")]
    Malformed(String),
    #[error("webhooks are for the stripe payment provider")]
    NotStripe,
    /// The event is for a payment not known to have succeeded yet (answered 409: Stripe
    /// retries, by when its payment's own event has arrived).
    #[error("not applicable yet: {0}")]
    NotYet(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What a delivered event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    /// Delivered before: nothing changed.
    Duplicate,
    /// Not an event tollgate acts on (or not for one of its purchases).
    Ignored,
}

impl Tollgate {
    fn stripe(&self) -> Result<&StripePayments, ServiceError> {
        self.inner.payments.as_stripe().ok_or_else(|| {
            ServiceError::Invalid("this needs the stripe payment provider (payments.provider)".into())
        })
    }

    /// Whether Stripe is the payment provider (the Console then sends buyers to Checkout).
    pub fn stripe_enabled(&self) -> bool {
        self.inner.payments.as_stripe().is_some()
    }

    /// The organization's Stripe customer and saved card, if any.
    pub async fn payment_customer(&self, org_id: &str) -> Result<Option<PaymentCustomer>, ServiceError> {
        Ok(self.store().payment_customer(org_id).await?)
    }

    /// The organization's Stripe customer id, made on first use.
    async fn stripe_customer(&self, stripe: &StripePayments, org_id: &str) -> Result<String, ServiceError> {
        if let Some(customer) = self.store().payment_customer(org_id).await? {
            return Ok(customer.customer_id);
        }
        let name = self
            .store()
            .organization(org_id)
            .await?
            .map_or_else(|| org_id.to_owned(), |organization| organization.name);
        let customer_id = stripe.create_customer(org_id, &name).await?;
        self.store()
            .save_payment_customer(
                &PaymentCustomer {
                    org_id: org_id.to_owned(),
                    customer_id: customer_id.clone(),
                    payment_method_id: None,
                    card_brand: None,
                    card_last4: None,
                },
                self.now(),
            )
            .await?;
        Ok(customer_id)
    }

    /// Charges a saved payment method off-session (a PaymentIntent confirmed at once).
    pub(crate) async fn stripe_charge(
        &self,
        stripe: &StripePayments,
        purchase: &Purchase,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Charge, PaymentError> {
        let customer = self
            .stripe_customer(stripe, &purchase.org_id)
            .await
            .map_err(|error| PaymentError::Failed(error.to_string()))?;
        let payment_method = match payment_method.trim() {
            "" => self
                .store()
                .payment_customer(&purchase.org_id)
                .await
                .ok()
                .flatten()
                .and_then(|customer| customer.payment_method_id)
                .ok_or_else(|| PaymentError::Declined("no card is saved for this organization".into()))?,
            method => method.to_owned(),
        };
        stripe
            .charge(
                purchase.amount,
                &customer,
                &payment_method,
                &purchase.id,
                idempotency_key,
            )
            .await
    }

    /// Starts a Console purchase on Stripe's Checkout page (which returns the buyer to
    /// `payments.stripe.public_url`, or else to `return_url`, the Console's own address). The purchase is claimed pending
    /// (idempotent by key, so a double click opens one session) and granted only when
    /// Stripe's signed `checkout.session.completed` or `payment_intent.succeeded` arrives.
    pub async fn start_checkout(
        &self,
        org_id: &str,
        amount: NanoUsd,
        idempotency_key: &str,
        return_url: &str,
    ) -> Result<CheckoutStart, ServiceError> {
        let stripe = self.stripe()?;
        if !amount.is_positive() {
            return Err(ServiceError::Invalid(format!(
                "the amount must be positive, not {amount}"
            )));
        }
        stripe::minor_units(amount).map_err(|error| ServiceError::Invalid(error.to_string()))?;
        let key = idempotency_key.trim();
        if key.is_empty() || key.len() > 255 {
            return Err(ServiceError::Invalid(
                "an idempotency key has 1 to 255 characters".into(),
            ));
        }
        let limits = self.organization_limits(org_id).await?;
        check_single_purchase(&limits.limits, amount)?;
        let claim = self
            .store()
            .claim_purchase(NewPurchase {
                purchase_id: random::id(IdKind::Purchase),
                org_id: org_id.to_owned(),
                idempotency_key: key.to_owned(),
                amount,
                source: PurchaseSource::Manual,
                created_at: self.now(),
            })
            .await?;
        let purchase = match claim {
            PurchaseClaim::Existing(purchase) if purchase.status != PurchaseStatus::Pending => {
                return Ok(CheckoutStart { purchase, url: None });
            }
            PurchaseClaim::Existing(purchase) | PurchaseClaim::New(purchase) => purchase,
        };
        let customer = self.stripe_customer(stripe, org_id).await?;
        let return_url = stripe.settings().public_url.as_deref().unwrap_or(return_url);
        let receipt = format!("{return_url}/console/billing/receipts/{}", purchase.id);
        let session = stripe
            .checkout(
                amount,
                &customer,
                &purchase.id,
                &receipt,
                &format!("{return_url}/console/billing"),
                &format!("checkout:{org_id}:{key}"),
            )
            .await?;
        Ok(CheckoutStart {
            purchase,
            url: Some(session.url),
        })
    }

    /// Handles one delivery to `/webhooks/stripe`: verifies the signature over the raw body,
    /// then applies the event once. Errors other than the signature's and the body's are
    /// the store's (answered 500, so Stripe retries).
    pub async fn stripe_webhook(
        &self,
        payload: &[u8],
        signature: Option<&str>,
    ) -> Result<WebhookOutcome, WebhookError> {
        let stripe = self.inner.payments.as_stripe().ok_or(WebhookError::NotStripe)?;
        let settings = stripe.settings();
        stripe::verify_signature(
            payload,
            signature,
            &settings.webhook_secrets,
            settings.webhook_tolerance,
            self.now(),
        )?;
        let event: Value =
            serde_json::from_slice(payload).map_err(|error| WebhookError::Malformed(error.to_string()))?;
        let (Some(event_id), Some(event_type)) = (event["id"].as_str(), event["type"].as_str()) else {
            return Err(WebhookError::Malformed("an event has an id and a type".into()));
        };
        let object = &event["data"]["object"];
        let payment_event = PaymentEvent {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            received_at: self.now(),
        };
        if let Some(reversal) = reversal_of(event_type, object, &settings.currency)? {
            return self.stripe_reversal(&payment_event, object, reversal).await;
        }
        let Some(purchase_id) = object["metadata"]["purchase_id"]
            .as_str()
            .or_else(|| object["client_reference_id"].as_str())
        else {
            return Ok(WebhookOutcome::Ignored);
        };
        let Some(purchase) = self
            .store()
            .purchase(purchase_id)
            .await
            .map_err(ServiceError::from)?
        else {
            tracing::warn!(event_id, purchase_id, "a Stripe event for an unknown purchase");
            return Ok(WebhookOutcome::Ignored);
        };
        let effect = match event_type {
            "payment_intent.succeeded" | "checkout.session.completed" => {
                let (reference, amount) = if event_type == "checkout.session.completed" {
                    if object["payment_status"].as_str() != Some("paid") {
                        // Paid later (a delayed method): `payment_intent.succeeded` grants it.
                        return Ok(WebhookOutcome::Ignored);
                    }
                    (object["payment_intent"].as_str(), object["amount_total"].as_i64())
                } else {
                    (object["id"].as_str(), object["amount_received"].as_i64())
                };
                let expected = stripe::minor_units(purchase.amount).ok();
                let currency = object["currency"].as_str();
                if amount != expected || currency != Some(settings.currency.as_str()) {
                    tracing::error!(
                        event_id,
                        purchase_id,
                        ?amount,
                        ?expected,
                        ?currency,
                        "a Stripe payment does not match its purchase; no credit granted"
                    );
                    return Ok(WebhookOutcome::Ignored);
                }
                let Some(reference) = reference else {
                    return Err(WebhookError::Malformed(
                        "a paid event names its PaymentIntent".into(),
                    ));
                };
                PaymentEventEffect::Complete(PurchaseOutcome::Succeeded {
                    payment_reference: reference.to_owned(),
                    lot: purchase_lot(&purchase, STRIPE_ACTOR, self.now()),
                })
            }
            "payment_intent.payment_failed" => PaymentEventEffect::AttemptFailed {
                reason: stripe::last_error(object).unwrap_or_else(|| "the payment failed".into()),
            },
            "checkout.session.expired" => PaymentEventEffect::Complete(PurchaseOutcome::Failed {
                reason: purchase
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| "the checkout expired before a payment was made".into()),
            }),
            _ => return Ok(WebhookOutcome::Ignored),
        };
        let applied = self
            .store()
            .complete_purchase_on_event(&payment_event, purchase_id, effect, STRIPE_ACTOR)
            .await
            .map_err(ServiceError::from)?;
        let Some(applied) = applied else {
            return Ok(WebhookOutcome::Duplicate);
        };
        self.forget_organization_limits(&applied.org_id);
        if event_type == "payment_intent.succeeded" {
            self.save_card(stripe, &applied.org_id, object).await;
        }
        Ok(WebhookOutcome::Applied)
    }

    /// Applies a refund or lost dispute to the purchase its charge paid: found by the
    /// purchase id Stripe copies from the PaymentIntent's metadata onto the charge, or else
    /// by the PaymentIntent itself (a dispute names only that).
    async fn stripe_reversal(
        &self,
        event: &PaymentEvent,
        object: &Value,
        reversal: Reversal,
    ) -> Result<WebhookOutcome, WebhookError> {
        let event_id = event.event_id.as_str();
        let payment_intent = object["payment_intent"].as_str();
        let purchase = match (object["metadata"]["purchase_id"].as_str(), payment_intent) {
            (Some(purchase_id), _) => self.store().purchase(purchase_id).await,
            (None, Some(payment_intent)) => self.store().purchase_by_payment_reference(payment_intent).await,
            (None, None) => Ok(None),
        }
        .map_err(ServiceError::from)?;
        let Some(purchase) = purchase else {
            tracing::warn!(
                event_id,
                ?payment_intent,
                "a Stripe reversal of no known purchase"
            );
            return Ok(WebhookOutcome::Ignored);
        };
        match purchase.status {
            PurchaseStatus::Succeeded => {}
            PurchaseStatus::Pending => {
                return Err(WebhookError::NotYet(format!(
                    "purchase {} is not known to be paid yet",
                    purchase.id
                )));
            }
            PurchaseStatus::Declined | PurchaseStatus::Failed => {
                tracing::error!(event_id, purchase_id = %purchase.id, "a Stripe reversal of an unpaid purchase; nothing to take back");
                return Ok(WebhookOutcome::Ignored);
            }
        }
        if payment_intent.is_some() && payment_intent != purchase.payment_reference.as_deref() {
            tracing::error!(
                event_id,
                purchase_id = %purchase.id,
                ?payment_intent,
                paid_by = ?purchase.payment_reference,
                "a Stripe reversal of another payment than the one that paid the purchase"
            );
            return Ok(WebhookOutcome::Ignored);
        }
        let applied = self
            .store()
            .complete_purchase_on_event(
                event,
                &purchase.id,
                PaymentEventEffect::Reverse(reversal),
                STRIPE_ACTOR,
            )
            .await
            .map_err(ServiceError::from)?;
        let Some(applied) = applied else {
            return Ok(WebhookOutcome::Duplicate);
        };
        // The tier follows cumulative purchases, which the reversal lowered.
        self.forget_organization_limits(&applied.org_id);
        Ok(WebhookOutcome::Applied)
    }

    /// Keeps the card a paid PaymentIntent used, for auto-reload and for display. Best
    /// effort: the credit is granted already.
    async fn save_card(&self, stripe: &StripePayments, org_id: &str, intent: &Value) {
        let (Some(customer_id), Some(payment_method)) =
            (intent["customer"].as_str(), intent["payment_method"].as_str())
        else {
            return;
        };
        let (card_brand, card_last4) = match stripe.card(payment_method).await {
            Ok(card) => card,
            Err(error) => {
                tracing::warn!(%error, org_id, "the card of a Stripe payment could not be read");
                (None, None)
            }
        };
        let customer = PaymentCustomer {
            org_id: org_id.to_owned(),
            customer_id: customer_id.to_owned(),
            payment_method_id: Some(payment_method.to_owned()),
            card_brand,
            card_last4,
        };
        if let Err(error) = self.store().save_payment_customer(&customer, self.now()).await {
            tracing::warn!(%error, org_id, "the card of a Stripe payment could not be saved");
        }
    }
}

/// The reversal a Stripe event reports, if it is one tollgate acts on: `charge.refunded`
/// (the charge's cumulative `amount_refunded`) or `charge.dispute.closed` lost (the
/// dispute's `amount`). Other dispute outcomes reverse nothing.
fn reversal_of(event_type: &str, object: &Value, currency: &str) -> Result<Option<Reversal>, WebhookError> {
    let (amount_field, reference) = match event_type {
        "charge.refunded" => ("amount_refunded", object["id"].as_str()),
        "charge.dispute.closed" if object["status"].as_str() == Some("lost") => {
            ("amount", object["id"].as_str())
        }
        _ => return Ok(None),
    };
    let Some(reference) = reference else {
        return Err(WebhookError::Malformed(format!(
            "a {event_type} event names its object"
        )));
    };
    if object["currency"].as_str() != Some(currency) {
        tracing::error!(event_type, reference, currency = ?object["currency"], "a Stripe reversal in another currency; ignored");
        return Ok(None);
    }
    let amount = object[amount_field]
        .as_i64()
        .and_then(stripe::from_minor_units)
        .ok_or_else(|| WebhookError::Malformed(format!("a {event_type} event has an {amount_field}")))?;
    let claim = if event_type == "charge.refunded" {
        ReversalClaim::Refunded {
            refunded_total: amount,
        }
    } else {
        ReversalClaim::DisputeLost { disputed: amount }
    };
    Ok(Some(Reversal {
        claim,
        reference: reference.to_owned(),
    }))
}
