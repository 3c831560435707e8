//! Dynamic client registration (`registration`, RFC 7591/7592).

use serde::Deserialize;

use super::{ApprovalMode, AuthMethod, Config, ConfigError, Rate, SecretRef};

/// `registration`: clients registering themselves at `{issuer path}/register`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Offer the registration endpoint (advertised as `registration_endpoint`). Default false.
    #[serde(default)]
    pub enabled: bool,
    /// The initial access token a registration must present as a Bearer token (`${ENV}` or
    /// `file:`, or an argon2id hash). Required unless `open`.
    #[serde(default)]
    pub initial_access_token: Option<SecretRef>,
    /// Anyone may register, without a token: for development only (the quickstart sets it).
    /// Default false.
    #[serde(default)]
    pub open: bool,
    /// Registrations allowed per peer address. Default 20 per 60 s; `null`: no limit.
    #[serde(default = "default_rate")]
    pub per_address: Option<Rate>,
    /// The method registered for a client that names none. Default `client_secret_basic`
    /// (RFC 7591 §2); the registration response always says which it is.
    #[serde(default = "default_auth_method")]
    pub default_auth_method: AuthMethod,
}

fn default_auth_method() -> AuthMethod {
    AuthMethod::ClientSecretBasic
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            initial_access_token: None,
            open: false,
            per_address: default_rate(),
            default_auth_method: default_auth_method(),
        }
    }
}

fn default_rate() -> Option<Rate> {
    Some(Rate {
        requests: 20,
        per_secs: 60,
    })
}

impl RegistrationConfig {
    pub(super) fn check(&self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        if !self.enabled {
            return;
        }
        if !self.open && self.initial_access_token.is_none() {
            errs.push(ConfigError::new(
                "registration.initial_access_token",
                "is required unless `registration.open: true` (development only)",
            ));
        }
        if self.open && self.initial_access_token.is_some() {
            errs.push(ConfigError::new(
                "registration.open",
                "an open registration takes no initial_access_token: remove one of them",
            ));
        }
        if cfg.approval.mode == ApprovalMode::Upstream {
            errs.push(ConfigError::new(
                "registration.enabled",
                "registered clients have no credentials at the provider, which approval.mode: upstream needs",
            ));
        }
        if let Some(r) = &self.per_address
            && (r.requests == 0 || r.per_secs == 0)
        {
            errs.push(ConfigError::new(
                "registration.per_address",
                "requests and per_secs must be positive",
            ));
        }
    }
}
