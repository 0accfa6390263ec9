//! Credit lots: grants and the balance as the customer sees it.

use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::ledger::{LotKind, default_expiry};
use tollgate_core::money::NanoUsd;
use tollgate_store::NewLot;

use crate::error::ServiceError;
use crate::random;
use crate::{BalanceView, LotView, Tollgate};

/// A credit grant.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    pub org_id: &'a str,
    pub kind: LotKind,
    pub amount: NanoUsd,
    /// `None`: the kind's default.
    pub expires_at: Option<Timestamp>,
    pub memo: &'a str,
    /// The promotional programme the credit belongs to.
    pub programme: Option<&'a str>,
    /// Who granted it, for the audit log.
    pub actor: &'a str,
}

impl Tollgate {
    /// Adds a credit lot. Without an expiry, the kind's default applies (purchases expire a
    /// year after purchase); only promotional credit may belong to a programme.
    pub async fn grant(&self, grant: Grant<'_>) -> Result<LotView, ServiceError> {
        let Grant {
            org_id,
            kind,
            amount,
            expires_at,
            memo,
            programme,
            actor,
        } = grant;
        if !amount.is_positive() {
            return Err(ServiceError::Invalid(format!(
                "the amount must be positive, not {amount}"
            )));
        }
        if let Some(programme) = programme {
            if kind != LotKind::Promotional {
                return Err(ServiceError::Invalid(
                    "only promotional credit belongs to a programme".into(),
                ));
            }
            let programmes = &self.settings().policy.programmes;
            if !programmes.contains_key(programme) {
                let known: Vec<&str> = programmes.keys().map(String::as_str).collect();
                return Err(ServiceError::Invalid(format!(
                    "no programme is named '{programme}' (configured: {})",
                    known.join(", ")
                )));
            }
        }
        let granted_at = self.now();
        let lot = self
            .store()
            .grant_lot(NewLot {
                lot_id: random::id(IdKind::Lot),
                org_id: org_id.to_owned(),
                kind,
                amount,
                granted_at,
                expires_at: expires_at.or_else(|| default_expiry(kind, granted_at)),
                memo: memo.to_owned(),
                programme: programme.map(str::to_owned),
                actor: actor.to_owned(),
            })
            .await?;
        // A programme's uplift applies at once in this process.
        self.inner.limits_cache.forget_organization(org_id);
        self.alerts_after_credit(org_id).await;
        Ok(lot)
    }

    pub async fn balance(&self, org_id: &str) -> Result<BalanceView, ServiceError> {
        Ok(self.store().balance(org_id, self.now()).await?)
    }

    pub async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, ServiceError> {
        Ok(self.store().lots(org_id).await?)
    }
}
