//! Discovery and JWKS (DISC-01…05, GW-02), and the tower layer around an existing axum app:
//! its discovery gains the CIBA fields, and everything that is not CIBA — other grants at the
//! same token endpoint included — reaches it byte for byte (GW-01, TOK-11).

use ciba_test_support as common;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use ciba_gateway::CibaLayer;
use ciba_gateway::Engine;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn disc_01_to_05_standalone_document() {
    let gw = gateway().await;
    let d: Value = gw.discovery().await;
    assert_eq!(d["issuer"], gw.url);
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{}/bc-authorize", gw.url)
    );
    assert_eq!(d["token_endpoint"], format!("{}/token", gw.url));
    assert_eq!(d["jwks_uri"], format!("{}/jwks", gw.url));
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:openid:params:grant-type:ciba"))
    );
    assert!(d["backchannel_user_code_parameter_supported"].is_boolean());
    // DISC-04: signed requests and client assertions are offered with asymmetric algorithms
    // only, never `none` or HMAC; refresh tokens are a grant the gateway serves.
    for key in [
        "backchannel_authentication_request_signing_alg_values_supported",
        "token_endpoint_auth_signing_alg_values_supported",
    ] {
        assert_eq!(d[key], json!(["PS256", "ES256", "RS256", "EdDSA"]), "{key}");
    }
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("refresh_token"))
    );
    let methods = d["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(
        methods.contains(&json!("client_secret_basic"))
            && methods.contains(&json!("client_secret_post"))
    );
}

#[tokio::test]
async fn gw_02_id_token_verifies_against_the_advertised_jwks() {
    let auth = Authenticator::start().await;
    let gw = start(|c| c.channel = auth.channel_config()).await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    callback(&gw, &call.bearer, "SUCCEED").await;
    let tokens = gw.poll(&id).await;
    let claims = gw
        .verify_id_token(tokens.json["id_token"].as_str().unwrap(), "post-client")
        .await;
    assert_eq!(claims["sub"], "sub-alice");
}

#[tokio::test]
async fn healthz() {
    let gw = gateway().await;
    let r = gw
        .http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An existing app: its own discovery, a token endpoint that echoes exactly what it received,
/// and an ordinary route.
fn inner_app(issuer: String) -> axum::Router {
    axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move {
                    axum::Json(json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/authorize"),
                        "token_endpoint": format!("{issuer}/token"),
                        "grant_types_supported": ["authorization_code", "client_credentials"],
                        "custom_field": {"kept": true},
                    }))
                }
            }),
        )
        .route(
            "/token",
            post(|headers: HeaderMap, body: Bytes| async move {
                let ct = headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or(axum::http::HeaderValue::from_static(""));
                axum::response::Response::builder()
                    .header("x-inner", "token")
                    .header("x-seen-content-type", ct)
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }),
        )
        .route("/hello", get(|| async { "hello from the app" }))
}

async fn layered() -> (String, reqwest::Client) {
    ciba_gateway::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = Arc::new(Engine::new(base_config(addr)).unwrap());
    let app = inner_app(format!("http://{addr}")).layer(CibaLayer::new(engine));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), http_client())
}

#[tokio::test]
async fn gw_01_layer_merges_ciba_fields_into_the_inner_discovery() {
    let (url, http) = layered().await;
    let d: Value = http
        .get(format!("{url}/.well-known/openid-configuration"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], url);
    assert_eq!(d["authorization_endpoint"], format!("{url}/authorize"));
    assert_eq!(d["custom_field"], json!({"kept": true}));
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{url}/bc-authorize")
    );
    assert_eq!(
        d["grant_types_supported"],
        json!([
            "authorization_code",
            "client_credentials",
            "urn:openid:params:grant-type:ciba",
            "refresh_token"
        ])
    );
}

#[tokio::test]
async fn tok_11_other_grants_reach_the_inner_service_byte_for_byte() {
    let (url, http) = layered().await;
    // Repeated and oddly encoded parameters the gateway itself would refuse: not its business.
    for body in [
        "grant_type=client_credentials&scope=a+b&x=%41%42&dup=1&dup=2&empty=",
        "grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp%2Fcb&code_verifier=xyz",
    ] {
        let r = http
            .post(format!("{url}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-inner"], "token");
        assert_eq!(
            r.headers()["x-seen-content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(r.text().await.unwrap(), body);
    }
    let hello = http
        .get(format!("{url}/hello"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(hello, "hello from the app");
}

#[tokio::test]
async fn layer_serves_the_ciba_flow_around_the_app() {
    let (url, http) = layered().await;
    let r = http
        .post(format!("{url}/bc-authorize"))
        .form(&[
            ("client_id", POST_CLIENT.0),
            ("client_secret", POST_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", "bob"),
        ])
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap();
    let p = http
        .post(format!("{url}/token"))
        .form(&[
            ("grant_type", "urn:openid:params:grant-type:ciba"),
            ("client_id", POST_CLIENT.0),
            ("client_secret", POST_CLIENT.1),
            ("auth_req_id", id),
        ])
        .send()
        .await
        .unwrap();
    reply(p).await.assert_error(400, "authorization_pending");
}

#[tokio::test]
async fn head_on_merged_discovery_is_200() {
    let (url, http) = layered().await;
    let r = http
        .head(format!("{url}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
}

// Issue (providers as they are), item 5: standalone, discovery advertises the gateway's userinfo
// endpoint, which answers for the access tokens the gateway minted (OIDC Core §5.3) with the
// claims of the granted scopes, and refuses anything else (RFC 6750).
#[tokio::test]
async fn standalone_userinfo_answers_for_minted_tokens() {
    let auth = Authenticator::start().await;
    let gw = start(|c| c.channel = auth.channel_config()).await;
    let d = gw.discovery().await;
    let userinfo = d["userinfo_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(userinfo, format!("{}/userinfo", gw.url));
    let r = gw
        .bc(&[("scope", "openid email"), ("login_hint", "alice")])
        .await;
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let t = gw.poll(&id).await;
    assert_eq!(t.status, 200, "{}", t.json);
    let at = t.json["access_token"].as_str().unwrap();
    let get = |token: Option<&str>| {
        let mut rb = gw.http.get(&userinfo);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        async move { reply(rb.send().await.unwrap()).await }
    };
    let r = get(Some(at)).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["sub"], "sub-alice");
    assert_eq!(r.json["email"], "Alice@Example.com");
    assert!(r.json.get("name").is_none(), "profile was not granted");
    assert_eq!(r.headers["cache-control"], "no-store");
    // No token: a bare challenge, no error code (RFC 6750 §3.1). A token that is not the
    // gateway's, a token sent twice: refused.
    let none = get(None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    get(Some("not-a-jwt"))
        .await
        .assert_error(401, "invalid_token");
    let r = gw
        .http
        .post(&userinfo)
        .bearer_auth(at)
        .form(&[("access_token", at)])
        .send()
        .await
        .unwrap();
    reply(r).await.assert_error(400, "invalid_request");
}
