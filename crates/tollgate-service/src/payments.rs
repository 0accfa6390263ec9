//! The payment-provider interface purchases go through. Built in: `test`, which succeeds at
//! once for any card number except the documented decline and failure numbers, and
//! `stripe` (`stripe.rs`), where the card is entered on Stripe's page and credit is granted
//! on Stripe's signed events (or a PaymentIntent that succeeds at once). Every charge
//! carries the purchase's idempotency key, so a retried charge never bills twice.

pub mod stripe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tollgate_core::money::NanoUsd;

/// A card the test provider declines (as the issuer would: insufficient funds).
pub const TEST_CARD_DECLINED: &str = "4000000000000002";
/// A card the test provider fails to process (a provider-side error).
pub const TEST_CARD_FAILS: &str = "4000000000000119";
/// A card the test provider accepts.
pub const TEST_CARD_OK: &str = "4242424242424242";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The payment method was refused; retrying the same method will not help.
    #[error("the payment was declined: {0}")]
    Declined(String),
    /// The provider could not process the payment.
    #[error("the payment could not be processed: {0}")]
    Failed(String),
}

#[derive(Clone)]
pub enum PaymentProvider {
    Test(TestPayments),
    Stripe(stripe::StripePayments),
}

impl PaymentProvider {
    pub fn test() -> PaymentProvider {
        PaymentProvider::Test(TestPayments::default())
    }

    pub fn stripe(settings: stripe::StripeSettings) -> PaymentProvider {
        PaymentProvider::Stripe(stripe::StripePayments::new(settings))
    }

    /// Stripe's client, when Stripe is the provider.
    pub fn as_stripe(&self) -> Option<&stripe::StripePayments> {
        match self {
            PaymentProvider::Stripe(stripe) => Some(stripe),
            PaymentProvider::Test(_) => None,
        }
    }
}

/// Remembers its charges by idempotency key, as a real provider does.
#[derive(Clone, Default)]
pub struct TestPayments {
    charges: Arc<Mutex<HashMap<String, String>>>,
}

impl TestPayments {
    /// Charges `amount` to the card number `payment_method`; returns the charge's reference.
    pub(crate) fn charge(
        &self,
        amount: NanoUsd,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<String, PaymentError> {
        let card: String = payment_method
            .chars()
            .filter(|character| !character.is_whitespace())
            .collect();
        if card.len() < 12 || !card.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(PaymentError::Declined(format!(
                "'{payment_method}' is not a card number (the test provider accepts e.g. {TEST_CARD_OK})"
            )));
        }
        match card.as_str() {
            TEST_CARD_DECLINED => {
                return Err(PaymentError::Declined(
                    "card declined (insufficient funds)".into(),
                ));
            }
            TEST_CARD_FAILS => {
                return Err(PaymentError::Failed(
                    "processing error at the card network".into(),
                ));
            }
            _ => {}
        }
        let mut charges = self
            .charges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = charges.len();
        let reference = charges
            .entry(idempotency_key.to_owned())
            .or_insert_with(|| format!("test_ch_{:06}_{}", count + 1, amount.nanos()));
        Ok(reference.clone())
    }
}
