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

/// GETs `url` and parses its JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `kid`s of the JWKS at `url`, in its order.
pub async fn jwks_kids(http: &reqwest::Client, url: &str) -> Vec<String> {
    get_json(http, url).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Verifies `jwt` as a client would: with the key its `kid` names in the JWKS at `jwks_url`,
/// under `validation` (its algorithm taken from the header). The `kid` and the claims.
pub async fn verify_with_jwks(
    http: &reqwest::Client,
    jwks_url: &str,
    jwt: &str,
    mut validation: jsonwebtoken::Validation,
) -> (String, serde_json::Value) {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(get_json(http, jwks_url).await).unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let kid = header.kid.expect("the JWT names its key");
    let jwk = jwks
        .find(&kid)
        .expect("the signing key is in the advertised JWKS");
    validation.algorithms = vec![header.alg];
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the JWT verifies with the published key")
    .claims;
    (kid, claims)
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
