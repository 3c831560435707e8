//! Fuzzing on the stable toolchain: seed inputs from `tests/fuzz/corpus/<target>/` (and the
//! shipped `config/*.yaml`), mutated by proptest (bit flips, byte edits, splices of two seeds)
//! and fed to every parser that reads what a client or a provider sends. Zero panics, zero 5xx.
//!
//! `CIBA_FUZZ_CASES` sets the cases per target (default 256; `scripts/test` runs 2 000, about
//! 12 s here). A failing case is shrunk and printed: add it to the target's corpus with the
//! fix, so that every later run starts from it.

use ciba_test_support as common;

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use ciba_gateway::{Config, Engine, EngineRequest, Outcome, Route};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("CIBA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// The seeds of one target.
fn corpus(target: &str) -> &'static [Vec<u8>] {
    static CORPORA: OnceLock<std::collections::HashMap<String, Vec<Vec<u8>>>> = OnceLock::new();
    let all = CORPORA.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut all = std::collections::HashMap::new();
        for t in ["form", "basic", "config", "jwt"] {
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(root.join("tests/fuzz/corpus").join(t))
                .unwrap()
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect();
            if t == "config" {
                for e in std::fs::read_dir(root.join("config")).unwrap() {
                    seeds.push(std::fs::read(e.unwrap().path()).unwrap());
                }
            }
            assert!(!seeds.is_empty(), "empty corpus {t}");
            all.insert(t.to_owned(), seeds);
        }
        all
    });
    &all[target]
}

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// Replace from here on with the tail of another seed.
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (
            any::<usize>(),
            prop::sample::select(b"&=%+.:\"'{}[]\n\r\t\0\xff\xc3 ,#*!-".to_vec())
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, s, b)| Edit::Splice(a, s, b)),
    ]
}

/// A seed of `target` with up to 8 edits.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    (0..seeds.len(), prop::collection::vec(edit(), 0..8)).prop_map(move |(i, edits)| {
        let mut b = seeds[i].clone();
        for e in edits {
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match e {
                Edit::Flip(i, bit) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b[i] ^= 1 << bit;
                }
                Edit::Set(i, v) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b[i] = v;
                }
                Edit::Insert(i, v) => {
                    let i = at(i, b.len() + 1);
                    b.insert(i, v);
                }
                Edit::Remove(i) if !b.is_empty() => {
                    let i = at(i, b.len());
                    b.remove(i);
                }
                Edit::Splice(i, s, from) => {
                    let other = &seeds[at(s, seeds.len())];
                    let i = at(i, b.len() + 1);
                    b.truncate(i);
                    b.extend_from_slice(&other[at(from, other.len() + 1).min(other.len())..]);
                }
                _ => {}
            }
        }
        b
    })
}

fn engine() -> &'static (Engine, tokio::runtime::Runtime) {
    static E: OnceLock<(Engine, tokio::runtime::Runtime)> = OnceLock::new();
    // Every request of the run reaches the checks, not the rate limits.
    E.get_or_init(|| {
        common::in_process(|c| {
            c.limits.bc_per_client = None;
            c.limits.bc_per_user = None;
        })
    })
}

/// The status the engine answers with (0: handed back to be forwarded).
fn status(route: Route, method: Method, path: &str, headers: HeaderMap, body: Vec<u8>) -> u16 {
    let (engine, rt) = engine();
    let req = EngineRequest {
        method,
        uri: path.parse().unwrap(),
        headers,
        body: Bytes::from(body),
        connection: Default::default(),
    };
    match rt.block_on(engine.handle(route, req)) {
        Outcome::Respond(r) => r.status().as_u16(),
        Outcome::Forward(_) => 0,
    }
}

fn form_headers(auth: Option<&[u8]>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if let Some(v) = auth.and_then(|a| HeaderValue::from_bytes(a).ok()) {
        h.insert("authorization", v);
    }
    h
}

const ROUTES: &[(Route, &str)] = &[
    (Route::Backchannel, "/bc-authorize"),
    (Route::Token, "/token"),
    (Route::Userinfo, "/userinfo"),
    (Route::Approval, "/approve/x"),
    (Route::Consent, "/approve/consent"),
    (Route::ChannelCallback, "/ciba/callback"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The form parser: whatever the bytes, an answer and no panic; what it accepts is UTF-8.
    #[test]
    fn form_parser(body in mutated("form")) {
        let _ = ciba_gateway::fuzzing::form_field(&body, "scope");
    }

    /// The engine end to end, on every route it answers: mutated forms, with and without a
    /// mutated Authorization header. Never a 5xx (503 is a dependency, none is down here).
    #[test]
    fn engine_end_to_end(body in mutated("form"), auth in proptest::option::of(mutated("basic")), r in 0..ROUTES.len()) {
        let (route, path) = ROUTES[r];
        let s = status(route, Method::POST, path, form_headers(auth.as_deref()), body);
        prop_assert!(s < 500, "{route:?} answered {s}");
    }

    /// Client authentication with Basic credentials: any header value is an OAuth error or a
    /// client, never a panic.
    #[test]
    fn basic_credentials(auth in mutated("basic")) {
        let body = b"grant_type=urn:openid:params:grant-type:ciba&auth_req_id=x".to_vec();
        let s = status(Route::Token, Method::POST, "/token", form_headers(Some(&auth)), body);
        prop_assert!(s == 400 || s == 401, "{s}");
    }

    /// The configuration loader and the engine built from it: any text is an engine or a list
    /// of problems, never a panic.
    #[test]
    fn config_loader(text in mutated("config")) {
        if let Ok(cfg) = std::str::from_utf8(&text).map_err(drop).and_then(|t| Config::from_yaml(t).map_err(drop)) {
            let _ = ciba_gateway::Engine::new(cfg);
        }
    }

    /// Tokens the gateway receives: callback bearers, `id_token_hint`s and bearer access tokens
    /// at userinfo. Never a panic, never a 5xx, never accepted (none is signed by its keys).
    #[test]
    fn received_jwts(jwt in mutated("jwt")) {
        let Ok(token) = std::str::from_utf8(&jwt) else { return Ok(()) };
        let bearer = format!("Bearer {token}").into_bytes();
        let s = status(Route::ChannelCallback, Method::POST, "/ciba/callback", form_headers(Some(&bearer)), b"{}".to_vec());
        prop_assert!(s == 400 || s == 401, "callback answered {s}");
        let hint = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("client_id", "post-client"), ("client_secret", "post-secret"), ("scope", "openid"), ("id_token_hint", token)])
            .finish();
        let s = status(Route::Backchannel, Method::POST, "/bc-authorize", form_headers(None), hint.into_bytes());
        prop_assert!(s == 400, "id_token_hint answered {s}");
        let s = status(Route::Userinfo, Method::GET, "/userinfo", form_headers(Some(&bearer)), Vec::new());
        prop_assert!(s == 0 || s == 401 || s == 400, "userinfo answered {s}");
    }
}

/// Upstream ID tokens, as the gateway validates them after a login at the provider: a real
/// HTTP provider (discovery and JWKS on 127.0.0.1) and mutated tokens. Never a panic, never
/// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_id_tokens() {
    use common::upstream::gateway_in_front;
    let keys = ciba_gateway::fuzzing::ProviderKeys::new();
    let jwks = keys.jwks();
    let app = {
        let jwks = jwks.clone();
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(|| async {
                    axum::Json(
                        serde_json::json!({"issuer": "http://up", "jwks_uri": "http://up/jwks"}),
                    )
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            )
    };
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = up.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(up, app).await });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(
        ciba_gateway::config::RuntimeKind::Tower,
        listener,
        port,
        |_| {},
    )
    .await;
    let engine = std::sync::Arc::clone(&gw.engine);
    let validate = |token: String| {
        let engine = std::sync::Arc::clone(&engine);
        async move { ciba_gateway::fuzzing::validate_upstream_id_token(&engine, &token, "c", "n").await }
    };
    // A valid token, signed by the provider's key, is the seed the mutations start from.
    let valid = keys.sign(
        &serde_json::json!({"iss": "http://up", "aud": "c", "sub": "s", "exp": 9_999_999_999u64, "nonce": "n"}),
    );
    assert!(validate(valid.clone()).await.is_ok(), "the harness works");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (mutated("jwt"), prop::collection::vec(edit(), 1..6));
    let rt = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(seed, edits)| {
            // Half the cases edit the valid token, half a corpus seed.
            let base = if edits.len() % 2 == 0 {
                valid.clone().into_bytes()
            } else {
                seed
            };
            let mut token = base;
            for e in edits {
                if let Edit::Flip(i, bit) = e
                    && !token.is_empty()
                {
                    let i = i % token.len();
                    token[i] ^= 1 << bit;
                }
            }
            let Ok(token) = String::from_utf8(token) else {
                return Ok(());
            };
            if token == valid {
                return Ok(());
            }
            let r = rt.block_on(validate(token.clone()));
            // Base64url has unused bits in the last character of each part: flipping one of
            // those leaves the same bytes, so the same valid token. Anything else accepted is a
            // bug.
            if r.is_ok() {
                prop_assert_eq!(decoded(&token), decoded(&valid), "accepted {}", token);
            }
            Ok(())
        })
    });
    result.unwrap();
}

/// The bytes of a JWT's three parts (lenient about unused trailing bits).
fn decoded(jwt: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    jwt.split('.')
        .map(|p| lenient.decode(p).unwrap_or_default())
        .collect()
}
