//! The one place a pending request is decided. Every way a user answers ends here: the built-in
//! approval page, the consent step after an upstream login, the HTTP authentication channel's
//! callback. What follows a decision happens here too: the polls held on the request are woken
//! (by the store, which every instance sharing it sees); a ping client is told (PING-01); a push
//! client is sent its tokens, minted once, or the denial (PUSH-01, PUSH-ERR-01).

use std::sync::Arc;

use super::Shared;
use crate::audit::Via;
use crate::channel::{ClientNotifier, Delivery, Notify, PushBody};
use crate::clients::{Client, ClientRegistry};
use crate::clock::Clock;
use crate::config::DeliveryMode;
use crate::domain::CallbackMode;
use crate::live::Live;
use crate::store::{
    Decision, ExpiryQueue as _, PendingRequest, PendingStore, PollOutcome, ResolveError, Store,
    StoreError,
};
use crate::tokens::{Minter, Recipient};

use super::issue::{Family, TokenIssuance};

/// Decides pending requests, once each, and tells ping and push clients.
pub(super) struct Decisions {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    clients: Arc<ClientRegistry>,
    notifier: Arc<ClientNotifier>,
    minter: Arc<Live<Minter>>,
    issuance: Arc<TokenIssuance>,
    shutdown: Arc<super::shutdown::Shutdown>,
    /// Whether push is offered (so a registered client may be a push client).
    offer_push: bool,
    /// Set once this instance's expiry sweep runs (there is one per instance).
    sweeping: std::sync::atomic::AtomicBool,
}

/// How often each replica sweeps a shared store for push requests that expired undecided.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a claimed expiry is kept from the other replicas' sweeps.
const CLAIM_LEASE_MS: u64 = 10_000;

impl Decisions {
    pub(super) fn new(shared: &Shared, issuance: &Arc<TokenIssuance>) -> Self {
        Self {
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
            clients: Arc::clone(&shared.clients),
            notifier: Arc::clone(&shared.notifier),
            minter: Arc::clone(&shared.minter),
            issuance: Arc::clone(issuance),
            shutdown: Arc::clone(&shared.shutdown),
            offer_push: shared.cfg.ciba.offer_push,
            sweeping: std::sync::atomic::AtomicBool::new(false),
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
        via: Via,
    ) -> Result<(), ResolveError> {
        // Who approved: the provider's subject after a login there, else the request's user.
        let approved_as = match &decision {
            Decision::Approved(a) => Some(a.subject.clone()),
            Decision::Denied => None,
        };
        let decided = self
            .store
            .resolve(handle, decision, self.clock.now_ms())
            .await?;
        // What follows goes on in the trace of the request that asked (crate::trace).
        let trace = decided.trace;
        crate::trace::background(trace, "decided", self.follow_up(decided, approved_as, via)).await;
        Ok(())
    }

    /// What follows a decision: the audit record, the ping or push.
    async fn follow_up(
        &self,
        decided: PendingRequest,
        approved_as: Option<Option<String>>,
        via: Via,
    ) {
        crate::audit::decided(
            &decided,
            approved_as
                .as_ref()
                .map(|s| s.as_deref().unwrap_or(&decided.subject)),
            via,
        );
        // PING-06: only ping and push clients are called, at the endpoint registered when the
        // request was accepted (RCM-03: a later change does not re-route it).
        let Some(callback) = decided.callback.clone() else {
            return;
        };
        let Some(client) = self.clients.get(&decided.client_id).await else {
            return;
        };
        let to = Notify {
            endpoint: callback.endpoint,
            token: callback.token,
            auth_req_id: decided.id.clone(),
            expires_at_ms: decided.expires_at_ms,
        };
        let body = match callback.mode {
            CallbackMode::Ping => None,
            CallbackMode::Push => Some(self.push_body(&client, &decided).await),
        };
        super::record_delivery(&self.store, &decided.id, Delivery::Pending).await;
        let (notifier, clock) = (Arc::clone(&self.notifier), Arc::clone(&self.clock));
        let spawner = Spawner {
            store: Arc::clone(&self.store),
        };
        match body {
            None => spawner.spawn(
                client,
                decided,
                async move { notifier.ping(to, clock).await },
            ),
            Some(body) => spawner.spawn(client, decided, async move {
                match body {
                    Some(body) => notifier.push(to, body, clock).await,
                    None => Delivery::Failed {
                        attempts: 0,
                        reason: "the decision was taken already".into(),
                    },
                }
            }),
        }
    }

    /// For a push client's request: when it expires undecided, the client is told
    /// `expired_token` (PUSH-ERR-01), once — the store's `take` hands an expiry out once, and
    /// never after a decision. The store keeps the expiry for the sweep
    /// ([`Decisions::sweep_expired`]; every replica's, with a shared store, so the client is
    /// told even if this replica is gone by then); if the store cannot be asked, a timer here
    /// tells it.
    pub(super) async fn push_expiry(self: &Arc<Self>, pending: &PendingRequest) {
        if self.push_target(pending).await.is_none() {
            return;
        }
        match self
            .store
            .watch_expiry(&pending.id, pending.expires_at_ms)
            .await
        {
            Ok(()) => {
                // Started with the engine (`warm_up`), or here by the first push request of an
                // engine driven without one.
                self.sweep_expired();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a push request's expiry could not be filed; this replica's timer tells the client");
            }
        }
        let left = pending.expires_at_ms.saturating_sub(self.clock.now_ms());
        let (this, pending) = (Arc::clone(self), pending.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(left)) => {}
                // A process that stops takes its timers with it; the engine says so first.
                () = this.shutdown.wait() => return,
            }
            let trace = pending.trace;
            let told = crate::trace::background(trace, "expire", this.tell_expired(pending));
            if let Err(e) = told.await {
                tracing::error!(error = %e, "a push request's expiry could not be taken; its client is not told");
            }
        });
    }

    /// Sweeps the store for push requests that expired undecided, every
    /// [`SWEEP_EVERY`], for as long as these decisions live: every replica does, and each
    /// expiry is claimed by one (for [`CLAIM_LEASE_MS`]; settled once its client was told, or
    /// claimed again by another replica if this one died first).
    pub(super) fn sweep_expired(self: &Arc<Self>) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let this = Arc::downgrade(self);
        let shutdown = Arc::clone(&self.shutdown);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.wait() => return,
                }
                let Some(d) = this.upgrade() else { return };
                d.sweep_once().await;
            }
        });
    }

    async fn sweep_once(&self) {
        const BATCH: usize = 64;
        loop {
            let claimed = match self
                .store
                .claim_expired(self.clock.now_ms(), BATCH, CLAIM_LEASE_MS)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "expired push requests could not be swept; retried");
                    return;
                }
            };
            let more = claimed.len() == BATCH;
            for pending in claimed {
                let id = pending.id.clone();
                let told =
                    crate::trace::background(pending.trace, "expire", self.tell_expired(pending));
                // Left claimed on failure: the sweep after the lease tries again.
                if told.await.is_ok()
                    && let Err(e) = self.store.settle_expired(&id).await
                {
                    tracing::debug!(error = %e, "a handled expiry could not be settled; its next claim finds it taken");
                }
            }
            if !more {
                return;
            }
        }
    }

    /// The push client of `pending` and where it is told, if it is one.
    async fn push_target(&self, pending: &PendingRequest) -> Option<(Arc<Client>, Notify)> {
        let callback = pending
            .callback
            .clone()
            .filter(|c| c.mode == CallbackMode::Push)?;
        let client = self.clients.get(&pending.client_id).await?;
        Some((
            client,
            Notify {
                endpoint: callback.endpoint,
                token: callback.token,
                auth_req_id: pending.id.clone(),
                expires_at_ms: pending.expires_at_ms,
            },
        ))
    }

    /// Tells the client of push request `pending` what the store hands this caller once its
    /// expiry is due: `expired_token` if it was never decided — or the decision itself, if the
    /// replica that recorded it was gone before taking it (PUSH-01). Nothing if it was taken.
    async fn tell_expired(&self, pending: PendingRequest) -> Result<(), StoreError> {
        let Some((client, to)) = self.push_target(&pending).await else {
            return Ok(());
        };
        let now_ms = self.clock.now_ms();
        let taken = self.store.take(pending.id.as_str(), now_ms).await?;
        if matches!(taken, PollOutcome::Expired) {
            crate::audit::expired(pending.id.as_str(), &pending.client_id);
        }
        let Some(body) = self.body_for(&client, taken, now_ms).await else {
            return Ok(());
        };
        super::record_delivery(&self.store, &pending.id, Delivery::Pending).await;
        let (notifier, clock) = (Arc::clone(&self.notifier), Arc::clone(&self.clock));
        // Sent once, right away: the request is over, so no retry would be in time.
        Spawner {
            store: Arc::clone(&self.store),
        }
        .spawn(client, pending, async move {
            notifier.push(to, body, clock).await
        });
        Ok(())
    }

    /// Whether any configured client is a push client (only then is there anything to sweep).
    pub(super) fn has_push_clients(&self) -> bool {
        self.clients.any(|c| c.delivery == DeliveryMode::Push)
            || (self.clients.takes_registrations() && self.offer_push)
    }

    /// Takes the decision from the store (once: nothing is redeemable afterwards) and makes
    /// what is pushed: the tokens, minted here and only here, or the error.
    async fn push_body(&self, client: &Client, decided: &PendingRequest) -> Option<PushBody> {
        let now_ms = self.clock.now_ms();
        match self.store.take(decided.id.as_str(), now_ms).await {
            // Whether the decision was taken is unknown: the client is told the transaction
            // failed rather than left waiting.
            Err(e) => {
                tracing::error!(client_id = %client.id, error = %e, "the decision could not be taken for a push");
                Some(PushBody::Error("transaction_failed"))
            }
            Ok(taken) => self.body_for(client, taken, now_ms).await,
        }
    }

    /// What is pushed for what `take` handed out: the tokens (minted here), or the error;
    /// nothing if there was nothing to take.
    async fn body_for(&self, client: &Client, taken: PollOutcome, now_ms: u64) -> Option<PushBody> {
        match taken {
            PollOutcome::Approved(pending, approval) => {
                let grant = self.minter.get().grant_for(&pending, &approval);
                let minted = self
                    .issuance
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
            PollOutcome::Denied => Some(PushBody::Error("access_denied")),
            PollOutcome::Expired => Some(PushBody::Error("expired_token")),
            PollOutcome::Pending | PollOutcome::SlowDown { .. } | PollOutcome::Unknown => None,
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
        let trace = decided.trace;
        tokio::spawn(crate::trace::background(
            trace,
            "notify_client",
            async move {
                let outcome = call.await;
                let mode = decided
                    .callback
                    .as_ref()
                    .map_or("ping", |c| c.mode.as_str());
                crate::audit::client_notified(&decided, mode, &outcome);
                if let Delivery::Failed { attempts, reason } = &outcome {
                    // Ping: the client can still redeem by polling (PING-05). Push: the tokens
                    // are gone with the failure; nothing is redeemable.
                    tracing::warn!(client_id = %client.id, mode, attempts, %reason, "client could not be notified");
                }
                // Visible through `Engine::delivery` while the request lives.
                super::record_delivery(&store, &decided.id, outcome).await;
            },
        ));
    }
}
