//! The engine's shutdown: one flag every waiting piece of the engine listens to. Held polls
//! (long polling) are answered at once, the shared store's expiry sweep and the push-expiry
//! timers end. Set by [`Engine::shutdown`](super::Engine::shutdown); never unset.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once, when the engine shuts down.
#[derive(Debug, Default)]
pub(super) struct Shutdown {
    stopped: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    /// Shuts down: every current and future [`Shutdown::wait`] returns.
    pub(super) fn trigger(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the engine has shut down.
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Returns once the engine shuts down (at once if it has).
    pub(super) async fn wait(&self) {
        let woken = self.notify.notified();
        tokio::pin!(woken);
        // Registered before the flag is read, so a trigger in between is not missed.
        woken.as_mut().enable();
        if !self.is_stopped() {
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_before_and_after_the_trigger_return() {
        let s = std::sync::Arc::new(Shutdown::default());
        let before = tokio::spawn({
            let s = std::sync::Arc::clone(&s);
            async move { s.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!s.is_stopped());
        s.trigger();
        before.await.unwrap();
        s.wait().await;
        assert!(s.is_stopped());
    }
}
