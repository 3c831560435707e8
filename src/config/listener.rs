//! Where and how the gateway listens: `listen`, `tls`, `server`, `runtime`, `endpoints`.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The proxy runtime that serves the protocol engine in the binary (`runtime:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Cloudflare's pingora (`CibaProxy`).
    Pingora,
    /// hyper with the tower layer (`CibaLayer`), forwarding with a hyper-based client.
    Tower,
}

/// Listener TLS (rustls): HTTP/1.1 and HTTP/2 by ALPN.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: std::path::PathBuf,
    /// PEM private key.
    pub key_file: std::path::PathBuf,
}

/// Server process settings: threads, shutdown, and the connection limits that keep one client
/// from taking the listener away from everyone else.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads of the proxy. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// On SIGTERM, how long open connections get to finish, seconds. Default 5.
    pub shutdown_grace_secs: u64,
    /// How long a request's headers may take to arrive, seconds (slow-header clients are
    /// disconnected). Default 10.
    pub header_read_timeout_secs: u64,
    /// How long a connection may sit with no request in flight and no bytes moving before it
    /// is closed (idle keep-alive, or connected and silent), seconds. Default 30.
    pub idle_timeout_secs: u64,
    /// Connections served at once. Beyond it new connections wait in the listen backlog while
    /// idle ones are closed to make room; the listener never spins. Default 10000.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 100.
    pub http2_max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            shutdown_grace_secs: 5,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 30,
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
        }
    }
}

/// Endpoint paths. Every path left out is derived (see [`crate::engine::Paths`]): the gateway's
/// own endpoints sit under the issuer's path; the token and userinfo paths, shared with the
/// upstream, are read from the provider's discovery.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    /// Backchannel authentication endpoint. Default `{issuer path}/bc-authorize`.
    pub backchannel: Option<String>,
    /// More paths the backchannel endpoint answers at (never advertised), e.g. `/ciba/auth` for
    /// clients written from the seed write-up. Default none.
    pub backchannel_aliases: Vec<String>,
    /// Token endpoint (shared with the upstream). Default: the path of the provider's
    /// `token_endpoint`; standalone `{issuer path}/token`.
    pub token: Option<String>,
    /// Userinfo endpoint (shared with the upstream: the gateway answers for the access tokens
    /// it minted). Default: the path of the provider's `userinfo_endpoint`; standalone
    /// `{issuer path}/userinfo`.
    pub userinfo: Option<String>,
    /// Discovery document. Default `{issuer path}/.well-known/openid-configuration`.
    pub discovery: Option<String>,
    /// The gateway's JWKS. Default `{issuer path}/jwks`.
    pub jwks: Option<String>,
    /// Prefix of the built-in approval pages. Default `{issuer path}/approve`.
    pub approval: Option<String>,
    /// Callback for the HTTP authentication channel. Default `{issuer path}/ciba/callback`.
    pub callback: Option<String>,
    /// Health check. Default `/healthz`; empty to disable.
    pub health: Option<String>,
    /// Client registration (RFC 7591; with `registration.enabled`), and each client's
    /// configuration at `{registration}/{client_id}` (RFC 7592). Default `{issuer path}/register`.
    pub registration: Option<String>,
}

/// Paths the gateway shares with the provider may end in `/` (django-oauth-toolkit's
/// `/o/token/`); the gateway's own may not, since the approval pages live below theirs.
fn check_path(errs: &mut Vec<ConfigError>, field: &str, p: &str, shared: bool) {
    if p.is_empty() && field == "endpoints.health" {
        return;
    }
    if !p.starts_with('/')
        || p.contains(['?', '#', ' '])
        || (!shared && p.len() > 1 && p.ends_with('/'))
    {
        errs.push(ConfigError::new(
            field,
            "must be an absolute path like /bc-authorize",
        ));
    }
}

impl ServerConfig {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        if self.threads == Some(0) {
            errs.push(ConfigError::new("server.threads", "must be positive"));
        }
        for (field, zero) in [
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs == 0,
            ),
            ("server.idle_timeout_secs", self.idle_timeout_secs == 0),
            ("server.max_connections", self.max_connections == 0),
            (
                "server.http2_max_concurrent_streams",
                self.http2_max_concurrent_streams == 0,
            ),
        ] {
            if zero {
                errs.push(ConfigError::new(field, "must be positive"));
            }
        }
    }
}

impl RuntimeKind {
    pub(super) fn check(self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        if self == RuntimeKind::Pingora && cfg.upstream.is_none() {
            errs.push(ConfigError::new(
                "runtime",
                "the pingora runtime needs an upstream",
            ));
        }
    }
}

impl Endpoints {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        for (name, p, shared) in [
            ("backchannel", &self.backchannel, false),
            ("token", &self.token, true),
            ("userinfo", &self.userinfo, true),
            ("discovery", &self.discovery, false),
            ("jwks", &self.jwks, false),
            ("approval", &self.approval, false),
            ("callback", &self.callback, false),
            ("health", &self.health, false),
            ("registration", &self.registration, false),
        ] {
            if let Some(p) = p {
                check_path(errs, &format!("endpoints.{name}"), p, shared);
            }
        }
        for (i, p) in self.backchannel_aliases.iter().enumerate() {
            check_path(
                errs,
                &format!("endpoints.backchannel_aliases[{i}]"),
                p,
                false,
            );
        }
    }
}
