//! The circuit breaker in front of the Redis server: after a run of failures (no answer
//! within the timeout, a refused or lost connection) Redis is not asked again for a while,
//! and calls fail at once instead of each waiting for the timeout. When the while has
//! passed, one call goes through as a probe: its success closes the breaker, its failure
//! opens it again. A pure state machine over the instants it is given; the caller owns the
//! clock and the lock.

use std::time::Duration;

use tokio::time::Instant;

/// Consecutive failures that open the breaker: one slow answer is not an outage.
pub(crate) const FAILURES_TO_OPEN: u32 = 3;

#[derive(Debug)]
pub(crate) struct Breaker {
    retry_after: Duration,
    consecutive_failures: u32,
    /// While open: no call goes through before this instant.
    open_until: Option<Instant>,
}

/// Whether a call may go to Redis now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passage {
    Through,
    /// The breaker is open for this much longer.
    Refused(Duration),
}

impl Breaker {
    pub(crate) fn new(retry_after: Duration) -> Breaker {
        Breaker {
            retry_after,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    /// Asks to call Redis at `now`. Once the open period has passed, the first caller is let
    /// through as the probe and the others keep being refused until it answers (or for
    /// another period, if it never does).
    pub(crate) fn request(&mut self, now: Instant) -> Passage {
        match self.open_until {
            Some(until) if now < until => Passage::Refused(until - now),
            Some(_) => {
                self.open_until = Some(now + self.retry_after);
                Passage::Through
            }
            None => Passage::Through,
        }
    }

    /// A call answered: the breaker closes.
    pub(crate) fn succeeded(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
    }

    /// A call got no answer at `now`: the breaker opens at the threshold (at once after a
    /// failed probe).
    pub(crate) fn failed(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.open_until.is_some() || self.consecutive_failures >= FAILURES_TO_OPEN {
            self.open_until = Some(now + self.retry_after);
        }
    }
}

#[cfg(test)]
mod tests;
