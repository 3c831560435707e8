//! The gateway's signing keys: loaded once from `tokens.keys` (or one ephemeral key), the one
//! that signs, the ones that verify, and the JWKS that publishes them.

use bytes::Bytes;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::generate_pem;

use crate::config::{ConfigErrors, KeyConfig, Problems, SigningAlg, TokensConfig, resolve_secret};
use crate::secret::Secret;

/// Reads a key reference into PEM text: `file:`, `${ENV}`, or inline PEM.
pub fn load_key_pem(r: &crate::config::SecretRef) -> Result<Secret, String> {
    match resolve_secret(r)? {
        Some(s) => Ok(s),
        None if r.raw().trim_start().starts_with("-----BEGIN") => Ok(Secret::new(r.raw())),
        None => Err("must be `file:/path`, `${ENV_VAR}` or an inline PEM block".into()),
    }
}

/// An Ed25519 PKCS#8 PEM (v1 or v2) as PKCS#8 v1 DER.
fn ed25519_v1_der(pem: &str) -> Result<Vec<u8>, jsonwebtoken::errors::Error> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, KeypairBytes};
    let invalid =
        || jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidEddsaKey);
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| invalid())?;
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    Ok(v1
        .to_pkcs8_der()
        .map_err(|_| invalid())?
        .as_bytes()
        .to_vec())
}

pub(super) fn jwt_alg(a: SigningAlg) -> Algorithm {
    match a {
        SigningAlg::ES256 => Algorithm::ES256,
        SigningAlg::EdDSA => Algorithm::EdDSA,
        SigningAlg::RS256 => Algorithm::RS256,
        SigningAlg::PS256 => Algorithm::PS256,
    }
}

/// One signing key with its public half.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    fn from_pem(kid: &str, alg: SigningAlg, pem: &str) -> Result<(Self, Jwk), String> {
        let a = jwt_alg(alg);
        let encoding = match alg {
            SigningAlg::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            // jsonwebtoken derives the public key only from PKCS#8 v1; accept v2 (public key
            // embedded, as some tools write) by re-encoding.
            SigningAlg::EdDSA => ed25519_v1_der(pem).map(|der| EncodingKey::from_ed_der(&der)),
            SigningAlg::RS256 | SigningAlg::PS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .map_err(|e| format!("not a PKCS#8 PEM {alg:?} private key: {e}"))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, a)
            .map_err(|e| format!("cannot derive public key: {e}"))?;
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match alg {
            SigningAlg::ES256 => KeyAlgorithm::ES256,
            SigningAlg::EdDSA => KeyAlgorithm::EdDSA,
            SigningAlg::RS256 => KeyAlgorithm::RS256,
            SigningAlg::PS256 => KeyAlgorithm::PS256,
        });
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad public key: {e}"))?;
        Ok((
            Self {
                kid: kid.to_owned(),
                alg: a,
                encoding,
                decoding,
            },
            jwk,
        ))
    }
}

/// A key pair as the gateway loads one from `pem` (for the signature backends' tests).
#[cfg(test)]
pub(crate) fn key_pair_for_tests(pem: &str, alg: SigningAlg) -> (EncodingKey, DecodingKey) {
    let (k, _) = SigningKey::from_pem("t", alg, pem).unwrap();
    (k.encoding, k.decoding)
}

/// The gateway's keys: all are published, the active one signs.
pub struct KeySet {
    keys: Vec<SigningKey>,
    active: usize,
    jwks: Bytes,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeySet {
    /// Loads the configured keys, or generates an ephemeral ES256 key when none is configured;
    /// every key that cannot be loaded is reported under its path, and `active_kid` must name
    /// one of them.
    pub fn from_config(cfg: &TokensConfig) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let mut keys = Vec::new();
        let mut jwks = Vec::new();
        if cfg.keys.is_empty() {
            tracing::warn!(
                "no signing keys configured: using an ephemeral ES256 key (tokens will not verify after a restart)"
            );
            let key = generate_pem(SigningAlg::ES256)
                .and_then(|pem| SigningKey::from_pem("ephemeral-es256", SigningAlg::ES256, &pem));
            if let Some((k, j)) = problems.take("tokens.keys", key) {
                keys.push(k);
                jwks.push(j);
            }
        }
        for (
            i,
            KeyConfig {
                kid,
                alg,
                private_key,
            },
        ) in cfg.keys.iter().enumerate()
        {
            let key = load_key_pem(private_key)
                .and_then(|pem| SigningKey::from_pem(kid, *alg, pem.expose()));
            if let Some((k, j)) = problems.take(format!("tokens.keys[{i}].private_key"), key) {
                keys.push(k);
                jwks.push(j);
            }
        }
        let active = match &cfg.active_kid {
            Some(kid) => cfg.keys.iter().position(|k| &k.kid == kid).or_else(|| {
                problems.push("tokens.active_kid", "names no key in tokens.keys");
                None
            }),
            None => Some(0),
        };
        problems.finish(|| {
            let jwks =
                Bytes::from(serde_json::to_vec(&JwkSet { keys: jwks }).expect("a JWKS serialises"));
            Self {
                keys,
                active: active.unwrap_or_default(),
                jwks,
            }
        })
    }

    /// The JWKS document (public keys only).
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// The algorithm of the active key.
    pub fn active_alg(&self) -> Algorithm {
        self.keys[self.active].alg
    }

    /// The JWS names of the algorithms the gateway can sign with, the active key's first.
    pub fn algorithms(&self) -> Vec<String> {
        let mut algs = vec![format!("{:?}", self.active_alg())];
        for k in &self.keys {
            let name = format!("{:?}", k.alg);
            if !algs.contains(&name) {
                algs.push(name);
            }
        }
        algs
    }

    /// Whether `kid` names one of the gateway's keys.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// Signs claims with the active key, `kid` and `typ` in the header.
    pub fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign_with(None, typ, claims)
    }

    /// The algorithm [`KeySet::sign_with`] signs with for `alg`.
    pub fn alg_for(&self, alg: Option<SigningAlg>) -> jsonwebtoken::Algorithm {
        let active = &self.keys[self.active];
        match alg.map(jwt_alg) {
            Some(a) if self.keys.iter().any(|k| k.alg == a) => a,
            _ => active.alg,
        }
    }

    /// Signs claims with a key of algorithm `alg` (a client's registered
    /// `id_token_signed_response_alg`) when the gateway has one, else with the active key.
    pub fn sign_with<T: Serialize>(
        &self,
        alg: Option<SigningAlg>,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let active = &self.keys[self.active];
        let k = match alg.map(jwt_alg) {
            Some(a) if a != active.alg => self.keys.iter().find(|k| k.alg == a).unwrap_or(active),
            _ => active,
        };
        let mut h = Header::new(k.alg);
        h.kid = Some(k.kid.clone());
        h.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&h, claims, &k.encoding)
    }

    /// Verifies a token signed by one of our keys (chosen by `kid`) with `validation`'s checks.
    pub fn verify<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        mut validation: Validation,
    ) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = self
            .keys
            .iter()
            .find(|k| Some(&k.kid) == header.kid.as_ref() && k.alg == header.alg)?;
        validation.algorithms = vec![key.alg];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}
