//! Backend-neutral pieces of the ledger's transaction scripts: what both adapters do with
//! the rows they load, with no database type in sight. The accounts a script touches and
//! the core transfers applied to them, the journal rows it appends, the month's spend
//! counters, how a settlement is planned and how a reaped reservation is described, and
//! the audit's comparisons. The adapters only load and store.

use std::collections::{BTreeMap, HashMap};

use tollgate_core::Timestamp;
use tollgate_core::attribution::Attribution;
use tollgate_core::ledger::{
    self, Account, AccountId, AccountKind, ReservationLine, SettlementPlan, TransferError,
};
use tollgate_core::money::NanoUsd;
use tollgate_core::refunds::ReversalPlan;
use tollgate_core::spend::MonthSpend;
use tollgate_core::usage::TokenUsage;

use crate::codec::invariant;
use crate::error::StoreError;
use crate::model::{
    AuditEntry, BalanceView, LotView, NewLot, Purchase, PurchaseStatus, SettleOutcome, Settlement,
    UsageRecord, UsageStatus,
};

/// Actions the store writes by itself (the others are named by the caller's entry).
pub(crate) const CREDIT_GRANTED: &str = "credit.granted";
pub(crate) const CREDIT_EXPIRED: &str = "credit.expired";
pub(crate) const CREDIT_PURCHASED: &str = "credit.purchased";
pub(crate) const CREDIT_PURCHASE_DECLINED: &str = "credit.purchase_declined";
pub(crate) const CREDIT_PURCHASE_FAILED: &str = "credit.purchase_failed";
pub(crate) const CREDIT_REVERSED: &str = "credit.reversed";
pub(crate) const AUTO_RELOAD_DISABLED: &str = "autoreload.disabled";
/// The actor of what the store does on its own schedule (expiry, auto-reload shut-off).
pub(crate) const SYSTEM_ACTOR: &str = "system";

/// A caller's entry must describe a change to the organization it is filed under; filing it
/// under another would show one tenant's change in another's log.
pub(crate) fn check_entry_scope(entry: &AuditEntry, org_id: &str) -> Result<(), StoreError> {
    if entry.org_id != org_id {
        return Err(invariant(format!(
            "an audit entry of organization {} describes a change to organization {org_id}",
            entry.org_id
        )));
    }
    Ok(())
}

/// The entry of a purchase the provider did not pay (declined or failed, logged as `action`).
pub(crate) fn unpaid_purchase_entry(
    purchase: &Purchase,
    (status, action): (PurchaseStatus, &str),
    reason: String,
    actor: &str,
    now: Timestamp,
) -> AuditEntry {
    AuditEntry {
        org_id: purchase.org_id.clone(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: purchase.id.clone(),
        details: format!(
            "{} purchase of {} {}",
            purchase.source.as_str(),
            purchase.amount,
            status.as_str()
        ),
        reason: Some(reason),
        at: now,
    }
}

/// The entry of a reversal (a refund or a lost dispute) of a paid purchase.
pub(crate) fn reversal_entry(
    purchase: &Purchase,
    plan: &ReversalPlan,
    reference: &str,
    cumulative_purchases: NanoUsd,
    actor: &str,
    now: Timestamp,
) -> AuditEntry {
    let lot = purchase.lot_id.as_deref().unwrap_or("?");
    AuditEntry {
        org_id: purchase.org_id.clone(),
        actor: actor.to_owned(),
        action: CREDIT_REVERSED.to_owned(),
        subject: purchase.id.clone(),
        details: format!(
            "{} of {} of the purchase of {}: {} removed from lot {lot}, {} unrecovered (spent, held or expired){}; cumulative purchases now {cumulative_purchases}",
            plan.kind.as_str(),
            plan.reversed,
            purchase.amount,
            plan.recovered,
            plan.unrecovered,
            if plan.capped {
                ", capped at what the purchase had left"
            } else {
                ""
            },
        ),
        reason: Some(reference.to_owned()),
        at: now,
    }
}

/// A reversal is only ever of a paid purchase with its lot; anything else is a caller's bug.
pub(crate) fn reversed_lot_id(purchase: &Purchase) -> Result<&str, StoreError> {
    match (&purchase.status, &purchase.lot_id) {
        (PurchaseStatus::Succeeded, Some(lot_id)) => Ok(lot_id.as_str()),
        _ => Err(invariant(format!(
            "a reversal of purchase {} which is {} and granted no lot",
            purchase.id,
            purchase.status.as_str()
        ))),
    }
}

// Balances.

/// An organization's balance from its lots and its spend and expired accounts, all read
/// from one snapshot.
pub(crate) fn balance_view(
    org_id: &str,
    lots: Vec<LotView>,
    spend: &Account,
    expired: &Account,
    now: Timestamp,
) -> Result<BalanceView, StoreError> {
    let mut granted = NanoUsd::ZERO;
    for lot in &lots {
        granted = granted
            .checked_add(lot.amount)
            .ok_or_else(|| invariant(format!("the granted total of organization {org_id} overflows")))?;
    }
    let lots: Vec<ledger::Lot> = lots.into_iter().map(|view| view.lot).collect();
    let credit = ledger::credit_balance(&lots, now);
    Ok(BalanceView {
        available: credit.available,
        held: credit.held,
        spent: spend.credits_posted,
        expired: expired.credits_posted,
        granted,
    })
}

// Accounts and the journal.

/// What a journal row records as the reason for a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransferKind {
    Grant,
    Usage,
    Expiry,
    /// What a refund or lost dispute recovers from a purchase's lot.
    Reversal,
}

impl TransferKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TransferKind::Grant => "grant",
            TransferKind::Usage => "usage",
            TransferKind::Expiry => "expiry",
            TransferKind::Reversal => "reversal",
        }
    }
}

/// One posted transfer to append to the journal.
#[derive(Clone, Debug)]
pub(crate) struct JournalEntry<'a> {
    pub(crate) org_id: &'a str,
    pub(crate) debit: AccountId,
    pub(crate) credit: AccountId,
    pub(crate) amount: NanoUsd,
    pub(crate) kind: TransferKind,
    pub(crate) reservation_id: Option<&'a str>,
    pub(crate) lot_id: Option<&'a str>,
    pub(crate) created_at: Timestamp,
}

/// The accounts one transaction touches: as loaded, and as the core left them.
#[derive(Default)]
pub(crate) struct AccountSet {
    loaded: BTreeMap<AccountId, Account>,
    current: BTreeMap<AccountId, Account>,
}

impl AccountSet {
    /// Adds an account as read from the database (or just inserted with zero totals).
    pub(crate) fn insert(&mut self, account: Account) {
        self.loaded.entry(account.id).or_insert(account);
        self.current.entry(account.id).or_insert(account);
    }

    pub(crate) fn get(&self, id: AccountId) -> Result<Account, StoreError> {
        self.current
            .get(&id)
            .copied()
            .ok_or_else(|| invariant(format!("account {} was not loaded", id.0)))
    }

    /// Applies one core transfer function to a debit and a credit account.
    pub(crate) fn transfer(
        &mut self,
        debit_id: AccountId,
        credit_id: AccountId,
        apply: impl FnOnce(&mut Account, &mut Account) -> Result<(), TransferError>,
    ) -> Result<(), StoreError> {
        let (debit, credit) = apply_transfer(self.get(debit_id)?, self.get(credit_id)?, apply)?;
        self.current.insert(debit_id, debit);
        self.current.insert(credit_id, credit);
        Ok(())
    }

    /// The accounts that changed, as (loaded, current) in account id order, each checked
    /// to have non-negative totals and no overdrawn lot.
    pub(crate) fn changed(&self) -> Result<Vec<(Account, Account)>, StoreError> {
        let mut changed = Vec::new();
        for (id, current) in &self.current {
            let Some(loaded) = self.loaded.get(id) else {
                return Err(invariant(format!("account {} has no loaded totals", id.0)));
            };
            if current != loaded {
                check_totals(current)?;
                changed.push((*loaded, *current));
            }
        }
        Ok(changed)
    }
}

/// One core transfer function applied to a debit and a credit account: both as after it,
/// or the ledger's refusal as a broken invariant (callers check what they transfer first).
pub(crate) fn apply_transfer(
    mut debit: Account,
    mut credit: Account,
    apply: impl FnOnce(&mut Account, &mut Account) -> Result<(), TransferError>,
) -> Result<(Account, Account), StoreError> {
    apply(&mut debit, &mut credit).map_err(|error| {
        invariant(format!(
            "the ledger refused a transfer from account {} to account {}: {error}",
            debit.id.0, credit.id.0
        ))
    })?;
    Ok((debit, credit))
}

/// Totals are never negative and a lot is never overdrawn.
pub(crate) fn check_totals(account: &Account) -> Result<(), StoreError> {
    let totals = [
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
    ];
    if totals.iter().any(|total| total.is_negative()) {
        return Err(invariant(format!(
            "account {} has a negative total: {account:?}",
            account.id.0
        )));
    }
    if account.kind == AccountKind::Lot && account.available().is_negative() {
        return Err(invariant(format!(
            "lot account {} is overdrawn: {account:?}",
            account.id.0
        )));
    }
    Ok(())
}

/// An account written back must read back as written.
pub(crate) fn check_read_back(stored: &Account, written: &Account) -> Result<(), StoreError> {
    if stored != written {
        return Err(invariant(format!(
            "account {} reads back as {stored:?} after writing {written:?}",
            written.id.0
        )));
    }
    check_totals(stored)
}

/// "purchase lot of $12.50, expires 2027-01-01T00:00:00Z", as the audit log says it.
pub(crate) fn describe_grant(new_lot: &NewLot, expires_at: Option<Timestamp>) -> String {
    let programme = match &new_lot.programme {
        Some(programme) => format!(" (programme {programme})"),
        None => String::new(),
    };
    let expiry = match expires_at {
        Some(expires_at) => format!(
            "expires {}",
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "never expires".to_owned(),
    };
    format!(
        "{} lot of {}{programme}, {expiry}",
        new_lot.kind.as_str(),
        new_lot.amount
    )
}

// Settlements.

/// How a pending reservation of `amount` with these lines ends for `cost`: checks that the
/// lines add up to the reservation, asks the core, and logs a cost above the reservation.
pub(crate) fn plan_end(
    reservation_id: &str,
    amount: NanoUsd,
    lines: &[ReservationLine],
    cost: NanoUsd,
) -> Result<SettlementPlan, StoreError> {
    let lines_total = lines
        .iter()
        .fold(NanoUsd::ZERO, |total, line| total.saturating_add(line.amount));
    if lines_total != amount {
        return Err(invariant(format!(
            "reservation {reservation_id} is for {amount} but its lines add up to {lines_total}"
        )));
    }
    let plan = ledger::plan_settlement(lines, cost);
    if plan.uncovered.is_positive() {
        tracing::error!(
            reservation_id,
            cost = %cost,
            reserved = %amount,
            uncovered = %plan.uncovered,
            "a request cost more than its reservation; the charge was capped at the reservation"
        );
    }
    Ok(plan)
}

/// The state an ended reservation is stored in: settled if anything was charged.
pub(crate) fn ended_state(plan: &SettlementPlan) -> &'static str {
    if plan.charged.is_positive() {
        "settled"
    } else {
        "voided"
    }
}

pub(crate) fn settle_outcome(plan: &SettlementPlan) -> SettleOutcome {
    SettleOutcome {
        charged: plan.charged,
        released: plan.released,
        uncovered: plan.uncovered,
        already_ended: false,
        standing: None,
    }
}

/// A settlement may not have a negative cost.
pub(crate) fn check_settlement(settlement: &Settlement) -> Result<(), StoreError> {
    if settlement.cost.is_negative() {
        return Err(invariant(format!(
            "reservation {} settled for a negative cost {}",
            settlement.reservation_id, settlement.cost
        )));
    }
    Ok(())
}

/// The usage record of a settlement must belong to the reservation's organization.
pub(crate) fn check_record_scope(settlement: &Settlement, org_id: &str) -> Result<(), StoreError> {
    if settlement.record.org_id != org_id {
        return Err(invariant(format!(
            "reservation {} of {org_id} settled with a usage record of {}",
            settlement.reservation_id, settlement.record.org_id
        )));
    }
    Ok(())
}

/// An overdue reservation, as the reaper reads it.
pub(crate) struct Overdue {
    pub(crate) reservation_id: String,
    pub(crate) org_id: String,
    pub(crate) workspace_id: String,
    pub(crate) api_key_id: Option<String>,
    pub(crate) request_id: String,
    pub(crate) model: String,
    pub(crate) created_at: Timestamp,
}

/// The settlement the reaper makes for a reservation whose request never ended it.
pub(crate) fn abandonment(overdue: Overdue, now: Timestamp) -> Settlement {
    let latency_ms = u64::try_from((now - overdue.created_at).num_milliseconds()).unwrap_or(0);
    Settlement {
        reservation_id: overdue.reservation_id,
        cost: NanoUsd::ZERO,
        now,
        record: UsageRecord {
            request_id: overdue.request_id,
            org_id: overdue.org_id,
            workspace_id: overdue.workspace_id,
            api_key_id: overdue.api_key_id,
            model: overdue.model,
            usage: TokenUsage::default(),
            cost: NanoUsd::ZERO,
            status: UsageStatus::Abandoned,
            error_type: None,
            latency_ms,
            started_at: overdue.created_at,
            ended_at: now,
            // The reservation does not keep it; an abandoned request is charged nothing.
            attribution: Attribution::default(),
            served_model: None,
            multipliers: Default::default(),
            lines: Default::default(),
            upstream_attempts: Vec::new(),
        },
    }
}

// Monthly spend counters.

/// One workspace's counter for one month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpendCounter {
    pub(crate) settled: NanoUsd,
    pub(crate) held: NanoUsd,
}

impl SpendCounter {
    /// Settled plus held: the workspace's spend this month.
    pub(crate) fn spend(self) -> Result<NanoUsd, StoreError> {
        self.settled
            .checked_add(self.held)
            .ok_or_else(|| invariant(format!("a spend counter overflows: {self:?}")))
    }

    /// The counter after a reservation of `amount` is made.
    pub(crate) fn hold(self, workspace_id: &str, amount: NanoUsd) -> Result<SpendCounter, StoreError> {
        let held = self
            .held
            .checked_add(amount)
            .ok_or_else(|| invariant(format!("the held spend of workspace {workspace_id} overflows")))?;
        Ok(SpendCounter { held, ..self })
    }

    /// The counter after a reservation of `amount` ends having charged `charged`.
    pub(crate) fn end(
        self,
        workspace_id: &str,
        amount: NanoUsd,
        charged: NanoUsd,
    ) -> Result<SpendCounter, StoreError> {
        let held = self
            .held
            .checked_sub(amount)
            .ok_or_else(|| invariant(format!("the held spend of workspace {workspace_id} underflows")))?;
        let settled = self
            .settled
            .checked_add(charged)
            .ok_or_else(|| invariant(format!("the settled spend of workspace {workspace_id} overflows")))?;
        Ok(SpendCounter { settled, held })
    }
}

/// The organization's spend in `month` (every workspace) and the workspace's, from the
/// month's counter rows of the organization.
pub(crate) fn month_spend_of(
    org_id: &str,
    workspace_id: &str,
    month: i64,
    counters: impl IntoIterator<Item = (String, SpendCounter)>,
) -> Result<MonthSpend, StoreError> {
    let mut spent = MonthSpend::default();
    for (row_workspace_id, counter) in counters {
        let counter_spend = counter.spend()?;
        spent.organization = spent.organization.checked_add(counter_spend).ok_or_else(|| {
            invariant(format!(
                "the spend of organization {org_id} in month {month} overflows"
            ))
        })?;
        if row_workspace_id == workspace_id {
            spent.workspace = counter_spend;
        }
    }
    Ok(spent)
}

// The audit's comparisons.

/// Sums from the journal and the open reservations, by account id.
pub(crate) type TotalsByAccount = HashMap<i64, i64>;

/// Every account's four totals as recomputed from the journal and the open reservations.
#[derive(Default)]
pub(crate) struct RecomputedTotals {
    pub(crate) debits_pending: TotalsByAccount,
    pub(crate) debits_posted: TotalsByAccount,
    pub(crate) credits_pending: TotalsByAccount,
    pub(crate) credits_posted: TotalsByAccount,
}

/// Compares every stored account (with its organization) with the recomputed totals and
/// checks double entry per organization and overall; returns the problems in words.
pub(crate) fn compare_accounts(accounts: &[(String, Account)], recomputed: &RecomputedTotals) -> Vec<String> {
    let mut problems = Vec::new();
    let mut sums_by_org: BTreeMap<&str, TotalSums> = BTreeMap::new();
    let mut sums_overall = TotalSums::default();
    for (org_id, account) in accounts {
        let label = format!("account {} ({} of {org_id})", account.id.0, account.kind.as_str());
        let totals = [
            (
                "debits_pending",
                account.debits_pending.nanos(),
                &recomputed.debits_pending,
            ),
            (
                "debits_posted",
                account.debits_posted.nanos(),
                &recomputed.debits_posted,
            ),
            (
                "credits_pending",
                account.credits_pending.nanos(),
                &recomputed.credits_pending,
            ),
            (
                "credits_posted",
                account.credits_posted.nanos(),
                &recomputed.credits_posted,
            ),
        ];
        for (total_name, stored, sums) in totals {
            let expected = sums.get(&account.id.0).copied().unwrap_or(0);
            if stored != expected {
                let source = if total_name.ends_with("posted") {
                    "the journal"
                } else {
                    "the open reservations"
                };
                problems.push(format!(
                    "{label}: {total_name} is {stored} but {source} add up to {expected}"
                ));
            }
            if stored < 0 {
                problems.push(format!("{label}: {total_name} is negative ({stored})"));
            }
        }
        if account.kind == AccountKind::Lot && account.available().is_negative() {
            problems.push(format!(
                "{label}: the lot is overdrawn by {}",
                -account.available().nanos()
            ));
        }
        sums_by_org.entry(org_id).or_default().add(account);
        sums_overall.add(account);
    }
    for (org_id, sums) in &sums_by_org {
        sums.check(&format!("organization {org_id}"), &mut problems);
    }
    sums_overall.check("all accounts", &mut problems);
    problems
}

/// Column sums over a set of accounts. Wide, so the check itself cannot overflow.
#[derive(Default)]
struct TotalSums {
    debits_pending: i128,
    debits_posted: i128,
    credits_pending: i128,
    credits_posted: i128,
}

impl TotalSums {
    fn add(&mut self, account: &Account) {
        self.debits_pending += i128::from(account.debits_pending.nanos());
        self.debits_posted += i128::from(account.debits_posted.nanos());
        self.credits_pending += i128::from(account.credits_pending.nanos());
        self.credits_posted += i128::from(account.credits_posted.nanos());
    }

    /// Double entry: every transfer debits and credits the same amount.
    fn check(&self, scope: &str, problems: &mut Vec<String>) {
        if self.debits_posted != self.credits_posted {
            problems.push(format!(
                "{scope}: posted debits add up to {} but posted credits to {}",
                self.debits_posted, self.credits_posted
            ));
        }
        if self.debits_pending != self.credits_pending {
            problems.push(format!(
                "{scope}: pending debits add up to {} but pending credits to {}",
                self.debits_pending, self.credits_pending
            ));
        }
    }
}

/// How a disagreement found by one of the audit's cross-checks reads: (subject, stored,
/// recomputed).
pub(crate) type DescribeMismatch = fn(&str, i64, i64) -> String;

/// The audit's checks that relate rows of different tables, in the order `ledger_audit`
/// lists its queries for them. Each query returns only the rows that disagree, as
/// (subject, stored, recomputed).
pub(crate) const CROSS_CHECK_DESCRIPTIONS: [DescribeMismatch; 12] = [
    // A lot's amount against its grant transfers.
    |lot_id, amount, granted| {
        format!("lot {lot_id}: granted for {amount} but its grant transfers add up to {granted}")
    },
    // A reservation's amount against its lines.
    |reservation_id, amount, lines| {
        format!("reservation {reservation_id}: reserved {amount} but its lines add up to {lines}")
    },
    // An ended reservation's charge against its usage transfers.
    |reservation_id, charged, posted| {
        format!("reservation {reservation_id}: charged {charged} but its usage transfers add up to {posted}")
    },
    // A transfer between accounts of another organization than its own.
    |transfer_id, debit, credit| {
        format!(
            "transfer {transfer_id}: moves money between organizations (account {debit} to account {credit})"
        )
    },
    // A reservation line's account against its lot's.
    |line, account, lot_account| {
        format!("reservation {line}: draws on account {account} but its lot's account is {lot_account}")
    },
    // A spend counter's held amount against the open reservations of its month.
    |counter, held, pending| {
        format!(
            "spend counter of {counter}: holds {held} but the open reservations made that month add up to {pending}"
        )
    },
    // A spend counter's settled amount against the charges of its month's reservations.
    |counter, settled, charged| {
        format!(
            "spend counter of {counter}: settled {settled} but the reservations made that month charged {charged}"
        )
    },
    // An organization's cumulative purchases against its succeeded purchases, less what
    // was refunded or lost in disputes.
    |org_id, cumulative, purchased| {
        format!(
            "organization {org_id}: cumulative purchases are {cumulative} but its succeeded purchases less their reversals add up to {purchased}"
        )
    },
    // A paid purchase against the purchase lot it granted.
    |purchase_id, amount, lot_amount| {
        format!(
            "purchase {purchase_id}: paid {amount} but granted a purchase lot of {lot_amount} to its organization"
        )
    },
    // A reservation's usage records: one once it has ended (written with its charge), none
    // while it is open.
    |reservation_id, records, expected| {
        format!("reservation {reservation_id}: has {records} usage records but should have {expected}")
    },
    // A user's spend counter's held amount against their open reservations of its month.
    |counter, held, pending| {
        format!(
            "spend counter of {counter}: holds {held} but the user's open reservations made that month add up to {pending}"
        )
    },
    // A user's spend counter's settled amount against the charges of their reservations.
    |counter, settled, charged| {
        format!(
            "spend counter of {counter}: settled {settled} but the user's reservations made that month charged {charged}"
        )
    },
];

/// The audit's checks of reversals (refunds and lost disputes), as (query, description):
/// one SQL text for both backends (sums cast to BIGINT, which both read as `i64`), each
/// returning only the rows that disagree as (subject, stored, recomputed).
pub(crate) const REVERSAL_CROSS_CHECKS: [(&str, DescribeMismatch); 5] = [
    (
        "SELECT p.id AS subject, p.refunded_nanos AS stored,
                CAST(COALESCE(SUM(r.amount_nanos), 0) AS BIGINT) AS recomputed
         FROM purchases p LEFT JOIN purchase_reversals r ON r.purchase_id = p.id AND r.kind = 'refund'
         GROUP BY p.id, p.refunded_nanos
         HAVING p.refunded_nanos <> COALESCE(SUM(r.amount_nanos), 0)",
        |purchase_id, refunded, rows| {
            format!("purchase {purchase_id}: refunded {refunded} but its refunds add up to {rows}")
        },
    ),
    (
        "SELECT p.id AS subject, p.disputed_nanos AS stored,
                CAST(COALESCE(SUM(r.amount_nanos), 0) AS BIGINT) AS recomputed
         FROM purchases p LEFT JOIN purchase_reversals r ON r.purchase_id = p.id AND r.kind = 'dispute'
         GROUP BY p.id, p.disputed_nanos
         HAVING p.disputed_nanos <> COALESCE(SUM(r.amount_nanos), 0)",
        |purchase_id, disputed, rows| {
            format!("purchase {purchase_id}: lost {disputed} in disputes but its disputes add up to {rows}")
        },
    ),
    (
        "SELECT p.id AS subject, p.unrecovered_nanos AS stored,
                CAST(COALESCE(SUM(r.unrecovered_nanos), 0) AS BIGINT) AS recomputed
         FROM purchases p LEFT JOIN purchase_reversals r ON r.purchase_id = p.id
         GROUP BY p.id, p.unrecovered_nanos
         HAVING p.unrecovered_nanos <> COALESCE(SUM(r.unrecovered_nanos), 0)",
        |purchase_id, unrecovered, rows| {
            format!(
                "purchase {purchase_id}: {unrecovered} unrecovered but its reversals left {rows} unrecovered"
            )
        },
    ),
    // What the reversals recovered is exactly what the journal moved out of the lot for them.
    (
        "SELECT p.id AS subject,
                CAST((SELECT COALESCE(SUM(r.recovered_nanos), 0) FROM purchase_reversals r
                      WHERE r.purchase_id = p.id) AS BIGINT) AS stored,
                CAST((SELECT COALESCE(SUM(t.amount), 0) FROM transfers t
                      WHERE t.lot_id = p.lot_id AND t.kind = 'reversal') AS BIGINT) AS recomputed
         FROM purchases p
         WHERE p.lot_id IS NOT NULL
           AND (SELECT COALESCE(SUM(r.recovered_nanos), 0) FROM purchase_reversals r
                WHERE r.purchase_id = p.id)
               <> (SELECT COALESCE(SUM(t.amount), 0) FROM transfers t
                   WHERE t.lot_id = p.lot_id AND t.kind = 'reversal')",
        |purchase_id, recovered, moved| {
            format!(
                "purchase {purchase_id}: its reversals recovered {recovered} but the journal moved {moved} out of its lot for them"
            )
        },
    ),
    // Never more reversed than paid, and only a paid purchase.
    (
        "SELECT p.id AS subject, p.refunded_nanos + p.disputed_nanos AS stored,
                CASE WHEN p.status = 'succeeded' THEN p.amount_nanos ELSE 0 END AS recomputed
         FROM purchases p
         WHERE p.refunded_nanos + p.disputed_nanos
               > CASE WHEN p.status = 'succeeded' THEN p.amount_nanos ELSE 0 END",
        |purchase_id, reversed, paid| format!("purchase {purchase_id}: reversed {reversed} but paid {paid}"),
    ),
];
