//! Dynamic client registration (RFC 7591, REG-*) and each registered client's management
//! (RFC 7592, RCM-*): `POST {registration}` registers, `GET`/`PUT`/`DELETE
//! {registration}/{client_id}` read, replace and delete with the registration access token.
//!
//! Who may register: the holder of the initial access token, or — `registration.open`, for
//! development — anyone; every address within `registration.per_address`. The metadata is
//! checked by the rules a configured client is (`clients::metadata`). The gateway issues the
//! `client_id`, the secret and the registration access token (256 random bits each) and keeps
//! only the secret's and the token's digests. Configured clients are not visible here.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{EngineRequest, Shared};
use crate::clients::ClientRegistry;
use crate::clients::metadata::{self, Refusal};
use crate::clock::Clock;
use crate::config::{ClientConfig, Config};
use crate::protocol::{ErrorCode, OAuthError, json_response, random_token};
use crate::ratelimit::RateLimiter;
use crate::secret::{Expected, SecretVerifier};
use crate::store::{ClientStore as _, RegisteredClient, Store};

/// The registration endpoint's dependencies.
pub(super) struct Registration {
    cfg: Arc<Config>,
    clients: Arc<ClientRegistry>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// The endpoint's path and absolute URL.
    path: String,
    url: String,
    /// The initial access token (`None`: open registration).
    initial_token: Option<SecretVerifier>,
    per_address: Option<RateLimiter>,
}

impl Registration {
    /// `initial_token` is the loaded `registration.initial_access_token`; `cfg` the
    /// configuration the registry checks registered clients against (one copy for both).
    pub(super) fn new(shared: &Shared, initial_token: Option<Expected>, cfg: Arc<Config>) -> Self {
        let r = &shared.cfg.registration;
        Self {
            cfg,
            clients: Arc::clone(&shared.clients),
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
            path: shared.paths.registration.clone(),
            url: shared.cfg.url_for(&shared.paths.registration),
            initial_token: initial_token.map(SecretVerifier::new),
            per_address: r.per_address.as_ref().map(|rate| {
                RateLimiter::new(
                    rate,
                    Arc::clone(&shared.clock),
                    Arc::clone(&shared.store),
                    "register",
                )
            }),
        }
    }

    pub(super) async fn handle(&self, req: &EngineRequest) -> Response<Bytes> {
        self.route(req)
            .await
            .unwrap_or_else(OAuthError::into_response)
    }

    async fn route(&self, req: &EngineRequest) -> Result<Response<Bytes>, OAuthError> {
        let rest = req
            .uri
            .path()
            .strip_prefix(self.path.as_str())
            .unwrap_or("");
        if rest.is_empty() {
            if req.method != Method::POST {
                return Err(OAuthError::method_not_allowed());
            }
            return self.register(req).await;
        }
        let id = rest.trim_start_matches('/');
        match req.method {
            Method::GET => self.read(req, id).await,
            Method::PUT => self.update(req, id).await,
            Method::DELETE => self.delete(req, id).await,
            _ => {
                let mut r =
                    OAuthError::new(ErrorCode::InvalidRequest, StatusCode::METHOD_NOT_ALLOWED)
                        .describe("GET, PUT or DELETE")
                        .into_response();
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, PUT, DELETE"));
                Ok(r)
            }
        }
    }

    /// RFC 7591 §3: a new client. REG-01 (201 with what was registered and issued), REG-02/03
    /// (errors), REG-04 (unknown metadata ignored), REG-06 (the initial access token).
    async fn register(&self, req: &EngineRequest) -> Result<Response<Bytes>, OAuthError> {
        self.admit(req).await?;
        if let Some(expected) = &self.initial_token {
            let presented = super::userinfo::bearer(&req.headers, None).unwrap_or("");
            if presented.is_empty() || !expected.verify(presented).await {
                return Err(OAuthError::invalid_token(
                    "a valid initial access token is required to register",
                ));
            }
        }
        let body = json_body(req)?;
        let client_id = random_token();
        let (md, client) = self.metadata(&body, &client_id).await?;
        let secret = client
            .token_endpoint_auth_method
            .uses_secret()
            .then(random_token);
        let access_token = random_token();
        let record = RegisteredClient {
            client_id: client_id.clone(),
            secret_sha256: secret.as_deref().map(crate::domain::sha256),
            access_token_sha256: crate::domain::sha256(&access_token),
            issued_at: self.clock.now_secs(),
            version: rand::random(),
            metadata: md,
        };
        self.keep(&record).await?;
        tracing::info!(client_id = %client_id, "client registered");
        Ok(self.answer(StatusCode::CREATED, &record, secret, &access_token))
    }

    /// RFC 7592 §2.1.
    async fn read(&self, req: &EngineRequest, id: &str) -> Result<Response<Bytes>, OAuthError> {
        let (record, token) = self.authorized(req, id).await?;
        Ok(self.answer(StatusCode::OK, &record, None, token))
    }

    /// RFC 7592 §2.2: a full replacement (RCM-01). The `client_id` must be the client's; a
    /// `client_secret`, if sent, must be the current one; the secret is kept unless the request
    /// asks for a new one (`?rotate_secret=true`) or the method changes to a secret one.
    async fn update(&self, req: &EngineRequest, id: &str) -> Result<Response<Bytes>, OAuthError> {
        let (current, token) = self.authorized(req, id).await?;
        let body = json_body(req)?;
        if body.get("client_id").and_then(Value::as_str) != Some(id) {
            return Err(refusal(Refusal::Metadata(
                "client_id must be the client's own".into(),
            )));
        }
        if let Some(sent) = body.get("client_secret") {
            let matches = match (sent.as_str(), current.secret_sha256) {
                (Some(s), Some(d)) => SecretVerifier::new(Expected::Issued(d)).verify(s).await,
                _ => false,
            };
            if !matches {
                return Err(refusal(Refusal::Metadata(
                    "client_secret is not the current secret (a client cannot choose its secret)"
                        .into(),
                )));
            }
        }
        let (md, client) = self.metadata(&body, id).await?;
        let rotate = req.uri.query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "rotate_secret" && v == "true")
        });
        let (secret_sha256, issued) = match (
            client.token_endpoint_auth_method.uses_secret(),
            current.secret_sha256,
        ) {
            (false, _) => (None, None),
            (true, Some(d)) if !rotate => (Some(d), None),
            (true, _) => {
                let s = random_token();
                (Some(crate::domain::sha256(&s)), Some(s))
            }
        };
        let record = RegisteredClient {
            client_id: id.to_owned(),
            metadata: md,
            secret_sha256,
            access_token_sha256: current.access_token_sha256,
            issued_at: current.issued_at,
            version: rand::random(),
        };
        self.keep(&record).await?;
        tracing::info!(client_id = %id, rotated = issued.is_some(), "registered client updated");
        Ok(self.answer(StatusCode::OK, &record, issued, token))
    }

    /// Stores `record` once it makes a usable client (its keys parse, its metadata fits).
    async fn keep(&self, record: &RegisteredClient) -> Result<(), OAuthError> {
        self.clients
            .admits(record)
            .map_err(|why| refusal(Refusal::Metadata(why)))?;
        self.store
            .put_client(record.clone())
            .await
            .map_err(super::store_unavailable)
    }

    /// RFC 7592 §2.3: the client is gone at once, everywhere (every lookup reads the store).
    async fn delete(&self, req: &EngineRequest, id: &str) -> Result<Response<Bytes>, OAuthError> {
        self.authorized(req, id).await?;
        self.store
            .delete_client(id)
            .await
            .map_err(super::store_unavailable)?;
        tracing::info!(client_id = %id, "registered client deleted");
        let mut r = Response::new(Bytes::new());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    /// RCM-02: the registered client `id` and the token presented for it; a missing or wrong
    /// token, an unknown or deleted client, and a configured one are the same 401.
    async fn authorized<'r>(
        &self,
        req: &'r EngineRequest,
        id: &str,
    ) -> Result<(Arc<RegisteredClient>, &'r str), OAuthError> {
        let refused = || {
            OAuthError::invalid_token("the registration access token is not valid for this client")
        };
        let token = super::userinfo::bearer(&req.headers, None).ok_or_else(refused)?;
        if id.is_empty() || id.contains('/') || self.clients.is_configured(id) {
            return Err(refused());
        }
        let record = self
            .store
            .client(id)
            .await
            .map_err(super::store_unavailable)?
            .ok_or_else(refused)?;
        if !record.access_token_is(token) {
            return Err(refused());
        }
        Ok((record, token))
    }

    /// The body's metadata, normalised and checked, its notification endpoint through the
    /// SSRF guard (CM-02, SEC-05).
    async fn metadata(
        &self,
        body: &Value,
        id: &str,
    ) -> Result<(Map<String, Value>, ClientConfig), OAuthError> {
        let (md, client) = metadata::normalise(body, id, &self.cfg).map_err(refusal)?;
        if let Some(endpoint) = md
            .get("backchannel_client_notification_endpoint")
            .and_then(Value::as_str)
        {
            let policy = &self.cfg.ciba.client_notifications.outbound;
            if !policy.allow_private_networks {
                public_target(endpoint).await.map_err(|why| {
                    refusal(Refusal::Metadata(format!(
                        "backchannel_client_notification_endpoint: {why}"
                    )))
                })?;
            }
        }
        Ok((md, client))
    }

    /// GW-07 for registration: a budget per peer address, whatever the outcome.
    async fn admit(&self, req: &EngineRequest) -> Result<(), OAuthError> {
        let (Some(limiter), Some(peer)) = (&self.per_address, req.connection.peer) else {
            return Ok(());
        };
        match limiter
            .admit(&peer.ip().to_string())
            .await
            .map_err(super::store_unavailable)?
        {
            Ok(()) => Ok(()),
            Err(wait) => Err({
                crate::audit::refused("registration", None);
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    StatusCode::TOO_MANY_REQUESTS,
                )
                .describe("too many registrations from this address; try again later")
                .retry_after(u32::try_from(wait).unwrap_or(u32::MAX))
            }),
        }
    }

    /// The client information response (RFC 7591 §3.2.1, RFC 7592 §3): the registered
    /// metadata, what was issued, and where and with what the client manages itself.
    fn answer(
        &self,
        status: StatusCode,
        record: &RegisteredClient,
        secret: Option<String>,
        access_token: &str,
    ) -> Response<Bytes> {
        let mut out = record.metadata.clone();
        out.insert("client_id".into(), json!(record.client_id));
        out.insert("client_id_issued_at".into(), json!(record.issued_at));
        if let Some(s) = secret {
            out.insert("client_secret".into(), json!(s));
        }
        if record.secret_sha256.is_some() {
            out.insert("client_secret_expires_at".into(), json!(0));
        }
        out.insert("registration_access_token".into(), json!(access_token));
        out.insert(
            "registration_client_uri".into(),
            json!(format!("{}/{}", self.url, record.client_id)),
        );
        json_response(status, Bytes::from(Value::Object(out).to_string()))
    }
}

/// The request's JSON body (RFC 7591 §3.1: `application/json`).
fn json_body(req: &EngineRequest) -> Result<Value, OAuthError> {
    let json = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(refusal(Refusal::Metadata(
            "the request body must be JSON (Content-Type: application/json)".into(),
        )));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| refusal(Refusal::Metadata(format!("the body is not JSON: {e}"))))
}

/// REG-02: the error response for refused metadata.
fn refusal(r: Refusal) -> OAuthError {
    let (code, why) = match r {
        Refusal::RedirectUri(why) => (ErrorCode::InvalidRedirectUri, why),
        Refusal::Metadata(why) => (ErrorCode::InvalidClientMetadata, why),
    };
    OAuthError::bad_request(code).describe(why)
}

/// An endpoint whose host is a public address, and, for a name, resolves only to public
/// addresses now (the connection is checked again when it is made).
async fn public_target(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| e.to_string())?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => vec![IpAddr::V4(v4)],
        Some(url::Host::Ipv6(v6)) => vec![IpAddr::V6(v6)],
        Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|_| format!("'{d}' does not resolve"))?
            .map(|a| a.ip())
            .collect(),
        None => return Err("has no host".into()),
    };
    if addrs.is_empty() || addrs.iter().any(|ip| !crate::outbound::is_public(*ip)) {
        return Err("is not a public address (SSRF guard, SEC-05)".into());
    }
    Ok(())
}
