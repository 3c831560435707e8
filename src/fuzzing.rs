//! Internal parsers, reachable for the fuzz suite (`tests/fuzz.rs`) with the `fuzzing`
//! feature. Not part of the API: nothing here is documented on docs.rs or kept stable.

use crate::Engine;

/// The form parser every endpoint uses: `Ok` with the value of `name`, or the error.
pub fn form_field(body: &[u8], name: &str) -> Result<Option<String>, crate::OAuthError> {
    crate::protocol::Form::parse(body).map(|f| f.get(name).map(str::to_owned))
}

/// A signing key set (the ephemeral ES256 key) playing an upstream provider: its JWKS and a
/// signer of compact JWTs.
pub struct ProviderKeys(crate::tokens::KeySet);

impl ProviderKeys {
    /// A fresh ephemeral key.
    pub fn new() -> Self {
        Self(crate::tokens::KeySet::from_config(&Default::default()).expect("an ephemeral key"))
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::from_slice(self.0.jwks(0)).expect("a JWKS is JSON")
    }

    /// `claims` signed as a JWT.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.0.sign("JWT", claims).expect("signing works")
    }
}

impl Default for ProviderKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// Validates an ID token from the engine's upstream as the upstream login does.
pub async fn validate_upstream_id_token(
    engine: &Engine,
    id_token: &str,
    client_id: &str,
    nonce: &str,
) -> Result<(), String> {
    let upstream = engine.upstream().ok_or("no upstream")?;
    upstream
        .validate_id_token(&engine.paths().discovery, id_token, client_id, nonce)
        .await
        .map(drop)
}
