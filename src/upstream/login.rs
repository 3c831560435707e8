//! Logging the user in at the upstream provider: the authorization request (code + PKCE S256,
//! `state`, `nonce`, `login_hint`, `acr_values`, `prompt=login`), the code exchange with the
//! configured client authentication, and validation of the upstream's ID token (signature from
//! the upstream's JWKS, `iss`, `aud`, `nonce`, `exp`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use super::{Upstream, UpstreamError};
use crate::clients::UpstreamCredentials;
use crate::config::AuthMethod;
use crate::domain::IssuedTokens;
use crate::protocol::random_token;

/// Algorithms accepted on an upstream ID token: asymmetric only, never `none` or `HS*`.
const ID_TOKEN_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::RS384,
    Algorithm::PS384,
    Algorithm::ES384,
    Algorithm::RS512,
    Algorithm::PS512,
];

/// The secrets of one login attempt, kept by the gateway until the upstream redirects back.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct LoginSecrets {
    /// `state`, binding the callback to this attempt.
    pub state: String,
    /// `nonce`, binding the ID token to this attempt.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
}

impl std::fmt::Debug for LoginSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginSecrets(<redacted>)")
    }
}

/// What the authorization request asks for.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    /// The client id at the upstream.
    pub client_id: &'a str,
    /// The gateway's callback.
    pub redirect_uri: &'a str,
    /// Scope to request (always includes `openid`).
    pub scope: &'a str,
    /// The CIBA request's `login_hint`, passed on.
    pub login_hint: Option<&'a str>,
    /// The CIBA request's `acr_values`, passed on.
    pub acr_values: Option<&'a str>,
    /// Whether to send `prompt=login`.
    pub prompt_login: bool,
}

fn str_field<'a>(d: &'a Map<String, Value>, k: &str) -> Result<&'a str, UpstreamError> {
    d.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::Unavailable(format!("the upstream's discovery has no {k}")))
}

impl Upstream {
    /// The URL to send the user's browser to, and the secrets to keep for the callback.
    pub async fn authorization_url(
        &self,
        discovery_path: &str,
        req: &LoginRequest<'_>,
    ) -> Result<(Url, LoginSecrets), UpstreamError> {
        let d = self.discovery(discovery_path).await?;
        let mut url = Url::parse(str_field(&d, "authorization_endpoint")?)
            .map_err(|_| UpstreamError::Unavailable("bad authorization_endpoint".into()))?;
        let secrets = LoginSecrets {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(secrets.verifier.as_bytes()));
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", req.client_id)
                .append_pair("redirect_uri", req.redirect_uri)
                .append_pair("scope", req.scope)
                .append_pair("state", &secrets.state)
                .append_pair("nonce", &secrets.nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(h) = req.login_hint {
                q.append_pair("login_hint", h);
            }
            if let Some(a) = req.acr_values {
                q.append_pair("acr_values", a);
            }
            // A provider issues a refresh token for offline_access only after asking for
            // consent (OIDC Core §11; oidc-provider and others enforce it).
            let consent = req.scope.split(' ').any(|s| s == "offline_access");
            let prompt = match (req.prompt_login, consent) {
                (true, true) => Some("login consent"),
                (true, false) => Some("login"),
                (false, true) => Some("consent"),
                (false, false) => None,
            };
            if let Some(p) = prompt {
                q.append_pair("prompt", p);
            }
        }
        Ok((url, secrets))
    }

    /// Exchanges an authorization code at the upstream's token endpoint (reached directly, not
    /// through the public URL), authenticating as `creds` says.
    pub async fn exchange_code(
        &self,
        discovery_path: &str,
        creds: &UpstreamCredentials,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<IssuedTokens, String> {
        let path = self.token_path(discovery_path).await?;
        let form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let resp = self.token_request(&path, creds, form).await?;
        let status = resp.status();
        let body = super::read_capped(resp, super::MAX_METADATA_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if !status.is_success() {
            let code = json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            return Err(format!("the provider refused the code exchange ({code})"));
        }
        serde_json::from_value(json)
            .map_err(|_| "the provider's token response is malformed".to_owned())
    }

    /// The path (and query) of the provider's token endpoint, from its discovery document.
    async fn token_path(&self, discovery_path: &str) -> Result<String, String> {
        let d = self
            .discovery(discovery_path)
            .await
            .map_err(|e| e.to_string())?;
        let endpoint = Url::parse(str_field(&d, "token_endpoint").map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(match endpoint.query() {
            Some(q) => format!("{}?{q}", endpoint.path()),
            None => endpoint.path().to_owned(),
        })
    }

    /// A `refresh_token` grant at the provider's token endpoint (reached directly), with the
    /// client's credentials there (`creds`): the provider's answer, status and body as it sent
    /// them (capped at 1 MiB).
    pub async fn refresh(
        &self,
        discovery_path: &str,
        creds: &UpstreamCredentials,
        refresh_token: &str,
        scope: Option<&str>,
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        let path = self.token_path(discovery_path).await?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let resp = self.token_request(&path, creds, form).await?;
        let status = resp.status();
        let body = super::read_capped(resp, super::MAX_METADATA_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, bytes::Bytes::from(body)))
    }

    /// POSTs `form` to the provider's token endpoint at `path`, authenticated with `creds` as
    /// they say (Basic, or in the form).
    async fn token_request(
        &self,
        path: &str,
        creds: &UpstreamCredentials,
        mut form: Vec<(&str, &str)>,
    ) -> Result<reqwest::Response, String> {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = match creds.auth_method {
            AuthMethod::ClientSecretBasic => {
                Some((enc(&creds.client_id), enc(creds.secret.expose())))
            }
            // The configuration allows only the two secret methods at the provider.
            _ => {
                form.push(("client_id", &creds.client_id));
                form.push(("client_secret", creds.secret.expose()));
                None
            }
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.client
            .send(path, |c, url| {
                let req = c.post(url).headers(self.own_headers().clone());
                let req = match &basic {
                    Some((id, secret)) => req.basic_auth(id, Some(secret)),
                    None => req,
                };
                req.header("content-type", "application/x-www-form-urlencoded")
                    .body(body.clone())
            })
            .await
            .map_err(|e| e.without_url().to_string())
    }

    /// Validates the upstream's ID token and returns its claims.
    pub async fn validate_id_token(
        &self,
        discovery_path: &str,
        id_token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, String> {
        let d = self
            .discovery(discovery_path)
            .await
            .map_err(|e| e.to_string())?;
        let issuer = str_field(&d, "issuer")
            .map_err(|e| e.to_string())?
            .to_owned();
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| "the ID token is malformed".to_owned())?;
        if !ID_TOKEN_ALGS.contains(&header.alg) {
            return Err(format!(
                "the ID token's algorithm {:?} is not accepted",
                header.alg
            ));
        }
        let keys = self
            .jwks_keys(discovery_path)
            .await
            .map_err(|e| e.to_string())?;
        let jwk = keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .find(|k| header.kid.is_none() || k.common.key_id == header.kid)
            .ok_or("no upstream key matches the ID token")?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer]);
        v.set_audience(&[client_id]);
        v.leeway = 60;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &v)
            .map_err(|e| format!("the ID token is not valid: {e}"))?
            .claims;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err("the ID token's nonce does not match".into());
        }
        Ok(claims)
    }
}
