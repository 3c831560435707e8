//! The test harness of ciba-gateway's integration suites, by concern:
//!
//! - [`gateway`]: the gateway on a real socket (127.0.0.1, ephemeral port) with a manual clock,
//!   the base configuration and its clients, and a real HTTP client to talk to it;
//! - [`runtimes`]: [`both_runtimes!`] and [`runtimes::start_on`], for suites that run on both
//!   proxy runtimes;
//! - [`providers`] and [`upstream`]: real OpenID providers (oidc-provider, django-oauth-toolkit)
//!   started by the tests, the gateway in front of them, and a form-filling browser;
//! - [`authenticator`]: a real HTTP server playing the external (Keycloak-style) authenticator;
//! - [`tokens`] and [`pages`]: reading what the gateway hands out (JWTs, HTML pages);
//! - [`pki`], [`smtp`], [`webhook`]: a test CA, an SMTP sink and a webhook receiver;
//! - [`receiver`]: an HTTPS notification endpoint for ping clients;
//! - [`redis`]: real Redis servers (a single node, a three-master Cluster) for the shared store.
//!
//! It is a library crate (a dev-dependency of the gateway), so each suite uses what it needs
//! and nothing is dead code.

pub mod authenticator;
pub mod gateway;
pub mod pages;
pub mod pki;
pub mod providers;
pub mod receiver;
pub mod redis;
pub mod runtimes;
pub mod smtp;
pub mod tokens;
pub mod upstream;
pub mod webhook;

pub use authenticator::*;
pub use gateway::*;
pub use pages::*;
pub use runtimes::*;
pub use tokens::*;

/// The gateway's repository root (the fixtures live in its `tests/` folder).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
