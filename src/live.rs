//! A part of the engine that a reload ([`crate::Engine::reload`]) replaces while requests run.
//!
//! Readers take the current value without a lock ([`Live::get`], an `arc-swap` load: no
//! reference count is touched, so the hot poll path pays a few nanoseconds); a reload swaps
//! in a new value at once, and whoever still holds the old one finishes with it (a poll held
//! across a reload answers with what it started with).

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

/// A value replaced whole by a reload.
pub(crate) struct Live<T>(ArcSwap<T>);

impl<T> Live<T> {
    /// A live value starting at `value`.
    pub(crate) fn new(value: T) -> Self {
        Self(ArcSwap::from_pointee(value))
    }

    /// The current value, for a short use (not across a long wait: [`Live::current`] then).
    pub(crate) fn get(&self) -> Guard<Arc<T>> {
        self.0.load()
    }

    /// The current value, to keep across a wait.
    pub(crate) fn current(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the value; readers see the new one from their next [`Live::get`]. The old
    /// one is freed here, once the requests still using it are done (waiting a second at
    /// most), so that no request pays for freeing it: 10 000 clients take milliseconds. A
    /// reload therefore blocks its thread briefly.
    pub(crate) fn replace(&self, value: T) {
        let old = self.0.swap(Arc::new(value));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}
