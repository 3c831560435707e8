//! Request limits: body size and time, and the backchannel rate limits.

use serde::Deserialize;

use super::{Config, ConfigError};

/// Request limits (GW-07).
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

impl Limits {
    pub(super) fn check(&self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        if self.max_body_bytes < 1024 {
            errs.push(ConfigError::new(
                "limits.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if cfg.upstream.is_some() && self.max_body_bytes > 64 * 1024 {
            // pingora replays a buffered token request upstream from a 64 KiB buffer.
            errs.push(ConfigError::new(
                "limits.max_body_bytes",
                "must be at most 65536 with an upstream",
            ));
        }
        if self.body_read_timeout_secs == 0 {
            errs.push(ConfigError::new(
                "limits.body_read_timeout_secs",
                "must be positive",
            ));
        }
        for (path, rate) in [
            ("limits.bc_per_client", self.bc_per_client),
            ("limits.bc_per_user", self.bc_per_user),
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
    }
}
