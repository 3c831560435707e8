//! CIBA protocol policy: lifetimes, polling interval, binding messages, user codes.

use serde::Deserialize;

use super::{ConfigError, Outbound};

/// CIBA protocol policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Long polling: a poll on a pending request is held up to this long and answered the
    /// moment the user decides, seconds. Default 0 (off: answered at once).
    pub long_poll_secs: u32,
    /// Most polls held at once by one gateway process, all clients together; a poll beyond it is
    /// answered at once, as without long polling. Below `server.max_connections`, so that held
    /// polls (each keeps its HTTP/1.1 connection) never take every connection. Default: half
    /// of `server.max_connections` ([`CibaPolicy::held_polls_cap`]).
    pub max_held_polls: Option<usize>,
    /// Most polls one client may have held at once in one gateway process; beyond it, answered
    /// at once. Default 1000.
    pub max_held_polls_per_client: usize,
    /// How the gateway calls ping and push clients' notification endpoints.
    pub client_notifications: ClientNotifications,
    /// Offer push mode (advertised, push clients accepted). The FAPI-CIBA profile forbids push
    /// (PUSH-04): `check` asks for false there. Default true.
    pub offer_push: bool,
    /// Trusted issuers of `login_hint_token`s. Default none (the hint is refused).
    pub login_hint_token: super::LoginHintTokenPolicy,
    /// How far a signed request's or an assertion's `iat`/`nbf` may be in the future (clocks
    /// disagree), seconds. Default 30 (BC-JWT-10: well under 10 minutes).
    pub clock_skew_secs: u64,
}

/// Calls to clients' `backchannel_client_notification_endpoint` (ping, push; SEC-05): HTTPS
/// only, the SSRF guard, no redirects, no cookies, a short timeout, bounded retries that stop at
/// the request's expiry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientNotifications {
    /// Timeout and SSRF guard of each call (`allow_private_networks` only for endpoints on a
    /// private network you control). Default 3000 ms, guarded.
    pub outbound: Outbound,
    /// A PEM CA bundle trusted for notification endpoints besides the system's roots (a private
    /// CA). Default none.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept `http://` notification endpoints. For development only. Default false.
    pub allow_plain_http: bool,
    /// Most attempts of one notification (5xx and network errors are retried with doubling
    /// delays, never past the request's expiry; 3xx, 401 and 403 never). Default 5.
    pub max_attempts: u32,
    /// Delay before the second attempt, milliseconds. Default 500.
    pub retry_initial_ms: u64,
}

impl Default for ClientNotifications {
    fn default() -> Self {
        Self {
            outbound: Outbound {
                timeout_ms: 3000,
                allow_private_networks: false,
            },
            ca_file: None,
            allow_plain_http: false,
            max_attempts: 5,
            retry_initial_ms: 500,
        }
    }
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
            long_poll_secs: 0,
            max_held_polls: None,
            max_held_polls_per_client: 1000,
            client_notifications: ClientNotifications::default(),
            offer_push: true,
            login_hint_token: Default::default(),
            clock_skew_secs: 30,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

impl CibaPolicy {
    /// Most polls held at once: `max_held_polls`, or half of `server.max_connections`.
    pub fn held_polls_cap(&self, server: &super::ServerConfig) -> usize {
        self.max_held_polls.unwrap_or(server.max_connections / 2)
    }

    pub(super) fn check(&self, server: &super::ServerConfig, errs: &mut Vec<ConfigError>) {
        self.login_hint_token.check(errs);
        if self.clock_skew_secs >= 600 {
            errs.push(ConfigError::new(
                "ciba.clock_skew_secs",
                "must be well under 10 minutes (BC-JWT-10)",
            ));
        }
        if self.interval_secs == 0 {
            errs.push(ConfigError::new("ciba.interval_secs", "must be positive"));
        }
        if self.default_expiry_secs == 0 {
            errs.push(ConfigError::new(
                "ciba.default_expiry_secs",
                "must be positive",
            ));
        }
        if self.max_expiry_secs < self.default_expiry_secs {
            errs.push(ConfigError::new(
                "ciba.max_expiry_secs",
                "must be at least default_expiry_secs",
            ));
        }
        if self.long_poll_secs > 120 {
            errs.push(ConfigError::new(
                "ciba.long_poll_secs",
                "must be at most 120 (clients and proxies give up on longer requests)",
            ));
        }
        if self.held_polls_cap(server) >= server.max_connections {
            errs.push(ConfigError::new(
                "ciba.max_held_polls",
                format!(
                    "must be below server.max_connections ({}): a held poll keeps its connection",
                    server.max_connections
                ),
            ));
        }
        if self.max_held_polls_per_client == 0 || self.max_held_polls == Some(0) {
            errs.push(ConfigError::new(
                if self.max_held_polls == Some(0) {
                    "ciba.max_held_polls"
                } else {
                    "ciba.max_held_polls_per_client"
                },
                "must be positive (set ciba.long_poll_secs: 0 to hold no polls)",
            ));
        }
        if self.client_notifications.max_attempts == 0 {
            errs.push(ConfigError::new(
                "ciba.client_notifications.max_attempts",
                "must be positive",
            ));
        }
        if self.binding_message.max_chars == 0 {
            errs.push(ConfigError::new(
                "ciba.binding_message.max_chars",
                "must be positive",
            ));
        }
    }
}
