//! Outbound HTTP with an SSRF guard (SEC-05): no redirects, a total timeout, and no loopback,
//! private or link-local targets unless the deployment allows them, checked on the addresses
//! the name actually resolves to (so DNS tricks do not get around it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::Outbound;

/// Whether an address is publicly routable (a cut-down `IpAddr::is_global`, which is unstable).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[derive(Debug)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err("the target resolves only to non-public addresses (SSRF guard)".into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// An HTTP client for one kind of outbound call, with its policy.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    allow_private: bool,
}

impl OutboundClient {
    /// Builds a client for the given policy.
    pub fn new(policy: &Outbound) -> Self {
        Self::with_roots(policy, &[])
    }

    /// Builds a client for the given policy that also trusts `roots` (a private CA).
    pub fn with_roots(
        policy: &Outbound,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Self {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(policy.timeout_ms))
            .connect_timeout(Duration::from_millis(policy.timeout_ms.min(3000)))
            .user_agent(concat!("ciba-gateway/", env!("CARGO_PKG_VERSION")))
            // Notification endpoints and user directories answer small JSON: no decompression
            // (and so no decompression bomb) on this client.
            .no_gzip()
            .no_deflate();
        if !policy.allow_private_networks {
            b = b.dns_resolver(Arc::new(GuardedResolver));
        }
        for root in roots {
            if let Ok(cert) = reqwest::Certificate::from_der(root) {
                b = b.add_root_certificate(cert);
            }
        }
        Self {
            client: b
                .build()
                .expect("a reqwest client with rustls and ring builds"),
            allow_private: policy.allow_private_networks,
        }
    }

    /// Checks a URL against the policy before any connection is made (IP literals never reach
    /// the resolver).
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                return Err("loopback targets are not allowed (SSRF guard)".into());
            }
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if is_public(ip) {
            Ok(())
        } else {
            Err("non-public address (SSRF guard)".into())
        }
    }

    /// A POST request builder for `url`, after the policy check.
    pub fn post(&self, url: &Url) -> Result<reqwest::RequestBuilder, String> {
        self.check(url)?;
        Ok(self.client.post(url.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec_05_private_and_loopback_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn sec_05_ip_literal_urls_are_checked() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = OutboundClient::new(&Outbound::default());
        assert!(
            c.check(&Url::parse("http://127.0.0.1:9/x").unwrap())
                .is_err()
        );
        assert!(c.check(&Url::parse("http://localhost/x").unwrap()).is_err());
        assert!(c.check(&Url::parse("http://[::1]/x").unwrap()).is_err());
        assert!(
            c.check(&Url::parse("https://auth.example.com/x").unwrap())
                .is_ok()
        );
    }
}
