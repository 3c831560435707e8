//! The upstream OpenID provider: its discovery document and JWKS (fetched, cached briefly and
//! merged with the gateway's own), and the rule for what headers a forwarded request carries
//! (BCP-05). Both adapters apply the same [`HeaderEdits`]; the rule lives here.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Map, Value};
use url::Url;

use crate::config::{ConfigError, ForwardingHeaders, UpstreamConfig};

mod login;
mod nodes;

pub(crate) use nodes::Nodes;

pub use login::{LoginRequest, LoginSecrets};

/// Inbound headers that carry security information a client must not be able to forge: they
/// are removed before anything is forwarded (BCP-05, GW-06).
pub const UNTRUSTED_INBOUND: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-client-certificate",
    "x-ssl-cert",
    "x-ssl-client-cert",
    "ssl-client-cert",
    "client-cert",
    "client-cert-chain",
];

/// Why the upstream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer in time.
    #[error("the upstream provider did not answer in time")]
    Timeout,
    /// Not reachable, or an unusable answer.
    #[error("the upstream provider is unavailable: {0}")]
    Unavailable(String),
}

/// What to change on a request before it goes upstream.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    /// Headers to remove: the forwarding and client-certificate headers this request carries (usually
    /// none, so usually no allocation).
    pub remove: Vec<HeaderName>,
    /// Headers to set (replacing any value).
    pub set: Vec<(HeaderName, HeaderValue)>,
}

struct Cached<T> {
    ttl: Duration,
    slot: RwLock<Option<(Instant, Arc<T>)>>,
}

impl<T> Cached<T> {
    fn new(secs: u64) -> Self {
        Self {
            ttl: Duration::from_secs(secs),
            slot: RwLock::new(None),
        }
    }
    fn fresh(&self) -> Option<Arc<T>> {
        let g = self.slot.read().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| Arc::clone(v))
    }
    fn stale(&self) -> Option<Arc<T>> {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, v)| Arc::clone(v))
    }
    fn put(&self, v: T) -> Arc<T> {
        let v = Arc::new(v);
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), Arc::clone(&v)));
        v
    }
}

/// The upstream provider.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// The gateway's own requests to the provider, over its nodes.
    client: Nodes,
    /// The headers of the gateway's own requests to the provider: the `Host` and forwarding
    /// headers a client reaching the provider through the public URL would cause.
    own_headers: HeaderMap,
    /// `upstream.ca_file`, read and parsed once: every client that talks to the provider (the
    /// gateway's own requests, the tower runtime's forwarding, pingora's peer) trusts these.
    ca_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// `upstream.nodes`, resolved at start (empty: `url`'s host, resolved per connection).
    nodes: Vec<std::net::SocketAddr>,
    discovery: Cached<Map<String, Value>>,
    jwks: Cached<Vec<Value>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.cfg.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the upstream from configuration; `public_url` is the gateway's.
    pub fn new(cfg: &UpstreamConfig, public_url: &Url) -> Result<Self, ConfigError> {
        // gzip and deflate are decoded: the gateway asks for `identity`, but a provider behind
        // a compressing proxy or CDN may answer compressed all the same.
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
                .timeout(Duration::from_millis(cfg.read_timeout_ms.min(10_000)))
        };
        let ca_certificates = match &cfg.ca_file {
            Some(ca) => crate::tls::pem_certificates(ca)
                .map_err(|m| ConfigError::new("upstream.ca_file", m))?,
            None => Vec::new(),
        };
        for cert in &ca_certificates {
            reqwest::Certificate::from_der(cert)
                .map_err(|e| ConfigError::new("upstream.ca_file", e.to_string()))?;
        }
        let mut nodes = Vec::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            let found = std::net::ToSocketAddrs::to_socket_addrs(n.as_str())
                .map_err(|e| ConfigError::new(format!("upstream.nodes[{i}]"), e.to_string()))?;
            nodes.extend(found);
        }
        let host = match public_url.port() {
            Some(p) => format!("{}:{p}", public_url.host_str().unwrap_or_default()),
            None => public_url.host_str().unwrap_or_default().to_owned(),
        };
        let public_host =
            HeaderValue::from_str(&host).map_err(|_| ConfigError::new("public_url", "bad host"))?;
        let mut own_headers = HeaderMap::new();
        for (name, value) in forwarding(
            cfg,
            Some(public_host),
            true,
            None,
            public_url.scheme() == "https",
        ) {
            own_headers.insert(name, value);
        }
        let mut this = Self {
            client: Nodes::new(&cfg.url, &[], reqwest::Client::builder)
                .map_err(|e| ConfigError::new("upstream", e.to_string()))?,
            own_headers,
            ca_certificates,
            nodes,
            discovery: Cached::new(cfg.discovery_cache_secs),
            jwks: Cached::new(cfg.jwks_cache_secs),
            cfg: cfg.clone(),
        };
        this.client = this
            .clients(builder)
            .map_err(|e| ConfigError::new("upstream", e.to_string()))?;
        Ok(this)
    }

    /// HTTP clients for the provider's nodes (see [`Nodes`]), each from `builder()` with the
    /// provider's CA certificates trusted: every client that talks to the provider is built
    /// through this (the gateway's own requests, the tower runtime's forwarding).
    pub(crate) fn clients(
        &self,
        builder: impl Fn() -> reqwest::ClientBuilder,
    ) -> reqwest::Result<Nodes> {
        Nodes::new(&self.cfg.url, &self.nodes, || {
            let mut b = builder();
            for cert in &self.ca_certificates {
                // Parsed when the upstream was built; DER that parsed once converts again.
                if let Ok(cert) = reqwest::Certificate::from_der(cert) {
                    b = b.add_root_certificate(cert);
                }
            }
            b
        })
    }

    /// `upstream.nodes`, resolved at start; empty when only `url` is configured.
    #[cfg(feature = "pingora")]
    pub(crate) fn nodes(&self) -> &[std::net::SocketAddr] {
        &self.nodes
    }

    /// The extra CA certificates (DER) to verify an https provider with (`upstream.ca_file`),
    /// loaded once; every client that talks to the provider uses these.
    #[cfg(feature = "pingora")]
    pub fn ca_certificates(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        &self.ca_certificates
    }

    /// The configuration.
    #[cfg(any(feature = "server", feature = "pingora"))]
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// The upstream's host, port and whether it speaks TLS.
    #[cfg(feature = "pingora")]
    pub fn address(&self) -> (String, u16, bool) {
        let u = &self.cfg.url;
        (
            u.host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned(),
            u.port_or_known_default().unwrap_or(80),
            u.scheme() == "https",
        )
    }

    /// The base URL requests are forwarded to.
    pub fn url(&self) -> &Url {
        &self.cfg.url
    }

    async fn get_json(&self, path_and_query: &str) -> Result<Value, UpstreamError> {
        // Ask as a client of the public URL would, so that a provider that builds its URLs from
        // `Host` (or from trusted forwarding headers) describes itself at the public URLs.
        let resp = self
            .client
            .send(path_and_query, |c, url| {
                c.get(url)
                    .headers(self.own_headers.clone())
                    .header(header::ACCEPT, "application/json")
                    // The document is parsed and re-serialised: never ask for it compressed.
                    .header(header::ACCEPT_ENCODING, "identity")
            })
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Unavailable(e.without_url().to_string())
                }
            })?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = read_capped(resp, MAX_METADATA_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Unavailable(e.to_string()))
    }

    /// The upstream's discovery document (cached for `discovery_cache_secs`).
    pub async fn discovery(&self, path: &str) -> Result<Arc<Map<String, Value>>, UpstreamError> {
        if let Some(d) = self.discovery.fresh() {
            return Ok(d);
        }
        match self.get_json(path).await? {
            Value::Object(m) => Ok(self.discovery.put(m)),
            _ => Err(UpstreamError::Unavailable(
                "discovery is not a JSON object".into(),
            )),
        }
    }

    /// The upstream's signing keys, from the `jwks_uri` its discovery names (fetched from the
    /// upstream itself, not through the public URL). A stale copy is served while the upstream
    /// is down.
    pub async fn jwks_keys(&self, discovery_path: &str) -> Result<Arc<Vec<Value>>, UpstreamError> {
        if let Some(k) = self.jwks.fresh() {
            return Ok(k);
        }
        let fetched = async {
            let d = self.discovery(discovery_path).await?;
            let uri = d
                .get("jwks_uri")
                .and_then(Value::as_str)
                .and_then(|u| Url::parse(u).ok())
                .ok_or_else(|| UpstreamError::Unavailable("discovery names no jwks_uri".into()))?;
            let path = match uri.query() {
                Some(q) => format!("{}?{q}", uri.path()),
                None => uri.path().to_owned(),
            };
            match self.get_json(&path).await?.get("keys") {
                Some(Value::Array(keys)) => Ok(keys.clone()),
                _ => Err(UpstreamError::Unavailable(
                    "the upstream JWKS has no keys".into(),
                )),
            }
        }
        .await;
        match fetched {
            Ok(keys) => Ok(self.jwks.put(keys)),
            Err(e) => self.jwks.stale().ok_or(e),
        }
    }

    /// The header changes for a request going upstream: untrusted inbound headers removed, the
    /// configured `Host`, and fresh forwarding headers from what the gateway itself saw.
    pub fn header_edits(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        tls: bool,
    ) -> HeaderEdits {
        HeaderEdits {
            remove: untrusted_present(headers),
            set: forwarding(
                &self.cfg,
                headers.get(header::HOST).cloned(),
                false,
                peer,
                tls,
            ),
        }
    }

    /// The `Host` and forwarding headers of the gateway's own requests to the provider
    /// (discovery, JWKS, code exchange).
    pub(crate) fn own_headers(&self) -> &HeaderMap {
        &self.own_headers
    }
}

/// The `Host` and forwarding headers for a request the client sent with `host`: one rule for
/// pass-through and for the gateway's own requests. `Host` is `upstream.host_header` when set,
/// else the client's: left untouched on pass-through, set (`own`) on the gateway's own
/// requests, where the HTTP client would otherwise send the provider's internal address.
fn forwarding(
    cfg: &UpstreamConfig,
    host: Option<HeaderValue>,
    own: bool,
    peer: Option<IpAddr>,
    tls: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut set = Vec::with_capacity(4);
    match cfg.host_header.as_deref().map(HeaderValue::from_str) {
        Some(Ok(v)) => set.push((header::HOST, v)),
        Some(Err(_)) => {}
        None => {
            if let (true, Some(h)) = (own, &host) {
                set.push((header::HOST, h.clone()));
            }
        }
    }
    let proto = if tls { "https" } else { "http" };
    match cfg.forwarding_headers {
        ForwardingHeaders::None => {}
        ForwardingHeaders::XForwarded => {
            if let Some(ip) = peer {
                set.push((HeaderName::from_static("x-forwarded-for"), ip_value(ip)));
            }
            set.push((
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static(proto),
            ));
            if let Some(h) = host {
                set.push((HeaderName::from_static("x-forwarded-host"), h));
            }
        }
        ForwardingHeaders::Forwarded => {
            let mut v = String::new();
            if let Some(ip) = peer {
                v.push_str(&match ip {
                    IpAddr::V4(a) => format!("for={a};"),
                    IpAddr::V6(a) => format!("for=\"[{a}]\";"),
                });
            }
            if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
                v.push_str(&format!("host=\"{h}\";"));
            }
            v.push_str(&format!("proto={proto}"));
            if let Ok(v) = HeaderValue::from_str(&v) {
                set.push((header::FORWARDED, v));
            }
        }
    }
    set
}

/// The [`UNTRUSTED_INBOUND`] headers present in `headers`. One pass over the request's header
/// names instead of a removal attempt per listed name: forwarding is the hot path.
pub fn untrusted_present(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|k| UNTRUSTED_INBOUND.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// The largest discovery document, JWKS or token response the gateway reads from the upstream
/// (decoded).
const MAX_METADATA_BYTES: usize = 1 << 20;

/// Reads a response body of at most `limit` bytes (after any content decoding).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::Unavailable(format!(
                "response larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An IP address as a header value, formatted on the stack.
fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    write!(w, "{ip}").expect("an IP address fits in 64 bytes");
    let len = 64 - w.len();
    HeaderValue::from_bytes(&buf[..len]).expect("an IP address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    // BCP-05 / GW-06: every listed header the request carries is found, whatever its case on
    // the wire, and nothing else is.
    #[test]
    fn untrusted_present_finds_exactly_the_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert("X-Forwarded-For", HeaderValue::from_static("203.0.113.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert("Client-Cert", HeaderValue::from_static(":AAAA:"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("x-forwarded-fort", HeaderValue::from_static("not listed"));
        let mut found: Vec<_> = untrusted_present(&h)
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect();
        found.sort();
        assert_eq!(found, ["client-cert", "x-forwarded-for"]);
        assert!(untrusted_present(&HeaderMap::new()).is_empty());
    }

    #[tokio::test]
    async fn upstream_bodies_are_capped() {
        let resp = |n: usize| reqwest::Response::from(http::Response::new(vec![b'x'; n]));
        assert_eq!(read_capped(resp(10), 10).await.unwrap().len(), 10);
        assert!(read_capped(resp(11), 10).await.is_err());
    }

    #[test]
    fn ip_values_for_both_families() {
        assert_eq!(ip_value("192.0.2.7".parse().unwrap()), "192.0.2.7");
        let v6 = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(ip_value(v6.parse().unwrap()), v6);
    }
}
