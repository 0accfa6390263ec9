//! Readiness: whether this process can serve requests now, checked for real: the store
//! commits a write (a database that still reads but cannot write is not ready) and the rate
//! limiter answers (Redis, when configured). Liveness needs none of this and is answered by
//! the HTTP crate alone. Each check is bounded, so a stalled dependency makes the answer
//! "not ready" rather than no answer.

use std::time::Duration;

use crate::Tollgate;

/// How long each check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of each check; `Err` says what failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub store: Result<(), String>,
    pub rate_limiter: Result<(), String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.store.is_ok() && self.rate_limiter.is_ok()
    }
}

impl Tollgate {
    /// Writes to the store and asks the rate limiter, both at once.
    pub async fn readiness(&self) -> Readiness {
        let now = self.now();
        let (store, rate_limiter) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.store().record_health_check(now)),
            tokio::time::timeout(CHECK_TIMEOUT, self.inner.limiter.check()),
        );
        let timed_out = || format!("no answer within {} ms", CHECK_TIMEOUT.as_millis());
        Readiness {
            store: match store {
                Ok(written) => written.map_err(|error| error.to_string()),
                Err(_) => Err(timed_out()),
            },
            rate_limiter: match rate_limiter {
                Ok(answered) => answered.map_err(|error| error.to_string()),
                Err(_) => Err(timed_out()),
            },
        }
    }
}
