//! The OpenID provider behind the gateway (`upstream`).

use serde::Deserialize;
use url::Url;

use super::ConfigError;

/// Which forwarding headers the upstream gets. Inbound ones are always removed (BCP-05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    XForwarded,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// None.
    None,
}

/// The upstream OpenID provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the provider (`http` or `https`).
    pub url: Url,
    /// PEM file of CA certificates to verify an https upstream with. Default: the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `Host` header sent upstream. Default: the client's, unchanged (the provider then builds
    /// its URLs for the public host).
    #[serde(default)]
    pub host_header: Option<String>,
    /// Connect timeout, milliseconds. Default 3000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Timeout for the upstream's response, milliseconds. Default 30000.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Forwarding headers for the upstream. Default `x_forwarded`.
    #[serde(default = "default_forwarding")]
    pub forwarding_headers: ForwardingHeaders,
    /// How long the upstream's discovery document is cached, seconds. Default 60.
    #[serde(default = "default_discovery_cache")]
    pub discovery_cache_secs: u64,
    /// How long the upstream's JWKS is cached, seconds. Default 300.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache_secs: u64,
}

fn default_connect_timeout() -> u64 {
    3000
}

fn default_read_timeout() -> u64 {
    30_000
}

fn default_forwarding() -> ForwardingHeaders {
    ForwardingHeaders::XForwarded
}

fn default_discovery_cache() -> u64 {
    60
}

fn default_jwks_cache() -> u64 {
    300
}

impl UpstreamConfig {
    /// Shape only: the CA file is read by the component that uses it
    /// ([`crate::upstream::Upstream::new`]).
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.host_str().is_none() {
            errs.push(ConfigError::new(
                "upstream.url",
                "must be an http or https URL with a host",
            ));
        }
        if self.url.path() != "/" || self.url.query().is_some() {
            errs.push(ConfigError::new(
                "upstream.url",
                "must be an origin (scheme, host, port) without a path",
            ));
        }
    }
}
