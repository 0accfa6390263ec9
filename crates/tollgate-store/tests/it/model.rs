//! Model test: a seeded random workload of grant, reserve, Message Batches (one reservation
//! per request, all or nothing, then settled or voided part by part), settle, void, expire,
//! reap and time passing, run against each store (SQLite, and PostgreSQL with fewer cases) and
//! against a small reference auditor written independently of tollgate-core. After every step the store's balance must equal the
//! auditor's, the open reservations must match, and the store's own audit must be clean
//! (two users' reservations among the workspace's, so their counters are audited too).
//!
//! The seed is fixed so runs are reproducible; set `PROPTEST_RNG_SEED` to explore others.
//! A failure prints the seed and the shrunk sequence of operations.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_store::{
    BalanceView, GrantRejection, NewReservation, ReserveRejection, SettleOutcome, Store, TxError,
};

use crate::conformance::Backend;
use crate::fixtures::{TestOrg, at, create_org, new_lot, new_reservation, settlement};
use crate::postgres_backend::PostgresBackend;
use crate::sqlite_backend::SqliteBackend;

const DEFAULT_SEED: u64 = 0x7011_6a7e;
/// Money in the model is counted in units of a tenth of a cent, small enough to make
/// partial charges common and large enough to read.
const UNIT_NANOS: i64 = 1_000_000;

#[derive(Clone, Debug)]
enum Operation {
    Grant {
        kind: LotKind,
        units: i64,
        expires_in_minutes: Option<i64>,
    },
    Reserve {
        units: i64,
        deadline_in_minutes: i64,
    },
    /// Settles the `pick`-th reservation ever made for `cost_percent` of its amount (over
    /// 100 is a metering bug the store must cap); an ended one must stay ended.
    Settle {
        pick: usize,
        cost_percent: i64,
    },
    Void {
        pick: usize,
    },
    /// A Message Batch: one reservation per request, all or nothing, as the service makes
    /// them at creation; a refusal voids those made. Its parts are then settled or voided
    /// (canceled) one by one by `Settle` and `Void`, like any reservation.
    ReserveBatch {
        units: Vec<i64>,
        deadline_in_minutes: i64,
    },
    Expire,
    Reap,
    Advance {
        minutes: i64,
    },
    /// The process restarts: a new store on the same database, whose writer's book starts
    /// empty and must rebuild what it needs from the tables (open reservations included).
    Restart,
}

fn operation() -> impl Strategy<Value = Operation> {
    let kind = prop_oneof![
        Just(LotKind::Starter),
        Just(LotKind::Purchase),
        Just(LotKind::Promotional),
    ];
    prop_oneof![
        3 => (kind, 0..=60_i64, proptest::option::of(1..=30_i64)).prop_map(
            |(kind, units, expires_in_minutes)| Operation::Grant { kind, units, expires_in_minutes }
        ),
        5 => (1..=40_i64, 1..=20_i64).prop_map(|(units, deadline_in_minutes)| {
            Operation::Reserve { units, deadline_in_minutes }
        }),
        4 => (0..64_usize, 0..=110_i64)
            .prop_map(|(pick, cost_percent)| Operation::Settle { pick, cost_percent }),
        2 => (0..64_usize).prop_map(|pick| Operation::Void { pick }),
        2 => (proptest::collection::vec(1..=15_i64, 1..=5), 1..=20_i64).prop_map(
            |(units, deadline_in_minutes)| Operation::ReserveBatch { units, deadline_in_minutes }
        ),
        2 => Just(Operation::Expire),
        1 => Just(Operation::Reap),
        2 => (1..=8_i64).prop_map(|minutes| Operation::Advance { minutes }),
        1 => Just(Operation::Restart),
    ]
}

/// Which store a workload runs against.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// A fresh database file per case.
    Sqlite,
    /// A fresh schema of the test server per case (see `postgres_backend`).
    Postgres,
}

mod sqlite {
    #[test]
    fn random_workloads_agree_with_the_reference_auditor() {
        super::run_cases(super::Engine::Sqlite, 16);
    }
}

mod postgres {
    /// Fewer cases than on SQLite: each opens a schema and migrates it.
    #[test]
    fn random_workloads_agree_with_the_reference_auditor() {
        super::run_cases(super::Engine::Postgres, 6);
    }
}

fn run_cases(engine: Engine, cases: u32) {
    let mut config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runner.run(&proptest::collection::vec(operation(), 1..40), |operations| {
        runtime.block_on(run_workload(engine, operations))
    });
    if let Err(failure) = result {
        panic!("model test on {engine:?} failed with PROPTEST_RNG_SEED={seed}: {failure}");
    }
}

async fn run_workload(engine: Engine, operations: Vec<Operation>) -> Result<(), TestCaseError> {
    match engine {
        Engine::Sqlite => {
            let backend = SqliteBackend::open().await;
            let outcome = run_on(backend.store(), &async || backend.reopen().await, &operations).await;
            backend.close().await;
            outcome
        }
        Engine::Postgres => {
            let backend = PostgresBackend::open().await;
            let outcome = run_on(
                backend.store(),
                &async || backend.second_replica().await,
                &operations,
            )
            .await;
            backend.close().await;
            outcome
        }
    }
}

/// Runs the workload on `store`; `reopen` opens another store on the same database, as a
/// restarted process would.
async fn run_on(
    store: &Store,
    reopen: &impl AsyncFn() -> Store,
    operations: &[Operation],
) -> Result<(), TestCaseError> {
    let org = create_org(store, "model").await;
    let mut auditor = Auditor::default();
    run_operations(store, reopen, &org, &mut auditor, operations).await
}

async fn run_operations(
    store: &Store,
    reopen: &impl AsyncFn() -> Store,
    org: &TestOrg,
    auditor: &mut Auditor,
    operations: &[Operation],
) -> Result<(), TestCaseError> {
    let mut store = store.clone();
    for (step, operation) in operations.iter().enumerate() {
        let context = format!("step {step}: {operation:?}");
        if let Operation::Restart = operation {
            store = reopen().await;
        }
        let store = &store;
        apply(store, org, auditor, operation, &context).await?;

        let balance = store
            .balance(&org.org_id, at(auditor.now))
            .await
            .expect("balance");
        prop_assert_eq!(balance, auditor.balance(), "{}", context);
        let open = auditor
            .reservations
            .iter()
            .filter(|reservation| reservation.open)
            .count();
        prop_assert_eq!(store.pending_reservation_count(None).await.expect("count"), open);
        let report = store.audit().await.expect("audit");
        prop_assert!(report.problems.is_empty(), "{}: {:?}", context, report.problems);
    }
    Ok(())
}

async fn apply(
    store: &Store,
    org: &TestOrg,
    auditor: &mut Auditor,
    operation: &Operation,
    context: &str,
) -> Result<(), TestCaseError> {
    let now = auditor.now;
    match *operation {
        Operation::Grant {
            kind,
            units,
            expires_in_minutes,
        } => {
            let lot_id = format!("lot_{:03}", auditor.lots.len() + auditor.refused_grants);
            let expires_at = expires_in_minutes.map(|minutes| now + minutes);
            let lot = new_lot(org, &lot_id, kind, nanos(units), at(now), expires_at.map(at));
            let expected = auditor.grant(&lot_id, kind, units, expires_at);
            match (store.grant_lot(lot).await, expected) {
                (Ok(view), Ok(())) => prop_assert_eq!(view.amount, nanos(units), "{}", context),
                (Err(TxError::Rejected(rejection)), Err(expected_rejection)) => {
                    prop_assert_eq!(rejection, expected_rejection, "{}", context)
                }
                (actual, expected) => {
                    return Err(TestCaseError::fail(format!(
                        "{context}: store gave {actual:?}, auditor expected {expected:?}"
                    )));
                }
            }
        }
        Operation::Reserve {
            units,
            deadline_in_minutes,
        } => {
            let reservation_id = format!(
                "rsv_{:03}",
                auditor.reservations.len() + auditor.refused_reservations
            );
            let reservation = NewReservation {
                user_id: user_of(&reservation_id),
                ..new_reservation(
                    org,
                    &reservation_id,
                    nanos(units),
                    at(now),
                    at(now + deadline_in_minutes),
                )
            };
            let expected = auditor.reserve(&reservation_id, units, now + deadline_in_minutes);
            match (store.reserve(reservation).await, expected) {
                (Ok(reservation), Ok(lines)) => {
                    let actual: Vec<(String, NanoUsd)> = reservation
                        .lines
                        .into_iter()
                        .map(|line| (line.lot_id, line.amount))
                        .collect();
                    prop_assert_eq!(actual, lines, "{}", context);
                }
                (Err(TxError::Rejected(ReserveRejection::InsufficientCredit(rejection))), Err(available)) => {
                    prop_assert_eq!(rejection.available, available, "{}", context);
                    prop_assert_eq!(rejection.required, nanos(units), "{}", context);
                }
                (actual, expected) => {
                    return Err(TestCaseError::fail(format!(
                        "{context}: store gave {actual:?}, auditor expected {expected:?}"
                    )));
                }
            }
        }
        Operation::ReserveBatch {
            ref units,
            deadline_in_minutes,
        } => {
            let mut made = Vec::new();
            for &units in units {
                let reservation_id = format!(
                    "rsv_{:03}",
                    auditor.reservations.len() + auditor.refused_reservations
                );
                let reservation = NewReservation {
                    user_id: user_of(&reservation_id),
                    ..new_reservation(
                        org,
                        &reservation_id,
                        nanos(units),
                        at(now),
                        at(now + deadline_in_minutes),
                    )
                };
                let expected = auditor.reserve(&reservation_id, units, now + deadline_in_minutes);
                match (store.reserve(reservation).await, expected) {
                    (Ok(_), Ok(_)) => made.push(auditor.reservations.len() - 1),
                    (Err(TxError::Rejected(ReserveRejection::InsufficientCredit(_))), Err(_)) => {
                        // All or nothing: the batch's reservations made so far are voided.
                        for index in made.drain(..) {
                            settle(store, org, auditor, index, 0, context).await?;
                        }
                        break;
                    }
                    (actual, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "{context}: store gave {actual:?}, auditor expected {expected:?}"
                        )));
                    }
                }
            }
        }
        Operation::Settle { pick, cost_percent } => {
            if let Some(index) = auditor.pick(pick) {
                let units = auditor.reservations[index].units * cost_percent / 100;
                settle(store, org, auditor, index, units, context).await?;
            }
        }
        Operation::Void { pick } => {
            if let Some(index) = auditor.pick(pick) {
                settle(store, org, auditor, index, 0, context).await?;
            }
        }
        Operation::Expire => {
            let moved = store.expire_lots(at(now)).await.expect("expire");
            prop_assert_eq!(moved, auditor.expire(), "{}", context);
        }
        Operation::Reap => {
            let reaped = store.reap_reservations(at(now)).await.expect("reap");
            prop_assert_eq!(reaped, auditor.reap(), "{}", context);
        }
        Operation::Advance { minutes } => auditor.now += minutes,
        // Done by `run_operations`, which owns the store.
        Operation::Restart => {}
    }
    Ok(())
}

/// Whose key makes a reservation: two users' and the workspace's in turn, so that the
/// store's audit, after every step, checks the users' counters too.
fn user_of(reservation_id: &str) -> Option<String> {
    match reservation_id.bytes().last() {
        Some(digit) if digit % 3 == 1 => Some("user_ann".to_owned()),
        Some(digit) if digit % 3 == 2 => Some("user_bo".to_owned()),
        _ => None,
    }
}

async fn settle(
    store: &Store,
    org: &TestOrg,
    auditor: &mut Auditor,
    index: usize,
    cost_units: i64,
    context: &str,
) -> Result<(), TestCaseError> {
    let reservation_id = auditor.reservations[index].id.clone();
    let expected = auditor.settle(index, cost_units);
    let outcome = store
        .settle(settlement(
            org,
            &reservation_id,
            nanos(cost_units),
            at(auditor.now),
        ))
        .await
        .expect("settle");
    let month_spend = outcome.standing.map(|standing| standing.month_spend);
    let expected = SettleOutcome {
        standing: expected.standing.map(|standing| tollgate_store::Standing {
            month_spend: month_spend.unwrap_or_default(),
            ..standing
        }),
        ..expected
    };
    prop_assert_eq!(outcome, expected, "{}", context);
    Ok(())
}

fn nanos(units: i64) -> NanoUsd {
    NanoUsd::from_nanos(units * UNIT_NANOS)
}

/// The reference: lots and reservations as plain numbers, with the drawdown rule restated.
#[derive(Default)]
struct Auditor {
    /// Minutes since the test epoch.
    now: i64,
    lots: Vec<AuditorLot>,
    reservations: Vec<AuditorReservation>,
    refused_grants: usize,
    refused_reservations: usize,
    spent: i64,
    expired: i64,
}

struct AuditorLot {
    id: String,
    kind: LotKind,
    granted_at: i64,
    expires_at: Option<i64>,
    amount: i64,
    /// Charged or expired out of the lot.
    posted_out: i64,
    reserved: i64,
}

impl AuditorLot {
    fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }

    fn unreserved(&self) -> i64 {
        self.amount - self.posted_out - self.reserved
    }
}

struct AuditorReservation {
    id: String,
    units: i64,
    /// (index into `lots`, units), in drawdown order.
    lines: Vec<(usize, i64)>,
    deadline: i64,
    open: bool,
}

impl Auditor {
    fn grant(
        &mut self,
        lot_id: &str,
        kind: LotKind,
        units: i64,
        expires_at: Option<i64>,
    ) -> Result<(), GrantRejection> {
        let rejection = if units <= 0 {
            Some(GrantRejection::AmountNotPositive)
        } else if kind == LotKind::Starter && self.lots.iter().any(|lot| lot.kind == LotKind::Starter) {
            Some(GrantRejection::StarterAlreadyGranted)
        } else {
            None
        };
        if let Some(rejection) = rejection {
            self.refused_grants += 1;
            return Err(rejection);
        }
        self.lots.push(AuditorLot {
            id: lot_id.to_owned(),
            kind,
            granted_at: self.now,
            expires_at,
            amount: units,
            posted_out: 0,
            reserved: 0,
        });
        Ok(())
    }

    fn available(&self) -> i64 {
        self.lots
            .iter()
            .filter(|lot| !lot.is_expired(self.now))
            .map(|lot| lot.unreserved().max(0))
            .sum()
    }

    /// The lines the reservation should get, or the credit available if it does not fit.
    fn reserve(
        &mut self,
        reservation_id: &str,
        units: i64,
        deadline: i64,
    ) -> Result<Vec<(String, NanoUsd)>, NanoUsd> {
        let rank = |kind: LotKind| match kind {
            LotKind::Promotional => 0,
            LotKind::Starter => 1,
            LotKind::Purchase => 2,
        };
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|&index| !self.lots[index].is_expired(self.now) && self.lots[index].unreserved() > 0)
            .collect();
        order.sort_by_key(|&index| {
            let lot = &self.lots[index];
            (
                lot.expires_at.is_none(),
                lot.expires_at,
                rank(lot.kind),
                lot.granted_at,
                lot.id.clone(),
            )
        });
        if order
            .iter()
            .map(|&index| self.lots[index].unreserved())
            .sum::<i64>()
            < units
        {
            self.refused_reservations += 1;
            return Err(nanos(self.available()));
        }
        let mut remaining = units;
        let mut lines = Vec::new();
        for index in order {
            if remaining == 0 {
                break;
            }
            let take = remaining.min(self.lots[index].unreserved());
            self.lots[index].reserved += take;
            remaining -= take;
            lines.push((index, take));
        }
        let described = lines
            .iter()
            .map(|&(index, take)| (self.lots[index].id.clone(), nanos(take)))
            .collect();
        self.reservations.push(AuditorReservation {
            id: reservation_id.to_owned(),
            units,
            lines,
            deadline,
            open: true,
        });
        Ok(described)
    }

    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.reservations.is_empty()).then(|| pick % self.reservations.len())
    }

    fn settle(&mut self, index: usize, cost_units: i64) -> SettleOutcome {
        let reservation = &mut self.reservations[index];
        if !reservation.open {
            return SettleOutcome {
                already_ended: true,
                ..SettleOutcome::default()
            };
        }
        reservation.open = false;
        let mut remaining = cost_units;
        let mut charged = 0;
        for &(lot_index, units) in &reservation.lines {
            let posted = remaining.min(units);
            remaining -= posted;
            charged += posted;
            let lot = &mut self.lots[lot_index];
            lot.reserved -= units;
            lot.posted_out += posted;
        }
        self.spent += charged;
        let released = nanos(reservation.units - charged);
        SettleOutcome {
            charged: nanos(charged),
            released,
            uncovered: nanos(remaining),
            already_ended: false,
            // The month's spend is the store's to say; the available credit is checked.
            standing: Some(tollgate_store::Standing {
                available: nanos(self.available()),
                month_spend: NanoUsd::ZERO,
            }),
        }
    }

    fn expire(&mut self) -> usize {
        let mut moved = 0;
        for lot in &mut self.lots {
            if lot.is_expired(self.now) && lot.unreserved() > 0 {
                self.expired += lot.unreserved();
                lot.posted_out += lot.unreserved();
                moved += 1;
            }
        }
        moved
    }

    fn reap(&mut self) -> usize {
        let overdue: Vec<usize> = (0..self.reservations.len())
            .filter(|&index| {
                let reservation = &self.reservations[index];
                reservation.open && reservation.deadline <= self.now
            })
            .collect();
        for &index in &overdue {
            self.settle(index, 0);
        }
        overdue.len()
    }

    fn balance(&self) -> BalanceView {
        BalanceView {
            available: nanos(self.available()),
            held: nanos(self.lots.iter().map(|lot| lot.reserved).sum()),
            spent: nanos(self.spent),
            expired: nanos(self.expired),
            granted: nanos(self.lots.iter().map(|lot| lot.amount).sum()),
        }
    }
}
