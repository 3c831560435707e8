//! The CIBA clients (`clients`).

use serde::Deserialize;

use super::{ApprovalMode, Config, ConfigError, KeysConfig, Profile, SecretRef, SigningAlg};

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// Client authentication methods (BC-AUTH-02): the gateway's list, in the order discovery
/// advertises them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523, OIDC Core §9).
    PrivateKeyJwt,
    /// Mutual TLS with a certificate from a trusted CA, matched by subject or SAN (RFC 8705
    /// §2.1).
    TlsClientAuth,
    /// Mutual TLS with a certificate in the client's JWKS (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// Every method, as discovery lists them.
    pub const ALL: [AuthMethod; 5] = [
        Self::ClientSecretBasic,
        Self::ClientSecretPost,
        Self::PrivateKeyJwt,
        Self::TlsClientAuth,
        Self::SelfSignedTlsClientAuth,
    ];

    /// The registered metadata name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client proves itself with a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }

    /// Whether the client proves itself with a TLS client certificate.
    pub fn uses_certificate(self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// The kinds of hint a backchannel request may name its user by (CIBA §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintType {
    /// `login_hint`: a username, e-mail, phone number or subject.
    LoginHint,
    /// `login_hint_token`: a signed JWT from a trusted issuer.
    LoginHintToken,
    /// `id_token_hint`: an ID token the gateway issued to the client.
    IdTokenHint,
}

impl HintType {
    /// The request parameter.
    pub fn parameter(self) -> &'static str {
        match self {
            Self::LoginHint => "login_hint",
            Self::LoginHintToken => "login_hint_token",
            Self::IdTokenHint => "id_token_hint",
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client identifier.
    pub client_id: String,
    /// Human-readable name shown to the user. Default: the client id.
    #[serde(default)]
    pub name: Option<String>,
    /// The secret: argon2id hash, `${ENV}` or `file:`. Required for `client_secret_basic` and
    /// `client_secret_post`; other methods have none.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// How the client authenticates. Default `client_secret_basic`.
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: AuthMethod,
    /// The client's public keys, inline (`private_key_jwt`, signed requests,
    /// `self_signed_tls_client_auth`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// The client's public keys, in a file.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// The client's public keys, at a URL (fetched through the SSRF guard of
    /// `ciba.client_notifications.outbound`, cached, fetched again on an unknown `kid`).
    #[serde(default)]
    pub jwks_uri: Option<url::Url>,
    /// `private_key_jwt`: the one algorithm the client's assertions use. Default: any the
    /// gateway accepts (PS256, ES256, RS256, EdDSA; PS256 and ES256 under FAPI-CIBA).
    #[serde(default)]
    pub token_endpoint_auth_signing_alg: Option<SigningAlg>,
    /// `tls_client_auth`: the certificate's subject DN (RFC 4514), exactly one of these five.
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a DNS name in the certificate's SAN.
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI in the certificate's SAN.
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address in the certificate's SAN.
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an e-mail address in the certificate's SAN.
    #[serde(default)]
    pub tls_client_auth_san_email: Option<String>,
    /// The algorithm the client signs its authentication requests with (CIBA §4). Set: the
    /// client must sign (BC-JWT-09). Default: not signed (unless the profile requires it).
    #[serde(default)]
    pub backchannel_authentication_request_signing_alg: Option<SigningAlg>,
    /// Bind this client's access tokens to its TLS certificate (RFC 8705 §3: `cnf.x5t#S256`;
    /// a token request without a certificate is refused). Default false; always under
    /// FAPI-CIBA.
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// The hints this client may name users by. Default: all three (`login_hint`,
    /// `login_hint_token`, `id_token_hint`). `login_hint` lets a client prompt any user whose
    /// identifier it can guess.
    #[serde(default)]
    pub allowed_hint_types: Option<Vec<HintType>>,
    /// The client's security profile. Default: the top-level `profile`.
    #[serde(default)]
    pub profile: Option<Profile>,
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
    /// Where the client's public keys are.
    pub fn keys(&self) -> KeysConfig {
        KeysConfig {
            jwks: self.jwks.clone(),
            jwks_file: self.jwks_file.clone(),
            jwks_uri: self.jwks_uri.clone(),
        }
    }

    /// The client's profile: its own, or the configuration's.
    pub fn profile_in(&self, cfg: &Config) -> Option<Profile> {
        self.profile.or(cfg.profile)
    }

    /// The `tls_client_auth` match the client registered: `(metadata name, value)`.
    pub fn tls_client_auth_match(&self) -> Vec<(&'static str, &str)> {
        [
            (
                "tls_client_auth_subject_dn",
                &self.tls_client_auth_subject_dn,
            ),
            ("tls_client_auth_san_dns", &self.tls_client_auth_san_dns),
            ("tls_client_auth_san_uri", &self.tls_client_auth_san_uri),
            ("tls_client_auth_san_ip", &self.tls_client_auth_san_ip),
            ("tls_client_auth_san_email", &self.tls_client_auth_san_email),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

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
        self.check_rules(&p, cfg, false, errs);
    }

    /// The same rules for a client registering itself (RFC 7591): problems are reported under
    /// `client.<field>`; its secret, if its method takes one, is the one the gateway issues.
    pub(crate) fn check_registered(&self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        self.check_rules("client", cfg, true, errs);
    }

    /// Every rule on one client, its problems reported under `p`.
    fn check_rules(&self, p: &str, cfg: &Config, issued_secret: bool, errs: &mut Vec<ConfigError>) {
        self.check_authentication(p, cfg, issued_secret, errs);
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
        if let Some(types) = &self.allowed_hint_types
            && types.is_empty()
        {
            errs.push(ConfigError::new(
                format!("{p}.allowed_hint_types"),
                "must allow at least one hint type",
            ));
        }
        if self.profile_in(cfg) == Some(Profile::FapiCiba) {
            self.check_fapi(p, cfg, errs);
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

impl ClientConfig {
    /// The method, and what it needs: a secret for the secret methods and none for the
    /// others, keys for `private_key_jwt`, `self_signed_tls_client_auth` and signed requests,
    /// exactly one certificate match for `tls_client_auth`, a way for certificates to arrive.
    fn check_authentication(
        &self,
        p: &str,
        cfg: &Config,
        issued_secret: bool,
        errs: &mut Vec<ConfigError>,
    ) {
        let method = self.token_endpoint_auth_method;
        if let Some(u) = &self.upstream
            && !u.auth_method.uses_secret()
        {
            errs.push(ConfigError::new(
                format!("{p}.upstream.auth_method"),
                "client_secret_basic or client_secret_post (the gateway presents a secret at the provider)",
            ));
        }
        let keys = self.keys();
        let plain_ok = cfg
            .ciba
            .client_notifications
            .outbound
            .allow_private_networks;
        keys.check(p, plain_ok, errs);
        match (method.uses_secret(), &self.secret) {
            (true, None) if !issued_secret => errs.push(ConfigError::new(
                format!("{p}.secret"),
                format!("is required for {}", method.as_str()),
            )),
            (false, Some(_)) => errs.push(ConfigError::new(
                format!("{p}.secret"),
                format!(
                    "a {} client has no secret: remove it (a secret it sent would be refused)",
                    method.as_str()
                ),
            )),
            _ => {}
        }
        let needs_keys = matches!(
            method,
            AuthMethod::PrivateKeyJwt | AuthMethod::SelfSignedTlsClientAuth
        ) || self
            .backchannel_authentication_request_signing_alg
            .is_some();
        if needs_keys && !keys.is_set() {
            errs.push(ConfigError::new(
                format!("{p}.jwks"),
                "the client's keys are required (`jwks`, `jwks_file` or `jwks_uri`) for its authentication method or signed requests (CM-04)",
            ));
        }
        let matches = self.tls_client_auth_match();
        if method == AuthMethod::TlsClientAuth {
            if matches.len() != 1 {
                errs.push(ConfigError::new(
                    format!("{p}.tls_client_auth_subject_dn"),
                    "tls_client_auth needs exactly one of tls_client_auth_subject_dn, _san_dns, _san_uri, _san_ip, _san_email (RFC 8705 §2.1.2)",
                ));
            }
            if cfg.mtls.ca_file.is_none() && cfg.mtls.header.is_none() {
                errs.push(ConfigError::new(
                    "mtls.ca_file",
                    format!(
                        "is required by {p} (tls_client_auth): the CA that issues client certificates"
                    ),
                ));
            }
        } else if !matches.is_empty() {
            errs.push(ConfigError::new(
                format!("{p}.{}", matches[0].0),
                "applies to tls_client_auth clients only",
            ));
        }
        let certificates =
            method.uses_certificate() || self.tls_client_certificate_bound_access_tokens;
        if certificates && !cfg.mtls.enabled() {
            errs.push(ConfigError::new(
                format!("{p}.token_endpoint_auth_method"),
                "client certificates never reach the gateway: set `mtls.request_certificates` (with `tls`) or `mtls.header` behind a TLS-terminating load balancer",
            ));
        }
    }

    /// FAPI-CIBA (§2 of the requirements): what this client's registration must be.
    fn check_fapi(&self, p: &str, cfg: &Config, errs: &mut Vec<ConfigError>) {
        let why = |what: &str| format!("FAPI-CIBA: {what}");
        let method = self.token_endpoint_auth_method;
        if method.uses_secret() {
            errs.push(ConfigError::new(
                format!("{p}.token_endpoint_auth_method"),
                why("private_key_jwt, tls_client_auth or self_signed_tls_client_auth only (FAPI-05)"),
            ));
        }
        if self.backchannel_token_delivery_mode == DeliveryMode::Push {
            errs.push(ConfigError::new(
                format!("{p}.backchannel_token_delivery_mode"),
                why("push is not allowed (FAPI-01, PUSH-04)"),
            ));
        }
        for (key, alg) in [
            (
                "backchannel_authentication_request_signing_alg",
                self.backchannel_authentication_request_signing_alg,
            ),
            (
                "token_endpoint_auth_signing_alg",
                self.token_endpoint_auth_signing_alg,
            ),
        ] {
            if let Some(a) = alg
                && !super::FAPI_ALGS.contains(&a)
            {
                errs.push(ConfigError::new(
                    format!("{p}.{key}"),
                    why("PS256 or ES256 only (FAPI-03)"),
                ));
            }
        }
        if !self.keys().is_set() {
            errs.push(ConfigError::new(
                format!("{p}.jwks"),
                why("requests are signed, so the client's keys are required (FAPI-02)"),
            ));
        }
        if !cfg.mtls.enabled() {
            errs.push(ConfigError::new(
                "mtls",
                why(&format!(
                    "{p}'s access tokens are bound to its certificate (FAPI-06): set `mtls.request_certificates` or `mtls.header`"
                )),
            ));
        }
    }
}
