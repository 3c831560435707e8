//! The tower layer on the hot path: a poll of a pending request through `CibaService` (body
//! buffered by the layer, the engine's answer wrapped in the layer's body type and collected),
//! and a request passed through to the wrapped service. In process, no sockets.
//!
//! cargo bench --bench layer

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use ciba_gateway::clock::ManualClock;
use ciba_gateway::{CibaLayer, Config, Engine};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = ciba_gateway::hash_secret("bench-secret");
    let yaml = format!(
        r#"
public_url: http://127.0.0.1:8080
ciba: {{ max_expiry_secs: 100000000, default_expiry_secs: 100000000 }}
limits: {{ bc_per_client: null, bc_per_user: null }}
users: {{ type: static, users: [ {{ subject: s1, username: alice }} ] }}
clients: [ {{ client_id: bench, secret: "{secret}", token_endpoint_auth_method: client_secret_post }} ]
"#
    );
    let clock = ManualClock::new();
    let engine = Arc::new(
        Engine::with_clock(Config::from_yaml(&yaml).unwrap(), Arc::new(clock.clone())).unwrap(),
    );
    let inner = tower::service_fn(|_req: Request<_>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"app"))))
    });
    let svc = CibaLayer::new(engine).layer(inner);
    let form = |path: &'static str, body: String| {
        Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let call = |req| {
        let svc = svc.clone();
        async move {
            let resp = svc.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };
    let (status, ack) = rt.block_on(call(form(
        "/bc-authorize",
        "client_id=bench&client_secret=bench-secret&scope=openid&login_hint=alice".into(),
    )));
    assert_eq!(status, 200);
    let ack: serde_json::Value = serde_json::from_slice(&ack).unwrap();
    let poll = format!(
        "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&client_id=bench&client_secret=bench-secret&auth_req_id={}",
        ack["auth_req_id"].as_str().unwrap()
    );
    c.bench_function("layer_poll_pending", |b| {
        b.iter(|| {
            clock.advance_ms(5_000);
            black_box(rt.block_on(call(form("/token", poll.clone()))))
        })
    });
    c.bench_function("layer_pass_through", |b| {
        b.iter(|| {
            black_box(rt.block_on(call(
                Request::get("/app").body(Full::new(Bytes::new())).unwrap(),
            )))
        })
    });
}

criterion_group!(benches, layer);
criterion_main!(benches);
