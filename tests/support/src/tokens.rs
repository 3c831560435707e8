//! Reading the tokens the gateway hands out.

/// The header and claims of a JWT, unverified (tests check signatures separately).
pub fn decode_jwt(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let p: Vec<_> = jwt.split('.').collect();
    let d = |s: &str| {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    (d(p[0]), d(p[1]))
}

/// OpenID Connect's `at_hash` / `rt_hash` of `token` for an ID token signed with `alg`: the
/// left half of the hash the algorithm's family uses (SHA-512 for EdDSA), base64url. Written
/// here from the specification, independently of the gateway's own.
pub fn left_half_hash(alg: jsonwebtoken::Algorithm, token: &str) -> String {
    use base64::Engine as _;
    use jsonwebtoken::Algorithm::*;
    use sha2::Digest as _;
    let digest: Vec<u8> = match alg {
        EdDSA | ES384 | RS512 | PS512 | HS512 => sha2::Sha512::digest(token).to_vec(),
        RS384 | PS384 | HS384 => sha2::Sha384::digest(token).to_vec(),
        _ => sha2::Sha256::digest(token).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}
