//! Log lines that a flood cannot multiply: a refusal or failure that can repeat once per request
//! (a rate-limit refusal, the provider being down) is logged at most once per key per interval,
//! with the number of lines suppressed since the last one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Clock;

/// Keys remembered at once; beyond it the least recently used is forgotten (and may log again
/// early, which is harmless).
const MAX_KEYS: u64 = 10_000;

struct Slot {
    /// When the last line for this key was allowed, in the clock's milliseconds (`u64::MAX`:
    /// never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

/// Decides which repeated log lines are written.
pub struct LogThrottle {
    interval_ms: u64,
    clock: Arc<dyn Clock>,
    slots: moka::sync::Cache<String, Arc<Slot>>,
}

impl std::fmt::Debug for LogThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogThrottle")
            .field("interval_ms", &self.interval_ms)
            .finish_non_exhaustive()
    }
}

impl LogThrottle {
    /// At most one line per key every `interval_ms` on `clock`.
    pub fn new(interval_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            interval_ms,
            clock,
            slots: moka::sync::Cache::builder().max_capacity(MAX_KEYS).build(),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be written now (`suppressed` lines were
    /// held back since the last one); `None` when it is to be counted and dropped.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let slot = self.slots.get_with_by_ref(key, || {
            Arc::new(Slot {
                last_ms: AtomicU64::new(u64::MAX),
                suppressed: AtomicU64::new(0),
            })
        });
        let now = self.clock.now_ms();
        let last = slot.last_ms.load(Ordering::Acquire);
        let due = last == u64::MAX || now.saturating_sub(last) >= self.interval_ms;
        if due
            && slot
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(slot.suppressed.swap(0, Ordering::AcqRel));
        }
        slot.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn one_line_per_key_per_interval_with_the_count_held_back() {
        let clock = ManualClock::new();
        let t = LogThrottle::new(10_000, Arc::new(clock.clone()));
        assert_eq!(t.allow("a"), Some(0));
        for _ in 0..999 {
            assert_eq!(t.allow("a"), None);
        }
        assert_eq!(t.allow("b"), Some(0), "keys are independent");
        clock.advance_secs(9);
        assert_eq!(t.allow("a"), None);
        clock.advance_secs(1);
        assert_eq!(t.allow("a"), Some(1000));
        assert_eq!(t.allow("a"), None);
    }

    #[test]
    fn concurrent_callers_let_one_line_through() {
        let clock = ManualClock::new();
        let t = Arc::new(LogThrottle::new(10_000, Arc::new(clock)));
        let allowed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let t = Arc::clone(&t);
                    s.spawn(move || (0..1000).filter(|_| t.allow("k").is_some()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 1);
    }
}
