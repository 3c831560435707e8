//! The YAML model with its defaults, and the checks that make it a valid configuration.

use std::net::SocketAddr;

use serde::Deserialize;
use url::Url;

use super::ConfigError;
use super::secret_ref::{SecretRef, resolve_secret, resolve_verifier};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
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
}

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// `page` or `upstream`. Default `page`.
    pub mode: ApprovalMode,
    /// (`upstream`) the claim that binds the upstream login to the requested user. Default `sub`.
    pub identity_claim: IdentityClaim,
    /// (`upstream`) send `prompt=login`, so the user authenticates afresh. Default true.
    pub prompt_login: bool,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            mode: ApprovalMode::Page,
            identity_claim: IdentityClaim::Sub,
            prompt_login: true,
        }
    }
}

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

/// The proxy runtime that serves the protocol engine in the binary (`runtime:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Cloudflare's pingora (`CibaProxy`).
    Pingora,
    /// hyper with the tower layer (`CibaLayer`), forwarding with a hyper-based client.
    Tower,
}

/// Which forwarding headers the upstream gets. Inbound ones are always removed (BCP-05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    XForwarded,
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// None.
    None,
}

/// The upstream OpenID provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the provider (`http` or `https`).
    pub url: Url,
    /// PEM file of CA certificates to verify an https upstream with. Default: the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `Host` header sent upstream. Default: the client's, unchanged (the provider then builds
    /// its URLs for the public host).
    #[serde(default)]
    pub host_header: Option<String>,
    /// Connect timeout, milliseconds. Default 3000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Timeout for the upstream's response, milliseconds. Default 30000.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Forwarding headers for the upstream. Default `x_forwarded`.
    #[serde(default = "default_forwarding")]
    pub forwarding_headers: ForwardingHeaders,
    /// How long the upstream's discovery document is cached, seconds. Default 60.
    #[serde(default = "default_discovery_cache")]
    pub discovery_cache_secs: u64,
    /// How long the upstream's JWKS is cached, seconds. Default 300.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache_secs: u64,
}

fn default_connect_timeout() -> u64 {
    3000
}
fn default_read_timeout() -> u64 {
    30_000
}
fn default_forwarding() -> ForwardingHeaders {
    ForwardingHeaders::XForwarded
}
fn default_discovery_cache() -> u64 {
    60
}
fn default_jwks_cache() -> u64 {
    300
}

/// Listener TLS (rustls): HTTP/1.1 and HTTP/2 by ALPN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: std::path::PathBuf,
    /// PEM private key.
    pub key_file: std::path::PathBuf,
}

/// Server process settings: threads, shutdown, and the connection limits that keep one client
/// from taking the listener away from everyone else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads of the proxy. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// On SIGTERM, how long open connections get to finish, seconds. Default 5.
    pub shutdown_grace_secs: u64,
    /// How long a request's headers may take to arrive, seconds (slow-header clients are
    /// disconnected). Default 10.
    pub header_read_timeout_secs: u64,
    /// How long a connection may sit with no request in flight and no bytes moving before it
    /// is closed (idle keep-alive, or connected and silent), seconds. Default 30.
    pub idle_timeout_secs: u64,
    /// Connections served at once. Beyond it new connections wait in the listen backlog while
    /// idle ones are closed to make room; the listener never spins. Default 10000.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 100.
    pub http2_max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: None,
            shutdown_grace_secs: 5,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 30,
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "phone"]
        .map(String::from)
        .to_vec()
}

/// Endpoint paths. Every path left out is derived (see [`crate::engine::Paths`]): the gateway's
/// own endpoints sit under the issuer's path; the token and userinfo paths, shared with the
/// upstream, are read from the provider's discovery.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    /// Backchannel authentication endpoint. Default `{issuer path}/bc-authorize`.
    pub backchannel: Option<String>,
    /// More paths the backchannel endpoint answers at (never advertised), e.g. `/ciba/auth` for
    /// clients written from the seed write-up. Default none.
    pub backchannel_aliases: Vec<String>,
    /// Token endpoint (shared with the upstream). Default: the path of the provider's
    /// `token_endpoint`; standalone `{issuer path}/token`.
    pub token: Option<String>,
    /// Userinfo endpoint (shared with the upstream: the gateway answers for the access tokens
    /// it minted). Default: the path of the provider's `userinfo_endpoint`; standalone
    /// `{issuer path}/userinfo`.
    pub userinfo: Option<String>,
    /// Discovery document. Default `{issuer path}/.well-known/openid-configuration`.
    pub discovery: Option<String>,
    /// The gateway's JWKS. Default `{issuer path}/jwks`.
    pub jwks: Option<String>,
    /// Prefix of the built-in approval pages. Default `{issuer path}/approve`.
    pub approval: Option<String>,
    /// Callback for the HTTP authentication channel. Default `{issuer path}/ciba/callback`.
    pub callback: Option<String>,
    /// Health check. Default `/healthz`; empty to disable.
    pub health: Option<String>,
}

/// Request limits (GW-07).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body the gateway buffers, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive in full, seconds: a slower one gets `408` on
    /// the gateway's endpoints and is cut off on pass-through. Default 30.
    pub body_read_timeout_secs: u64,
    /// Backchannel requests one client may make. Default 600 per 60 s; `null`: no limit.
    pub bc_per_client: Option<Rate>,
    /// Backchannel requests that may reach one user, across all clients: the defence against
    /// prompt bombing through a guessable `login_hint` (SEC-04). Default 5 per 60 s; `null`:
    /// no limit.
    pub bc_per_user: Option<Rate>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            body_read_timeout_secs: 30,
            bc_per_client: Some(Rate {
                requests: 600,
                per_secs: 60,
            }),
            bc_per_user: Some(Rate {
                requests: 5,
                per_secs: 60,
            }),
        }
    }
}

/// A rate: a burst of `requests`, refilled evenly over `per_secs` (one request every
/// `per_secs / requests` seconds once the burst is spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed in a burst and per window. At least 1.
    pub requests: u32,
    /// The window, seconds. At least 1.
    pub per_secs: u32,
}

/// CIBA protocol policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CibaPolicy {
    /// Lifetime of a request when the client sends no `requested_expiry`, seconds. Default 300.
    pub default_expiry_secs: u32,
    /// Upper bound for `requested_expiry` (BC-REQ-05), seconds. Default 600.
    pub max_expiry_secs: u32,
    /// Minimum polling interval announced and enforced, seconds. Default 5.
    pub interval_secs: u32,
    /// Accept `urn:ietf:params:oauth:grant-type:ciba` as an alias (MYTH-01). Default true.
    pub accept_ietf_grant_type_alias: bool,
    /// `binding_message` policy.
    pub binding_message: BindingMessagePolicy,
    /// `user_code` policy.
    pub user_code: UserCodePolicy,
}

impl Default for CibaPolicy {
    fn default() -> Self {
        Self {
            default_expiry_secs: 300,
            max_expiry_secs: 600,
            interval_secs: 5,
            accept_ietf_grant_type_alias: true,
            binding_message: BindingMessagePolicy::default(),
            user_code: UserCodePolicy::default(),
        }
    }
}

/// Which characters a binding message may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// Printable ASCII only.
    Ascii,
    /// Any Unicode text without control or format characters (what the approval page can show).
    Text,
}

/// `binding_message` policy (BC-UC-03/04).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindingMessagePolicy {
    /// Require a binding message (missing: `invalid_request`). Default false.
    pub required: bool,
    /// Longest accepted message, in characters. Default 128.
    pub max_chars: usize,
    /// Accepted characters. Default `text`.
    pub charset: Charset,
}

impl Default for BindingMessagePolicy {
    fn default() -> Self {
        Self {
            required: false,
            max_chars: 128,
            charset: Charset::Text,
        }
    }
}

/// `user_code` policy (BC-UC-01/02, SEC-04).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserCodePolicy {
    /// Advertise `backchannel_user_code_parameter_supported`. Default true.
    pub supported: bool,
    /// Wrong codes tolerated per user within `lockout_secs` before requests are refused.
    /// Default 5.
    pub max_failures: u32,
    /// Length of the failure window, seconds. Default 900.
    pub lockout_secs: u64,
}

impl Default for UserCodePolicy {
    fn default() -> Self {
        Self {
            supported: true,
            max_failures: 5,
            lockout_secs: 900,
        }
    }
}

/// Pending-request storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum StoreConfig {
    /// In-process (moka). One instance only, or sticky routing (GW-04).
    Memory {
        /// Most requests held at once; beyond it new requests are refused. Default 100000.
        #[serde(default = "default_capacity")]
        capacity: u64,
        /// How long an expired request is remembered so that polls get `expired_token`
        /// rather than `invalid_grant`, seconds. Default 600.
        #[serde(default = "default_tombstone")]
        expired_grace_secs: u64,
    },
}

fn default_capacity() -> u64 {
    100_000
}
fn default_tombstone() -> u64 {
    600
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Memory {
            capacity: default_capacity(),
            expired_grace_secs: default_tombstone(),
        }
    }
}

/// Outbound HTTP settings shared by every call the gateway makes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Total timeout of a call, milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// Allow loopback, private and link-local targets (SSRF guard, SEC-05). Default false.
    pub allow_private_networks: bool,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            allow_private_networks: false,
        }
    }
}

/// The authentication channel.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// Development: log a one-time link to the built-in approval page.
    #[default]
    Log,
    /// Keycloak-compatible "HTTP Authentication Channel".
    Http {
        /// Where the authentication requests are POSTed.
        url: Url,
        /// Key for the request-bound bearer tokens (HS256). Default: random per process, so
        /// tokens die with a restart. Set it when several instances share a store.
        #[serde(default)]
        bearer_secret: Option<SecretRef>,
        /// Outbound call settings.
        #[serde(default)]
        outbound: Outbound,
    },
    /// Send the user a one-time link to the gateway's approval page through a notifier.
    Notify {
        /// The notifier used unless the user's directory entry names another. Default `log`.
        #[serde(default)]
        default: NotifierKind,
        /// Webhook settings (required when any user may be notified by webhook).
        #[serde(default)]
        webhook: Option<WebhookConfig>,
        /// E-mail settings (required when any user may be notified by e-mail).
        #[serde(default)]
        email: Option<EmailConfig>,
    },
}

/// How a user is reached with their approval link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    /// Write the link to the gateway's log (development).
    #[default]
    Log,
    /// POST a signed JSON event (Standard Webhooks) to a URL.
    Webhook,
    /// Send an e-mail over SMTP to the user's address.
    Email,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plain text: only for a relay on the same host or in tests.
    None,
}

/// An e-mail notifier: a plain-text and HTML message with the binding message, the client's
/// name and the approval link, sent over SMTP (lettre, rustls).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host.
    pub host: String,
    /// SMTP port. Default 587.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Connection security. Default `starttls`.
    #[serde(default = "default_smtp_tls")]
    pub tls: SmtpTls,
    /// PEM CA bundle for a private CA (TLS modes). Default: the webpki roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// SMTP user name, if the server wants authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password: a `${ENV}` or `file:` reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// The sender, e.g. `Sign-in <noreply@example.com>`.
    pub from: String,
    /// Timeout of one delivery, milliseconds. Default 10000.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_ms: u64,
    /// First retry delay, milliseconds; doubled after each failure. Default 1000.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    /// Most delivery attempts. Default 5.
    #[serde(default = "default_smtp_attempts")]
    pub max_attempts: u32,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}
fn default_smtp_timeout() -> u64 {
    10_000
}
fn default_smtp_attempts() -> u32 {
    5
}

/// A webhook notifier: JSON POST signed with HMAC-SHA256 in the Standard Webhooks scheme
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: Url,
    /// The signing secret, `whsec_<base64>`: a `${ENV}` or `file:` reference.
    pub secret: SecretRef,
    /// First retry delay, milliseconds; doubled after each failure, until the request expires.
    /// Default 1000.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    /// Most delivery attempts. Default 8.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Outbound call settings (timeout, SSRF guard).
    #[serde(default)]
    pub outbound: Outbound,
}

fn default_retry_ms() -> u64 {
    1000
}
fn default_attempts() -> u32 {
    8
}

/// Where users come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum UsersConfig {
    /// Users listed in the file.
    Static {
        /// The users.
        #[serde(default)]
        users: Vec<UserConfig>,
    },
    /// Ask an HTTP service: `POST url` with `{"login_hint": "…"}`; 200 with a user, 404 if none.
    Http {
        /// The lookup URL.
        url: Url,
        /// Optional bearer token sent to the lookup service.
        #[serde(default)]
        bearer_token: Option<SecretRef>,
        /// How long a found user is cached, seconds. Default 60.
        #[serde(default = "default_user_cache")]
        cache_secs: u64,
        /// Outbound call settings.
        #[serde(default)]
        outbound: Outbound,
    },
}

fn default_user_cache() -> u64 {
    60
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self::Static { users: Vec::new() }
    }
}

/// A user in the static directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The stable subject identifier (`sub`).
    pub subject: String,
    /// Username the user can be hinted by.
    #[serde(default)]
    pub username: Option<String>,
    /// E-mail address (hint and contact).
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number (hint and contact).
    #[serde(default)]
    pub phone: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's `user_code`, as an argon2id hash or a reference.
    #[serde(default)]
    pub user_code: Option<SecretRef>,
    /// How this user is reached (`channel.type: notify`). Default: the channel's default.
    #[serde(default)]
    pub notify: Option<NotifierKind>,
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

/// Token delivery modes (CIBA §5). Only poll is offered for now.
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

/// JWS algorithms the gateway signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    /// ECDSA P-256 SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PSS SHA-256.
    PS256,
}

impl SigningAlg {
    /// The JWS name (`ES256`, `EdDSA`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
        }
    }
}

/// A signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, published in the JWKS and every token header.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// PKCS#8 PEM private key: `file:/path`, `${ENV}` or inline PEM.
    pub private_key: SecretRef,
}

/// Token minting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Signing keys; all are published, the active one signs. Empty: an ephemeral ES256 key is
    /// generated at start (tokens do not survive a restart).
    pub keys: Vec<KeyConfig>,
    /// Which key signs. Default: the first.
    pub active_kid: Option<String>,
    /// ID token lifetime, seconds. Default 300.
    pub id_token_ttl_secs: u64,
    /// Access token lifetime, seconds. Default 600.
    pub access_token_ttl_secs: u64,
    /// `aud` of access tokens. Default: the issuer.
    pub access_token_audience: Option<String>,
    /// `acr` values the gateway may assert; a requested value in this list becomes the ID
    /// token's `acr` (TOK-09). Default none.
    pub acr_values_supported: Vec<String>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            active_kid: None,
            id_token_ttl_secs: 300,
            access_token_ttl_secs: 600,
            access_token_audience: None,
            acr_values_supported: Vec::new(),
        }
    }
}

/// Paths the gateway shares with the provider may end in `/` (django-oauth-toolkit's
/// `/o/token/`); the gateway's own may not, since the approval pages live below theirs.
fn check_path(errs: &mut Vec<ConfigError>, field: &str, p: &str, shared: bool) {
    if p.is_empty() && field == "endpoints.health" {
        return;
    }
    if !p.starts_with('/')
        || p.contains(['?', '#', ' '])
        || (!shared && p.len() > 1 && p.ends_with('/'))
    {
        errs.push(ConfigError::new(
            field,
            "must be an absolute path like /bc-authorize",
        ));
    }
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

    /// Every problem in the configuration; empty when it is valid. Secret references are
    /// resolved here too, so that a missing variable or file is reported at start-up.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        if let Some(u) = &self.upstream {
            if !matches!(u.url.scheme(), "http" | "https") || u.url.host_str().is_none() {
                errs.push(ConfigError::new(
                    "upstream.url",
                    "must be an http or https URL with a host",
                ));
            }
            if u.url.path() != "/" || u.url.query().is_some() {
                errs.push(ConfigError::new(
                    "upstream.url",
                    "must be an origin (scheme, host, port) without a path",
                ));
            }
            if let Some(ca) = &u.ca_file
                && !ca.is_file()
            {
                errs.push(ConfigError::new(
                    "upstream.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            if self.limits.max_body_bytes > 64 * 1024 {
                // pingora replays a buffered token request upstream from a 64 KiB buffer.
                errs.push(ConfigError::new(
                    "limits.max_body_bytes",
                    "must be at most 65536 with an upstream",
                ));
            }
        }
        for (path, rate) in [
            ("limits.bc_per_client", self.limits.bc_per_client),
            ("limits.bc_per_user", self.limits.bc_per_user),
        ] {
            if let Some(r) = rate
                && (r.requests == 0 || r.per_secs == 0)
            {
                errs.push(ConfigError::new(
                    path,
                    "requests and per_secs must be positive (null disables the limit)",
                ));
            }
        }
        if self.runtime() == RuntimeKind::Pingora && self.upstream.is_none() {
            errs.push(ConfigError::new(
                "runtime",
                "the pingora runtime needs an upstream",
            ));
        }
        if let Some(t) = &self.tls {
            for (f, p) in [
                ("tls.cert_file", &t.cert_file),
                ("tls.key_file", &t.key_file),
            ] {
                if !p.is_file() {
                    errs.push(ConfigError::new(
                        f,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        if self.approval.mode == ApprovalMode::Upstream && self.upstream.is_none() {
            errs.push(ConfigError::new(
                "approval.mode",
                "`upstream` needs an upstream provider",
            ));
        }
        for (i, cl) in self.clients.iter().enumerate() {
            // Only a client that can start CIBA requests logs users in at the upstream.
            if self.approval.mode == ApprovalMode::Upstream
                && cl.upstream.is_none()
                && cl
                    .grant_types
                    .iter()
                    .any(|g| g == crate::protocol::GRANT_TYPE_CIBA)
            {
                errs.push(ConfigError::new(
                    format!("clients[{i}].upstream"),
                    "is required with approval.mode: upstream",
                ));
            }
            if cl.tokens == TokenSource::Upstream && self.approval.mode != ApprovalMode::Upstream {
                errs.push(ConfigError::new(
                    format!("clients[{i}].tokens"),
                    "`upstream` needs approval.mode: upstream",
                ));
            }
            if let Some(u) = &cl.upstream
                && let Err(m) = resolve_secret(&u.client_secret).and_then(|s| {
                    s.ok_or_else(|| "must be a reference: `${ENV_VAR}` or `file:/path`".to_owned())
                })
            {
                errs.push(ConfigError::new(
                    format!("clients[{i}].upstream.client_secret"),
                    m,
                ));
            }
        }
        if self.server.threads == Some(0) {
            errs.push(ConfigError::new("server.threads", "must be positive"));
        }
        for (field, zero) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs == 0,
            ),
            (
                "server.idle_timeout_secs",
                self.server.idle_timeout_secs == 0,
            ),
            ("server.max_connections", self.server.max_connections == 0),
            (
                "server.http2_max_concurrent_streams",
                self.server.http2_max_concurrent_streams == 0,
            ),
            (
                "limits.body_read_timeout_secs",
                self.limits.body_read_timeout_secs == 0,
            ),
        ] {
            if zero {
                errs.push(ConfigError::new(field, "must be positive"));
            }
        }
        if !matches!(self.public_url.scheme(), "http" | "https") {
            errs.push(ConfigError::new(
                "public_url",
                "must be an http or https URL",
            ));
        }
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            errs.push(ConfigError::new(
                "public_url",
                "must not have a query or fragment",
            ));
        }
        if let Some(iss) = &self.issuer
            && Url::parse(iss).is_err()
        {
            errs.push(ConfigError::new("issuer", "must be a URL"));
        }
        let e = &self.endpoints;
        for (name, p, shared) in [
            ("backchannel", &e.backchannel, false),
            ("token", &e.token, true),
            ("userinfo", &e.userinfo, true),
            ("discovery", &e.discovery, false),
            ("jwks", &e.jwks, false),
            ("approval", &e.approval, false),
            ("callback", &e.callback, false),
            ("health", &e.health, false),
        ] {
            if let Some(p) = p {
                check_path(&mut errs, &format!("endpoints.{name}"), p, shared);
            }
        }
        for (i, p) in e.backchannel_aliases.iter().enumerate() {
            check_path(
                &mut errs,
                &format!("endpoints.backchannel_aliases[{i}]"),
                p,
                false,
            );
        }
        if self.limits.max_body_bytes < 1024 {
            errs.push(ConfigError::new(
                "limits.max_body_bytes",
                "must be at least 1024",
            ));
        }
        let c = &self.ciba;
        if c.interval_secs == 0 {
            errs.push(ConfigError::new("ciba.interval_secs", "must be positive"));
        }
        if c.default_expiry_secs == 0 {
            errs.push(ConfigError::new(
                "ciba.default_expiry_secs",
                "must be positive",
            ));
        }
        if c.max_expiry_secs < c.default_expiry_secs {
            errs.push(ConfigError::new(
                "ciba.max_expiry_secs",
                "must be at least default_expiry_secs",
            ));
        }
        if c.binding_message.max_chars == 0 {
            errs.push(ConfigError::new(
                "ciba.binding_message.max_chars",
                "must be positive",
            ));
        }
        if let StoreConfig::Memory { capacity: 0, .. } = self.store {
            errs.push(ConfigError::new("store.capacity", "must be positive"));
        }
        if let ChannelConfig::Notify {
            default,
            webhook,
            email,
        } = &self.channel
        {
            let user_wants = |k: NotifierKind| {
                *default == k
                    || matches!(&self.users, UsersConfig::Static { users } if users.iter().any(|u| u.notify == Some(k)))
            };
            if email.is_none() && user_wants(NotifierKind::Email) {
                errs.push(ConfigError::new(
                    "channel.email",
                    "is required for the e-mail notifier",
                ));
            }
            if let Some(e) = email {
                if e.from.parse::<lettre::message::Mailbox>().is_err() {
                    errs.push(ConfigError::new(
                        "channel.email.from",
                        "is not a valid mailbox",
                    ));
                }
                if let Some(p) = &e.password
                    && let Err(m) = resolve_secret(p).and_then(|s| {
                        s.ok_or_else(|| {
                            "must be a reference: `${ENV_VAR}` or `file:/path`".to_owned()
                        })
                    })
                {
                    errs.push(ConfigError::new("channel.email.password", m));
                }
                if e.max_attempts == 0 {
                    errs.push(ConfigError::new(
                        "channel.email.max_attempts",
                        "must be positive",
                    ));
                }
            }
            let user_wants_webhook = user_wants(NotifierKind::Webhook);
            match webhook {
                None if user_wants_webhook => {
                    errs.push(ConfigError::new(
                        "channel.webhook",
                        "is required for the webhook notifier",
                    ));
                }
                None => {}
                Some(w) => {
                    if !matches!(w.url.scheme(), "http" | "https") {
                        errs.push(ConfigError::new(
                            "channel.webhook.url",
                            "must be an http or https URL",
                        ));
                    }
                    if let Err(m) = crate::channel::webhook_key(&w.secret) {
                        errs.push(ConfigError::new("channel.webhook.secret", m));
                    }
                    if w.max_attempts == 0 {
                        errs.push(ConfigError::new(
                            "channel.webhook.max_attempts",
                            "must be positive",
                        ));
                    }
                }
            }
        }
        if let ChannelConfig::Http {
            url, bearer_secret, ..
        } = &self.channel
        {
            if !matches!(url.scheme(), "http" | "https") {
                errs.push(ConfigError::new(
                    "channel.url",
                    "must be an http or https URL",
                ));
            }
            if let Some(s) = bearer_secret {
                match resolve_secret(s) {
                    Ok(Some(v)) if v.expose().len() < 32 => errs.push(ConfigError::new(
                        "channel.bearer_secret",
                        "must be at least 32 characters",
                    )),
                    Ok(Some(_)) => {}
                    Ok(None) => errs.push(ConfigError::new(
                        "channel.bearer_secret",
                        "must be a reference: `${ENV_VAR}` or `file:/path`",
                    )),
                    Err(m) => errs.push(ConfigError::new("channel.bearer_secret", m)),
                }
            }
        }
        match &self.users {
            UsersConfig::Static { users } => {
                let mut seen = std::collections::HashMap::new();
                for (i, u) in users.iter().enumerate() {
                    let p = format!("users.users[{i}]");
                    if u.subject.trim().is_empty() {
                        errs.push(ConfigError::new(
                            format!("{p}.subject"),
                            "must not be empty",
                        ));
                    }
                    for name in [
                        Some(&u.subject),
                        u.username.as_ref(),
                        u.email.as_ref(),
                        u.phone.as_ref(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        let key = name.to_lowercase();
                        if let Some(j) = seen.insert(key, i)
                            && j != i
                        {
                            errs.push(ConfigError::new(
                                p.clone(),
                                format!("hint '{name}' is also used by users[{j}]"),
                            ));
                        }
                    }
                    if let Some(uc) = &u.user_code
                        && let Err(m) = resolve_verifier(uc)
                    {
                        errs.push(ConfigError::new(format!("{p}.user_code"), m));
                    }
                }
            }
            UsersConfig::Http {
                url, bearer_token, ..
            } => {
                if !matches!(url.scheme(), "http" | "https") {
                    errs.push(ConfigError::new(
                        "users.url",
                        "must be an http or https URL",
                    ));
                }
                if let Some(t) = bearer_token {
                    match resolve_secret(t) {
                        Ok(Some(_)) => {}
                        Ok(None) => errs.push(ConfigError::new(
                            "users.bearer_token",
                            "must be a reference: `${ENV_VAR}` or `file:/path`",
                        )),
                        Err(m) => errs.push(ConfigError::new("users.bearer_token", m)),
                    }
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, cl) in self.clients.iter().enumerate() {
            let p = format!("clients[{i}]");
            if cl.client_id.is_empty() {
                errs.push(ConfigError::new(
                    format!("{p}.client_id"),
                    "must not be empty",
                ));
            }
            if !ids.insert(cl.client_id.as_str()) {
                errs.push(ConfigError::new(
                    format!("{p}.client_id"),
                    "is used by another client",
                ));
            }
            if let Err(m) = resolve_verifier(&cl.secret) {
                errs.push(ConfigError::new(format!("{p}.secret"), m));
            }
            if cl.backchannel_token_delivery_mode != DeliveryMode::Poll {
                // CM-01: a mode the gateway does not support is refused.
                errs.push(ConfigError::new(
                    format!("{p}.backchannel_token_delivery_mode"),
                    "only `poll` is supported by this version",
                ));
            }
            if let Some(g) = cl
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
            if let Some(scopes) = &cl.scopes {
                if !scopes.iter().any(|s| s == "openid") {
                    errs.push(ConfigError::new(
                        format!("{p}.scopes"),
                        "must include openid",
                    ));
                }
                for s in scopes {
                    if !self.scopes_supported.contains(s) {
                        errs.push(ConfigError::new(
                            format!("{p}.scopes"),
                            format!("'{s}' is not in scopes_supported"),
                        ));
                    }
                }
            }
            if cl.backchannel_user_code_parameter && !c.user_code.supported {
                errs.push(ConfigError::new(
                    format!("{p}.backchannel_user_code_parameter"),
                    "ciba.user_code.supported is false",
                ));
            }
        }
        if !self.scopes_supported.iter().any(|s| s == "openid") {
            errs.push(ConfigError::new("scopes_supported", "must include openid"));
        }
        let t = &self.tokens;
        let mut kids = std::collections::HashSet::new();
        for (i, k) in t.keys.iter().enumerate() {
            if k.kid.is_empty() || !kids.insert(k.kid.as_str()) {
                errs.push(ConfigError::new(
                    format!("tokens.keys[{i}].kid"),
                    "must be non-empty and unique",
                ));
            }
            if let Err(m) = crate::tokens::load_key_pem(&k.private_key) {
                errs.push(ConfigError::new(format!("tokens.keys[{i}].private_key"), m));
            }
        }
        if let Some(active) = &t.active_kid
            && !t.keys.iter().any(|k| &k.kid == active)
        {
            errs.push(ConfigError::new(
                "tokens.active_kid",
                "names no key in tokens.keys",
            ));
        }
        if t.id_token_ttl_secs == 0 || t.access_token_ttl_secs == 0 {
            errs.push(ConfigError::new(
                "tokens",
                "token lifetimes must be positive",
            ));
        }
        errs
    }
}
