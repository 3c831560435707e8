//! # ciba-gateway
//!
//! Adds OpenID Connect **CIBA** (Client-Initiated Backchannel Authentication, poll mode) in
//! front of an OpenID provider that has none, without touching it.
//!
//! The protocol lives in one transport-agnostic [`Engine`]; adapters only convert types and
//! decide "is this request mine?":
//!
//! - [`tower::CibaLayer`] composes into any tower / axum / hyper stack;
//! - the `ciba-gateway` binary (feature `server`) runs the layer standalone from one YAML file.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ciba_gateway::{Config, Engine, tower::CibaLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("config/quickstart.yaml")?;   // typed
//! let engine = Arc::new(Engine::new(config)?);             // validated; keys, secrets loaded
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "your provider's routes" }))
//!     .layer(CibaLayer::new(engine));                      // CIBA endpoints added
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Requirement ids (BC-REQ-02, TOK-03, …) in the docs and tests refer to the project's CIBA
//! requirements checklist.

#![warn(missing_docs)]

pub mod channel;
pub mod clients;
pub mod clock;
pub mod config;
pub mod conn_limit;
pub mod engine;
pub mod log_throttle;
pub mod outbound;
#[cfg(feature = "pingora")]
pub mod pingora;
pub mod protocol;
pub mod ratelimit;
pub mod secret;
#[cfg(any(feature = "server", feature = "pingora"))]
pub mod serve;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod tower;
pub mod upstream;
pub mod users;

pub use config::Config;
pub use engine::{Engine, EngineRequest, Finding, Outcome, Route};

/// Installs ring as the process-wide rustls crypto provider. Call once at start-up, before any
/// outbound client is built; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
