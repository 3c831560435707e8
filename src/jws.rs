//! jsonwebtoken's signatures computed by ring, through jsonwebtoken's own extension point
//! (`CryptoProvider::install_default`).
//!
//! The gateway verifies a signature on every request of a `private_key_jwt` client (a fresh
//! assertion each time, polls included) and signs two tokens per grant. jsonwebtoken's pure-Rust
//! backend takes 590 µs to verify an ES256 signature and 410 µs for PS256 on the reference
//! machine; ring, already in the tree for rustls, takes 101 µs and 45 µs (`benches/engine.rs`).
//! HMAC stays with jsonwebtoken's own backend, and so do its key utilities (JWK thumbprints,
//! public components of private keys), which are off the hot path.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{Error as SigError, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature as rs;

/// The provider: ring for ECDSA, RSA and EdDSA, jsonwebtoken's own backend for the rest.
pub(crate) static RING: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |k| (own().rsa_pub_components_from_private_key)(k),
        rsa_pub_components_from_public_key: |k| (own().rsa_pub_components_from_public_key)(k),
        ec_pub_components_from_private_key: |k, a| (own().ec_pub_components_from_private_key)(k, a),
        ed_pub_components_from_private_key: ed_components,
        compute_digest,
    },
};

/// jsonwebtoken's own (pure-Rust) backend.
fn fallback() -> &'static CryptoProvider {
    &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
}

fn own() -> &'static KeyUtils {
    &fallback().key_utils
}

fn ed_components(k: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    (own().ed_pub_components_from_private_key)(k, curve)
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    (own().compute_digest)(data, hash)
}

/// How ring signs with a key of one algorithm.
enum RingSigner {
    Ecdsa(rs::EcdsaKeyPair, Algorithm),
    Rsa(rs::RsaKeyPair, &'static dyn rs::RsaEncoding, Algorithm),
    Ed(rs::Ed25519KeyPair),
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let expect = |family: AlgorithmFamily| -> Result<()> {
        if key.family() == family {
            Ok(())
        } else {
            Err(ErrorKind::InvalidKeyFormat.into())
        }
    };
    let rsa = |enc: &'static dyn rs::RsaEncoding| -> Result<Box<dyn JwtSigner>> {
        expect(AlgorithmFamily::Rsa)?;
        let kp = rs::RsaKeyPair::from_der(key.as_bytes())
            .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
        Ok(Box::new(RingSigner::Rsa(kp, enc, *alg)))
    };
    let ecdsa = |signing: &'static rs::EcdsaSigningAlgorithm| -> Result<Box<dyn JwtSigner>> {
        expect(AlgorithmFamily::Ec)?;
        let kp = rs::EcdsaKeyPair::from_pkcs8(signing, key.as_bytes(), &SystemRandom::new())
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
        Ok(Box::new(RingSigner::Ecdsa(kp, *alg)))
    };
    match alg {
        Algorithm::ES256 => ecdsa(&rs::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => ecdsa(&rs::ECDSA_P384_SHA384_FIXED_SIGNING),
        Algorithm::RS256 => rsa(&rs::RSA_PKCS1_SHA256),
        Algorithm::RS384 => rsa(&rs::RSA_PKCS1_SHA384),
        Algorithm::RS512 => rsa(&rs::RSA_PKCS1_SHA512),
        Algorithm::PS256 => rsa(&rs::RSA_PSS_SHA256),
        Algorithm::PS384 => rsa(&rs::RSA_PSS_SHA384),
        Algorithm::PS512 => rsa(&rs::RSA_PSS_SHA512),
        Algorithm::EdDSA => {
            expect(AlgorithmFamily::Ed)?;
            let kp = rs::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            Ok(Box::new(RingSigner::Ed(kp)))
        }
        // HMAC, and whatever jsonwebtoken adds later.
        _ => (fallback().signer_factory)(alg, key),
    }
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, SigError> {
        match self {
            Self::Ecdsa(kp, _) => kp
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigError::new()),
            Self::Rsa(kp, enc, _) => {
                let mut out = vec![0; kp.public().modulus_len()];
                kp.sign(*enc, &SystemRandom::new(), msg, &mut out)
                    .map_err(|_| SigError::new())?;
                Ok(out)
            }
            Self::Ed(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ecdsa(_, a) | Self::Rsa(_, _, a) => *a,
            Self::Ed(_) => Algorithm::EdDSA,
        }
    }
}

/// ring's verification for one algorithm.
#[derive(Clone, Copy)]
enum Check {
    Rsa(&'static rs::RsaParameters),
    Other(&'static dyn rs::VerificationAlgorithm),
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
    key: DecodingKey,
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let (family, check) = match alg {
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Other(&rs::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::ES384 => (
            AlgorithmFamily::Ec,
            Check::Other(&rs::ECDSA_P384_SHA384_FIXED),
        ),
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::RS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PKCS1_2048_8192_SHA384),
        ),
        Algorithm::RS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PKCS1_2048_8192_SHA512),
        ),
        Algorithm::PS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PSS_2048_8192_SHA256),
        ),
        Algorithm::PS384 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PSS_2048_8192_SHA384),
        ),
        Algorithm::PS512 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&rs::RSA_PSS_2048_8192_SHA512),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Other(&rs::ED25519)),
        // HMAC, and whatever jsonwebtoken adds later.
        _ => return (fallback().verifier_factory)(alg, key),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        check,
        key: key.clone(),
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SigError> {
        let verified = match (self.key.kind(), self.check) {
            (DecodingKeyKind::RsaModulusExponent { n, e }, Check::Rsa(params)) => {
                rs::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (DecodingKeyKind::SecretOrDer(der), Check::Rsa(params)) => {
                rs::UnparsedPublicKey::new(params, der).verify(msg, signature)
            }
            (DecodingKeyKind::SecretOrDer(bytes), Check::Other(alg)) => {
                rs::UnparsedPublicKey::new(alg, bytes).verify(msg, signature)
            }
            (DecodingKeyKind::RsaModulusExponent { .. }, Check::Other(_)) => {
                return Err(SigError::new());
            }
        };
        verified.map_err(|_| SigError::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Header, Validation, decode, encode};

    /// Every algorithm the gateway uses, signed by one backend and verified by the other
    /// (both ways), so ring's signatures are exactly JWS's: a mismatch in encoding (DER vs
    /// fixed-size ECDSA, PSS parameters) fails here.
    #[test]
    fn ring_and_the_pure_rust_backend_agree_on_every_algorithm() {
        let claims = serde_json::json!({"sub": "x"});
        let mut v = Validation {
            validate_exp: false,
            ..Validation::default()
        };
        v.set_required_spec_claims::<&str>(&[]);
        for alg in [
            crate::config::SigningAlg::ES256,
            crate::config::SigningAlg::RS256,
            crate::config::SigningAlg::PS256,
            crate::config::SigningAlg::EdDSA,
        ] {
            let pem = crate::tokens::generate_pem(alg).unwrap();
            let a = crate::jwks::algorithm(alg);
            let (enc, dec) = crate::tokens::key_pair_for_tests(&pem, alg);
            v.algorithms = vec![a];
            // ring signs, the pure-Rust backend verifies; and the other way round.
            let by_ring = (signer(&a, &enc).unwrap()).try_sign(b"m").unwrap();
            let pure = (fallback().verifier_factory)(&a, &dec).unwrap();
            assert!(
                pure.verify(b"m", &by_ring).is_ok(),
                "{alg:?}: ring's signature"
            );
            let by_pure = ((fallback().signer_factory)(&a, &enc).unwrap())
                .try_sign(b"m")
                .unwrap();
            let ring = verifier(&a, &dec).unwrap();
            assert!(
                ring.verify(b"m", &by_pure).is_ok(),
                "{alg:?}: verified by ring"
            );
            assert!(
                ring.verify(b"n", &by_pure).is_err(),
                "{alg:?}: another message"
            );
            // Through jsonwebtoken with the process's provider (ring, once installed).
            crate::install_crypto_provider();
            let token = encode(&Header::new(a), &claims, &enc).unwrap();
            assert!(
                decode::<serde_json::Value>(&token, &dec, &v).is_ok(),
                "{alg:?}"
            );
        }
    }
}
