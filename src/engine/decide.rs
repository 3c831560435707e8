//! The one place a pending request is decided. Every way a user answers ends here: the built-in
//! approval page, the consent step after an upstream login, the HTTP authentication channel's
//! callback. What follows a decision happens here too: the polls held on the request are woken
//! (by the store, which every instance sharing it sees); a ping client is told (PING-01); a push
//! client is sent its tokens, minted once, or the denial (PUSH-01, PUSH-ERR-01).

use std::sync::Arc;

use super::Shared;
use crate::channel::{ClientNotifier, Delivery, Notify, PushBody};
use crate::clients::{Client, ClientRegistry};
use crate::clock::Clock;
use crate::config::DeliveryMode;
use crate::store::{Decision, PendingRequest, PendingStore, PollOutcome, ResolveError, Store};
use crate::tokens::{Minter, Recipient};

use super::issue::{Family, Issuer};

/// Decides pending requests, once each, and tells ping and push clients.
pub(super) struct Decisions {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    clients: Arc<ClientRegistry>,
    notifier: Arc<ClientNotifier>,
    minter: Arc<Minter>,
    issuer: Arc<Issuer>,
}

impl Decisions {
    pub(super) fn new(shared: &Shared, issuer: &Arc<Issuer>) -> Self {
        Self {
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
            clients: Arc::clone(&shared.clients),
            notifier: Arc::clone(&shared.notifier),
            minter: Arc::clone(&shared.minter),
            issuer: Arc::clone(issuer),
        }
    }

    /// Records the user's decision on the request with approval handle `handle`: exactly once
    /// (the store refuses a second decision), never after expiry. Then, for a ping client, the
    /// ping (approval and denial alike; it never changes the grant, PING-05); for a push
    /// client, the push. Both run in the background; their outcome replaces the request's
    /// delivery state (the user's notification is over by then) and is logged.
    pub(super) async fn decide(
        &self,
        handle: &str,
        decision: Decision,
    ) -> Result<(), ResolveError> {
        let decided = self
            .store
            .resolve(handle, decision, self.clock.now_ms())
            .await?;
        // PING-06: only ping and push clients are called, at their registered endpoint.
        let Some(client) = self.clients.get(&decided.client_id).cloned() else {
            return Ok(());
        };
        let (Some(endpoint), Some(token)) = (
            client.notification_endpoint.clone(),
            decided.notification_token.clone(),
        ) else {
            return Ok(());
        };
        let to = Notify {
            endpoint,
            token,
            auth_req_id: decided.id.clone(),
            expires_at_ms: decided.expires_at_ms,
        };
        match client.delivery {
            DeliveryMode::Poll => return Ok(()),
            DeliveryMode::Ping => {
                super::record_delivery(&self.store, &decided.id, Delivery::Pending).await;
                let (notifier, clock) = (Arc::clone(&self.notifier), Arc::clone(&self.clock));
                Spawner {
                    store: Arc::clone(&self.store),
                }
                .spawn(
                    client,
                    decided,
                    async move { notifier.ping(to, clock).await },
                );
            }
            DeliveryMode::Push => {
                let body = self.push_body(&client, &decided).await;
                super::record_delivery(&self.store, &decided.id, Delivery::Pending).await;
                let (notifier, clock) = (Arc::clone(&self.notifier), Arc::clone(&self.clock));
                Spawner {
                    store: Arc::clone(&self.store),
                }
                .spawn(client, decided, async move {
                    match body {
                        Some(body) => notifier.push(to, body, clock).await,
                        None => Delivery::Failed {
                            attempts: 0,
                            reason: "the decision was taken already".into(),
                        },
                    }
                });
            }
        }
        Ok(())
    }

    /// For a push client's request: when it expires undecided, the client is told
    /// `expired_token` (PUSH-ERR-01). A timer per pending push request; the store's `take`
    /// makes sure a decision and the expiry never both reach the client.
    pub(super) fn push_expiry(&self, pending: &PendingRequest) {
        let Some(client) = self.clients.get(&pending.client_id).cloned() else {
            return;
        };
        let (DeliveryMode::Push, Some(endpoint), Some(token)) = (
            client.delivery,
            client.notification_endpoint.clone(),
            pending.notification_token.clone(),
        ) else {
            return;
        };
        let to = Notify {
            endpoint,
            token,
            auth_req_id: pending.id.clone(),
            expires_at_ms: pending.expires_at_ms,
        };
        let left = pending.expires_at_ms.saturating_sub(self.clock.now_ms());
        let (store, clock, notifier) = (
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            Arc::clone(&self.notifier),
        );
        let decided = pending.clone();
        let spawner = Spawner {
            store: Arc::clone(&self.store),
        };
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(left)).await;
            if store.take(decided.id.as_str(), clock.now_ms()).await != Ok(PollOutcome::Expired) {
                return;
            }
            super::record_delivery(&store, &decided.id, Delivery::Pending).await;
            // Sent once, right away: the request is over, so no retry would be in time.
            spawner.spawn(client, decided, async move {
                notifier
                    .push(to, PushBody::Error("expired_token"), clock)
                    .await
            });
        });
    }

    /// Takes the decision from the store (once: nothing is redeemable afterwards) and makes
    /// what is pushed: the tokens, minted here and only here, or the error.
    async fn push_body(&self, client: &Client, decided: &PendingRequest) -> Option<PushBody> {
        let now_ms = self.clock.now_ms();
        match self.store.take(decided.id.as_str(), now_ms).await {
            // Whether the decision was taken is unknown: the client is told the transaction
            // failed rather than left waiting (nothing else would ever deliver it).
            Err(e) => {
                tracing::error!(client_id = %client.id, error = %e, "the decision could not be taken for a push");
                Some(PushBody::Error("transaction_failed"))
            }
            Ok(PollOutcome::Approved(pending, approval)) => {
                let grant = self.minter.grant_for(&pending, &approval);
                let minted = self
                    .issuer
                    .issue(client, &grant, now_ms, Recipient::Push, Family::New)
                    .await;
                Some(match minted.map(|t| serde_json::to_value(&t)) {
                    Ok(Ok(serde_json::Value::Object(tokens))) => PushBody::Tokens(tokens),
                    _ => {
                        tracing::error!(client_id = %client.id, "tokens could not be issued for a push");
                        PushBody::Error("transaction_failed")
                    }
                })
            }
            Ok(PollOutcome::Denied) => Some(PushBody::Error("access_denied")),
            Ok(PollOutcome::Expired) => Some(PushBody::Error("expired_token")),
            Ok(PollOutcome::Pending | PollOutcome::SlowDown { .. } | PollOutcome::Unknown) => None,
        }
    }
}

/// Runs a client notification in the background and records how it went.
struct Spawner {
    store: Arc<Store>,
}

impl Spawner {
    fn spawn(
        self,
        client: Arc<Client>,
        decided: PendingRequest,
        call: impl std::future::Future<Output = Delivery> + Send + 'static,
    ) {
        let store = self.store;
        tokio::spawn(async move {
            let outcome = call.await;
            let mode = if client.delivery == DeliveryMode::Push {
                "push"
            } else {
                "ping"
            };
            match &outcome {
                Delivery::Delivered { attempts } => {
                    tracing::info!(client_id = %client.id, mode, attempts, "client notified");
                }
                Delivery::Failed { attempts, reason } => {
                    // Ping: the client can still redeem by polling (PING-05). Push: the tokens
                    // are gone with the failure; nothing is redeemable.
                    tracing::warn!(client_id = %client.id, mode, attempts, %reason, "client could not be notified");
                }
                Delivery::Pending => {}
            }
            // Visible through `Engine::delivery` while the request lives.
            super::record_delivery(&store, &decided.id, outcome).await;
        });
    }
}
