//! Key generation for `ciba-gateway keygen` and the ephemeral quickstart key: PKCS#8 PEM.

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use rand::RngCore;

use crate::config::SigningAlg;

/// Generates a private key for `alg` as PKCS#8 PEM (RSA keys are 2048 bits).
pub fn generate_pem(alg: SigningAlg) -> Result<String, String> {
    let pem = match alg {
        SigningAlg::ES256 => loop {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            // A random scalar is out of range with negligible probability; draw again if so.
            if let Ok(sk) = p256::SecretKey::from_slice(&bytes) {
                break sk
                    .to_pkcs8_pem(Default::default())
                    .map_err(|e| e.to_string())?
                    .to_string();
            }
        },
        SigningAlg::EdDSA => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            // PKCS#8 v1 (no embedded public key), as `openssl genpkey` writes it.
            ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: bytes,
                public_key: None,
            }
            .to_pkcs8_pem(Default::default())
            .map_err(|e| e.to_string())?
            .to_string()
        }
        SigningAlg::RS256 | SigningAlg::PS256 => {
            let key =
                rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default())
                .map_err(|e| e.to_string())?
                .to_string()
        }
    };
    Ok(pem)
}
