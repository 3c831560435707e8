//! Issue 12: three `ciba-gateway` processes sharing one real Redis, with no sticky routing.
//! bc-authorize on one, approval on another, polls anywhere; a poll held on one replica is
//! answered when the user approves on another; 1 000 concurrent polls spread over the three
//! get exactly one token response (TOK-03); the per-user rate limit is one budget for all
//! (GW-07), and so is the user-code lockout (BC-UC-02); Redis killed mid-flow → 503 with `Retry-After` on the CIBA endpoints, discovery
//! unaffected, and the flow completes once Redis is back; a replica killed mid-flow → its
//! request completes through the others, and the restarted replica serves it too; a push
//! request whose replica died is told `expired_token` by another, once (PUSH-ERR-01).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ciba_gateway::config::StoreConfig;
use ciba_gateway::store::{Approval, Decision, PendingStore as _, RedisStore};
use ciba_test_support::pages::approve_at;
use ciba_test_support::receiver::Receiver;
use ciba_test_support::redis::RedisServer;
use ciba_test_support::upstream::{Provider, free_port};
use ciba_test_support::{http_client, reply};

const BIN: &str = env!("CARGO_BIN_EXE_ciba-gateway");
const CSRF_KEY: &str = "a-csrf-key-every-replica-shares-0123456789";
const PUSH_TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

struct Replica {
    port: u16,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The quickstart file turned into a replica's: its own port, one public URL, the shared Redis,
/// one signing key and CSRF key for all, and a small per-user budget.
fn replica_config(
    dir: &std::path::Path,
    port: u16,
    public_port: u16,
    redis: &str,
    push_endpoint: &str,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/quickstart.yaml"
    ))
    .unwrap();
    let text = text
        .replace(
            "listen: 127.0.0.1:8080",
            &format!("listen: 127.0.0.1:{port}"),
        )
        .replace(
            "public_url: http://127.0.0.1:8080",
            &format!("public_url: http://127.0.0.1:{public_port}"),
        )
        .replace("http://127.0.0.1:9091/cb", push_endpoint)
        .replace(
            "    - subject: \"248289761002\"\n",
            "    - subject: \"248289761003\"\n      username: carol\n    - subject: \"248289761002\"\n",
        );
    let key = dir.join("signing.pem");
    let text = format!(
        "{text}\nstore:\n  type: redis\n  url: {redis}\n  timeout_ms: 500\n\
         tokens:\n  keys:\n    - kid: shared-1\n      alg: ES256\n      private_key: file:{}\n\
         approval:\n  csrf_key: ${{REPLICA_CSRF_KEY}}\n\
         limits:\n  bc_per_user:\n    requests: 4\n    per_secs: 3600\n",
        key.display()
    );
    let path = dir.join(format!("replica-{port}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn start(cfg: &std::path::Path, port: u16) -> Replica {
    start_with_env(cfg, port, &[("REPLICA_CSRF_KEY", CSRF_KEY)])
}

/// A replica whose configuration reads `env`.
fn start_with_env(cfg: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Replica {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info,ciba_gateway::engine::token=debug")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let r = Replica {
        port,
        child,
        lines: rx,
    };
    r.wait_line(|l| l.contains("listening"));
    r
}

impl Replica {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("the expected log line");
            // The start-up check of the server's eviction policy (engine::check_store).
            assert!(
                !(line.contains("ERROR") && line.contains("may evict pending requests")),
                "{line}"
            );
            if pred(&line) {
                return line;
            }
        }
    }

    /// The approval link this replica logged next, as a path (any replica serves it).
    fn next_link_path(&self) -> String {
        let line = self.wait_line(|l| l.contains("/approve/"));
        let link = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") && w.contains("/approve/"))
            .unwrap();
        link.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
    }
}

async fn bc_authorize(
    http: &reqwest::Client,
    on: &Replica,
    user: &str,
) -> ciba_test_support::Reply {
    let r = http
        .post(format!("{}/bc-authorize", on.base()))
        .form(&[
            ("client_id", "my-client"),
            ("client_secret", "supersecret"),
            ("scope", "openid profile"),
            ("login_hint", user),
        ])
        .send()
        .await
        .unwrap();
    reply(r).await
}

async fn poll(http: &reqwest::Client, on: &Replica, id: &str) -> ciba_test_support::Reply {
    reply(poll_at(http, &on.base(), id).await).await
}

/// A CIBA token request of `my-client` at the replica at `base`.
async fn poll_at(http: &reqwest::Client, base: &str, id: &str) -> reqwest::Response {
    http.post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:openid:params:grant-type:ciba"),
            ("client_id", "my-client"),
            ("client_secret", "supersecret"),
            ("auth_req_id", id),
        ])
        .send()
        .await
        .unwrap()
}

/// A push client's request for `user` at replica `on`, expiring in `expiry` seconds.
async fn push_request(
    http: &reqwest::Client,
    on: &Replica,
    user: &str,
    expiry: &str,
) -> ciba_test_support::Reply {
    let r = http
        .post(format!("{}/bc-authorize", on.base()))
        .form(&[
            ("client_id", "push-client"),
            ("client_secret", "supersecret"),
            ("scope", "openid"),
            ("login_hint", user),
            ("requested_expiry", expiry),
            ("client_notification_token", PUSH_TOKEN),
        ])
        .send()
        .await;
    reply(r.unwrap()).await
}

/// The status of replica `on`'s readiness check. The pingora runtime logs "listening" as it
/// hands its listener to pingora, which binds it a moment later: a refused connection is
/// asked again.
async fn healthz(http: &reqwest::Client, on: &Replica) -> u16 {
    let url = format!("{}/healthz", on.base());
    ciba_test_support::eventually_some("the replica accepts connections", || async {
        match http.get(&url).send().await {
            Ok(r) => Some(r.status().as_u16()),
            Err(e) if e.is_connect() => None,
            Err(e) => panic!("{e}"),
        }
    })
    .await
}

/// Approves through replica `on` the request whose link path is `path`.
async fn approve(http: &reqwest::Client, on: &Replica, path: &str) -> u16 {
    approve_at(http, &format!("{}{path}", on.base())).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_behave_like_one() {
    let mut redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("ciba-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("signing.pem"),
        ciba_gateway::generate_signing_key(ciba_gateway::config::SigningAlg::ES256).unwrap(),
    )
    .unwrap();
    // The push client's notification endpoint (plain HTTP, as the quickstart allows).
    let push_client = Receiver::start_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        &[204],
        false,
    )
    .await;
    let ports = [free_port(), free_port(), free_port()];
    let cfgs: Vec<_> = ports
        .iter()
        .map(|p| replica_config(&dir, *p, ports[0], &redis.url(), &push_client.url))
        .collect();
    let mut g: Vec<Replica> = ports.iter().zip(&cfgs).map(|(p, c)| start(c, *p)).collect();
    let http = http_client();

    // Issue 20: a client registered through replica 0 authenticates on 1 and 2 at once; its
    // secret rotated through 2 and its deletion through 1 are what 0 sees next.
    let r = http
        .post(format!("{}/register", g[0].base()))
        .json(&serde_json::json!({ "client_name": "shared device" }))
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let cid = r.json["client_id"].as_str().unwrap().to_owned();
    let old = r.json["client_secret"].as_str().unwrap().to_owned();
    let rat = r.json["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let authenticates = |on: usize, secret: &str| {
        let (http, base, cid, secret) =
            (http.clone(), g[on].base(), cid.clone(), secret.to_owned());
        async move {
            let r = http
                .post(format!("{base}/token"))
                .form(&[
                    ("grant_type", "urn:openid:params:grant-type:ciba"),
                    ("client_id", cid.as_str()),
                    ("client_secret", secret.as_str()),
                    ("auth_req_id", "no-such-request"),
                ])
                .send()
                .await
                .unwrap();
            reply(r).await.error().to_owned()
        }
    };
    for on in 0..3 {
        assert_eq!(authenticates(on, &old).await, "invalid_grant");
    }
    let rotated = http
        .put(format!("{}/register/{cid}?rotate_secret=true", g[2].base()))
        .bearer_auth(&rat)
        .json(&serde_json::json!({ "client_id": cid, "client_name": "shared device" }))
        .send()
        .await
        .unwrap();
    let rotated = reply(rotated).await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let new = rotated.json["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(authenticates(0, &old).await, "invalid_client");
    assert_eq!(authenticates(0, &new).await, "invalid_grant");
    let deleted = http
        .delete(format!("{}/register/{cid}", g[1].base()))
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(authenticates(0, &new).await, "invalid_client");
    assert_eq!(authenticates(2, &new).await, "invalid_client");

    // bc-authorize on 0; a poll held on 2 (long polling); the user approves on 1: the held
    // poll is answered with the tokens (woken across instances).
    let r = bc_authorize(&http, &g[0], "alice").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[0].next_link_path();
    let held = {
        let (http, base, id) = (http.clone(), g[2].base(), id.clone());
        tokio::spawn(async move { reply(poll_at(&http, &base, &id).await).await })
    };
    // Approved only once replica 2 holds the poll, so that it must be woken by another's
    // decision (a poll that came after the approval would find it in the store).
    g[2].wait_line(|l| l.contains("poll held"));
    assert_eq!(approve(&http, &g[1], &link).await, 200);
    let tokens = held.await.unwrap();
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    assert!(tokens.json["id_token"].is_string());
    // Redeemed once: anywhere afterwards it is unknown.
    poll(&http, &g[0], &id)
        .await
        .assert_error(400, "invalid_grant");

    // 1 000 concurrent polls over the three replicas after approval: one token response.
    let r = bc_authorize(&http, &g[1], "alice").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[1].next_link_path();
    assert_eq!(approve(&http, &g[2], &link).await, 200);
    let mut polls = Vec::new();
    for i in 0..1000 {
        let (http, base, id) = (http.clone(), g[i % 3].base(), id.clone());
        polls.push(tokio::spawn(async move {
            poll_at(&http, &base, &id).await.status().as_u16()
        }));
    }
    let mut ok = 0;
    for p in polls {
        match p.await.unwrap() {
            200 => ok += 1,
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one token response across the replicas");

    // GW-07 / SEC-04: bob's budget (4 per hour) is one budget, whichever replica is asked.
    for i in 0..4 {
        let r = bc_authorize(&http, &g[i % 3], "bob").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.json);
        // Its link is logged by that replica; read past it.
        g[i % 3].next_link_path();
    }
    for replica in &g {
        // The per-user limit answers as the gateway does for one replica (access_denied).
        bc_authorize(&http, replica, "bob")
            .await
            .assert_error(403, "access_denied");
    }

    // Redis dies mid-flow: CIBA endpoints answer 503 + Retry-After quickly, readiness says
    // so, discovery does not care; once Redis is back the same flow completes.
    let r = bc_authorize(&http, &g[0], "alice").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[0].next_link_path();
    redis.kill();
    let down = poll(&http, &g[1], &id).await;
    down.assert_error(503, "temporarily_unavailable");
    assert!(down.headers.contains_key("retry-after"));
    bc_authorize(&http, &g[2], "alice")
        .await
        .assert_error(503, "temporarily_unavailable");
    assert_eq!(healthz(&http, &g[2]).await, 503);
    let disc = http
        .get(format!("{}/.well-known/openid-configuration", g[0].base()))
        .send()
        .await
        .unwrap();
    assert_eq!(disc.status(), 200);
    assert_eq!(
        approve(&http, &g[2], &link).await,
        503,
        "the page says: try again"
    );
    redis.restart();
    // Readiness turns back on every replica, none restarted.
    ciba_test_support::eventually("the replicas use Redis again once it is back", || async {
        let mut all = true;
        for r in &g {
            all &= healthz(&http, r).await == 200;
        }
        all
    })
    .await;
    assert_eq!(approve(&http, &g[2], &link).await, 200);
    let tokens = poll(&http, &g[0], &id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);

    // A replica dies mid-flow: its request is approved and redeemed through the others; the
    // restarted replica serves it too.
    let r = bc_authorize(&http, &g[2], "alice").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[2].next_link_path();
    // PUSH-ERR-01: a push request accepted by the same replica, which dies before it expires
    // undecided: another replica tells the client, once.
    let r = push_request(&http, &g[2], "carol", "2").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let push_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    g.pop();
    assert_eq!(approve(&http, &g[0], &link).await, 200);
    g.push(start(&cfgs[2], ports[2]));
    let tokens = poll(&http, &g[2], &id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    poll(&http, &g[1], &id)
        .await
        .assert_error(400, "invalid_grant");
    let told = push_client.next_call().await;
    assert_eq!(
        told.body,
        serde_json::json!({ "error": "expired_token", "auth_req_id": push_id })
    );
    assert_eq!(told.bearer, PUSH_TOKEN);

    // BC-UC-02 across replicas: five wrong user codes for alice, spread over the three, lock
    // her out on every replica (the right code included).
    let with_code = |on: &Replica, code: &str| {
        http.post(format!("{}/bc-authorize", on.base())).form(&[
            ("client_id", "my-client"),
            ("client_secret", "supersecret"),
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("user_code", code),
        ])
    };
    for i in 0..5 {
        reply(with_code(&g[i % 3], "wrong").send().await.unwrap())
            .await
            .assert_error(400, "invalid_user_code");
    }
    for replica in &g {
        let r = reply(with_code(replica, "abc123").send().await.unwrap()).await;
        r.assert_error(403, "access_denied");
        assert!(
            r.json["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("user code")),
            "{}",
            r.json
        );
    }
    // Every replica has swept many times since: the expiry was told once.
    assert_eq!(push_client.calls_so_far(), 1);

    // PUSH-01: a push decision recorded by a replica that died before taking it (played here
    // by recording it straight into Redis) is delivered by a sweep once the request's expiry
    // is due: the tokens, once.
    let r = push_request(&http, &g[0], "carol", "2").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let push_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[0].next_link_path();
    let handle = link.rsplit('/').next().unwrap();
    let yaml = format!("type: redis\nurl: {}\n", redis.url());
    let StoreConfig::Redis(cfg) = serde_saphyr::from_str::<StoreConfig>(&yaml).unwrap() else {
        panic!("a redis store")
    };
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let approval = Approval {
        auth_time: now_ms / 1000,
        ..Approval::default()
    };
    RedisStore::from_config(&cfg)
        .unwrap()
        .resolve(handle, Decision::Approved(approval), now_ms)
        .await
        .unwrap();
    let told = push_client.next_call().await;
    assert_eq!(told.body["auth_req_id"], push_id.as_str(), "{}", told.body);
    assert!(told.body["access_token"].is_string(), "{}", told.body);
    assert!(told.body["id_token"].is_string(), "{}", told.body);
    assert_eq!(push_client.calls_so_far(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 12, item 7: the deploy example as `deploy/compose.yaml` runs it — `deploy/gateway.yaml`
/// on two gateways, Redis with the compose file's password and `noeviction`, oidc-provider at
/// its defaults in front — with the compose host names swapped for loopback ports (no Docker
/// here) and the secrets the compose file sets, one replica on each runtime: both report
/// ready, discovery merges the provider's, a CIBA flow started on one completes on the other,
/// and (with a push client added) the expiry of a push request whose replica died is told by
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_example_serves_a_flow_across_its_replicas() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let compose: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(deploy.join("compose.yaml")).unwrap())
            .expect("compose.yaml parses");
    let env = &compose["x-gateway"]["environment"];
    let (redis_password, csrf_key) = (
        env["CIBA_REDIS_PASSWORD"].as_str().unwrap(),
        env["CIBA_CSRF_KEY"].as_str().unwrap(),
    );
    let redis_args: Vec<&str> = compose["services"]["redis"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|a| a.as_str().unwrap())
        .collect();
    // Redis with the compose file's arguments: its password, `noeviction`, append-only.
    let redis = RedisServer::start_with(&redis_args);
    let provider = Provider::start_at_own_address().await;
    let provider_port = provider.port;
    let ports = [free_port(), free_port()];
    let signing_key =
        ciba_gateway::generate_signing_key(ciba_gateway::config::SigningAlg::ES256).unwrap();
    let dir = std::env::temp_dir().join(format!("ciba-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(deploy.join("gateway.yaml")).unwrap();
    // Plus, for this test, a push client (its endpoint on loopback, plain HTTP allowed); the
    // second replica runs on pingora, the first on tower.
    let push_client = Receiver::start_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        &[204],
        false,
    )
    .await;
    let text = text.replace(
        "ciba:\n",
        "ciba:\n  client_notifications:\n    allow_plain_http: true\n    outbound:\n      allow_private_networks: true\n",
    ) + &format!(
        "  - client_id: push-client\n    secret: \"$argon2id$v=19$m=19456,t=2,p=1$iC3gOvlNGMU+N/1tiaagug$i4yO1+B2mKlzGXZ7nUouZ5l9cAYEn8mUlnLVHuuFDQo\"\n    token_endpoint_auth_method: client_secret_post\n    backchannel_token_delivery_mode: push\n    backchannel_client_notification_endpoint: {}\n    scopes: [openid]\n",
        push_client.url
    );
    let g: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let cfg = dir.join(format!("gateway-{port}.yaml"));
            let runtime = if i == 1 { "\nruntime: pingora\n" } else { "" };
            let local = (text.clone() + runtime)
                .replace("listen: 0.0.0.0:8080", &format!("listen: 127.0.0.1:{port}"))
                .replace(
                    "http://127.0.0.1:8081",
                    &format!("http://127.0.0.1:{}", ports[0]),
                )
                .replace(
                    "http://provider:3000",
                    &format!("http://127.0.0.1:{provider_port}"),
                )
                .replace("redis://redis:6379", &redis.url());
            std::fs::write(&cfg, local).unwrap();
            start_with_env(
                &cfg,
                *port,
                &[
                    ("CIBA_REDIS_PASSWORD", redis_password),
                    ("CIBA_CSRF_KEY", csrf_key),
                    ("CIBA_SIGNING_KEY", &signing_key),
                ],
            )
        })
        .collect();
    let http = http_client();
    for r in &g {
        assert_eq!(
            healthz(&http, r).await,
            200,
            "ready: Redis answers the configured password"
        );
    }
    let disc = reply(
        http.get(format!("{}/.well-known/openid-configuration", g[1].base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(disc.status, 200, "{}", disc.json);
    assert!(disc.json["backchannel_authentication_endpoint"].is_string());
    assert!(
        disc.json["authorization_endpoint"]
            .as_str()
            .is_some_and(|a| a.contains("/auth")),
        "the provider's own endpoints: {}",
        disc.json
    );

    let r = bc_authorize(&http, &g[0], "alice").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let link = g[0].next_link_path();
    assert_eq!(approve(&http, &g[1], &link).await, 200);
    let tokens = poll(&http, &g[1], &id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    assert!(tokens.json["id_token"].is_string());
    poll(&http, &g[0], &id)
        .await
        .assert_error(400, "invalid_grant");

    // PUSH-ERR-01: a push request accepted by the tower replica, which dies before it expires
    // undecided: the pingora replica tells the client.
    let r = push_request(&http, &g[0], "alice", "1").await;
    assert_eq!(r.status, 200, "{}", r.json);
    let push_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let mut g = g;
    g.remove(0);
    let told = push_client.next_call().await;
    assert_eq!(
        told.body,
        serde_json::json!({ "error": "expired_token", "auth_req_id": push_id })
    );
    let _ = std::fs::remove_dir_all(&dir);
}
