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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the provider (`http` or `https`): its scheme, and the host name every
    /// request to it carries (`Host`, the TLS server name).
    pub url: Url,
    /// The provider's nodes as `host:port` addresses, when it runs on several behind `url`'s
    /// name. Forwarded requests are spread over them (round robin, pingora runtime) and move
    /// to the others when one cannot be reached (both runtimes, and the gateway's own
    /// requests: discovery, JWKS, code exchange). Resolved once at start. Default: `url`'s
    /// host and port alone.
    #[serde(default)]
    pub nodes: Vec<String>,
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
        if !self.nodes.is_empty()
            && matches!(
                self.url.host(),
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
            )
        {
            errs.push(ConfigError::new(
                "upstream.url",
                "with `upstream.nodes`, must name the provider by a host name (the name every node answers for), not an IP address",
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let port = n
                .rsplit_once(':')
                .and_then(|(h, p)| (!h.is_empty()).then_some(p));
            if port
                .and_then(|p| p.parse::<u16>().ok())
                .is_none_or(|p| p == 0)
            {
                errs.push(ConfigError::new(
                    format!("upstream.nodes[{i}]"),
                    "must be a host:port address",
                ));
            }
        }
        if self.url.path() != "/" || self.url.query().is_some() {
            errs.push(ConfigError::new(
                "upstream.url",
                "must be an origin (scheme, host, port) without a path",
            ));
        }
    }
}
