//! One limit on what the gateway writes to its log, applied where the lines are written (a
//! `tracing-subscriber` per-layer filter), so that no input and no failing dependency can make
//! the log grow faster than a known rate — whichever code path the line comes from.
//!
//! Two buckets decide, both in lines per second:
//! - every warning or error **call site** may write [`REPEAT_BURST`] lines at once, then one
//!   per second ([`REPEAT_PER_SEC`]): a failure that repeats per request (the store down, a
//!   client over its limit) is seen, then summarised;
//! - **all** lines together may write `max_lines_per_sec` per second (as a burst, too).
//!
//! Lines of the audit trail (target `ciba_gateway::audit`, [`crate::audit`]) are exempt: each
//! records a change of state that happens once per request (accepted, decided, tokens issued),
//! bounded by the rate limits on the requests that cause them, and an audit trail with holes is
//! worth less than a long one. So are the approval links of the `log` channel
//! (`ciba_gateway::channel::log`): each line is a user's notification. The audit events a
//! client can repeat at will (a refusal at a limit, a poll of an expired request) have their
//! own target, `ciba_gateway::audit::repeat`, held to the per-call-site limit whatever their
//! level. What is held back is counted;
//! [`LogLimit::report`] writes the count (one line per period, when there is something to say).
//!
//! ```
//! use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
//! let limit = ciba_gateway::log_limit::LogLimit::new(100);
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(limit.clone()));
//! # drop(subscriber);
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::callsite::Identifier;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

use crate::clock::{Clock, SystemClock};

/// Lines one warning or error call site may write at once.
pub const REPEAT_BURST: u32 = 10;
/// Lines per second one warning or error call site may write after its burst.
pub const REPEAT_PER_SEC: u32 = 1;
/// Targets whose lines the limit never holds back (see the module's notes).
pub const EXEMPT_TARGETS: &[&str] = &[crate::audit::TARGET, crate::channel::LOG_CHANNEL_TARGET];
/// Targets whose lines are held to the per-call-site limit at any level.
pub const REPEAT_TARGETS: &[&str] = &[crate::audit::REPEAT_TARGET];
/// The target of the limit's own report.
const REPORT_TARGET: &str = "ciba_gateway::log_limit";
/// Call sites remembered at once (the program has a few hundred; a bound all the same).
const MAX_SITES: usize = 4096;

/// A bucket in the GCRA form: the time (clock ms) until which it is spent.
#[derive(Clone, Copy, Default)]
struct Bucket {
    full_until_ms: u64,
}

impl Bucket {
    /// Takes one line if the bucket (`per_sec` lines per second, `burst` at once) has one.
    fn take(&mut self, now_ms: u64, per_sec: u32, burst: u32) -> bool {
        let cost = 1000 / u64::from(per_sec.max(1));
        let start = self.full_until_ms.max(now_ms);
        if start + cost > now_ms + cost * u64::from(burst.max(1)) {
            return false;
        }
        self.full_until_ms = start + cost;
        true
    }
}

struct Buckets {
    all: Bucket,
    sites: HashMap<Identifier, Bucket>,
}

struct Inner {
    max_per_sec: u32,
    clock: Arc<dyn Clock>,
    buckets: Mutex<Buckets>,
    held_back: AtomicU64,
}

/// The gateway's log limit: a [`Filter`] for the layer that writes the log. Cloning shares the
/// limit and its count.
#[derive(Clone)]
pub struct LogLimit(Arc<Inner>);

impl std::fmt::Debug for LogLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLimit")
            .field("max_lines_per_sec", &self.0.max_per_sec)
            .finish_non_exhaustive()
    }
}

impl LogLimit {
    /// At most `max_lines_per_sec` lines per second in all (at least 1), and the repeat limit
    /// per warning or error call site.
    pub fn new(max_lines_per_sec: u32) -> Self {
        Self::with_clock(max_lines_per_sec, Arc::new(SystemClock))
    }

    /// The same on `clock` (tests drive a manual one).
    pub fn with_clock(max_lines_per_sec: u32, clock: Arc<dyn Clock>) -> Self {
        Self(Arc::new(Inner {
            max_per_sec: max_lines_per_sec.max(1),
            clock,
            buckets: Mutex::new(Buckets {
                all: Bucket::default(),
                sites: HashMap::new(),
            }),
            held_back: AtomicU64::new(0),
        }))
    }

    /// The lines held back since the limit began.
    pub fn held_back_total(&self) -> u64 {
        self.0.held_back.load(Ordering::Relaxed)
    }

    /// Writes, every `period`, how many lines were held back in it (nothing when none were).
    /// Runs until the program ends; spawn it beside the server.
    pub async fn report(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut reported = self.held_back_total();
        loop {
            tick.tick().await;
            let total = self.held_back_total();
            let held_back = total - reported;
            reported = total;
            if held_back > 0 {
                tracing::warn!(
                    target: REPORT_TARGET,
                    held_back,
                    period_secs = period.as_secs(),
                    "log lines held back by the log limit"
                );
            }
        }
    }

    /// Whether a line from `site` at `level` (and `target`) is written at `now_ms`.
    fn admit(&self, site: Identifier, level: Level, target: &str, now_ms: u64) -> bool {
        if target == REPORT_TARGET || EXEMPT_TARGETS.contains(&target) {
            return true;
        }
        let inner = &self.0;
        let mut b = inner.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let repeats = level <= Level::WARN || REPEAT_TARGETS.contains(&target);
        if repeats {
            let full = b.sites.len() >= MAX_SITES && !b.sites.contains_key(&site);
            if full {
                b.sites.clear();
            }
            let mut site_bucket = b.sites.get(&site).copied().unwrap_or_default();
            // Checked before the overall bucket is charged: a held-back repeat costs the others
            // nothing.
            if !site_bucket.take(now_ms, REPEAT_PER_SEC, REPEAT_BURST) {
                drop(b);
                inner.held_back.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if !b.all.take(now_ms, inner.max_per_sec, inner.max_per_sec) {
                drop(b);
                inner.held_back.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            b.sites.insert(site, site_bucket);
            return true;
        }
        let ok = b.all.take(now_ms, inner.max_per_sec, inner.max_per_sec);
        drop(b);
        if !ok {
            inner.held_back.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl<S> Filter<S> for LogLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        // Decided per event, in `event_enabled`: the level is the other filters' business.
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        let now_ms = self.0.clock.now_ms();
        self.admit(meta.callsite(), *meta.level(), meta.target(), now_ms)
    }

    /// Every level: combined with a level filter (`EnvFilter.and(limit)`), the level filter's
    /// hint stands. Without this (no hint), the combination has none either, and every
    /// disabled `debug!` and DEBUG span in the process is weighed at run time instead of
    /// skipped by the global maximum level (about 2 % of a poll's CPU in a profile).
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::clock::ManualClock;

    /// Counts the lines that get through.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn written(limit: &LogLimit, emit: impl FnOnce()) -> usize {
        let n = Arc::new(AtomicUsize::new(0));
        let subscriber =
            tracing_subscriber::registry().with(Count(Arc::clone(&n)).with_filter(limit.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        n.load(Ordering::Relaxed)
    }

    #[test]
    fn a_repeated_error_is_written_as_a_burst_then_once_a_second_and_counted() {
        let clock = ManualClock::new();
        let limit = LogLimit::with_clock(1000, Arc::new(clock.clone()));
        let burst = || {
            for _ in 0..100 {
                tracing::error!("the store failed");
            }
        };
        assert_eq!(written(&limit, burst), REPEAT_BURST as usize);
        assert_eq!(limit.held_back_total(), 100 - u64::from(REPEAT_BURST));
        // Another call site has a burst of its own.
        let other = || {
            for _ in 0..100 {
                tracing::warn!("over a limit");
            }
        };
        assert_eq!(written(&limit, other), REPEAT_BURST as usize);
        clock.advance_secs(1);
        assert_eq!(written(&limit, burst), 1);
        clock.advance_secs(3);
        assert_eq!(written(&limit, burst), 3);
        assert_eq!(limit.held_back_total(), 90 + 90 + 99 + 97);
    }

    #[test]
    fn all_lines_together_stay_under_the_cap_and_the_audit_trail_is_exempt() {
        let clock = ManualClock::new();
        let limit = LogLimit::with_clock(50, Arc::new(clock.clone()));
        let info = || {
            for i in 0..500 {
                tracing::info!(i, "a line per request");
            }
        };
        assert_eq!(written(&limit, info), 50);
        let audit = || {
            for _ in 0..500 {
                tracing::info!(target: "ciba_gateway::audit", "approved");
            }
        };
        assert_eq!(written(&limit, audit), 500);
        clock.advance_ms(100);
        assert_eq!(written(&limit, info), 5);
    }

    #[test]
    fn audit_events_a_client_can_repeat_are_held_like_a_repeated_warning() {
        let clock = ManualClock::new();
        let limit = LogLimit::with_clock(1000, Arc::new(clock.clone()));
        let refusals = || {
            for _ in 0..500 {
                tracing::info!(target: "ciba_gateway::audit::repeat", "refused at a rate limit");
            }
        };
        assert_eq!(written(&limit, refusals), REPEAT_BURST as usize);
        assert_eq!(limit.held_back_total(), 500 - u64::from(REPEAT_BURST));
    }
}
