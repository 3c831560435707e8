//! The HTTP user directory, against a real lookup service: found users, unknown users
//! (`unknown_user_id`), a failing directory (503), user codes from the directory, and caching.

use ciba_test_support as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ciba_gateway::config::{Outbound, UsersConfig};
use common::*;
use serde_json::{Value, json};

struct Directory {
    url: String,
    calls: Arc<AtomicUsize>,
}

async fn directory(user_code_hash: String) -> Directory {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/lookup",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let c = Arc::clone(&c);
            let hash = user_code_hash.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer dir-token") {
                    return (StatusCode::UNAUTHORIZED, Json(json!({})));
                }
                match body["login_hint"].as_str() {
                    Some("carol") => (StatusCode::OK, Json(json!({"subject": "sub-carol", "email": "carol@example.com", "name": "Carol", "user_code_hash": hash}))),
                    Some("explode") => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
                    _ => (StatusCode::NOT_FOUND, Json(json!({}))),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/lookup", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Directory { url, calls }
}

fn token_file() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "ciba-dir-token-{}",
        ciba_test_support::random_token()
    ));
    std::fs::write(&p, "dir-token\n").unwrap();
    p
}

#[tokio::test]
async fn bc_req_09_http_directory_resolves_hints_and_caches_them() {
    let dir = directory(ciba_gateway::hash_secret("2468")).await;
    let token = token_file();
    let gw = start(|c| {
        c.users = UsersConfig::Http {
            url: dir.url.parse().unwrap(),
            bearer_token: Some(ciba_gateway::config::SecretRef::new(format!(
                "file:{}",
                token.display()
            ))),
            cache_secs: 60,
            outbound: Outbound {
                timeout_ms: 2000,
                allow_private_networks: true,
            },
        }
    })
    .await;
    // The cache is each process's own: with replicas (CIBA_TEST_REPLICAS), one more request
    // than replicas reaches one of them a second time.
    let replicas = gw.engines.len();
    for _ in 0..=replicas {
        assert_eq!(
            gw.bc(&[("scope", "openid"), ("login_hint", "carol")])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        dir.calls.load(Ordering::SeqCst),
        replicas,
        "a repeated lookup came from the cache"
    );
    gw.bc(&[("scope", "openid"), ("login_hint", "dave")])
        .await
        .assert_error(400, "unknown_user_id");
    let r = gw
        .bc(&[("scope", "openid"), ("login_hint", "explode")])
        .await;
    r.assert_error(503, "temporarily_unavailable");
    // The directory's user code hash is honoured.
    let p = |uc: &'static str| {
        [
            ("client_id", CODE_CLIENT.0),
            ("client_secret", CODE_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", "carol"),
            ("user_code", uc),
        ]
    };
    gw.post_form("/bc-authorize", &p("1111"), None)
        .await
        .assert_error(400, "invalid_user_code");
    assert_eq!(
        gw.post_form("/bc-authorize", &p("2468"), None).await.status,
        200
    );
    let _ = std::fs::remove_file(token);
}

#[tokio::test]
async fn sec_05_directory_on_loopback_is_refused_unless_allowed() {
    let dir = directory(String::new()).await;
    let gw = start(|c| {
        c.users = UsersConfig::Http {
            url: dir.url.parse().unwrap(),
            bearer_token: None,
            cache_secs: 60,
            outbound: Outbound::default(),
        }
    })
    .await;
    gw.bc(&[("scope", "openid"), ("login_hint", "carol")])
        .await
        .assert_error(503, "temporarily_unavailable");
    assert_eq!(dir.calls.load(Ordering::SeqCst), 0);
}
