//! The book: reservations and settlements decided in memory, once, for both backends.
//!
//! A `Book` holds what admission decides on — each organization's lots and spend account
//! with their accounts' totals, each (organization, month)'s spend counters, the counters of
//! the users it has met (organization, workspace, user, month), and the open reservations
//! it knows with their lines — and decides every reservation and settlement of
//! a write batch against it in queue order, by the core's rules (`check_spend`,
//! `plan_reservation`, `plan_settlement`, `reserve`, `settle_pending`). Each decision changes
//! the book and adds to the batch's `Delta`: the rows to insert, the reservations ended, the
//! journal's usage transfers, the usage records, and every account and counter changed, as
//! it was before the batch and as it is now (the backends write them compare-and-set).
//! No I/O, no clock: the backends load what `missing_*` asks for, decide, and write the delta.
//! A batch may also carry rows with no money (stored responses): they pass into the delta
//! untouched, so that they share the batch's commit.
//!
//! A refusal changes nothing. Any other error may leave the book half-changed: the caller
//! then drops the book (`clear`) and the batch's transaction, and runs each operation again
//! on its own. What the book holds is the database's state only while nothing else writes
//! the rows it holds; each backend says when that is (SQLite: until another connection
//! commits; PostgreSQL: one batch, under the organizations' locks).
//!
//! Holds in memory. A book made by `keeping_holds` (SQLite's, whose one writer owns the
//! database) keeps a reservation whose caller asked for it
//! (`NewReservation::written_at_settlement`: nothing reaches its client before the
//! settlement) in memory only: it is decided as any other, but what it holds goes to a layer
//! of its own (`InMemory`) instead of the delta, and its settlement first writes it as a
//! reservation, then ends it, in one batch. The book's accounts and counters are the
//! tables' rows (the mirror); every decision reads them with the layer added, and every
//! write takes the layer away, so the rows never hold what is only in memory. Dropping the
//! book (`clear`) keeps the layer: after a reload from the tables, the holds still count.
//! A batch that fails puts back the holds its settlements had taken; a settlement that
//! fails on its own releases its hold (`release`): its client is told an error and is not
//! charged. What a crash loses is only holds whose clients had been told nothing. What the
//! layer holds on each lot is published (`HeldInMemory`) for the scripts beside the writer
//! that take credit away (expiry, a purchase's reversal), which leave it as they leave what
//! a written reservation holds.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_core::Timestamp;
use tollgate_core::ledger::{self, Account, AccountId, Lot, ReservationLine, TransferError};
use tollgate_core::money::NanoUsd;
use tollgate_core::spend::{self, month_key};

use crate::codec::invariant;
use crate::error::StoreError;
use crate::journal::{
    JournalEntry, SpendCounter, TransferKind, apply_transfer, check_record_scope, check_settlement,
    check_totals, ended_state, month_spend_of, plan_end, settle_outcome,
};
use crate::model::{
    NewReservation, Reservation, ReserveRejection, SettleOutcome, Settlement, Standing, UsageRecord,
};
use crate::stored_responses::StoredResponse;

/// One organization's lots in drawdown order (their accounts live in `Book::accounts`) and
/// its spend account.
#[derive(Clone, Debug)]
struct OrgLedger {
    lots: Vec<Lot>,
    spend_account: AccountId,
}

/// A reservation as the backend read it, to put in the book.
#[derive(Clone, Debug)]
pub(crate) enum LoadedReservation {
    /// Still pending, with its lines in line order.
    Open(OpenReservation),
    /// Settled or voided already.
    Ended,
}

/// An open reservation: what ending it needs.
#[derive(Clone, Debug)]
pub(crate) struct OpenReservation {
    pub(crate) org_id: String,
    pub(crate) workspace_id: String,
    /// Whose counter it holds on, if a user's key made it.
    pub(crate) user_id: Option<String>,
    pub(crate) amount: NanoUsd,
    pub(crate) created_at: Timestamp,
    pub(crate) lines: Vec<ReservationLine>,
}

/// One operation of a batch.
#[derive(Clone, Copy)]
pub(crate) enum Operation<'a> {
    Reserve(&'a NewReservation),
    Settle(&'a Settlement),
    /// A row with no money that rides the batch: decided by nothing, written as it is.
    StoreResponse(&'a StoredResponse),
}

/// A reservation held in memory only: what writing it with its settlement needs.
#[derive(Clone, Debug)]
struct Held {
    reservation: NewReservation,
    lines: Vec<ReservationLine>,
    spend_account: AccountId,
}

impl Held {
    fn counter_key(&self) -> CounterKey {
        let reservation = &self.reservation;
        (
            reservation.org_id.clone(),
            reservation.workspace_id.clone(),
            month_key(reservation.created_at),
        )
    }

    fn reserved(&self) -> Reservation {
        reserved(&self.reservation, self.lines.clone(), true)
    }
}

/// What a reservation's caller is told once the book has made it.
fn reserved(reservation: &NewReservation, lines: Vec<ReservationLine>, held_in_memory: bool) -> Reservation {
    Reservation {
        id: reservation.reservation_id.clone(),
        org_id: reservation.org_id.clone(),
        amount: reservation.amount,
        lines,
        held_in_memory,
    }
}

/// What a writer's book holds in memory on each lot account (debits pending), for the
/// scripts beside the writer that take credit away: they count it as held. It grows only
/// while the writer holds the write lock (a decision), and shrinks only after the write
/// that replaces it has committed (or the hold is released), so a script holding the write
/// lock never sees less than is held. Cheap to clone; empty where holds are written.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldInMemory(Arc<Mutex<HashMap<AccountId, NanoUsd>>>);

impl HeldInMemory {
    /// The lot as credit-removing scripts must see it: its row, with what is held in memory
    /// on it added to its pending debits.
    pub(crate) fn lot(&self, lot: &Lot) -> Lot {
        let held = self.lots().get(&lot.account.id).copied().unwrap_or(NanoUsd::ZERO);
        let mut lot = lot.clone();
        lot.account.debits_pending = lot.account.debits_pending.saturating_add(held);
        lot
    }

    fn shift(&self, held: &Held, add: bool) {
        let mut lots = self.lots();
        for line in &held.lines {
            let total = lots.entry(line.lot_account).or_insert(NanoUsd::ZERO);
            *total = if add {
                total.saturating_add(line.amount)
            } else {
                NanoUsd::from_nanos(total.nanos().saturating_sub(line.amount.nanos())).max(NanoUsd::ZERO)
            };
            if !total.is_positive() {
                lots.remove(&line.lot_account);
            }
        }
    }

    fn lots(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, NanoUsd>> {
        // Every update leaves the map whole, so a panic elsewhere cannot corrupt it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The holds kept in memory, and what they add to the accounts and counters the book
/// mirrors (see the module's documentation).
#[derive(Default)]
struct InMemory {
    held: HashMap<String, Held>,
    /// Per account: (debits pending, credits pending) held in memory.
    accounts: HashMap<AccountId, (NanoUsd, NanoUsd)>,
    /// Per (organization, month), per workspace: spend held in memory.
    counters: HashMap<(String, i64), BTreeMap<String, NanoUsd>>,
    user_counters: HashMap<UserCounterKey, NanoUsd>,
    /// Taken by the batch's settlements: put back if the batch fails.
    taken: Vec<Held>,
    /// What the layer holds on each lot, published (taken holds stay there until their
    /// batch commits).
    published: HeldInMemory,
}

impl InMemory {
    /// What holds in memory add to an account: (debits pending, credits pending).
    fn account(&self, id: AccountId) -> (NanoUsd, NanoUsd) {
        self.accounts
            .get(&id)
            .copied()
            .unwrap_or((NanoUsd::ZERO, NanoUsd::ZERO))
    }

    /// What holds in memory add to a workspace's counter (its `held`).
    fn counter(&self, (org_id, workspace_id, month): &CounterKey) -> NanoUsd {
        self.counters
            .get(&(org_id.clone(), *month))
            .and_then(|workspaces| workspaces.get(workspace_id))
            .copied()
            .unwrap_or(NanoUsd::ZERO)
    }

    fn user_counter(&self, key: &UserCounterKey) -> NanoUsd {
        self.user_counters.get(key).copied().unwrap_or(NanoUsd::ZERO)
    }

    /// Keeps a hold: its lines on their lots and the spend account, its amount on its
    /// counters.
    fn add(&mut self, held: Held) -> Result<(), StoreError> {
        self.shift(&held, true)?;
        self.published.shift(&held, true);
        self.held.insert(held.reservation.reservation_id.clone(), held);
        Ok(())
    }

    /// Takes a hold away, to be written (or released: then unpublish it too).
    fn take(&mut self, reservation_id: &str) -> Result<Option<Held>, StoreError> {
        let Some(held) = self.held.remove(reservation_id) else {
            return Ok(None);
        };
        self.shift(&held, false)?;
        Ok(Some(held))
    }

    /// Adds a hold's amounts, or takes them away; entries that fall to zero go.
    fn shift(&mut self, held: &Held, add: bool) -> Result<(), StoreError> {
        let moved = |total: NanoUsd, amount: NanoUsd| {
            if add {
                total.checked_add(amount)
            } else {
                total.checked_sub(amount).filter(|left| !left.is_negative())
            }
            .ok_or_else(|| {
                invariant(format!(
                    "the holds in memory of reservation {} do not add up",
                    held.reservation.reservation_id
                ))
            })
        };
        for line in &held.lines {
            for (id, debit) in [(line.lot_account, true), (held.spend_account, false)] {
                let (debits, credits) = self.account(id);
                let now = if debit {
                    (moved(debits, line.amount)?, credits)
                } else {
                    (debits, moved(credits, line.amount)?)
                };
                if now == (NanoUsd::ZERO, NanoUsd::ZERO) {
                    self.accounts.remove(&id);
                } else {
                    self.accounts.insert(id, now);
                }
            }
        }
        let amount = held.reservation.amount;
        let (org_id, workspace_id, month) = held.counter_key();
        let workspaces = self.counters.entry((org_id, month)).or_default();
        let now = moved(
            workspaces.get(&workspace_id).copied().unwrap_or(NanoUsd::ZERO),
            amount,
        )?;
        if now.is_positive() {
            workspaces.insert(workspace_id, now);
        } else {
            workspaces.remove(&workspace_id);
        }
        if let Some(key) = user_counter_key(held) {
            let now = moved(self.user_counter(&key), amount)?;
            if now.is_positive() {
                self.user_counters.insert(key, now);
            } else {
                self.user_counters.remove(&key);
            }
        }
        Ok(())
    }
}

/// What the book holds; see the module's documentation.
#[derive(Default)]
pub(crate) struct Book {
    /// Whether reservations that ask for it are held in memory (see the module's
    /// documentation); a book that does not keep holds writes every reservation.
    keeps_holds: bool,
    in_memory: InMemory,
    /// The accounts as their rows hold them (without the holds in memory).
    accounts: HashMap<AccountId, Account>,
    orgs: HashMap<String, OrgLedger>,
    /// Every workspace's counter of an organization for a month, complete once loaded, as
    /// its rows hold them.
    months: HashMap<(String, i64), BTreeMap<String, SpendCounter>>,
    /// Users' counters, each loaded on its own (`None`: it has no row yet), as their rows
    /// hold them.
    user_months: HashMap<UserCounterKey, Option<SpendCounter>>,
    open: HashMap<String, OpenReservation>,
    /// Reservations read as already ended, for the batch being decided.
    known_ended: HashSet<String>,
}

/// A reservation's end, to write.
#[derive(Debug)]
pub(crate) struct Ended<'a> {
    pub(crate) reservation_id: &'a str,
    pub(crate) state: &'static str,
    pub(crate) ended_at: Timestamp,
    pub(crate) charged: NanoUsd,
}

/// A reservation to insert with its lines, and its end when the same batch ends it (a hold
/// kept in memory, written with its settlement): such a row is inserted in its final state
/// and never updated, so it never enters the indexes of pending reservations.
#[derive(Debug)]
pub(crate) struct NewRow<'a> {
    pub(crate) reservation: Cow<'a, NewReservation>,
    pub(crate) lines: Vec<ReservationLine>,
    pub(crate) ended: Option<Ended<'a>>,
}

/// A usage transfer, to append to the journal.
#[derive(Debug)]
pub(crate) struct Posted<'a> {
    pub(crate) org_id: &'a str,
    pub(crate) debit: AccountId,
    pub(crate) credit: AccountId,
    pub(crate) amount: NanoUsd,
    pub(crate) reservation_id: &'a str,
    pub(crate) lot_id: String,
    pub(crate) created_at: Timestamp,
}

impl Posted<'_> {
    pub(crate) fn entry(&self) -> JournalEntry<'_> {
        JournalEntry {
            org_id: self.org_id,
            debit: self.debit,
            credit: self.credit,
            amount: self.amount,
            kind: TransferKind::Usage,
            reservation_id: Some(self.reservation_id),
            lot_id: Some(&self.lot_id),
            created_at: self.created_at,
        }
    }
}

/// A counter's key: (organization, workspace, month).
pub(crate) type CounterKey = (String, String, i64);

/// A changed counter: its key, as before the batch (`None`: no row), as now.
pub(crate) type CounterChange<'d> = (&'d CounterKey, Option<SpendCounter>, SpendCounter);

/// A user's counter's key: (organization, workspace, user, month).
pub(crate) type UserCounterKey = (String, String, String, i64);

/// A changed user counter: its key, as before the batch (`None`: no row), as now.
pub(crate) type UserCounterChange<'d> = (&'d UserCounterKey, Option<SpendCounter>, SpendCounter);

/// What one batch's decisions change, for the backend to write in its transaction.
#[derive(Default, Debug)]
pub(crate) struct Delta<'a> {
    /// New reservations and their lines (a hold in memory's, owned: written when it ends).
    pub(crate) reserved: Vec<NewRow<'a>>,
    /// Ends of reservations written before this batch (`Delta::end`).
    pub(crate) ended: Vec<Ended<'a>>,
    pub(crate) posted: Vec<Posted<'a>>,
    /// Usage records and the reservation each ends.
    pub(crate) records: Vec<(&'a UsageRecord, &'a str)>,
    /// Stored responses to insert.
    pub(crate) responses: Vec<&'a StoredResponse>,
    /// Changed accounts: (as before the batch, as now).
    accounts: BTreeMap<AccountId, (Account, Account)>,
    /// Changed counters: (as before the batch, `None` if it had no row; as now).
    counters: BTreeMap<CounterKey, (Option<SpendCounter>, SpendCounter)>,
    /// Changed user counters, likewise.
    user_counters: BTreeMap<UserCounterKey, (Option<SpendCounter>, SpendCounter)>,
    ended_ids: HashSet<&'a str>,
}

impl<'a> Delta<'a> {
    /// Ends a reservation: on its row when this batch has just inserted it (a hold in memory
    /// is written by its settlement, right before it ends), otherwise as an update.
    fn end(&mut self, ended: Ended<'a>) {
        self.ended_ids.insert(ended.reservation_id);
        match self.reserved.last_mut() {
            Some(row) if row.ended.is_none() && row.reservation.reservation_id == ended.reservation_id => {
                row.ended = Some(ended);
            }
            _ => self.ended.push(ended),
        }
    }

    /// Every reservation this batch ends, whether its row is inserted or updated.
    #[cfg(test)]
    pub(crate) fn ends(&self) -> impl Iterator<Item = &Ended<'a>> {
        self.reserved
            .iter()
            .filter_map(|row| row.ended.as_ref())
            .chain(&self.ended)
    }

    /// Every account that changed, as (before, now) in id order, each checked to have no
    /// negative total and no overdrawn lot.
    pub(crate) fn accounts(&self) -> Result<Vec<(Account, Account)>, StoreError> {
        let mut changed = Vec::with_capacity(self.accounts.len());
        for (before, now) in self.accounts.values() {
            if before != now {
                check_totals(now)?;
                changed.push((*before, *now));
            }
        }
        Ok(changed)
    }

    /// Every counter that changed, as (key, before, now), each checked not to be negative.
    pub(crate) fn counters(&self) -> Result<Vec<CounterChange<'_>>, StoreError> {
        let mut changed = Vec::with_capacity(self.counters.len());
        for (key, (before, now)) in &self.counters {
            if now.settled.is_negative() || now.held.is_negative() {
                return Err(invariant(format!(
                    "the spend counter of workspace {} ({}) for month {} would go negative: {now:?}",
                    key.1, key.0, key.2
                )));
            }
            if *before != Some(*now) {
                changed.push((key, *before, *now));
            }
        }
        Ok(changed)
    }

    /// Every user counter that changed, as (key, before, now), each checked not to be
    /// negative.
    pub(crate) fn user_counters(&self) -> Result<Vec<UserCounterChange<'_>>, StoreError> {
        let mut changed = Vec::with_capacity(self.user_counters.len());
        for (key, (before, now)) in &self.user_counters {
            if now.settled.is_negative() || now.held.is_negative() {
                return Err(invariant(format!(
                    "the spend counter of user {} in workspace {} ({}) for month {} would go negative: {now:?}",
                    key.2, key.1, key.0, key.3
                )));
            }
            if *before != Some(*now) {
                changed.push((key, *before, *now));
            }
        }
        Ok(changed)
    }

    pub(crate) fn journal(&self) -> Vec<JournalEntry<'_>> {
        self.posted.iter().map(Posted::entry).collect()
    }
}

impl<'a> Operation<'a> {
    /// The organization whose ledger the operation needs, if any: a settlement's is its
    /// record's, checked against the reservation's when it is decided.
    pub(crate) fn org_id(self) -> Option<&'a str> {
        match self {
            Operation::Reserve(reservation) => Some(&reservation.org_id),
            Operation::Settle(settlement) => Some(&settlement.record.org_id),
            Operation::StoreResponse(_) => None,
        }
    }
}

impl Book {
    /// A book that holds in memory the reservations that ask for it (see the module's
    /// documentation): for a backend whose one writer owns the database.
    pub(crate) fn keeping_holds(published: HeldInMemory) -> Book {
        Book {
            keeps_holds: true,
            in_memory: InMemory {
                published,
                ..InMemory::default()
            },
            ..Book::default()
        }
    }

    /// Forgets what it mirrors: the next batch loads what it needs again. The holds in
    /// memory stay, those a failed batch's settlements had taken put back.
    pub(crate) fn clear(&mut self) {
        let mut in_memory = std::mem::take(&mut self.in_memory);
        for held in std::mem::take(&mut in_memory.taken) {
            // Still published: only a commit unpublishes what a batch took.
            let restored = in_memory.shift(&held, true);
            match restored {
                Ok(()) => {
                    in_memory
                        .held
                        .insert(held.reservation.reservation_id.clone(), held);
                }
                Err(error) => tracing::error!(%error, "a hold in memory could not be put back"),
            }
        }
        *self = Book {
            keeps_holds: self.keeps_holds,
            in_memory,
            ..Book::default()
        };
    }

    /// Releases a hold in memory whose settlement could not be written (its client is told
    /// an error, and nothing is charged). Anything else: nothing changes.
    pub(crate) fn release(&mut self, reservation_id: &str) -> Result<bool, StoreError> {
        let Some(held) = self.in_memory.take(reservation_id)? else {
            return Ok(false);
        };
        self.in_memory.published.shift(&held, false);
        Ok(true)
    }

    /// Open reservations the book knows, so that a caller can bound its memory.
    pub(crate) fn open_reservations(&self) -> usize {
        self.open.len()
    }

    /// Starts a batch: what was read as already ended is read again if asked again.
    pub(crate) fn begin_batch(&mut self) {
        self.known_ended.clear();
    }

    /// The batch committed: the holds in memory its settlements wrote are gone for good
    /// (until now, `clear` would put them back).
    pub(crate) fn committed(&mut self) {
        for held in std::mem::take(&mut self.in_memory.taken) {
            self.in_memory.published.shift(&held, false);
        }
    }

    /// The reservations the operations end that the book does not hold.
    pub(crate) fn missing_reservations<'o>(&self, operations: &[Operation<'o>]) -> Vec<&'o str> {
        let mut missing: Vec<&str> = operations
            .iter()
            .filter_map(|operation| match operation {
                Operation::Settle(settlement) => Some(settlement.reservation_id.as_str()),
                Operation::Reserve(_) | Operation::StoreResponse(_) => None,
            })
            .filter(|id| {
                !self.open.contains_key(*id)
                    && !self.known_ended.contains(*id)
                    && !self.in_memory.held.contains_key(*id)
            })
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Puts a reservation read from the database in the book.
    pub(crate) fn load_reservation(&mut self, reservation_id: String, loaded: LoadedReservation) {
        match loaded {
            LoadedReservation::Open(open) => {
                self.open.insert(reservation_id, open);
            }
            LoadedReservation::Ended => {
                self.known_ended.insert(reservation_id);
            }
        }
    }

    /// The organizations the operations need whose lots the book does not hold, in id
    /// order (the order PostgreSQL locks them in).
    pub(crate) fn missing_orgs<'o>(&self, operations: &[Operation<'o>]) -> Vec<&'o str> {
        let mut missing: Vec<&str> = operations
            .iter()
            .filter_map(|operation| operation.org_id())
            .filter(|org_id| !self.orgs.contains_key(*org_id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Puts an organization's lots (in drawdown order) and spend account in the book.
    pub(crate) fn load_org(&mut self, org_id: String, lots: Vec<Lot>, spend_account: Account) {
        self.accounts.insert(spend_account.id, spend_account);
        for lot in &lots {
            self.accounts.insert(lot.account.id, lot.account);
        }
        self.orgs.insert(
            org_id,
            OrgLedger {
                lots,
                spend_account: spend_account.id,
            },
        );
    }

    /// The (organization, month)s whose counters the operations need and the book does not
    /// hold. A settlement's month is its reservation's, so reservations are loaded first.
    pub(crate) fn missing_months<'o>(&self, operations: &[Operation<'o>]) -> Vec<(&'o str, i64)> {
        let mut missing: Vec<(&str, i64)> = operations
            .iter()
            .filter_map(|operation| match operation {
                Operation::Reserve(reservation) => {
                    Some((reservation.org_id.as_str(), month_key(reservation.created_at)))
                }
                Operation::Settle(settlement) => self
                    .created_at(&settlement.reservation_id)
                    .map(|created_at| (settlement.record.org_id.as_str(), month_key(created_at))),
                Operation::StoreResponse(_) => None,
            })
            .filter(|(org_id, month)| !self.months.contains_key(&((*org_id).to_owned(), *month)))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// The users' counters the operations need and the book does not hold: a reservation's
    /// user's for its month, a settlement's reservation's (so reservations are loaded
    /// first).
    pub(crate) fn missing_user_counters(&self, operations: &[Operation<'_>]) -> Vec<UserCounterKey> {
        let mut missing: Vec<UserCounterKey> = operations
            .iter()
            .filter_map(|operation| match operation {
                Operation::Reserve(reservation) => user_counter_key(*reservation),
                Operation::Settle(settlement) => match self.in_memory.held.get(&settlement.reservation_id) {
                    Some(held) => user_counter_key(&held.reservation),
                    None => self
                        .open
                        .get(&settlement.reservation_id)
                        .and_then(user_counter_key),
                },
                Operation::StoreResponse(_) => None,
            })
            .filter(|key| !self.user_months.contains_key(key))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Puts a user's counter in the book (`None`: it has no row).
    pub(crate) fn load_user_counter(&mut self, key: UserCounterKey, counter: Option<SpendCounter>) {
        self.user_months.insert(key, counter);
    }

    /// Puts every workspace's counter of an organization for a month in the book.
    pub(crate) fn load_month(
        &mut self,
        org_id: String,
        month: i64,
        counters: impl IntoIterator<Item = (String, SpendCounter)>,
    ) {
        self.months
            .insert((org_id, month), counters.into_iter().collect());
    }

    /// Reserves: spend limits first (a request over its limit is refused as such even when
    /// its credit is short too, since raising a limit is not buying credit), then credit,
    /// then the lines, the accounts and the month's held counter — in memory only if the
    /// book keeps holds and the reservation asks for it. A refusal changes nothing. A hold
    /// already in memory (its batch failed after deciding it) is that decision again.
    pub(crate) fn reserve<'a>(
        &mut self,
        reservation: &'a NewReservation,
        delta: &mut Delta<'a>,
    ) -> Result<Result<Reservation, ReserveRejection>, StoreError> {
        if let Some(held) = self.in_memory.held.get(&reservation.reservation_id) {
            return Ok(Ok(held.reserved()));
        }
        let org_id = reservation.org_id.as_str();
        let workspace_id = reservation.workspace_id.as_str();
        let month = month_key(reservation.created_at);
        let counters = self.month(org_id, month)?;
        let mut month_spend = month_spend_of(
            org_id,
            workspace_id,
            month,
            counters
                .iter()
                .map(|(workspace_id, counter)| (workspace_id.clone(), *counter)),
        )?;
        let user_key = user_counter_key(reservation);
        let user_before = match &user_key {
            Some(key) => self.user_counter(key)?,
            None => None,
        };
        month_spend.user = user_before.unwrap_or_default().spend()?;
        if let Err(reached) = spend::check_spend(
            &reservation.spend_limits,
            &month_spend,
            reservation.amount,
            reservation.created_at,
        ) {
            return Ok(Err(reached.into()));
        }
        let (lots, spend_account) = self.lots(org_id)?;
        let lines = match ledger::plan_reservation(&lots, reservation.amount, reservation.created_at) {
            Ok(lines) => lines,
            Err(refusal) => return Ok(Err(refusal.into())),
        };
        if self.keeps_holds && reservation.written_at_settlement {
            // Checked as the written hold below would be, then kept in memory only.
            for line in &lines {
                apply_transfer(
                    self.account(line.lot_account)?,
                    self.account(spend_account)?,
                    |debit, credit| ledger::reserve(debit, credit, line.amount),
                )?;
            }
            let key = (org_id.to_owned(), workspace_id.to_owned(), month);
            self.counter(&key)?
                .unwrap_or_default()
                .hold(workspace_id, reservation.amount)?;
            user_before
                .unwrap_or_default()
                .hold(workspace_id, reservation.amount)?;
            let held = Held {
                reservation: reservation.clone(),
                lines,
                spend_account,
            };
            let reserved = held.reserved();
            self.in_memory.add(held)?;
            return Ok(Ok(reserved));
        }
        self.hold(delta, reservation, &lines, spend_account)?;
        delta.reserved.push(NewRow {
            reservation: Cow::Borrowed(reservation),
            lines: lines.clone(),
            ended: None,
        });
        Ok(Ok(reserved(reservation, lines, false)))
    }

    /// Writes a reservation's hold: its lines from their lots to the spend account, its
    /// amount on its counters, and the reservation among the open ones.
    fn hold(
        &mut self,
        delta: &mut Delta<'_>,
        reservation: &NewReservation,
        lines: &[ReservationLine],
        spend_account: AccountId,
    ) -> Result<(), StoreError> {
        for line in lines {
            self.transfer(delta, line.lot_account, spend_account, |debit, credit| {
                ledger::reserve(debit, credit, line.amount)
            })?;
        }
        let (org_id, workspace_id) = (reservation.org_id.as_str(), reservation.workspace_id.as_str());
        let month = month_key(reservation.created_at);
        let key = (org_id.to_owned(), workspace_id.to_owned(), month);
        let now = self
            .counter(&key)?
            .unwrap_or_default()
            .hold(workspace_id, reservation.amount)?;
        self.set_counter(delta, key, now)?;
        if let Some(key) = user_counter_key(reservation) {
            let now = self
                .user_counter(&key)?
                .unwrap_or_default()
                .hold(workspace_id, reservation.amount)?;
            self.set_user_counter(delta, key, now);
        }
        self.open.insert(
            reservation.reservation_id.clone(),
            OpenReservation {
                org_id: org_id.to_owned(),
                workspace_id: workspace_id.to_owned(),
                user_id: reservation.user_id.clone(),
                amount: reservation.amount,
                created_at: reservation.created_at,
                lines: lines.to_vec(),
            },
        );
        Ok(())
    }

    /// Writes a hold kept in memory, as a reservation like any other, so that its
    /// settlement can end it in the same batch (put back if the batch fails).
    fn write_held(&mut self, reservation_id: &str, delta: &mut Delta<'_>) -> Result<(), StoreError> {
        let Some(held) = self.in_memory.take(reservation_id)? else {
            return Ok(());
        };
        self.in_memory.taken.push(held.clone());
        self.hold(delta, &held.reservation, &held.lines, held.spend_account)?;
        delta.reserved.push(NewRow {
            reservation: Cow::Owned(held.reservation),
            lines: held.lines,
            ended: None,
        });
        Ok(())
    }

    /// When an open or in-memory reservation was made.
    fn created_at(&self, reservation_id: &str) -> Option<Timestamp> {
        match self.in_memory.held.get(reservation_id) {
            Some(held) => Some(held.reservation.created_at),
            None => self.open.get(reservation_id).map(|open| open.created_at),
        }
    }

    /// Ends an open reservation exactly once (a request's settlement, or the reaper's
    /// abandonment): the cost posted lot by lot in line order, one journal row a lot, the
    /// rest released, the month's counter moved, the usage record written. Already ended:
    /// nothing changes.
    pub(crate) fn settle<'a>(
        &mut self,
        settlement: &'a Settlement,
        delta: &mut Delta<'a>,
    ) -> Result<SettleOutcome, StoreError> {
        let reservation_id = settlement.reservation_id.as_str();
        check_settlement(settlement)?;
        if self.known_ended.contains(reservation_id) || delta.ended_ids.contains(reservation_id) {
            return Ok(SettleOutcome {
                already_ended: true,
                ..SettleOutcome::default()
            });
        }
        self.write_held(reservation_id, delta)?;
        let Some(open) = self.open.get(reservation_id) else {
            return Err(invariant(format!(
                "settled an unknown reservation {reservation_id}"
            )));
        };
        check_record_scope(settlement, &open.org_id)?;
        let org_id = settlement.record.org_id.as_str();
        let month = month_key(open.created_at);
        let plan = plan_end(reservation_id, open.amount, &open.lines, settlement.cost)?;
        let (_, spend_account) = self.lots(org_id)?;
        let Some(open) = self.open.remove(reservation_id) else {
            return Err(invariant(format!("reservation {reservation_id} vanished")));
        };
        let user_key = user_counter_key(&open);
        for (line, posted) in open.lines.into_iter().zip(&plan.posted_per_line) {
            self.transfer(delta, line.lot_account, spend_account, |debit, credit| {
                ledger::settle_pending(debit, credit, line.amount, *posted)
            })?;
            if posted.is_positive() {
                delta.posted.push(Posted {
                    org_id,
                    debit: line.lot_account,
                    credit: spend_account,
                    amount: *posted,
                    reservation_id,
                    lot_id: line.lot_id,
                    created_at: settlement.now,
                });
            }
        }
        if let Some(user_key) = user_key {
            let Some(before) = self.user_counter(&user_key)? else {
                return Err(invariant(format!(
                    "pending reservation {reservation_id} has no spend counter of user {} for month {month}",
                    user_key.2
                )));
            };
            let now = before.end(&open.workspace_id, open.amount, plan.charged)?;
            self.set_user_counter(delta, user_key, now);
        }
        let key = (org_id.to_owned(), open.workspace_id, month);
        let Some(before) = self.counter(&key)? else {
            return Err(invariant(format!(
                "pending reservation {reservation_id} has no spend counter for month {month}"
            )));
        };
        let now = before.end(&key.1, open.amount, plan.charged)?;
        self.set_counter(delta, key, now)?;
        delta.end(Ended {
            reservation_id,
            state: ended_state(&plan),
            ended_at: settlement.now,
            charged: plan.charged,
        });
        delta.records.push((&settlement.record, reservation_id));
        let (lots, _) = self.lots(org_id)?;
        let month_spend = month_spend_of(
            org_id,
            "",
            month,
            self.month(org_id, month)?
                .iter()
                .map(|(workspace_id, counter)| (workspace_id.clone(), *counter)),
        )?;
        Ok(SettleOutcome {
            standing: Some(Standing {
                available: ledger::credit_balance(&lots, settlement.now).available,
                month_spend: month_spend.organization,
            }),
            ..settle_outcome(&plan)
        })
    }

    /// Decides one operation of a batch.
    pub(crate) fn decide<'a>(
        &mut self,
        operation: Operation<'a>,
        delta: &mut Delta<'a>,
    ) -> Result<Decision, StoreError> {
        Ok(match operation {
            Operation::Reserve(reservation) => Decision::Reserve(self.reserve(reservation, delta)?),
            Operation::Settle(settlement) => Decision::Settle(self.settle(settlement, delta)?),
            Operation::StoreResponse(response) => {
                delta.responses.push(response);
                Decision::Stored
            }
        })
    }

    /// The organization's lots with their accounts as they stand, and its spend account.
    fn lots(&self, org_id: &str) -> Result<(Vec<Lot>, AccountId), StoreError> {
        let org = self
            .orgs
            .get(org_id)
            .ok_or_else(|| invariant(format!("the lots of organization {org_id} were not loaded")))?;
        let lots = org
            .lots
            .iter()
            .map(|lot| {
                Ok(Lot {
                    account: self.account(lot.account.id)?,
                    ..lot.clone()
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((lots, org.spend_account))
    }

    /// An account as decisions see it: its row and the holds in memory on it.
    fn account(&self, id: AccountId) -> Result<Account, StoreError> {
        let row = self.account_row(id)?;
        let (debits, credits) = self.in_memory.account(id);
        Ok(Account {
            debits_pending: add_held(row.debits_pending, debits)?,
            credits_pending: add_held(row.credits_pending, credits)?,
            ..row
        })
    }

    fn account_row(&self, id: AccountId) -> Result<Account, StoreError> {
        self.accounts
            .get(&id)
            .copied()
            .ok_or_else(|| invariant(format!("account {} was not loaded", id.0)))
    }

    /// An organization's counters for a month as decisions see them: their rows, and the
    /// holds in memory on them (a workspace with only those has a counter too).
    fn month(&self, org_id: &str, month: i64) -> Result<Cow<'_, BTreeMap<String, SpendCounter>>, StoreError> {
        let key = (org_id.to_owned(), month);
        let rows = self.months.get(&key).ok_or_else(|| {
            invariant(format!(
                "the counters of {org_id} for month {month} were not loaded"
            ))
        })?;
        let Some(held) = self.in_memory.counters.get(&key).filter(|held| !held.is_empty()) else {
            return Ok(Cow::Borrowed(rows));
        };
        let mut counters = rows.clone();
        for (workspace_id, amount) in held {
            let counter = counters.entry(workspace_id.clone()).or_default();
            counter.held = add_held(counter.held, *amount)?;
        }
        Ok(Cow::Owned(counters))
    }

    /// A workspace's counter as decisions see it: its row and what is held in memory on
    /// it (`None`: neither). Its month not loaded is a bug.
    fn counter(&self, key: &CounterKey) -> Result<Option<SpendCounter>, StoreError> {
        let (org_id, workspace_id, month) = key;
        let row = self
            .months
            .get(&(org_id.clone(), *month))
            .ok_or_else(|| {
                invariant(format!(
                    "the counters of {org_id} for month {month} were not loaded"
                ))
            })?
            .get(workspace_id)
            .copied();
        with_held(row, self.in_memory.counter(key))
    }

    /// A user's counter as decisions see it (`None`: no row yet, and nothing held in
    /// memory); not loaded is a bug.
    fn user_counter(&self, key: &UserCounterKey) -> Result<Option<SpendCounter>, StoreError> {
        with_held(self.user_counter_row(key)?, self.in_memory.user_counter(key))
    }

    fn user_counter_row(&self, key: &UserCounterKey) -> Result<Option<SpendCounter>, StoreError> {
        self.user_months.get(key).copied().ok_or_else(|| {
            invariant(format!(
                "the counter of user {} in workspace {} ({}) for month {} was not loaded",
                key.2, key.1, key.0, key.3
            ))
        })
    }

    /// Sets a user's counter as decisions see it (`now`): its row is that less what is
    /// held in memory.
    fn set_user_counter(&mut self, delta: &mut Delta<'_>, key: UserCounterKey, now: SpendCounter) {
        let before = self.user_months.get(&key).copied().flatten();
        let row = without_held(now, self.in_memory.user_counter(&key));
        self.user_months.insert(key.clone(), Some(row));
        delta.user_counters.entry(key).or_insert((before, row)).1 = row;
    }

    /// Applies one core transfer function to a debit and a credit account, as decisions
    /// see them; their rows change by as much.
    fn transfer(
        &mut self,
        delta: &mut Delta<'_>,
        debit_id: AccountId,
        credit_id: AccountId,
        apply: impl FnOnce(&mut Account, &mut Account) -> Result<(), TransferError>,
    ) -> Result<(), StoreError> {
        let (debit_before, credit_before) = (self.account(debit_id)?, self.account(credit_id)?);
        let (debit, credit) = apply_transfer(debit_before, credit_before, apply)?;
        for now in [debit, credit] {
            let before = self.account_row(now.id)?;
            let (debits, credits) = self.in_memory.account(now.id);
            let row = Account {
                debits_pending: sub_held(now.debits_pending, debits)?,
                credits_pending: sub_held(now.credits_pending, credits)?,
                ..now
            };
            self.accounts.insert(row.id, row);
            delta.accounts.entry(row.id).or_insert((before, before)).1 = row;
        }
        Ok(())
    }

    /// Sets a workspace's counter as decisions see it (`now`): its row is that less what is
    /// held in memory.
    fn set_counter(
        &mut self,
        delta: &mut Delta<'_>,
        key: CounterKey,
        now: SpendCounter,
    ) -> Result<(), StoreError> {
        let held = self.in_memory.counter(&key);
        let (org_id, workspace_id, month) = &key;
        let rows = self.months.get_mut(&(org_id.clone(), *month)).ok_or_else(|| {
            invariant(format!(
                "the counters of {org_id} for month {month} were not loaded"
            ))
        })?;
        let before = rows.get(workspace_id).copied();
        let row = without_held(now, held);
        rows.insert(workspace_id.clone(), row);
        delta.counters.entry(key).or_insert((before, row)).1 = row;
        Ok(())
    }
}

/// A counter as decisions see it: its row (`None`: none) with `held` in memory added.
fn with_held(row: Option<SpendCounter>, held: NanoUsd) -> Result<Option<SpendCounter>, StoreError> {
    if !held.is_positive() {
        return Ok(row);
    }
    let counter = row.unwrap_or_default();
    Ok(Some(SpendCounter {
        held: add_held(counter.held, held)?,
        ..counter
    }))
}

fn add_held(total: NanoUsd, held: NanoUsd) -> Result<NanoUsd, StoreError> {
    total
        .checked_add(held)
        .ok_or_else(|| invariant("a total with the holds in memory overflows".into()))
}

fn sub_held(total: NanoUsd, held: NanoUsd) -> Result<NanoUsd, StoreError> {
    total
        .checked_sub(held)
        .ok_or_else(|| invariant("a total less the holds in memory underflows".into()))
}

/// A counter as its row holds it: what decisions see less what is held in memory (a
/// negative `held` is caught when the delta is written).
fn without_held(counter: SpendCounter, held: NanoUsd) -> SpendCounter {
    SpendCounter {
        held: NanoUsd::from_nanos(counter.held.nanos().saturating_sub(held.nanos())),
        ..counter
    }
}

/// The counter a reservation holds on for its user, if a user's key made it.
fn user_counter_key(reservation: &impl Reserved) -> Option<UserCounterKey> {
    let (org_id, workspace_id, user_id, created_at) = reservation.whose();
    user_id.map(|user_id| {
        (
            org_id.to_owned(),
            workspace_id.to_owned(),
            user_id.to_owned(),
            month_key(created_at),
        )
    })
}

/// A reservation, new, open or held in memory: whose counters it holds on.
trait Reserved {
    /// Its organization, workspace, user (if a user's key made it) and creation.
    fn whose(&self) -> (&str, &str, Option<&str>, Timestamp);
}

impl Reserved for NewReservation {
    fn whose(&self) -> (&str, &str, Option<&str>, Timestamp) {
        (
            &self.org_id,
            &self.workspace_id,
            self.user_id.as_deref(),
            self.created_at,
        )
    }
}

impl Reserved for Held {
    fn whose(&self) -> (&str, &str, Option<&str>, Timestamp) {
        self.reservation.whose()
    }
}

impl Reserved for OpenReservation {
    fn whose(&self) -> (&str, &str, Option<&str>, Timestamp) {
        (
            &self.org_id,
            &self.workspace_id,
            self.user_id.as_deref(),
            self.created_at,
        )
    }
}

/// What the book decided for one operation.
#[derive(Debug)]
pub(crate) enum Decision {
    Reserve(Result<Reservation, ReserveRejection>),
    Settle(SettleOutcome),
    Stored,
}

#[cfg(test)]
mod tests;
