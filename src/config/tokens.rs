//! Token minting: signing keys and lifetimes (`tokens`).

use serde::Deserialize;

use super::{ConfigError, SecretRef};

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Lifetime of a refresh-token family (all the rotations of one grant), seconds. Default
    /// 2 592 000 (30 days).
    pub refresh_token_ttl_secs: u64,
    /// A family not refreshed for this long ends, seconds. Default 1 209 600 (14 days).
    pub refresh_token_idle_secs: u64,
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
            refresh_token_ttl_secs: 30 * 24 * 3600,
            refresh_token_idle_secs: 14 * 24 * 3600,
        }
    }
}

impl TokensConfig {
    /// Shape only: the keys are loaded, and `active_kid` matched against them, by
    /// [`crate::tokens::KeySet::from_config`].
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        for (i, k) in self.keys.iter().enumerate() {
            if k.kid.is_empty() || self.keys[..i].iter().any(|o| o.kid == k.kid) {
                errs.push(ConfigError::new(
                    format!("tokens.keys[{i}].kid"),
                    "must be non-empty and unique",
                ));
            }
        }
        if self.id_token_ttl_secs == 0
            || self.access_token_ttl_secs == 0
            || self.refresh_token_ttl_secs == 0
            || self.refresh_token_idle_secs == 0
        {
            errs.push(ConfigError::new(
                "tokens",
                "token lifetimes must be positive",
            ));
        }
    }
}
