//! The whole file: the top-level keys, and the one function that runs every section's checks.

use std::net::SocketAddr;

use serde::Deserialize;
use url::Url;

use super::*;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Socket address the binary listens on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The externally visible base URL of the gateway; endpoint URLs in discovery and approval
    /// links are built from it. Required.
    pub public_url: Url,
    /// The issuer (`iss`) of tokens and discovery. Default: `public_url` without a trailing slash.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Paths of the endpoints the gateway serves.
    #[serde(default)]
    pub endpoints: Endpoints,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// CIBA protocol policy.
    #[serde(default)]
    pub ciba: CibaPolicy,
    /// Where pending requests live.
    #[serde(default)]
    pub store: StoreConfig,
    /// How the user is reached and the decision collected.
    #[serde(default)]
    pub channel: ChannelConfig,
    /// Where `login_hint`s are resolved to users.
    #[serde(default)]
    pub users: UsersConfig,
    /// The CIBA clients.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Dynamic client registration (RFC 7591/7592).
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// Token minting.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Scope values clients may request (each client may narrow it further).
    #[serde(default = "default_scopes")]
    pub scopes_supported: Vec<String>,
    /// The OpenID provider behind the gateway. Without it the gateway runs standalone.
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    /// Which proxy runtime serves the binary: `pingora` or `tower`. Default: `pingora` with an
    /// upstream, `tower` without. `engine:` is accepted as the old name of this key.
    #[serde(default, alias = "engine")]
    pub runtime: Option<RuntimeKind>,
    /// TLS on the listener (either engine).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Server process settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// How the user approves on the approval page.
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// A security profile for every client (each may set its own): `fapi-ciba`. Default none.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Client certificates (RFC 8705): the TLS listener, or a trusted load balancer's header.
    #[serde(default)]
    pub mtls: MtlsConfig,
    /// The binary's log: format and limit.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin listener (metrics, health). Default: off.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where the audit trail goes besides the log. Default: the log only.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Traces: whose `traceparent` is continued ([`crate::trace`]). Export is configured by
    /// the standard `OTEL_*` environment variables (feature `otel`).
    #[serde(default)]
    pub trace: TraceConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "phone"]
        .map(String::from)
        .to_vec()
}

impl Config {
    /// The issuer, defaulted from `public_url`.
    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| self.public_url.as_str().trim_end_matches('/').to_owned())
    }

    /// An absolute URL for one of the gateway's paths: the origin of `public_url` and the path
    /// (paths are absolute, and include the issuer's path where they sit under it).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.origin().ascii_serialization())
    }

    /// The runtime the binary runs: `pingora` when an upstream is configured, unless told.
    pub fn runtime(&self) -> RuntimeKind {
        self.runtime.unwrap_or(if self.upstream.is_some() {
            RuntimeKind::Pingora
        } else {
            RuntimeKind::Tower
        })
    }

    /// Every problem in the configuration's shape, each with its field path; empty when it is
    /// valid. Each section checks its own fields; nothing is read from disk or the environment
    /// here: keys and secrets are loaded once, by the component that owns them, when the engine
    /// is built ([`crate::Engine::new`] reports both kinds together with `ciba-gateway check`).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        check_http_url(&mut errs, "public_url", &self.public_url);
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            errs.push(ConfigError::new(
                "public_url",
                "must not have a query or fragment",
            ));
        }
        if let Some(iss) = &self.issuer
            && url::Url::parse(iss).is_err()
        {
            errs.push(ConfigError::new("issuer", "must be a URL"));
        }
        if !self.scopes_supported.iter().any(|s| s == "openid") {
            errs.push(ConfigError::new("scopes_supported", "must include openid"));
        }
        self.runtime().check(self, &mut errs);
        self.server.check(&mut errs);
        self.endpoints.check(&mut errs);
        self.limits.check(self, &mut errs);
        self.ciba.check(&self.server, &mut errs);
        self.store.check(&mut errs);
        self.approval.check(self, &mut errs);
        if let Some(u) = &self.upstream {
            u.check(&mut errs);
        }
        self.channel.check(self, &mut errs);
        self.users.check(&mut errs);
        for (i, c) in self.clients.iter().enumerate() {
            c.check(i, self, &mut errs);
        }
        self.registration.check(self, &mut errs);
        self.tokens.check(&mut errs);
        self.mtls.check(self.tls.is_some(), &mut errs);
        self.log.check(&mut errs);
        self.admin.check(self.listen, &mut errs);
        self.audit.check(&mut errs);
        if self.profile == Some(Profile::FapiCiba) {
            self.check_fapi(&mut errs);
        }
        errs
    }

    /// FAPI-CIBA for the whole gateway: what the configuration must say beyond each client's
    /// registration (checked with the clients).
    fn check_fapi(&self, errs: &mut Vec<ConfigError>) {
        let why = |what: &str| format!("FAPI-CIBA: {what}");
        if self.ciba.offer_push {
            errs.push(ConfigError::new(
                "ciba.offer_push",
                why("push is not offered (FAPI-01): set `ciba.offer_push: false`"),
            ));
        }
        if !self.ciba.binding_message.required {
            errs.push(ConfigError::new(
                "ciba.binding_message.required",
                why("a binding message is required (FAPI-07): set it to true"),
            ));
        }
        if self.ciba.accept_ietf_grant_type_alias {
            errs.push(ConfigError::new(
                "ciba.accept_ietf_grant_type_alias",
                why("only the specified grant type (MYTH-01): set it to false"),
            ));
        }
        if self.tls.is_none() && self.mtls.header.is_none() {
            errs.push(ConfigError::new(
                "tls",
                why("clients connect over mutual TLS: the gateway's `tls` listener, or `mtls.header` behind a TLS-terminating load balancer"),
            ));
        }
        for (i, k) in self.tokens.keys.iter().enumerate() {
            if !FAPI_ALGS.contains(&k.alg) {
                errs.push(ConfigError::new(
                    format!("tokens.keys[{i}].alg"),
                    why("ID tokens are signed with PS256 or ES256 (FAPI-10)"),
                ));
            }
        }
        if self.tokens.keys.is_empty() {
            errs.push(ConfigError::new(
                "tokens.keys",
                why("give the signing keys (PS256 or ES256, FAPI-10); the ephemeral key is for development"),
            ));
        }
    }
}
