//! Pending CIBA requests. The interface speaks the protocol — create a request, record a poll
//! (deciding `slow_down`), resolve it once, take the result once — so that every backend
//! enforces the same state machine, and `contract` (feature `store-contract`) runs the same
//! tests against each.

mod cells;
mod client_file;
#[cfg(any(test, feature = "store-contract"))]
pub mod contract;
mod due;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod texts;
mod waiters;

use std::future::Future;
use std::sync::Arc;

pub use crate::domain::{
    Approval, Callback, CallbackMode, Decision, Delivery, IssuedTokens, PendingRequest,
    RegisteredClient,
};
pub use client_file::ClientFile;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;

pub use crate::protocol::{AuthReqId, NotificationToken, Scope};

/// What a poll finds (TOK-02…05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Unknown id, another client's id, or already redeemed: `invalid_grant`.
    Unknown,
    /// Still waiting: `authorization_pending`.
    Pending,
    /// Polled faster than the interval: `slow_down`; the interval is now `interval_secs`.
    SlowDown {
        /// The raised interval.
        interval_secs: u32,
    },
    /// Past its expiry: `expired_token`.
    Expired,
    /// The user refused: `access_denied`. The request is gone afterwards.
    Denied,
    /// Approved: the request is consumed by this very call and no other.
    Approved(Box<PendingRequest>, Approval),
}

/// How a poll paces the client (TOK-05).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// An ordinary poll: one inside the interval since the previous is `slow_down`.
    Checked,
    /// The answer to a poll the gateway held: never `slow_down`, and the next poll is not
    /// counted against it (the hold itself paced the client).
    Held,
}

/// Why a request could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No pending request has this handle (unknown, already resolved, or gone).
    #[error("no pending request for this handle")]
    NotFound,
    /// The request has expired.
    #[error("the request has expired")]
    Expired,
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a request could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many live requests as it may; nothing was evicted.
    #[error("the pending-request store is full")]
    Full,
    /// The backend failed or could not be reached in time: the CIBA endpoints answer
    /// `503 temporarily_unavailable` with `Retry-After`.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// The pending-request contract. Times are passed in (Unix ms) so that tests control them.
pub trait PendingStore: Send + Sync + 'static {
    /// Stores a new pending request. Refuses with [`StoreError::Full`] rather than evicting.
    fn create(&self, req: PendingRequest) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a poll by `client_id` at `now_ms` and says what the client gets. An approved
    /// request is taken atomically: under concurrent polls exactly one sees `Approved`.
    /// [`Pacing::Held`] is the answer to a poll the gateway held (long polling): the hold paced
    /// the client, so it is never `slow_down`, and the next poll is not counted against it.
    fn poll(
        &self,
        id: &str,
        client_id: &str,
        now_ms: u64,
        pacing: Pacing,
    ) -> impl Future<Output = Result<PollOutcome, StoreError>> + Send;

    /// Takes the decision of request `id` for delivery by push, at `now_ms`: `Approved` or
    /// `Denied` exactly once (like a poll, atomically) — or `Expired` once, if it expired
    /// undecided — and `Unknown` afterwards; the request stays behind (never redeemable) so
    /// that its delivery can still be recorded and read.
    fn take(
        &self,
        id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<PollOutcome, StoreError>> + Send;

    /// Resolves the request behind `handle`, once; the handle dies with it. Returns the request
    /// that was decided (what must follow the decision — a ping, a push — needs it).
    fn resolve(
        &self,
        handle: &str,
        decision: Decision,
        now_ms: u64,
    ) -> impl Future<Output = Result<PendingRequest, ResolveError>> + Send;

    /// Completes when the request `id` is decided, removed or expired (its expiry measured from
    /// `now_ms`); at once if it is not pending (or unknown). The wake-up a held poll waits on:
    /// no thread and no busy loop per waiter, only the future's memory. A shared backend feeds
    /// it from the other instances' decisions. A backend that cannot tell completes at once (the
    /// poll that follows reports the failure).
    fn decided(&self, id: &str, now_ms: u64) -> impl Future<Output = ()> + Send;

    /// The still-pending, unexpired request behind `handle`, for the approval page.
    fn view(
        &self,
        handle: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<PendingRequest>, StoreError>> + Send;

    /// Removes a request whose user could not be reached, so that none is left behind that can
    /// never complete.
    fn cancel(&self, id: &AuthReqId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records how far the user's notification got (a new request starts `Pending`).
    fn record_delivery(
        &self,
        id: &AuthReqId,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The notification state of a live request.
    fn delivery(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send;
}

/// What presenting a refresh token finds (RFC 9700 §4.14: rotation with reuse detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// It was the family's current token: the family now expects `next`.
    Rotated,
    /// It was an earlier token of the family (stolen or replayed): the whole family is revoked.
    Reused,
    /// No such family: unknown, revoked, past its lifetime or idle too long.
    Gone,
}

/// Refresh-token families: which token of each grant is current. Times are passed in.
pub trait RefreshStore: Send + Sync + 'static {
    /// Starts a family whose current token is `jti`; it ends at `expires_at_ms`, or after
    /// `idle_ms` without a refresh. Refuses with [`StoreError::Full`] rather than evicting.
    fn start_family(
        &self,
        family: &str,
        jti: &str,
        now_ms: u64,
        expires_at_ms: u64,
        idle_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Presents token `presented` of `family` at `now_ms`, atomically: the current one rotates
    /// to `next`; an earlier one revokes the family.
    fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Rotation, StoreError>> + Send;
}

/// Short-lived values and counters every replica shares: the upstream-login sessions, the
/// user-code lockout. Each lives for the time it is given, then is gone.
pub trait KeptStore: Send + Sync + 'static {
    /// Keeps `value` under `kind`/`key` for `ttl_ms`, so that any replica can take it.
    fn put_value(
        &self,
        kind: &str,
        key: &str,
        value: String,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes (reads and removes, atomically) what [`KeptStore::put_value`] kept: once.
    fn take_value(
        &self,
        kind: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// A counter every replica counts in. With `add_window_ms`, adds one (the count lives that
    /// long from its first increment) and returns the new count; without, reads it.
    fn count(
        &self,
        name: &str,
        key: &str,
        add_window_ms: Option<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Rate-limit cells (GCRA, GW-07): one budget per `limit` and key, shared by every replica
/// that shares the store.
pub trait LimitStore: Send + Sync + 'static {
    /// One request for `key` under `limit` at `now_ms`, a request costing `interval_ms` and a
    /// burst reaching `tolerance_ms` ahead: `Ok(Err(secs))` when refused (retry after; a
    /// refusal is not counted).
    fn admit(
        &self,
        limit: &str,
        key: &str,
        now_ms: u64,
        interval_ms: u64,
        tolerance_ms: u64,
    ) -> impl Future<Output = Result<Result<(), u64>, StoreError>> + Send;
}

/// The push requests whose expiry must be told to their client (PUSH-ERR-01): kept in the
/// store so that whichever sweep comes first — on any replica sharing it — tells the client,
/// once, even if the replica that accepted the request is gone by then.
pub trait ExpiryQueue: Send + Sync + 'static {
    /// Files request `id` to be claimed from `expires_at_ms` on.
    fn watch_expiry(
        &self,
        id: &AuthReqId,
        expires_at_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `max` watched requests whose expiry is past at `now_ms`, claimed by this caller
    /// for `lease_ms`: each goes to one caller, and back to the others if it is not settled
    /// ([`ExpiryQueue::settle_expired`]) within the lease. A request that is gone from the
    /// store is dropped from the queue, not handed out.
    fn claim_expired(
        &self,
        now_ms: u64,
        max: usize,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Vec<PendingRequest>, StoreError>> + Send;

    /// Settles a claimed expiry: it was handled (told, or found decided).
    fn settle_expired(&self, id: &AuthReqId)
    -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Registered clients (RFC 7591/7592): the gateway's durable state. A client may not be lost
/// with a process: the memory backend keeps them in a file ([`ClientFile`]), Redis in the
/// server. A write is visible to every later read, on every replica sharing the store, at once.
pub trait ClientStore: Send + Sync + 'static {
    /// The registered client `id`: `None` if it was never registered or is deleted.
    fn client(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Arc<RegisteredClient>>, StoreError>> + Send;

    /// Stores `client`, new or replacing the one with its id; durable when this returns.
    fn put_client(
        &self,
        client: RegisteredClient,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes client `id`; whether there was one.
    fn delete_client(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The configured store. An enum rather than a trait object: the poll path stays free of
/// boxing and dynamic dispatch.
#[derive(Debug)]
pub enum Store {
    /// In-process moka store.
    Memory(MemoryStore),
    /// Redis or Valkey, shared by replicas.
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

/// Runs `$e` with `$s` bound to whichever backend `$store` is.
/// Awaits the same call on whichever backend `store` is. The Redis arm is boxed: a network
/// call's future is far larger than the memory store's, and inlined it would widen every
/// caller's state machine — a held long poll keeps its caller's for as long as it waits — for
/// the price of one allocation per round trip to Redis.
macro_rules! each {
    ($store:expr, $s:ident => $e:expr) => {
        match $store {
            Store::Memory($s) => $e.await,
            #[cfg(feature = "redis")]
            Store::Redis($s) => Box::pin($e).await,
        }
    };
}

impl Store {
    /// The store `cfg` describes (nothing is connected yet). With `registration`, the memory
    /// store opens its clients file.
    pub fn from_config(
        cfg: &crate::config::StoreConfig,
        registration: bool,
    ) -> Result<Self, crate::config::ConfigErrors> {
        use crate::config::StoreConfig;
        match cfg {
            StoreConfig::Memory {
                capacity,
                expired_grace_secs,
                clients_file,
            } => {
                let store = MemoryStore::new(
                    *capacity,
                    std::time::Duration::from_secs(*expired_grace_secs),
                );
                // The file is opened (and created) only when clients can be registered.
                match clients_file.as_deref().filter(|_| registration) {
                    None => Ok(Self::Memory(store)),
                    Some(path) => ClientFile::open(path)
                        .map(|f| Self::Memory(store.with_clients(f)))
                        .map_err(|e| {
                            crate::config::ConfigErrors(vec![crate::config::ConfigError::new(
                                "store.clients_file",
                                e,
                            )])
                        }),
                }
            }
            #[cfg(feature = "redis")]
            StoreConfig::Redis(r) => RedisStore::from_config(r).map(Self::Redis),
            #[cfg(not(feature = "redis"))]
            StoreConfig::Redis(_) => Err(crate::config::ConfigErrors(vec![
                crate::config::ConfigError::new(
                    "store.type",
                    "redis needs the `redis` feature of ciba-gateway",
                ),
            ])),
        }
    }

    /// What an operator must know of the backend at start-up, each with how loud to say it: a
    /// shared store that may evict keys under memory pressure would drop live requests
    /// silently; one that is down now is waited for.
    pub async fn startup_check(&self) -> Vec<(tracing::Level, String)> {
        match self {
            Self::Memory(_) => Vec::new(),
            #[cfg(feature = "redis")]
            Self::Redis(r) => {
                use tracing::Level;
                vec![match Box::pin(r.eviction_policy()).await {
                    Ok(Some(p)) if p != "noeviction" => (
                        Level::ERROR,
                        format!("the Redis server may evict pending requests (maxmemory-policy {p}): set `maxmemory-policy noeviction`"),
                    ),
                    Ok(Some(_)) => (
                        Level::INFO,
                        "store: Redis reachable, maxmemory-policy noeviction".into(),
                    ),
                    Ok(None) => (
                        Level::WARN,
                        "store: the Redis server does not allow CONFIG GET; make sure its maxmemory-policy is noeviction".into(),
                    ),
                    Err(e) => (
                        Level::WARN,
                        format!("store: Redis is not reachable yet ({e}); CIBA requests get 503 until it is"),
                    ),
                }]
            }
        }
    }

    /// Pending requests held in this process (the memory store; a shared store's are not
    /// counted here).
    pub fn held_in_memory(&self) -> Option<u64> {
        match self {
            Self::Memory(m) => Some(m.held()),
            #[cfg(feature = "redis")]
            Self::Redis(_) => None,
        }
    }

    /// Whether the store can be used now (readiness, `/healthz`): always for the memory store;
    /// a `PING` for Redis.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            #[cfg(feature = "redis")]
            Self::Redis(r) => Box::pin(r.ping()).await,
        }
    }
}

impl RefreshStore for Store {
    async fn start_family(
        &self,
        family: &str,
        jti: &str,
        now_ms: u64,
        expires_at_ms: u64,
        idle_ms: u64,
    ) -> Result<(), StoreError> {
        each!(self, s => s.start_family(family, jti, now_ms, expires_at_ms, idle_ms))
    }
    async fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        each!(self, s => s.rotate(family, presented, next, now_ms))
    }
}

impl PendingStore for Store {
    async fn create(&self, req: PendingRequest) -> Result<(), StoreError> {
        each!(self, s => s.create(req))
    }
    async fn poll(
        &self,
        id: &str,
        client_id: &str,
        now_ms: u64,
        pacing: Pacing,
    ) -> Result<PollOutcome, StoreError> {
        each!(self, s => s.poll(id, client_id, now_ms, pacing))
    }
    async fn take(&self, id: &str, now_ms: u64) -> Result<PollOutcome, StoreError> {
        each!(self, s => s.take(id, now_ms))
    }
    async fn resolve(
        &self,
        handle: &str,
        decision: Decision,
        now_ms: u64,
    ) -> Result<PendingRequest, ResolveError> {
        each!(self, s => s.resolve(handle, decision, now_ms))
    }
    async fn decided(&self, id: &str, now_ms: u64) {
        each!(self, s => s.decided(id, now_ms))
    }
    async fn view(&self, handle: &str, now_ms: u64) -> Result<Option<PendingRequest>, StoreError> {
        each!(self, s => s.view(handle, now_ms))
    }
    async fn cancel(&self, id: &AuthReqId) -> Result<(), StoreError> {
        each!(self, s => s.cancel(id))
    }
    async fn record_delivery(&self, id: &AuthReqId, delivery: Delivery) -> Result<(), StoreError> {
        each!(self, s => s.record_delivery(id, delivery))
    }
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        each!(self, s => s.delivery(id))
    }
}

impl ClientStore for Store {
    async fn client(&self, id: &str) -> Result<Option<Arc<RegisteredClient>>, StoreError> {
        each!(self, s => s.client(id))
    }
    async fn put_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        each!(self, s => s.put_client(client))
    }
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete_client(id))
    }
}

impl KeptStore for Store {
    async fn put_value(
        &self,
        kind: &str,
        key: &str,
        value: String,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        each!(self, s => s.put_value(kind, key, value, ttl_ms))
    }
    async fn take_value(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        each!(self, s => s.take_value(kind, key))
    }
    async fn count(
        &self,
        name: &str,
        key: &str,
        add_window_ms: Option<u64>,
    ) -> Result<u64, StoreError> {
        each!(self, s => s.count(name, key, add_window_ms))
    }
}

impl LimitStore for Store {
    async fn admit(
        &self,
        limit: &str,
        key: &str,
        now_ms: u64,
        interval_ms: u64,
        tolerance_ms: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        each!(self, s => s.admit(limit, key, now_ms, interval_ms, tolerance_ms))
    }
}

impl ExpiryQueue for Store {
    async fn watch_expiry(&self, id: &AuthReqId, expires_at_ms: u64) -> Result<(), StoreError> {
        each!(self, s => s.watch_expiry(id, expires_at_ms))
    }
    async fn claim_expired(
        &self,
        now_ms: u64,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<PendingRequest>, StoreError> {
        each!(self, s => s.claim_expired(now_ms, max, lease_ms))
    }
    async fn settle_expired(&self, id: &AuthReqId) -> Result<(), StoreError> {
        each!(self, s => s.settle_expired(id))
    }
}
