//! One load at a time per cache key. The key, limits and workspace caches expire every
//! TTL; under load, every request that arrives while the first one reloads an entry would
//! otherwise miss too and send the same query, and thousands of those at once queue on the
//! store's connection pool for seconds (seen with 10,000 streams opening together). A miss
//! takes its key's lock, checks the cache again, and only then loads.

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

/// Locks kept: misses of different keys rarely share one, and when they do they only wait
/// for each other's load.
const STRIPES: usize = 64;

pub(crate) struct SingleFlight {
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl Default for SingleFlight {
    fn default() -> SingleFlight {
        SingleFlight {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl SingleFlight {
    /// Held while loading `key`; whoever waited on it should look in the cache again.
    pub(crate) async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let stripe = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % STRIPES;
        self.stripes[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_misses_of_one_key_load_once() {
        let flight = Arc::new(SingleFlight::default());
        let cache = Arc::new(std::sync::Mutex::new(None::<u32>));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (flight, cache, loads) = (flight.clone(), cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                let _loading = flight.lock("org_acme").await;
                if let Some(value) = *cache.lock().unwrap() {
                    return value;
                }
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                *cache.lock().unwrap() = Some(7);
                7
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }
}
