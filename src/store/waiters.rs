//! The polls a process holds (long polling), filed by request: a wake-up costs a lookup, and a
//! request nobody waits on costs nothing. Both stores use it: the memory store wakes on its own
//! decisions, the Redis store also on the other replicas' (its subscription).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// A request's key hash: what the channel carries and what waiters are filed under.
pub(crate) type IdHash = [u8; 16];

/// The polls this instance holds, by request.
#[derive(Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<IdHash, Weak<Notify>>>,
}

/// One held poll's registration; removed from the table when the last one for a request ends.
pub(crate) struct Waiter<'a> {
    table: &'a Waiters,
    id: IdHash,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.table.lock();
        // Ours is the last strong reference: nobody else waits on this request here.
        if Arc::strong_count(&self.notify) == 1 {
            map.remove(&self.id);
        }
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IdHash, Weak<Notify>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files a waiter for request `id`.
    fn register(&self, id: IdHash) -> Waiter<'_> {
        let mut map = self.lock();
        let notify = match map.get(&id).and_then(Weak::upgrade) {
            Some(n) => n,
            None => {
                let n = Arc::new(Notify::new());
                map.insert(id, Arc::downgrade(&n));
                n
            }
        };
        Waiter {
            table: self,
            id,
            notify,
        }
    }

    /// Completes when request `id` is decided (woken), or at its expiry. Registers first, then
    /// asks `pending` (the request's expiry while it is pending, `None` otherwise): a decision
    /// in between is not missed.
    pub(crate) async fn until_decided(
        &self,
        id: IdHash,
        now_ms: u64,
        pending: impl std::future::Future<Output = Option<u64>>,
    ) {
        let waiter = self.register(id);
        let woken = waiter.notify().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let Some(expires) = pending.await else {
            return;
        };
        let left = std::time::Duration::from_millis(expires.saturating_sub(now_ms));
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(left) => {}
        }
    }

    /// Wakes the polls held on request `id` (a message of the channel, or a local decision).
    pub(crate) fn wake(&self, id: &[u8]) {
        let Ok(id) = IdHash::try_from(id) else { return };
        let n = self.lock().get(&id).and_then(Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Wakes every held poll: messages may have been lost.
    #[cfg(feature = "redis")]
    pub(crate) fn wake_all(&self) {
        let all: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        for n in all {
            n.notify_waiters();
        }
    }
}
