//! The engine in-process: a bc-authorize (log channel, no subscriber: the channel costs
//! nothing) and polls of a pending request. Goals: a poll under 5 µs, a bc-authorize under 25 µs.
//!
//! cargo bench --bench engine

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use ciba_gateway::clock::ManualClock;
use ciba_gateway::{Config, Engine, EngineRequest, Outcome, Route};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

fn request(path: &'static str, body: &Bytes) -> EngineRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    EngineRequest {
        method: Method::POST,
        uri: http::Uri::from_static(path),
        headers,
        body: body.clone(),
        connection: Default::default(),
    }
}

fn status(o: Outcome) -> u16 {
    match o {
        Outcome::Respond(r) => r.status().as_u16(),
        Outcome::Forward(_) => 0,
    }
}

fn engine(c: &mut Criterion) {
    ciba_gateway::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = ciba_gateway::hash_secret("bench-secret");
    let yaml = format!(
        r#"
public_url: http://127.0.0.1:8080
ciba: {{ max_expiry_secs: 100000000, default_expiry_secs: 100000000 }}
store: {{ type: memory, capacity: 100000000, expired_grace_secs: 0 }}
# The rate limiters run on every request but never refuse: the clock stands still, so the
# bursts must cover every iteration.
limits:
  bc_per_client: {{ requests: 4294967295, per_secs: 4294967295 }}
  bc_per_user: {{ requests: 4294967295, per_secs: 4294967295 }}
users: {{ type: static, users: [ {{ subject: s1, username: alice }} ] }}
clients: [ {{ client_id: bench, secret: "{secret}", token_endpoint_auth_method: client_secret_post }} ]
"#
    );
    let clock = ManualClock::new();
    let engine =
        Engine::with_clock(Config::from_yaml(&yaml).unwrap(), Arc::new(clock.clone())).unwrap();

    // requested_expiry=1: moka drops the entries after a second of real time, so the store
    // stays small however many iterations criterion runs.
    let bc = Bytes::from_static(b"client_id=bench&client_secret=bench-secret&scope=openid&login_hint=alice&binding_message=1234&requested_expiry=1");
    assert_eq!(
        rt.block_on(async {
            status(
                engine
                    .handle(Route::Backchannel, request("/bc-authorize", &bc))
                    .await,
            )
        }),
        200
    );
    c.bench_function("bc_authorize", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(status(
                    engine
                        .handle(Route::Backchannel, request("/bc-authorize", &bc))
                        .await,
                ))
            })
        })
    });

    let long = Bytes::from_static(
        b"client_id=bench&client_secret=bench-secret&scope=openid&login_hint=alice",
    );
    let Outcome::Respond(ack) =
        rt.block_on(engine.handle(Route::Backchannel, request("/bc-authorize", &long)))
    else {
        panic!("bc-authorize answers")
    };
    let ack: serde_json::Value = serde_json::from_slice(ack.body()).unwrap();
    let poll = Bytes::from(format!(
        "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&client_id=bench&client_secret=bench-secret&auth_req_id={}",
        ack["auth_req_id"].as_str().unwrap()
    ));
    c.bench_function("poll_pending", |b| {
        b.iter(|| {
            clock.advance_ms(5_000);
            rt.block_on(async {
                black_box(status(
                    engine.handle(Route::Token, request("/token", &poll)).await,
                ))
            })
        })
    });
    c.bench_function("poll_slow_down", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(status(
                    engine.handle(Route::Token, request("/token", &poll)).await,
                ))
            })
        })
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
