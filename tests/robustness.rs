//! No input panics the engine or earns a 5xx: arbitrary bodies, content types and
//! authorization headers on every route (property tests).

use ciba_test_support as common;

use std::sync::OnceLock;

use bytes::Bytes;
use ciba_gateway::{Engine, EngineRequest, Outcome, Route};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

fn engine() -> &'static (Engine, tokio::runtime::Runtime) {
    static E: OnceLock<(Engine, tokio::runtime::Runtime)> = OnceLock::new();
    E.get_or_init(|| common::in_process(|_| {}))
}

fn run(
    route: Route,
    method: Method,
    path: &str,
    ct: Option<&str>,
    auth: Option<&str>,
    body: Vec<u8>,
) -> u16 {
    let (engine, rt) = engine();
    let mut headers = HeaderMap::new();
    if let Some(ct) = ct.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("content-type", ct);
    }
    if let Some(a) = auth.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert("authorization", a);
    }
    let req = EngineRequest {
        method,
        uri: path.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
        headers,
        body: Bytes::from(body),
        connection: Default::default(),
    };
    match rt.block_on(engine.handle(route, req)) {
        Outcome::Respond(r) => r.status().as_u16(),
        Outcome::Forward(_) => 0,
    }
}

fn form_body() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "client_id",
        "client_secret",
        "scope",
        "login_hint",
        "login_hint_token",
        "id_token_hint",
        "binding_message",
        "user_code",
        "requested_expiry",
        "acr_values",
        "grant_type",
        "auth_req_id",
        "request",
        "csrf",
        "decision",
        "x",
    ]);
    let value = prop_oneof![
        Just("post-client".to_owned()),
        Just("post-secret".to_owned()),
        Just("openid".to_owned()),
        Just("alice".to_owned()),
        Just("urn:openid:params:grant-type:ciba".to_owned()),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ];
    prop::collection::vec((key, value), 0..10).prop_map(|pairs| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, &v);
        }
        s.finish().into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn engine_never_panics_or_fails_on_formlike_bodies(body in form_body(), basic in proptest::option::of("[ -~]{0,60}")) {
        for (route, path) in [(Route::Backchannel, "/bc-authorize"), (Route::Token, "/token"), (Route::Approval, "/approve/abc")] {
            let status = run(route, Method::POST, path, Some("application/x-www-form-urlencoded"), basic.as_deref(), body.clone());
            prop_assert!(status < 500 || status == 503, "{route:?} answered {status}");
        }
    }

    #[test]
    fn engine_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..300), ct in "[ -~]{0,40}") {
        for (route, path) in [(Route::Backchannel, "/bc-authorize"), (Route::Token, "/token"), (Route::ChannelCallback, "/ciba/callback"), (Route::Approval, "/approve/x")] {
            let status = run(route, Method::POST, path, Some(&ct), Some("Bearer x.y.z"), body.clone());
            prop_assert!(status < 500 || status == 503, "{route:?} answered {status}");
        }
    }
}
