//! The engine in-process: a bc-authorize (log channel, no subscriber: the channel costs
//! nothing) and polls of a pending request. Goals: a poll under 5 µs, a bc-authorize under 25 µs.
//! And a poll by a `private_key_jwt` client (ES256, PS256): each carries a fresh assertion, so
//! each verifies a signature and records its `jti` (signing it is outside the measurement).
//! And a poll by a client that registered itself (RFC 7591): its lookup goes through the store.
//!
//! cargo bench --bench engine

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use ciba_gateway::clock::{Clock as _, ManualClock};
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
    let (es, ps) = (es256(), ps256());
    let yaml = format!(
        r#"
public_url: http://127.0.0.1:8080
ciba: {{ max_expiry_secs: 100000000, default_expiry_secs: 100000000 }}
store: {{ type: memory, capacity: 100000000, expired_grace_secs: 0, clients_file: null }}
registration: {{ enabled: true, open: true, default_auth_method: client_secret_post, per_address: null }}
# The rate limiters run on every request but never refuse: the clock stands still, so the
# bursts must cover every iteration.
limits:
  bc_per_client: {{ requests: 4294967295, per_secs: 4294967295 }}
  bc_per_user: {{ requests: 4294967295, per_secs: 4294967295 }}
users: {{ type: static, users: [ {{ subject: s1, username: alice }} ] }}
clients:
  - {{ client_id: bench, secret: "{secret}", token_endpoint_auth_method: client_secret_post }}
  - {{ client_id: es256, token_endpoint_auth_method: private_key_jwt, jwks: {es_jwks} }}
  - {{ client_id: ps256, token_endpoint_auth_method: private_key_jwt, jwks: {ps_jwks} }}
"#,
        es_jwks = serde_json::json!({ "keys": [es.1] }),
        ps_jwks = serde_json::json!({ "keys": [ps.1] }),
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

    // A registered client: found through the store (the memory backend's map) on every poll,
    // its parsed form kept while its record is unchanged; its secret checked by digest.
    let mut reg = request(
        "/register",
        &Bytes::from_static(br#"{"client_name":"bench"}"#),
    );
    reg.headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    let Outcome::Respond(registered) = rt.block_on(engine.handle(Route::Registration, reg)) else {
        panic!("registration answers")
    };
    let registered: serde_json::Value = serde_json::from_slice(registered.body()).unwrap();
    let (rid, rsecret) = (
        registered["client_id"].as_str().unwrap(),
        registered["client_secret"].as_str().unwrap(),
    );
    let rbc = Bytes::from(format!(
        "client_id={rid}&client_secret={rsecret}&scope=openid&login_hint=alice"
    ));
    let Outcome::Respond(rack) =
        rt.block_on(engine.handle(Route::Backchannel, request("/bc-authorize", &rbc)))
    else {
        panic!("bc-authorize answers")
    };
    let rack: serde_json::Value = serde_json::from_slice(rack.body()).unwrap();
    let rpoll = Bytes::from(format!(
        "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&client_id={rid}&client_secret={rsecret}&auth_req_id={}",
        rack["auth_req_id"].as_str().unwrap()
    ));
    c.bench_function("poll_pending_registered_client", |b| {
        b.iter(|| {
            clock.advance_ms(5_000);
            rt.block_on(async {
                black_box(status(
                    engine.handle(Route::Token, request("/token", &rpoll)).await,
                ))
            })
        })
    });

    // private_key_jwt: a fresh assertion per poll, made (outside the timing) on the engine's clock.
    for (client, (key, _), alg) in [
        ("es256", &es, jsonwebtoken::Algorithm::ES256),
        ("ps256", &ps, jsonwebtoken::Algorithm::PS256),
    ] {
        let assertion = || {
            let now = clock.now_ms() / 1000;
            let mut h = jsonwebtoken::Header::new(alg);
            h.kid = Some("k".into());
            let claims = serde_json::json!({
                "iss": client, "sub": client, "aud": "http://127.0.0.1:8080", "iat": now,
                "exp": now + 60, "jti": format!("{:032x}", rand::random::<u128>()),
            });
            jsonwebtoken::encode(&h, &claims, key).unwrap()
        };
        let form = |extra: &str| {
            Bytes::from(format!(
                "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}&{extra}",
                assertion()
            ))
        };
        let Outcome::Respond(ack) = rt.block_on(engine.handle(
            Route::Backchannel,
            request("/bc-authorize", &form("scope=openid&login_hint=alice")),
        )) else {
            panic!("bc-authorize answers")
        };
        assert_eq!(ack.status(), 200, "{:?}", ack.body());
        let ack: serde_json::Value = serde_json::from_slice(ack.body()).unwrap();
        let poll = format!(
            "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id={}",
            ack["auth_req_id"].as_str().unwrap()
        );
        c.bench_function(&format!("poll_private_key_jwt_{client}"), |b| {
            b.iter_batched(
                // The clock stands still (criterion makes a batch of inputs before it runs
                // them): the answer is `slow_down`, which costs what `authorization_pending`
                // does (the two benches above).
                || request("/token", &form(&poll)),
                |req| {
                    rt.block_on(async {
                        let s = status(engine.handle(Route::Token, req).await);
                        assert_eq!(s, 400);
                        black_box(s)
                    })
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

/// A P-256 key for ES256: the encoding key and its public JWK.
fn es256() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let point = secret.public_key().to_encoded_point(false);
    let pem = secret.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    (
        jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
    )
}

/// An RSA 2048 key for PS256: the encoding key and its public JWK.
fn ps256() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    (
        jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        serde_json::json!({"kty": "RSA", "kid": "k",
            "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
    )
}

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

criterion_group!(benches, engine);
criterion_main!(benches);
