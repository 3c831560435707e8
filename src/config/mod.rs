//! Configuration: one YAML file becomes a validated, typed [`Config`] at start-up. Every problem
//! is reported with the path of the field it is about (`clients[0].secret: …`).
//!
//! The full reference, with every key and default, is in the README.

mod model;
mod secret_ref;

use std::fmt;
use std::path::Path;

pub use model::*;
pub use secret_ref::{SecretRef, resolve_secret, resolve_verifier};

/// One configuration problem, named by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `clients[0].secret`, `tokens.keys[1].private_key`, …
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the problems found in a configuration.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(&text)
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigErrors> {
        let cfg: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::new("", e.to_string()))?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GW-07 / SEC-04: the limits are on unless switched off with null.
    #[test]
    fn backchannel_rate_limits_default_on_and_null_disables() {
        let c = Config::from_yaml("public_url: http://gw.example\n").unwrap();
        let rate = |requests, per_secs| Some(Rate { requests, per_secs });
        assert_eq!(c.limits.bc_per_user, rate(5, 60));
        assert_eq!(c.limits.bc_per_client, rate(600, 60));
        let c = Config::from_yaml(
            "public_url: http://gw.example\nlimits: { bc_per_user: null, bc_per_client: { requests: 9, per_secs: 3 } }\n",
        )
        .unwrap();
        assert_eq!(c.limits.bc_per_user, None);
        assert_eq!(c.limits.bc_per_client, rate(9, 3));
        assert_eq!(c.limits.max_body_bytes, 64 * 1024);
    }

    // Issue (providers as they are), item 5: only clients that can start CIBA requests need
    // credentials at the upstream for its login.
    #[test]
    fn upstream_credentials_only_for_ciba_clients() {
        let yaml = |grants: &str| {
            format!(
                "public_url: http://gw\nupstream: {{ url: \"http://127.0.0.1:1\" }}\napproval: {{ mode: upstream }}\nclients:\n  - {{ client_id: a, secret: \"${{HOME}}\", grant_types: [{grants}] }}\n"
            )
        };
        assert!(Config::from_yaml(&yaml("authorization_code")).is_ok());
        let e = Config::from_yaml(&yaml("\"urn:openid:params:grant-type:ciba\"")).unwrap_err();
        assert_eq!(e.0[0].path, "clients[0].upstream");
    }

    // `runtime:` names the proxy runtime; `engine:`, its old name, keeps existing files working.
    #[test]
    fn runtime_key_and_its_old_name() {
        for key in ["runtime", "engine"] {
            let c = Config::from_yaml(&format!("public_url: http://gw\n{key}: tower\n")).unwrap();
            assert_eq!(c.runtime(), RuntimeKind::Tower);
        }
        let e = Config::from_yaml("public_url: http://gw\nruntime: pingora\n").unwrap_err();
        assert_eq!(e.0[0].path, "runtime");
    }
}
