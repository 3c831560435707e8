//! Where each endpoint lives: the one place that decides the paths the gateway answers at and
//! advertises. Adapters never derive a path; they ask [`super::Engine::route`].
//!
//! - The gateway's own endpoints (backchannel, discovery, JWKS, approval pages, channel
//!   callback) default to paths under the issuer's path, so an issuer such as
//!   `https://id.example/realms/main` gets its discovery at
//!   `/realms/main/.well-known/openid-configuration`, where clients look for it.
//! - The token and userinfo endpoints are shared with the upstream provider: unless configured,
//!   their paths are the ones the provider's discovery names (read at start-up and on every
//!   refresh), so the gateway intercepts exactly where clients are sent.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use url::Url;

use super::Route;
use crate::config::Config;

/// The token and userinfo paths, shared with the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPaths {
    /// The token endpoint's path.
    pub token: String,
    /// The userinfo endpoint's path.
    pub userinfo: String,
}

/// The resolved endpoint paths.
#[derive(Debug)]
pub struct Paths {
    /// The issuer's path, without a trailing slash (`""` for an issuer at the root).
    pub prefix: String,
    /// The backchannel authentication endpoint.
    pub backchannel: String,
    /// Extra paths the backchannel endpoint answers at (never advertised).
    pub backchannel_aliases: Vec<String>,
    /// The discovery document.
    pub discovery: String,
    /// The gateway's JWKS.
    pub jwks: String,
    /// The prefix of the approval pages.
    pub approval: String,
    /// The HTTP authentication channel's callback.
    pub callback: String,
    /// The health check (`""`: none).
    pub health: String,
    /// Client registration, and each registered client's at `{registration}/{client_id}`
    /// (`""`: registration is off).
    pub registration: String,
    token_configured: Option<String>,
    userinfo_configured: Option<String>,
    shared: ArcSwap<SharedPaths>,
}

impl Paths {
    /// The paths for `cfg` before anything is known of the provider.
    pub fn new(cfg: &Config) -> Self {
        let issuer = cfg.issuer();
        let prefix = Url::parse(&issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let e = &cfg.endpoints;
        let under = |configured: &Option<String>, tail: &str| {
            configured
                .clone()
                .unwrap_or_else(|| format!("{prefix}{tail}"))
        };
        let shared = SharedPaths {
            token: under(&e.token, "/token"),
            userinfo: under(&e.userinfo, "/userinfo"),
        };
        Self {
            backchannel: under(&e.backchannel, "/bc-authorize"),
            backchannel_aliases: e.backchannel_aliases.clone(),
            discovery: under(&e.discovery, "/.well-known/openid-configuration"),
            jwks: under(&e.jwks, "/jwks"),
            approval: under(&e.approval, "/approve"),
            callback: under(&e.callback, "/ciba/callback"),
            health: e.health.clone().unwrap_or_else(|| "/healthz".into()),
            registration: if cfg.registration.enabled {
                under(&e.registration, "/register")
            } else {
                String::new()
            },
            token_configured: e.token.clone(),
            userinfo_configured: e.userinfo.clone(),
            shared: ArcSwap::from_pointee(shared),
            prefix,
        }
    }

    /// The token and userinfo paths in force (one atomic load).
    pub fn shared(&self) -> Arc<SharedPaths> {
        self.shared.load_full()
    }

    /// Takes the token and userinfo paths from the provider's discovery document, where they
    /// are not configured. Returns the paths now in force when they changed.
    pub fn learn(&self, upstream_discovery: &Map<String, Value>) -> Option<SharedPaths> {
        let path_of = |k: &str| {
            upstream_discovery
                .get(k)
                .and_then(Value::as_str)
                .and_then(|u| Url::parse(u).ok())
                .map(|u| u.path().to_owned())
                .filter(|p| p.starts_with('/') && p.len() > 1)
        };
        let current = self.shared.load();
        let next = SharedPaths {
            token: self
                .token_configured
                .clone()
                .or_else(|| path_of("token_endpoint"))
                .unwrap_or_else(|| current.token.clone()),
            userinfo: self
                .userinfo_configured
                .clone()
                .or_else(|| path_of("userinfo_endpoint"))
                .unwrap_or_else(|| current.userinfo.clone()),
        };
        if *current.as_ref() == next {
            return None;
        }
        self.shared.store(Arc::new(next.clone()));
        Some(next)
    }

    /// Which endpoint a request path is; `None`: not the gateway's (pass it through).
    /// `http_channel` says whether the channel callback exists.
    pub fn route(&self, path: &str, http_channel: bool) -> Option<Route> {
        let shared = self.shared.load();
        if path == shared.token {
            Some(Route::Token)
        } else if path == self.backchannel || self.backchannel_aliases.iter().any(|a| a == path) {
            Some(Route::Backchannel)
        } else if path == self.discovery {
            Some(Route::Discovery)
        } else if path == self.jwks {
            Some(Route::Jwks)
        } else if path == shared.userinfo {
            Some(Route::Userinfo)
        } else if let Some(page) = path
            .strip_prefix(self.approval.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .filter(|h| !h.is_empty() && !h.contains('/'))
        {
            Some(match page {
                "callback" => Route::LoginCallback,
                "consent" => Route::Consent,
                _ => Route::Approval,
            })
        } else if http_channel && path == self.callback {
            Some(Route::ChannelCallback)
        } else if !self.health.is_empty() && path == self.health {
            Some(Route::Health)
        } else if !self.registration.is_empty()
            && path
                .strip_prefix(self.registration.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            Some(Route::Registration)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(yaml: &str) -> Paths {
        Paths::new(&Config::from_yaml(yaml).unwrap())
    }

    #[test]
    fn own_endpoints_sit_under_the_issuer_path() {
        let p = paths("public_url: https://id.example\nissuer: https://id.example/realms/main\n");
        assert_eq!(p.prefix, "/realms/main");
        assert_eq!(p.discovery, "/realms/main/.well-known/openid-configuration");
        assert_eq!(p.backchannel, "/realms/main/bc-authorize");
        assert_eq!(p.jwks, "/realms/main/jwks");
        assert_eq!(p.approval, "/realms/main/approve");
        assert_eq!(p.health, "/healthz");
        assert_eq!(p.shared().token, "/realms/main/token");
        let root = paths("public_url: https://id.example/\n");
        assert_eq!(root.prefix, "");
        assert_eq!(root.discovery, "/.well-known/openid-configuration");
    }

    #[test]
    fn shared_paths_come_from_the_provider_unless_configured() {
        let p = paths("public_url: http://gw\nissuer: http://gw/o\n");
        let doc = serde_json::json!({
            "token_endpoint": "http://internal:8000/o/token/",
            "userinfo_endpoint": "http://gw/o/userinfo/",
        });
        let learned = p.learn(doc.as_object().unwrap()).unwrap();
        assert_eq!(learned.token, "/o/token/");
        assert_eq!(p.route("/o/token/", false), Some(Route::Token));
        assert_eq!(p.route("/o/userinfo/", false), Some(Route::Userinfo));
        assert_eq!(p.route("/o/token", false), None);
        assert!(p.learn(doc.as_object().unwrap()).is_none(), "no change");

        let fixed = paths("public_url: http://gw\nendpoints: { token: /oauth/token }\n");
        fixed.learn(doc.as_object().unwrap());
        assert_eq!(fixed.shared().token, "/oauth/token");
        assert_eq!(fixed.shared().userinfo, "/o/userinfo/");
    }

    #[test]
    fn approval_pages_and_aliases_route() {
        let p = paths("public_url: http://gw\nendpoints: { backchannel_aliases: [/ciba/auth] }\n");
        assert_eq!(p.route("/ciba/auth", false), Some(Route::Backchannel));
        assert_eq!(p.route("/bc-authorize", false), Some(Route::Backchannel));
        assert_eq!(p.route("/approve/abc", false), Some(Route::Approval));
        assert_eq!(
            p.route("/approve/callback", false),
            Some(Route::LoginCallback)
        );
        assert_eq!(p.route("/approve/consent", false), Some(Route::Consent));
        assert_eq!(p.route("/approve/", false), None);
        assert_eq!(p.route("/approve/a/b", false), None);
        assert_eq!(p.route("/ciba/callback", false), None);
        assert_eq!(
            p.route("/ciba/callback", true),
            Some(Route::ChannelCallback)
        );
    }
}
