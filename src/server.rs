//! The standalone server behind the `ciba-gateway` binary: the tower layer over a fallback that
//! answers what the gateway does not serve, on hyper (HTTP/1.1 and HTTP/2), with graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::engine::Engine;
use crate::tower::CibaService;

/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

/// The inner service of the standalone gateway: there is no upstream, so whatever the gateway
/// does not serve gets the engine's "not here" answer.
#[derive(Debug, Clone)]
pub struct Fallback {
    engine: Arc<Engine>,
}

impl<B: Send + 'static> Service<Request<B>> for Fallback {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        std::future::ready(Ok(self
            .engine
            .not_served(req.method(), req.uri().path())
            .map(Full::new)))
    }
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = CibaService::new(Arc::clone(&engine), Fallback { engine });
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
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
