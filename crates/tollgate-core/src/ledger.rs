//! Double-entry ledger rules, after TigerBeetle's accounts and pending transfers.
//!
//! Every movement of money is a transfer that debits one account and credits another by the
//! same positive amount, so the accounts of the whole system always sum to zero. A
//! reservation is a *pending* transfer: it counts against the debited account at once and
//! ends exactly once, settled (posted, for at most the reserved amount) or voided.
//!
//! Accounts of one organization: one account per credit lot (credit-normal, may never be
//! overdrawn), the sources that lots are granted from (starter, promotional, purchases), the
//! `spend` account that usage is credited to, and the `expired` account that receives what is
//! left of a lot when it expires. Balances are derived here and stored by the store; the
//! store's audit recomputes them from the journal.

use crate::Timestamp;
use crate::money::NanoUsd;

/// Store-assigned identity of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub i64);

/// What an account is for; decides its overdraft rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A credit lot: its debits may never exceed its credits.
    Lot,
    StarterGrants,
    PromotionalGrants,
    Purchases,
    Spend,
    Expired,
}

impl AccountKind {
    pub const ALL: [AccountKind; 6] = [
        AccountKind::Lot,
        AccountKind::StarterGrants,
        AccountKind::PromotionalGrants,
        AccountKind::Purchases,
        AccountKind::Spend,
        AccountKind::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Lot => "lot",
            AccountKind::StarterGrants => "starter_grants",
            AccountKind::PromotionalGrants => "promotional_grants",
            AccountKind::Purchases => "purchases",
            AccountKind::Spend => "spend",
            AccountKind::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<AccountKind> {
        AccountKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    fn debits_must_not_exceed_credits(self) -> bool {
        self == AccountKind::Lot
    }
}

/// An account's four running totals, all non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub kind: AccountKind,
    pub debits_pending: NanoUsd,
    pub debits_posted: NanoUsd,
    pub credits_pending: NanoUsd,
    pub credits_posted: NanoUsd,
}

impl Account {
    pub fn new(id: AccountId, kind: AccountKind) -> Account {
        Account {
            id,
            kind,
            debits_pending: NanoUsd::ZERO,
            debits_posted: NanoUsd::ZERO,
            credits_pending: NanoUsd::ZERO,
            credits_posted: NanoUsd::ZERO,
        }
    }

    /// Posted credits less posted debits: what a lot holds, or minus what a source gave.
    pub fn posted_balance(&self) -> NanoUsd {
        NanoUsd::from_nanos(self.credits_posted.nanos() - self.debits_posted.nanos())
    }

    /// What may still be reserved from a credit-normal account.
    pub fn available(&self) -> NanoUsd {
        NanoUsd::from_nanos(
            self.credits_posted.nanos() - self.debits_posted.nanos() - self.debits_pending.nanos(),
        )
    }
}

/// Why the ledger refused a transfer. Callers check before they transfer, so outside of
/// tests each of these is a bug, not a customer-facing rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("transfer amount must be positive")]
    AmountNotPositive,
    #[error("debit and credit account are the same")]
    SameAccount,
    #[error("account {0:?} would be overdrawn")]
    Overdraft(AccountId),
    #[error("settled amount exceeds the pending amount")]
    ExceedsPending,
    #[error("an account total would overflow")]
    Overflow,
}

fn add(total: NanoUsd, amount: NanoUsd) -> Result<NanoUsd, TransferError> {
    total.checked_add(amount).ok_or(TransferError::Overflow)
}

fn sub(total: NanoUsd, amount: NanoUsd) -> Result<NanoUsd, TransferError> {
    match total.checked_sub(amount) {
        Some(rest) if !rest.is_negative() => Ok(rest),
        _ => Err(TransferError::ExceedsPending),
    }
}

fn check_pair(debit: &Account, credit: &Account, amount: NanoUsd) -> Result<(), TransferError> {
    if !amount.is_positive() {
        return Err(TransferError::AmountNotPositive);
    }
    if debit.id == credit.id {
        return Err(TransferError::SameAccount);
    }
    Ok(())
}

fn check_overdraft(debit: &Account, extra_debit: NanoUsd) -> Result<(), TransferError> {
    if debit.kind.debits_must_not_exceed_credits() && debit.available() < extra_debit {
        return Err(TransferError::Overdraft(debit.id));
    }
    Ok(())
}

/// Posts `amount` from `debit` to `credit` at once.
pub fn post(debit: &mut Account, credit: &mut Account, amount: NanoUsd) -> Result<(), TransferError> {
    check_pair(debit, credit, amount)?;
    check_overdraft(debit, amount)?;
    let debits_posted = add(debit.debits_posted, amount)?;
    let credits_posted = add(credit.credits_posted, amount)?;
    debit.debits_posted = debits_posted;
    credit.credits_posted = credits_posted;
    Ok(())
}

/// Makes `amount` pending from `debit` to `credit`: a reservation line.
pub fn reserve(debit: &mut Account, credit: &mut Account, amount: NanoUsd) -> Result<(), TransferError> {
    check_pair(debit, credit, amount)?;
    check_overdraft(debit, amount)?;
    let debits_pending = add(debit.debits_pending, amount)?;
    let credits_pending = add(credit.credits_pending, amount)?;
    debit.debits_pending = debits_pending;
    credit.credits_pending = credits_pending;
    Ok(())
}

/// Ends a pending line of `pending` by posting `posted` (0 ≤ posted ≤ pending) and releasing
/// the rest. Posting zero is a void.
pub fn settle_pending(
    debit: &mut Account,
    credit: &mut Account,
    pending: NanoUsd,
    posted: NanoUsd,
) -> Result<(), TransferError> {
    check_pair(debit, credit, pending)?;
    if posted.is_negative() || posted > pending {
        return Err(TransferError::ExceedsPending);
    }
    let debits_pending = sub(debit.debits_pending, pending)?;
    let credits_pending = sub(credit.credits_pending, pending)?;
    let debits_posted = add(debit.debits_posted, posted)?;
    let credits_posted = add(credit.credits_posted, posted)?;
    debit.debits_pending = debits_pending;
    credit.credits_pending = credits_pending;
    debit.debits_posted = debits_posted;
    credit.credits_posted = credits_posted;
    Ok(())
}

/// Where credit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LotKind {
    Starter,
    Purchase,
    Promotional,
}

impl LotKind {
    pub const ALL: [LotKind; 3] = [LotKind::Starter, LotKind::Purchase, LotKind::Promotional];

    pub fn as_str(self) -> &'static str {
        match self {
            LotKind::Starter => "starter",
            LotKind::Purchase => "purchase",
            LotKind::Promotional => "promotional",
        }
    }

    pub fn parse(text: &str) -> Option<LotKind> {
        LotKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The source account a lot of this kind is granted from.
    pub fn source_account_kind(self) -> AccountKind {
        match self {
            LotKind::Starter => AccountKind::StarterGrants,
            LotKind::Purchase => AccountKind::Purchases,
            LotKind::Promotional => AccountKind::PromotionalGrants,
        }
    }

    /// Among lots that expire at the same instant, which is drawn first: credit that would
    /// otherwise be lost soonest to the customer (promotional, then starter) before paid.
    fn drawdown_rank(self) -> u8 {
        match self {
            LotKind::Promotional => 0,
            LotKind::Starter => 1,
            LotKind::Purchase => 2,
        }
    }
}

/// A credit lot with its account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lot {
    pub lot_id: String,
    pub kind: LotKind,
    pub account: Account,
    pub granted_at: Timestamp,
    /// `None`: never expires.
    pub expires_at: Option<Timestamp>,
}

impl Lot {
    /// A lot is expired from its expiry instant on, whether or not the sweep has run yet.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

/// The order lots are drawn in: soonest expiry first (never-expiring last); ties by kind
/// (promotional, starter, purchase), then oldest grant, then id, so the order is total.
pub fn drawdown_order(lots: &mut [&Lot]) {
    lots.sort_by(|left, right| {
        let expiry_key = |lot: &Lot| (lot.expires_at.is_none(), lot.expires_at);
        expiry_key(left)
            .cmp(&expiry_key(right))
            .then(left.kind.drawdown_rank().cmp(&right.kind.drawdown_rank()))
            .then(left.granted_at.cmp(&right.granted_at))
            .then(left.lot_id.cmp(&right.lot_id))
    });
}

/// One line of a reservation: an amount pending from one lot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationLine {
    pub lot_id: String,
    pub lot_account: AccountId,
    pub amount: NanoUsd,
}

/// An organization's credit as the customer sees it at `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreditBalance {
    /// Reservable now: unexpired lots less what is reserved from them.
    pub available: NanoUsd,
    /// Reserved by requests in flight.
    pub held: NanoUsd,
}

pub fn credit_balance(lots: &[Lot], now: Timestamp) -> CreditBalance {
    let mut balance = CreditBalance::default();
    for lot in lots {
        balance.held = balance.held.saturating_add(lot.account.debits_pending);
        if !lot.is_expired(now) && lot.account.available().is_positive() {
            balance.available = balance.available.saturating_add(lot.account.available());
        }
    }
    balance
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("insufficient credit: {required} required, {available} available")]
pub struct InsufficientCredit {
    pub available: NanoUsd,
    pub required: NanoUsd,
}

/// Which lots a reservation of `amount` draws on, in drawdown order. All or nothing.
pub fn plan_reservation(
    lots: &[Lot],
    amount: NanoUsd,
    now: Timestamp,
) -> Result<Vec<ReservationLine>, InsufficientCredit> {
    let mut usable: Vec<&Lot> = lots
        .iter()
        .filter(|lot| !lot.is_expired(now) && lot.account.available().is_positive())
        .collect();
    drawdown_order(&mut usable);
    let mut lines = Vec::new();
    let mut remaining = amount;
    for lot in usable {
        if !remaining.is_positive() {
            break;
        }
        let take = remaining.min(lot.account.available());
        lines.push(ReservationLine {
            lot_id: lot.lot_id.clone(),
            lot_account: lot.account.id,
            amount: take,
        });
        remaining = NanoUsd::from_nanos(remaining.nanos() - take.nanos());
    }
    if remaining.is_positive() {
        return Err(InsufficientCredit {
            available: credit_balance(lots, now).available,
            required: amount,
        });
    }
    Ok(lines)
}

/// How a reservation ends: per line (same order), the amount posted; the rest is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementPlan {
    pub posted_per_line: Vec<NanoUsd>,
    pub charged: NanoUsd,
    pub released: NanoUsd,
    /// What the actual cost exceeded the reservation by. The reservation is an upper bound,
    /// so this is a bug when positive; the charge is capped rather than overdrawing.
    pub uncovered: NanoUsd,
}

/// Settles `actual` against the reservation's lines in order; `actual` of zero voids.
pub fn plan_settlement(lines: &[ReservationLine], actual: NanoUsd) -> SettlementPlan {
    let mut remaining = actual.max(NanoUsd::ZERO);
    let mut posted_per_line = Vec::with_capacity(lines.len());
    let mut charged = NanoUsd::ZERO;
    let mut released = NanoUsd::ZERO;
    for line in lines {
        let posted = remaining.min(line.amount);
        remaining = NanoUsd::from_nanos(remaining.nanos() - posted.nanos());
        charged = charged.saturating_add(posted);
        released = released.saturating_add(NanoUsd::from_nanos(line.amount.nanos() - posted.nanos()));
        posted_per_line.push(posted);
    }
    SettlementPlan {
        posted_per_line,
        charged,
        released,
        uncovered: remaining,
    }
}

/// What expiry moves out of a lot at `now`: everything not reserved, once it has expired.
/// Reserved credit stays until its reservation ends, like a card hold on a closing account;
/// what a void releases from an expired lot is swept by the next expiry.
pub fn expiry_amount(lot: &Lot, now: Timestamp) -> Option<NanoUsd> {
    (lot.is_expired(now) && lot.account.available().is_positive()).then(|| lot.account.available())
}

/// When a lot granted at `granted_at` expires unless told otherwise: purchases one year
/// after purchase (contract §2); grants carry their own expiry or none.
pub fn default_expiry(kind: LotKind, granted_at: Timestamp) -> Option<Timestamp> {
    match kind {
        LotKind::Purchase => granted_at.checked_add_months(chrono::Months::new(12)),
        LotKind::Starter | LotKind::Promotional => None,
    }
}

#[cfg(test)]
mod tests;
