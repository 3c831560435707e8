//! Per-key rate limits for the backchannel endpoint (GW-07, SEC-04): per client, and per user
//! across all clients, so that a guessable `login_hint` cannot be used to bombard a user with
//! authentication prompts.
//!
//! The algorithm is GCRA (the "virtual scheduling" form of a token bucket): a key may send a
//! burst of `requests`, refilled evenly over `per_secs`. One `u64` per key (its theoretical
//! arrival time), updated with a compare-and-swap; time comes from the engine's [`Clock`], so
//! tests drive it without sleeping. With a shared store (Redis) the same rule runs as one
//! atomic script on the server, so replicas draw from one budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Rate;
use crate::store::{Store, StoreError};

/// Keys tracked at most; beyond this the least recently used key's history is forgotten (that
/// key starts afresh).
const MAX_KEYS: u64 = 200_000;

/// A keyed GCRA limiter.
pub struct RateLimiter {
    /// Per key: the time (ms) at which its bucket would be full again.
    tat: moka::sync::Cache<String, Arc<AtomicU64>>,
    /// Milliseconds one request costs.
    interval_ms: u64,
    /// How far ahead of now a key's arrival time may run: the burst.
    tolerance_ms: u64,
    clock: Arc<dyn Clock>,
    /// The store, when it is shared: its state is used instead of `tat`.
    store: Option<(Arc<Store>, &'static str)>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval_ms", &self.interval_ms)
            .field("tolerance_ms", &self.tolerance_ms)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `rate.requests` per `rate.per_secs` (both validated positive).
    pub fn new(rate: &Rate, clock: Arc<dyn Clock>) -> Self {
        let window_ms = u64::from(rate.per_secs.max(1)) * 1000;
        let interval_ms = (window_ms / u64::from(rate.requests.max(1))).max(1);
        Self {
            // A key idle for a whole window is back at a full bucket: forgetting it is exact.
            tat: moka::sync::Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(Duration::from_millis(window_ms))
                .build(),
            interval_ms,
            tolerance_ms: window_ms - interval_ms,
            clock,
            store: None,
        }
    }

    /// The same limit, kept in `store` under `name` when the store is shared between replicas
    /// (in this process otherwise).
    pub fn shared(
        rate: &Rate,
        clock: Arc<dyn Clock>,
        store: Arc<Store>,
        name: &'static str,
    ) -> Self {
        Self {
            store: Some((store, name)),
            ..Self::new(rate, clock)
        }
    }

    /// Counts one request for `key`, wherever the limit is kept. `Ok(Err(secs))`: refused,
    /// retry after that many seconds; `Err`: the shared store failed.
    pub async fn admit(&self, key: &str) -> Result<Result<(), u64>, StoreError> {
        if let Some((store, name)) = &self.store
            && let Some(r) = store
                .shared_gcra(
                    name,
                    key,
                    self.clock.now_ms(),
                    self.interval_ms,
                    self.tolerance_ms,
                )
                .await
        {
            return r;
        }
        Ok(self.check(key))
    }

    /// Counts one request for `key`. `Err(secs)`: refused, retry after that many seconds (at
    /// least 1); a refused request is not counted.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now_ms();
        let cell = self
            .tat
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ms {
                let wait_ms = start - self.tolerance_ms - now;
                return Err(wait_ms.div_ceil(1000).max(1));
            }
            match cell.compare_exchange_weak(
                tat,
                start + self.interval_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(requests: u32, per_secs: u32) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new();
        let rate = Rate { requests, per_secs };
        (RateLimiter::new(&rate, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_burst_then_an_even_refill() {
        let (l, clock) = limiter(5, 60);
        for _ in 0..5 {
            assert_eq!(l.check("alice"), Ok(()));
        }
        // One request costs 12 s: the sixth waits for the first to drain.
        assert_eq!(l.check("alice"), Err(12));
        clock.advance_secs(11);
        assert_eq!(l.check("alice"), Err(1));
        clock.advance_secs(1);
        assert_eq!(l.check("alice"), Ok(()));
        assert_eq!(l.check("alice"), Err(12));
        // A whole window later the burst is back.
        clock.advance_secs(60);
        for _ in 0..5 {
            assert_eq!(l.check("alice"), Ok(()));
        }
        assert!(l.check("alice").is_err());
    }

    #[test]
    fn keys_are_independent_and_refusals_are_free() {
        let (l, _clock) = limiter(2, 10);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        for _ in 0..100 {
            assert_eq!(
                l.check("a"),
                Err(5),
                "refused requests do not push the wait out"
            );
        }
        assert!(l.check("b").is_ok());
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let (l, _clock) = limiter(50, 3600);
        let l = Arc::new(l);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let l = Arc::clone(&l);
                    s.spawn(move || (0..100).filter(|_| l.check("k").is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 50);
    }
}
