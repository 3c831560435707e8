//! Client security as banks and telcos configure it: the FAPI-CIBA profile (`profile`), client
//! certificates (`mtls`), a client's public keys (`jwks`, `jwks_file`, `jwks_uri`), and the
//! issuers trusted for `login_hint_token`s (`ciba.login_hint_token`).

use serde::Deserialize;
use url::Url;

use super::{ConfigError, Outbound, SigningAlg};

/// A security profile (`profile:` at the top, or per client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Profile {
    /// FAPI-CIBA (Implementer's Draft 1): signed requests, `private_key_jwt` or mutual TLS,
    /// PS256/ES256 only, request lifetimes of at most 60 minutes, a binding message,
    /// certificate-bound access tokens, no push.
    #[serde(rename = "fapi-ciba")]
    FapiCiba,
}

/// The algorithms FAPI-CIBA allows for request objects and client assertions (FAPI-03).
pub const FAPI_ALGS: &[SigningAlg] = &[SigningAlg::PS256, SigningAlg::ES256];

/// Client certificates (RFC 8705): where the gateway takes them from.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtlsConfig {
    /// The gateway's own TLS listener (`tls`) asks clients for a certificate, without
    /// requiring one: clients that have none are unaffected. The certificate is verified only
    /// as the client's (`tls_client_auth` against `ca_file`, `self_signed_tls_client_auth`
    /// against the client's keys). Default false.
    pub request_certificates: bool,
    /// PEM CA certificates that issue `tls_client_auth` clients' certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// Behind a TLS-terminating load balancer: the request header carrying the client's
    /// certificate (URL-encoded PEM, as nginx's `$ssl_client_escaped_cert` and Envoy's
    /// `Cert=` give it). Trusted only from `trusted_proxies`; everyone else's is removed.
    pub header: Option<String>,
    /// The addresses allowed to send `header` (CIDR blocks).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl MtlsConfig {
    pub(super) fn check(&self, tls: bool, errs: &mut Vec<ConfigError>) {
        if self.request_certificates && !tls {
            errs.push(ConfigError::new(
                "mtls.request_certificates",
                "needs `tls` (the gateway's own TLS listener)",
            ));
        }
        match (&self.header, self.trusted_proxies.is_empty()) {
            (Some(_), true) => errs.push(ConfigError::new(
                "mtls.trusted_proxies",
                "is required with `mtls.header`: the header is trusted only from these addresses",
            )),
            (None, false) => errs.push(ConfigError::new(
                "mtls.header",
                "is required with `mtls.trusted_proxies`",
            )),
            _ => {}
        }
        if let Some(h) = &self.header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            errs.push(ConfigError::new("mtls.header", "is not a header name"));
        }
    }

    /// Whether client certificates can reach the gateway at all.
    pub fn enabled(&self) -> bool {
        self.request_certificates || self.header.is_some()
    }
}

/// Where a party's public keys are: exactly one of an inline JWKS, a JWKS file, or a
/// `jwks_uri` fetched through the SSRF-guarded client (cached, fetched again on an unknown
/// `kid`). In the file these are three keys of the client or issuer they belong to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeysConfig {
    /// An inline JWKS (`{keys: [...]}`).
    pub jwks: Option<serde_json::Value>,
    /// A JWKS file.
    pub jwks_file: Option<std::path::PathBuf>,
    /// A JWKS URL (https).
    pub jwks_uri: Option<Url>,
}

impl KeysConfig {
    /// Whether any key source is given.
    pub fn is_set(&self) -> bool {
        self.jwks.is_some() || self.jwks_file.is_some() || self.jwks_uri.is_some()
    }

    pub(super) fn check(&self, path: &str, plain_ok: bool, errs: &mut Vec<ConfigError>) {
        let given = [
            self.jwks.is_some(),
            self.jwks_file.is_some(),
            self.jwks_uri.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            errs.push(ConfigError::new(
                path,
                "give one of `jwks`, `jwks_file` and `jwks_uri`",
            ));
        }
        if let Some(u) = &self.jwks_uri
            && u.scheme() != "https"
            && !(plain_ok && u.scheme() == "http")
        {
            errs.push(ConfigError::new(
                format!("{path}.jwks_uri"),
                "must be an https URL",
            ));
        }
    }
}

/// `login_hint_token`s (CIBA §7.1, SEC-02): signed JWTs from these issuers, their `sub` (or
/// the claim named by `subject_claim`) a user of the directory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginHintTokenPolicy {
    /// The trusted issuers.
    pub issuers: Vec<HintIssuer>,
    /// How the gateway fetches issuers' `jwks_uri`s. Default: 3000 ms, SSRF-guarded.
    pub outbound: Outbound,
}

/// A trusted issuer of `login_hint_token`s.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Its keys, inline.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Its keys, in a file.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Its keys, at a URL.
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    /// The claim that names the user (resolved like a `login_hint`). Default `sub`.
    #[serde(default)]
    pub subject_claim: Option<String>,
}

impl HintIssuer {
    /// Where its keys are.
    pub fn keys(&self) -> KeysConfig {
        KeysConfig {
            jwks: self.jwks.clone(),
            jwks_file: self.jwks_file.clone(),
            jwks_uri: self.jwks_uri.clone(),
        }
    }
}

impl LoginHintTokenPolicy {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        for (i, h) in self.issuers.iter().enumerate() {
            let p = format!("ciba.login_hint_token.issuers[{i}]");
            let keys = h.keys();
            if !keys.is_set() {
                errs.push(ConfigError::new(
                    &p,
                    "needs its keys: `jwks`, `jwks_file` or `jwks_uri`",
                ));
            }
            keys.check(&p, self.outbound.allow_private_networks, errs);
        }
    }
}
