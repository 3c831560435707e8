//! The test harness of ciba-gateway's integration suites, by concern:
//!
//! - [`gateway`]: the gateway on a real socket (127.0.0.1, ephemeral port) with a manual clock,
//!   the base configuration and its clients, and a real HTTP client to talk to it;
//! - [`runtimes`]: [`both_runtimes!`] and [`runtimes::start_on`], for suites that run on both
//!   proxy runtimes;
//! - [`providers`] and [`upstream`]: real OpenID providers (oidc-provider, django-oauth-toolkit)
//!   started by the tests, the gateway in front of them, and a form-filling browser;
//! - [`authenticator`]: a real HTTP server playing the external (Keycloak-style) authenticator;
//! - [`binary`]: the `ciba-gateway` binary run from a YAML file, as deployed;
//! - [`node`]: openid-client, the standard CIBA client library, run by Node.js;
//! - [`client`]: a CIBA client that knows a gateway by its URLs alone;
//! - [`tokens`] and [`pages`]: reading what the gateway hands out (JWTs, HTML pages);
//! - [`keys`]: a client's own signing keys (PS256, ES256, RS256) and the JWTs it signs;
//! - [`pki`], [`smtp`], [`webhook`], [`otlp`]: a test CA, an SMTP sink, a webhook receiver and
//!   an OTLP/HTTP trace receiver (what a collector sees);
//! - [`receiver`]: an HTTPS notification endpoint for ping clients;
//! - [`redis`]: real Redis servers (a single node, a three-master Cluster) for the shared store.
//!
//! It is a library crate (a dev-dependency of the gateway), so each suite uses what it needs
//! and nothing is dead code.

pub mod authenticator;
pub mod binary;
pub mod client;
pub mod gateway;
pub mod keys;
pub mod node;
pub mod otlp;
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
pub use client::UrlClient;
pub use gateway::*;
pub use pages::*;
pub use runtimes::*;
pub use tokens::*;

/// How long [`eventually`] and its siblings wait before they fail the test (only a failing
/// test waits this long; a passing one goes on the moment the condition holds).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often they ask again.
const ASK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits until `condition` holds and panics naming `what` if it still does not after
/// [`PATIENCE`]: the one way the suites wait for something another task or process does
/// (never a bare sleep).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(what, || {
        let c = condition();
        async move { c.await.then_some(()) }
    })
    .await
}

/// [`eventually`] for a condition that yields a value: the first `Some`.
pub async fn eventually_some<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} and still not: {what}"
        );
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// [`eventually`] outside a runtime (blocking the thread between attempts).
pub fn eventually_blocking(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {PATIENCE:?} and still not: {what}"
        );
        std::thread::sleep(ASK_EVERY);
    }
}

/// 256 random bits, base64url: file names, keys and ids the tests make up.
pub fn random_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The gateway's repository root (the fixtures live in its `tests/` folder).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
