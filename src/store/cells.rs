//! Rate-limit cells for the memory backend: GCRA (the "virtual scheduling" form of a token
//! bucket), one `u64` per key — its theoretical arrival time — updated with a compare-and-swap.
//! The Redis backend runs the same rule as one Lua script (`lua/gcra.lua`). A key idle for its
//! limit's whole window is back at a full bucket, so forgetting it then is exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::sync::Cache;

/// Keys tracked at most per limit; beyond this the least recently used key's history is
/// forgotten (that key starts afresh).
const MAX_KEYS: u64 = 200_000;

/// Every limit's cells, by limit name.
#[derive(Default)]
pub(super) struct Cells {
    by_limit: RwLock<HashMap<String, Cache<String, Arc<AtomicU64>>>>,
}

impl Cells {
    /// One request for `key` under `limit` at `now_ms`: `Err(secs)` when refused (a refusal is
    /// not counted).
    pub(super) fn admit(
        &self,
        limit: &str,
        key: &str,
        now_ms: u64,
        interval_ms: u64,
        tolerance_ms: u64,
    ) -> Result<(), u64> {
        let cell = self
            .cache(limit, interval_ms + tolerance_ms)
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            let start = tat.max(now_ms);
            if start - now_ms > tolerance_ms {
                let wait_ms = start - tolerance_ms - now_ms;
                return Err(wait_ms.div_ceil(1000).max(1));
            }
            match cell.compare_exchange_weak(
                tat,
                start + interval_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// The cells of `limit` (a limit's window is fixed by its configuration).
    fn cache(&self, limit: &str, window_ms: u64) -> Cache<String, Arc<AtomicU64>> {
        if let Some(c) = self
            .by_limit
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(limit)
        {
            return c.clone();
        }
        self.by_limit
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(limit.to_owned())
            .or_insert_with(|| {
                Cache::builder()
                    .max_capacity(MAX_KEYS)
                    .time_to_idle(Duration::from_millis(window_ms.max(1)))
                    .build()
            })
            .clone()
    }
}
