//! Signing keys, the JWKS, and minting of ID tokens and RFC 9068 access tokens.

mod keygen;
mod keys;

use std::collections::BTreeMap;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

pub use keygen::generate_pem;
pub use keys::KeySet;
#[cfg(test)]
pub(crate) use keys::key_pair_for_tests;

use crate::clients::Client;
use crate::config::TokensConfig;
use crate::domain::{Approval, PendingRequest};
use crate::protocol::random_token;
use crate::users::User;

/// ID token claims (OIDC Core §2).
#[derive(Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience: the client.
    pub aud: String,
    /// Issued at.
    pub iat: u64,
    /// Expiry.
    pub exp: u64,
    /// When the user authenticated.
    pub auth_time: u64,
    /// Authentication context class, when one was requested and achieved (TOK-09).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acr: Option<String>,
    /// Authentication methods.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amr: Option<Vec<String>>,
    /// Access token hash (a pushed ID token carries it, PUSH-02).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at_hash: Option<String>,
    /// The request a pushed ID token answers (PUSH-02).
    #[serde(
        rename = "urn:openid:params:jwt:claim:auth_req_id",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub auth_req_id: Option<String>,
    /// Refresh token hash, when a refresh token is pushed with it (PUSH-02).
    #[serde(
        rename = "urn:openid:params:jwt:claim:rt_hash",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub rt_hash: Option<String>,
    /// Standard claims released by scope (`profile`, `email`, `phone`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

/// `at_hash`-style hash of `token` for an ID token signed with `alg` (OIDC Core §3.1.3.6): the
/// left half of the hash matching the algorithm, base64url. EdDSA (Ed25519) uses SHA-512.
pub fn token_hash(alg: jsonwebtoken::Algorithm, token: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest: Vec<u8> = match alg {
        jsonwebtoken::Algorithm::EdDSA
        | jsonwebtoken::Algorithm::ES384
        | jsonwebtoken::Algorithm::RS512
        | jsonwebtoken::Algorithm::PS512
        | jsonwebtoken::Algorithm::HS512 => sha2::Sha512::digest(token.as_bytes()).to_vec(),
        jsonwebtoken::Algorithm::RS384
        | jsonwebtoken::Algorithm::PS384
        | jsonwebtoken::Algorithm::HS384 => sha2::Sha384::digest(token.as_bytes()).to_vec(),
        _ => sha2::Sha256::digest(token.as_bytes()).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// Where minted tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// The client redeems them at the token endpoint.
    TokenEndpoint,
    /// They are pushed to a push client (PUSH-02): the ID token also carries `at_hash` and the
    /// `auth_req_id` it answers.
    Push,
}

/// RFC 9068 access token claims (JAT-02).
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Expiry.
    pub exp: u64,
    /// Audience (the resource servers).
    pub aud: String,
    /// Subject.
    pub sub: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Issued at.
    pub iat: u64,
    /// Not valid before (the gateway's own tokens carry none; checked when present).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nbf: Option<u64>,
    /// Unique id (256 random bits, FAPI-10).
    pub jti: String,
    /// Granted scope.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: u64,
    /// Authentication context class.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acr: Option<String>,
    /// The certificate the token is bound to (RFC 8705 §3).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cnf: Option<Confirmation>,
}

/// A token's confirmation (RFC 7800): the SHA-256 thumbprint of the client certificate it is
/// bound to (RFC 8705 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// `x5t#S256`.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The token endpoint's success body (TOK-08). `Debug` shows no token.
#[derive(Serialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime, seconds.
    pub expires_in: u64,
    /// The ID token.
    pub id_token: String,
    /// A refresh token, for a client allowed `refresh_token` that asked for `offline_access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Granted scope.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenResponse(<redacted>)")
    }
}

/// The standard claims a scope releases about a user (OIDC Core §5.4): `profile` → `name`,
/// `preferred_username`; `email` → `email`; `phone` → `phone_number`. The ID token and the
/// userinfo answer both carry exactly these.
pub fn scoped_claims(scope: &crate::protocol::Scope, u: &User) -> BTreeMap<String, String> {
    let mut claims = BTreeMap::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            claims.insert(k.to_owned(), v.clone());
        }
    };
    if scope.contains("profile") {
        put("name", &u.name);
        put("preferred_username", &u.username);
    }
    if scope.contains("email") {
        put("email", &u.email);
    }
    if scope.contains("phone") {
        put("phone_number", &u.phone);
    }
    claims
}

/// Mints tokens for approved requests with the gateway's keys.
#[derive(Debug)]
pub struct Minter {
    keys: KeySet,
    issuer: String,
    audience: String,
    id_ttl: u64,
    at_ttl: u64,
    acr_supported: Vec<String>,
}

impl Minter {
    /// A minter for `issuer` with the configured lifetimes.
    pub fn new(keys: KeySet, issuer: String, cfg: &TokensConfig) -> Self {
        Self {
            audience: cfg
                .access_token_audience
                .clone()
                .unwrap_or_else(|| issuer.clone()),
            keys,
            issuer,
            id_ttl: cfg.id_token_ttl_secs,
            at_ttl: cfg.access_token_ttl_secs,
            acr_supported: cfg.acr_values_supported.clone(),
        }
    }

    /// The keys (for the JWKS and `id_token_hint` verification).
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The `acr` to assert for a request: the client's most preferred value that the gateway
    /// supports, else what the approval reported.
    pub fn acr_for(&self, requested: Option<&str>, achieved: Option<&str>) -> Option<String> {
        if let Some(a) = achieved {
            return Some(a.to_owned());
        }
        requested?
            .split(' ')
            .find(|v| self.acr_supported.iter().any(|s| s == v))
            .map(str::to_owned)
    }

    /// What an approved request grants: the subject, scope and authentication facts the
    /// tokens assert.
    pub fn grant_for(&self, req: &PendingRequest, approval: &Approval) -> Grant {
        Grant {
            subject: approval
                .subject
                .clone()
                .unwrap_or_else(|| req.subject.clone()),
            scope: req.scope.clone(),
            auth_time: approval.auth_time,
            acr: self.acr_for(req.acr_values.as_deref(), approval.acr.as_deref()),
            amr: approval.amr.clone(),
            auth_req_id: Some(req.id.as_str().to_owned()),
            bound_to: None,
        }
    }

    /// Mints the token response for `grant`, for `to`; with `refresh`, a refresh token of that
    /// family too (a pushed ID token then carries its `rt_hash`, PUSH-02).
    pub fn mint(
        &self,
        grant: &Grant,
        client: &Client,
        user: Option<&User>,
        now: u64,
        to: Recipient,
        refresh: Option<&RefreshIssue>,
    ) -> Result<TokenResponse, jsonwebtoken::errors::Error> {
        let extra = user
            .map(|u| scoped_claims(&grant.scope, u))
            .unwrap_or_default();
        let mut id = IdTokenClaims {
            iss: self.issuer.clone(),
            sub: grant.subject.clone(),
            aud: client.id.clone(),
            iat: now,
            exp: now + self.id_ttl,
            auth_time: grant.auth_time,
            acr: grant.acr.clone(),
            amr: grant.amr.clone(),
            at_hash: None,
            auth_req_id: None,
            rt_hash: None,
            extra,
        };
        let at = AccessTokenClaims {
            iss: self.issuer.clone(),
            exp: now + self.at_ttl,
            aud: self.audience.clone(),
            sub: grant.subject.clone(),
            client_id: client.id.clone(),
            iat: now,
            nbf: None,
            jti: random_token(),
            scope: grant.scope.as_str().to_owned(),
            auth_time: grant.auth_time,
            acr: grant.acr.clone(),
            cnf: grant
                .bound_to
                .clone()
                .map(|x5t_s256| Confirmation { x5t_s256 }),
        };
        let access_token = self.keys.sign("at+jwt", &at)?;
        let refresh_token = match refresh {
            Some(r) => Some(self.keys.sign(
                REFRESH_TYP,
                &RefreshTokenClaims {
                    iss: self.issuer.clone(),
                    sub: grant.subject.clone(),
                    client_id: client.id.clone(),
                    scope: r.scope.clone(),
                    fid: r.family.clone(),
                    jti: r.jti.clone(),
                    iat: now,
                    exp: r.expires_at,
                    auth_time: grant.auth_time,
                    acr: grant.acr.clone(),
                    amr: grant.amr.clone(),
                },
            )?),
            None => None,
        };
        if to == Recipient::Push {
            let alg = self.keys.alg_for(client.id_token_alg);
            id.at_hash = Some(token_hash(alg, &access_token));
            id.auth_req_id = grant.auth_req_id.clone();
            id.rt_hash = refresh_token.as_deref().map(|rt| token_hash(alg, rt));
        }
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.at_ttl,
            id_token: self.keys.sign_with(client.id_token_alg, "JWT", &id)?,
            refresh_token,
            scope: grant.scope.as_str().to_owned(),
        })
    }

    /// The claims of a refresh token this gateway signed (its `kid`, `typ`, a valid signature
    /// and issuer, not expired); `None` for any other token — the provider's own, which is
    /// forwarded untouched. No lookup.
    pub fn own_refresh_token(&self, token: &str, now: u64) -> Option<RefreshTokenClaims> {
        let h = jsonwebtoken::decode_header(token).ok()?;
        if h.typ.as_deref() != Some(REFRESH_TYP)
            || !h.kid.as_deref().is_some_and(|k| self.keys.has_kid(k))
        {
            return None;
        }
        let mut v = Validation::new(h.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[&self.issuer]);
        let c: RefreshTokenClaims = self.keys.verify(token, v)?;
        Some(c).filter(|c| c.exp > now)
    }
}

/// The `typ` of the gateway's refresh tokens.
const REFRESH_TYP: &str = "rt+jwt";

/// What an approval (or a refresh) grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The subject the tokens are about.
    pub subject: String,
    /// The granted scope.
    pub scope: crate::protocol::Scope,
    /// When the user authenticated, Unix seconds.
    pub auth_time: u64,
    /// The authentication context class asserted.
    pub acr: Option<String>,
    /// Authentication methods.
    pub amr: Option<Vec<String>>,
    /// The CIBA request it answers (a pushed ID token names it).
    pub auth_req_id: Option<String>,
    /// The thumbprint of the client certificate the access token is bound to.
    pub bound_to: Option<String>,
}

/// A refresh token to issue: its family, its own id, and when the family ends.
#[derive(Debug, Clone)]
pub struct RefreshIssue {
    /// The family (all the rotations of one grant).
    pub family: String,
    /// This token's id: the family's current one.
    pub jti: String,
    /// When the family ends, Unix seconds.
    pub expires_at: u64,
    /// The family's scope (what it was granted; a refresh may narrow one access token, never
    /// the family, RFC 6749 §6).
    pub scope: String,
}

/// The claims of the gateway's refresh tokens. `Debug` shows no ids.
#[derive(Serialize, Deserialize)]
pub struct RefreshTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The granted scope.
    pub scope: String,
    /// The family.
    pub fid: String,
    /// This token's id.
    pub jti: String,
    /// Issued at.
    pub iat: u64,
    /// When the family ends.
    pub exp: u64,
    /// When the user authenticated.
    pub auth_time: u64,
    /// The authentication context class asserted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acr: Option<String>,
    /// Authentication methods.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amr: Option<Vec<String>>,
}

impl std::fmt::Debug for RefreshTokenClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenClaims")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyConfig, SecretRef, SigningAlg};
    use jsonwebtoken::jwk::JwkSet;

    // PUSH-02: at_hash as OIDC Core computes it (the example of its §A.3, RS256).
    #[test]
    fn push_02_at_hash_matches_the_oidc_example() {
        assert_eq!(
            token_hash(
                jsonwebtoken::Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    fn keyset(alg: SigningAlg, pem: String) -> KeySet {
        let cfg = TokensConfig {
            keys: vec![KeyConfig {
                kid: "k".into(),
                alg,
                private_key: SecretRef::new(pem),
            }],
            ..TokensConfig::default()
        };
        KeySet::from_config(&cfg).unwrap()
    }

    #[test]
    fn every_algorithm_signs_with_kid_and_verifies_against_its_jwk() {
        for alg in [
            SigningAlg::ES256,
            SigningAlg::EdDSA,
            SigningAlg::RS256,
            SigningAlg::PS256,
        ] {
            let ks = keyset(alg, generate_pem(alg).unwrap());
            let token = ks
                .sign("JWT", &serde_json::json!({"sub": "x", "exp": u64::MAX / 2}))
                .unwrap();
            let h = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(h.kid.as_deref(), Some("k"));
            let v: Option<serde_json::Value> = ks.verify(&token, Validation::new(h.alg));
            assert_eq!(v.unwrap()["sub"], "x", "{alg:?}");
            let jwks: JwkSet = serde_json::from_slice(ks.jwks(0)).unwrap();
            assert!(jwks.keys[0].common.key_id.as_deref() == Some("k"));
            assert!(
                !String::from_utf8_lossy(ks.jwks(0)).contains("\"d\""),
                "no private parts in the JWKS"
            );
        }
    }

    #[test]
    fn ed25519_pkcs8_v2_pem_is_accepted() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let v2 = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .to_pkcs8_pem(Default::default())
            .unwrap();
        let ks = keyset(SigningAlg::EdDSA, v2.to_string());
        assert!(ks.sign("JWT", &serde_json::json!({"a": 1})).is_ok());
    }

    #[test]
    fn key_rotation_publishes_all_and_signs_with_the_active_one() {
        let cfg = TokensConfig {
            keys: vec![
                KeyConfig {
                    kid: "old".into(),
                    alg: SigningAlg::EdDSA,
                    private_key: SecretRef::new(generate_pem(SigningAlg::EdDSA).unwrap()),
                },
                KeyConfig {
                    kid: "new".into(),
                    alg: SigningAlg::ES256,
                    private_key: SecretRef::new(generate_pem(SigningAlg::ES256).unwrap()),
                },
            ],
            active_kid: Some("new".into()),
            ..TokensConfig::default()
        };
        let ks = KeySet::from_config(&cfg).unwrap();
        let jwks: JwkSet = serde_json::from_slice(ks.jwks(0)).unwrap();
        assert_eq!(jwks.keys.len(), 2);
        let t = ks.sign("JWT", &serde_json::json!({})).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&t).unwrap().kid.as_deref(),
            Some("new")
        );
    }
}

#[cfg(test)]
mod alg_per_client {
    use super::*;
    use crate::config::{KeyConfig, SecretRef, SigningAlg};
    use jsonwebtoken::Algorithm;

    // Issue item 3: a client registered for RS256 gets RS256 ID tokens when the gateway has an
    // RS256 key; everyone else gets the active key's algorithm.
    #[test]
    fn sign_with_picks_a_key_of_the_clients_algorithm() {
        let key = |kid: &str, alg| KeyConfig {
            kid: kid.into(),
            alg,
            private_key: SecretRef::new(generate_pem(alg).unwrap()),
        };
        let cfg = TokensConfig {
            keys: vec![key("ec", SigningAlg::ES256), key("rsa", SigningAlg::RS256)],
            ..TokensConfig::default()
        };
        let ks = KeySet::from_config(&cfg).unwrap();
        assert_eq!(ks.algorithms(), ["ES256", "RS256"]);
        let h = |t: String| jsonwebtoken::decode_header(&t).unwrap();
        let claims = serde_json::json!({"sub": "x"});
        let t = h(ks
            .sign_with(Some(SigningAlg::RS256), "JWT", &claims)
            .unwrap());
        assert_eq!((t.alg, t.kid.as_deref()), (Algorithm::RS256, Some("rsa")));
        let t = h(ks.sign_with(None, "JWT", &claims).unwrap());
        assert_eq!((t.alg, t.kid.as_deref()), (Algorithm::ES256, Some("ec")));
        let t = h(ks
            .sign_with(Some(SigningAlg::EdDSA), "JWT", &claims)
            .unwrap());
        assert_eq!(t.alg, Algorithm::ES256, "no EdDSA key: the active one");
    }
}
