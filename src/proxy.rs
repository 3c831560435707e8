//! The pingora adapter: [`CibaModule`], CIBA for a pingora proxy you own, and [`CibaProxy`],
//! the ready-made proxy the `ciba-gateway` binary runs.
//!
//! # In your own proxy
//!
//! Keep your `ProxyHttp` — its routing, its `LoadBalancer`, its other phases — and call the
//! module from two of them:
//!
//! - `request_filter`: [`CibaModule::request_filter`] answers the gateway's endpoints (the
//!   backchannel endpoint, the CIBA grant at the shared token endpoint, discovery, JWKS, the
//!   approval pages) and returns `Ok(false)` for everything else, which your proxy forwards as
//!   it always has. A token request with another grant is handed back too, and pingora replays
//!   the very bytes the client sent.
//! - `upstream_request_filter`: [`CibaModule::upstream_request_filter`] removes the forwarding
//!   and client-certificate headers a client must not be able to forge and sets fresh ones
//!   (BCP-05), and sets the gateway's `traceparent` ([`crate::trace`]).
//!
//! Optionally, `request_body_filter` ([`CibaModule::request_body_filter`]: a total deadline for
//! forwarded bodies), `fail_to_proxy` ([`CibaModule::fail_to_proxy`]: JSON 502/504 answers),
//! `upstream_response_filter` ([`CibaModule::upstream_response_filter`]: forwarded requests in
//! the metrics) and `logging` ([`CibaModule::logging`]: a forwarded request's span ends with its
//! status). Keep a [`CibaCtx`] in your context.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use ciba_gateway::proxy::{CibaCtx, CibaModule};
//! use ciba_gateway::{Config, Engine};
//! use pingora::prelude::*;
//! use pingora::http::RequestHeader;
//! use pingora::lb::{LoadBalancer, selection::RoundRobin};
//!
//! struct MyProxy {
//!     nodes: Arc<LoadBalancer<RoundRobin>>,
//!     ciba: CibaModule,
//! }
//!
//! #[async_trait]
//! impl ProxyHttp for MyProxy {
//!     type CTX = CibaCtx;
//!     fn new_ctx(&self) -> CibaCtx {
//!         CibaCtx::default()
//!     }
//!
//!     async fn request_filter(&self, session: &mut Session, ctx: &mut CibaCtx) -> Result<bool> {
//!         // Your own rules first, if any; then CIBA.
//!         self.ciba.request_filter(session, ctx).await
//!     }
//!
//!     async fn upstream_peer(&self, _: &mut Session, _: &mut CibaCtx) -> Result<Box<HttpPeer>> {
//!         let node = self.nodes.select(b"", 256).ok_or_else(|| Error::new(ErrorType::ConnectNoRoute))?;
//!         Ok(Box::new(HttpPeer::new(node, false, "idp.example.com".into())))
//!     }
//!
//!     async fn upstream_request_filter(
//!         &self,
//!         session: &mut Session,
//!         upstream_request: &mut RequestHeader,
//!         _: &mut CibaCtx,
//!     ) -> Result<()> {
//!         self.ciba.upstream_request_filter(session, upstream_request)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::new(Config::load("config/upstream.yaml")?)?);
//! let nodes = Arc::new(LoadBalancer::try_from_iter(["10.0.0.1:8080", "10.0.0.2:8080"])?);
//! let proxy = MyProxy { nodes, ciba: CibaModule::new(engine) };
//! # let _ = proxy; Ok(()) }
//! ```
//!
//! `examples/pingora_module.rs` is this, complete: two provider nodes behind a health-checked
//! load balancer, run by pingora's `Server`.
//!
//! # Ready-made
//!
//! [`CibaProxy`] is the module in a `ProxyHttp` of its own, forwarding to `upstream.url` (or
//! round robin over `upstream.nodes`, health-checked, a failed connection retried on the next
//! node): what the binary's pingora runtime serves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::LoadBalancer;
use pingora::lb::selection::RoundRobin;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::conn_limit::{Connections, InFlight};
use crate::engine::{Engine, EngineRequest, Outcome};
use crate::protocol::OAuthError;
use crate::trace::TraceContext;

/// CIBA for a pingora `ProxyHttp`: call its methods from your proxy's phases (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct CibaModule {
    engine: Arc<Engine>,
}

/// What the module keeps for one request: put one in your proxy's `CTX` (or use it as the
/// `CTX`) and hand it to the module's methods.
#[derive(Debug, Default)]
pub struct CibaCtx {
    /// When the request body must have arrived.
    body_deadline: Option<tokio::time::Instant>,
    /// A forwarded request's span (crate::trace), from `request_filter` to `logging`.
    forwarded: Option<crate::engine::Traced>,
}

impl CibaModule {
    /// The module, driven by `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Call from `request_filter`. Answers the request if it is the gateway's and returns
    /// `Ok(true)` (return that from your `request_filter`); returns `Ok(false)` for anything
    /// else, to be proxied as usual. A request's body, once read here, is replayed upstream
    /// unchanged if the request is handed back.
    pub async fn request_filter(&self, session: &mut Session, ctx: &mut CibaCtx) -> Result<bool> {
        ctx.body_deadline = Some(tokio::time::Instant::now() + self.engine.body_read_timeout());
        if !self.engine.is_warm() {
            self.engine.warm_up().await;
        }
        let head = session.req_header();
        let Some(route) = self
            .engine
            .route(&head.method, head.uri.path(), &head.headers)
        else {
            self.forwarding(session, ctx);
            return Ok(false);
        };
        // Keep what we read, so that a request handed back is forwarded with the same bytes.
        session.as_mut().enable_retry_buffering();
        let read = read_body(session, self.engine.max_body_bytes());
        let body = match tokio::time::timeout(self.engine.body_read_timeout(), read).await {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => {
                respond(session, self.engine.body_too_large()).await?;
                return Ok(true);
            }
            // pingora's own per-read timeout may fire first: the body is just as late.
            Ok(Err(e)) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                session.as_mut().set_keepalive(None);
                respond(session, self.engine.body_timed_out()).await?;
                return Ok(true);
            }
            Ok(Err(e)) => {
                // The client's body could not be read (a malformed chunk, a reset).
                tracing::debug!(error = %e, "request body unreadable");
                session.as_mut().set_keepalive(None);
                respond(session, self.engine.body_unreadable()).await?;
                return Ok(true);
            }
            Err(_) => {
                session.as_mut().set_keepalive(None);
                respond(session, self.engine.body_timed_out()).await?;
                return Ok(true);
            }
        };
        let connection = connection(session);
        let head = session.req_header();
        let req = EngineRequest {
            method: head.method.clone(),
            uri: head.uri.clone(),
            headers: head.headers.clone(),
            body,
            connection,
        };
        match self.engine.handle(route, req).await {
            Outcome::Respond(resp) => {
                respond(session, resp).await?;
                Ok(true)
            }
            Outcome::Forward(_) => {
                self.forwarding(session, ctx);
                Ok(false)
            }
        }
    }

    /// Opens the span of a request that is forwarded (crate::trace); the request header
    /// carries its context to `upstream_request_filter` (pingora copies the extensions into
    /// the upstream request).
    fn forwarding(&self, session: &mut Session, ctx: &mut CibaCtx) {
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let head = session.req_header();
        let traced = self
            .engine
            .open_trace("forwarded", &head.method, &head.headers, peer);
        session
            .req_header_mut()
            .extensions_mut()
            .insert(traced.ctx());
        ctx.forwarded = Some(traced);
    }

    /// Call from `logging` (optional): closes a forwarded request's span with the status that
    /// was answered (without it, the span ends without one when the context is dropped).
    pub fn logging(&self, session: &Session, ctx: &mut CibaCtx) {
        if let Some(traced) = ctx.forwarded.take() {
            let status = session.response_written().map(|r| r.status);
            self.engine.close_trace(traced, status);
        }
    }

    /// Call from `request_body_filter` (optional): a forwarded body must arrive in full within
    /// `limits.body_read_timeout_secs` (pingora times each read; a body trickled in small
    /// chunks would otherwise never end).
    pub fn request_body_filter(&self, ctx: &CibaCtx) -> Result<()> {
        match ctx.body_deadline {
            Some(d) if tokio::time::Instant::now() > d => {
                Err(Error::explain(ErrorType::ReadTimedout, "request body too slow").into_down())
            }
            _ => Ok(()),
        }
    }

    /// Call from `upstream_request_filter`: the header edits every forwarded request needs
    /// (BCP-05): inbound forwarding and client-certificate headers removed, `Host` and fresh
    /// forwarding headers per `upstream`.
    pub fn upstream_request_filter(
        &self,
        session: &Session,
        upstream_request: &mut RequestHeader,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let edits = || {
            self.engine
                .header_edits(&upstream_request.headers, peer, tls)
        };
        // In the forwarded request's span, if `request_filter` opened one.
        let edits = match upstream_request.extensions.get::<TraceContext>() {
            Some(t) => t.in_scope(edits),
            None => edits(),
        };
        for name in &edits.remove {
            upstream_request.remove_header(name);
        }
        for (name, value) in edits.set {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    /// Call from `upstream_response_filter` (optional): counts the forwarded request by the
    /// class of the provider's answer (`ciba_passthrough_total`, [`crate::metrics`]).
    pub fn upstream_response_filter(&self, upstream_response: &ResponseHeader) {
        crate::metrics::passthrough(upstream_response.status.as_u16());
    }

    /// Call from `fail_to_proxy` (optional): answers in the OAuth JSON format (502, or 504 on a
    /// timeout; 408 when the client's body was too slow) instead of pingora's empty error page.
    pub async fn fail_to_proxy(&self, session: &mut Session, e: &Error) -> FailToProxy {
        let timeout = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        // The client's body stopped arriving: its fault, not the provider's.
        let client_slow = *e.esource() == pingora::ErrorSource::Downstream
            && matches!(e.etype(), ErrorType::ReadTimedout);
        let code = match e.etype() {
            _ if client_slow => 408,
            ErrorType::HTTPStatus(c) => *c,
            _ if timeout => 504,
            _ => 502,
        };
        let resp = if client_slow {
            self.engine.body_timed_out()
        } else if code == 502 || code == 504 {
            self.engine.upstream_failure(timeout)
        } else {
            let mut r =
                OAuthError::invalid_request("the request could not be processed").into_response();
            *r.status_mut() =
                http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST);
            r
        };
        // pingora will not reuse this connection: turn keep-alive off so the answer carries
        // `Connection: close`, or a client may send its next request on a closing connection.
        session.as_mut().set_keepalive(None);
        let _ = respond(session, resp).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// What the session knows of its connection: the peer, TLS, and the client certificate the
/// TLS handshake kept ([`ClientCertificates`] on the listener).
fn connection(session: &Session) -> crate::Connection {
    let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
    crate::Connection {
        peer: session.client_addr().and_then(|a| a.as_inet()).copied(),
        tls: ssl.is_some(),
        client_certificate: ssl
            .and_then(|d| d.extension.get::<crate::ClientCertificate>())
            .cloned(),
    }
}

/// Keeps each TLS client's certificate chain for the module: set it as the listener's
/// callbacks (`TlsSettings::with_callbacks`), with a client certificate verifier that asks for
/// a certificate without requiring one (`TlsSettings::set_client_cert_verifier`), to let `tls_client_auth`, `self_signed_tls_client_auth` and
/// certificate-bound tokens see the certificates of a pingora TLS listener.
#[derive(Debug, Default)]
pub struct ClientCertificates;

#[async_trait]
impl pingora::listeners::TlsAccept for ClientCertificates {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der()?.to_vec();
        crate::ClientCertificate::new(chain).map(|c| Arc::new(c) as _)
    }
}

async fn respond(session: &mut Session, resp: Response<Bytes>) -> Result<()> {
    let (parts, body) = resp.into_parts();
    // The engine's headers as they are, not copied one by one into a case-preserving map:
    // pingora writes a standard header's name title-cased either way.
    let mut header = ResponseHeader::from(parts);
    header.set_content_length(body.len())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Reads the whole request body, at most `limit` bytes; `None` when it is larger.
async fn read_body(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    let mut buf = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(buf)))
}

/// The gateway as a whole pingora proxy: [`CibaModule`] in front of the upstream provider
/// (`upstream.url`, or round robin over `upstream.nodes` with a health check: run
/// [`CibaProxy::nodes`] beside it).
#[derive(Clone)]
pub struct CibaProxy {
    pub(crate) module: CibaModule,
    /// The connections the runtime watches (shared with `serve::pingora::Guarded`).
    pub(crate) conns: Arc<Connections>,
    /// The provider's nodes, resolved once: a per-request lookup would block the proxy's
    /// thread. Like nginx's `upstream` block without a `resolver`, addresses are fixed at
    /// start; restart to pick up a DNS change.
    nodes: Arc<LoadBalancer<RoundRobin>>,
    /// How many nodes there are (a failed connection is retried on each of the others).
    node_count: usize,
    tls: bool,
    sni: String,
    options: pingora::upstreams::peer::PeerOptions,
}

impl std::fmt::Debug for CibaProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CibaProxy")
            .field("nodes", &self.node_count)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// How often the ready-made proxy checks that each provider node accepts connections.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

impl CibaProxy {
    /// A proxy driven by `engine`, which must have an upstream whose nodes (or host) resolve.
    pub fn try_new(engine: Arc<Engine>) -> std::result::Result<Self, String> {
        let upstream = engine
            .upstream()
            .ok_or("CibaProxy needs an upstream in the configuration")?;
        let (host, port, tls) = upstream.address();
        let mut addrs = upstream.nodes().to_vec();
        if addrs.is_empty() {
            addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map_err(|_| format!("upstream host {host} does not resolve"))?
                .take(1)
                .collect();
        }
        let node_count = addrs.len();
        let mut nodes = LoadBalancer::<RoundRobin>::try_from_iter(addrs)
            .map_err(|e| format!("upstream nodes: {e}"))?;
        let mut check = pingora::lb::health_check::TcpHealthCheck::new();
        check.peer_template.options.connection_timeout = Some(Duration::from_secs(1));
        nodes.set_health_check(check);
        nodes.health_check_frequency = Some(HEALTH_CHECK_EVERY);
        let cfg = upstream.config();
        let mut options = pingora::upstreams::peer::PeerOptions::new();
        options.connection_timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
        options.read_timeout = Some(Duration::from_millis(cfg.read_timeout_ms));
        options.idle_timeout = Some(Duration::from_secs(60));
        options.verify_cert = true;
        options.verify_hostname = true;
        // `upstream.ca_file`, as the engine loaded it: the same roots as its own requests.
        if !upstream.ca_certificates().is_empty() {
            use pingora::utils::tls::{WrappedX509, parse_x509};
            let ca: Vec<WrappedX509> = upstream
                .ca_certificates()
                .iter()
                .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
                .collect();
            options.ca = Some(Arc::from(ca));
        }
        Ok(Self {
            conns: Arc::new(Connections::new(&engine.config().server)),
            module: CibaModule::new(engine),
            nodes: Arc::new(nodes),
            node_count,
            tls,
            // Never an empty SNI: pingora's rustls connector skips verification without one.
            sni: host,
            options,
        })
    }

    /// The provider's nodes, as a pingora load balancer that checks its nodes' health every
    /// second once it runs as a background service:
    /// `GenBackgroundService::new("health checks".into(), Arc::clone(proxy.nodes()))` beside
    /// the proxy (the binary does this). Until then every node counts as healthy.
    pub fn nodes(&self) -> &Arc<LoadBalancer<RoundRobin>> {
        &self.nodes
    }
}

#[async_trait]
impl ProxyHttp for CibaProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    /// No downstream modules: pingora's default adds a response-compression module that is
    /// disabled yet still built and consulted on every request. The gateway passes the
    /// upstream's encoding through untouched.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Marks the request in flight for `serve::pingora::Guarded`, and sets the limits pingora
    /// offers per session: idle keep-alive connections close after `server.idle_timeout_secs`;
    /// each read of the request may wait at most `server.header_read_timeout_secs` (pingora
    /// times single reads, not whole headers; `serve::pingora::Guarded` closes a connection
    /// that has had no request in flight for the idle timeout, slow headers included).
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.in_flight = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .and_then(|peer| self.conns.get(peer))
            .map(|a| a.request());
        let server = &self.module.engine.config_now().server;
        let s = session.as_mut();
        s.set_keepalive(Some(server.idle_timeout_secs));
        s.set_read_timeout(Some(Duration::from_secs(server.header_read_timeout_secs)));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.module.request_filter(session, &mut ctx.ciba).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.module.request_body_filter(&ctx.ciba)
    }

    /// The next healthy node in turn (any node when none is known to be healthy: a health
    /// check that is wrong must not make things worse than trying).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let node = self
            .nodes
            .select(b"", self.node_count)
            .or_else(|| self.nodes.select_with(b"", self.node_count, |_, _| true))
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream node"))?;
        let mut peer = HttpPeer::new(node, self.tls, self.sni.clone());
        peer.options = self.options.clone();
        Ok(Box::new(peer))
    }

    /// A node that refuses the connection is skipped: the request is tried on the next one
    /// (each node once), before the health check has noticed.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.tries + 1 < self.node_count {
            ctx.tries += 1;
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.module
            .upstream_request_filter(session, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.module.upstream_response_filter(upstream_response);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.module.fail_to_proxy(session, e).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.module.logging(session, &mut ctx.ciba);
    }
}

/// What [`CibaProxy`] keeps for one request.
#[derive(Debug, Default)]
pub struct RequestCtx {
    ciba: CibaCtx,
    /// The request in flight on its connection (see `serve::pingora::Guarded`), until the
    /// request ends.
    in_flight: Option<InFlight>,
    /// Connections to provider nodes that failed for this request.
    tries: usize,
}
