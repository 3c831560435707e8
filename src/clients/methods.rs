//! One strategy per client authentication method (BC-AUTH-02), behind one interface:
//! [`Method::verify`] checks credentials of its kind against a registered client. The registry
//! picks the strategy by the client's registered method; what a request presents is read once
//! (`credentials.rs`) before any of them runs.

use std::sync::{Arc, LazyLock};

use jsonwebtoken::Validation;
use serde::Deserialize;

use super::Client;
use super::credentials::Presented;
use crate::config::{FAPI_ALGS, SigningAlg};
use crate::jwks::{ASYMMETRIC, Refused};
use crate::store::KeptStore as _;
use crate::store::{Store, StoreError};
use crate::tls::ClientCertificate;

/// What a method may need besides the client and its credentials.
pub(crate) struct Context<'a> {
    /// Now, Unix seconds.
    pub now_secs: u64,
    /// The `aud` values an assertion may name (BC-AUTH-04): the issuer, the token endpoint's
    /// URL, the backchannel endpoint's URL.
    pub audiences: &'a [String],
    /// Where used assertion ids are counted (single use across replicas).
    pub store: &'a Store,
    /// Tolerated clock difference, seconds.
    pub skew_secs: u64,
    /// The verifier of `tls_client_auth` chains (`mtls.ca_file`).
    pub ca: Option<&'a Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// Why credentials were not accepted.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Wrong: `invalid_client`.
    Refused(String),
    /// Cannot be checked now (the client's `jwks_uri` or the store is down): 503.
    Unavailable(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<Refused> for Failure {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Invalid(m) => Self::Refused(m),
            Refused::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// A client authentication method.
pub(crate) trait Method {
    /// Verifies `presented` (already known to be of this method's kind) as `client`'s.
    async fn verify(
        client: &Client,
        presented: &Presented<'_>,
        cx: &Context<'_>,
    ) -> Result<(), Failure>;
}

/// `client_secret_basic` and `client_secret_post`: the secret, against its argon2id hash (or
/// reference), remembered once verified.
pub(crate) struct SharedSecret;

impl Method for SharedSecret {
    async fn verify(
        client: &Client,
        presented: &Presented<'_>,
        _: &Context<'_>,
    ) -> Result<(), Failure> {
        let (Presented::Secret { secret, .. }, Some(verifier)) = (presented, &client.secret) else {
            return Err(Failure::Refused("no secret".into()));
        };
        if verifier.verify(secret).await {
            Ok(())
        } else {
            Err(Failure::Refused("wrong secret".into()))
        }
    }
}

/// The claims of a client assertion (RFC 7523 §3).
#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: u64,
    #[serde(default)]
    jti: Option<String>,
}

/// `private_key_jwt` (RFC 7523): a JWT from the client's keys, `iss` = `sub` = the client,
/// `aud` one of [`Context::audiences`], not expired, not issued or valid in the future, and
/// its `jti` used once within its lifetime, across replicas.
pub(crate) struct PrivateKeyJwt;

impl Method for PrivateKeyJwt {
    async fn verify(
        client: &Client,
        presented: &Presented<'_>,
        cx: &Context<'_>,
    ) -> Result<(), Failure> {
        let (Presented::Assertion { jwt, .. }, Some(keys)) = (presented, &client.keys) else {
            return Err(Failure::Refused("no assertion".into()));
        };
        let mut v = Validation::default();
        v.set_audience(cx.audiences);
        v.set_issuer(&[&client.id]);
        v.sub = Some(client.id.clone());
        v.leeway = cx.skew_secs;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let algs = client.assertion_algs();
        let claims: AssertionClaims = keys.verify(jwt, &algs, v, cx.now_secs).await?;
        debug_assert_eq!(claims.iss, claims.sub);
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| Failure::Refused("the assertion has no usable jti".into()))?;
        // Counted until the assertion expires: a second use within its lifetime is refused,
        // on every replica.
        let window_ms = (claims.exp + cx.skew_secs)
            .saturating_sub(cx.now_secs)
            .max(1)
            * 1000;
        let uses = cx
            .store
            .count(
                "assertion",
                &single_use_key(&client.id, &jti),
                Some(window_ms),
            )
            .await?;
        if uses > 1 {
            return Err(Failure::Refused("the assertion was used before".into()));
        }
        Ok(())
    }
}

/// The store key that counts uses of `jti` by `client`: a digest, so that a long or odd `jti`
/// makes no long or odd key.
pub(crate) fn single_use_key(client: &str, jti: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(client.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..18])
}

/// `tls_client_auth` (RFC 8705 §2.1): a chain to `mtls.ca_file`, whose leaf carries the
/// subject DN or SAN entry the client registered.
pub(crate) struct TlsClientAuth;

impl Method for TlsClientAuth {
    async fn verify(
        client: &Client,
        presented: &Presented<'_>,
        cx: &Context<'_>,
    ) -> Result<(), Failure> {
        let Presented::Certificate { certificate, .. } = presented else {
            return Err(Failure::Refused("no certificate".into()));
        };
        let ca = cx
            .ca
            .ok_or_else(|| Failure::Refused("no CA is configured for tls_client_auth".into()))?;
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            cx.now_secs,
        ));
        ca.verify_client_cert(certificate.leaf(), certificate.intermediates(), now)
            .map_err(|e| Failure::Refused(format!("the certificate chain: {e}")))?;
        let Some((kind, want)) = &client.tls_match else {
            return Err(Failure::Refused("no subject registered".into()));
        };
        if matches_registered(certificate, kind, want) {
            Ok(())
        } else {
            Err(Failure::Refused(
                "the certificate is not the client's".into(),
            ))
        }
    }
}

/// `self_signed_tls_client_auth` (RFC 8705 §2.2): the certificate is one of the client's keys'
/// `x5c` certificates.
pub(crate) struct SelfSignedTlsClientAuth;

impl Method for SelfSignedTlsClientAuth {
    async fn verify(
        client: &Client,
        presented: &Presented<'_>,
        _: &Context<'_>,
    ) -> Result<(), Failure> {
        let (Presented::Certificate { certificate, .. }, Some(keys)) = (presented, &client.keys)
        else {
            return Err(Failure::Refused("no certificate".into()));
        };
        let leaf = certificate.leaf().as_ref();
        if keys.certificates().await?.iter().any(|c| c == leaf) {
            Ok(())
        } else {
            Err(Failure::Refused(
                "the certificate is not in the client's keys".into(),
            ))
        }
    }
}

/// Whether the certificate's subject DN (RFC 4514, RDNs in either order) or one of its SAN
/// entries is `want`, as the client registered it.
fn matches_registered(certificate: &ClientCertificate, kind: &str, want: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(certificate.leaf().as_ref()) else {
        return false;
    };
    if kind == "tls_client_auth_subject_dn" {
        let rdns: Vec<String> = cert
            .subject()
            .iter_rdn()
            .flat_map(|rdn| rdn.iter())
            .filter_map(|atv| {
                let name = x509_parser::objects::oid2abbrev(
                    atv.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .ok()?;
                Some(format!(
                    "{}={}",
                    name.to_ascii_uppercase(),
                    atv.as_str().ok()?
                ))
            })
            .collect();
        let want: Vec<String> = want
            .split(',')
            .map(|part| {
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                format!("{}={}", k.trim().to_ascii_uppercase(), v.trim())
            })
            .collect();
        let reversed: Vec<String> = want.iter().rev().cloned().collect();
        return rdns == want || rdns == reversed;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|name| match (kind, name) {
            ("tls_client_auth_san_dns", GeneralName::DNSName(d)) => d.eq_ignore_ascii_case(want),
            ("tls_client_auth_san_uri", GeneralName::URI(u)) => *u == want,
            ("tls_client_auth_san_email", GeneralName::RFC822Name(e)) => {
                e.eq_ignore_ascii_case(want)
            }
            ("tls_client_auth_san_ip", GeneralName::IPAddress(bytes)) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes)
                        .ok()
                        .map(std::net::IpAddr::from),
                    _ => None,
                };
                ip.zip(want.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|(a, b)| a == b)
            }
            _ => false,
        })
}

/// The same work a real verification of `presented` costs, for credentials that will be
/// refused anyway (an unknown client, a method the client is not registered for), so that
/// neither the answer nor its time tells which it was.
pub(crate) async fn equal_work(presented: &Presented<'_>) {
    match presented {
        Presented::Secret { secret, .. } => {
            let _ = crate::secret::unknowable().verify(secret).await;
        }
        Presented::Assertion { jwt, .. } => {
            let _ = jsonwebtoken::decode::<serde_json::Value>(jwt, &DUMMY_KEY, &{
                let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
                v.validate_aud = false;
                v
            });
        }
        Presented::Certificate { certificate, .. } => {
            let _ = certificate.thumbprint();
        }
    }
}

/// A P-256 public key nobody holds the private half of.
static DUMMY_KEY: LazyLock<jsonwebtoken::DecodingKey> = LazyLock::new(|| {
    use base64::Engine as _;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    jsonwebtoken::DecodingKey::from_ec_components(
        &b64(point.x().expect("an uncompressed point")),
        &b64(point.y().expect("an uncompressed point")),
    )
    .expect("a P-256 point")
});

/// The algorithms a client's signatures may use: the one it registered, else PS256 and ES256
/// under FAPI-CIBA (FAPI-03), else every asymmetric one the gateway verifies.
pub(crate) fn accepted_algs(registered: Option<SigningAlg>, fapi: bool) -> Vec<SigningAlg> {
    let allowed: &[SigningAlg] = if fapi { FAPI_ALGS } else { ASYMMETRIC };
    match registered {
        Some(a) if allowed.contains(&a) => vec![a],
        Some(_) => Vec::new(),
        None => allowed.to_vec(),
    }
}
