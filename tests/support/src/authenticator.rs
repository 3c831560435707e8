//! A real HTTP server playing a Keycloak-style authenticator, and the gateway's callback.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ciba_gateway::config::{ChannelConfig, Outbound};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::gateway::{Gateway, Reply, reply};

/// What the authenticator received.
#[derive(Debug, Clone)]
pub struct ChannelCall {
    pub bearer: String,
    pub body: Value,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
}

/// A real HTTP server playing a Keycloak-style authenticator: records every authentication
/// request and answers with the configured status.
pub struct Authenticator {
    pub url: String,
    pub calls: Mutex<mpsc::UnboundedReceiver<ChannelCall>>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

impl Authenticator {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(std::sync::atomic::AtomicU16::new(201));
        let state = (tx, Arc::clone(&status));
        let app = axum::Router::new()
            .route(
                "/authn",
                post(
                    |State((tx, status)): State<(
                        mpsc::UnboundedSender<ChannelCall>,
                        Arc<std::sync::atomic::AtomicU16>,
                    )>,
                     headers: HeaderMap,
                     axum::Json(body): axum::Json<Value>| async move {
                        let bearer = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        let traceparent = headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let _ = tx.send(ChannelCall {
                            bearer,
                            body,
                            traceparent,
                        });
                        StatusCode::from_u16(status.load(std::sync::atomic::Ordering::SeqCst))
                            .unwrap()
                    },
                ),
            )
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/authn", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            calls: Mutex::new(rx),
            status,
        }
    }

    pub fn answer_with(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next authentication request (waits for it, up to [`crate::PATIENCE`]: a client
    /// process that starts slowly on a loaded machine is not a failure).
    pub async fn next_call(&self) -> ChannelCall {
        tokio::time::timeout(crate::PATIENCE, self.calls.lock().await.recv())
            .await
            .expect("the authenticator was called")
            .expect("channel open")
    }

    /// The channel configuration pointing at this authenticator (loopback allowed).
    pub fn channel_config(&self) -> ChannelConfig {
        ChannelConfig::Http {
            url: self.url.parse().unwrap(),
            bearer_secret: None,
            outbound: Outbound {
                timeout_ms: 3000,
                allow_private_networks: true,
            },
        }
    }
}

/// Posts an authenticator callback to the gateway.
pub async fn callback(gw: &Gateway, bearer: &str, status: &str) -> Reply {
    let resp = gw
        .http
        .post(format!("{}{}", gw.url, gw.engine.paths().callback))
        .bearer_auth(bearer)
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap();
    reply(resp).await
}

/// The gateway on runtime `kind` (see [`crate::runtimes::start_on`]) whose requests are decided
/// by a fresh [`Authenticator`], with the base configuration changed by `edit`.
pub async fn start_with_authenticator(
    kind: ciba_gateway::config::RuntimeKind,
    edit: impl FnOnce(&mut ciba_gateway::Config) + Send,
) -> (Gateway, Authenticator) {
    let auth = Authenticator::start().await;
    let gw = crate::runtimes::start_on(kind, |c| {
        c.channel = auth.channel_config();
        edit(c);
    })
    .await;
    (gw, auth)
}
