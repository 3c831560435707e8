//! The contract every [`PendingStore`] backend must meet, as a test suite a backend calls with a
//! factory for fresh, empty stores. Each check cites the requirement it proves.

use std::future::Future;
use std::sync::Arc;

use super::{
    Approval, Decision, Delivery, Pacing, PendingRequest, PendingStore, PollOutcome, ResolveError,
    StoreError,
};
use crate::domain::{Callback, CallbackMode};
use crate::protocol::{AuthReqId, NotificationToken, Scope};

mod state;
pub use state::{
    clients_are_shared, expiries_are_claimed_once, kept_values, registered, run_clients, run_limits,
};

const T0: u64 = 1_700_000_000_000;

/// A pending request for `client`, created at `T0`, living 60 s, polled every 5 s.
pub fn sample(client: &str) -> PendingRequest {
    let id = AuthReqId::generate();
    PendingRequest {
        handle: crate::protocol::approval_handle(&id),
        id,
        client_id: client.to_owned(),
        subject: "user-1".into(),
        scope: Scope::parse("openid profile").expect("valid scope"),
        acr_values: None,
        binding_message: Some("1234".into()),
        login_hint: Some("user-1".into()),
        created_at_ms: T0,
        expires_at_ms: T0 + 60_000,
        interval_secs: 5,
        callback: None,
        trace: Some(crate::trace::TraceContext::root()),
    }
}

fn approval() -> Approval {
    Approval {
        auth_time: T0 / 1000 + 1,
        ..Approval::default()
    }
}

/// Runs every contract check; `make(capacity)` must return a fresh, empty store.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: PendingStore,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = S>,
{
    pending_then_slow_down(make(100).await).await;
    approved_is_taken_once(make(100).await).await;
    foreign_client_sees_unknown(make(100).await).await;
    denied_once(make(100).await).await;
    expiry(make(100).await).await;
    resolve_once(make(100).await).await;
    capacity_refuses_without_evicting(make(2).await).await;
    cancel_removes(make(100).await).await;
    concurrent_polls_take_once(Arc::new(make(100).await)).await;
    delivery_state_is_part_of_the_request(make(100).await).await;
    held_poll_paces_the_client(make(100).await).await;
    decided_wakes_the_held_polls(make(100).await).await;
    push_takes_the_decision_once(make(100).await).await;
    callback_is_kept(make(100).await).await;
}

/// RCM-03: a ping or push request keeps the mode, endpoint and token it was accepted with;
/// the request the store hands back (to the page, to the decision) carries them, and the
/// trace context of the request that asked (the notification goes on in its trace).
async fn callback_is_kept<S: PendingStore>(s: S) {
    for mode in [CallbackMode::Ping, CallbackMode::Push] {
        let mut r = sample("c1");
        r.callback = Some(Callback {
            mode,
            endpoint: "https://client.example/cb?x=1".parse().expect("a URL"),
            token: NotificationToken::parse("8d67dc78-7faa-4d41").expect("a token"),
        });
        s.create(r.clone()).await.unwrap();
        assert_eq!(s.view(&r.handle, T0).await.unwrap().as_ref(), Some(&r));
        let decided = s
            .resolve(&r.handle, Decision::Denied, T0 + 1)
            .await
            .unwrap();
        assert_eq!(decided.callback, r.callback);
        assert_eq!(decided.trace, r.trace);
    }
}

/// Runs every refresh-family check (RFC 9700 §4.14); `make(capacity)` as for [`run_all`].
pub async fn run_refresh<S, F, Fut>(make: F)
where
    S: super::RefreshStore,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = S>,
{
    use super::Rotation;
    let s = make(100).await;
    // Rotation: the current token rotates once; presenting it again revokes the family,
    // including the token it rotated to.
    s.start_family("f1", "t1", T0, T0 + 3_600_000, 600_000)
        .await
        .unwrap();
    assert_eq!(
        s.rotate("f1", "t1", "t2", T0 + 1).await.unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        s.rotate("f1", "t2", "t3", T0 + 2).await.unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        s.rotate("f1", "t1", "t4", T0 + 3).await.unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        s.rotate("f1", "t3", "t5", T0 + 4).await.unwrap(),
        Rotation::Gone
    );
    assert_eq!(
        s.rotate("nope", "t1", "t2", T0).await.unwrap(),
        Rotation::Gone
    );
    // Idle too long: gone.
    s.start_family("f2", "a1", T0, T0 + 3_600_000, 1000)
        .await
        .unwrap();
    assert_eq!(
        s.rotate("f2", "a1", "a2", T0 + 500).await.unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        s.rotate("f2", "a2", "a3", T0 + 1501).await.unwrap(),
        Rotation::Gone
    );
    // Capacity refuses new families instead of evicting live ones.
    let s = make(1).await;
    s.start_family("g1", "x", T0, T0 + 3_600_000, 600_000)
        .await
        .unwrap();
    assert_eq!(
        s.start_family("g2", "y", T0, T0 + 3_600_000, 600_000).await,
        Err(StoreError::Full)
    );
    assert_eq!(
        s.rotate("g1", "x", "x2", T0 + 1).await.unwrap(),
        Rotation::Rotated
    );
}

/// PUSH-01: the decision of a push request is taken once for delivery; nothing is redeemable
/// afterwards, and the request stays to carry its delivery state.
async fn push_takes_the_decision_once<S: PendingStore>(s: S) {
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r).await.unwrap();
    assert_eq!(s.take(&id, T0).await.unwrap(), PollOutcome::Pending);
    s.resolve(&handle, Decision::Approved(approval()), T0 + 1)
        .await
        .unwrap();
    assert!(matches!(
        s.take(&id, T0 + 2).await.unwrap(),
        PollOutcome::Approved(..)
    ));
    assert_eq!(s.take(&id, T0 + 3).await.unwrap(), PollOutcome::Unknown);
    assert_eq!(
        s.poll(&id, "c1", T0 + 10_000, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Unknown
    );
    s.record_delivery(&r_id(&id), Delivery::Delivered { attempts: 1 })
        .await
        .unwrap();
    assert_eq!(
        s.delivery(&id).await.unwrap(),
        Some(Delivery::Delivered { attempts: 1 })
    );
    let d = sample("c1");
    let (did, dh) = (d.id.as_str().to_owned(), d.handle.clone());
    s.create(d).await.unwrap();
    s.resolve(&dh, Decision::Denied, T0 + 1).await.unwrap();
    assert_eq!(s.take(&did, T0 + 2).await.unwrap(), PollOutcome::Denied);
    assert_eq!(s.take(&did, T0 + 3).await.unwrap(), PollOutcome::Unknown);
    // PUSH-ERR-01: an undecided request's expiry is taken once too (one `expired_token` push,
    // however many replicas ask), and no decision follows it.
    let x = sample("c1");
    let (xid, xh, expiry) = (x.id.as_str().to_owned(), x.handle.clone(), x.expires_at_ms);
    s.create(x).await.unwrap();
    assert_eq!(
        s.take(&xid, expiry - 1).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(s.take(&xid, expiry).await.unwrap(), PollOutcome::Expired);
    assert_eq!(
        s.take(&xid, expiry + 1).await.unwrap(),
        PollOutcome::Unknown
    );
    assert!(
        s.resolve(&xh, Decision::Denied, expiry + 2).await.is_err(),
        "nothing decides a request whose expiry was taken"
    );
}

fn r_id(id: &str) -> AuthReqId {
    AuthReqId::from_wire(id)
}

/// Long polling (issue: delivery modes, item 4): the answer to a held poll is never
/// `slow_down`, and the poll right after it is not counted against it; polls that were not
/// held are still paced.
async fn held_poll_paces_the_client<S: PendingStore>(s: S) {
    let r = sample("c1");
    let id = r.id.as_str().to_owned();
    s.create(r).await.unwrap();
    let poll = |at, pacing| s.poll(&id, "c1", at, pacing);
    assert_eq!(
        poll(T0, Pacing::Checked).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        poll(T0 + 1000, Pacing::Held).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        poll(T0 + 1100, Pacing::Checked).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        poll(T0 + 1200, Pacing::Checked).await.unwrap(),
        PollOutcome::SlowDown { interval_secs: 10 }
    );
}

/// The wake-up held polls wait on: pending until the request is decided (or removed), then
/// complete; at once for a request that is not pending. `resolve` hands back the request.
/// (A shared backend reads the state over the network, so "complete" is awaited with a
/// generous deadline and "still waiting" is checked for a moment: neither can pass wrongly.)
async fn decided_wakes_the_held_polls<S: PendingStore>(s: S) {
    use std::time::Duration;
    async fn completes(f: impl Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .is_ok()
    }
    async fn waits(f: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        tokio::time::timeout(Duration::from_millis(200), f)
            .await
            .is_err()
    }
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r.clone()).await.unwrap();
    let mut first = Box::pin(s.decided(&id, T0));
    let mut second = Box::pin(s.decided(&id, T0));
    assert!(waits(&mut first).await, "woken before a decision");
    assert!(waits(&mut second).await);
    let decided = s.resolve(&handle, Decision::Denied, T0 + 1).await.unwrap();
    assert_eq!(
        (decided.id.as_str(), decided.client_id.as_str()),
        (id.as_str(), "c1")
    );
    assert_eq!(decided, r, "resolve hands back the request as created");
    assert!(completes(first).await, "not woken by the decision");
    assert!(completes(second).await);
    // Decided already, unknown: at once.
    assert!(completes(s.decided(&id, T0)).await);
    assert!(completes(s.decided("unknown", T0)).await);
    // Removed: woken too.
    let c = sample("c1");
    s.create(c.clone()).await.unwrap();
    let mut waiting = Box::pin(s.decided(c.id.as_str(), T0));
    assert!(waits(&mut waiting).await);
    s.cancel(&c.id).await.unwrap();
    assert!(completes(waiting).await, "not woken by the removal");
    // Expired while waiting: released at the expiry (the sample lives 60 s; this one is
    // asked 1 ms before it ends).
    let e = sample("c1");
    s.create(e.clone()).await.unwrap();
    assert!(
        completes(s.decided(e.id.as_str(), e.expires_at_ms - 1)).await,
        "released at the expiry"
    );
}

/// A request's notification state starts pending, is recorded, and goes with the request.
async fn delivery_state_is_part_of_the_request<S: PendingStore>(s: S) {
    let r = sample("c1");
    s.create(r.clone()).await.unwrap();
    assert_eq!(
        s.delivery(r.id.as_str()).await.unwrap(),
        Some(Delivery::Pending)
    );
    s.record_delivery(&r.id, Delivery::Delivered { attempts: 2 })
        .await
        .unwrap();
    assert_eq!(
        s.delivery(r.id.as_str()).await.unwrap(),
        Some(Delivery::Delivered { attempts: 2 })
    );
    s.cancel(&r.id).await.unwrap();
    assert_eq!(s.delivery(r.id.as_str()).await.unwrap(), None);
    assert_eq!(s.delivery("unknown").await.unwrap(), None);
}

/// TOK-05, GW-05: pending; a poll inside the interval is `slow_down` and raises it by 5 s; the
/// raised interval is enforced.
async fn pending_then_slow_down<S: PendingStore>(s: S) {
    let r = sample("c1");
    let id = r.id.as_str().to_owned();
    s.create(r).await.unwrap();
    assert_eq!(
        s.poll(&id, "c1", T0 + 1000, Pacing::Checked).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        s.poll(&id, "c1", T0 + 2000, Pacing::Checked).await.unwrap(),
        PollOutcome::SlowDown { interval_secs: 10 }
    );
    // 6 s after the last poll: fine under the old interval, too fast under the raised one.
    assert_eq!(
        s.poll(&id, "c1", T0 + 8000, Pacing::Checked).await.unwrap(),
        PollOutcome::SlowDown { interval_secs: 15 }
    );
    assert_eq!(
        s.poll(&id, "c1", T0 + 23_000, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Pending
    );
}

/// TOK-03: approved requests are redeemed once; afterwards the id is unknown.
async fn approved_is_taken_once<S: PendingStore>(s: S) {
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r.clone()).await.unwrap();
    s.resolve(&handle, Decision::Approved(approval()), T0 + 1000)
        .await
        .unwrap();
    match s.poll(&id, "c1", T0 + 2000, Pacing::Checked).await.unwrap() {
        PollOutcome::Approved(req, a) => {
            assert_eq!(*req, r);
            assert_eq!(a, approval());
        }
        other => panic!("expected Approved, got {other:?}"),
    }
    assert_eq!(
        s.poll(&id, "c1", T0 + 9000, Pacing::Checked).await.unwrap(),
        PollOutcome::Unknown
    );
}

/// TOK-02: another client's poll is `Unknown` and leaves the request untouched.
async fn foreign_client_sees_unknown<S: PendingStore>(s: S) {
    let r = sample("c1");
    let id = r.id.as_str().to_owned();
    s.create(r).await.unwrap();
    assert_eq!(
        s.poll(&id, "c2", T0 + 1000, Pacing::Checked).await.unwrap(),
        PollOutcome::Unknown
    );
    assert_eq!(
        s.poll(&id, "c1", T0 + 1100, Pacing::Checked).await.unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        s.poll("no-such-id", "c1", T0, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Unknown
    );
}

/// TOK-ERR-01: a denial is reported once (`access_denied`), then the id is gone.
async fn denied_once<S: PendingStore>(s: S) {
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r).await.unwrap();
    s.resolve(&handle, Decision::Denied, T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        s.poll(&id, "c1", T0 + 2000, Pacing::Checked).await.unwrap(),
        PollOutcome::Denied
    );
    assert_eq!(
        s.poll(&id, "c1", T0 + 9000, Pacing::Checked).await.unwrap(),
        PollOutcome::Unknown
    );
}

/// BC-REQ-05: after `expires_at` polls get `expired_token`, the page is gone and resolving fails.
async fn expiry<S: PendingStore>(s: S) {
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r).await.unwrap();
    assert!(s.view(&handle, T0 + 59_999).await.unwrap().is_some());
    assert!(s.view(&handle, T0 + 60_000).await.unwrap().is_none());
    assert_eq!(
        s.resolve(&handle, Decision::Approved(approval()), T0 + 60_000)
            .await,
        Err(ResolveError::Expired)
    );
    assert_eq!(
        s.poll(&id, "c1", T0 + 60_000, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Expired
    );
}

/// A request is resolved once; the handle dies with the decision.
async fn resolve_once<S: PendingStore>(s: S) {
    let r = sample("c1");
    let handle = r.handle.clone();
    s.create(r).await.unwrap();
    s.resolve(&handle, Decision::Approved(approval()), T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        s.resolve(&handle, Decision::Denied, T0 + 2).await,
        Err(ResolveError::NotFound)
    );
    assert!(s.view(&handle, T0 + 3).await.unwrap().is_none());
    assert_eq!(
        s.resolve("unknown", Decision::Denied, T0).await,
        Err(ResolveError::NotFound)
    );
    // A forged handle naming a live request (its digest is not secret) with another secret
    // part opens nothing and decides nothing.
    let r = sample("c1");
    s.create(r.clone()).await.unwrap();
    let forged = crate::protocol::approval_handle(&r.id);
    assert_ne!(forged, r.handle);
    assert!(s.view(&forged, T0).await.unwrap().is_none());
    assert_eq!(
        s.resolve(&forged, Decision::Denied, T0 + 1).await,
        Err(ResolveError::NotFound)
    );
    assert_eq!(s.view(&r.handle, T0).await.unwrap(), Some(r));
}

/// A full store refuses new requests and keeps every live one.
async fn capacity_refuses_without_evicting<S: PendingStore>(s: S) {
    let a = sample("c1");
    let b = sample("c1");
    s.create(a.clone()).await.unwrap();
    s.create(b.clone()).await.unwrap();
    assert_eq!(s.create(sample("c1")).await, Err(StoreError::Full));
    assert_eq!(
        s.poll(a.id.as_str(), "c1", T0, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Pending
    );
    assert_eq!(
        s.poll(b.id.as_str(), "c1", T0, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Pending
    );
}

/// A cancelled request is gone, handle included.
async fn cancel_removes<S: PendingStore>(s: S) {
    let r = sample("c1");
    s.create(r.clone()).await.unwrap();
    s.cancel(&r.id).await.unwrap();
    assert_eq!(
        s.poll(r.id.as_str(), "c1", T0, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Unknown
    );
    assert!(s.view(&r.handle, T0).await.unwrap().is_none());
}

/// TOK-03: 50 concurrent polls of an approved request: exactly one takes it.
async fn concurrent_polls_take_once<S: PendingStore>(s: Arc<S>) {
    let r = sample("c1");
    let (id, handle) = (r.id.as_str().to_owned(), r.handle.clone());
    s.create(r).await.unwrap();
    s.resolve(&handle, Decision::Approved(approval()), T0 + 1)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (s, id) = (Arc::clone(&s), id.clone());
        tasks.push(tokio::spawn(async move {
            s.poll(&id, "c1", T0 + 10_000, Pacing::Checked)
                .await
                .unwrap()
        }));
    }
    let mut taken = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), PollOutcome::Approved(..)) {
            taken += 1;
        }
    }
    assert_eq!(taken, 1);
}
