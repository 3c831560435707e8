//! Per-key rate limits for the backchannel endpoint (GW-07, SEC-04): per client, and per user
//! across all clients, so that a guessable `login_hint` cannot be used to bombard a user with
//! authentication prompts.
//!
//! The algorithm is GCRA (the "virtual scheduling" form of a token bucket): a key may send a
//! burst of `requests`, refilled evenly over `per_secs`. The cells live in the store
//! ([`crate::store::LimitStore`]): the memory store keeps one `u64` per key updated with a
//! compare-and-swap, Redis runs the same rule as one atomic script, so replicas draw from one
//! budget. Time comes from the engine's [`Clock`], so tests drive it without sleeping.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Rate;
use crate::store::{LimitStore as _, Store, StoreError};

/// A keyed GCRA limit, its cells in the store (in this process for the memory store, shared by
/// every replica for Redis).
pub struct RateLimiter {
    store: Arc<Store>,
    /// The limit's name in the store.
    name: &'static str,
    /// Milliseconds one request costs.
    interval_ms: u64,
    /// How far ahead of now a key's arrival time may run: the burst.
    tolerance_ms: u64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("interval_ms", &self.interval_ms)
            .field("tolerance_ms", &self.tolerance_ms)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limit named `name` allowing `rate.requests` per `rate.per_secs` (both validated
    /// positive), kept in `store`.
    pub fn new(rate: &Rate, clock: Arc<dyn Clock>, store: Arc<Store>, name: &'static str) -> Self {
        let window_ms = u64::from(rate.per_secs.max(1)) * 1000;
        let interval_ms = (window_ms / u64::from(rate.requests.max(1))).max(1);
        Self {
            store,
            name,
            interval_ms,
            tolerance_ms: window_ms - interval_ms,
            clock,
        }
    }

    /// Counts one request for `key`. `Ok(Err(secs))`: refused, retry after that many seconds
    /// (at least 1; a refused request is not counted); `Err`: the store failed.
    pub async fn admit(&self, key: &str) -> Result<Result<(), u64>, StoreError> {
        self.store
            .admit(
                self.name,
                key,
                self.clock.now_ms(),
                self.interval_ms,
                self.tolerance_ms,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(requests: u32, per_secs: u32) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new();
        let rate = Rate { requests, per_secs };
        let store = Store::Memory(crate::store::MemoryStore::new(
            10,
            std::time::Duration::from_secs(1),
        ));
        let l = RateLimiter::new(&rate, Arc::new(clock.clone()), Arc::new(store), "t");
        (l, clock)
    }

    #[tokio::test]
    async fn a_burst_then_an_even_refill() {
        let (l, clock) = limiter(5, 60);
        let check = |k: &'static str| {
            let l = &l;
            async move { l.admit(k).await.unwrap() }
        };
        for _ in 0..5 {
            assert_eq!(check("alice").await, Ok(()));
        }
        // One request costs 12 s: the sixth waits for the first to drain.
        assert_eq!(check("alice").await, Err(12));
        clock.advance_secs(11);
        assert_eq!(check("alice").await, Err(1));
        clock.advance_secs(1);
        assert_eq!(check("alice").await, Ok(()));
        assert_eq!(check("alice").await, Err(12));
        // A whole window later the burst is back.
        clock.advance_secs(60);
        for _ in 0..5 {
            assert_eq!(check("alice").await, Ok(()));
        }
        assert!(check("alice").await.is_err());
    }
}
