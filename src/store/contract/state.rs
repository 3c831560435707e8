//! The contract of the other kinds of state every backend keeps: short-lived values and
//! counters, registered clients, rate-limit cells and the expiry queue.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use super::super::{PendingStore, PollOutcome};
use super::{T0, sample};
use crate::protocol::AuthReqId;

/// Issue 12, item 2: the store's short-lived values and counters, through two handles on one
/// store (two replicas' instances of a shared one; the same memory store twice): a login
/// session kept through one is taken through the other, once; a counter (the user-code
/// lockout) counts every handle's increments and ends with its window.
pub async fn kept_values<S: super::super::KeptStore>(a: &S, b: &S) {
    a.put_value("login", "state-1", "{\"x\":1}".into(), 60_000)
        .await
        .unwrap();
    assert_eq!(
        b.take_value("login", "state-1").await.unwrap().as_deref(),
        Some("{\"x\":1}")
    );
    assert_eq!(a.take_value("login", "state-1").await.unwrap(), None);
    for i in 1..=3u64 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(s.count("uc", "alice", Some(60_000)).await.unwrap(), i);
    }
    assert_eq!(a.count("uc", "alice", None).await.unwrap(), 3);
    assert_eq!(b.count("uc", "bob", None).await.unwrap(), 0);
    // A 1 ms window: gone once it has passed (waited for, not slept).
    a.count("uc", "carol", Some(1)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut gone = false;
    while !gone && std::time::Instant::now() < deadline {
        gone = a.count("uc", "carol", None).await.unwrap() == 0;
        tokio::task::yield_now().await;
    }
    assert!(gone, "the window ended the count");
}

/// A registered client with id `id`, a secret and a registration access token (`rat-{id}`).
pub fn registered(id: &str) -> super::super::RegisteredClient {
    use crate::domain::sha256;
    let mut metadata = serde_json::Map::new();
    metadata.insert("client_name".into(), format!("client {id}").into());
    metadata.insert(
        "grant_types".into(),
        serde_json::json!([crate::protocol::GRANT_TYPE_CIBA]),
    );
    super::super::RegisteredClient {
        client_id: id.to_owned(),
        metadata,
        secret_sha256: Some(sha256(&format!("secret-{id}"))),
        access_token_sha256: sha256(&format!("rat-{id}")),
        issued_at: T0 / 1000,
        version: 1,
    }
}

/// Runs every registered-client check (RFC 7591/7592); `make()` must return a fresh, empty
/// store.
pub async fn run_clients<S, F, Fut>(make: F)
where
    S: super::super::ClientStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let s = make().await;
    // Unknown until registered; read back exactly as written.
    assert_eq!(s.client("c1").await.unwrap(), None);
    let c1 = registered("c1");
    s.put_client(c1.clone()).await.unwrap();
    assert_eq!(s.client("c1").await.unwrap().as_deref(), Some(&c1));
    // RCM-01: an update replaces the whole record.
    let mut updated = registered("c1");
    updated.metadata.remove("client_name");
    updated.version = 2;
    s.put_client(updated.clone()).await.unwrap();
    assert_eq!(s.client("c1").await.unwrap().as_deref(), Some(&updated));
    // A deletion is seen at once; deleting twice finds nothing the second time.
    s.put_client(registered("c2")).await.unwrap();
    assert!(s.delete_client("c1").await.unwrap());
    assert!(!s.delete_client("c1").await.unwrap());
    assert_eq!(s.client("c1").await.unwrap(), None);
    assert!(s.client("c2").await.unwrap().is_some());
    // Concurrent registrations are all kept.
    let s = Arc::new(make().await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.put_client(registered(&format!("r{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..16 {
        assert!(s.client(&format!("r{i}")).await.unwrap().is_some(), "r{i}");
    }
}

/// Issue 20: two handles on one shared store (two replicas): a registration, an update and a
/// deletion through one are seen through the other at once.
pub async fn clients_are_shared(a: &super::super::Store, b: &super::super::Store) {
    use super::super::ClientStore as _;
    let c = registered("shared-1");
    a.put_client(c.clone()).await.unwrap();
    assert_eq!(b.client("shared-1").await.unwrap().as_deref(), Some(&c));
    let mut updated = c.clone();
    updated.version = 9;
    b.put_client(updated.clone()).await.unwrap();
    assert_eq!(
        a.client("shared-1").await.unwrap().as_deref(),
        Some(&updated)
    );
    assert!(a.delete_client("shared-1").await.unwrap());
    assert_eq!(b.client("shared-1").await.unwrap(), None);
}

/// Runs every rate-limit check (GCRA, GW-07) on one store; `make()` must return a fresh,
/// empty store. A limit of 5 per 60 s: a request costs 12 s, the burst runs 48 s ahead.
pub async fn run_limits<S, F, Fut>(make: F)
where
    S: super::super::LimitStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    const INTERVAL: u64 = 12_000;
    const TOLERANCE: u64 = 48_000;
    let s = make().await;
    let admit = |key: &'static str, now: u64| s.admit("t", key, now, INTERVAL, TOLERANCE);
    // A burst, then one per interval: the sixth waits for the first to drain.
    for _ in 0..5 {
        assert_eq!(admit("alice", T0).await.unwrap(), Ok(()));
    }
    assert_eq!(admit("alice", T0).await.unwrap(), Err(12));
    // Refusals are free: they do not push the wait out.
    for _ in 0..10 {
        assert_eq!(admit("alice", T0).await.unwrap(), Err(12));
    }
    assert_eq!(admit("alice", T0 + 11_000).await.unwrap(), Err(1));
    assert_eq!(admit("alice", T0 + 12_000).await.unwrap(), Ok(()));
    assert_eq!(admit("alice", T0 + 12_000).await.unwrap(), Err(12));
    // A whole window later the burst is back; keys and limits are independent.
    for _ in 0..5 {
        assert_eq!(admit("alice", T0 + 80_000).await.unwrap(), Ok(()));
    }
    assert_eq!(admit("bob", T0).await.unwrap(), Ok(()));
    assert_eq!(
        s.admit("other", "alice", T0 + 12_000, INTERVAL, TOLERANCE)
            .await
            .unwrap(),
        Ok(())
    );
    // Concurrent requests never exceed the burst.
    let s = Arc::new(make().await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..20 {
                    if s.admit("t", "k", T0, INTERVAL, TOLERANCE)
                        .await
                        .unwrap()
                        .is_ok()
                    {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(admitted, 5);
}

/// The ids of up to `max` expiries due at `now` that `s` claims (for `lease` ms).
async fn claim<S: super::super::ExpiryQueue>(
    s: &S,
    now: u64,
    max: usize,
    lease: u64,
) -> Vec<String> {
    s.claim_expired(now, max, lease)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id.as_str().to_owned())
        .collect()
}

/// Issue 12, items 2–3, PUSH-ERR-01: a push request's expiry is kept in the store for every
/// sweep (every replica's, for a shared store; `a` and `b` are two handles on one store). Two
/// instances sweeping at once claim every due expiry, each exactly once;
/// a claim not settled within its lease (its replica died) is claimed again, a settled one
/// never; a request gone from the store is skipped; and `take` hands an expiry out once.
pub async fn expiries_are_claimed_once<S>(a: Arc<S>, b: Arc<S>)
where
    S: PendingStore + super::super::ExpiryQueue,
{
    const LEASE: u64 = 10_000;
    let mut ids = HashSet::new();
    let (mut first, mut last) = (u64::MAX, 0);
    for i in 0..40 {
        let mut r = sample("c1");
        r.expires_at_ms = r.created_at_ms + 1_000 + i;
        (first, last) = (first.min(r.expires_at_ms), r.expires_at_ms);
        a.create(r.clone()).await.unwrap();
        b.watch_expiry(&r.id, r.expires_at_ms).await.unwrap();
        ids.insert(r.id.as_str().to_owned());
    }
    // One more, removed before it expires (its user could not be reached).
    let mut gone = sample("c1");
    gone.expires_at_ms = first;
    a.create(gone.clone()).await.unwrap();
    a.watch_expiry(&gone.id, first).await.unwrap();
    a.cancel(&gone.id).await.unwrap();

    assert!(
        claim(&*a, first - 1, 100, LEASE).await.is_empty(),
        "nothing is due yet"
    );
    // Both sweep at once, in small batches.
    let sweep = |s: Arc<S>| async move {
        let mut got = Vec::new();
        // 40 expiries in batches of 7: a sweep that keeps finding some claims twice.
        for _ in 0..7 {
            let batch = claim(&*s, last, 7, LEASE).await;
            if batch.is_empty() {
                return got;
            }
            got.extend(batch);
        }
        panic!("claimed again and again: {got:?}");
    };
    let (by_a, by_b) = tokio::join!(sweep(Arc::clone(&a)), sweep(Arc::clone(&b)));
    let (set_a, set_b): (HashSet<_>, HashSet<_>) = (
        by_a.iter().cloned().collect(),
        by_b.iter().cloned().collect(),
    );
    assert_eq!(
        set_a.len() + set_b.len(),
        40,
        "each claimed once: {by_a:?} {by_b:?}"
    );
    assert!(set_a.is_disjoint(&set_b));
    assert_eq!(
        &set_a | &set_b,
        ids,
        "every expiry claimed, the removed request skipped"
    );

    // A settles its claims; B "dies" with its own unsettled. Within the lease nobody claims
    // again; after it, B's come back (to A), A's never do.
    for id in &by_a {
        let id = AuthReqId::from_wire(id);
        assert_eq!(
            a.take(id.as_str(), last).await.unwrap(),
            PollOutcome::Expired
        );
        a.settle_expired(&id).await.unwrap();
    }
    assert!(claim(&*a, last + LEASE - 1, 100, LEASE).await.is_empty());
    let again: HashSet<_> = claim(&*a, last + LEASE, 100, LEASE)
        .await
        .into_iter()
        .collect();
    assert_eq!(again, set_b);
    // The expiry is handed out once, whichever instance asks.
    for id in &by_b {
        assert_eq!(a.take(id, last).await.unwrap(), PollOutcome::Expired);
        assert_eq!(b.take(id, last).await.unwrap(), PollOutcome::Unknown);
    }
}
