//! Cross-instance wake-ups for held polls. Every decision (and removal) is published on one
//! channel with the request's key hash; each instance holds one subscription and wakes the polls
//! it holds for that request. A message can be lost (the subscription breaks, the instance was
//! away): then every local waiter is woken to poll again, and a poll whose wake-up never came
//! is still answered when its hold ends — late, never wrong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::Notify;

use super::conn::{Link, Target};

/// A request's key hash: what the channel carries and what waiters are filed under.
pub(super) type IdHash = [u8; 16];

/// The polls this instance holds, by request.
#[derive(Default)]
pub(super) struct Waiters {
    by_id: Mutex<HashMap<IdHash, Weak<Notify>>>,
}

/// One held poll's registration; removed from the table when the last one for a request ends.
pub(super) struct Waiter<'a> {
    table: &'a Waiters,
    id: IdHash,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    pub(super) fn notify(&self) -> &Notify {
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
    pub(super) fn register(&self, id: IdHash) -> Waiter<'_> {
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

    /// Wakes the polls held on request `id` (a message of the channel, or a local decision).
    pub(super) fn wake(&self, id: &[u8]) {
        let Ok(id) = IdHash::try_from(id) else { return };
        let n = self.lock().get(&id).and_then(Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Wakes every held poll: messages may have been lost.
    fn wake_all(&self) {
        let all: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        for n in all {
            n.notify_waiters();
        }
    }
}

/// What the subscription needs; held weakly so that the task ends with the store.
pub(super) struct Subscription {
    pub(super) link: Arc<Link>,
    pub(super) waiters: Arc<Waiters>,
    pub(super) channel: String,
    /// Whether the subscription is established now.
    pub(super) ready: tokio::sync::watch::Sender<bool>,
}

impl Subscription {
    /// Waits (up to the store's deadline) until decisions published from now on reach this
    /// instance. A held poll registers, waits for this, then reads the state: a decision is
    /// either seen by the read or delivered by the channel.
    pub(super) async fn established(&self) {
        let mut rx = self.ready.subscribe();
        let _ = tokio::time::timeout(self.link.timeout(), rx.wait_for(|up| *up)).await;
    }
}

/// Keeps this instance subscribed until `stop` is dropped (the store is).
pub(super) async fn listen(sub: Weak<Subscription>, mut stop: tokio::sync::watch::Receiver<()>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some(s) = sub.upgrade() else { return };
        let (timeout, channel) = (s.link.timeout(), s.channel.clone());
        let opened = tokio::time::timeout(timeout, open(&s.link)).await;
        drop(s);
        if let Ok(Ok(mut pubsub)) = opened
            && tokio::time::timeout(timeout, pubsub.subscribe(&channel))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            backoff = Duration::from_millis(100);
            if let Some(s) = sub.upgrade() {
                s.ready.send_replace(true);
                // Decisions made while this instance was not subscribed are not missed.
                if !first {
                    s.waiters.wake_all();
                }
            }
            first = false;
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    m = messages.next() => match (m, sub.upgrade()) {
                        (Some(m), Some(s)) => s.waiters.wake(m.get_payload_bytes()),
                        (None, _) => break,
                        (_, None) => return,
                    },
                }
            }
        }
        match sub.upgrade() {
            Some(s) => {
                if s.ready.send_replace(false) {
                    tracing::warn!("the Redis subscription for held polls broke; reconnecting");
                    s.waiters.wake_all();
                }
            }
            None => return,
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn open(link: &Link) -> redis::RedisResult<redis::aio::PubSub> {
    match link.target() {
        Target::Node(c) => c.get_async_pubsub().await,
        Target::Sentinel(s) => {
            let client = s.lock().await.async_get_client().await?;
            client.get_async_pubsub().await
        }
        Target::Cluster { seeds, .. } => {
            let mut last = None;
            for c in seeds {
                match c.get_async_pubsub().await {
                    Ok(p) => return Ok(p),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed node"))
            }))
        }
    }
}
