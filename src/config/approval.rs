//! How the user proves who they are before approving (`approval`).

use serde::Deserialize;

use super::{Config, ConfigError};

/// How the user proves who they are before approving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Approve / Deny on the gateway's page (the link is the proof).
    #[default]
    Page,
    /// Log in at the upstream provider first (authorization code + PKCE), then approve.
    Upstream,
}

/// Which ID token claim must match the user the request's hint resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityClaim {
    /// `sub` equals the user's subject.
    Sub,
    /// `email` equals the user's e-mail (case-insensitive).
    Email,
    /// `preferred_username` equals the user's username.
    PreferredUsername,
}

/// The approval page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// `page` or `upstream`. Default `page`.
    pub mode: ApprovalMode,
    /// (`upstream`) the claim that binds the upstream login to the requested user. Default `sub`.
    pub identity_claim: IdentityClaim,
    /// (`upstream`) send `prompt=login`, so the user authenticates afresh. Default true.
    pub prompt_login: bool,
    /// The key that signs the approval pages' CSRF tokens, a `${ENV}`/`file:` reference to at
    /// least 32 characters. Several replicas behind one URL must share it (a page rendered by
    /// one is posted to another). Default: random per process.
    #[serde(default)]
    pub csrf_key: Option<super::SecretRef>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            mode: ApprovalMode::Page,
            identity_claim: IdentityClaim::Sub,
            prompt_login: true,
            csrf_key: None,
        }
    }
}

impl ApprovalConfig {
    pub(super) fn check(&self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        if self.mode == ApprovalMode::Upstream && cfg.upstream.is_none() {
            errs.push(ConfigError::new(
                "approval.mode",
                "`upstream` needs an upstream provider",
            ));
        }
    }
}
