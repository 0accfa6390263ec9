//! Buying credit: purchases through the payment provider (idempotent by key, capped by
//! the tier's largest single purchase), a purchase's receipt (scoped to its organization),
//! the tier ladder as the customer sees it, and auto-reload — at most one reload in flight
//! per organization, across processes.

use tollgate_core::alerts::AlertKind;
use tollgate_core::ids::IdKind;
use tollgate_core::ledger::{LotKind, default_expiry};
use tollgate_core::money::NanoUsd;
use tollgate_core::tiers::{LimitSet, Tier};
use tollgate_store::{
    AutoReload, LotView, NewLot, NewPurchase, Organization, Purchase, PurchaseClaim, PurchaseOutcome,
    PurchaseReversal, PurchaseSource, PurchaseStatus,
};

use crate::Tollgate;
use crate::error::ServiceError;
use crate::payments::stripe::Charge;
use crate::payments::{PaymentError, PaymentProvider};
use crate::random;

/// A purchase request.
#[derive(Clone, Debug)]
pub struct PurchaseRequest<'a> {
    pub org_id: &'a str,
    pub amount: NanoUsd,
    pub payment_method: &'a str,
    /// Retrying with the same key buys once; the same key with another amount is refused.
    pub idempotency_key: &'a str,
    pub actor: &'a str,
}

/// Where an organization stands on the ladder.
#[derive(Clone, Debug)]
pub struct TierStanding {
    pub tiers: Vec<Tier>,
    pub current: String,
    /// The custom limit set in force instead of the tier, if any.
    pub limit_set: Option<String>,
    pub cumulative_purchases: NanoUsd,
    /// The next tier and what is still to buy to reach it.
    pub next: Option<(String, NanoUsd)>,
    pub active_programmes: Vec<String>,
}

/// What a purchase's receipt shows: the purchase, its organization, the lot it granted
/// (with its expiry) and its refunds and lost disputes.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub purchase: Purchase,
    pub organization: Organization,
    pub lot: Option<LotView>,
    pub reversals: Vec<PurchaseReversal>,
}

impl Tollgate {
    /// The receipt of `purchase_id`, which must be `org_id`'s: another organization's
    /// purchase is not found, exactly like one that does not exist.
    pub async fn receipt(&self, org_id: &str, purchase_id: &str) -> Result<Receipt, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("purchase '{purchase_id}' was not found"));
        let purchase = self
            .store()
            .purchase(purchase_id)
            .await?
            .filter(|purchase| purchase.org_id == org_id)
            .ok_or_else(not_found)?;
        let organization = self.store().organization(org_id).await?.ok_or_else(not_found)?;
        let lot = match &purchase.lot_id {
            Some(lot_id) => self
                .store()
                .lots(org_id)
                .await?
                .into_iter()
                .find(|lot| &lot.lot.lot_id == lot_id),
            None => None,
        };
        let reversals = self.store().purchase_reversals(purchase_id).await?;
        Ok(Receipt {
            purchase,
            organization,
            lot,
            reversals,
        })
    }

    /// Buys credit: charges the payment method, then grants a purchase lot that expires a
    /// year later and counts toward the tier — the tier advances in the same transaction.
    pub async fn purchase(&self, request: PurchaseRequest<'_>) -> Result<Purchase, ServiceError> {
        self.purchase_from(request, PurchaseSource::Manual).await
    }

    async fn purchase_from(
        &self,
        request: PurchaseRequest<'_>,
        source: PurchaseSource,
    ) -> Result<Purchase, ServiceError> {
        if !request.amount.is_positive() {
            return Err(ServiceError::Invalid(format!(
                "the amount must be positive, not {}",
                request.amount
            )));
        }
        let key = request.idempotency_key.trim();
        if key.is_empty() || key.len() > 255 {
            return Err(ServiceError::Invalid(
                "an idempotency key has 1 to 255 characters".into(),
            ));
        }
        let limits = self.organization_limits(request.org_id).await?;
        check_single_purchase(&limits.limits, request.amount)?;
        let claim = self
            .store()
            .claim_purchase(NewPurchase {
                purchase_id: random::id(IdKind::Purchase),
                org_id: request.org_id.to_owned(),
                idempotency_key: key.to_owned(),
                amount: request.amount,
                source,
                created_at: self.now(),
            })
            .await?;
        let purchase = match claim {
            PurchaseClaim::Existing(purchase) if purchase.status != PurchaseStatus::Pending => {
                return finished_purchase(purchase);
            }
            // A pending purchase with this key was interrupted (or is running elsewhere):
            // the provider's own idempotency makes charging it again safe.
            PurchaseClaim::Existing(purchase) | PurchaseClaim::New(purchase) => purchase,
        };
        let charge_key = format!("{}:{}", purchase.org_id, purchase.idempotency_key);
        let charge = match &self.inner.payments {
            PaymentProvider::Test(test) => test
                .charge(purchase.amount, request.payment_method, &charge_key)
                .map(Charge::Paid),
            PaymentProvider::Stripe(stripe) => {
                self.stripe_charge(stripe, &purchase, request.payment_method, &charge_key)
                    .await
            }
        };
        let outcome = match charge {
            Ok(Charge::Paid(payment_reference)) => PurchaseOutcome::Succeeded {
                payment_reference,
                lot: purchase_lot(&purchase, request.actor, self.now()),
            },
            // Stripe's `payment_intent.succeeded` (or its failure) ends it later.
            Ok(Charge::Processing(_)) => return Ok(purchase),
            Err(PaymentError::Declined(reason)) => PurchaseOutcome::Declined { reason },
            Err(PaymentError::Failed(reason)) => PurchaseOutcome::Failed { reason },
        };
        let completed = self
            .store()
            .complete_purchase(&purchase.id, outcome, request.actor, self.now())
            .await?;
        self.forget_organization_limits(request.org_id);
        if completed.status == PurchaseStatus::Succeeded {
            self.alerts_after_credit(request.org_id).await;
        }
        finished_purchase(completed)
    }

    pub(crate) fn forget_organization_limits(&self, org_id: &str) {
        self.inner.limits_cache.forget_organization(org_id);
    }

    pub async fn purchases(&self, org_id: &str) -> Result<Vec<Purchase>, ServiceError> {
        Ok(self.store().purchases(org_id).await?)
    }

    /// The ladder and the organization's place on it.
    pub async fn tier_standing(&self, org_id: &str) -> Result<TierStanding, ServiceError> {
        let limits = self.organization_limits(org_id).await?;
        let ladder = &self.settings().policy.ladder;
        let next = ladder.next_after(&limits.tier_name).map(|tier| {
            let missing = tier
                .cumulative_purchases_min
                .checked_sub(limits.billing.cumulative_purchases)
                .unwrap_or(NanoUsd::ZERO);
            (tier.limits.name.clone(), missing)
        });
        Ok(TierStanding {
            tiers: ladder.tiers().to_vec(),
            current: limits.tier_name.clone(),
            limit_set: limits.billing.limit_set.clone(),
            cumulative_purchases: limits.billing.cumulative_purchases,
            next,
            active_programmes: limits.billing.active_programmes.clone(),
        })
    }

    /// Turns auto-reload on: when the available balance falls below `threshold`, buy `amount`.
    pub async fn set_auto_reload(
        &self,
        org_id: &str,
        threshold: NanoUsd,
        amount: NanoUsd,
        payment_method: &str,
        actor: &str,
    ) -> Result<(), ServiceError> {
        if !threshold.is_positive() || !amount.is_positive() {
            return Err(ServiceError::Invalid(
                "the threshold and the amount must be positive".into(),
            ));
        }
        let limits = self.organization_limits(org_id).await?;
        check_single_purchase(&limits.limits, amount)?;
        let payment_method = match self.inner.payments.as_stripe() {
            // With Stripe, the card saved by the last Checkout payment (never a card number).
            Some(_) if payment_method.trim().is_empty() => self
                .store()
                .payment_customer(org_id)
                .await?
                .and_then(|customer| customer.payment_method_id)
                .ok_or_else(|| {
                    ServiceError::Invalid(
                        "no card is saved yet: buy credit once with a card and it is kept for auto-reload"
                            .into(),
                    )
                })?,
            _ => payment_method.trim().to_owned(),
        };
        if payment_method.is_empty() {
            return Err(ServiceError::Invalid("a payment method is required".into()));
        }
        let settings = AutoReload {
            org_id: org_id.to_owned(),
            enabled: true,
            threshold,
            amount,
            payment_method,
            in_flight_since: None,
            notice: None,
        };
        let details = format!("buy {amount} when the balance falls below {threshold}");
        let audit = self.audit_entry(org_id, actor, "autoreload.set", org_id, details, None);
        self.store().set_auto_reload(&settings, audit, self.now()).await?;
        self.forget_organization_limits(org_id);
        Ok(())
    }

    pub async fn disable_auto_reload(&self, org_id: &str, actor: &str) -> Result<(), ServiceError> {
        let audit = self.audit_entry(
            org_id,
            actor,
            "autoreload.off",
            org_id,
            "auto-reload turned off".into(),
            None,
        );
        if !self.store().disable_auto_reload(org_id, None, audit).await? {
            return Err(ServiceError::NotFound(
                "auto-reload is not set up for this organization".into(),
            ));
        }
        self.forget_organization_limits(org_id);
        Ok(())
    }

    pub async fn auto_reload(&self, org_id: &str) -> Result<Option<AutoReload>, ServiceError> {
        Ok(self.store().auto_reload(org_id).await?)
    }

    /// After a charge: starts an auto-reload check in the background when the organization
    /// has auto-reload on (known from the cached limits, so others pay no read).
    pub(crate) async fn auto_reload_after_charge(&self, org_id: &str) {
        let enabled = self.organization_limits(org_id).await.is_ok_and(|limits| {
            limits
                .auto_reload
                .as_ref()
                .is_some_and(|settings| settings.enabled)
        });
        if enabled {
            let tollgate = self.clone();
            let org_id = org_id.to_owned();
            tokio::spawn(async move { tollgate.auto_reload_if_needed(&org_id).await });
        }
    }

    /// Buys the configured amount when the available balance is below the threshold. Only
    /// the claimer of the organization's reload buys; everyone else returns at once. A
    /// declined or failed payment turns auto-reload off and records why. Requests never wait
    /// for a reload: until it lands they are refused if the credit is short.
    pub async fn auto_reload_if_needed(&self, org_id: &str) {
        if let Err(error) = self.try_auto_reload(org_id).await {
            tracing::warn!(%error, org_id, "auto-reload failed");
        }
    }

    async fn try_auto_reload(&self, org_id: &str) -> Result<(), ServiceError> {
        let Some(settings) = self.store().auto_reload(org_id).await? else {
            return Ok(());
        };
        if !settings.enabled || settings.in_flight_since.is_some() {
            return Ok(());
        }
        if self.balance(org_id).await?.available >= settings.threshold {
            return Ok(());
        }
        let now = self.now();
        let Some(claimed) = self
            .store()
            .claim_auto_reload(org_id, now, self.settings().auto_reload_stale)
            .await?
        else {
            return Ok(());
        };
        // Checked again under the claim: another process may have reloaded just before.
        if self.balance(org_id).await?.available >= claimed.threshold {
            self.store().finish_auto_reload(org_id, None, self.now()).await?;
            return Ok(());
        }
        let key = format!("auto-reload:{}", now.timestamp_millis());
        let result = self
            .purchase_from(
                PurchaseRequest {
                    org_id,
                    amount: claimed.amount,
                    payment_method: &claimed.payment_method,
                    idempotency_key: &key,
                    actor: "auto-reload",
                },
                PurchaseSource::AutoReload,
            )
            .await;
        let notice = match &result {
            Ok(_) => None,
            Err(ServiceError::Payment(error)) => Some(format!("auto-reload turned off: {error}")),
            Err(error) => Some(format!("auto-reload turned off: {error}")),
        };
        if let Err(ServiceError::Payment(PaymentError::Declined(reason))) = &result {
            self.fire_event(
                org_id,
                AlertKind::AutoReloadDeclined,
                &key,
                &format!(
                    "An auto-reload of {} was declined ({reason}); auto-reload is now off.",
                    claimed.amount
                ),
            )
            .await;
        }
        crate::telemetry::auto_reload(match &result {
            Ok(_) => "succeeded",
            Err(ServiceError::Payment(PaymentError::Declined(_))) => "declined",
            Err(_) => "failed",
        });
        self.store()
            .finish_auto_reload(org_id, notice.as_deref(), self.now())
            .await?;
        result.map(|_| ())
    }
}

/// The lot a paid purchase grants: its amount, expiring a year after it is granted.
pub(crate) fn purchase_lot(purchase: &Purchase, actor: &str, granted_at: tollgate_core::Timestamp) -> NewLot {
    NewLot {
        lot_id: random::id(IdKind::Lot),
        org_id: purchase.org_id.clone(),
        kind: LotKind::Purchase,
        amount: purchase.amount,
        granted_at,
        expires_at: default_expiry(LotKind::Purchase, granted_at),
        memo: format!("purchase {}", purchase.id),
        programme: None,
        actor: actor.to_owned(),
    }
}

/// The tier (or limit set) caps what one purchase may buy.
pub(crate) fn check_single_purchase(limits: &LimitSet, amount: NanoUsd) -> Result<(), ServiceError> {
    match limits.max_single_purchase {
        Some(cap) if amount > cap => Err(ServiceError::Invalid(format!(
            "a single purchase at {} is at most {cap}",
            limits.name
        ))),
        _ => Ok(()),
    }
}

/// A purchase that has ended: success, or the payment's refusal as an error.
fn finished_purchase(purchase: Purchase) -> Result<Purchase, ServiceError> {
    match purchase.status {
        PurchaseStatus::Succeeded => Ok(purchase),
        PurchaseStatus::Declined => Err(ServiceError::Payment(PaymentError::Declined(
            purchase.failure_reason.unwrap_or_else(|| "declined".into()),
        ))),
        PurchaseStatus::Failed | PurchaseStatus::Pending => Err(ServiceError::Payment(PaymentError::Failed(
            purchase.failure_reason.unwrap_or_else(|| "not completed".into()),
        ))),
    }
}
