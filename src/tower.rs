//! The tower adapter: [`CibaLayer`] / [`CibaService`].
//!
//! The layer answers the gateway's own endpoints and passes everything else to the inner
//! service untouched. The shared token endpoint is the one subtle case: its body is buffered
//! (up to the configured cap) so the engine can read `grant_type`; a non-CIBA grant then reaches
//! the inner service with exactly the bytes the client sent.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use ciba_gateway::{Config, Engine, tower::CibaLayer};
//!
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::new(Config::load("config/quickstart.yaml")?)?);
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(CibaLayer::new(engine));
//! # Ok(()) }
//! ```
//!
//! The inner service receives `Request<PassBody<B>>`: either the original body, or the buffered
//! bytes of a token request the gateway looked at and handed on. axum routers accept any such
//! body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::engine::{Engine, EngineRequest, Outcome, WrappedDiscovery};

/// The request body the inner service sees: the original, or bytes the gateway buffered.
pub type PassBody<B> = Either<Full<Bytes>, B>;

/// The response body: the gateway's own, or the inner service's.
pub type CibaBody<B> = Either<Full<Bytes>, B>;

/// A [`Layer`] that adds CIBA to the wrapped service.
#[derive(Debug, Clone)]
pub struct CibaLayer {
    engine: Arc<Engine>,
}

impl CibaLayer {
    /// A layer driven by `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for CibaLayer {
    type Service = CibaService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CibaService {
            engine: Arc::clone(&self.engine),
            inner,
        }
    }
}

/// The service [`CibaLayer`] produces.
#[derive(Debug, Clone)]
pub struct CibaService<S> {
    engine: Arc<Engine>,
    inner: S,
}

impl<S> CibaService<S> {
    /// Wraps `inner` directly, without a layer.
    pub fn new(engine: Arc<Engine>, inner: S) -> Self {
        Self { engine, inner }
    }
}

fn own(resp: Response<Bytes>) -> Response<Full<Bytes>> {
    resp.map(Full::new)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CibaService<S>
where
    S: Service<Request<PassBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<CibaBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !self.engine.is_warm() {
            // The first requests wait for the provider's discovery (the paths it names), then
            // are routed as usual; the readied service goes with them.
            let clone = self.inner.clone();
            let mut warmed = Self {
                engine: Arc::clone(&self.engine),
                inner: std::mem::replace(&mut self.inner, clone),
            };
            return Box::pin(async move {
                warmed.engine.warm_up().await;
                warmed.call(req).await
            });
        }
        let Some(route) = self.engine.route(req.uri().path()) else {
            let fut = self.inner.call(req.map(Either::Right));
            return Box::pin(async move { fut.await.map(|r| r.map(Either::Right)) });
        };
        let engine = Arc::clone(&self.engine);
        // The readied service goes into the future; a fresh clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // With an upstream configured the engine owns discovery; otherwise the wrapped
            // service's own document is the one to extend.
            if engine.discovery_from_wrapped(route, req.method()) {
                return discovery(&engine, &mut inner, req).await;
            }
            let (mut parts, body) = req.into_parts();
            let collect = Limited::new(body, engine.max_body_bytes()).collect();
            let body = match tokio::time::timeout(engine.body_read_timeout(), collect).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(own(engine.body_too_large()).map(Either::Left));
                }
                Ok(Err(_)) => return Ok(own(engine.body_unreadable()).map(Either::Left)),
                Err(_) => return Ok(own(engine.body_timed_out()).map(Either::Left)),
            };
            let ereq = EngineRequest {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: std::mem::take(&mut parts.headers),
                body,
            };
            match engine.handle(route, ereq).await {
                Outcome::Respond(r) => Ok(own(r).map(Either::Left)),
                Outcome::Forward(e) => {
                    parts.headers = e.headers;
                    let req = Request::from_parts(parts, Either::Left(Full::new(e.body)));
                    inner.call(req).await.map(|r| r.map(Either::Right))
                }
            }
        })
    }
}

/// Asks the inner service for its discovery document; the engine decides what to answer.
async fn discovery<S, ReqBody, ResBody>(
    engine: &Engine,
    inner: &mut S,
    mut req: Request<ReqBody>,
) -> Result<Response<CibaBody<ResBody>>, S::Error>
where
    S: Service<Request<PassBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    *req.method_mut() = Method::GET;
    let resp = inner.call(req.map(Either::Right)).await?;
    match engine.wrapped_discovery(resp.status()) {
        WrappedDiscovery::PassThrough => Ok(resp.map(Either::Right)),
        WrappedDiscovery::Replace(r) => Ok(own(r).map(Either::Left)),
        WrappedDiscovery::Merge => {
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, WrappedDiscovery::MAX_BYTES)
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes());
            let merged = engine.merged_discovery(parts.headers, body.as_deref());
            Ok(own(merged).map(Either::Left))
        }
    }
}
