//! The in-process store on moka, compact: one table entry per request (keyed by the first 16
//! bytes of SHA-256 of its id — the approval handle names that key too, so no handle index is
//! kept), ids and handles as raw bytes, client ids and scopes shared, the subject and the
//! optional fields in one string allocation. Each entry carries its own lifetime (plus a short tombstone
//! period so that late polls learn `expired_token`), and a counter of live entries enforces the
//! capacity by refusing new requests: moka's own size-based eviction is never used, because it
//! would silently drop live requests. Held polls wait in [`Waiters`], which costs nothing for a
//! request nobody waits on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moka::sync::Cache;

use super::cells::Cells;
use super::due::DueQueue;
use super::texts::Texts;
use super::waiters::{IdHash, Waiters};
use super::{
    Approval, ClientFile, ClientStore, Decision, Delivery, ExpiryQueue, KeptStore, LimitStore,
    Pacing, PendingRequest, PendingStore, PollOutcome, RefreshStore, RegisteredClient,
    ResolveError, Rotation, StoreError,
};
use crate::domain::{Callback, CallbackMode};
use crate::protocol::{AuthReqId, NotificationToken, Scope, digest16, handle_target};

#[derive(Debug)]
enum Status {
    Pending,
    Approved(Box<Approval>),
    Denied,
    /// Taken by a poll; kept only until the entry is invalidated.
    Done,
}

#[derive(Debug)]
struct State {
    status: Status,
    /// `None` while the user's notification is pending (the common case costs no box).
    delivery: Option<Box<Delivery>>,
    /// The last counted poll, Unix ms (`NonZero`: the option costs no extra word).
    last_poll_ms: Option<std::num::NonZeroU64>,
    interval_secs: u32,
}

#[derive(Debug)]
struct Entry {
    id: [u8; 32],
    handle: [u8; 32],
    client_id: Arc<str>,
    scope: Arc<str>,
    texts: Texts,
    created_at_ms: u64,
    expires_at_ms: u64,
    interval_secs: u32,
    /// A ping or push client's endpoint when the request was accepted (RCM-03), shared; the
    /// token is among the texts.
    endpoint: Option<Arc<str>>,
    push: bool,
    /// The asking request's trace context.
    trace: Option<crate::trace::TraceContext>,
    state: Mutex<State>,
}

impl Entry {
    /// The request as the engine knows it (built only when one is handed out).
    fn request(&self) -> PendingRequest {
        let text = |i| self.texts.optional(i).map(str::to_owned);
        PendingRequest {
            id: AuthReqId::from_wire(&URL_SAFE_NO_PAD.encode(self.id)),
            handle: URL_SAFE_NO_PAD.encode(self.handle),
            client_id: self.client_id.to_string(),
            subject: self.texts.subject().to_owned(),
            scope: Scope::parse(&self.scope).expect("stored from a parsed scope"),
            acr_values: text(0),
            binding_message: text(1),
            login_hint: text(2),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            interval_secs: self.interval_secs,
            callback: self.callback(),
            trace: self.trace,
        }
    }

    fn callback(&self) -> Option<Callback> {
        Some(Callback {
            mode: if self.push {
                CallbackMode::Push
            } else {
                CallbackMode::Ping
            },
            endpoint: url::Url::parse(self.endpoint.as_deref()?).ok()?,
            token: NotificationToken::parse(self.texts.optional(3)?)?,
        })
    }

    /// Whether `presented` is this request's handle, compared in constant time.
    fn handle_is(&self, presented: &str) -> bool {
        let mut raw = [0u8; 32];
        presented.len() == 43
            && URL_SAFE_NO_PAD.decode_slice(presented, &mut raw) == Ok(32)
            && bool::from(subtle::ConstantTimeEq::ct_eq(&raw[..], &self.handle[..]))
    }
}

fn raw32(s: &str) -> Option<[u8; 32]> {
    let mut k = [0u8; 32];
    (s.len() == 43 && URL_SAFE_NO_PAD.decode_slice(s, &mut k) == Ok(32)).then_some(k)
}

struct PerEntryExpiry {
    grace: Duration,
}

impl moka::Expiry<IdHash, Arc<Entry>> for PerEntryExpiry {
    fn expire_after_create(&self, _k: &IdHash, v: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(Duration::from_millis(v.expires_at_ms.saturating_sub(v.created_at_ms)) + self.grace)
    }
}

/// Keys are digests of ids the gateway generates from a CSPRNG, never chosen by clients, so a
/// fast seeded hasher is safe here.
type Hasher = foldhash::fast::RandomState;

/// One refresh-token family.
#[derive(Debug)]
struct Family {
    current: String,
    last_used_ms: u64,
    idle_ms: u64,
    revoked: bool,
}

/// A value and how long it lives (a refresh family, a login session, a counter).
struct Kept<T> {
    value: T,
    ttl: Duration,
}

struct KeptExpiry;

impl<T> moka::Expiry<String, Arc<Kept<T>>> for KeptExpiry {
    fn expire_after_create(
        &self,
        _k: &String,
        v: &Arc<Kept<T>>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Short-lived values (the upstream-login sessions), taken once; counters with a window from
/// their first increment (the user-code lockout).
struct KeptTables {
    values: Cache<String, Arc<Kept<String>>>,
    counts: Cache<String, Arc<Kept<AtomicU64>>>,
    cells: Cells,
    due: DueQueue,
}

/// How many kept values and counters each: past it the least used go (sessions and lockout
/// counts, not requests).
const KEPT_MAX: u64 = 100_000;

/// Shared copies of the few distinct client ids and scopes (bounded: past the limit a value is
/// simply not shared).
#[derive(Default)]
struct Interner(Mutex<HashSet<Arc<str>, Hasher>>);

impl Interner {
    const MAX: usize = 4096;

    fn get(&self, s: &str) -> Arc<str> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = set.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        if set.len() < Self::MAX {
            set.insert(Arc::clone(&a));
        }
        a
    }
}

/// Pending requests and refresh-token families in process memory.
pub struct MemoryStore {
    requests: Cache<IdHash, Arc<Entry>, Hasher>,
    /// Off the request path, so boxed.
    kept: Box<KeptTables>,
    families: Cache<String, Arc<Kept<Mutex<Family>>>>,
    live_families: Arc<AtomicU64>,
    live: Arc<AtomicU64>,
    capacity: u64,
    interned: Interner,
    waiters: Waiters,
    /// Registered clients: in memory, or in a file ([`MemoryStore::with_clients`]).
    clients: Box<ClientFile>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` requests; expired ones are remembered for `grace`.
    pub fn new(capacity: u64, grace: Duration) -> Self {
        let live = Arc::new(AtomicU64::new(0));
        let live_l = Arc::clone(&live);
        let requests = Cache::builder()
            .expire_after(PerEntryExpiry { grace })
            .eviction_listener(move |_k, _v, _cause| {
                live_l.fetch_sub(1, Ordering::Relaxed);
            })
            .build_with_hasher(Hasher::default());
        let live_families = Arc::new(AtomicU64::new(0));
        let live_f = Arc::clone(&live_families);
        let families = Cache::builder()
            .expire_after(KeptExpiry)
            .eviction_listener(move |_k, _v, _cause| {
                live_f.fetch_sub(1, Ordering::Relaxed);
            })
            .build();
        Self {
            kept: Box::new(KeptTables {
                values: Cache::builder()
                    .max_capacity(KEPT_MAX)
                    .expire_after(KeptExpiry)
                    .build(),
                counts: Cache::builder()
                    .max_capacity(KEPT_MAX)
                    .expire_after(KeptExpiry)
                    .build(),
                cells: Cells::default(),
                due: DueQueue::default(),
            }),
            families,
            live_families,
            requests,
            live,
            capacity,
            interned: Interner::default(),
            waiters: Waiters::default(),
            clients: Box::new(ClientFile::in_memory()),
        }
    }

    /// The same store, keeping registered clients in `clients` (a file, so that they survive a
    /// restart).
    pub fn with_clients(mut self, clients: ClientFile) -> Self {
        self.clients = Box::new(clients);
        self
    }

    /// Requests and their tombstones held now (what the capacity counts).
    pub fn held(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    fn reserve_slot(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn lock(e: &Entry) -> std::sync::MutexGuard<'_, State> {
        e.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live request a handle names, if the handle is its own.
    fn by_handle(&self, handle: &str) -> Option<(IdHash, Arc<Entry>)> {
        let key = handle_target(handle)?;
        let entry = self.requests.get(&key)?;
        entry.handle_is(handle).then_some((key, entry))
    }
}

impl RefreshStore for MemoryStore {
    async fn start_family(
        &self,
        family: &str,
        jti: &str,
        now_ms: u64,
        expires_at_ms: u64,
        idle_ms: u64,
    ) -> Result<(), StoreError> {
        let reserve = || {
            self.live_families
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.capacity).then_some(n + 1)
                })
                .is_ok()
        };
        if !reserve() {
            self.families.run_pending_tasks();
            if !reserve() {
                return Err(StoreError::Full);
            }
        }
        let f = Family {
            current: jti.to_owned(),
            last_used_ms: now_ms,
            idle_ms,
            revoked: false,
        };
        let ttl = Duration::from_millis(expires_at_ms.saturating_sub(now_ms));
        self.families.insert(
            family.to_owned(),
            Arc::new(Kept {
                value: Mutex::new(f),
                ttl,
            }),
        );
        Ok(())
    }

    async fn rotate(
        &self,
        family: &str,
        presented: &str,
        next: &str,
        now_ms: u64,
    ) -> Result<Rotation, StoreError> {
        let Some(entry) = self.families.get(family) else {
            return Ok(Rotation::Gone);
        };
        let mut f = entry.value.lock().unwrap_or_else(|p| p.into_inner());
        if f.revoked || now_ms.saturating_sub(f.last_used_ms) > f.idle_ms {
            f.revoked = true;
            return Ok(Rotation::Gone);
        }
        if f.current != presented {
            // A token of the family that is no longer current: the family is compromised.
            f.revoked = true;
            return Ok(Rotation::Reused);
        }
        f.current = next.to_owned();
        f.last_used_ms = now_ms;
        Ok(Rotation::Rotated)
    }
}

impl KeptStore for MemoryStore {
    async fn put_value(
        &self,
        kind: &str,
        key: &str,
        value: String,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let ttl = Duration::from_millis(ttl_ms.max(1));
        self.kept
            .values
            .insert(format!("{kind}:{key}"), Arc::new(Kept { value, ttl }));
        Ok(())
    }

    async fn take_value(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .kept
            .values
            .remove(&format!("{kind}:{key}"))
            .map(|kept| Arc::try_unwrap(kept).map_or_else(|k| k.value.clone(), |k| k.value)))
    }

    async fn count(
        &self,
        name: &str,
        key: &str,
        add_window_ms: Option<u64>,
    ) -> Result<u64, StoreError> {
        let key = format!("{name}:{key}");
        Ok(match add_window_ms {
            None => self
                .kept
                .counts
                .get(&key)
                .map_or(0, |n| n.value.load(Ordering::Relaxed)),
            Some(window) => {
                let n = self.kept.counts.get_with(key, || {
                    Arc::new(Kept {
                        value: AtomicU64::new(0),
                        ttl: Duration::from_millis(window.max(1)),
                    })
                });
                n.value.fetch_add(1, Ordering::Relaxed) + 1
            }
        })
    }
}

impl LimitStore for MemoryStore {
    async fn admit(
        &self,
        limit: &str,
        key: &str,
        now_ms: u64,
        interval_ms: u64,
        tolerance_ms: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        Ok(self
            .kept
            .cells
            .admit(limit, key, now_ms, interval_ms, tolerance_ms))
    }
}

impl ExpiryQueue for MemoryStore {
    async fn watch_expiry(&self, id: &AuthReqId, expires_at_ms: u64) -> Result<(), StoreError> {
        self.kept.due.watch(digest16(id.as_str()), expires_at_ms);
        Ok(())
    }

    async fn claim_expired(
        &self,
        now_ms: u64,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<PendingRequest>, StoreError> {
        let mut out = Vec::new();
        for h in self.kept.due.claim(now_ms, max, lease_ms) {
            match self.requests.get(&h) {
                Some(e) => out.push(e.request()),
                None => self.kept.due.settle(&h),
            }
        }
        Ok(out)
    }

    async fn settle_expired(&self, id: &AuthReqId) -> Result<(), StoreError> {
        self.kept.due.settle(&digest16(id.as_str()));
        Ok(())
    }
}

impl ClientStore for MemoryStore {
    async fn client(&self, id: &str) -> Result<Option<Arc<RegisteredClient>>, StoreError> {
        self.clients.client(id).await
    }
    async fn put_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        self.clients.put_client(client).await
    }
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        self.clients.delete_client(id).await
    }
}

impl PendingStore for MemoryStore {
    async fn create(&self, req: PendingRequest) -> Result<(), StoreError> {
        let (Some(id), Some(handle)) = (raw32(req.id.as_str()), raw32(&req.handle)) else {
            return Err(StoreError::Backend(
                "ids must be 32 random bytes in base64url".into(),
            ));
        };
        let texts = Texts::new(
            &req.subject,
            [
                req.acr_values.as_deref(),
                req.binding_message.as_deref(),
                req.login_hint.as_deref(),
                req.callback.as_ref().map(|c| c.token.as_str()),
            ],
        )
        .ok_or_else(|| StoreError::Backend("request too large".into()))?;
        if !self.reserve_slot() {
            // Expired entries may still be counted until moka's housekeeping runs.
            self.requests.run_pending_tasks();
            if !self.reserve_slot() {
                return Err(StoreError::Full);
            }
        }
        let entry = Arc::new(Entry {
            id,
            handle,
            client_id: self.interned.get(&req.client_id),
            scope: self.interned.get(req.scope.as_str()),
            texts,
            created_at_ms: req.created_at_ms,
            expires_at_ms: req.expires_at_ms,
            interval_secs: req.interval_secs,
            endpoint: req
                .callback
                .as_ref()
                .map(|c| self.interned.get(c.endpoint.as_str())),
            push: req
                .callback
                .as_ref()
                .is_some_and(|c| c.mode == CallbackMode::Push),
            trace: req.trace,
            state: Mutex::new(State {
                status: Status::Pending,
                delivery: None,
                last_poll_ms: None,
                interval_secs: req.interval_secs,
            }),
        });
        self.requests.insert(digest16(req.id.as_str()), entry);
        Ok(())
    }

    async fn poll(
        &self,
        id: &str,
        client_id: &str,
        now_ms: u64,
        pacing: Pacing,
    ) -> Result<PollOutcome, StoreError> {
        let key = digest16(id);
        let Some(entry) = self.requests.get(&key) else {
            return Ok(PollOutcome::Unknown);
        };
        // TOK-02: another client's id is indistinguishable from an unknown one, and its poll
        // leaves no trace on the request.
        if *entry.client_id != *client_id {
            return Ok(PollOutcome::Unknown);
        }
        let mut st = Self::lock(&entry);
        let outcome = match std::mem::replace(&mut st.status, Status::Done) {
            // Taken already (by a poll, or for a push whose delivery state stays readable).
            Status::Done => return Ok(PollOutcome::Unknown),
            _ if now_ms >= entry.expires_at_ms => PollOutcome::Expired,
            Status::Approved(a) => PollOutcome::Approved(Box::new(entry.request()), *a),
            Status::Denied => PollOutcome::Denied,
            Status::Pending => {
                st.status = Status::Pending;
                let too_fast = pacing == Pacing::Checked
                    && st.last_poll_ms.map(u64::from).is_some_and(|last| {
                        now_ms.saturating_sub(last) < u64::from(st.interval_secs) * 1000
                    });
                st.last_poll_ms = match pacing {
                    Pacing::Checked => std::num::NonZeroU64::new(now_ms),
                    Pacing::Held => None,
                };
                if too_fast {
                    // TOK-05 / GW-05: the interval grows by 5 s and the raised one is enforced.
                    st.interval_secs += 5;
                    PollOutcome::SlowDown {
                        interval_secs: st.interval_secs,
                    }
                } else {
                    PollOutcome::Pending
                }
            }
        };
        drop(st);
        if !matches!(outcome, PollOutcome::Pending | PollOutcome::SlowDown { .. }) {
            self.requests.invalidate(&key);
        }
        Ok(outcome)
    }

    async fn take(&self, id: &str, now_ms: u64) -> Result<PollOutcome, StoreError> {
        let Some(entry) = self.requests.get(&digest16(id)) else {
            return Ok(PollOutcome::Unknown);
        };
        let mut st = Self::lock(&entry);
        Ok(match std::mem::replace(&mut st.status, Status::Done) {
            Status::Approved(a) => PollOutcome::Approved(Box::new(entry.request()), *a),
            Status::Denied => PollOutcome::Denied,
            // The expiry is taken once too (it stays `Done`): one `expired_token` push.
            Status::Pending if now_ms >= entry.expires_at_ms => PollOutcome::Expired,
            Status::Pending => {
                st.status = Status::Pending;
                PollOutcome::Pending
            }
            Status::Done => PollOutcome::Unknown,
        })
    }

    async fn resolve(
        &self,
        handle: &str,
        decision: Decision,
        now_ms: u64,
    ) -> Result<PendingRequest, ResolveError> {
        let (key, entry) = self.by_handle(handle).ok_or(ResolveError::NotFound)?;
        let mut st = Self::lock(&entry);
        if !matches!(st.status, Status::Pending) {
            return Err(ResolveError::NotFound);
        }
        if now_ms >= entry.expires_at_ms {
            return Err(ResolveError::Expired);
        }
        st.status = match decision {
            Decision::Approved(a) => Status::Approved(Box::new(a)),
            Decision::Denied => Status::Denied,
        };
        drop(st);
        self.waiters.wake(&key);
        Ok(entry.request())
    }

    async fn decided(&self, id: &str, now_ms: u64) {
        let key = digest16(id);
        let pending = async {
            let entry = self.requests.get(&key)?;
            matches!(Self::lock(&entry).status, Status::Pending).then_some(entry.expires_at_ms)
        };
        self.waiters.until_decided(key, now_ms, pending).await;
    }

    async fn view(&self, handle: &str, now_ms: u64) -> Result<Option<PendingRequest>, StoreError> {
        Ok(self.by_handle(handle).and_then(|(_, entry)| {
            let st = Self::lock(&entry);
            (matches!(st.status, Status::Pending) && now_ms < entry.expires_at_ms)
                .then(|| entry.request())
        }))
    }

    async fn cancel(&self, id: &AuthReqId) -> Result<(), StoreError> {
        let key = digest16(id.as_str());
        if self.requests.remove(&key).is_some() {
            self.waiters.wake(&key);
        }
        Ok(())
    }

    async fn record_delivery(&self, id: &AuthReqId, delivery: Delivery) -> Result<(), StoreError> {
        if let Some(entry) = self.requests.get(&digest16(id.as_str())) {
            Self::lock(&entry).delivery = match delivery {
                Delivery::Pending => None,
                d => Some(Box::new(d)),
            };
        }
        Ok(())
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let entry = self.requests.get(&digest16(id));
        Ok(entry.map(|e| {
            Self::lock(&e)
                .delivery
                .as_deref()
                .cloned()
                .unwrap_or(Delivery::Pending)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: u64) -> MemoryStore {
        MemoryStore::new(capacity, Duration::from_secs(60))
    }

    #[test]
    fn texts_keep_every_field_apart() {
        let fields = [Some("loa2 loa3"), Some("1234"), Some(""), Some("tök-€n")];
        for mask in 0..16u8 {
            let pick: [Option<&str>; 4] =
                std::array::from_fn(|i| fields[i].filter(|_| mask & (1 << i) != 0));
            for subject in ["", "248289761001", "ü"] {
                let t = Texts::new(subject, pick).unwrap();
                assert_eq!(t.subject(), subject);
                for (i, want) in pick.iter().enumerate() {
                    assert_eq!(t.optional(i), *want, "mask {mask:04b}, field {i}");
                }
            }
        }
    }

    #[tokio::test]
    async fn kept_values_on_the_memory_store() {
        let s = super::super::Store::Memory(store(10));
        super::super::contract::kept_values(&s, &s).await;
    }

    #[tokio::test]
    async fn contract_memory_store() {
        super::super::contract::run_all(|cap| async move { store(cap) }).await;
        super::super::contract::run_refresh(|cap| async move { store(cap) }).await;
        super::super::contract::run_clients(|| async move { store(100) }).await;
        super::super::contract::run_limits(|| async move { store(100) }).await;
        let s = Arc::new(store(100));
        super::super::contract::expiries_are_claimed_once(Arc::clone(&s), s).await;
    }
}
