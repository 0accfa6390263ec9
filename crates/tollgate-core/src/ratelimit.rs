//! Rate-limit math: token buckets with continuous refill (capacity = the per-minute limit,
//! refilled at limit/60 per second), computed exactly in integers as GCRA, the generic cell
//! rate algorithm. A bucket's whole state is its theoretical arrival time `tat`: the
//! instant at which it will be full again. Taking `n` tokens moves `tat` forward by the
//! emission interval of `n`, and a demand is admitted only if the new `tat` is no more than
//! one window ahead of now.
//!
//! Intervals are whole nanoseconds rounded up when tokens are taken and down when they are
//! given back, so rounding only ever makes the limiter stricter, never looser. The cost is
//! at most one nanosecond per operation: after taking `n` tokens the bucket may show one
//! token fewer than `limit - n` until that nanosecond has passed.
//!
//! A demand may also take tokens *on credit* ([`BucketDemand::credit`]): tokens that are
//! expected to be given back when the request ends, such as input that the upstream is
//! expected to read from its prompt cache (cache reads do not count against an input limit).
//! Only the demand's `amount` must fit for admission; the credit is taken as well and may
//! put the bucket into debt (`tat` beyond one window), at most by the credit of one
//! admission, since the bucket must hold the `amount` before it. Settlement then gives back
//! or charges the difference to the actual count ([`refund`], [`charge_unconditionally`]).
//! The bound this keeps: over any window of length T, the actual tokens of the requests
//! admitted in it are at most `per_minute + per_minute × T / 60 s + K + R`, where K is the
//! largest credit of one of them and R what settlement gave back during the window to
//! requests admitted before it (as for any estimate corrected at settlement; zero when
//! nothing was in flight as the window began), provided no actual count exceeds what its
//! request took (a larger one is charged at settlement, and later requests wait for it).
//! [`prompt_cache`] holds the memory of recently cached prompt prefixes that predicts the
//! credit.
//!
//! Nothing here stores state, reads a clock or knows about keys: callers (the limiter) pass
//! states and `now` in and keep the states that come out.

pub mod prompt_cache;

use std::cmp::max;

/// The refill window: a full bucket refills from empty in one minute.
pub const WINDOW_NANOS: i64 = 60_000_000_000;

/// [`WINDOW_NANOS`] for unsigned products.
const WINDOW_NANOS_WIDE: u128 = 60_000_000_000;

/// One bucket's state: the instant (nanoseconds since the Unix epoch) at which it is full
/// again. Any `tat_nanos <= now` means full, so a fresh bucket is `tat_nanos: 0` (or
/// `i64::MIN`, which is full at every instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BucketState {
    pub tat_nanos: i64,
}

/// A demand for `amount` tokens from one bucket whose limit is `per_minute`, and for
/// `credit` more taken on credit: admitted when `amount` fits, then both are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketDemand {
    pub state: BucketState,
    pub per_minute: u64,
    pub amount: u64,
    /// Tokens taken beside `amount` without having to fit: expected to be given back at
    /// settlement. They may put the bucket into debt by at most this much.
    pub credit: u64,
}

impl BucketDemand {
    /// Everything the demand takes when admitted: `amount + credit` (saturating).
    pub fn taken(&self) -> u64 {
        self.amount.saturating_add(self.credit)
    }
}

/// What a bucket holds at one instant, for `anthropic-ratelimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketSnapshot {
    pub limit: u64,
    /// Whole tokens available now: exactly the largest amount [`admit`] would accept.
    pub remaining: u64,
    /// When the bucket is full again (`max(tat, now)`).
    pub reset_at_nanos: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough tokens now; `retry_after_nanos` > 0 is exactly when enough will have
    /// refilled (if nobody else takes them).
    Exhausted { index: usize, retry_after_nanos: i64 },
    /// `amount > per_minute`: can never be admitted, whatever the wait.
    ExceedsCapacity { index: usize },
}

/// All-or-nothing admission over several buckets (every scope and metric of one request):
/// either every demand is taken and the new states are returned in the same order, or none
/// is and a refusing bucket is named.
///
/// `ExceedsCapacity` takes precedence over `Exhausted` (the first such demand is named);
/// among `Exhausted`, the longest wait is reported (the first on ties), so that retrying
/// after it succeeds for all. `per_minute == 0` admits nothing (`ExceedsCapacity` for any
/// positive amount); `amount == 0` with no credit (or a zero limit) always passes and
/// leaves the state unchanged.
///
/// A demand with `credit` is admitted on its `amount` alone (a credit-only demand needs a
/// bucket that is not in debt), and then takes `amount + credit`: its new `tat` is at
/// most one window plus the credit's interval ahead of now.
pub fn admit(demands: &[BucketDemand], now_nanos: i64) -> Result<Vec<BucketState>, Refusal> {
    if let Some(index) = demands
        .iter()
        .position(|demand| demand.amount > demand.per_minute)
    {
        return Err(Refusal::ExceedsCapacity { index });
    }
    let deadline = i128::from(now_nanos) + i128::from(WINDOW_NANOS);
    let mut states = Vec::with_capacity(demands.len());
    let mut longest_wait: Option<(usize, i64)> = None;
    for (index, demand) in demands.iter().enumerate() {
        if demand.taken() == 0 || demand.per_minute == 0 {
            // A zero limit only gets here with a zero amount; its credit has no interval.
            states.push(demand.state);
            continue;
        }
        // amount <= per_minute, so the interval of the amount is at most one window.
        let start = max(demand.state.tat_nanos, now_nanos);
        let tat_required = i128::from(start) + interval_rounded_up(demand.per_minute, demand.amount);
        let tat_new = i128::from(start) + interval_rounded_up(demand.per_minute, demand.taken());
        let overshoot = tat_required - deadline;
        if overshoot > 0 {
            let retry_after_nanos = saturate(overshoot);
            if longest_wait.is_none_or(|(_, longest)| retry_after_nanos > longest) {
                longest_wait = Some((index, retry_after_nanos));
            }
        } else {
            states.push(BucketState {
                tat_nanos: saturate(tat_new),
            });
        }
    }
    match longest_wait {
        Some((index, retry_after_nanos)) => Err(Refusal::Exhausted {
            index,
            retry_after_nanos,
        }),
        None => Ok(states),
    }
}

/// Gives back `amount` tokens (the admission estimate minus actual use, or a whole
/// admission undone), never making the bucket fuller than full: a bucket that is already
/// full stays as it is, and otherwise `tat` moves back by the interval of `amount`
/// (rounded down), but not before `now`.
pub fn refund(state: BucketState, per_minute: u64, amount: u64, now_nanos: i64) -> BucketState {
    if per_minute == 0 || amount == 0 || state.tat_nanos <= now_nanos {
        return state;
    }
    let lowered = i128::from(state.tat_nanos) - interval_rounded_down(per_minute, amount);
    BucketState {
        tat_nanos: saturate(max(lowered, i128::from(now_nanos))),
    }
}

/// Takes `amount` more tokens without refusing (a correction when actual use exceeded the
/// admission estimate). The bucket may go into debt: `tat` more than a window ahead, so
/// admissions are refused until it has refilled past zero.
pub fn charge_unconditionally(
    state: BucketState,
    per_minute: u64,
    amount: u64,
    now_nanos: i64,
) -> BucketState {
    if per_minute == 0 || amount == 0 {
        return state;
    }
    let start = max(state.tat_nanos, now_nanos);
    BucketState {
        tat_nanos: saturate(i128::from(start) + interval_rounded_up(per_minute, amount)),
    }
}

/// What the bucket holds at `now_nanos`, without taking anything.
pub fn snapshot(state: BucketState, per_minute: u64, now_nanos: i64) -> BucketSnapshot {
    let reset_at_nanos = max(state.tat_nanos, now_nanos);
    let backlog = i128::from(reset_at_nanos) - i128::from(now_nanos);
    // The time left before the deadline; `n` tokens fit iff ceil(n × window / limit) <= slack,
    // which for an integer slack is n <= slack × limit / window.
    let slack = u128::try_from(i128::from(WINDOW_NANOS) - backlog).unwrap_or(0);
    let remaining = slack * u128::from(per_minute) / WINDOW_NANOS_WIDE;
    BucketSnapshot {
        limit: per_minute,
        remaining: u64::try_from(remaining).unwrap_or(per_minute),
        reset_at_nanos,
    }
}

/// The emission interval of `amount` tokens, rounded up: ceil(amount × window /
/// per_minute) nanoseconds, what taking them moves `tat` forward by ([`admit`],
/// [`charge_unconditionally`]). `per_minute` must be positive. When `amount <= per_minute`
/// the result is at most [`WINDOW_NANOS`] (6·10¹⁰ < 2⁵³, so exact even as a double), which
/// lets a backend that stores states elsewhere compute intervals here and do only small
/// additions itself.
pub fn interval_rounded_up(per_minute: u64, amount: u64) -> i128 {
    let product = u128::from(amount) * WINDOW_NANOS_WIDE;
    // At most u64::MAX × 6e10 < 2^100: always fits.
    i128::try_from(product.div_ceil(u128::from(per_minute))).unwrap_or(i128::MAX)
}

/// The emission interval of `amount` tokens, rounded down: floor(amount × window /
/// per_minute) nanoseconds, what giving them back moves `tat` back by ([`refund`]).
/// `per_minute` must be positive. Like [`interval_rounded_up`], at most [`WINDOW_NANOS`]
/// when `amount <= per_minute`.
pub fn interval_rounded_down(per_minute: u64, amount: u64) -> i128 {
    let product = u128::from(amount) * WINDOW_NANOS_WIDE;
    i128::try_from(product / u128::from(per_minute)).unwrap_or(i128::MAX)
}

/// Clamps to the i64 range; only reachable near the year 2262.
fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests;
