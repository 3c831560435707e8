//! An existing axum identity provider — its own `/token` and its own discovery document,
//! behind tower-http's trace, CORS and compression layers as their docs build them — gains
//! CIBA by adding one layer to its `ServiceBuilder`.
//!
//! ```text
//! cargo run --example axum_idp
//! curl -s http://127.0.0.1:3000/.well-known/openid-configuration   # its fields + the CIBA fields
//! curl -s -d 'grant_type=client_credentials' http://127.0.0.1:3000/token   # still the app's
//! curl -s -d 'client_id=my-client&client_secret=supersecret&scope=openid&login_hint=alice' \
//!      http://127.0.0.1:3000/bc-authorize                                  # CIBA, from the layer
//! ```
//!
//! Its tests (`cargo test --example axum_idp`) drive both orders of the stack over real HTTP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::{Json, Router};
use ciba_gateway::{CibaLayer, Config, Engine};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

/// The application as it was before CIBA: nothing here knows about the gateway.
fn existing_app(origin: &str) -> Router {
    let discovery = json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/authorize"),
        "token_endpoint": format!("{origin}/token"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "response_types_supported": ["code"],
    });
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        // The app's own grants. It answers with the bytes it was sent, so that anyone can see
        // they arrive untouched.
        .route(
            "/token",
            post(|body: Bytes| async move {
                Json(json!({
                    "access_token": "app-token",
                    "token_type": "Bearer",
                    "received": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route("/", get(|| async { "the app's home page ".repeat(20) }))
}

/// The recommended order: the CIBA layer innermost, so that trace, CORS and compression
/// apply to its answers too.
fn with_ciba(app: Router, engine: Arc<Engine>) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            .layer(CompressionLayer::new())
            .layer(CibaLayer::new(engine)),
    )
}

/// The other order compiles and serves too; the CIBA answers then bypass the layers inside it
/// (no CORS headers, no compression, no trace span on them).
#[cfg_attr(not(test), allow(dead_code))]
fn with_ciba_outermost(app: Router, engine: Arc<Engine>) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(CibaLayer::new(engine))
            .layer(TraceLayer::new_for_http())
            .layer(CorsLayer::permissive())
            .layer(CompressionLayer::new()),
    )
}

const ADDR: &str = "127.0.0.1:3000";

#[cfg_attr(test, allow(dead_code))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let mut config = Config::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/quickstart.yaml"
    ))?;
    let origin = format!("http://{ADDR}");
    config.public_url = origin.parse()?;
    let engine = Arc::new(Engine::new(config)?);

    let app = with_ciba(existing_app(&origin), Arc::clone(&engine));

    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!("axum IdP with CIBA on {origin}");
    // Held long polls are answered as the shutdown starts, so it does not wait for them.
    axum::serve(listener, app)
        .with_graceful_shutdown(engine.shutdown_on(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciba_test_support::{Authenticator, UrlClient};
    use std::io::Read as _;

    struct Served {
        origin: String,
        http: reqwest::Client,
        auth: Authenticator,
        engine: Arc<Engine>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    /// The quickstart configuration (its client, users, long polling), with a real HTTP
    /// authentication channel so that the test can approve.
    async fn serve(stack: fn(Router, Arc<Engine>) -> Router) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let auth = Authenticator::start().await;
        let mut config = Config::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/quickstart.yaml"
        ))
        .unwrap();
        config.public_url = origin.parse().unwrap();
        config.channel = auth.channel_config();
        // Each test's engine in one process: registration (whose clients file one process
        // locks) is the binary's, tested in tests/registration.rs.
        config.registration.enabled = false;
        let engine = Arc::new(Engine::new(config).unwrap());
        let app = stack(existing_app(&origin), Arc::clone(&engine));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let signal = engine.shutdown_on(async {
            let _ = stopped.await;
        });
        let done = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        });
        Served {
            origin,
            http: ciba_test_support::http_client(),
            auth,
            engine,
            stop: Some(stop),
            done,
        }
    }

    impl Served {
        /// The quickstart's client, `my-client`.
        fn client(&self) -> UrlClient {
            UrlClient {
                http: self.http.clone(),
                origin: self.origin.clone(),
                prefix: String::new(),
                token_path: "/token".into(),
                client: ("my-client", "supersecret"),
            }
        }
    }

    fn gunzip(b: &[u8]) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(b)
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// CIBA through the stack: bc-authorize (BC-ACK-01), the user approves through the
    /// authentication channel, the poll gets the tokens (TOK-08); discovery is the app's plus
    /// the CIBA fields (GW-01).
    async fn ciba_flow(s: &Served) {
        let tokens = s.client().flow("alice", &s.auth).await;
        assert_ne!(tokens["access_token"], "app-token");

        let d: serde_json::Value = s
            .http
            .get(format!("{}/.well-known/openid-configuration", s.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            d["authorization_endpoint"],
            format!("{}/authorize", s.origin)
        );
        assert_eq!(
            d["backchannel_authentication_endpoint"],
            format!("{}/bc-authorize", s.origin)
        );
    }

    /// The app's own routes and grants reach it untouched (TOK-11: the body byte for byte).
    async fn the_apps_own(s: &Served) {
        let body = "grant_type=client_credentials&scope=a+b%20c&x=%E2%9C%93&x=";
        let r = s
            .http
            .post(format!("{}/token", s.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let j: serde_json::Value = r.json().await.unwrap();
        assert_eq!(j["access_token"], "app-token");
        assert_eq!(j["received"], body);
        let r = s
            .http
            .get(format!("{}/", s.origin))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert!(gunzip(&r.bytes().await.unwrap()).starts_with("the app's home page"));
    }

    /// A CORS preflight on the backchannel endpoint is the CORS layer's, in either order.
    async fn preflight(s: &Served) {
        let r = s
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/bc-authorize", s.origin),
            )
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
    }

    /// One of the gateway's own answers (a refused client: 401 JSON) as a browser's client sees
    /// it, with `Accept-Encoding: gzip` and an `Origin`.
    async fn ciba_answer(s: &Served) -> reqwest::Response {
        s.http
            .post(format!("{}/bc-authorize", s.origin))
            .header("accept-encoding", "gzip")
            .header("origin", "https://app.example")
            .form(&[("client_id", "my-client"), ("client_secret", "wrong")])
            .send()
            .await
            .unwrap()
    }

    /// One documented way to stop: a long poll held when the shutdown signal comes is answered
    /// at once (`authorization_pending`) and the server returns, instead of waiting for it.
    async fn shutdown_answers_held_polls(mut s: Served) {
        let id = s.client().bc_authorize("bob").await;
        let poll = tokio::spawn({
            let client = s.client();
            async move { client.poll(&id).await }
        });
        ciba_test_support::eventually("the poll is held", || async { s.engine.held_polls() == 1 })
            .await;
        s.stop.take().unwrap().send(()).unwrap();
        poll.await
            .unwrap()
            .assert_error(400, "authorization_pending");
        s.done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn recommended_order_serves_ciba_through_trace_cors_and_compression() {
        let s = serve(with_ciba).await;
        the_apps_own(&s).await;
        ciba_flow(&s).await;
        preflight(&s).await;
        let r = ciba_answer(&s).await;
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.status(), 401);
        let e: serde_json::Value =
            serde_json::from_str(&gunzip(&r.bytes().await.unwrap())).unwrap();
        assert_eq!(e["error"], "invalid_client");
        shutdown_answers_held_polls(s).await;
    }

    #[tokio::test]
    async fn outermost_order_serves_too_but_its_answers_bypass_the_inner_layers() {
        let s = serve(with_ciba_outermost).await;
        the_apps_own(&s).await;
        ciba_flow(&s).await;
        preflight(&s).await;
        let r = ciba_answer(&s).await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        assert!(r.headers().get("content-encoding").is_none());
        shutdown_answers_held_polls(s).await;
    }
}
