//! The one place a pending request is decided. Every way a user answers ends here: the built-in
//! approval page, the consent step after an upstream login, the HTTP authentication channel's
//! callback. What follows a decision happens here too: the polls held on the request are woken
//! (by the store, which every instance sharing it sees), and a ping client is told (PING-01).

use std::sync::Arc;

use super::Shared;
use crate::channel::{Delivery, Ping, Pinger};
use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::config::DeliveryMode;
use crate::store::{Decision, PendingRequest, PendingStore, ResolveError, Store};

/// Decides pending requests, once each, and tells ping clients.
pub(super) struct Decisions {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    clients: Arc<ClientRegistry>,
    pinger: Arc<Pinger>,
}

impl Decisions {
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
            clients: Arc::clone(&shared.clients),
            pinger: Arc::clone(&shared.pinger),
        }
    }

    /// Records the user's decision on the request with approval handle `handle`: exactly once
    /// (the store refuses a second decision), never after expiry. Approval and denial alike are
    /// pinged (PING-01); the ping runs in the background, never changes the grant (PING-05), and
    /// its outcome replaces the request's delivery state (the user's notification is over by
    /// then).
    pub(super) async fn decide(
        &self,
        handle: &str,
        decision: Decision,
    ) -> Result<(), ResolveError> {
        let decided = self
            .store
            .resolve(handle, decision, self.clock.now_ms())
            .await?;
        self.ping(decided).await;
        Ok(())
    }

    async fn ping(&self, decided: PendingRequest) {
        // PING-06: only ping clients, at their registered endpoint.
        let Some(client) = self.clients.get(&decided.client_id) else {
            return;
        };
        let (DeliveryMode::Ping, Some(endpoint), Some(token)) = (
            client.delivery,
            client.notification_endpoint.clone(),
            decided.notification_token,
        ) else {
            return;
        };
        let ping = Ping {
            endpoint,
            token,
            auth_req_id: decided.id,
            expires_at_ms: decided.expires_at_ms,
        };
        let (pinger, clock, store, client_id) = (
            Arc::clone(&self.pinger),
            Arc::clone(&self.clock),
            Arc::clone(&self.store),
            client.id.clone(),
        );
        let id = ping.auth_req_id.clone();
        // From here on the request's delivery state is the ping's.
        self.store.record_delivery(&id, Delivery::Pending).await;
        tokio::spawn(async move {
            let outcome = pinger.send(ping, clock).await;
            match &outcome {
                Delivery::Delivered { attempts } => {
                    tracing::info!(%client_id, attempts, "ping client notified");
                }
                Delivery::Failed { attempts, reason } => {
                    // The client can still redeem by polling (PING-05).
                    tracing::warn!(%client_id, attempts, %reason, "ping client could not be notified");
                }
                Delivery::Pending => {}
            }
            // Visible through `Engine::delivery` while the request lives.
            store.record_delivery(&id, outcome).await;
        });
    }
}
