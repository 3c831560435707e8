//! The tower runtime: the tower layer over an inner service that forwards to the upstream
//! provider (or, standalone, answers what the gateway does not serve), on hyper (HTTP/1.1 and
//! HTTP/2), with connection limits (`guard.rs`) and graceful shutdown.

mod guard;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower_service::Service;

use super::ServeError;
use crate::engine::Engine;
use crate::layer::CibaService;

/// Hop-by-hop headers (RFC 9110 §7.6.1): they belong to one connection and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The response body of the binary's inner service: its own JSON, or the upstream's stream.
pub(crate) type InnerBody = Either<Full<Bytes>, reqwest::Body>;

/// The inner service of the tower engine: forwards to the upstream provider (a hyper-based
/// client with connection reuse), or, standalone, gives the engine's "not served" answer.
#[derive(Debug, Clone)]
pub(crate) struct Inner {
    engine: Arc<Engine>,
    client: Option<Arc<crate::upstream::Nodes>>,
}

impl Inner {
    /// The inner service for `engine`: forwarding when it has an upstream.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let client = engine.upstream().map(|u| {
            let c = u.config();
            u.clients(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    // HTTP/1.1 upstream, as pingora does: the client's Host header is forwarded
                    // as is, which HTTP/2 would carry as a conflicting :authority.
                    .http1_only()
                    // Pass-through is byte for byte: bodies keep their Content-Encoding.
                    .no_gzip()
                    .no_deflate()
                    .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
                    .read_timeout(Duration::from_millis(c.read_timeout_ms))
                    .pool_idle_timeout(Duration::from_secs(60))
            })
            .map(Arc::new)
            .expect("a reqwest client with rustls and ring builds")
        });
        Self { engine, client }
    }
}

impl<B> Service<Request<B>> for Inner
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<InnerBody>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let engine = Arc::clone(&self.engine);
        let Some(client) = self.client.clone() else {
            let resp = engine
                .not_served(req.method(), req.uri().path(), req.headers())
                .map(|b| Either::Left(Full::new(b)));
            return Box::pin(std::future::ready(Ok(resp)));
        };
        Box::pin(async move {
            // A forwarded request is a span of its trace too (crate::trace).
            let peer = req
                .extensions()
                .get::<crate::Connection>()
                .and_then(|c| c.peer);
            let traced = engine.open_trace("forwarded", req.method(), req.headers(), peer);
            let resp = traced.run(forward(&engine, &client, req)).await;
            engine.close_trace(traced, Some(resp.status()));
            Ok(resp)
        })
    }
}

async fn forward<B>(
    engine: &Engine,
    client: &crate::upstream::Nodes,
    req: Request<B>,
) -> Response<InnerBody>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = req.extensions().get::<crate::Connection>();
    let (peer, tls) = (conn.and_then(|c| c.peer), conn.is_some_and(|c| c.tls));
    let (parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let edits = engine.header_edits(&headers, peer.map(|p| p.ip()), tls);
    for h in edits.remove {
        headers.remove(h);
    }
    for (k, v) in edits.set {
        headers.insert(k, v);
    }
    // The client's body streams to the provider; it must arrive in full in time.
    let deadline = tokio::time::Instant::now() + engine.body_read_timeout();
    let body = guard::DeadlineBody::new(body, deadline);
    // The headers move into the request; a copy is kept only if another node may be tried.
    let spare = client.several().then(|| headers.clone());
    let mut headers = Some(headers);
    let sent = client
        .send_once(path_and_query, body, |c, url, body| {
            let headers = headers.take().or_else(|| spare.clone()).unwrap_or_default();
            c.request(parts.method.clone(), url)
                .headers(headers)
                .body(reqwest::Body::wrap(body))
        })
        .await;
    match sent {
        Ok(resp) => {
            crate::metrics::passthrough(resp.status().as_u16());
            let mut resp: Response<reqwest::Body> = resp.into();
            for h in HOP_BY_HOP {
                resp.headers_mut().remove(*h);
            }
            resp.map(Either::Right)
        }
        Err(_) if tokio::time::Instant::now() >= deadline => {
            engine.body_timed_out().map(|b| Either::Left(Full::new(b)))
        }
        Err(e) => {
            let timeout = e.is_timeout();
            tracing::warn!(error = %e.without_url(), "forwarding to the upstream failed");
            engine
                .upstream_failure(timeout)
                .map(|b| Either::Left(Full::new(b)))
        }
    }
}

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the gateway on `listener` (plain TCP) until `shutdown` completes, then drains
/// connections.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Ok(serve_with(listener, engine, None, shutdown).await?)
}

/// Like [`serve`], with TLS on the listener (the configuration's `tls` offers HTTP/2
/// and HTTP/1.1 by ALPN).
pub async fn serve_tls(
    listener: TcpListener,
    engine: Arc<Engine>,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Ok(serve_with(listener, engine, Some(tls), shutdown).await?)
}

/// Runs the gateway as a process on a tokio runtime of its own (`server.threads` workers): TLS
/// on the listener from `tls:`, graceful shutdown on SIGTERM or Ctrl-C. Returns when the server
/// has drained.
pub fn run(engine: Arc<Engine>) -> Result<(), ServeError> {
    let listen = engine.config().listen;
    let tls = engine
        .listener_tls()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = engine.config().server.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        tracing::info!(%listen, issuer = engine.issuer(), runtime = "tower", tls = tls.is_some(), "ciba-gateway listening");
        match tls {
            Some(tls) => serve_tls(listener, engine, tls, shutdown_signal()).await,
            None => serve(listener, engine, shutdown_signal()).await,
        }
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn serve_with(
    listener: TcpListener,
    engine: Arc<Engine>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = engine.config().server.clone();
    // How long open connections get to finish after the shutdown signal.
    let grace = Duration::from_secs(server.shutdown_grace_secs);
    let limits = Limits {
        idle: Duration::from_secs(server.idle_timeout_secs),
        pressure: Arc::new(tokio::sync::Notify::new()),
    };
    let max = server.max_connections;
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(server.header_read_timeout_secs));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .max_header_list_size(64 * 1024)
        // Bounds the streams a client may open and reset at once (the "rapid reset" attack).
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    let builder = Arc::new(builder);
    tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.warm_up().await }
    });
    let service = CibaService::new(Arc::clone(&engine), Inner::new(Arc::clone(&engine)));
    // Connections still open at shutdown finish what they are doing; handshakes under way are
    // abandoned.
    let (stopping, stop) = tokio::sync::watch::channel(());
    // Held polls (long polling) are answered as the shutdown starts, not at the grace's end.
    let releasing = Arc::clone(&engine);
    let shutdown = async move {
        shutdown.await;
        releasing.shutdown();
    };
    tokio::pin!(shutdown);
    loop {
        // At the cap: accept nothing until a connection closes, and ask the quiet ones to make
        // room (they close at once; busy ones are left alone).
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let wait = Arc::clone(&permits).acquire_owned();
                tokio::pin!(wait);
                let mut rounds = 0;
                loop {
                    limits.pressure.notify_waiters();
                    // No quiet connection made room in a round: the held polls' connections
                    // are made quiet (their polls answered at once), to go in the next.
                    if rounds > 0 {
                        engine.reclaim_held_polls();
                    }
                    rounds += 1;
                    tokio::select! {
                        p = &mut wait => break p.expect("the semaphore is never closed"),
                        () = tokio::time::sleep(guard::PRESSURE_QUIET) => {}
                        () = &mut shutdown => return drain(listener, stopping, &permits, max, grace).await,
                    }
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: make room and back off instead of spinning.
                        limits.pressure.notify_waiters();
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    builder: Arc::clone(&builder),
                    svc: service.clone(),
                    info: crate::Connection {
                        peer: Some(peer),
                        tls: tls.is_some(),
                        client_certificate: None,
                    },
                    limits: limits.clone(),
                    stop: stop.clone(),
                };
                match &tls {
                    None => {
                        tokio::spawn(async move {
                            conn.serve(stream).await;
                            drop(permit);
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's task: a slow client never holds
                        // up the accept loop.
                        let accept = acceptor.accept(stream);
                        let mut stop = stop.clone();
                        tokio::spawn(async move {
                            let handshake = tokio::select! {
                                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept) => r,
                                _ = stop.changed() => return,
                            };
                            match handshake {
                                Ok(Ok(stream)) => {
                                    // RFC 8705: the certificate the client showed, if any, goes
                                    // with each of its requests.
                                    let chain = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                                    let mut conn = conn;
                                    conn.info.client_certificate =
                                        chain.and_then(crate::ClientCertificate::new);
                                    conn.serve(stream).await
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                            drop(permit);
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drain(listener, stopping, &permits, max, grace).await
}

/// Stops accepting, lets open connections finish what is in flight, and waits for them for at
/// most `grace`.
async fn drain(
    listener: TcpListener,
    stopping: tokio::sync::watch::Sender<()>,
    permits: &tokio::sync::Semaphore,
    max: usize,
    grace: Duration,
) -> std::io::Result<()> {
    drop(listener);
    tracing::info!("shutting down; draining connections");
    let _ = stopping.send(());
    // Every connection holds a permit until it is done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing");
    }
    Ok(())
}

/// The limits every connection is held to.
#[derive(Clone)]
struct Limits {
    idle: Duration,
    /// Notified when the accept loop needs room.
    pressure: Arc<tokio::sync::Notify>,
}

/// One accepted connection, before it is served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    svc: CibaService<Inner>,
    info: crate::Connection,
    limits: Limits,
    stop: tokio::sync::watch::Receiver<()>,
}

impl Connection {
    /// Serves the connection (plain or TLS) until it closes, is idle too long, is asked to make
    /// room while quiet, or the server stops (then it finishes what is in flight).
    async fn serve<IO>(mut self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = guard::Activity::new();
        let (svc, info, requests) = (self.svc, self.info, Arc::clone(&activity));
        let hyper_svc =
            hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                let mut svc = svc.clone();
                let in_flight = requests.request();
                async move {
                    let _in_flight = in_flight;
                    std::future::poll_fn(|cx| {
                        Service::<Request<hyper::body::Incoming>>::poll_ready(&mut svc, cx)
                    })
                    .await?;
                    svc.call(req).await
                }
            });
        let io = guard::Watched {
            io,
            activity: Arc::clone(&activity),
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), hyper_svc);
        tokio::pin!(conn);
        let _open = guard::Counted::open();
        let mut stopping = false;
        loop {
            let idle_at = activity.next_idle_check(self.limits.idle);
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle_at), if !stopping => {
                    if activity.quiet_for(self.limits.idle) {
                        tracing::debug!("idle connection closed");
                        crate::metrics::connection_closed("idle");
                        return;
                    }
                }
                () = self.limits.pressure.notified(), if !stopping => {
                    if activity.quiet_for(guard::PRESSURE_QUIET) {
                        tracing::debug!("quiet connection closed to make room");
                        crate::metrics::connection_closed("room");
                        return;
                    }
                }
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
