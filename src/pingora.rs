//! The pingora adapter: [`CibaProxy`], a [`ProxyHttp`] that answers the gateway's endpoints from
//! the engine and proxies everything else to the upstream provider.
//!
//! Each phase does one thing:
//! - `request_filter`: is the request the engine's? If so, buffer its body (capped) and let the
//!   engine answer. A token request with another grant is handed back: pingora replays the
//!   buffered bytes upstream unchanged (its retry buffer).
//! - `upstream_peer`: the configured provider, with SNI and certificate verification.
//! - `upstream_request_filter`: the engine's header edits (BCP-05 and forwarding headers).
//! - `fail_to_proxy`: a JSON 502/504 instead of an empty error page.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ciba_gateway::{Config, Engine, pingora::CibaProxy};
//! use pingora::server::Server;
//!
//! let engine = Arc::new(Engine::new(Config::load("config/upstream.yaml").unwrap()).unwrap());
//! let mut server = Server::new(None).unwrap();
//! server.bootstrap();
//! let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, CibaProxy::new(engine));
//! proxy.add_tcp("127.0.0.1:8080");
//! server.add_service(proxy);
//! server.run_forever();
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::conn_limit::{Connections, InFlight};
use crate::engine::{Engine, EngineRequest, Outcome};
use crate::protocol::OAuthError;

/// The gateway as a pingora proxy module.
#[derive(Debug, Clone)]
pub struct CibaProxy {
    engine: Arc<Engine>,
    /// The connections the runtime watches (shared with `serve::pingora::Guarded`).
    pub(crate) conns: Arc<Connections>,
    tls_listener: bool,
    /// The upstream, resolved once and built once: a per-request `HttpPeer::new(host)` would
    /// resolve the name on every request (a blocking lookup on the proxy's thread). Like
    /// nginx's `proxy_pass` without a `resolver`, the address is fixed at start; restart to
    /// pick up a DNS change.
    peer: HttpPeer,
}

impl CibaProxy {
    /// A proxy driven by `engine`.
    ///
    /// # Panics
    /// If the engine has no upstream or its host does not resolve; see [`CibaProxy::try_new`].
    pub fn new(engine: Arc<Engine>) -> Self {
        Self::try_new(engine).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A proxy driven by `engine`, which must have an upstream whose host resolves.
    pub fn try_new(engine: Arc<Engine>) -> std::result::Result<Self, String> {
        let upstream = engine
            .upstream()
            .ok_or("CibaProxy needs an upstream in the configuration")?;
        let (host, port, tls) = upstream.address();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("upstream host {host} does not resolve"))?;
        let cfg = upstream.config();
        // Never an empty SNI: pingora's rustls connector skips verification without one.
        let mut peer = HttpPeer::new(addr, tls, host);
        peer.options.connection_timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(cfg.read_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        // `upstream.ca_file`, as the engine loaded it: the same roots as its own requests.
        if !upstream.ca_certificates().is_empty() {
            use pingora::utils::tls::{WrappedX509, parse_x509};
            let ca: Vec<WrappedX509> = upstream
                .ca_certificates()
                .iter()
                .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
                .collect();
            peer.options.ca = Some(Arc::from(ca));
        }
        let tls_listener = engine.config().tls.is_some();
        Ok(Self {
            conns: Arc::new(Connections::new(&engine.config().server)),
            engine,
            tls_listener,
            peer,
        })
    }
}

async fn respond(session: &mut Session, resp: Response<Bytes>) -> Result<()> {
    let (parts, body) = resp.into_parts();
    let mut header = ResponseHeader::build(parts.status, Some(parts.headers.len() + 1))?;
    for (name, value) in &parts.headers {
        header.append_header(name.clone(), value.clone())?;
    }
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

    /// Marks the request in flight for `serve::pingora::Guarded`, and sets the limits pingora offers per
    /// session: idle keep-alive connections close after `server.idle_timeout_secs`; each read of
    /// the request may wait at most `server.header_read_timeout_secs` (pingora times single
    /// reads, not whole headers; `serve::pingora::Guarded` closes a connection that has had no request in
    /// flight for the idle timeout, slow headers included).
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
        ctx.body_deadline = Some(tokio::time::Instant::now() + self.engine.body_read_timeout());
        let server = &self.engine.config().server;
        let s = session.as_mut();
        s.set_keepalive(Some(server.idle_timeout_secs));
        s.set_read_timeout(Some(Duration::from_secs(server.header_read_timeout_secs)));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<bool> {
        if !self.engine.is_warm() {
            self.engine.warm_up().await;
        }
        let Some(route) = self.engine.route(session.req_header().uri.path()) else {
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
            // pingora's own per-read timeout (`server.header_read_timeout_secs`) may fire
            // first: the body is just as late.
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
        let head = session.req_header();
        let req = EngineRequest {
            method: head.method.clone(),
            uri: head.uri.clone(),
            headers: head.headers.clone(),
            body,
        };
        match self.engine.handle(route, req).await {
            Outcome::Respond(resp) => {
                respond(session, resp).await?;
                Ok(true)
            }
            Outcome::Forward(_) => Ok(false),
        }
    }

    /// A pass-through body must arrive in full by `limits.body_read_timeout_secs` (pingora
    /// times each read; a body trickled in small chunks would otherwise never end).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match ctx.body_deadline {
            Some(d) if tokio::time::Instant::now() > d => {
                Err(Error::explain(ErrorType::ReadTimedout, "request body too slow").into_down())
            }
            _ => Ok(()),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let edits = self
            .engine
            .header_edits(&upstream_request.headers, peer, self.tls_listener);
        for name in &edits.remove {
            upstream_request.remove_header(name);
        }
        for (name, value) in edits.set {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let timeout = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            _ if timeout => 504,
            _ => 502,
        };
        // The client's body stopped arriving: its fault, not the provider's.
        let client_slow = *e.esource() == pingora::ErrorSource::Downstream
            && matches!(e.etype(), ErrorType::ReadTimedout);
        let code = if client_slow { 408 } else { code };
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

/// What the proxy keeps for one request.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The request in flight on its connection (see `serve::pingora::Guarded`), until the request ends.
    in_flight: Option<InFlight>,
    /// When the request body must have arrived.
    body_deadline: Option<tokio::time::Instant>,
}
