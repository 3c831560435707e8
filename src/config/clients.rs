//! The CIBA clients (`clients`).

use serde::Deserialize;

use super::{ApprovalMode, Config, ConfigError, SecretRef, SigningAlg};

/// What the client receives for an approved request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// Tokens signed by the gateway.
    #[default]
    Mint,
    /// The tokens the upstream issued for the user's login (`approval.mode: upstream`).
    Upstream,
}

/// How the gateway authenticates at the upstream's token endpoint for a client's requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamClient {
    /// The client id registered at the upstream. Default: the CIBA client's id, so that the
    /// upstream's ID token is issued to the client itself.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret: a `${ENV}` or `file:` reference.
    pub client_secret: SecretRef,
    /// `client_secret_basic` or `client_secret_post`. Default `client_secret_basic`.
    #[serde(default = "default_auth_method")]
    pub auth_method: AuthMethod,
}

/// Client authentication methods supported for secret-based clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    /// The registered metadata name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// Token delivery modes (CIBA §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// The client polls the token endpoint.
    Poll,
    /// The client is pinged, then calls the token endpoint.
    Ping,
    /// Tokens are pushed to the client.
    Push,
}

/// A CIBA client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client identifier.
    pub client_id: String,
    /// Human-readable name shown to the user. Default: the client id.
    #[serde(default)]
    pub name: Option<String>,
    /// The secret: argon2id hash, `${ENV}` or `file:`.
    pub secret: SecretRef,
    /// How the client authenticates. Default `client_secret_basic`.
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: AuthMethod,
    /// Grant types; must contain `urn:openid:params:grant-type:ciba` to use CIBA (BC-AUTH-06).
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// Delivery mode (CM-01). Default `poll`.
    #[serde(default = "default_mode")]
    pub backchannel_token_delivery_mode: DeliveryMode,
    /// Where a ping client is told that its request was decided, and a push client is sent its
    /// tokens (CM-02): HTTPS, registered here and nowhere else. Required for `ping` and `push`.
    #[serde(default)]
    pub backchannel_client_notification_endpoint: Option<url::Url>,
    /// Require a `user_code` from this client (BC-UC-01). Default false.
    #[serde(default)]
    pub backchannel_user_code_parameter: bool,
    /// Scopes this client may request. Default: `scopes_supported`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// `mint` or `upstream`. Default `mint`.
    #[serde(default)]
    pub tokens: TokenSource,
    /// Credentials at the upstream (`approval.mode: upstream`).
    #[serde(default)]
    pub upstream: Option<UpstreamClient>,
    /// The algorithm this client expects ID tokens signed with (OIDC Registration metadata).
    /// The gateway signs this client's tokens with a key of that algorithm from `tokens.keys`;
    /// `check` warns when there is none. Default: the active key's.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<SigningAlg>,
}

fn default_auth_method() -> AuthMethod {
    AuthMethod::ClientSecretBasic
}

fn default_grant_types() -> Vec<String> {
    vec![crate::protocol::GRANT_TYPE_CIBA.to_owned()]
}

fn default_mode() -> DeliveryMode {
    DeliveryMode::Poll
}

impl ClientConfig {
    /// Shape only, for the client at `clients[i]`: its secrets are loaded by
    /// [`crate::clients::ClientRegistry::from_config`].
    pub(super) fn check(&self, i: usize, cfg: &Config, errs: &mut Vec<ConfigError>) {
        let p = format!("clients[{i}]");
        if self.client_id.is_empty() {
            errs.push(ConfigError::new(
                format!("{p}.client_id"),
                "must not be empty",
            ));
        }
        if cfg.clients[..i]
            .iter()
            .any(|c| c.client_id == self.client_id)
        {
            errs.push(ConfigError::new(
                format!("{p}.client_id"),
                "is used by another client",
            ));
        }
        let ciba = self
            .grant_types
            .iter()
            .any(|g| g == crate::protocol::GRANT_TYPE_CIBA);
        let endpoint = format!("{p}.backchannel_client_notification_endpoint");
        let mode = self.backchannel_token_delivery_mode;
        match (mode, &self.backchannel_client_notification_endpoint) {
            (DeliveryMode::Poll, _) => {}
            // CM-01: a mode the gateway does not offer is refused (PUSH-04 under FAPI).
            (DeliveryMode::Push, _) if !cfg.ciba.offer_push => errs.push(ConfigError::new(
                format!("{p}.backchannel_token_delivery_mode"),
                "`push` is not offered (ciba.offer_push is false)",
            )),
            // CM-02: ping and push need an endpoint, and it is HTTPS.
            (_, None) => errs.push(ConfigError::new(
                endpoint,
                "is required for `ping` and `push`",
            )),
            (_, Some(url)) => {
                let plain_ok = cfg.ciba.client_notifications.allow_plain_http;
                if url.scheme() != "https" && !(plain_ok && url.scheme() == "http") {
                    errs.push(ConfigError::new(
                        endpoint,
                        "must be an https URL (SEC-05; `ciba.client_notifications.allow_plain_http` is for development)",
                    ));
                } else if url.host_str().is_none() || url.fragment().is_some() {
                    errs.push(ConfigError::new(
                        endpoint,
                        "must have a host and no fragment",
                    ));
                }
                // CM-03: a ping client redeems at the token endpoint (a push client never does).
                if mode == DeliveryMode::Ping && !ciba {
                    errs.push(ConfigError::new(
                        format!("{p}.grant_types"),
                        "a `ping` client needs urn:openid:params:grant-type:ciba",
                    ));
                }
            }
        }
        if let Some(g) = self
            .grant_types
            .iter()
            .find(|g| *g == crate::protocol::GRANT_TYPE_CIBA_IETF_ALIAS)
        {
            errs.push(ConfigError::new(
                format!("{p}.grant_types"),
                format!(
                    "'{g}' is not the CIBA grant type; use '{}' (MYTH-01)",
                    crate::protocol::GRANT_TYPE_CIBA
                ),
            ));
        }
        if let Some(scopes) = &self.scopes {
            if !scopes.iter().any(|s| s == "openid") {
                errs.push(ConfigError::new(
                    format!("{p}.scopes"),
                    "must include openid",
                ));
            }
            for s in scopes {
                if !cfg.scopes_supported.contains(s) {
                    errs.push(ConfigError::new(
                        format!("{p}.scopes"),
                        format!("'{s}' is not in scopes_supported"),
                    ));
                }
            }
        }
        if self.backchannel_user_code_parameter && !cfg.ciba.user_code.supported {
            errs.push(ConfigError::new(
                format!("{p}.backchannel_user_code_parameter"),
                "ciba.user_code.supported is false",
            ));
        }
        // Only a client that can start CIBA requests logs users in at the upstream: one with
        // the grant, or a push client (which starts requests without it, CM-03).
        let starts_requests = ciba || mode == DeliveryMode::Push;
        if cfg.approval.mode == ApprovalMode::Upstream && self.upstream.is_none() && starts_requests
        {
            errs.push(ConfigError::new(
                format!("{p}.upstream"),
                "is required with approval.mode: upstream",
            ));
        }
        if self.tokens == TokenSource::Upstream && cfg.approval.mode != ApprovalMode::Upstream {
            errs.push(ConfigError::new(
                format!("{p}.tokens"),
                "`upstream` needs approval.mode: upstream",
            ));
        }
        // A push is minted by the gateway as the decision is recorded (PUSH-01); the provider's
        // tokens reach a client only through the token endpoint.
        if self.tokens == TokenSource::Upstream && mode == DeliveryMode::Push {
            errs.push(ConfigError::new(
                format!("{p}.tokens"),
                "`upstream` works with `poll` and `ping` clients only: a push carries tokens the gateway mints",
            ));
        }
    }
}
