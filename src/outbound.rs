//! Outbound HTTP with an SSRF guard (SEC-05): no redirects, a total timeout, and no loopback,
//! private or link-local targets unless the deployment allows them, checked on the addresses
//! the name actually resolves to (so DNS tricks do not get around it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::Outbound;

/// IPv4 blocks no notification, key set or directory call may reach: every entry of IANA's
/// IPv4 Special-Purpose Address Registry (RFC 6890 and its updates) that is not globally
/// reachable, the few that are but serve no web endpoint (AS112, AMT, the 6to4 relay anycast),
/// multicast and the reserved range. Kept whole rather than by `std`'s helpers, which miss
/// several (benchmarking, the IETF protocol block) or are unstable (`is_global`).
const V4_BLOCKED: &[&str] = &[
    "0.0.0.0/8",       // "this network"
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // shared address space (carrier-grade NAT)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link local (cloud metadata)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation (TEST-NET-1)
    "192.31.196.0/24", // AS112-v4
    "192.52.193.0/24", // AMT
    "192.88.99.0/24",  // deprecated 6to4 relay anycast
    "192.168.0.0/16",  // private
    "192.175.48.0/24", // direct delegation AS112
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation (TEST-NET-2)
    "203.0.113.0/24",  // documentation (TEST-NET-3)
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and the limited broadcast address
];

/// IPv6 blocks, likewise from IANA's IPv6 Special-Purpose Address Registry, with the
/// deprecated site-local block and multicast. The forms that carry an IPv4 address (mapped,
/// compatible, NAT64, 6to4, Teredo) are unwrapped first ([`embedded_v4`]) and judged by it.
const V6_BLOCKED: &[&str] = &[
    "::/128",            // unspecified
    "::1/128",           // loopback
    "64:ff9b:1::/48",    // local-use IPv4/IPv6 translation
    "100::/64",          // discard-only
    "100:0:0:1::/64",    // dummy prefix
    "2001::/23",         // IETF protocol assignments (Teredo is unwrapped before)
    "2001:db8::/32",     // documentation
    "2620:4f:8000::/48", // AS112-v6
    "3fff::/20",         // documentation
    "5f00::/16",         // segment routing SIDs
    "fc00::/7",          // unique local
    "fe80::/10",         // link local
    "fec0::/10",         // site local (deprecated)
    "ff00::/8",          // multicast
];

fn blocked<T: std::str::FromStr>(list: &'static [&'static str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    list.iter()
        .map(|n| n.parse().expect("the block lists are valid CIDR"))
        .collect()
}

/// The IPv4 address an IPv6 address carries, in every form that routes to it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`),
/// 6to4 (`2002:AABB:CCDD::`) and Teredo (the client's address, inverted, in the last 32 bits).
pub fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    use std::net::Ipv4Addr;
    let s = v6.segments();
    let o = v6.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(last); // IPv4-compatible (:: and ::1 are themselves)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last); // NAT64 well-known prefix
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])); // 6to4
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let c = u32::from(last) ^ u32::MAX; // Teredo: the client's address, obfuscated
        return Some(Ipv4Addr::from(c));
    }
    None
}

/// Whether an address may be the target of an outbound call: not in any blocked block, and the
/// IPv4 address an IPv6 one carries not either (so `::ffff:127.0.0.1`, `::127.0.0.1`,
/// `64:ff9b::7f00:1` and `2002:7f00:1::` are all loopback; Teredo is blocked as an IETF
/// protocol assignment whatever it carries).
pub fn is_public(ip: IpAddr) -> bool {
    static V4: std::sync::LazyLock<Vec<ipnet::Ipv4Net>> =
        std::sync::LazyLock::new(|| blocked(V4_BLOCKED));
    static V6: std::sync::LazyLock<Vec<ipnet::Ipv6Net>> =
        std::sync::LazyLock::new(|| blocked(V6_BLOCKED));
    match ip {
        IpAddr::V4(v4) => !V4.iter().any(|n| n.contains(&v4)),
        IpAddr::V6(v6) => {
            !V6.iter().any(|n| n.contains(&v6))
                && embedded_v4(v6).is_none_or(|v4| is_public(IpAddr::V4(v4)))
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

    /// GETs a JSON document of at most `limit` bytes from `url`, after the policy check
    /// (a `jwks_uri`). Any failure is a message fit for a log.
    pub async fn get_json(&self, url: &Url, limit: usize) -> Result<serde_json::Value, String> {
        self.check(url)?;
        let mut resp = traced(self.client.get(url.clone()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > limit {
                return Err(format!("larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    }

    /// A POST request builder for `url`, after the policy check.
    pub fn post(&self, url: &Url) -> Result<reqwest::RequestBuilder, String> {
        self.check(url)?;
        Ok(traced(self.client.post(url.clone())))
    }
}

/// `req` with the current span's `traceparent` ([`crate::trace`]): every outbound call names
/// the request or background work that made it.
pub(crate) fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::trace::outgoing() {
        Some(tp) => req.header(crate::trace::TRACEPARENT, tp),
        None => req,
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
            // Issue 19: the forms the first guard missed.
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
            "224.0.0.1",
            "239.255.255.250",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "255.255.255.255",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b:1::a00:1",
            "100::1",
            // Teredo whose client is 127.0.0.1 (stored inverted).
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "2002:101:101::1",
            "::ffff:8.8.8.8",
        ] {
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
