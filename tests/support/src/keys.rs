//! A client's (or a hint issuer's) own signing keys, as a bank's client holds them: PS256 and
//! RS256 on RSA 2048, ES256 on P-256; their public JWKs, and JWTs they sign — including the
//! bad ones (`alg: none`, a corrupted signature) that the FAPI-CIBA negative cases send.

use std::sync::OnceLock;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key with its `kid` and public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    /// The PKCS#8 PEM private key (for a client written in another language).
    pub pem: String,
    encoding: EncodingKey,
    jwk: Value,
}

/// One RSA key pair per test process: generating one takes a while, and every RSA key of a
/// test is this one under a different `kid` unless a test needs two distinct keys.
fn rsa_pem(which: usize) -> &'static (String, Value) {
    static KEYS: [OnceLock<(String, Value)>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[which].get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        let public = json!({
            "kty": "RSA",
            "n": b64(&key.n().to_bytes_be()),
            "e": b64(&key.e().to_bytes_be()),
        });
        (pem, public)
    })
}

impl SigningKey {
    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let pem = secret
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            pem,
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
            }),
        }
    }

    /// An RSA 2048 key for `alg` (PS256 or RS256); `second` picks the process's other RSA key.
    pub fn rsa(kid: &str, alg: Algorithm, second: bool) -> Self {
        let (pem, public) = rsa_pem(usize::from(second));
        let mut jwk = public.clone();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{alg:?}"));
        Self {
            kid: kid.to_owned(),
            alg,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            pem: pem.clone(),
            jwk,
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A JWKS of these keys' public halves.
    pub fn jwks(keys: &[&SigningKey]) -> Value {
        json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
    }

    /// `claims` signed with this key's algorithm, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// `claims` as an unsecured JWT (`alg: none`, empty signature).
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// `jwt` with one bit of its signature flipped.
pub fn corrupted(jwt: &str) -> String {
    let (head, sig) = jwt.rsplit_once('.').unwrap();
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    bytes[0] ^= 1;
    format!("{head}.{}", b64(&bytes))
}

/// The seconds since the epoch on `clock`.
pub fn now_secs(clock: &ciba_gateway::clock::ManualClock) -> u64 {
    use ciba_gateway::clock::Clock as _;
    clock.now_ms() / 1000
}
