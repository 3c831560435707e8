//! The client registry and client authentication (BC-AUTH-02/05, OA-02/03). The same rules
//! serve the backchannel and the token endpoint (TOK-01).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use crate::config::{
    AuthMethod, ClientConfig, Config, ConfigErrors, Problems, required_reference, resolve_verifier,
};
use crate::protocol::{Form, GRANT_TYPE_CIBA, OAuthError};
use crate::secret::SecretVerifier;

/// A registered client, ready to authenticate.
#[derive(Debug)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Name shown to the user.
    pub name: String,
    /// The registered authentication method.
    pub auth_method: AuthMethod,
    secret: SecretVerifier,
    /// Whether the client may start CIBA requests (BC-AUTH-06): it has the CIBA grant, or it
    /// is a push client.
    pub ciba_allowed: bool,
    /// Whether the client must send a `user_code` (BC-UC-01).
    pub user_code_required: bool,
    /// Scopes this client may request.
    pub scopes: Vec<String>,
    /// What the client receives for an approved request.
    pub tokens: crate::config::TokenSource,
    /// How the gateway authenticates at the upstream for this client's logins.
    pub upstream: Option<UpstreamCredentials>,
    /// The algorithm the client expects its ID tokens signed with, if registered.
    pub id_token_alg: Option<crate::config::SigningAlg>,
    /// Whether the client may use the `refresh_token` grant (it then gets refresh tokens for
    /// grants with `offline_access`).
    pub refresh_allowed: bool,
    /// How the client gets its tokens (CM-01).
    pub delivery: crate::config::DeliveryMode,
    /// Where a ping client is notified (CM-02).
    pub notification_endpoint: Option<url::Url>,
}

/// A client's credentials at the upstream provider.
#[derive(Debug, Clone)]
pub struct UpstreamCredentials {
    /// The client id at the upstream.
    pub client_id: String,
    /// Its secret.
    pub secret: crate::secret::Secret,
    /// How to present it at the upstream's token endpoint.
    pub auth_method: AuthMethod,
}

impl Client {
    /// The client at `clients[i]`; problems with its secrets are recorded under that path.
    fn from_config(
        i: usize,
        c: &ClientConfig,
        cfg: &Config,
        problems: &mut Problems,
    ) -> Option<Self> {
        let expected = problems.take(format!("clients[{i}].secret"), resolve_verifier(&c.secret));
        let upstream = c.upstream.as_ref().map(|u| {
            problems
                .take(
                    format!("clients[{i}].upstream.client_secret"),
                    required_reference(&u.client_secret),
                )
                .map(|secret| UpstreamCredentials {
                    client_id: u.client_id.clone().unwrap_or_else(|| c.client_id.clone()),
                    secret,
                    auth_method: u.auth_method,
                })
        });
        Some(Self {
            id: c.client_id.clone(),
            name: c.name.clone().unwrap_or_else(|| c.client_id.clone()),
            auth_method: c.token_endpoint_auth_method,
            secret: SecretVerifier::new(expected?),
            // A push client never uses the grant at the token endpoint (CM-03) but does start
            // requests.
            ciba_allowed: c.grant_types.iter().any(|g| g == GRANT_TYPE_CIBA)
                || c.backchannel_token_delivery_mode == crate::config::DeliveryMode::Push,
            user_code_required: c.backchannel_user_code_parameter,
            scopes: c
                .scopes
                .clone()
                .unwrap_or_else(|| cfg.scopes_supported.clone()),
            tokens: c.tokens,
            id_token_alg: c.id_token_signed_response_alg,
            refresh_allowed: c.grant_types.iter().any(|g| g == "refresh_token"),
            delivery: c.backchannel_token_delivery_mode,
            notification_endpoint: c.backchannel_client_notification_endpoint.clone(),
            upstream: match upstream {
                Some(u) => Some(u?),
                None => None,
            },
        })
    }
}

/// All clients, by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: HashMap<String, Arc<Client>>,
}

/// Credentials in a Basic `Authorization` header, form-urldecoded (OA-03).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authentication scheme",
        ));
    }
    let raw = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = raw
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((decode(id), decode(secret))))
}

impl ClientRegistry {
    /// Builds the registry from configuration, loading every client's secrets; every problem
    /// is reported, each under its client's path.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let mut clients = HashMap::new();
        for (i, c) in cfg.clients.iter().enumerate() {
            if let Some(client) = Client::from_config(i, c, cfg, &mut problems) {
                clients.insert(c.client_id.clone(), Arc::new(client));
            }
        }
        problems.finish(|| Self { clients })
    }

    /// Whether any client satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&Client) -> bool) -> bool {
        self.clients.values().any(|c| pred(c))
    }

    /// A client by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Client>> {
        self.clients.get(id)
    }

    /// Authenticates the client of a request with its registered method. Every failure is
    /// `invalid_client` (401 with a Basic challenge), except mixing methods, which is
    /// `invalid_request` (BC-AUTH-05).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &Form<'_>,
    ) -> Result<&Arc<Client>, OAuthError> {
        let basic = basic_credentials(headers)?;
        let post_secret = form.get("client_secret");
        if form.has("client_assertion") || form.has("client_assertion_type") {
            if basic.is_some() || post_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "more than one client authentication method",
                ));
            }
            return Err(OAuthError::invalid_client(
                "client assertions are not supported by this gateway",
            ));
        }
        let (id, secret, method) = match (basic, post_secret) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "more than one client authentication method",
                ));
            }
            (Some((id, secret)), None) => {
                if form.get("client_id").is_some_and(|f| f != id) {
                    return Err(OAuthError::invalid_client(
                        "client_id does not match the authenticated client",
                    ));
                }
                (id, secret, AuthMethod::ClientSecretBasic)
            }
            (None, Some(secret)) => {
                let id = form
                    .get("client_id")
                    .ok_or_else(|| OAuthError::invalid_client("client_id is missing"))?;
                (
                    id.to_owned(),
                    secret.to_owned(),
                    AuthMethod::ClientSecretPost,
                )
            }
            (None, None) => {
                return Err(OAuthError::invalid_client(
                    "client authentication is required",
                ));
            }
        };
        let Some(client) = self.clients.get(&id) else {
            // The same argon2 work as a wrong secret, inside the same concurrency bound.
            let _ = crate::secret::unknowable().verify(&secret).await;
            return Err(OAuthError::invalid_client("client authentication failed"));
        };
        if client.auth_method != method {
            return Err(OAuthError::invalid_client(format!(
                "this client authenticates with {}",
                client.auth_method.as_str()
            )));
        }
        if !client.secret.verify(&secret).await {
            return Err(OAuthError::invalid_client("client authentication failed"));
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    fn registry() -> ClientRegistry {
        let cfg = Config::from_yaml(&format!(
            "public_url: http://gw\nclients:\n  - {{ client_id: known, secret: \"{}\", token_endpoint_auth_method: client_secret_post }}\n",
            crate::secret::hash_secret("right")
        ))
        .unwrap();
        ClientRegistry::from_config(&cfg).unwrap()
    }

    // Hostile traffic, item 4: an unknown client id costs the same argon2 verification as a
    // wrong secret, so the time taken does not tell which ids exist.
    #[tokio::test]
    async fn unknown_clients_pay_for_a_verification_too() {
        let r = registry();
        let form = Form::parse(b"client_id=nobody&client_secret=guess").unwrap();
        let before = crate::secret::HASHED.load(SeqCst);
        let e = r.authenticate(&HeaderMap::new(), &form).await.unwrap_err();
        assert_eq!(e.code(), crate::protocol::ErrorCode::InvalidClient);
        assert!(
            crate::secret::HASHED.load(SeqCst) > before,
            "no argon2 verification ran"
        );
        let form = Form::parse(b"client_id=known&client_secret=right").unwrap();
        assert!(r.authenticate(&HeaderMap::new(), &form).await.is_ok());
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let r = registry();
        let mut h = HeaderMap::new();
        h.append("authorization", "Basic a25vd246cmlnaHQ=".parse().unwrap());
        h.append("authorization", "Basic b3RoZXI6eA==".parse().unwrap());
        let e = r.authenticate(&h, &Form::default()).await.unwrap_err();
        assert_eq!(e.code(), crate::protocol::ErrorCode::InvalidRequest);
    }
}
