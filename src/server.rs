//! The tower engine behind the `ciba-gateway` binary: the tower layer over an inner service that
//! forwards to the upstream provider (or, standalone, answers what the gateway does not serve),
//! on hyper (HTTP/1.1 and HTTP/2), with graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::engine::Engine;
use crate::tower::CibaService;

/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

/// What the server knows about the client connection, attached to each request.
#[derive(Debug, Clone, Copy)]
pub struct ClientConnection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

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
pub type InnerBody = Either<Full<Bytes>, reqwest::Body>;

/// The inner service of the tower engine: forwards to the upstream provider (a hyper-based
/// client with connection reuse), or, standalone, gives the engine's "not served" answer.
#[derive(Debug, Clone)]
pub struct Inner {
    engine: Arc<Engine>,
    client: Option<reqwest::Client>,
}

impl Inner {
    /// The inner service for `engine`: forwarding when it has an upstream.
    pub fn new(engine: Arc<Engine>) -> Self {
        let client = engine.upstream().map(|u| {
            let c = u.config();
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                // HTTP/1.1 upstream, as pingora does: the client's Host header is forwarded as is,
                // which HTTP/2 would carry as a conflicting :authority.
                .http1_only()
                // Pass-through is byte for byte: bodies keep their Content-Encoding.
                .no_gzip()
                .no_deflate()
                .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
                .read_timeout(Duration::from_millis(c.read_timeout_ms))
                .pool_idle_timeout(Duration::from_secs(60));
            if let Some(ca) = &c.ca_file
                && let Ok(pem) = std::fs::read(ca)
            {
                for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
                    b = b.add_root_certificate(cert);
                }
            }
            b.build()
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
                .not_served(req.method(), req.uri().path())
                .map(|b| Either::Left(Full::new(b)));
            return Box::pin(std::future::ready(Ok(resp)));
        };
        Box::pin(async move { Ok(forward(&engine, &client, req).await) })
    }
}

async fn forward<B>(
    engine: &Engine,
    client: &reqwest::Client,
    req: Request<B>,
) -> Response<InnerBody>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let upstream = engine
        .upstream()
        .expect("a forwarding client implies an upstream");
    let conn = req.extensions().get::<ClientConnection>().copied();
    let (parts, body) = req.into_parts();
    let mut url = upstream.url().clone();
    url.set_path(parts.uri.path());
    url.set_query(parts.uri.query());
    let mut headers = parts.headers;
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let edits = engine.header_edits(
        &headers,
        conn.map(|c| c.peer.ip()),
        conn.is_some_and(|c| c.tls),
    );
    for h in edits.remove {
        headers.remove(h);
    }
    for (k, v) in edits.set {
        headers.insert(k, v);
    }
    let sent = client
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap(body))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let mut resp: Response<reqwest::Body> = resp.into();
            for h in HOP_BY_HOP {
                resp.headers_mut().remove(*h);
            }
            resp.map(Either::Right)
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

/// Serves the gateway on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = CibaService::new(Arc::clone(&engine), Inner::new(engine));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = service.clone();
                let info = ClientConnection { peer, tls: false };
                let hyper_svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info);
                    let mut svc = svc.clone();
                    async move {
                        std::future::poll_fn(|cx| Service::<Request<hyper::body::Incoming>>::poll_ready(&mut svc, cx)).await?;
                        svc.call(req).await
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), hyper_svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down; draining connections");
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing");
    }
    Ok(())
}
