//! Clients that publish their keys at a `jwks_uri`: caching, re-fetching for a new `kid`
//! within bounds, and the SSRF guard, on both runtimes.

use super::*;

both_runtimes!(
    bc_jwt_03_jwks_uri_is_cached_and_fetched_again_for_a_new_kid,
    ssrf_jwks_uri_on_loopback_is_never_fetched,
);

/// A client's `jwks_uri`, served over HTTPS by a test CA: the keys it serves (changeable) and
/// how many times they were fetched.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(pki: &Pki, keys: Value) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (Arc::clone(&keys), Arc::clone(&fetches));
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, f) = (Arc::clone(&k), Arc::clone(&f));
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    axum::Json(k.lock().unwrap().clone())
                }
            }),
        );
        let port = pki.serve_https(app).await;
        Self {
            url: format!("https://localhost:{port}/jwks.json"),
            keys,
            fetches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A gateway whose client `uri-client` (`private_key_jwt`) publishes its keys at `jwks`; the
/// notification endpoints' outbound policy (which `jwks_uri`s share) trusts the test CA and,
/// when `allow_private`, loopback.
async fn with_jwks_uri(
    kind: RuntimeKind,
    pki: &Pki,
    jwks: &JwksServer,
    allow_private: bool,
) -> Gateway {
    let client = client(json!({
        "client_id": "uri-client", "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": jwks.url,
    }));
    let ca = pki.path("ca.pem");
    start_on(kind, move |c| {
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(ca.into());
        n.outbound.allow_private_networks = allow_private;
        c.clients.push(client);
    })
    .await
}

/// bc-authorize as `uri-client`, its assertion signed by `key`.
async fn bc_as_uri_client(gw: &Gateway, key: &SigningKey) -> Reply {
    let now = now_secs(&gw.clock);
    let assertion = key.sign(&json!({
        "iss": "uri-client", "sub": "uri-client", "aud": gw.url, "iat": now, "exp": now + 60,
        "jti": random_token(),
    }));
    gw.post_form(
        "/bc-authorize",
        &[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
            ("scope", "openid"),
            ("login_hint", "alice"),
        ],
        None,
    )
    .await
}

/// BC-JWT-03 with keys at a `jwks_uri`: fetched once and cached; a `kid` the cached set lacks
/// makes the gateway fetch again, but not more than once every 10 s (so a client rotating its
/// key is followed, and a stream of unknown `kid`s cannot make it hammer the URL).
async fn bc_jwt_03_jwks_uri_is_cached_and_fetched_again_for_a_new_kid(kind: RuntimeKind) {
    let pki = Pki::new();
    let (a, b) = (SigningKey::es256("a"), SigningKey::es256("b"));
    let jwks = JwksServer::start(&pki, SigningKey::jwks(&[&a])).await;
    let gw = with_jwks_uri(kind, &pki, &jwks, true).await;
    if gw.engines.len() > 1 {
        // Each replica keeps its own copy: the fetch counts below are one gateway's, checked
        // in the single-gateway run.
        return;
    }
    for _ in 0..3 {
        let r = bc_as_uri_client(&gw, &a).await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    assert_eq!(jwks.fetches(), 1, "cached");
    // The client rotates to key b.
    *jwks.keys.lock().unwrap() = SigningKey::jwks(&[&a, &b]);
    let first = bc_as_uri_client(&gw, &b).await;
    if first.status != 200 {
        // Within 10 s of the last fetch: refused without a fetch, then followed once allowed.
        first.assert_error(401, "invalid_client");
        assert_eq!(jwks.fetches(), 1, "no fetch within 10 s of the last");
        eventually_some("the new kid is fetched", || async {
            (bc_as_uri_client(&gw, &b).await.status == 200).then_some(())
        })
        .await;
    }
    assert_eq!(jwks.fetches(), 2);
    assert_eq!(bc_as_uri_client(&gw, &a).await.status, 200);
    assert_eq!(jwks.fetches(), 2);
}

/// The SSRF guard covers `jwks_uri`s: a client's URL on loopback is never fetched unless the
/// operator allows private networks.
async fn ssrf_jwks_uri_on_loopback_is_never_fetched(kind: RuntimeKind) {
    let pki = Pki::new();
    let a = SigningKey::es256("a");
    let jwks = JwksServer::start(&pki, SigningKey::jwks(&[&a])).await;
    let gw = with_jwks_uri(kind, &pki, &jwks, false).await;
    let replicas = gw.engines.len();
    let r = bc_as_uri_client(&gw, &a).await;
    assert_ne!(r.status, 200, "{}", r.json);
    assert_eq!(jwks.fetches(), 0);
    // The same server, allowed: fetched (the refusal above was the guard).
    let gw = with_jwks_uri(kind, &pki, &jwks, true).await;
    assert_eq!(bc_as_uri_client(&gw, &a).await.status, 200);
    assert!((1..=replicas).contains(&jwks.fetches()));
}
