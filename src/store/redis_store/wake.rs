//! Cross-instance wake-ups for held polls. Every decision (and removal) is published on one
//! channel with the request's key hash; each instance holds one subscription and wakes the polls
//! it holds for that request. A message can be lost (the subscription breaks, the instance was
//! away): then every local waiter is woken to poll again, and a poll whose wake-up never came
//! is still answered when its hold ends — late, never wrong.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::conn::{Link, Target};
pub(super) use crate::store::waiters::{IdHash, Waiters};

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
