//! Reversals of a paid purchase: a refund, or a dispute the organization lost. Decides how
//! much of a purchase one payment-provider event takes back, how much of that is still in
//! the purchase's lot (and is removed from it) and how much was already spent or held
//! (recorded as unrecovered, a negative adjustment the operator sees, never silently
//! dropped). Cumulative purchases, and so the usage tier, go down by what is reversed.
//!
//! Refunds are cumulative: the provider reports the charge's total refunded so far, so a
//! late or repeated refund event reverses only what the total adds, and an older total
//! reverses nothing. A purchase is never reversed beyond its amount. No I/O: the caller
//! loads the purchase's totals and its lot under a lock and writes the plan.

use crate::money::NanoUsd;

/// What a provider's event says was taken back from a purchase's payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversalClaim {
    /// The charge's refunds so far, in all (Stripe's `amount_refunded`).
    Refunded { refunded_total: NanoUsd },
    /// A dispute closed lost, for this amount.
    DisputeLost { disputed: NanoUsd },
}

impl ReversalClaim {
    pub fn kind(self) -> ReversalKind {
        match self {
            ReversalClaim::Refunded { .. } => ReversalKind::Refund,
            ReversalClaim::DisputeLost { .. } => ReversalKind::Dispute,
        }
    }
}

/// Why money went back to the buyer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReversalKind {
    Refund,
    Dispute,
}

impl ReversalKind {
    pub const ALL: [ReversalKind; 2] = [ReversalKind::Refund, ReversalKind::Dispute];

    pub fn as_str(self) -> &'static str {
        match self {
            ReversalKind::Refund => "refund",
            ReversalKind::Dispute => "dispute",
        }
    }

    pub fn parse(text: &str) -> Option<ReversalKind> {
        ReversalKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A paid purchase as a reversal sees it: its amount, what was reversed before, and what
/// its lot still has available (neither spent, nor held by an open reservation, nor
/// expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurchaseReversals {
    pub amount: NanoUsd,
    pub refunded: NanoUsd,
    pub disputed: NanoUsd,
    pub lot_available: NanoUsd,
}

/// What one event reverses. `reversed = recovered + unrecovered`, all positive or zero,
/// `reversed > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReversalPlan {
    pub kind: ReversalKind,
    /// Newly taken back by this event.
    pub reversed: NanoUsd,
    /// Removed from the purchase's lot (posted from the lot back to the purchases account).
    pub recovered: NanoUsd,
    /// Already spent or held: recorded against the purchase, not taken from the lot.
    pub unrecovered: NanoUsd,
    /// The purchase's totals after the event.
    pub refunded: NanoUsd,
    pub disputed: NanoUsd,
    /// The provider claimed more than the purchase had left to reverse; the rest was
    /// ignored (it would reverse money the purchase never granted).
    pub capped: bool,
}

/// Decides what `claim` reverses of `purchase`, or `None` when it reverses nothing new (an
/// older or repeated refund total, or a purchase already reversed in full).
pub fn plan_reversal(purchase: PurchaseReversals, claim: ReversalClaim) -> Option<ReversalPlan> {
    let already = purchase.refunded.checked_add(purchase.disputed)?;
    let headroom = purchase.amount.checked_sub(already)?.max(NanoUsd::ZERO);
    let claimed = match claim {
        ReversalClaim::Refunded { refunded_total } => refunded_total.checked_sub(purchase.refunded)?,
        ReversalClaim::DisputeLost { disputed } => disputed,
    };
    if !claimed.is_positive() || !headroom.is_positive() {
        return None;
    }
    let reversed = claimed.min(headroom);
    let recovered = reversed.min(purchase.lot_available.max(NanoUsd::ZERO));
    let unrecovered = reversed.checked_sub(recovered)?;
    let (refunded, disputed) = match claim.kind() {
        ReversalKind::Refund => (purchase.refunded.checked_add(reversed)?, purchase.disputed),
        ReversalKind::Dispute => (purchase.refunded, purchase.disputed.checked_add(reversed)?),
    };
    Some(ReversalPlan {
        kind: claim.kind(),
        reversed,
        recovered,
        unrecovered,
        refunded,
        disputed,
        capped: reversed < claimed,
    })
}

#[cfg(test)]
mod tests;
