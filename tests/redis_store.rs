//! The shared store against real Redis servers started here: the whole `store::contract` suite
//! on a single node and on a three-master Cluster, two instances sharing one server (a decision
//! on one wakes the polls held on the other), the shared rate limit, and a server that dies and
//! comes back.

use std::sync::Arc;
use std::time::Duration;

use ciba_gateway::config::{RedisConfig, StoreConfig};
use ciba_gateway::store::{
    Decision, PendingStore as _, PollOutcome, RedisStore, Store, StoreError, contract,
};
use ciba_test_support::redis::{RedisCluster, RedisServer};

static PREFIX: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn config(yaml: &str) -> Box<RedisConfig> {
    match serde_saphyr::from_str::<StoreConfig>(yaml).expect("store config parses") {
        StoreConfig::Redis(r) => r,
        other => panic!("not a redis store: {other:?}"),
    }
}

/// A fresh, empty store on `target` (a YAML fragment): its own key prefix.
fn store(target: &str, capacity: u64) -> RedisStore {
    let n = PREFIX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let yaml = format!(
        "type: redis\n{target}\nkey_prefix: t{}-{n}\ncapacity: {capacity}\n",
        std::process::id()
    );
    RedisStore::from_config(&config(&yaml)).expect("store builds")
}

/// Both contract suites on `target`, a fresh key prefix per store.
async fn run_contract(target: &str) {
    contract::run_all(|cap| {
        let s = store(target, cap);
        async move { s }
    })
    .await;
    contract::run_refresh(|cap| {
        let s = store(target, cap);
        async move { s }
    })
    .await;
}

#[tokio::test]
async fn contract_on_a_single_redis_node() {
    let redis = RedisServer::start();
    run_contract(&format!("url: {}", redis.url())).await;
}

#[tokio::test]
async fn contract_on_a_three_master_redis_cluster() {
    let cluster = RedisCluster::start();
    run_contract(&format!("cluster: [{}]", cluster.urls().join(", "))).await;
}

/// Issue 12, item 3: a decision taken through one instance wakes a poll held on another, and
/// exactly one of many concurrent polls spread over both takes the approval (TOK-03).
#[tokio::test]
async fn a_decision_on_one_instance_wakes_the_poll_held_on_another() {
    let redis = RedisServer::start();
    let yaml = format!(
        "type: redis\nurl: {}\nkey_prefix: shared-{}\n",
        redis.url(),
        std::process::id()
    );
    let a = Arc::new(RedisStore::from_config(&config(&yaml)).unwrap());
    let b = Arc::new(RedisStore::from_config(&config(&yaml)).unwrap());
    let r = contract::sample("c1");
    let now = r.created_at_ms;
    a.create(r.clone()).await.unwrap();
    // B subscribes and holds the poll.
    let mut held = {
        let (b, id) = (Arc::clone(&b), r.id.as_str().to_owned());
        tokio::spawn(async move { b.decided(&id, now).await })
    };
    // The view through A sees the request B holds a poll on.
    assert_eq!(a.view(&r.handle, now).await.unwrap().as_ref(), Some(&r));
    // Held for real: the sample lives 60 s; nothing completes it but a decision.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut held)
            .await
            .is_err(),
        "the held poll ended before any decision"
    );
    a.resolve(
        &r.handle,
        Decision::Approved(ciba_gateway::store::Approval::default()),
        now + 1,
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the decision on A woke the poll held on B")
        .unwrap();
    let mut polls = Vec::new();
    for i in 0..200 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let id = r.id.as_str().to_owned();
        polls.push(tokio::spawn(async move {
            s.poll(
                &id,
                "c1",
                now + 10_000,
                ciba_gateway::store::Pacing::Checked,
            )
            .await
            .unwrap()
        }));
    }
    let mut approved = 0;
    for p in polls {
        if matches!(p.await.unwrap(), PollOutcome::Approved(..)) {
            approved += 1;
        }
    }
    assert_eq!(approved, 1);
}

/// GW-07 across replicas: two instances draw from one bucket.
#[tokio::test]
async fn a_shared_rate_limit_counts_every_instance() {
    let redis = RedisServer::start();
    let yaml = format!(
        "type: redis\nurl: {}\nkey_prefix: rl-{}\n",
        redis.url(),
        std::process::id()
    );
    let a = Store::Redis(RedisStore::from_config(&config(&yaml)).unwrap());
    let b = Store::Redis(RedisStore::from_config(&config(&yaml)).unwrap());
    // 5 per 60 s: 12 s a request, a burst of 5.
    let (interval, tolerance, t0) = (12_000, 48_000, 1_700_000_000_000u64);
    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            s.shared_gcra("bc", "alice", t0, interval, tolerance).await,
            Some(Ok(Ok(()))),
            "request {i} of the burst"
        );
    }
    assert_eq!(
        b.shared_gcra("bc", "alice", t0, interval, tolerance).await,
        Some(Ok(Err(12)))
    );
    assert_eq!(
        a.shared_gcra("bc", "bob", t0, interval, tolerance).await,
        Some(Ok(Ok(())))
    );
    assert_eq!(
        a.shared_gcra("bc", "alice", t0 + 12_000, interval, tolerance)
            .await,
        Some(Ok(Ok(())))
    );
}

/// Issue 12, item 4: with the server gone every operation fails within the deadline (no
/// hang), and once it is back the same store works again without being rebuilt; what the
/// server acknowledged before it died is still there.
#[tokio::test]
async fn a_dead_server_fails_fast_and_a_restarted_one_is_used_again() {
    let mut redis = RedisServer::start();
    let yaml = format!(
        "type: redis\nurl: {}\nkey_prefix: f-{}\ntimeout_ms: 500\n",
        redis.url(),
        std::process::id()
    );
    let s = RedisStore::from_config(&config(&yaml)).unwrap();
    let r = contract::sample("c1");
    let now = r.created_at_ms;
    s.create(r.clone()).await.unwrap();
    redis.kill();
    for _ in 0..20 {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            s.poll(
                r.id.as_str(),
                "c1",
                now,
                ciba_gateway::store::Pacing::Checked,
            ),
        )
        .await
        .expect("no operation hangs on a dead server");
        assert!(matches!(got, Err(StoreError::Backend(_))), "{got:?}");
    }
    redis.restart();
    // Reconnected on demand (the back-off after a failed connect is short).
    let mut outcome = None;
    for _ in 0..200 {
        match s
            .poll(
                r.id.as_str(),
                "c1",
                now,
                ciba_gateway::store::Pacing::Checked,
            )
            .await
        {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        outcome,
        Some(PollOutcome::Pending),
        "the request survived the restart"
    );
    s.resolve(&r.handle, Decision::Denied, now + 1)
        .await
        .unwrap();
    assert_eq!(
        s.poll(
            r.id.as_str(),
            "c1",
            now + 10_000,
            ciba_gateway::store::Pacing::Checked
        )
        .await
        .unwrap(),
        PollOutcome::Denied
    );
}
