//! CIBA protocol policy: lifetimes, polling interval, binding messages, user codes.

use serde::Deserialize;

use super::ConfigError;

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

impl CibaPolicy {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
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
        if self.binding_message.max_chars == 0 {
            errs.push(ConfigError::new(
                "ciba.binding_message.max_chars",
                "must be positive",
            ));
        }
    }
}
