//! Credit lots: grants and the balance as the customer sees it.

use tollgate_core::Timestamp;
use tollgate_core::ids::IdKind;
use tollgate_core::ledger::{LotKind, default_expiry};
use tollgate_core::money::NanoUsd;
use tollgate_store::NewLot;

use crate::error::ServiceError;
use crate::random;
use crate::{BalanceView, LotView, Tollgate};

impl Tollgate {
    /// Adds a credit lot of `kind` to the organization. Without `expires_at`, the kind's
    /// default applies (purchases expire a year after purchase).
    pub async fn grant(
        &self,
        org_id: &str,
        kind: LotKind,
        amount: NanoUsd,
        expires_at: Option<Timestamp>,
        memo: &str,
    ) -> Result<LotView, ServiceError> {
        if !amount.is_positive() {
            return Err(ServiceError::Invalid(format!(
                "the amount must be positive, not {amount}"
            )));
        }
        let granted_at = self.now();
        Ok(self
            .store()
            .grant_lot(NewLot {
                lot_id: random::id(IdKind::Lot),
                org_id: org_id.to_owned(),
                kind,
                amount,
                granted_at,
                expires_at: expires_at.or_else(|| default_expiry(kind, granted_at)),
                memo: memo.to_owned(),
            })
            .await?)
    }

    pub async fn balance(&self, org_id: &str) -> Result<BalanceView, ServiceError> {
        Ok(self.store().balance(org_id, self.now()).await?)
    }

    pub async fn lots(&self, org_id: &str) -> Result<Vec<LotView>, ServiceError> {
        Ok(self.store().lots(org_id).await?)
    }
}
