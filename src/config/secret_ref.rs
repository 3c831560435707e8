//! Secret references in YAML: `${ENV_VAR}`, `file:/path`, or (for client secrets and user codes)
//! an argon2id hash. Plaintext secrets in the file are refused: secure by default.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::secret::{Expected, Secret};

/// A secret as the configuration gives it, not yet resolved: as written in the file (a
/// `${ENV_VAR}` or `file:/path` reference, an argon2id hash, an inline PEM key), or the value
/// itself, handed over in code ([`SecretRef::value`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRef(Given);

#[derive(Clone, PartialEq, Eq)]
enum Given {
    Written(String),
    Value(Secret),
}

impl Default for SecretRef {
    fn default() -> Self {
        Self::new("")
    }
}

impl SecretRef {
    /// A reference as it would be written in the file: `${ENV_VAR}`, `file:/path`, an argon2id
    /// hash (client secrets, user codes) or an inline PEM key (signing keys).
    pub fn new(s: impl Into<String>) -> Self {
        Self(Given::Written(s.into()))
    }

    /// The secret itself, for configuration built in code (from the application's own secret
    /// store). Plaintext values are refused in the file, never here.
    pub fn value(secret: impl Into<std::sync::Arc<str>>) -> Self {
        Self(Given::Value(Secret::new(secret)))
    }

    /// The reference as written, or the value given in code (may itself be a secret: do not
    /// log).
    pub fn raw(&self) -> &str {
        match &self.0 {
            Given::Written(s) => s,
            Given::Value(s) => s.expose(),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Given::Written(s) if s.starts_with("${") || s.starts_with("file:") => {
                write!(f, "SecretRef({s:?})")
            }
            Given::Written(_) => f.write_str("SecretRef(<inline>)"),
            Given::Value(_) => f.write_str("SecretRef(<value>)"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Resolves `${ENV}` and `file:` references. Returns `Ok(None)` when the value is neither (an
/// inline value, for the caller to judge).
pub(crate) fn resolve_secret(r: &SecretRef) -> Result<Option<Secret>, String> {
    let s = match &r.0 {
        Given::Value(v) => return Ok(Some(v.clone())),
        Given::Written(s) => s,
    };
    if let Some(var) = s.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| format!("environment variable {var} is not set"));
    }
    if let Some(path) = s.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|v| Some(Secret::new(v.trim_end_matches(['\r', '\n']))))
            .map_err(|e| format!("cannot read {path}: {e}"));
    }
    Ok(None)
}

/// Resolves a secret that must be a reference (`${ENV}` or `file:`): an inline value is refused,
/// so that no secret sits in the file in the clear.
pub(crate) fn required_reference(r: &SecretRef) -> Result<Secret, String> {
    resolve_secret(r)?.ok_or_else(|| "must be a reference: `${ENV_VAR}` or `file:/path`".into())
}

/// Resolves a client secret or user code: an argon2 hash stays a hash; `${ENV}`/`file:` give a
/// plaintext that is compared in constant time (or a hash, if that is what the file holds).
pub(crate) fn resolve_verifier(r: &SecretRef) -> Result<Expected, String> {
    if let Some(e) = Expected::argon2(r.raw()) {
        return Ok(e);
    }
    if r.raw().starts_with("$argon2") {
        return Err("is not a valid argon2 PHC string".into());
    }
    match resolve_secret(r)? {
        Some(s) => Ok(Expected::argon2(s.expose()).unwrap_or(Expected::Plain(s))),
        None => Err(
            "plaintext secrets are not accepted in the file: use an argon2id hash \
                     (`ciba-gateway hash-secret`), `${ENV_VAR}` or `file:/path`"
                .into(),
        ),
    }
}
