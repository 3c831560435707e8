//! # ciba-gateway
//!
//! Adds OpenID Connect **CIBA** (Client-Initiated Backchannel Authentication: poll, ping and
//! push) in front of an OpenID provider that has none, without touching it.
//!
//! The protocol lives in one transport-agnostic [`Engine`], built from a [`Config`] (YAML, or
//! [`Config::builder`] in code). Two adapters put it in front of your service:
//!
//! - [`CibaLayer`] ([`layer`]) composes into any tower / axum / hyper stack, next to
//!   tower-http's middleware;
//! - [`proxy::CibaModule`] (feature `pingora`) is called from the phases of a pingora
//!   `ProxyHttp` you own; [`proxy::CibaProxy`] is the ready-made proxy.
//!
//! The `ciba-gateway` binary (feature `server`) runs either standalone from one YAML file
//! ([`serve`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use ciba_gateway::{CibaLayer, Config, Engine};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder("http://127.0.0.1:8080")
//!     .client("my-client", "supersecret")
//!     .user("alice", "248289761001")
//!     .build()?;
//! let engine = Arc::new(Engine::new(config)?);                   // validated; keys loaded
//! let app = Router::new()
//!     .route("/", get(|| async { "your provider's routes" }))
//!     .layer(CibaLayer::new(Arc::clone(&engine)));               // CIBA endpoints added
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(engine.shutdown_on(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [`Engine::reload`] replaces the clients, users, signing keys, limits and channel of a running
//! engine from a new [`Config`] (the binary does it on SIGHUP), or refuses it whole.
//!
//! Every request the engine serves is a span of its W3C trace, and the calls it makes carry
//! `traceparent` ([`trace`]: whose trace is continued, hooks for your own spans, OpenTelemetry
//! export with the feature `otel`).
//!
//! The rest of the public surface: [`OAuthError`] (the errors the endpoints answer, in the
//! OAuth JSON format), [`store`] (the storage interfaces, for writing a backend), [`clock`]
//! (time as a dependency, for tests), [`hash_secret`] and [`generate_signing_key`] (what the
//! binary's `hash-secret` and `keygen` print).
//!
//! Requirement ids (BC-REQ-02, TOK-03, …) in the docs and tests refer to the project's CIBA
//! requirements checklist.

#![warn(missing_docs, unnameable_types)]

pub mod audit;
mod channel;
mod clients;
pub mod clock;
pub mod config;
#[cfg(any(feature = "server", feature = "pingora"))]
mod conn_limit;
mod domain;
mod engine;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod jwks;
mod jws;
pub mod layer;
mod live;
#[cfg(feature = "server")]
pub mod log_format;
#[cfg(feature = "server")]
pub mod log_limit;
pub mod metrics;
mod outbound;
mod protocol;
#[cfg(feature = "pingora")]
pub mod proxy;
mod ratelimit;
mod secret;
#[cfg(any(feature = "server", feature = "pingora"))]
pub mod serve;
pub mod store;
mod tls;
mod tokens;
pub mod trace;
mod upstream;
mod users;

pub use channel::webhook_signature;
pub use config::{Config, ConfigBuilder, ConfigError, ConfigErrors};
pub use engine::{
    Connection, Engine, EngineRequest, Finding, Outcome, Paths, RELOADABLE, Reloaded, Route,
    SharedPaths, WrappedDiscovery,
};
pub use layer::{CibaBody, CibaLayer, CibaService};
pub use protocol::{ErrorCode, OAuthError};
pub use secret::hash_secret;
pub use tls::ClientCertificate;
pub use tokens::generate_pem as generate_signing_key;
pub use upstream::HeaderEdits;

/// Installs ring as the process-wide crypto provider of rustls and of jsonwebtoken (JWT
/// signatures), for each unless one is installed already (then it is left alone).
/// [`Engine::new`] calls it, so there is no need to; an application that builds its own rustls
/// clients or signs JWTs before the engine may call it first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jws::RING);
}
