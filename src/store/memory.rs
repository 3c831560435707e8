//! The in-process store on moka. Each entry carries its own lifetime (plus a short tombstone
//! period so that late polls learn `expired_token`), and a counter of live entries enforces the
//! capacity by refusing new requests: moka's own size-based eviction is never used, because it
//! would silently drop live requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moka::sync::Cache;

use super::{
    Approval, Decision, Delivery, Pacing, PendingRequest, PendingStore, PollOutcome, RefreshStore,
    ResolveError, Rotation, StoreError,
};
use crate::protocol::AuthReqId;

#[derive(Debug)]
enum Status {
    Pending,
    Approved(Approval),
    Denied,
    /// Taken by a poll; kept only until the entry is invalidated.
    Done,
}

#[derive(Debug)]
struct State {
    status: Status,
    delivery: Delivery,
    last_poll_ms: Option<u64>,
    interval_secs: u32,
}

#[derive(Debug)]
struct Entry {
    req: PendingRequest,
    state: Mutex<State>,
    ttl: Duration,
    /// Wakes the polls held on this request when it is decided or removed.
    decided: tokio::sync::Notify,
}

/// Ids and handles are 32 CSPRNG bytes in base64url; the store keys on the raw bytes: no key
/// allocation, and cheap re-hashing when moka's table resizes under churn.
type Key = [u8; 32];

fn key(s: &str) -> Option<Key> {
    let mut k = [0u8; 32];
    (s.len() == 43 && URL_SAFE_NO_PAD.decode_slice(s, &mut k) == Ok(32)).then_some(k)
}

struct PerEntryExpiry;

impl moka::Expiry<Key, Arc<Entry>> for PerEntryExpiry {
    fn expire_after_create(&self, _k: &Key, v: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

struct HandleExpiry;

impl moka::Expiry<Key, (Key, Duration)> for HandleExpiry {
    fn expire_after_create(
        &self,
        _k: &Key,
        v: &(Key, Duration),
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.1)
    }
}

/// Keys are ids the gateway generates from a CSPRNG, never chosen by clients, so a fast seeded
/// hasher is safe here.
type Hasher = foldhash::fast::RandomState;

/// One refresh-token family.
#[derive(Debug)]
struct Family {
    current: String,
    last_used_ms: u64,
    idle_ms: u64,
    revoked: bool,
    ttl: Duration,
}

struct FamilyExpiry;

impl moka::Expiry<String, Arc<Mutex<Family>>> for FamilyExpiry {
    fn expire_after_create(
        &self,
        _k: &String,
        v: &Arc<Mutex<Family>>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.lock().unwrap_or_else(|p| p.into_inner()).ttl)
    }
}

/// Pending requests and refresh-token families in process memory.
pub struct MemoryStore {
    requests: Cache<Key, Arc<Entry>, Hasher>,
    families: Cache<String, Arc<Mutex<Family>>>,
    live_families: Arc<AtomicU64>,
    handles: Cache<Key, (Key, Duration), Hasher>,
    live: Arc<AtomicU64>,
    capacity: u64,
    grace: Duration,
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
            .expire_after(PerEntryExpiry)
            .eviction_listener(move |_k, _v, _cause| {
                live_l.fetch_sub(1, Ordering::Relaxed);
            })
            .build_with_hasher(Hasher::default());
        let handles = Cache::builder()
            .expire_after(HandleExpiry)
            .build_with_hasher(Hasher::default());
        let live_families = Arc::new(AtomicU64::new(0));
        let live_f = Arc::clone(&live_families);
        let families = Cache::builder()
            .expire_after(FamilyExpiry)
            .eviction_listener(move |_k, _v, _cause| {
                live_f.fetch_sub(1, Ordering::Relaxed);
            })
            .build();
        Self {
            families,
            live_families,
            requests,
            handles,
            live,
            capacity,
            grace,
        }
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
            ttl: Duration::from_millis(expires_at_ms.saturating_sub(now_ms)),
        };
        self.families
            .insert(family.to_owned(), Arc::new(Mutex::new(f)));
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
        let mut f = entry.lock().unwrap_or_else(|p| p.into_inner());
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

impl PendingStore for MemoryStore {
    async fn create(&self, req: PendingRequest) -> Result<(), StoreError> {
        if !self.reserve_slot() {
            // Expired entries may still be counted until moka's housekeeping runs.
            self.requests.run_pending_tasks();
            if !self.reserve_slot() {
                return Err(StoreError::Full);
            }
        }
        let (Some(id), Some(handle)) = (key(req.id.as_str()), key(&req.handle)) else {
            return Err(StoreError::Backend(
                "ids must be 32 random bytes in base64url".into(),
            ));
        };
        let lifetime = Duration::from_millis(req.expires_at_ms.saturating_sub(req.created_at_ms));
        let entry = Arc::new(Entry {
            state: Mutex::new(State {
                status: Status::Pending,
                delivery: Delivery::Pending,
                last_poll_ms: None,
                interval_secs: req.interval_secs,
            }),
            ttl: lifetime + self.grace,
            decided: tokio::sync::Notify::new(),
            req,
        });
        self.handles.insert(handle, (id, lifetime));
        self.requests.insert(id, entry);
        Ok(())
    }

    async fn poll(
        &self,
        id: &str,
        client_id: &str,
        now_ms: u64,
        pacing: Pacing,
    ) -> Result<PollOutcome, StoreError> {
        let Some(id) = key(id) else {
            return Ok(PollOutcome::Unknown);
        };
        let Some(entry) = self.requests.get(&id) else {
            return Ok(PollOutcome::Unknown);
        };
        // TOK-02: another client's id is indistinguishable from an unknown one, and its poll
        // leaves no trace on the request.
        if entry.req.client_id != client_id {
            return Ok(PollOutcome::Unknown);
        }
        let mut st = Self::lock(&entry);
        let outcome = match std::mem::replace(&mut st.status, Status::Done) {
            // Taken already (by a poll, or for a push whose delivery state stays readable).
            Status::Done => return Ok(PollOutcome::Unknown),
            _ if now_ms >= entry.req.expires_at_ms => PollOutcome::Expired,
            Status::Approved(a) => PollOutcome::Approved(Box::new(entry.req.clone()), a),
            Status::Denied => PollOutcome::Denied,
            Status::Pending => {
                st.status = Status::Pending;
                let too_fast = pacing == Pacing::Checked
                    && st.last_poll_ms.is_some_and(|last| {
                        now_ms.saturating_sub(last) < u64::from(st.interval_secs) * 1000
                    });
                st.last_poll_ms = match pacing {
                    Pacing::Checked => Some(now_ms),
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
            self.requests.invalidate(&id);
            if let Some(h) = key(&entry.req.handle) {
                self.handles.invalidate(&h);
            }
        }
        Ok(outcome)
    }

    async fn take(&self, id: &str, now_ms: u64) -> Result<PollOutcome, StoreError> {
        let Some(entry) = key(id).and_then(|k| self.requests.get(&k)) else {
            return Ok(PollOutcome::Unknown);
        };
        let mut st = Self::lock(&entry);
        Ok(match std::mem::replace(&mut st.status, Status::Done) {
            Status::Approved(a) => PollOutcome::Approved(Box::new(entry.req.clone()), a),
            Status::Denied => PollOutcome::Denied,
            Status::Pending => {
                st.status = Status::Pending;
                if now_ms >= entry.req.expires_at_ms {
                    PollOutcome::Expired
                } else {
                    PollOutcome::Pending
                }
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
        let handle = key(handle).ok_or(ResolveError::NotFound)?;
        let (id, _) = self.handles.get(&handle).ok_or(ResolveError::NotFound)?;
        let entry = self.requests.get(&id).ok_or(ResolveError::NotFound)?;
        let mut st = Self::lock(&entry);
        if !matches!(st.status, Status::Pending) {
            return Err(ResolveError::NotFound);
        }
        if now_ms >= entry.req.expires_at_ms {
            return Err(ResolveError::Expired);
        }
        st.status = match decision {
            Decision::Approved(a) => Status::Approved(a),
            Decision::Denied => Status::Denied,
        };
        drop(st);
        entry.decided.notify_waiters();
        self.handles.invalidate(&handle);
        Ok(entry.req.clone())
    }

    async fn decided(&self, id: &str, now_ms: u64) {
        let Some(entry) = key(id).and_then(|k| self.requests.get(&k)) else {
            return;
        };
        // Registered before the state is read, so a decision in between is not missed.
        let woken = entry.decided.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if !matches!(Self::lock(&entry).status, Status::Pending) {
            return;
        }
        let left = Duration::from_millis(entry.req.expires_at_ms.saturating_sub(now_ms));
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(left) => {}
        }
    }

    async fn view(&self, handle: &str, now_ms: u64) -> Result<Option<PendingRequest>, StoreError> {
        let entry = key(handle)
            .and_then(|h| self.handles.get(&h))
            .and_then(|(id, _)| self.requests.get(&id));
        Ok(entry.and_then(|entry| {
            let st = Self::lock(&entry);
            (matches!(st.status, Status::Pending) && now_ms < entry.req.expires_at_ms)
                .then(|| entry.req.clone())
        }))
    }

    async fn cancel(&self, id: &AuthReqId) -> Result<(), StoreError> {
        let Some(id) = key(id.as_str()) else {
            return Ok(());
        };
        if let Some(entry) = self.requests.remove(&id) {
            entry.decided.notify_waiters();
            if let Some(h) = key(&entry.req.handle) {
                self.handles.invalidate(&h);
            }
        }
        Ok(())
    }

    async fn record_delivery(&self, id: &AuthReqId, delivery: Delivery) -> Result<(), StoreError> {
        if let Some(entry) = key(id.as_str()).and_then(|k| self.requests.get(&k)) {
            Self::lock(&entry).delivery = delivery;
        }
        Ok(())
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let entry = key(id).and_then(|k| self.requests.get(&k));
        Ok(entry.map(|e| Self::lock(&e).delivery.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: u64) -> MemoryStore {
        MemoryStore::new(capacity, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn contract_memory_store() {
        super::super::contract::run_all(|cap| async move { store(cap) }).await;
        super::super::contract::run_refresh(|cap| async move { store(cap) }).await;
    }
}
