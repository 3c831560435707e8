//! Other parties' public keys: a client's (its `private_key_jwt` assertions, its signed
//! requests, its self-signed certificate) and a `login_hint_token` issuer's. Given inline, in
//! a file (read once, at start) or at a `jwks_uri`, fetched through the SSRF-guarded client,
//! cached, and fetched again when a token names a `kid` the cached set does not have (at most
//! once every [`REFETCH_EVERY`], so unknown `kid`s cannot make the gateway hammer a URL).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use crate::config::{KeysConfig, SigningAlg};
use crate::outbound::OutboundClient;

/// How long a fetched key set is used before it is fetched again.
const CACHE_FOR: Duration = Duration::from_secs(300);

/// The least time between two fetches of one `jwks_uri`.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The algorithms a party's key may be used with (never `none`, never HMAC: DISC-04).
pub(crate) const ASYMMETRIC: &[SigningAlg] = &[
    SigningAlg::PS256,
    SigningAlg::ES256,
    SigningAlg::RS256,
    SigningAlg::EdDSA,
];

/// `exp` (when `times.0`) not passed and `nbf` (when `times.1`) not in the future at
/// `now_secs`, each with `times.2` seconds of leeway.
fn check_times(
    claims: &serde_json::Map<String, serde_json::Value>,
    (exp, nbf, leeway): (bool, bool, u64),
    now_secs: u64,
) -> Result<(), Refused> {
    let number = |k: &str| match claims.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Refused::Invalid(format!("{k} is not a number of seconds"))),
    };
    if exp && number("exp")?.is_some_and(|e| e.saturating_add(leeway) <= now_secs) {
        return Err(Refused::Invalid("ExpiredSignature".into()));
    }
    if nbf && number("nbf")?.is_some_and(|n| n > now_secs.saturating_add(leeway)) {
        return Err(Refused::Invalid("ImmatureSignature".into()));
    }
    Ok(())
}

/// jsonwebtoken's name of one of our algorithms.
pub(crate) fn algorithm(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::ES256 => Algorithm::ES256,
        SigningAlg::EdDSA => Algorithm::EdDSA,
        SigningAlg::RS256 => Algorithm::RS256,
        SigningAlg::PS256 => Algorithm::PS256,
    }
}

/// Why a signed token was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The header or the signature is wrong, or no key fits.
    #[error("{0}")]
    Invalid(String),
    /// The keys could not be fetched.
    #[error("the signer's keys are unavailable: {0}")]
    Unavailable(String),
}

enum Source {
    Fixed(Arc<JwkSet>),
    Uri {
        url: Url,
        client: OutboundClient,
        cached: RwLock<Option<(Instant, Arc<JwkSet>)>>,
        last_fetch: Mutex<Option<Instant>>,
    },
}

/// A party's public keys.
pub(crate) struct PublicKeys {
    source: Source,
    /// RSA keys shorter than this many bits are not used (FAPI-09: 2048).
    min_rsa_bits: usize,
}

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Fixed(s) => write!(f, "PublicKeys({} keys)", s.keys.len()),
            Source::Uri { url, .. } => write!(f, "PublicKeys({url})"),
        }
    }
}

impl PublicKeys {
    /// The keys `cfg` points at (`None` when it points nowhere); a file or inline set is read
    /// and parsed now. `client` fetches a `jwks_uri`.
    pub(crate) fn from_config(
        cfg: &KeysConfig,
        client: &OutboundClient,
    ) -> Result<Option<Self>, String> {
        let parse = |v: serde_json::Value| -> Result<Arc<JwkSet>, String> {
            serde_json::from_value::<JwkSet>(v)
                .map(Arc::new)
                .map_err(|e| format!("not a JWKS: {e}"))
        };
        let source = if let Some(v) = &cfg.jwks {
            Source::Fixed(parse(v.clone())?)
        } else if let Some(path) = &cfg.jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let v = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            Source::Fixed(parse(v)?)
        } else if let Some(url) = &cfg.jwks_uri {
            Source::Uri {
                url: url.clone(),
                client: client.clone(),
                cached: RwLock::new(None),
                last_fetch: Mutex::new(None),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            source,
            min_rsa_bits: 2048,
        }))
    }

    /// The keys now (fetching a `jwks_uri` when there is no fresh copy, or when `want_kid` is
    /// not in the copy and the last fetch is old enough).
    async fn set(&self, want_kid: Option<&str>) -> Result<Arc<JwkSet>, Refused> {
        let Source::Uri {
            url,
            client,
            cached,
            last_fetch,
        } = &self.source
        else {
            let Source::Fixed(s) = &self.source else {
                unreachable!()
            };
            return Ok(Arc::clone(s));
        };
        let now = Instant::now();
        let copy = cached.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, set)) = &copy {
            let fresh = now.duration_since(*at) < CACHE_FOR;
            let has = want_kid.is_none_or(|k| set.find(k).is_some());
            if fresh && has {
                return Ok(Arc::clone(set));
            }
        }
        let may_fetch = {
            let mut last = last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            let ok = last.is_none_or(|t| now.duration_since(t) >= REFETCH_EVERY);
            if ok {
                *last = Some(now);
            }
            ok
        };
        if !may_fetch {
            return copy
                .map(|(_, s)| s)
                .ok_or_else(|| Refused::Unavailable("fetched too recently".into()));
        }
        match client.get_json(url, MAX_JWKS_BYTES).await {
            Ok(v) => {
                let set = Arc::new(
                    serde_json::from_value::<JwkSet>(v)
                        .map_err(|e| Refused::Unavailable(format!("not a JWKS: {e}")))?,
                );
                *cached.write().unwrap_or_else(|e| e.into_inner()) = Some((now, Arc::clone(&set)));
                Ok(set)
            }
            // A stale copy is better than none while the client's server is down.
            Err(e) => copy.map(|(_, s)| s).ok_or(Refused::Unavailable(e)),
        }
    }

    /// The claims of `token` if one of these keys signed it with one of `algs`; `validation`
    /// says what else is checked (its algorithms are set here). `exp` and `nbf` are checked
    /// (as `validation` asks, with its leeway) against `now_secs`, the engine's clock, not
    /// the system's.
    pub(crate) async fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        algs: &[SigningAlg],
        mut validation: Validation,
        now_secs: u64,
    ) -> Result<T, Refused> {
        let times = (
            std::mem::replace(&mut validation.validate_exp, false),
            std::mem::replace(&mut validation.validate_nbf, false),
            validation.leeway,
        );
        let claims: serde_json::Map<String, serde_json::Value> =
            self.verify_signature(token, algs, validation).await?;
        check_times(&claims, times, now_secs)?;
        serde_json::from_value(serde_json::Value::Object(claims))
            .map_err(|e| Refused::Invalid(format!("unexpected claims: {e}")))
    }

    async fn verify_signature<T: DeserializeOwned>(
        &self,
        token: &str,
        algs: &[SigningAlg],
        mut validation: Validation,
    ) -> Result<T, Refused> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused::Invalid("not a signed JWT".into()))?;
        let alg = ASYMMETRIC
            .iter()
            .copied()
            .find(|a| algorithm(*a) == header.alg)
            .filter(|a| algs.contains(a))
            .ok_or_else(|| {
                Refused::Invalid(format!("the algorithm {:?} is not accepted", header.alg))
            })?;
        let set = self.set(header.kid.as_deref()).await?;
        let candidates: Vec<&Jwk> = match &header.kid {
            Some(kid) => set.find(kid).into_iter().collect(),
            None => set.keys.iter().collect(),
        };
        validation.algorithms = vec![algorithm(alg)];
        for jwk in candidates {
            if !self.usable(jwk, alg) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<T>(token, &key, &validation) {
                Ok(d) => return Ok(d.claims),
                Err(e) if header.kid.is_some() => return Err(Refused::Invalid(e.to_string())),
                Err(_) => {}
            }
        }
        Err(Refused::Invalid(
            "no key of the signer verifies this token".into(),
        ))
    }

    /// Whether `jwk` may verify a signature with `alg`: its type fits, its `alg` (if any) is
    /// `alg`, it is not an encryption key, and an RSA key is long enough.
    fn usable(&self, jwk: &Jwk, alg: SigningAlg) -> bool {
        use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return false;
        }
        if let Some(a) = jwk.common.key_algorithm
            && format!("{a:?}") != alg.name()
        {
            return false;
        }
        match (&jwk.algorithm, alg) {
            (AlgorithmParameters::RSA(rsa), SigningAlg::RS256 | SigningAlg::PS256) => {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(rsa.n.as_bytes())
                    .is_ok_and(|n| n.len() * 8 >= self.min_rsa_bits)
            }
            (AlgorithmParameters::EllipticCurve(_), SigningAlg::ES256) => true,
            (AlgorithmParameters::OctetKeyPair(_), SigningAlg::EdDSA) => true,
            _ => false,
        }
    }

    /// The certificates the keys carry (`x5c`, the first of each chain, DER): a
    /// `self_signed_tls_client_auth` client's certificate must be one of them.
    pub(crate) async fn certificates(&self) -> Result<Vec<Vec<u8>>, Refused> {
        use base64::Engine as _;
        let set = self.set(None).await?;
        Ok(set
            .keys
            .iter()
            .filter_map(|k| k.common.x509_chain.as_ref()?.first().cloned())
            .filter_map(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// An RSA key of `bits` as (PKCS#8 PEM, public JWK).
    fn rsa(bits: usize) -> (String, serde_json::Value) {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let jwk = json!({"kty": "RSA", "kid": "k", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
        (pem.to_string(), jwk)
    }

    fn keys(jwks: &[serde_json::Value]) -> PublicKeys {
        PublicKeys {
            source: Source::Fixed(Arc::new(
                serde_json::from_value(json!({ "keys": jwks })).unwrap(),
            )),
            min_rsa_bits: 2048,
        }
    }

    /// `claims` signed with the pure-Rust backend (ring, the gateway's, refuses to sign with
    /// the short keys these tests need).
    fn sign(pem: &str, alg: Algorithm, claims: &serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let header = json!({"alg": format!("{alg:?}"), "kid": "k", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signer =
            (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg, &key)
                .unwrap();
        let sig = jsonwebtoken::signature::Signer::try_sign(&*signer, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    fn lenient() -> Validation {
        let mut v = Validation {
            validate_aud: false,
            ..Validation::default()
        };
        v.set_required_spec_claims::<&str>(&[]);
        v
    }

    async fn check(k: &PublicKeys, token: &str, v: Validation, now: u64) -> Result<(), String> {
        k.verify::<serde_json::Value>(token, ASYMMETRIC, v, now)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    // FAPI-09: RSA keys shorter than 2048 bits are never used, whatever signed with them.
    #[tokio::test]
    async fn fapi_09_short_rsa_keys_are_not_used() {
        let claims = json!({"sub": "x"});
        let (pem, jwk) = rsa(1024);
        let r = check(
            &keys(&[jwk]),
            &sign(&pem, Algorithm::PS256, &claims),
            lenient(),
            0,
        )
        .await;
        assert!(r.is_err(), "{r:?}");
        let (pem, jwk) = rsa(2048);
        let r = check(
            &keys(&[jwk]),
            &sign(&pem, Algorithm::PS256, &claims),
            lenient(),
            0,
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
    }

    // DISC-04 / BC-JWT-02: a key is used only for its own algorithm and for signatures; HMAC
    // and `none` are never accepted.
    #[tokio::test]
    async fn keys_are_used_only_as_declared() {
        let (pem, mut jwk) = rsa(2048);
        let claims = json!({"sub": "x"});
        jwk["alg"] = json!("RS256");
        let ks = keys(&[jwk.clone()]);
        assert!(
            check(&ks, &sign(&pem, Algorithm::PS256, &claims), lenient(), 0)
                .await
                .is_err()
        );
        assert!(
            check(&ks, &sign(&pem, Algorithm::RS256, &claims), lenient(), 0)
                .await
                .is_ok()
        );
        jwk["use"] = json!("enc");
        let ks = keys(&[jwk]);
        assert!(
            check(&ks, &sign(&pem, Algorithm::RS256, &claims), lenient(), 0)
                .await
                .is_err()
        );
        let hmac = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(check(&ks, &hmac, lenient(), 0).await.is_err());
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"sub":"x"}"#));
        assert!(check(&ks, &none, lenient(), 0).await.is_err());
    }

    // `exp` and `nbf` are judged on the clock the caller gives (the engine's), with leeway.
    #[tokio::test]
    async fn times_are_checked_on_the_given_clock() {
        let (pem, jwk) = rsa(2048);
        let ks = keys(&[jwk]);
        let token = sign(&pem, Algorithm::PS256, &json!({"exp": 1_000, "nbf": 500}));
        let mut v = lenient();
        v.leeway = 10;
        v.validate_nbf = true;
        for (now, ok) in [(489, false), (490, true), (1_009, true), (1_010, false)] {
            assert_eq!(
                check(&ks, &token, v.clone(), now).await.is_ok(),
                ok,
                "at {now}"
            );
        }
        // Asked not to check `exp` (a caller with its own error for it): not checked.
        v.validate_exp = false;
        assert!(check(&ks, &token, v, 5_000).await.is_ok());
    }
}
