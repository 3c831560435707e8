//! The shared store against real Redis servers started here: the whole `store::contract` suite
//! on a single node and on a three-master Cluster, two instances sharing one server (a decision
//! on one wakes the polls held on the other), the shared rate limit, and a server that dies and
//! comes back.

use std::sync::Arc;
use std::time::Duration;

use ciba_gateway::config::{RedisConfig, StoreConfig};
use ciba_gateway::store::{
    Decision, ExpiryQueue, KeptStore, LimitStore, Pacing, PendingStore as _, PollOutcome,
    RedisStore, Store, StoreError, contract,
};
use ciba_test_support::redis::{RedisCluster, RedisSentinel, RedisServer, ask};

static PREFIX: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn config(yaml: &str) -> Box<RedisConfig> {
    match serde_saphyr::from_str::<StoreConfig>(yaml).expect("store config parses") {
        StoreConfig::Redis(r) => r,
        other => panic!("not a redis store: {other:?}"),
    }
}

/// Instances of one fresh, empty store on `target` (a YAML fragment, settings included): each
/// call of the maker is one more instance sharing its key prefix, as replicas do.
fn shared(target: &str) -> impl Fn() -> RedisStore + use<> {
    let n = PREFIX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let yaml = format!(
        "type: redis\n{target}\nkey_prefix: t{}-{n}\n",
        std::process::id()
    );
    move || RedisStore::from_config(&config(&yaml)).expect("store builds")
}

/// A fresh, empty store on `target`: its own key prefix.
fn store(target: &str, capacity: u64) -> RedisStore {
    shared(&format!("{target}\ncapacity: {capacity}"))()
}

/// Every contract suite on `target`, a fresh key prefix per store.
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
    contract::run_clients(|| {
        let s = store(target, 100);
        async move { s }
    })
    .await;
    contract::run_limits(|| {
        let s = store(target, 100);
        async move { s }
    })
    .await;
    // Issue 20: a registration, an update and a deletion through one replica are what the
    // other sees next; kept values, counters and push expiries likewise.
    let instance = shared(target);
    let (a, b) = (Store::Redis(instance()), Store::Redis(instance()));
    contract::clients_are_shared(&a, &b).await;
    contract::kept_values(&a, &b).await;
    contract::expiries_are_claimed_once(Arc::new(a), Arc::new(b)).await;
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
    let instance = shared(&format!("url: {}", redis.url()));
    let (a, b) = (Arc::new(instance()), Arc::new(instance()));
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
    let instance = shared(&format!("url: {}", redis.url()));
    let (a, b) = (Store::Redis(instance()), Store::Redis(instance()));
    // 5 per 60 s: 12 s a request, a burst of 5.
    let (interval, tolerance, t0) = (12_000, 48_000, 1_700_000_000_000u64);
    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            s.admit("bc", "alice", t0, interval, tolerance).await,
            Ok(Ok(())),
            "request {i} of the burst"
        );
    }
    assert_eq!(
        b.admit("bc", "alice", t0, interval, tolerance).await,
        Ok(Err(12))
    );
    assert_eq!(
        a.admit("bc", "bob", t0, interval, tolerance).await,
        Ok(Ok(()))
    );
    assert_eq!(
        a.admit("bc", "alice", t0 + 12_000, interval, tolerance)
            .await,
        Ok(Ok(()))
    );
}

/// Issue 12, item 4: with the server gone every operation fails within the deadline (no
/// hang), and once it is back the same store works again without being rebuilt; what the
/// server acknowledged before it died is still there.
#[tokio::test]
async fn a_dead_server_fails_fast_and_a_restarted_one_is_used_again() {
    let mut redis = RedisServer::start();
    let s = shared(&format!("url: {}\ntimeout_ms: 500", redis.url()))();
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
    let outcome = eventually(|| {
        s.poll(
            r.id.as_str(),
            "c1",
            now,
            ciba_gateway::store::Pacing::Checked,
        )
    })
    .await;
    assert_eq!(
        outcome,
        PollOutcome::Pending,
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

/// Retries a store operation that fails while the store reconnects (a failover, a restart):
/// the first answer that is not a store failure.
async fn eventually<T, E, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    ciba_test_support::eventually_some("the store answers again", || {
        let attempt = op();
        async move { attempt.await.ok() }
    })
    .await
}

/// Issue 12, item 4: a Sentinel failover is followed without rebuilding the store — the
/// request the old master acknowledged (and replicated) is there, and decided and redeemed on
/// the new master.
#[tokio::test]
async fn a_sentinel_failover_is_followed() {
    let mut sentinel = RedisSentinel::start();
    let s = shared(&format!(
        "sentinel:\n  urls: [redis://127.0.0.1:{}]\n  master: mymaster\ntimeout_ms: 500",
        sentinel.sentinel_port
    ))();
    let r = contract::sample("c1");
    let now = r.created_at_ms;
    s.create(r.clone()).await.unwrap();
    assert_eq!(
        s.poll(r.id.as_str(), "c1", now, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Pending
    );
    sentinel.wait_replicated();
    sentinel.fail_over();
    let seen = eventually(|| s.view(&r.handle, now)).await;
    assert_eq!(seen, Some(r.clone()), "the request survived the failover");
    eventually(|| s.resolve(&r.handle, Decision::Denied, now + 1)).await;
    assert_eq!(
        s.poll(r.id.as_str(), "c1", now + 10_000, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Denied
    );
}

/// Issue 12, item 4: a Cluster slot move under a live request — while the slot migrates (ASK)
/// and after (MOVED) — is followed; the request's one key moves whole.
#[tokio::test]
async fn a_cluster_slot_move_is_followed() {
    use base64::Engine as _;
    let cluster = RedisCluster::start();
    let prefix = format!("mv-{}", std::process::id());
    let yaml = format!(
        "type: redis\ncluster: [{}]\nkey_prefix: {prefix}\n",
        cluster.urls().join(", ")
    );
    let s = RedisStore::from_config(&config(&yaml)).unwrap();
    let r = contract::sample("c1");
    let now = r.created_at_ms;
    s.create(r.clone()).await.unwrap();
    let key = format!(
        "{prefix}:r:{{{}}}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&<sha2::Sha256 as sha2::Digest>::digest(r.id.as_str())[..16])
    );
    let port0 = cluster.nodes[0].port;
    let slot: u16 = ask(port0, &format!("CLUSTER KEYSLOT {key}"))
        .unwrap()
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let holds = |port: u16| {
        ask(port, &format!("CLUSTER COUNTKEYSINSLOT {slot}")).is_some_and(|r| r.trim() == ":1")
    };
    let id_of = |port: u16| {
        ask(port, "CLUSTER MYID")
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let src = cluster
        .nodes
        .iter()
        .find(|n| holds(n.port))
        .expect("a node holds the key");
    let dst = cluster.nodes.iter().find(|n| n.port != src.port).unwrap();
    let (src_id, dst_id) = (id_of(src.port), id_of(dst.port));
    let ok = |port: u16, cmd: String| {
        let r = ask(port, &cmd).unwrap();
        assert!(r.starts_with("+OK"), "{cmd}: {r}");
    };
    ok(
        dst.port,
        format!("CLUSTER SETSLOT {slot} IMPORTING {src_id}"),
    );
    ok(
        src.port,
        format!("CLUSTER SETSLOT {slot} MIGRATING {dst_id}"),
    );
    ok(
        src.port,
        format!("MIGRATE 127.0.0.1 {} \"\" 0 5000 KEYS {key}", dst.port),
    );
    // Mid-migration: the source answers ASK for the moved key.
    assert_eq!(
        s.poll(r.id.as_str(), "c1", now, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Pending
    );
    for n in &cluster.nodes {
        ok(n.port, format!("CLUSTER SETSLOT {slot} NODE {dst_id}"));
    }
    assert!(holds(dst.port) && !holds(src.port), "the key moved");
    // After: MOVED, and the slot map is refreshed.
    s.resolve(
        &r.handle,
        Decision::Approved(ciba_gateway::store::Approval::default()),
        now + 1,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.poll(r.id.as_str(), "c1", now + 10_000, Pacing::Checked)
            .await
            .unwrap(),
        PollOutcome::Approved(..)
    ));
}

/// What an ACL user needs (the README's "Server settings" lists the same): these commands, on
/// keys `<prefix>:*` and `{<prefix>}:*`, and the channel `<prefix>:decided`.
const ACL_COMMANDS: &[&str] = &[
    "ping",
    "auth",
    "multi",
    "exec",
    "evalsha",
    "script|load",
    "hset",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "hincrby",
    "get",
    "set",
    "getdel",
    "psetex",
    "incr",
    "del",
    "exists",
    "pexpire",
    "pttl",
    "zadd",
    "zrem",
    "zrangebyscore",
    "publish",
    "subscribe",
    "config|get",
];

/// Issue 12, item 1: `rediss://` checked against the server's CA (`store.ca_file`), as an ACL
/// user (`store.username` / `store.password`) granted only what the README documents: the
/// whole contract suite passes through it, and so do the shared rate limit, counters, sessions
/// and expiry queue; a wrong password, or TLS without the CA, is refused.
#[tokio::test]
async fn tls_and_an_acl_user_with_only_the_documented_permissions() {
    let pki = ciba_test_support::pki::Pki::new();
    let tls_port = ciba_test_support::upstream::free_port().to_string();
    let (cert, key, ca) = (
        pki.path("cert.pem"),
        pki.path("key.pem"),
        pki.path("ca.pem"),
    );
    // Every key prefix this suite's `store()` makes starts with `t`.
    let mut args = vec![
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--user",
        "gateway",
        "on",
        ">gw-secret-1",
        "resetchannels",
        "&t*",
        "~t*",
        "~{t*",
        "-@all",
    ];
    let grants: Vec<String> = ACL_COMMANDS.iter().map(|c| format!("+{c}")).collect();
    args.extend(grants.iter().map(String::as_str));
    let _redis = RedisServer::start_with(&args);
    let secret_file = pki.dir.join("redis-password");
    std::fs::write(&secret_file, "gw-secret-1").unwrap();
    let target = |password: &str, ca_file: bool| {
        let ca_line = if ca_file {
            format!("\nca_file: {ca}")
        } else {
            String::new()
        };
        format!(
            "url: rediss://localhost:{tls_port}{ca_line}\nusername: gateway\npassword: {password}"
        )
    };
    let good = target(&format!("file:{}", secret_file.display()), true);

    run_contract(&good).await;

    let s = Store::Redis(store(&good, 10));
    s.health().await.expect("PING over TLS as the ACL user");
    if let Store::Redis(r) = &s {
        assert_eq!(
            r.eviction_policy().await.unwrap().as_deref(),
            Some("noeviction")
        );
    }
    assert_eq!(
        s.admit("bc", "alice", 1_000, 60_000, 0).await.unwrap(),
        Ok(())
    );
    assert!(
        s.admit("bc", "alice", 1_001, 60_000, 0)
            .await
            .unwrap()
            .is_err()
    );
    assert_eq!(s.count("uc", "alice", Some(60_000)).await.unwrap(), 1);
    assert_eq!(s.count("uc", "alice", None).await.unwrap(), 1);
    s.put_value("login", "state", "v".into(), 60_000)
        .await
        .unwrap();
    assert_eq!(
        s.take_value("login", "state").await.unwrap().as_deref(),
        Some("v")
    );
    let r = contract::sample("c1");
    s.create(r.clone()).await.unwrap();
    s.watch_expiry(&r.id, r.expires_at_ms).await.unwrap();
    let due = s.claim_expired(r.expires_at_ms, 10, 10_000).await.unwrap();
    assert_eq!(due.len(), 1);
    s.settle_expired(&r.id).await.unwrap();

    // Refused: a wrong password; TLS with a certificate the system roots do not know.
    let wrong_file = pki.dir.join("wrong-password");
    std::fs::write(&wrong_file, "not-the-secret").unwrap();
    let wrong = Store::Redis(store(
        &target(&format!("file:{}", wrong_file.display()), true),
        10,
    ));
    assert!(wrong.health().await.is_err(), "a wrong password is refused");
    let unverified = Store::Redis(store(&good.replace(&format!("\nca_file: {ca}"), ""), 10));
    assert!(
        unverified.health().await.is_err(),
        "the server's certificate is checked"
    );
}
