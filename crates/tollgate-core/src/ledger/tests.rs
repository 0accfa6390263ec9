//! Ledger rules under a random workload of grant / reserve / settle / void / expire,
//! checked after every step against an independent auditor that only adds and subtracts.

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;

use crate::Timestamp;
use crate::ledger::{
    Account, AccountId, AccountKind, Lot, LotKind, ReservationLine, TransferError, credit_balance,
    expiry_amount, plan_reservation, plan_settlement, post, reserve, settle_pending,
};
use crate::money::NanoUsd;

fn at(seconds: i64) -> Timestamp {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0)
        .single()
        .expect("valid instant")
}

fn nanos(value: i64) -> NanoUsd {
    NanoUsd::from_nanos(value)
}

#[test]
fn a_lot_cannot_be_overdrawn_by_posting_or_reserving() {
    let mut lot = Account::new(AccountId(1), AccountKind::Lot);
    let mut source = Account::new(AccountId(2), AccountKind::Purchases);
    let mut spend = Account::new(AccountId(3), AccountKind::Spend);
    post(&mut source, &mut lot, nanos(100)).expect("grant");
    reserve(&mut lot, &mut spend, nanos(60)).expect("first reservation");
    assert_eq!(
        reserve(&mut lot, &mut spend, nanos(41)),
        Err(TransferError::Overdraft(AccountId(1)))
    );
    assert_eq!(
        post(&mut lot, &mut spend, nanos(41)),
        Err(TransferError::Overdraft(AccountId(1)))
    );
    assert_eq!(
        post(&mut lot, &mut spend, nanos(0)),
        Err(TransferError::AmountNotPositive)
    );
    settle_pending(&mut lot, &mut spend, nanos(60), nanos(25)).expect("settle");
    assert_eq!(lot.available(), nanos(75));
    assert_eq!(spend.credits_posted, nanos(25));
    assert_eq!(
        settle_pending(&mut lot, &mut spend, nanos(60), nanos(0)),
        Err(TransferError::ExceedsPending),
        "a second end of the same reservation finds nothing pending"
    );
}

fn lot(
    id: &str,
    kind: LotKind,
    expires_at: Option<Timestamp>,
    granted_at: Timestamp,
    account: i64,
    amount: i64,
) -> Lot {
    let mut lot_account = Account::new(AccountId(account), AccountKind::Lot);
    lot_account.credits_posted = nanos(amount);
    Lot {
        lot_id: id.to_owned(),
        kind,
        account: lot_account,
        granted_at,
        expires_at,
    }
}

#[test]
fn draws_soonest_expiry_first_then_promotional_starter_purchase() {
    let soon = Some(at(100));
    let lots = vec![
        lot("purchase-late", LotKind::Purchase, Some(at(500)), at(0), 1, 10),
        lot("purchase-soon", LotKind::Purchase, soon, at(0), 2, 10),
        lot("starter-soon", LotKind::Starter, soon, at(0), 3, 10),
        lot("promo-soon", LotKind::Promotional, soon, at(0), 4, 10),
        lot("never", LotKind::Purchase, None, at(0), 5, 10),
    ];
    let lines = plan_reservation(&lots, nanos(45), at(1)).expect("covered");
    let order: Vec<(&str, i64)> = lines
        .iter()
        .map(|line| (line.lot_id.as_str(), line.amount.nanos()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("promo-soon", 10),
            ("starter-soon", 10),
            ("purchase-soon", 10),
            ("purchase-late", 10),
            ("never", 5)
        ]
    );
}

#[test]
fn expired_credit_is_unusable_from_the_instant_of_expiry() {
    let lots = vec![lot("a", LotKind::Purchase, Some(at(100)), at(0), 1, 50)];
    assert_eq!(credit_balance(&lots, at(99)).available, nanos(50));
    assert_eq!(credit_balance(&lots, at(100)).available, NanoUsd::ZERO);
    assert!(plan_reservation(&lots, nanos(1), at(100)).is_err());
    assert_eq!(expiry_amount(&lots[0], at(99)), None);
    assert_eq!(expiry_amount(&lots[0], at(100)), Some(nanos(50)));
}

#[test]
fn settlement_posts_in_line_order_and_releases_the_rest() {
    let lines = vec![
        ReservationLine {
            lot_id: "a".into(),
            lot_account: AccountId(1),
            amount: nanos(30),
        },
        ReservationLine {
            lot_id: "b".into(),
            lot_account: AccountId(2),
            amount: nanos(30),
        },
    ];
    let plan = plan_settlement(&lines, nanos(40));
    assert_eq!(plan.posted_per_line, vec![nanos(30), nanos(10)]);
    assert_eq!(
        (plan.charged, plan.released, plan.uncovered),
        (nanos(40), nanos(20), NanoUsd::ZERO)
    );
    let over = plan_settlement(&lines, nanos(70));
    assert_eq!((over.charged, over.uncovered), (nanos(60), nanos(10)));
    let void = plan_settlement(&lines, NanoUsd::ZERO);
    assert_eq!((void.charged, void.released), (NanoUsd::ZERO, nanos(60)));
}

/// The world of the model test: one organization's accounts, its lots and open reservations.
struct World {
    accounts: Vec<Account>,
    lots: Vec<Lot>,
    reservations: Vec<Vec<ReservationLine>>,
    now_seconds: i64,
    // The auditor's own tallies, kept by plain arithmetic on what each step claims.
    granted: i64,
    charged: i64,
    expired: i64,
}

const STARTER: usize = 0;
const PROMOTIONAL: usize = 1;
const PURCHASES: usize = 2;
const SPEND: usize = 3;
const EXPIRED: usize = 4;

impl World {
    fn new() -> World {
        let kinds = [
            AccountKind::StarterGrants,
            AccountKind::PromotionalGrants,
            AccountKind::Purchases,
            AccountKind::Spend,
            AccountKind::Expired,
        ];
        World {
            accounts: kinds
                .iter()
                .enumerate()
                .map(|(index, kind)| Account::new(AccountId(index as i64), *kind))
                .collect(),
            lots: Vec::new(),
            reservations: Vec::new(),
            now_seconds: 0,
            granted: 0,
            charged: 0,
            expired: 0,
        }
    }

    fn lot_index(&self, id: AccountId) -> usize {
        self.lots
            .iter()
            .position(|lot| lot.account.id == id)
            .expect("lot exists")
    }

    fn pair(&mut self, debit: AccountId, credit: usize) -> (Account, Account) {
        let debit_account = self.lots[self.lot_index(debit)].account;
        (debit_account, self.accounts[credit])
    }

    fn store(&mut self, debit: Account, credit: Account, credit_index: usize) {
        let index = self.lot_index(debit.id);
        self.lots[index].account = debit;
        self.accounts[credit_index] = credit;
    }

    fn apply(&mut self, op: &Op) {
        let now = at(self.now_seconds);
        match *op {
            Op::Grant {
                kind,
                amount,
                lifetime_seconds,
            } => {
                let id = AccountId(100 + self.lots.len() as i64);
                let source = match kind {
                    LotKind::Starter => STARTER,
                    LotKind::Promotional => PROMOTIONAL,
                    LotKind::Purchase => PURCHASES,
                };
                let mut lot_account = Account::new(id, AccountKind::Lot);
                post(&mut self.accounts[source], &mut lot_account, nanos(amount)).expect("grant posts");
                self.lots.push(Lot {
                    lot_id: format!("lot{}", id.0),
                    kind,
                    account: lot_account,
                    granted_at: now,
                    expires_at: lifetime_seconds.map(|seconds| now + Duration::seconds(seconds)),
                });
                self.granted += amount;
            }
            Op::Reserve { amount } => {
                let before = credit_balance(&self.lots, now).available;
                match plan_reservation(&self.lots, nanos(amount), now) {
                    Ok(lines) => {
                        assert!(
                            before >= nanos(amount),
                            "reserved {amount} with only {before} available"
                        );
                        let total: i64 = lines.iter().map(|line| line.amount.nanos()).sum();
                        assert_eq!(total, amount, "lines sum to the reservation");
                        for line in &lines {
                            let (mut debit, mut credit) = self.pair(line.lot_account, SPEND);
                            reserve(&mut debit, &mut credit, line.amount).expect("planned lines fit");
                            self.store(debit, credit, SPEND);
                        }
                        self.reservations.push(lines);
                    }
                    Err(refusal) => {
                        assert!(before < nanos(amount), "refused {amount} with {before} available");
                        assert_eq!(refusal.available, before);
                    }
                }
            }
            Op::Settle {
                pick,
                actual_permille,
            } => {
                if self.reservations.is_empty() {
                    return;
                }
                let lines = self.reservations.remove(pick % self.reservations.len());
                let held: i64 = lines.iter().map(|line| line.amount.nanos()).sum();
                let actual = held * actual_permille / 1000;
                let plan = plan_settlement(&lines, nanos(actual));
                assert_eq!(plan.charged.nanos() + plan.released.nanos(), held);
                assert_eq!(plan.charged, nanos(actual.min(held)));
                for (line, posted) in lines.iter().zip(&plan.posted_per_line) {
                    let (mut debit, mut credit) = self.pair(line.lot_account, SPEND);
                    settle_pending(&mut debit, &mut credit, line.amount, *posted).expect("settles once");
                    self.store(debit, credit, SPEND);
                }
                self.charged += plan.charged.nanos();
            }
            Op::Advance { seconds } => self.now_seconds += seconds,
            Op::Expire => {
                for index in 0..self.lots.len() {
                    if let Some(amount) = expiry_amount(&self.lots[index], now) {
                        let mut debit = self.lots[index].account;
                        post(&mut debit, &mut self.accounts[EXPIRED], amount).expect("expiry posts");
                        self.lots[index].account = debit;
                        self.expired += amount.nanos();
                    }
                }
            }
        }
    }

    fn check_invariants(&self) {
        let all: Vec<&Account> = self
            .accounts
            .iter()
            .chain(self.lots.iter().map(|lot| &lot.account))
            .collect();
        let sum =
            |field: fn(&Account) -> NanoUsd| all.iter().map(|account| field(account).nanos()).sum::<i64>();
        assert_eq!(
            sum(|a| a.debits_posted),
            sum(|a| a.credits_posted),
            "posted debits equal posted credits"
        );
        assert_eq!(
            sum(|a| a.debits_pending),
            sum(|a| a.credits_pending),
            "pending debits equal pending credits"
        );
        for lot in &self.lots {
            assert!(
                !lot.account.available().is_negative(),
                "lot {} overdrawn",
                lot.lot_id
            );
        }
        let held: i64 = self
            .reservations
            .iter()
            .flatten()
            .map(|line| line.amount.nanos())
            .sum();
        assert_eq!(
            self.accounts[SPEND].credits_pending.nanos(),
            held,
            "spend pending equals open reservations"
        );
        assert_eq!(
            self.accounts[SPEND].credits_posted.nanos(),
            self.charged,
            "spend equals the auditor's charges"
        );
        assert_eq!(self.accounts[EXPIRED].credits_posted.nanos(), self.expired);
        let lot_total: i64 = self
            .lots
            .iter()
            .map(|lot| lot.account.posted_balance().nanos())
            .sum();
        assert_eq!(
            lot_total,
            self.granted - self.charged - self.expired,
            "credit is conserved"
        );
        let balance = credit_balance(&self.lots, at(self.now_seconds));
        assert_eq!(balance.held.nanos(), held);
        assert!(
            balance.available.nanos() <= lot_total - held,
            "available never includes held credit"
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    Grant {
        kind: LotKind,
        amount: i64,
        lifetime_seconds: Option<i64>,
    },
    Reserve {
        amount: i64,
    },
    Settle {
        pick: usize,
        actual_permille: i64,
    },
    Advance {
        seconds: i64,
    },
    Expire,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (prop_oneof![Just(LotKind::Starter), Just(LotKind::Purchase), Just(LotKind::Promotional)],
              1..1_000_i64, prop::option::of(1..200_i64))
            .prop_map(|(kind, amount, lifetime_seconds)| Op::Grant { kind, amount, lifetime_seconds }),
        5 => (1..400_i64).prop_map(|amount| Op::Reserve { amount }),
        4 => (any::<usize>(), 0..1_200_i64).prop_map(|(pick, actual_permille)| Op::Settle { pick, actual_permille }),
        1 => (1..100_i64).prop_map(|seconds| Op::Advance { seconds }),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Accounts sum to zero, no lot is overdrawn, and credit is conserved after every step.
    #[test]
    fn random_workload_keeps_every_invariant(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
            world.check_invariants();
        }
        // End every reservation and expire everything: nothing may remain held.
        while !world.reservations.is_empty() {
            world.apply(&Op::Settle { pick: 0, actual_permille: 0 });
        }
        world.check_invariants();
        prop_assert_eq!(world.accounts[SPEND].credits_pending, NanoUsd::ZERO);
    }
}
