//! The gateway in front of a real, unmodified OpenID provider (panva's oidc-provider), one suite
//! run against both engines (pingora and tower): discovery, JWKS, pass-through of the provider's
//! own grants and login, the CIBA poll flow, and the provider going down and coming back.

use ciba_test_support as common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciba_gateway::config::RuntimeKind;
use common::upstream::*;
use common::*;
use serde_json::{Value, json};
use sha2::Digest;

both_runtimes!(
    gw_01_disc_discovery_keeps_upstream_fields_and_adds_ciba,
    gw_02_jwks_serves_upstream_and_gateway_keys,
    tok_11_client_credentials_passes_through,
    gw_01_authorization_code_pkce_login_is_transparent,
    ciba_poll_flow_id_token_verifies_against_advertised_jwks,
    upstream_down_then_back,
    bcp_05_forwarding_headers_are_the_gateways,
    tok_11_other_grants_reach_upstream_byte_for_byte,
    slow_upstream_is_504_json,
    compressed_upstream_answers_are_decoded_or_passed_through,
);

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = gw.get(path).await;
    (r.status, r.json)
}

async fn gw_01_disc_discovery_keeps_upstream_fields_and_adds_ciba(kind: RuntimeKind) {
    let (gw, _p) = provider_behind(kind, |_| {}).await;
    let (status, d) = get_json(&gw, "/.well-known/openid-configuration").await;
    assert_eq!(status, 200, "{d}");
    // The upstream's own fields, describing itself at the public (gateway) URL.
    assert_eq!(d["issuer"], gw.url, "issuer is never rewritten");
    assert_eq!(d["authorization_endpoint"], format!("{}/auth", gw.url));
    assert_eq!(d["token_endpoint"], format!("{}/token", gw.url));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert!(d["userinfo_endpoint"].is_string());
    // The CIBA fields.
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{}/bc-authorize", gw.url)
    );
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    let grants = d["grant_types_supported"].as_array().unwrap();
    for g in [
        "authorization_code",
        "client_credentials",
        "urn:openid:params:grant-type:ciba",
    ] {
        assert!(grants.contains(&json!(g)), "{g} missing from {grants:?}");
    }
    assert_eq!(d["jwks_uri"], format!("{}/jwks", gw.url));
}

async fn gw_02_jwks_serves_upstream_and_gateway_keys(kind: RuntimeKind) {
    let (gw, p) = provider_behind(kind, |_| {}).await;
    let (_, merged) = get_json(&gw, "/jwks").await;
    let upstream: Value = reqwest::get(format!("http://127.0.0.1:{}/jwks", p.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["kid"].as_str().map(String::from))
            .collect()
    };
    let merged_kids = kids(&merged);
    for k in kids(&upstream) {
        assert!(merged_kids.contains(&k), "upstream key {k} missing");
    }
    let own = gw.own_kid();
    assert!(
        merged_kids.contains(&own),
        "the gateway's key {own} is published"
    );
}

async fn tok_11_client_credentials_passes_through(kind: RuntimeKind) {
    let (gw, _p) = provider_behind(kind, |_| {}).await;
    let r = gw
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("app-client", "app-secret")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["token_type"], "Bearer");
    assert!(r.json["access_token"].is_string());
    // A wrong secret is the upstream's to refuse, in its own words.
    let r = gw
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("app-client", "nope")),
        )
        .await;
    r.assert_error(401, "invalid_client");
}

async fn gw_01_authorization_code_pkce_login_is_transparent(kind: RuntimeKind) {
    let (gw, _p) = provider_behind(kind, |_| {}).await;
    let verifier = ciba_test_support::random_token();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redirect_uri = "http://127.0.0.1:9/cb";
    let mut url = reqwest::Url::parse(&format!("{}/auth", gw.url)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", "app-client")
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st4te")
        .append_pair("nonce", "n0nce");
    // A browser follows the redirects and submits the provider's login and consent forms; it
    // never leaves the gateway until the provider sends it back to the client.
    let Stop::Redirect(back) = Browser::new().browse(url, &gw.url, "alice").await else {
        panic!("the provider did not redirect back to the client")
    };
    assert!(back.as_str().starts_with(redirect_uri), "{back}");
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st4te");
    let code = q["code"].clone();
    let t = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
            ],
            Some(("app-client", "app-secret")),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.json);
    assert!(t.json["id_token"].is_string());
    // The provider's own userinfo endpoint, through the gateway, accepts its access token.
    let d = gw.discovery().await;
    let ui = gw
        .http
        .get(d["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(t.json["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    let ui: Value = ui.json().await.unwrap();
    assert_eq!(ui["sub"], "alice");
}

async fn ciba_poll_flow_id_token_verifies_against_advertised_jwks(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let (gw, _p) = provider_behind(kind, |c| c.channel = auth.channel_config()).await;
    let id = gw.start_request().await;
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    gw.clock.advance_secs(5);
    let tokens = gw.poll(&id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    // Validate as a client would: from discovery's issuer and jwks_uri alone.
    let claims = gw
        .verify_id_token(tokens.json["id_token"].as_str().unwrap(), "post-client")
        .await;
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["iss"], gw.url);
}

async fn upstream_down_then_back(kind: RuntimeKind) {
    let (gw, mut p) = provider_behind(kind, |_| {}).await;
    let (s, _) = get_json(&gw, "/.well-known/openid-configuration").await;
    assert_eq!(s, 200);
    p.kill().await;

    // Pass-through: 502 with a JSON body.
    let r = gw.get("/me").await;
    r.assert_error(502, "server_error");
    // Discovery: 503 with Retry-After.
    let r = gw.get("/.well-known/openid-configuration").await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // The CIBA endpoints do not need the upstream.
    let id = gw.start_request().await;
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");

    p.restart().await;
    eventually("discovery recovers", || async {
        get_json(&gw, "/.well-known/openid-configuration").await.0 == 200
    })
    .await;
    let r = gw
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("app-client", "app-secret")),
        )
        .await;
    assert_eq!(r.status, 200, "pass-through recovers: {}", r.json);
}

async fn bcp_05_forwarding_headers_are_the_gateways(kind: RuntimeKind) {
    let echo = echo_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(kind, listener, echo, |_| {}).await;
    let r = gw
        .http
        .get(format!("{}/some/path?x=1", gw.url))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6")
        .header("x-client-cert", "forged")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    let seen: Value = r.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(seen["uri"], "/some/path?x=1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.url.trim_start_matches("http://"));
    assert_eq!(
        h["host"],
        gw.url.trim_start_matches("http://"),
        "Host is preserved by default"
    );
    assert!(h.get("forwarded").is_none());
    assert!(h.get("x-client-cert").is_none());
    assert_eq!(h["x-custom"], "kept");
}

async fn tok_11_other_grants_reach_upstream_byte_for_byte(kind: RuntimeKind) {
    let echo = echo_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(kind, listener, echo, |_| {}).await;
    for body in [
        "grant_type=client_credentials&scope=a+b&x=%41%42&dup=1&dup=2&empty=",
        "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp%2Fcb&code_verifier=xyz",
        // No grant at all: the provider's to answer (standalone, the gateway says it is missing).
        "client_id=app-client&scope=openid",
    ] {
        let r = gw
            .http
            .post(format!("{}/token", gw.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let seen: Value = r.json().await.unwrap();
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["body"], body);
        assert_eq!(seen["headers"]["content-length"], body.len().to_string());
    }
}

async fn slow_upstream_is_504_json(kind: RuntimeKind) {
    // An upstream that accepts and then takes longer than the gateway's read timeout.
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "too late"
    });
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = slow.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(slow, app).await });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(kind, listener, port, |c| {
        c.upstream.as_mut().unwrap().read_timeout_ms = 300
    })
    .await;
    let r = gw.get("/slow").await;
    r.assert_error(504, "server_error");
    if kind == RuntimeKind::Pingora {
        // pingora drops the connection after a failed proxy attempt: the answer must say so.
        assert_eq!(r.headers["connection"], "close");
    }
    // The gateway's own endpoints are unaffected.
    assert_eq!(gw.start_request().await.len(), 43);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Issue 3 (discovery): a provider behind a compressing proxy may gzip its answers even when
/// asked for `identity`. The gateway decodes what it merges (discovery) and leaves everything
/// it passes through exactly as the provider sent it.
async fn compressed_upstream_answers_are_decoded_or_passed_through(kind: RuntimeKind) {
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let doc = gzip(
        json!({
            "issuer": public,
            "token_endpoint": format!("{public}/token"),
            "grant_types_supported": ["authorization_code"],
            "x_marker": "decoded from gzip",
        })
        .to_string()
        .as_bytes(),
    );
    let asset = gzip(&b"a compressed asset, ".repeat(200));
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = {
        let (doc, asset, asked) = (doc.clone(), asset.clone(), Arc::clone(&asked));
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move |h: axum::http::HeaderMap| async move {
                    let ae = h
                        .get("accept-encoding")
                        .map(|v| v.to_str().unwrap().to_owned());
                    asked.lock().unwrap().push(ae.unwrap_or_default());
                    (
                        [
                            ("content-type", "application/json"),
                            ("content-encoding", "gzip"),
                        ],
                        doc,
                    )
                }),
            )
            .route(
                "/asset",
                axum::routing::get(move || async move {
                    (
                        [("content-type", "text/plain"), ("content-encoding", "gzip")],
                        asset,
                    )
                }),
            )
    };
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = up.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(up, app).await });
    let gw = gateway_in_front(kind, listener, port, |_| {}).await;

    let (status, d) = get_json(&gw, "/.well-known/openid-configuration").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["x_marker"], "decoded from gzip");
    assert_eq!(d["issuer"], gw.url);
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{}/bc-authorize", gw.url)
    );
    // Every fetch (the start-up one and the client's) asked for the document uncompressed.
    let asked = asked.lock().unwrap().clone();
    assert!(
        !asked.is_empty() && asked.iter().all(|a| a == "identity"),
        "what the gateway asked for: {asked:?}"
    );

    let r = gw
        .http
        .get(format!("{}/asset", gw.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["content-length"], asset.len().to_string());
    assert_eq!(
        r.bytes().await.unwrap(),
        asset,
        "passed through byte for byte"
    );
}
