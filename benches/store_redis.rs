//! What a pending request costs in Redis, and what a poll and a bc-authorize cost through it:
//! a real `redis-server` started here (single node, loopback), 100 000 requests accepted
//! through the engine, then `INFO memory`'s `used_memory` growth per request and `MEMORY
//! USAGE` of one request's hash (its only key); then the latency of polls (one script call each) and of
//! bc-authorize (rate limits, capacity, request, handle).
//!
//! cargo bench --bench store_redis        (under `cargo test` it runs 2 000 requests)

use std::time::Instant;

use bytes::Bytes;
use ciba_gateway::{Config, Engine, EngineRequest, Outcome, Route};
use ciba_test_support::redis::RedisServer;
use http::{HeaderMap, HeaderValue, Method};

fn form(path: &'static str, body: String) -> EngineRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    EngineRequest {
        method: Method::POST,
        uri: http::Uri::from_static(path),
        headers,
        body: Bytes::from(body),
        connection: Default::default(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let requests = if full { 100_000 } else { 2_000 };
    ciba_gateway::install_crypto_provider();
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let hash = ciba_gateway::hash_secret("s3cret");
    let yaml = format!(
        "public_url: http://127.0.0.1:9\nchannel: {{ type: log }}\nlimits: {{ bc_per_user: null, bc_per_client: null }}\nstore: {{ type: redis, url: \"{}\", capacity: 1000000 }}\nusers: {{ type: static, users: [{{ subject: u1, username: alice }}] }}\nclients:\n  - {{ client_id: c1, secret: \"{hash}\", token_endpoint_auth_method: client_secret_post }}\n",
        redis.url()
    );
    let engine = Engine::new(Config::from_yaml(&yaml).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bc = || {
        form(
            "/bc-authorize",
            "client_id=c1&client_secret=s3cret&scope=openid&login_hint=alice&binding_message=1234"
                .into(),
        )
    };
    rt.block_on(async {
        for _ in 0..100 {
            engine.handle(Route::Backchannel, bc()).await;
        }
        let used = |r: &RedisServer| {
            r.info("memory", "used_memory")
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        let before = used(&redis);
        let mut ids = Vec::with_capacity(requests);
        let mut bc_lat = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            let Outcome::Respond(r) = engine.handle(Route::Backchannel, bc()).await else {
                unreachable!()
            };
            bc_lat.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
            ids.push(v["auth_req_id"].as_str().unwrap().to_owned());
        }
        let after = used(&redis);
        // One request's two keys, as the server accounts them.
        let cli = |args: &[&str]| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &redis.port.to_string()])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let sample = |pattern: &str| {
            let keys = cli(&["--scan", "--pattern", pattern]);
            let key = keys.lines().next().unwrap().to_owned();
            cli(&["MEMORY", "USAGE", &key]).trim().parse::<i64>().unwrap()
        };
        let req_bytes = sample("ciba:r:*");
        println!(
            "{requests} pending requests (redis store): used_memory {} bytes each; MEMORY USAGE of a request's hash {req_bytes} bytes",
            (after - before) / requests as i64,
        );
        let mut poll_lat = Vec::with_capacity(ids.len());
        for id in &ids {
            let t = Instant::now();
            let Outcome::Respond(r) = engine
                .handle(
                    Route::Token,
                    form(
                        "/token",
                        format!("grant_type=urn:openid:params:grant-type:ciba&client_id=c1&client_secret=s3cret&auth_req_id={id}"),
                    ),
                )
                .await
            else {
                unreachable!()
            };
            poll_lat.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(r.status(), 400, "authorization_pending");
        }
        for (name, lat) in [("bc-authorize", &mut bc_lat), ("poll (pending)", &mut poll_lat)] {
            lat.sort_by(f64::total_cmp);
            println!(
                "{name} through Redis: p50 {:.0} µs, p99 {:.0} µs ({} requests, one client, in process)",
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                lat.len()
            );
        }
    });
}
