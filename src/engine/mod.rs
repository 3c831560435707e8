//! The protocol engine: transport-agnostic. Adapters (the tower layer and the pingora module)
//! hand it a buffered [`EngineRequest`] and get back either a response or the request itself,
//! untouched, to forward to the upstream. The whole contract an adapter works to is in
//! `adapter.rs`; each endpoint is a flow in its own file (`backchannel.rs`, `token.rs`,
//! `approval.rs`, `upstream_login.rs`, `callback.rs`, `userinfo.rs`) holding only the
//! components it uses; every decision on a pending request goes through `decide.rs`.

mod adapter;
mod approval;
mod auth_request;
mod backchannel;
mod callback;
mod client_auth;
mod decide;
mod discovery;
mod hint_token;
mod issue;
mod pages;
mod paths;
mod registration;
mod reload;
mod shutdown;
mod token;
mod traced;
mod upstream_login;
mod userinfo;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use crate::channel::Channel;
use crate::clients::ClientRegistry;
use crate::clock::{Clock, SystemClock};
use crate::config::{ApprovalMode, Config, ConfigError, ConfigErrors};
use crate::live::Live;
use crate::protocol::OAuthError;
use crate::store::{Store, StoreError};
use crate::tokens::{KeySet, Minter};
use crate::upstream::{Upstream, UpstreamError};
use crate::users::UserDirectory;

pub use crate::protocol::json_response;
pub use adapter::WrappedDiscovery;
pub use discovery::Finding;
pub(crate) use pages::Pages;
pub use paths::{Paths, SharedPaths};
pub use reload::{RELOADABLE, Reloaded};
#[cfg(feature = "pingora")]
pub(crate) use traced::Traced;

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
    /// What the adapter knows of the client's connection.
    pub connection: Connection,
}

/// What an adapter knows of a request's connection (the tower runtime attaches one to every
/// request as an extension, which [`crate::CibaLayer`] reads; an application's own server may
/// attach one too).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The peer's address.
    pub peer: Option<std::net::SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's TLS certificate, when its connection presented one (RFC 8705).
    pub client_certificate: Option<crate::tls::ClientCertificate>,
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
    /// Client registration (RFC 7591) and registered clients' configuration (RFC 7592).
    Registration,
}

impl Route {
    /// The route's `endpoint` label in the metrics ([`crate::metrics`]): the approval page and
    /// the steps of a login at the provider count as one endpoint.
    pub const fn metric_label(self) -> &'static str {
        match self {
            Self::Backchannel => "backchannel",
            Self::Token => "token",
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Userinfo => "userinfo",
            Self::Approval | Self::LoginCallback | Self::Consent => "approval",
            Self::ChannelCallback => "channel_callback",
            Self::Registration => "registration",
            Self::Health => "health",
        }
    }
}

/// The components the flows share, built once from the configuration. Each flow takes from it
/// only what it uses, so a flow's type shows what it can touch.
struct Shared {
    cfg: Config,
    issuer: String,
    clock: Arc<dyn Clock>,
    clients: Arc<ClientRegistry>,
    users: Arc<Live<UserDirectory>>,
    store: Arc<Store>,
    channel: Arc<Live<Channel>>,
    minter: Arc<Live<Minter>>,
    pages: Arc<Pages>,
    upstream: Option<Arc<Upstream>>,
    paths: Arc<Paths>,
    notifier: Arc<crate::channel::ClientNotifier>,
    /// Set when the engine shuts down: held polls answer at once, background loops end.
    shutdown: Arc<shutdown::Shutdown>,
    /// The trusted issuers of `login_hint_token`s.
    hint_issuers: Arc<hint_token::HintIssuers>,
}

/// The CIBA protocol engine. Cheap to share: wrap it in an `Arc`. What an adapter may ask of it
/// is in `adapter.rs`; each endpoint's flow holds only its own dependencies.
pub struct Engine {
    /// The configuration in force: the one the engine was built with, then each accepted
    /// reload's.
    cfg: Live<Config>,
    /// Held while a reload runs.
    reloading: std::sync::Mutex<()>,
    issuer: String,
    paths: Arc<Paths>,
    upstream: Option<Arc<Upstream>>,
    /// The channel (its kind decides whether the channel callback route exists).
    channel: Arc<Live<Channel>>,
    clients: Arc<ClientRegistry>,
    users: Arc<Live<UserDirectory>>,
    clock: Arc<dyn Clock>,
    /// The listener's TLS, for the runtimes (loaded without them too: see `ListenerTls`).
    #[cfg_attr(not(any(feature = "server", feature = "pingora")), allow(dead_code))]
    tls: Option<crate::tls::ListenerTls>,
    shutdown: Arc<shutdown::Shutdown>,
    store: Arc<Store>,
    minter: Arc<Live<Minter>>,
    discovery: discovery::Discovery,
    /// The address of the provider's discovery copy last audited.
    audited: std::sync::atomic::AtomicUsize,
    /// Set once the engine's first run-time work was done: the provider's discovery read (or
    /// failed), the shared store's expiry sweep started.
    warmed: tokio::sync::OnceCell<()>,
    decisions: Arc<decide::Decisions>,
    backchannel: backchannel::Backchannel,
    token: token::TokenEndpoint,
    approval: approval::ApprovalPages,
    login: Option<Arc<upstream_login::UpstreamLogin>>,
    channel_callback: callback::ChannelCallback,
    userinfo: userinfo::Userinfo,
    registration: Option<registration::Registration>,
    tracing: traced::Tracing,
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

    /// Builds an engine on the given clock (tests use [`crate::clock::ManualClock`]). Every
    /// problem is reported at once: the configuration's rules, then whatever the components
    /// find loading their keys and secrets (each loaded once, by the component that owns it).
    pub fn with_clock(cfg: Config, clock: Arc<dyn Clock>) -> Result<Self, ConfigErrors> {
        // The outbound clients need a rustls provider: ring, unless the application chose one.
        crate::install_crypto_provider();
        // Shape first, then what the components load; both kinds are reported together.
        let mut problems = cfg.validate();
        let keys = take(&mut problems, KeySet::from_config(&cfg.tokens));
        let upstream = match &cfg.upstream {
            Some(u) => {
                take(&mut problems, Upstream::new(u, &cfg.public_url)).map(|u| Some(Arc::new(u)))
            }
            None => Some(None),
        };
        let clients = take(&mut problems, ClientRegistry::from_config(&cfg));
        let users = take(&mut problems, UserDirectory::from_config(&cfg.users));
        let issuer = cfg.issuer();
        let channel = take(
            &mut problems,
            Channel::from_config(&cfg.channel, &issuer, Arc::clone(&clock)),
        );
        let notifier = take(
            &mut problems,
            crate::channel::ClientNotifier::from_config(&cfg.ciba.client_notifications),
        );
        let paths = Arc::new(Paths::new(&cfg));
        let pages = take(&mut problems, Pages::new(&cfg, &paths));
        let store = take(
            &mut problems,
            Store::from_config(&cfg.store, cfg.registration.enabled),
        );
        let hint_issuers = take(&mut problems, hint_token::HintIssuers::from_config(&cfg));
        let initial_token = match &cfg.registration.initial_access_token {
            Some(r) if cfg.registration.enabled => take(
                &mut problems,
                crate::config::resolve_verifier(r)
                    .map_err(|m| ConfigError::new("registration.initial_access_token", m)),
            )
            .map(Some),
            _ => Some(None),
        };
        // The binary sends the audit trail with this key; `check` reports it as `serve` does.
        if let Some(w) = &cfg.audit.webhook {
            take(
                &mut problems,
                crate::channel::webhook_key(&w.secret)
                    .map_err(|m| ConfigError::new("audit.webhook.secret", m)),
            );
        }
        let tls = match &cfg.tls {
            Some(t) => take(
                &mut problems,
                crate::tls::ListenerTls::load(t, cfg.mtls.request_certificates),
            )
            .map(Some),
            None => Some(None),
        };
        let (
            Some(keys),
            Some(upstream),
            Some(clients),
            Some(users),
            Some(channel),
            Some(tls),
            Some(notifier),
            Some(pages),
            Some(store),
            Some(hint_issuers),
        ) = (
            keys,
            upstream,
            clients,
            users,
            channel,
            tls,
            notifier,
            pages,
            store,
            hint_issuers,
        )
        else {
            return Err(ConfigErrors(problems));
        };
        let Some(initial_token) = initial_token else {
            return Err(ConfigErrors(problems));
        };
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let store = Arc::new(store);
        // The configuration registered clients are built and checked against: one copy, for
        // the registry and the registration endpoint.
        let registered_cfg = cfg.registration.enabled.then(|| Arc::new(cfg.clone()));
        let clients = match &registered_cfg {
            Some(c) => clients.with_registered(Arc::clone(c), Arc::clone(&store)),
            None => clients,
        };
        let discovery = discovery::Discovery::new(&cfg, &issuer, &paths, &keys);
        let shared = Shared {
            minter: Arc::new(Live::new(Minter::new(keys, issuer.clone(), &cfg.tokens))),
            pages: Arc::new(pages),
            clients: Arc::new(clients),
            users: Arc::new(Live::new(users)),
            store,
            channel: Arc::new(Live::new(channel)),
            upstream,
            paths,
            notifier: Arc::new(notifier),
            shutdown: Arc::new(shutdown::Shutdown::default()),
            hint_issuers: Arc::new(hint_issuers),
            clock,
            issuer,
            cfg,
        };
        let issuance = Arc::new(issue::TokenIssuance::new(&shared));
        let decisions = Arc::new(decide::Decisions::new(&shared, &issuance));
        let login = (shared.cfg.approval.mode == ApprovalMode::Upstream)
            .then_some(shared.upstream.as_ref())
            .flatten()
            .map(|u| Arc::new(upstream_login::UpstreamLogin::new(&shared, u, &decisions)));
        Ok(Self {
            registration: registered_cfg
                .map(|c| registration::Registration::new(&shared, initial_token, c)),
            backchannel: backchannel::Backchannel::new(&shared, &decisions),
            token: token::TokenEndpoint::new(&shared, &issuance),
            approval: approval::ApprovalPages::new(&shared, &decisions, login.clone()),
            channel_callback: callback::ChannelCallback::new(&shared, &decisions),
            userinfo: userinfo::Userinfo::new(&shared),
            login,
            channel: shared.channel,
            clients: shared.clients,
            users: shared.users,
            clock: shared.clock,
            tls,
            discovery,
            audited: std::sync::atomic::AtomicUsize::new(0),
            warmed: tokio::sync::OnceCell::new(),
            decisions,
            shutdown: Arc::clone(&shared.shutdown),
            store: shared.store,
            minter: shared.minter,
            upstream: shared.upstream,
            paths: shared.paths,
            issuer: shared.issuer,
            tracing: traced::Tracing::new(&shared.cfg.trace),
            cfg: Live::new(shared.cfg),
            reloading: std::sync::Mutex::new(()),
        })
    }

    /// The configuration in force: the one the engine was built with, or the last one
    /// [`Engine::reload`] accepted (the runtimes read `server.*`, `tls` and `listen` from it,
    /// which a reload never changes).
    pub fn config(&self) -> Arc<Config> {
        self.cfg.current()
    }

    /// The configuration in force, for a short look on a request's path (no reference count
    /// taken, unlike [`Engine::config`]).
    #[cfg(feature = "pingora")]
    pub(crate) fn config_now(&self) -> arc_swap::Guard<Arc<Config>> {
        self.cfg.get()
    }

    /// Whether the channel callback route exists (the HTTP authentication channel's).
    fn has_channel_callback(&self) -> bool {
        matches!(**self.channel.get(), Channel::Http(_))
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The endpoint paths in force.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// TLS for the listener (`tls:`), loaded when the engine was built; `None` for plain TCP.
    #[cfg(any(feature = "server", feature = "pingora"))]
    pub(crate) fn listener_tls(&self) -> Option<&crate::tls::ListenerTls> {
        self.tls.as_ref()
    }

    /// The upstream provider, if configured (the runtimes take its address and TLS roots).
    #[cfg(any(feature = "server", feature = "pingora"))]
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_deref()
    }

    /// How many token requests are being held now (long polling, `ciba.long_poll_secs`).
    pub fn held_polls(&self) -> usize {
        self.token
            .held
            .all
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Answers every poll held now (long polling) with what it would get at the end of its
    /// hold — `authorization_pending`, unless the user decided meanwhile — so that its
    /// connection becomes quiet and can be closed to make room: a runtime at
    /// `server.max_connections` with no quiet connection left calls this. Returns how many were
    /// held.
    pub fn reclaim_held_polls(&self) -> usize {
        let n = self.token.held.reclaim();
        crate::metrics::held_polls_reclaimed(n);
        n
    }

    /// How far the notification of a live request got.
    pub async fn delivery(&self, auth_req_id: &str) -> Option<crate::store::Delivery> {
        use crate::store::PendingStore as _;
        self.store
            .delivery(auth_req_id)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "delivery state could not be read"))
            .ok()
            .flatten()
    }

    /// Handles a request on one of the gateway's routes, and counts and times it
    /// ([`crate::metrics`]).
    ///
    /// The request runs in a span of its trace ([`crate::trace`]): the caller's, if it may
    /// choose it (`trace.accept_traceparent_from`), a new one otherwise.
    pub async fn handle(&self, route: Route, req: EngineRequest) -> Outcome {
        let traced = self.open_trace(
            route.metric_label(),
            &req.method,
            &req.headers,
            req.connection.peer,
        );
        let outcome = traced.run(self.answer(route, req)).await;
        let status = match &outcome {
            Outcome::Respond(resp) => Some(resp.status()),
            Outcome::Forward(_) => None,
        };
        let took = self.close_trace(traced, status);
        if let Outcome::Respond(resp) = &outcome {
            let label = crate::metrics::outcome(resp.status(), resp.body());
            crate::metrics::request(route.metric_label(), label, took);
        }
        outcome
    }

    /// Sets the gauges the metrics read at a scrape: held polls, pending requests (memory
    /// store).
    pub fn record_gauges(&self) {
        metrics::gauge!("ciba_held_polls").set(self.held_polls() as f64);
        if let Some(n) = self.store.held_in_memory() {
            metrics::gauge!("ciba_pending_requests").set(n as f64);
        }
    }

    /// Readiness: whether the store can be reached.
    pub async fn ready(&self) -> bool {
        self.store.health().await.is_ok()
    }

    async fn answer(&self, route: Route, req: EngineRequest) -> Outcome {
        // Every flow but the token endpoint's is boxed: a held long poll keeps this future for
        // as long as it waits, and an enum's size is its largest variant's, so the other
        // flows' (larger, once-per-request) state machines stay out of every held poll.
        let resp = match route {
            Route::Token => return self.token.handle(req).await,
            Route::Backchannel => Box::pin(self.backchannel.handle(&req)).await,
            Route::Discovery => Box::pin(self.upstream_discovery()).await,
            Route::Jwks => match &self.upstream {
                Some(u) => Box::pin(self.merged_jwks(u)).await,
                None => cached_json(self.minter.get().keys().jwks(self.clock.now_secs()).clone()),
            },
            Route::Userinfo => return Box::pin(self.userinfo.handle(req)).await,
            Route::LoginCallback if req.method == Method::GET && self.login.is_some() => {
                Box::pin(self.login.as_ref().unwrap().callback(&req)).await
            }
            Route::Consent if req.method == Method::POST && self.login.is_some() => {
                Box::pin(self.login.as_ref().unwrap().consent(&req)).await
            }
            // Otherwise these segments are handles like any other (and never valid ones).
            Route::Approval | Route::LoginCallback | Route::Consent => {
                Box::pin(self.approval.handle(&req)).await
            }
            Route::ChannelCallback => Box::pin(self.channel_callback.handle(&req)).await,
            Route::Registration => match &self.registration {
                Some(r) => Box::pin(r.handle(&req)).await,
                None => OAuthError::new(
                    crate::protocol::ErrorCode::InvalidRequest,
                    StatusCode::NOT_FOUND,
                )
                .into_response(),
            },
            // Readiness: a replica whose store cannot be reached should get no traffic.
            Route::Health => match Box::pin(self.store.health()).await {
                Ok(()) => json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
                Err(_) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(br#"{"status":"unavailable","store":"unreachable"}"#),
                ),
            },
        };
        Outcome::Respond(resp)
    }

    /// The provider's discovery document, fetched as the gateway fetches it (public `Host`,
    /// forwarding headers); every fresh copy updates the shared paths and is audited, and what
    /// will not work is logged. `None` without an upstream.
    pub(crate) async fn upstream_discovery_document(
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
            for f in self.discovery.audit(doc, &self.cfg.get()) {
                tracing::warn!(problem = %f.problem, fix = %f.fix, "upstream discovery");
            }
        }
        Some(fetched)
    }

    /// What will not work with this configuration whatever the provider says (`ciba-gateway
    /// check`), each with the change that fixes it.
    pub fn config_findings(&self) -> Vec<Finding> {
        let mut found = self.discovery.config_findings(&self.cfg.get());
        found.extend(shared_store_findings(&self.cfg.get()));
        found
    }

    /// Start-up checks of the store (logged by the binary): a shared store that evicts keys
    /// under memory pressure would drop live requests silently. Nothing is refused: a server
    /// that is down now is waited for.
    pub async fn check_store(&self) {
        for (level, message) in self.store.startup_check().await {
            match level {
                tracing::Level::ERROR => tracing::error!("{message}"),
                tracing::Level::WARN => tracing::warn!("{message}"),
                _ => tracing::info!("{message}"),
            }
        }
        for f in shared_store_findings(&self.cfg.get()) {
            tracing::warn!(fix = %f.fix, "{}", f.problem);
        }
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
        found.extend(self.discovery.audit(&doc, &self.cfg.get()));
        if let Err(e) = u.jwks_keys(&self.paths.discovery).await {
            found.push(Finding {
                problem: format!("the provider's JWKS cannot be read: {e}"),
                fix: "check the provider's `jwks_uri`: the gateway fetches its path from `upstream.url`".into(),
            });
        }
        found
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
            Some(Err(e)) => upstream_unavailable(&e),
            None => self.discovery.standalone(),
        }
    }

    async fn merged_jwks(&self, u: &Upstream) -> Response<Bytes> {
        match u.jwks_keys(&self.paths.discovery).await {
            Ok(upstream_keys) => {
                let own: serde_json::Value =
                    serde_json::from_slice(self.minter.get().keys().jwks(self.clock.now_secs()))
                        .expect("our JWKS is JSON");
                let mut keys = (*upstream_keys).clone();
                if let Some(own) = own["keys"].as_array() {
                    keys.extend(own.iter().cloned());
                }
                cached_json(Bytes::from(serde_json::json!({ "keys": keys }).to_string()))
            }
            Err(e) => upstream_unavailable(&e),
        }
    }
}

fn upstream_unavailable(e: &UpstreamError) -> Response<Bytes> {
    crate::metrics::upstream_error();
    tracing::warn!(error = %e, "upstream provider unavailable");
    crate::protocol::OAuthError::unavailable("the upstream provider is unavailable", 5)
        .into_response()
}

/// The value of a component's constructor, or `None` with its errors added to `problems`.
fn take<T, E: Into<ConfigErrors>>(problems: &mut Vec<ConfigError>, r: Result<T, E>) -> Option<T> {
    r.map_err(|e| problems.extend(e.into().0)).ok()
}

/// A public JSON document that clients may cache briefly (discovery, JWKS).
fn cached_json(body: Bytes) -> Response<Bytes> {
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

/// A store refusal or failure as the CIBA endpoints answer it: `503 temporarily_unavailable`
/// with `Retry-After` (the one place this mapping lives).
fn store_unavailable(e: StoreError) -> OAuthError {
    match e {
        StoreError::Full => OAuthError::unavailable(
            "the gateway holds as many pending requests and grants as it may; retry later",
            5,
        ),
        StoreError::Backend(m) => {
            crate::metrics::store_error();
            tracing::error!(error = %m, "the store failed");
            OAuthError::unavailable("the gateway's store is unavailable; retry later", 2)
        }
    }
}

/// Records a request's delivery state; a failure is logged (the state is informational: the
/// flow goes on without it).
async fn record_delivery(
    store: &Store,
    id: &crate::protocol::AuthReqId,
    d: crate::store::Delivery,
) {
    use crate::store::PendingStore as _;
    if let Err(e) = store.record_delivery(id, d).await {
        tracing::warn!(error = %e, "delivery state could not be recorded");
    }
}

/// What must be configured identically on every replica when the store is shared, and is
/// not: each replica would otherwise make up its own (issue 12, item 2).
fn shared_store_findings(cfg: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    if !cfg.store.is_shared() {
        return found;
    }
    if cfg.tokens.keys.is_empty() {
        found.push(Finding {
            problem: "the store is shared, and `tokens.keys` is empty: each replica signs with a key of its own, so tokens from one fail against another's JWKS".into(),
            fix: "give every replica the same `tokens.keys` (`ciba-gateway keygen`)".into(),
        });
    }
    // The pages' forms carry the CSRF token: only where pages are shown (the approval page of
    // the `log` and `notify` channels, the consent page after an upstream login).
    let pages = !matches!(cfg.channel, crate::config::ChannelConfig::Http { .. })
        || cfg.approval.mode == ApprovalMode::Upstream;
    if pages && cfg.approval.csrf_key.is_none() {
        found.push(Finding {
            problem: "the store is shared, and `approval.csrf_key` is not set: an approval page rendered by one replica is refused by another".into(),
            fix: "set `approval.csrf_key` (32+ characters, `${ENV}` or `file:`) identically on every replica".into(),
        });
    }
    if let crate::config::ChannelConfig::Http {
        bearer_secret: None,
        ..
    } = &cfg.channel
    {
        found.push(Finding {
            problem: "the store is shared, and `channel.bearer_secret` is not set: the authenticator's callback is refused by every replica but the one that sent the request".into(),
            fix: "set `channel.bearer_secret` identically on every replica".into(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replicas sharing a store need one CSRF key only where pages with forms are shown: not
    // with the HTTP authentication channel, whose authenticator decides.
    #[test]
    fn a_shared_csrf_key_only_where_pages_are_shown() {
        let findings = |channel: &str| {
            let cfg = Config::from_yaml(&format!(
                "public_url: http://gw\nstore: {{ type: redis, url: \"redis://127.0.0.1:1\" }}\nchannel: {channel}\n"
            ))
            .unwrap();
            shared_store_findings(&cfg)
                .into_iter()
                .map(|f| f.fix)
                .collect::<Vec<_>>()
        };
        let csrf = |f: &[String]| f.iter().any(|f| f.contains("approval.csrf_key"));
        assert!(csrf(&findings("{ type: log }")));
        let http = findings(
            "{ type: http, url: \"https://auth.example/authn\", bearer_secret: \"${HOME}\" }",
        );
        assert!(!csrf(&http), "{http:?}");
    }
}
