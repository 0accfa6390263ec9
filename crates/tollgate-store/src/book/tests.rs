//! The book, one line an operation with its outcome last, no database.
//!
//! Each script starts from one organization, `org`, whose lots are given as `lot ID AMOUNT`
//! (granted in that order, amounts in nano-USD) and optional `limit
//! workspace|organization|user AMOUNT` lines; then each line is an operation and, after
//! `=>`, what the book answers: `reserve ID WORKSPACE AMOUNT [by USER]` answers the lines it
//! drew (`LOT:AMOUNT …`) or the refusal (the per-user limit binds only a reservation made
//! by a user); `settle ID COST` answers `charged C released R` or `already ended`; `balance`
//! answers every lot's available credit and the spend account's pending and posted
//! debits… as `LOT:AVAILABLE … spend pending P posted Q`; `spent WORKSPACE [by USER]`
//! answers the workspace's (or the user's) counter as `settled S held H`. A user's counter
//! the book lacks is loaded as having no row, as from an empty table.
//!
//! Holds in memory (the book keeps them, as SQLite's does): `hold …` is `reserve …` for a
//! reservation written at its settlement (it must change no row); `rows` answers as
//! `balance` from the rows alone, `rows spent WORKSPACE` as `spent`; `reload` drops the
//! book and loads it again from its rows, as after another connection's commit; `fail
//! settle ID COST` settles in a batch that then fails (the rows as before it); `release ID`
//! answers whether a hold in memory was released; `published` answers what the book
//! publishes as held in memory on each lot (`LOT:AMOUNT …`, or `nothing`). A settlement that
//! writes a hold in memory says so (`… written now`).

use tollgate_core::Timestamp;
use tollgate_core::ledger::{Account, AccountId, AccountKind, Lot, LotKind};
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{SpendLimits, month_key};

use super::*;
use tollgate_core::attribution::Attribution;

use crate::journal::SpendCounter;
use crate::model::UsageStatus;

const ORG: &str = "org";

fn at() -> Timestamp {
    Timestamp::UNIX_EPOCH + chrono::Duration::days(20_000)
}

fn nanos(text: &str) -> NanoUsd {
    NanoUsd::from_nanos(text.parse().expect("an amount in nano-USD"))
}

struct World {
    book: Book,
    limits: SpendLimits,
    lot_names: Vec<(AccountId, String)>,
    spend: AccountId,
    /// Whether `reserve` asks to be held in memory (`hold`).
    holding: bool,
    /// Whether the last reservation's batch changed no row.
    last_delta_empty: bool,
    /// Whether the batch being run fails (`fail settle`).
    failing: bool,
}

/// What the book's rows hold: the lots, the spend account, the month's counters, the
/// users', the reservations written and pending.
type Rows = (
    Vec<Lot>,
    Account,
    BTreeMap<String, SpendCounter>,
    HashMap<UserCounterKey, Option<SpendCounter>>,
    HashMap<String, OpenReservation>,
);

impl World {
    fn new(setup: &str) -> World {
        let spend = Account::new(AccountId(1), AccountKind::Spend);
        let mut lots = Vec::new();
        let mut limits = SpendLimits::default();
        for line in setup.lines().map(str::trim).filter(|line| !line.is_empty()) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["lot", name, amount] => {
                    let id = AccountId(10 + i64::try_from(lots.len()).unwrap());
                    let mut account = Account::new(id, AccountKind::Lot);
                    account.credits_posted = nanos(amount);
                    lots.push(Lot {
                        lot_id: (*name).to_owned(),
                        kind: LotKind::Purchase,
                        account,
                        granted_at: at()
                            - chrono::Duration::seconds(100 - i64::try_from(lots.len()).unwrap()),
                        expires_at: None,
                    });
                }
                ["limit", "workspace", amount] => limits.workspace = Some(nanos(amount)),
                ["limit", "organization", amount] => limits.organization = Some(nanos(amount)),
                ["limit", "user", amount] => limits.user = Some(nanos(amount)),
                _ => panic!("unknown setup line {line:?}"),
            }
        }
        let lot_names = lots
            .iter()
            .map(|lot| (lot.account.id, lot.lot_id.clone()))
            .collect();
        let mut book = Book::keeping_holds(HeldInMemory::default());
        book.load_org(ORG.to_owned(), lots, spend);
        book.load_month(ORG.to_owned(), month_key(at()), []);
        World {
            book,
            limits,
            lot_names,
            spend: spend.id,
            holding: false,
            last_delta_empty: false,
            failing: false,
        }
    }

    fn lot_name(&self, id: AccountId) -> &str {
        &self
            .lot_names
            .iter()
            .find(|(lot, _)| *lot == id)
            .expect("a lot of the script")
            .1
    }

    /// Runs one line in a batch of its own and says what the book answered.
    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["hold", rest @ ..] => {
                self.holding = true;
                let reserved = self.run(&format!("reserve {}", rest.join(" ")));
                self.holding = false;
                assert!(self.last_delta_empty, "a hold in memory changes no row");
                reserved
            }
            ["rows", "spent", workspace] => {
                let counter = self.book.months[&(ORG.to_owned(), month_key(at()))]
                    .get(*workspace)
                    .copied()
                    .unwrap_or_default();
                format!(
                    "settled {} held {}",
                    counter.settled.nanos(),
                    counter.held.nanos()
                )
            }
            ["rows"] => {
                let org = &self.book.orgs[ORG];
                let mut parts: Vec<String> = org
                    .lots
                    .iter()
                    .map(|lot| {
                        let row = self.book.account_row(lot.account.id).unwrap();
                        format!("{}:{}", lot.lot_id, row.available().nanos())
                    })
                    .collect();
                let spend = self.book.account_row(org.spend_account).unwrap();
                parts.push(format!(
                    "spend pending {} posted {}",
                    spend.credits_pending.nanos(),
                    spend.credits_posted.nanos()
                ));
                parts.join(" ")
            }
            ["reload"] => {
                let rows = book_rows(&self.book);
                reload(&mut self.book, rows);
                "reloaded".to_owned()
            }
            ["fail", "settle", id, cost] => {
                let rows = book_rows(&self.book);
                self.failing = true;
                let settled = self.run(&format!("settle {id} {cost}"));
                self.failing = false;
                reload(&mut self.book, rows);
                format!("rolled back after {settled}")
            }
            ["published"] => {
                let published = self.book.in_memory.published.lots().clone();
                let mut parts: Vec<String> = published
                    .iter()
                    .map(|(id, amount)| format!("{}:{}", self.lot_name(*id), amount.nanos()))
                    .collect();
                parts.sort();
                if parts.is_empty() {
                    "nothing".to_owned()
                } else {
                    parts.join(" ")
                }
            }
            ["release", id] => match self.book.release(id) {
                Ok(true) => "released".to_owned(),
                Ok(false) => "nothing held".to_owned(),
                Err(error) => format!("error {error}"),
            },
            ["reserve", id, workspace, amount, rest @ ..] => {
                let user_id = match rest {
                    [] => None,
                    ["by", user] => Some((*user).to_owned()),
                    _ => panic!("unknown line {line:?}"),
                };
                let reservation = NewReservation {
                    workspace_id: (*workspace).to_owned(),
                    spend_limits: SpendLimits {
                        user: user_id.as_ref().and(self.limits.user),
                        ..self.limits
                    },
                    user_id,
                    written_at_settlement: self.holding,
                    ..reservation(id, nanos(amount).nanos())
                };
                let mut delta = Delta::default();
                self.book.begin_batch();
                self.load_missing_users(&[Operation::Reserve(&reservation)]);
                let reserved = self.book.reserve(&reservation, &mut delta);
                self.book.committed();
                self.last_delta_empty = delta.reserved.is_empty()
                    && delta.accounts().unwrap().is_empty()
                    && delta.counters().unwrap().is_empty()
                    && delta.user_counters().unwrap().is_empty();
                match reserved {
                    Ok(Ok(reserved)) => {
                        assert_eq!(delta.reserved.len(), usize::from(!reserved.held_in_memory));
                        assert_eq!(reserved.held_in_memory, self.holding);
                        reserved
                            .lines
                            .iter()
                            .map(|line| {
                                format!("{}:{}", self.lot_name(line.lot_account), line.amount.nanos())
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                    Ok(Err(ReserveRejection::InsufficientCredit(refusal))) => {
                        assert!(delta.reserved.is_empty() && delta.accounts().unwrap().is_empty());
                        format!(
                            "insufficient credit {} of {}",
                            refusal.available.nanos(),
                            refusal.required.nanos()
                        )
                    }
                    Ok(Err(ReserveRejection::SpendLimitReached(reached))) => {
                        assert!(delta.reserved.is_empty() && delta.counters().unwrap().is_empty());
                        assert!(delta.user_counters().unwrap().is_empty());
                        format!("spend limit {:?}", reached.scope).to_lowercase()
                    }
                    Err(error) => format!("error {error}"),
                }
            }
            ["settle", id, cost] => {
                let settlement = settlement(id, nanos(cost).nanos());
                let mut delta = Delta::default();
                self.book.begin_batch();
                self.load_missing_users(&[Operation::Settle(&settlement)]);
                let settled = self.book.settle(&settlement, &mut delta);
                if !self.failing {
                    self.book.committed();
                }
                match settled {
                    Ok(outcome) if outcome.already_ended => {
                        assert!(delta.records.is_empty() && delta.ends().next().is_none());
                        "already ended".to_owned()
                    }
                    Ok(outcome) => {
                        assert_eq!((delta.records.len(), delta.ends().count()), (1, 1));
                        let journal: NanoUsd = delta
                            .posted
                            .iter()
                            .fold(NanoUsd::ZERO, |sum, posted| sum.saturating_add(posted.amount));
                        assert_eq!(journal, outcome.charged, "the journal holds the charge");
                        format!(
                            "charged {} released {}{}",
                            outcome.charged.nanos(),
                            outcome.released.nanos(),
                            if delta.reserved.is_empty() {
                                ""
                            } else {
                                " written now"
                            }
                        )
                    }
                    Err(error) => format!("error {error}"),
                }
            }
            ["balance"] => {
                let (lots, spend) = self.book.lots(ORG).unwrap();
                let spend = self.book.account(spend).unwrap();
                let mut parts: Vec<String> = lots
                    .iter()
                    .map(|lot| format!("{}:{}", lot.lot_id, lot.account.available().nanos()))
                    .collect();
                parts.push(format!(
                    "spend pending {} posted {}",
                    spend.credits_pending.nanos(),
                    spend.credits_posted.nanos()
                ));
                assert_eq!(self.spend, spend.id);
                parts.join(" ")
            }
            ["spent", workspace] => {
                let counter = self
                    .book
                    .month(ORG, month_key(at()))
                    .unwrap()
                    .get(*workspace)
                    .copied()
                    .unwrap_or_default();
                format!(
                    "settled {} held {}",
                    counter.settled.nanos(),
                    counter.held.nanos()
                )
            }
            ["spent", workspace, "by", user] => {
                let key = (
                    ORG.to_owned(),
                    (*workspace).to_owned(),
                    (*user).to_owned(),
                    month_key(at()),
                );
                let counter = self.book.user_counter(&key).ok().flatten().unwrap_or_default();
                format!(
                    "settled {} held {}",
                    counter.settled.nanos(),
                    counter.held.nanos()
                )
            }
            _ => panic!("unknown line {line:?}"),
        }
    }

    /// Loads the users' counters the operations need as having no row yet.
    fn load_missing_users(&mut self, operations: &[Operation<'_>]) {
        for key in self.book.missing_user_counters(operations) {
            self.book.load_user_counter(key, None);
        }
    }
}

/// Runs `script` (`operation => expected` lines) against a world set up by `setup`.
#[track_caller]
fn check(setup: &str, script: &str) {
    let mut world = World::new(setup);
    for line in script.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (operation, expected) = line.split_once("=>").expect("a line is `operation => expected`");
        let actual = world.run(operation.trim());
        assert_eq!(actual, expected.trim(), "at `{}`", operation.trim());
    }
}

#[test]
fn a_reservation_draws_lots_in_order_and_its_settlement_posts_and_releases() {
    check(
        "lot a 10
         lot b 5",
        "reserve r1 w 12 => a:10 b:2
         balance         => a:0 b:3 spend pending 12 posted 0
         spent w         => settled 0 held 12
         settle r1 11    => charged 11 released 1
         balance         => a:0 b:4 spend pending 0 posted 11
         spent w         => settled 11 held 0",
    );
}

#[test]
fn a_reservation_once_ended_is_no_longer_open() {
    check(
        "lot a 10",
        "reserve r1 w 4 => a:4
         settle r1 3    => charged 3 released 1
         settle r1 3    => error ledger invariant violated: settled an unknown reservation r1
         balance        => a:7 spend pending 0 posted 3",
    );
}

#[test]
fn credit_that_is_held_is_not_lent_twice() {
    check(
        "lot a 10",
        "reserve r1 w 6 => a:6
         reserve r2 w 6 => insufficient credit 4 of 6
         reserve r3 w 4 => a:4
         settle r1 0    => charged 0 released 6
         reserve r2 w 6 => a:6
         balance        => a:0 spend pending 10 posted 0",
    );
}

#[test]
fn spend_limits_count_held_and_settled_spend_and_come_before_credit() {
    check(
        "lot a 100
         limit workspace 10",
        "reserve r1 w 6  => a:6
         reserve r2 w 5  => spend limit workspace
         settle r1 2     => charged 2 released 4
         reserve r2 w 8  => a:8
         reserve r4 w 1  => spend limit workspace
         spent w         => settled 2 held 8",
    );
}

#[test]
fn a_per_user_limit_stops_one_user_and_not_the_team() {
    check(
        "lot a 100
         limit workspace 30
         limit user 10",
        "reserve r1 w 6 by alice => a:6
         reserve r2 w 5 by alice => spend limit user
         reserve r3 w 8 by bob   => a:8
         reserve r4 w 9          => a:9
         settle r1 2             => charged 2 released 4
         reserve r2 w 8 by alice => a:8
         reserve r5 w 1 by alice => spend limit user
         reserve r6 w 2 by bob   => a:2
         spent w by alice        => settled 2 held 8
         spent w by bob          => settled 0 held 10
         spent w                 => settled 2 held 27
         reserve r7 w 2          => spend limit workspace
         reserve r8 v 5 by alice => a:5
         spent v by alice        => settled 0 held 5",
    );
}

#[test]
fn a_users_counter_moves_when_their_reservation_read_from_the_tables_ends() {
    let mut world = World::new("lot a 10");
    let reservation = NewReservation {
        user_id: Some("alice".to_owned()),
        ..reservation("r1", 4)
    };
    world.book.begin_batch();
    world.load_missing_users(&[Operation::Reserve(&reservation)]);
    let mut delta = Delta::default();
    let reserved = world.book.reserve(&reservation, &mut delta).unwrap().unwrap();
    let key = (
        ORG.to_owned(),
        "w".to_owned(),
        "alice".to_owned(),
        month_key(at()),
    );
    let held = SpendCounter {
        settled: NanoUsd::ZERO,
        held: NanoUsd::from_nanos(4),
    };
    assert_eq!(delta.user_counters().unwrap(), [(&key, None, held)]);
    // Another process settles it: a book that starts empty reads the reservation, whose
    // row names its user, and then that user's counter.
    let mut book = Book::default();
    let (lots, spend) = world.book.lots(ORG).unwrap();
    book.load_org(ORG.to_owned(), lots, world.book.account(spend).unwrap());
    book.load_month(ORG.to_owned(), month_key(at()), [("w".to_owned(), held)]);
    book.load_reservation(
        "r1".to_owned(),
        LoadedReservation::Open(OpenReservation {
            org_id: ORG.to_owned(),
            workspace_id: "w".to_owned(),
            user_id: Some("alice".to_owned()),
            amount: reserved.amount,
            created_at: at(),
            lines: reserved.lines,
        }),
    );
    let settlement = settlement("r1", 3);
    book.begin_batch();
    let missing = book.missing_user_counters(&[Operation::Settle(&settlement)]);
    assert_eq!(missing, std::slice::from_ref(&key));
    book.load_user_counter(key.clone(), Some(held));
    assert!(
        book.missing_user_counters(&[Operation::Settle(&settlement)])
            .is_empty()
    );
    let mut delta = Delta::default();
    let outcome = book.settle(&settlement, &mut delta).unwrap();
    assert_eq!(outcome.charged.nanos(), 3);
    let settled = SpendCounter {
        settled: NanoUsd::from_nanos(3),
        held: NanoUsd::ZERO,
    };
    assert_eq!(delta.user_counters().unwrap(), [(&key, Some(held), settled)]);
}

#[test]
fn a_reservation_whose_users_counter_was_not_loaded_is_a_bug() {
    let mut world = World::new("lot a 10");
    let reservation = NewReservation {
        user_id: Some("alice".to_owned()),
        ..reservation("r1", 4)
    };
    let mut delta = Delta::default();
    let refused = world.book.reserve(&reservation, &mut delta);
    assert!(
        matches!(&refused, Err(StoreError::Invariant(message)) if message.contains("alice")),
        "{refused:?}"
    );
}

#[test]
fn an_organization_limit_is_reached_before_a_credit_shortage_is() {
    check(
        "lot a 5
         limit organization 8",
        "reserve r1 w 5 => a:5
         reserve r2 v 4 => spend limit organization
         reserve r3 v 3 => insufficient credit 0 of 3",
    );
}

#[test]
fn a_cost_above_the_reservation_is_capped_at_it() {
    check(
        "lot a 10",
        "reserve r1 w 4 => a:4
         settle r1 9    => charged 4 released 0
         balance        => a:6 spend pending 0 posted 4",
    );
}

#[test]
fn a_reservation_read_as_ended_is_answered_as_such_in_its_batch() {
    let mut world = World::new("lot a 10");
    world.book.begin_batch();
    world
        .book
        .load_reservation("r9".to_owned(), LoadedReservation::Ended);
    assert_eq!(world.book.missing_reservations(&[]), Vec::<&str>::new());
    let settlement = settlement("r9", 3);
    let mut delta = Delta::default();
    let outcome = world.book.settle(&settlement, &mut delta).unwrap();
    assert!(outcome.already_ended);
    assert!(delta.records.is_empty() && delta.accounts().unwrap().is_empty());
    // The next batch reads it again rather than trusting an old answer.
    world.book.begin_batch();
    assert_eq!(
        world.book.missing_reservations(&[Operation::Settle(&settlement)]),
        ["r9"]
    );
}

#[test]
fn a_batch_settles_what_it_reserved_and_reports_each_row_once() {
    let world = World::new("lot a 10");
    let mut book = world.book;
    let reservation = reservation("r1", 4);
    let settlement = settlement("r1", 3);
    let operations = [
        Operation::Reserve(&reservation),
        Operation::Settle(&settlement),
        Operation::Settle(&settlement),
    ];
    book.begin_batch();
    assert!(book.missing_orgs(&operations).is_empty());
    let mut delta = Delta::default();
    let decisions: Vec<String> = operations
        .iter()
        .map(|operation| {
            format!(
                "{:?}",
                book.decide(*operation, &mut delta)
                    .map(|decision| match decision {
                        Decision::Reserve(reserved) => reserved.is_ok().to_string(),
                        Decision::Settle(outcome) =>
                            format!("{}/{}", outcome.charged.nanos(), outcome.already_ended),
                        Decision::Stored => "stored".to_owned(),
                    })
            )
        })
        .collect();
    assert_eq!(decisions, ["Ok(\"true\")", "Ok(\"3/false\")", "Ok(\"0/true\")"]);
    // The lot and the spend account each change once, from the batch's start.
    let accounts = delta.accounts().unwrap();
    assert_eq!(accounts.len(), 2);
    let lot = accounts
        .iter()
        .find(|(before, _)| before.kind == AccountKind::Lot)
        .unwrap();
    assert_eq!((lot.0.available().nanos(), lot.1.available().nanos()), (10, 7));
    let counters = delta.counters().unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0].1, None, "the counter had no row: it is inserted");
    assert_eq!(
        (counters[0].2.settled.nanos(), counters[0].2.held.nanos()),
        (3, 0)
    );
    assert_eq!(
        (
            delta.reserved.len(),
            delta.ends().count(),
            delta.records.len(),
            delta.posted.len()
        ),
        (1, 1, 1, 1)
    );
    // Reserved and ended in one batch, the row is inserted ended and never updated.
    assert!(delta.ended.is_empty());
    let ended = delta.reserved[0].ended.as_ref().expect("written ended");
    assert_eq!((ended.state, ended.charged.nanos()), ("settled", 3));
    assert_eq!(book.open_reservations(), 0);
}

/// A stored response needs no organization loaded, changes no money and passes into the
/// delta as it is, in its turn among the batch's operations.
#[test]
fn a_stored_response_rides_the_batch_untouched() {
    let response = crate::stored_responses::StoredResponse {
        id: "resp_1".to_owned(),
        org_id: ORG.to_owned(),
        workspace_id: "ws".to_owned(),
        api_key_id: "key".to_owned(),
        created_at: at(),
        expires_at: at(),
        input_items: "[]".to_owned(),
        response: "{}".to_owned(),
    };
    let mut book = Book::default();
    let operations = [Operation::StoreResponse(&response)];
    assert!(book.missing_orgs(&operations).is_empty());
    assert!(book.missing_months(&operations).is_empty());
    assert!(book.missing_reservations(&operations).is_empty());
    let mut delta = Delta::default();
    assert!(matches!(
        book.decide(operations[0], &mut delta),
        Ok(Decision::Stored)
    ));
    assert_eq!(delta.responses, [&response]);
    assert!(delta.accounts().unwrap().is_empty() && delta.counters().unwrap().is_empty());
    assert!(delta.reserved.is_empty() && delta.posted.is_empty() && delta.records.is_empty());
}

fn settlement(id: &str, cost: i64) -> Settlement {
    Settlement {
        reservation_id: id.to_owned(),
        cost: NanoUsd::from_nanos(cost),
        now: at(),
        record: UsageRecord {
            request_id: format!("req_{id}"),
            org_id: ORG.to_owned(),
            workspace_id: "w".to_owned(),
            api_key_id: None,
            model: "model".to_owned(),
            usage: Default::default(),
            cost: NanoUsd::from_nanos(cost),
            status: UsageStatus::Succeeded,
            error_type: None,
            latency_ms: 0,
            started_at: at(),
            ended_at: at(),
            attribution: Attribution::default(),
            served_model: None,
            multipliers: Default::default(),
            lines: Default::default(),
            upstream_attempts: Vec::new(),
        },
    }
}

fn reservation(id: &str, amount: i64) -> NewReservation {
    NewReservation {
        reservation_id: id.to_owned(),
        org_id: ORG.to_owned(),
        workspace_id: "w".to_owned(),
        api_key_id: None,
        user_id: None,
        request_id: format!("req_{id}"),
        model: "model".to_owned(),
        amount: NanoUsd::from_nanos(amount),
        created_at: at(),
        deadline: at(),
        spend_limits: SpendLimits::default(),
        written_at_settlement: false,
    }
}

#[test]
fn a_hold_in_memory_counts_at_once_and_is_written_with_its_settlement() {
    check(
        "lot a 10
         lot b 5",
        "hold r1 w 12   => a:10 b:2
         balance        => a:0 b:3 spend pending 12 posted 0
         spent w        => settled 0 held 12
         rows           => a:10 b:5 spend pending 0 posted 0
         rows spent w   => settled 0 held 0
         reserve r2 w 4 => insufficient credit 3 of 4
         hold r3 w 3    => b:3
         reserve r4 w 1 => insufficient credit 0 of 1
         settle r1 11   => charged 11 released 1 written now
         rows           => a:0 b:4 spend pending 0 posted 11
         rows spent w   => settled 11 held 0
         balance        => a:0 b:1 spend pending 3 posted 11
         spent w        => settled 11 held 3
         settle r3 0    => charged 0 released 3 written now
         rows           => a:0 b:4 spend pending 0 posted 11
         settle r3 0    => error ledger invariant violated: settled an unknown reservation r3",
    );
}

#[test]
fn written_and_held_reservations_share_lots_and_counters() {
    check(
        "lot a 10
         limit workspace 9",
        "reserve r1 w 4 => a:4
         hold r2 w 4    => a:4
         reserve r3 w 2 => spend limit workspace
         rows           => a:6 spend pending 4 posted 0
         rows spent w   => settled 0 held 4
         spent w        => settled 0 held 8
         settle r1 1    => charged 1 released 3
         rows spent w   => settled 1 held 0
         spent w        => settled 1 held 4
         settle r2 4    => charged 4 released 0 written now
         rows           => a:5 spend pending 0 posted 5
         balance        => a:5 spend pending 0 posted 5",
    );
}

#[test]
fn holds_in_memory_outlive_a_reload_of_the_book() {
    check(
        "lot a 10",
        "hold r1 w 6 by u => a:6
         reload           => reloaded
         rows             => a:10 spend pending 0 posted 0
         balance          => a:4 spend pending 6 posted 0
         spent w by u     => settled 0 held 6
         reserve r2 w 6   => insufficient credit 4 of 6
         settle r1 2      => charged 2 released 4 written now
         spent w by u     => settled 2 held 0
         rows             => a:8 spend pending 0 posted 2",
    );
}

#[test]
fn a_hold_decided_again_is_the_same_decision() {
    check(
        "lot a 10",
        "hold r1 w 6 => a:6
         hold r1 w 6 => a:6
         balance     => a:4 spend pending 6 posted 0",
    );
}

#[test]
fn a_failed_batch_puts_its_holds_back_and_a_release_frees_them() {
    check(
        "lot a 10",
        "hold r1 w 6          => a:6
         fail settle r1 5     => rolled back after charged 5 released 1 written now
         rows                 => a:10 spend pending 0 posted 0
         balance              => a:4 spend pending 6 posted 0
         reserve r2 w 6       => insufficient credit 4 of 6
         release r1           => released
         release r1           => nothing held
         balance              => a:10 spend pending 0 posted 0
         spent w              => settled 0 held 0
         settle r1 5          => error ledger invariant violated: settled an unknown reservation r1",
    );
}

/// One step of `holds_in_memory_decide_and_end_as_written_holds_do`.
#[derive(Clone, Debug)]
enum Step {
    /// A reservation: workspace (0 or 1), amount, by the user or not, held in memory (when
    /// the book keeps holds) or not.
    Reserve(usize, i64, bool, bool),
    /// Settles the open reservation at this index (modulo), at this share of it (per 100).
    Settle(usize, i64),
    /// The same, in a batch that fails.
    FailSettle(usize, i64),
    /// Another connection committed: the book is dropped and loaded from its rows.
    Reload,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..2_usize, 1..400_i64, any::<bool>(), any::<bool>())
            .prop_map(|(workspace, amount, by_user, held)| Step::Reserve(workspace, amount, by_user, held)),
        3 => (any::<usize>(), 0..=100_i64).prop_map(|(index, share)| Step::Settle(index, share)),
        1 => (any::<usize>(), 0..=100_i64).prop_map(|(index, share)| Step::FailSettle(index, share)),
        1 => Just(Step::Reload),
    ]
}

/// A book of three lots with a workspace limit, and the rows it was loaded from.
fn limited_book(book: Book) -> Book {
    let mut world = World::new(
        "lot a 300
         lot b 200
         lot c 500",
    );
    world.book.keeps_holds = book.keeps_holds;
    world.book
}

fn book_rows(book: &Book) -> Rows {
    let org = &book.orgs[ORG];
    let lots = org
        .lots
        .iter()
        .map(|lot| Lot {
            account: book.account_row(lot.account.id).unwrap(),
            ..lot.clone()
        })
        .collect();
    (
        lots,
        book.account_row(org.spend_account).unwrap(),
        book.months[&(ORG.to_owned(), month_key(at()))].clone(),
        book.user_months.clone(),
        book.open.clone(),
    )
}

/// Drops the book and loads it from `rows`, as a backend would after another connection's
/// commit (or a failed batch's rollback).
fn reload(book: &mut Book, (lots, spend, counters, users, open): Rows) {
    book.clear();
    book.load_org(ORG.to_owned(), lots, spend);
    book.load_month(ORG.to_owned(), month_key(at()), counters);
    for (key, counter) in users {
        book.load_user_counter(key, counter);
    }
    for (id, reservation) in open {
        book.load_reservation(id, LoadedReservation::Open(reservation));
    }
}

/// What decisions see: every lot's account and the spend account, every counter.
fn seen(book: &Book) -> (Vec<Account>, Vec<(String, SpendCounter)>, Option<SpendCounter>) {
    let (lots, spend) = book.lots(ORG).unwrap();
    let mut accounts: Vec<Account> = lots.iter().map(|lot| lot.account).collect();
    accounts.push(book.account(spend).unwrap());
    let counters = book
        .month(ORG, month_key(at()))
        .unwrap()
        .iter()
        .map(|(workspace, counter)| (workspace.clone(), *counter))
        .filter(|(_, counter)| *counter != SpendCounter::default())
        .collect();
    let user = book
        .user_counter(&(ORG.to_owned(), "w0".to_owned(), "u".to_owned(), month_key(at())))
        .ok()
        .flatten()
        .filter(|counter| *counter != SpendCounter::default());
    (accounts, counters, user)
}

/// Runs one operation in a batch of its own, loading users' counters as having no row.
fn decide(book: &mut Book, operation: Operation<'_>) -> Result<Decision, StoreError> {
    book.begin_batch();
    for key in book.missing_user_counters(&[operation]) {
        book.load_user_counter(key, None);
    }
    book.decide(operation, &mut Delta::default())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Goal: a book that keeps holds in memory, reloaded and failing batches at random,
    /// decides every operation as a book that writes every hold does, sees the same
    /// accounts and counters after each (and publishes what it holds in memory on each
    /// lot), and once every reservation has ended its rows are the other's rows.
    #[test]
    fn holds_in_memory_decide_and_end_as_written_holds_do(steps in proptest::collection::vec(step(), 1..60)) {
        let mut keeping = limited_book(Book::keeping_holds(HeldInMemory::default()));
        let mut writing = limited_book(Book::default());
        let limits = SpendLimits { workspace: Some(NanoUsd::from_nanos(700)), ..SpendLimits::default() };
        let mut open: Vec<String> = Vec::new();
        let mut made = 0;
        let end = |keeping: &mut Book, writing: &mut Book, open: &mut Vec<String>, index: usize, share: i64, fail: bool| {
            if open.is_empty() {
                return;
            }
            let id = open[index % open.len()].clone();
            let amount = keeping.in_memory.held.get(&id).map_or_else(
                || keeping.open[&id].amount,
                |held| held.reservation.amount,
            );
            let settlement = settlement(&id, amount.nanos() * share / 100);
            let rows = (book_rows(keeping), book_rows(writing));
            let decided = (
                decide(keeping, Operation::Settle(&settlement)),
                decide(writing, Operation::Settle(&settlement)),
            );
            match decided {
                (Ok(Decision::Settle(kept)), Ok(Decision::Settle(written))) => {
                    assert_eq!(
                        (kept.charged, kept.released, kept.standing),
                        (written.charged, written.released, written.standing)
                    );
                }
                other => panic!("settling {id}: {other:?}"),
            }
            if fail {
                reload(keeping, rows.0);
                reload(writing, rows.1);
            } else {
                keeping.committed();
                writing.committed();
                open.retain(|open_id| *open_id != id);
            }
        };
        for step in steps {
            match step {
                Step::Reserve(workspace, amount, by_user, held) => {
                    made += 1;
                    let reservation = NewReservation {
                        workspace_id: format!("w{workspace}"),
                        user_id: by_user.then(|| "u".to_owned()),
                        spend_limits: limits,
                        written_at_settlement: held,
                        ..reservation(&format!("r{made}"), amount)
                    };
                    let decided = (
                        decide(&mut keeping, Operation::Reserve(&reservation)),
                        decide(&mut writing, Operation::Reserve(&reservation)),
                    );
                    keeping.committed();
                    writing.committed();
                    match decided {
                        (Ok(Decision::Reserve(kept)), Ok(Decision::Reserve(written))) => {
                            let strip = |reserved: Result<Reservation, ReserveRejection>| {
                                reserved.map(|reserved| Reservation { held_in_memory: false, ..reserved })
                            };
                            let (kept, written) = (strip(kept), strip(written));
                            assert_eq!(&kept, &written);
                            if kept.is_ok() {
                                open.push(reservation.reservation_id.clone());
                            }
                        }
                        other => panic!("reserving: {other:?}"),
                    }
                }
                Step::Settle(index, share) => end(&mut keeping, &mut writing, &mut open, index, share, false),
                Step::FailSettle(index, share) => end(&mut keeping, &mut writing, &mut open, index, share, true),
                Step::Reload => {
                    let rows = book_rows(&keeping);
                    reload(&mut keeping, rows);
                }
            }
            assert_eq!(seen(&keeping), seen(&writing));
            let layer: HashMap<AccountId, NanoUsd> = keeping
                .in_memory
                .accounts
                .iter()
                .filter(|(_, (debits, _))| debits.is_positive())
                .map(|(id, (debits, _))| (*id, *debits))
                .collect();
            assert_eq!(*keeping.in_memory.published.lots(), layer, "published as held");
        }
        for id in std::mem::take(&mut open) {
            open.push(id);
            end(&mut keeping, &mut writing, &mut open, 0, 50, false);
        }
        assert!(keeping.in_memory.held.is_empty());
        assert_eq!(keeping.in_memory.accounts.len() + keeping.in_memory.user_counters.len(), 0);
        assert!(keeping.in_memory.counters.values().all(BTreeMap::is_empty));
        let (kept, written) = (book_rows(&keeping), book_rows(&writing));
        assert_eq!(
            (kept.0.iter().map(|lot| lot.account).collect::<Vec<_>>(), kept.1, kept.2),
            (written.0.iter().map(|lot| lot.account).collect::<Vec<_>>(), written.1, written.2)
        );
    }
}

#[test]
fn a_hold_written_and_committed_stays_written_through_a_reload() {
    check(
        "lot a 10",
        "hold r1 w 6   => a:6
         settle r1 5   => charged 5 released 1 written now
         reload        => reloaded
         balance       => a:5 spend pending 0 posted 5
         spent w       => settled 5 held 0",
    );
}

#[test]
fn what_is_held_in_memory_is_published_until_its_write_commits() {
    check(
        "lot a 10
         lot b 5",
        "hold r1 w 12      => a:10 b:2
         published         => a:10 b:2
         fail settle r1 5  => rolled back after charged 5 released 7 written now
         published         => a:10 b:2
         settle r1 5       => charged 5 released 7 written now
         published         => nothing
         hold r2 w 3       => a:3
         release r2        => released
         published         => nothing",
    );
}
