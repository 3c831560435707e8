//! The protocol engine: transport-agnostic. Adapters (the tower layer and the pingora module)
//! hand it a buffered [`EngineRequest`] and get back either a response or the request itself,
//! untouched, to forward to the upstream.

mod approval;
mod backchannel;
mod callback;
mod discovery;
mod paths;
mod token;
mod upstream_login;
mod userinfo;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use crate::channel::Channel;
use crate::clients::ClientRegistry;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, ConfigErrors, StoreConfig};
use crate::ratelimit::RateLimiter;
use crate::store::{MemoryStore, Store};
use crate::tokens::{KeySet, Minter};
use crate::upstream::{HeaderEdits, Upstream, UpstreamError};
use crate::users::{UserCodeGuard, UserDirectory};

pub use approval::Pages;
pub use discovery::Finding;
pub use paths::{Paths, SharedPaths};

/// A buffered request, as an adapter hands it to the engine.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    /// The method.
    pub method: Method,
    /// The request target (path and query).
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The engine's answer.
#[derive(Debug)]
pub enum Outcome {
    /// Answer the client with this response.
    Respond(Response<Bytes>),
    /// Not the gateway's after all (a non-CIBA grant at the shared token endpoint): forward this
    /// request, with the very bytes the client sent.
    Forward(EngineRequest),
}

/// The endpoints the engine recognises by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The backchannel authentication endpoint.
    Backchannel,
    /// The token endpoint, shared with the upstream: only the body's `grant_type` tells.
    Token,
    /// The discovery document (the upstream's, with the CIBA fields added, or the gateway's own).
    Discovery,
    /// The gateway's JWKS.
    Jwks,
    /// The userinfo endpoint, shared with the upstream: the gateway answers for the access
    /// tokens it minted and hands every other request back.
    Userinfo,
    /// A built-in approval page (`{approval}/{handle}`).
    Approval,
    /// The upstream provider's redirect back after a login (`{approval}/callback`).
    LoginCallback,
    /// The decision after an upstream login (`{approval}/consent`).
    Consent,
    /// The HTTP authentication channel's callback.
    ChannelCallback,
    /// The health check.
    Health,
}

/// The CIBA protocol engine. Cheap to share: wrap it in an `Arc`.
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) issuer: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) clients: ClientRegistry,
    pub(crate) users: UserDirectory,
    pub(crate) user_codes: UserCodeGuard,
    pub(crate) per_client: Option<RateLimiter>,
    pub(crate) per_user: Option<RateLimiter>,
    pub(crate) store: Arc<Store>,
    pub(crate) channel: Channel,
    pub(crate) minter: Minter,
    pub(crate) pages: Pages,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) paths: Paths,
    login_sessions: upstream_login::LoginSessions,
    discovery: discovery::Discovery,
    /// The address of the provider's discovery copy last audited.
    audited: std::sync::atomic::AtomicUsize,
    /// Repeated warnings (refusals, an unavailable provider) at most once per key per 10 s.
    log_throttle: crate::log_throttle::LogThrottle,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine on the system clock.
    pub fn new(cfg: Config) -> Result<Self, ConfigErrors> {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// Builds an engine on the given clock (tests use [`crate::clock::ManualClock`]).
    pub fn with_clock(cfg: Config, clock: Arc<dyn Clock>) -> Result<Self, ConfigErrors> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let issuer = cfg.issuer();
        let store = match cfg.store {
            StoreConfig::Memory {
                capacity,
                expired_grace_secs,
            } => Store::Memory(MemoryStore::new(
                capacity,
                Duration::from_secs(expired_grace_secs),
            )),
        };
        let all = |e: ConfigError| ConfigErrors(vec![e]);
        let keys = KeySet::from_config(&cfg.tokens).map_err(all)?;
        let paths = Paths::new(&cfg);
        let discovery = discovery::Discovery::new(&cfg, &issuer, &paths, &keys);
        let minter = Minter::new(keys, issuer.clone(), &cfg.tokens);
        let upstream = match &cfg.upstream {
            Some(u) => Some(Upstream::new(u, &cfg.public_url).map_err(all)?),
            None => None,
        };
        Ok(Self {
            upstream,
            login_sessions: upstream_login::LoginSessions::new(),
            audited: std::sync::atomic::AtomicUsize::new(0),
            log_throttle: crate::log_throttle::LogThrottle::new(10_000, Arc::clone(&clock)),
            clients: ClientRegistry::from_config(&cfg).map_err(all)?,
            users: UserDirectory::from_config(&cfg.users).map_err(all)?,
            user_codes: UserCodeGuard::new(&cfg.ciba.user_code),
            per_client: cfg
                .limits
                .bc_per_client
                .map(|r| RateLimiter::new(&r, Arc::clone(&clock))),
            per_user: cfg
                .limits
                .bc_per_user
                .map(|r| RateLimiter::new(&r, Arc::clone(&clock))),
            channel: Channel::from_config(&cfg.channel, &issuer, Arc::clone(&clock))
                .map_err(all)?,
            pages: Pages::new(&cfg, &paths),
            paths,
            store: Arc::new(store),
            minter,
            discovery,
            clock,
            issuer,
            cfg,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The largest body an adapter should buffer for the engine.
    pub fn max_body_bytes(&self) -> usize {
        self.cfg.limits.max_body_bytes
    }

    /// Which of the gateway's endpoints a path is, if any. Everything else passes through.
    pub fn route(&self, path: &str) -> Option<Route> {
        self.paths
            .route(path, matches!(self.channel, Channel::Http(_)))
    }

    /// The endpoint paths in force.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Whether a buffered token-endpoint body carries the CIBA grant (either spelling). Adapters
    /// use it to decide, before anything else, whether the request is theirs at all.
    pub fn is_ciba_grant(body: &[u8]) -> bool {
        form_urlencoded::parse(body).any(|(k, v)| {
            k == "grant_type"
                && (v == crate::protocol::GRANT_TYPE_CIBA
                    || v == crate::protocol::GRANT_TYPE_CIBA_IETF_ALIAS)
        })
    }

    /// Handles a request on one of the gateway's routes.
    pub async fn handle(&self, route: Route, req: EngineRequest) -> Outcome {
        let resp = match route {
            Route::Token => return self.token(req).await,
            Route::Backchannel => self.backchannel(&req).await,
            Route::Discovery => self.upstream_discovery().await,
            Route::Jwks => match &self.upstream {
                Some(u) => self.merged_jwks(u).await,
                None => cached_json(self.minter.keys().jwks().clone()),
            },
            Route::Userinfo => return self.userinfo(req).await,
            Route::LoginCallback if self.upstream_approval() && req.method == Method::GET => {
                self.upstream_callback(&req).await
            }
            Route::Consent if self.upstream_approval() && req.method == Method::POST => {
                self.upstream_consent(&req).await
            }
            // Otherwise these segments are handles like any other (and never valid ones).
            Route::Approval | Route::LoginCallback | Route::Consent => self.approval(&req).await,
            Route::ChannelCallback => self.callback(&req).await,
            Route::Health => {
                json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
            }
        };
        Outcome::Respond(resp)
    }

    /// Adds the CIBA fields to a wrapped service's discovery document (GW-01): `None` if the
    /// body is not a JSON object. The service's token and userinfo paths are learned from it.
    pub fn merge_discovery(&self, upstream: &[u8]) -> Option<Bytes> {
        let doc = serde_json::from_slice(upstream).ok()?;
        self.paths.learn(&doc);
        Some(self.discovery.merge(doc, &self.paths.shared(), false))
    }

    fn upstream_approval(&self) -> bool {
        self.cfg.approval.mode == crate::config::ApprovalMode::Upstream
    }

    /// The provider's discovery document, fetched as the gateway fetches it (public `Host`,
    /// forwarding headers); every fresh copy updates the shared paths and is audited, and what
    /// will not work is logged. `None` without an upstream.
    pub async fn upstream_discovery_document(
        &self,
    ) -> Option<Result<Arc<serde_json::Map<String, serde_json::Value>>, UpstreamError>> {
        let u = self.upstream.as_ref()?;
        let fetched = u.discovery(&self.paths.discovery).await;
        // Each copy the provider sends is learned from and audited once (the cache hands out
        // the same Arc until it refreshes).
        if let Ok(doc) = &fetched
            && self.audited.swap(
                Arc::as_ptr(doc) as usize,
                std::sync::atomic::Ordering::Relaxed,
            ) != Arc::as_ptr(doc) as usize
        {
            if let Some(p) = self.paths.learn(doc) {
                tracing::info!(token = %p.token, userinfo = %p.userinfo, "token and userinfo paths taken from the provider's discovery");
            }
            for f in self.discovery.audit(doc, &self.cfg) {
                tracing::warn!(problem = %f.problem, fix = %f.fix, "upstream discovery");
            }
        }
        Some(fetched)
    }

    /// Reads the provider's discovery once, so that the token and userinfo paths it names are
    /// known before the first client arrives (a runtime calls it as it starts listening; a
    /// provider that is down is logged and read again on the next discovery request).
    pub async fn warm_up(&self) {
        if let Some(Err(e)) = self.upstream_discovery_document().await {
            tracing::warn!(error = %e, "the provider's discovery could not be read at start-up; the token and userinfo paths are the defaults until it can");
        }
    }

    /// What will not work with this configuration whatever the provider says (`ciba-gateway
    /// check`), each with the change that fixes it.
    pub fn config_findings(&self) -> Vec<Finding> {
        self.discovery.config_findings(&self.cfg)
    }

    /// What in the provider's discovery document will not work with this configuration, each
    /// with the change that fixes it (`ciba-gateway check --online`). Fetches the document (and
    /// its JWKS) afresh, as the gateway will.
    pub async fn check_upstream(&self) -> Vec<Finding> {
        let Some(u) = self.upstream.as_ref() else {
            return self.config_findings();
        };
        let doc = match u.discovery(&self.paths.discovery).await {
            Ok(doc) => doc,
            Err(e) => {
                return vec![Finding {
                    problem: format!(
                        "the provider's discovery at {}{} cannot be read: {e}",
                        u.url().as_str().trim_end_matches('/'),
                        self.paths.discovery
                    ),
                    fix: "check `upstream.url` (the provider's own origin), the issuer's path (discovery is read at `{issuer path}/.well-known/openid-configuration`) or `endpoints.discovery`".into(),
                }];
            }
        };
        self.paths.learn(&doc);
        let mut found = self.config_findings();
        found.extend(self.discovery.audit(&doc, &self.cfg));
        if let Err(e) = u.jwks_keys(&self.paths.discovery).await {
            found.push(Finding {
                problem: format!("the provider's JWKS cannot be read: {e}"),
                fix: "check the provider's `jwks_uri`: the gateway fetches its path from `upstream.url`".into(),
            });
        }
        found
    }

    /// Whether an upstream provider is configured. With one, the engine serves discovery and the
    /// JWKS itself (from the upstream's, merged); adapters then never ask their inner service.
    pub fn has_upstream(&self) -> bool {
        self.upstream.is_some()
    }

    /// How far the notification of a live request got.
    pub async fn delivery(&self, auth_req_id: &str) -> Option<crate::store::Delivery> {
        use crate::store::PendingStore as _;
        self.store.delivery(auth_req_id).await
    }

    /// The upstream provider, if configured.
    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// The changes a request needs before it is forwarded (BCP-05): untrusted inbound
    /// forwarding and client-certificate headers removed; `Host` and fresh forwarding headers
    /// per the upstream configuration. `peer` is the address the gateway saw, `tls` whether the
    /// client connection was TLS.
    pub fn header_edits(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        tls: bool,
    ) -> HeaderEdits {
        match &self.upstream {
            Some(u) => u.header_edits(headers, peer, tls),
            None => HeaderEdits {
                remove: crate::upstream::untrusted_present(headers),
                set: Vec::new(),
            },
        }
    }

    /// The answer to a request for one of the gateway's endpoints whose body is over
    /// `limits.max_body_bytes`: 413 in JSON (GW-07).
    pub fn body_too_large(&self) -> Response<Bytes> {
        let mut r = crate::protocol::OAuthError::invalid_request(
            "the request body is too large or unreadable",
        )
        .into_response();
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        r
    }

    /// Whether a warning that a flood could repeat may be logged now: `Some(suppressed)` at most
    /// once per `key` every 10 seconds, with the number of lines held back since; `None`
    /// otherwise. Adapters use it for their own per-request failures.
    pub fn log_allowed(&self, key: &str) -> Option<u64> {
        self.log_throttle.allow(key)
    }

    /// The answer to a request for one of the gateway's endpoints whose body could not be read
    /// (a malformed chunked encoding, a connection error): 400 in JSON.
    pub fn body_unreadable(&self) -> Response<Bytes> {
        crate::protocol::OAuthError::invalid_request("the request body could not be read")
            .into_response()
    }

    /// How long a request body may take to arrive in full (`limits.body_read_timeout_secs`).
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.limits.body_read_timeout_secs)
    }

    /// The answer to a request whose body did not arrive within [`Engine::body_read_timeout`]:
    /// 408 in JSON, and the connection is not worth keeping.
    pub fn body_timed_out(&self) -> Response<Bytes> {
        let mut r =
            crate::protocol::OAuthError::invalid_request("the request body did not arrive in time")
                .into_response();
        *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }

    /// The answer when a forwarded request fails: 504 on a timeout, 502 otherwise, in JSON.
    pub fn upstream_failure(&self, timeout: bool) -> Response<Bytes> {
        use crate::protocol::{ErrorCode, OAuthError};
        let (status, text) = if timeout {
            (
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream provider did not answer in time",
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                "the upstream provider could not be reached",
            )
        };
        OAuthError::new(ErrorCode::ServerError, status)
            .describe(text)
            .into_response()
    }

    async fn upstream_discovery(&self) -> Response<Bytes> {
        match self.upstream_discovery_document().await {
            // GW-02: clients validate ID tokens against jwks_uri; the gateway's JWKS carries
            // the upstream's keys and its own.
            Some(Ok(doc)) => cached_json(self.discovery.merge(
                (*doc).clone(),
                &self.paths.shared(),
                true,
            )),
            Some(Err(e)) => upstream_unavailable(self, &e),
            None => self.discovery.standalone(),
        }
    }

    async fn merged_jwks(&self, u: &Upstream) -> Response<Bytes> {
        match u.jwks_keys(&self.paths.discovery).await {
            Ok(upstream_keys) => {
                let own: serde_json::Value =
                    serde_json::from_slice(self.minter.keys().jwks()).expect("our JWKS is JSON");
                let mut keys = (*upstream_keys).clone();
                if let Some(own) = own["keys"].as_array() {
                    keys.extend(own.iter().cloned());
                }
                cached_json(Bytes::from(serde_json::json!({ "keys": keys }).to_string()))
            }
            Err(e) => upstream_unavailable(self, &e),
        }
    }

    /// The gateway's own complete discovery document.
    pub fn standalone_discovery(&self) -> Response<Bytes> {
        self.discovery.standalone()
    }
}

fn upstream_unavailable(engine: &Engine, e: &UpstreamError) -> Response<Bytes> {
    if let Some(suppressed) = engine.log_allowed("upstream unavailable") {
        tracing::warn!(error = %e, suppressed, "upstream provider unavailable");
    }
    crate::protocol::OAuthError::unavailable("the upstream provider is unavailable", 5)
        .into_response()
}

/// A JSON response that must not be cached (OA-04, TOK-08).
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// A public JSON document that clients may cache briefly (discovery, JWKS).
pub(crate) fn cached_json(body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

impl Engine {
    /// The standalone gateway's answer for what it does not serve: a token request with another
    /// grant type is `unsupported_grant_type`; anything else is 404.
    pub fn not_served(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Bytes> {
        use crate::protocol::{ErrorCode, OAuthError};
        let shared = self.paths.shared();
        if path == shared.token {
            let e = if method != Method::POST {
                OAuthError::method_not_allowed()
            } else if let Err(e) = crate::protocol::form::require_form_content_type(headers) {
                e
            } else {
                OAuthError::bad_request(ErrorCode::UnsupportedGrantType)
                    .describe("this gateway only serves the CIBA grant")
            };
            return e.into_response();
        }
        if path == shared.userinfo {
            return OAuthError::invalid_token("the access token was not issued by this gateway")
                .into_response();
        }
        OAuthError::new(ErrorCode::InvalidRequest, StatusCode::NOT_FOUND)
            .describe("no such endpoint")
            .into_response()
    }
}
