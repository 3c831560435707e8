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
#[derive(Clone)]
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Its public JWK, as published.
    jwk: Jwk,
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
                jwk: jwk.clone(),
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
///
/// A key that a reload took out of `tokens.keys` is *retired*: it signs nothing, still verifies
/// the tokens it signed, and stays in the JWKS until the last access or ID token it can have
/// signed has expired, so that resource servers and clients holding them are not broken by a
/// rotation. It is kept (for the gateway's own refresh tokens) until those expired too.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    active: usize,
    retired: Vec<Retired>,
    /// The JWKS documents, each served while now (seconds) is below its bound, in order: the
    /// retired keys drop out one by one; the last document has no bound.
    jwks: Vec<(u64, Bytes)>,
}

/// A key taken out of the configuration by a reload.
#[derive(Clone)]
struct Retired {
    key: SigningKey,
    /// Published until then (seconds).
    published_until: u64,
    /// Kept for verification until then (seconds); dropped by the first reload after.
    kept_until: u64,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field(
                "retired",
                &self.retired.iter().map(|r| &r.key.kid).collect::<Vec<_>>(),
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
        if cfg.keys.is_empty() {
            tracing::warn!(
                "no signing keys configured: using an ephemeral ES256 key (tokens will not verify after a restart)"
            );
            let key = generate_pem(SigningAlg::ES256)
                .and_then(|pem| SigningKey::from_pem("ephemeral-es256", SigningAlg::ES256, &pem));
            if let Some((k, _)) = problems.take("tokens.keys", key) {
                keys.push(k);
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
            if let Some((k, _)) = problems.take(format!("tokens.keys[{i}].private_key"), key) {
                keys.push(k);
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
            Self {
                keys,
                active: active.unwrap_or_default(),
                retired: Vec::new(),
                jwks: Vec::new(),
            }
            .published()
        })
    }

    /// This key set after a reload from `previous`: each of `previous`'s keys (current or
    /// retired) that is not in this set by `kid` is retired at `now` (seconds), published for
    /// `publish_secs` more and kept for `keep_secs` more; retired keys past their keeping
    /// are dropped.
    pub fn retiring(
        mut self,
        previous: &KeySet,
        now: u64,
        publish_secs: u64,
        keep_secs: u64,
    ) -> Self {
        let taken_out = previous
            .keys
            .iter()
            .filter(|k| !self.has_current_kid(&k.kid))
            .map(|k| Retired {
                key: k.clone(),
                published_until: now.saturating_add(publish_secs),
                kept_until: now.saturating_add(keep_secs),
            });
        let still_kept = previous
            .retired
            .iter()
            .filter(|r| r.kept_until > now && !self.has_current_kid(&r.key.kid))
            .cloned();
        let retired: Vec<Retired> = taken_out.chain(still_kept).collect();
        self.retired = retired;
        self.published()
    }

    /// The `kid`s of this set that name another key in `previous`, current or retired: a kid
    /// given to new key material would make the tokens the old key signed fail to verify
    /// wherever the JWKS is read again (and the gateway's own refresh tokens with them).
    pub fn reused_kids<'a>(&'a self, previous: &'a KeySet) -> impl Iterator<Item = &'a str> {
        let before = || (previous.keys.iter()).chain(previous.retired.iter().map(|r| &r.key));
        self.keys
            .iter()
            .filter(move |k| before().any(|p| p.kid == k.kid && p.jwk != k.jwk))
            .map(|k| k.kid.as_str())
    }

    /// The `kid`s of the retired keys.
    pub fn retired_kids(&self) -> impl Iterator<Item = &str> {
        self.retired.iter().map(|r| r.key.kid.as_str())
    }

    /// Whether `kid` names a retired key.
    pub fn is_retired(&self, kid: &str) -> bool {
        self.retired.iter().any(|r| r.key.kid == kid)
    }

    fn has_current_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// The same set with its JWKS documents written.
    fn published(mut self) -> Self {
        let mut bounds: Vec<u64> = self.retired.iter().map(|r| r.published_until).collect();
        bounds.sort_unstable();
        bounds.dedup();
        bounds.push(u64::MAX);
        self.jwks = bounds
            .into_iter()
            .map(|until| {
                let keys = self
                    .keys
                    .iter()
                    .map(|k| k.jwk.clone())
                    .chain(
                        self.retired
                            .iter()
                            .filter(|r| r.published_until >= until)
                            .map(|r| r.key.jwk.clone()),
                    )
                    .collect();
                let doc = serde_json::to_vec(&JwkSet { keys }).expect("a JWKS serialises");
                (until, Bytes::from(doc))
            })
            .collect();
        self
    }

    /// The JWKS document (public keys only) at `now` (seconds): the current keys, and the
    /// retired ones still published.
    pub fn jwks(&self, now: u64) -> &Bytes {
        let (_, doc) = self
            .jwks
            .iter()
            .find(|(until, _)| now < *until)
            .or(self.jwks.last())
            .expect("a key set has a JWKS");
        doc
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

    /// Whether `kid` names one of the gateway's keys (retired ones too: they verify).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.has_current_kid(kid) || self.retired.iter().any(|r| r.key.kid == kid)
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
            .chain(self.retired.iter().map(|r| &r.key))
            .find(|k| Some(&k.kid) == header.kid.as_ref() && k.alg == header.alg)?;
        validation.algorithms = vec![key.alg];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretRef;

    fn keys(kids: &[&str]) -> KeySet {
        let cfg = TokensConfig {
            keys: kids
                .iter()
                .map(|kid| KeyConfig {
                    kid: (*kid).to_owned(),
                    alg: SigningAlg::ES256,
                    private_key: SecretRef::value(generate_pem(SigningAlg::ES256).unwrap()),
                })
                .collect(),
            ..TokensConfig::default()
        };
        KeySet::from_config(&cfg).unwrap()
    }

    fn kids(doc: &Bytes) -> Vec<String> {
        let set: JwkSet = serde_json::from_slice(doc).unwrap();
        set.keys
            .into_iter()
            .map(|k| k.common.key_id.unwrap())
            .collect()
    }

    #[derive(Serialize, Deserialize)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    #[test]
    fn a_retired_key_verifies_and_is_published_until_its_bound_then_dropped() {
        let one = keys(&["k1"]);
        let claims = Claims {
            sub: "s".into(),
            exp: u64::MAX / 2,
        };
        let token = one.sign("JWT", &claims).unwrap();
        let two = keys(&["k2"]).retiring(&one, 1000, 600, 3000);
        assert_eq!(kids(two.jwks(1000)), ["k2", "k1"]);
        assert_eq!(kids(two.jwks(1599)), ["k2", "k1"]);
        assert_eq!(kids(two.jwks(1600)), ["k2"]);
        assert!(two.has_kid("k1") && two.is_retired("k1"));
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_aud = false;
        assert!(two.verify::<Claims>(&token, v.clone()).is_some());
        // The new key signs.
        let signed = two.sign("JWT", &claims).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&signed).unwrap().kid.unwrap(),
            "k2"
        );

        // A later reload keeps k1 until its keeping ends, then drops it; k2 retires in turn.
        let three = keys(&["k3"]).retiring(&two, 2000, 600, 3000);
        assert_eq!(kids(three.jwks(2000)), ["k3", "k2"]);
        assert!(three.verify::<Claims>(&token, v.clone()).is_some());
        let four = keys(&["k3"]).retiring(&three, 4000, 600, 3000);
        assert!(!four.has_kid("k1"));
        assert!(four.verify::<Claims>(&token, v).is_none());

        // A key put back in the file is current again, not retired.
        let back = keys(&["k2", "k3"]).retiring(&three, 2100, 600, 3000);
        assert!(!back.is_retired("k2"));
        assert_eq!(kids(back.jwks(5000)), ["k2", "k3"]);
    }
}
