//! The tower adapter: [`CibaLayer`] adds CIBA to any tower / axum / hyper service.
//!
//! The layer answers the gateway's own endpoints and passes everything else to the wrapped
//! service untouched. The shared token endpoint is the one subtle case: its body is buffered
//! (up to `limits.max_body_bytes`) so the engine can read `grant_type`; any other grant then
//! reaches the wrapped service with exactly the bytes the client sent.
//!
//! It stacks with tower-http's middleware like one of them. Put it **innermost** — last in a
//! [`ServiceBuilder`](https://docs.rs/tower/latest/tower/struct.ServiceBuilder.html), right
//! around the router — so that tracing, CORS and compression see the CIBA answers too:
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use ciba_gateway::{CibaLayer, Config, Engine};
//! use tower::ServiceBuilder;
//! use tower_http::{compression::CompressionLayer, cors::CorsLayer, trace::TraceLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::new(Config::load("config/quickstart.yaml")?)?);
//! let app = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(TraceLayer::new_for_http())
//!             .layer(CorsLayer::permissive())
//!             .layer(CompressionLayer::new())
//!             .layer(CibaLayer::new(Arc::clone(&engine))),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(engine.shutdown_on(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The other order (the layer outermost) compiles and serves too, but then the CIBA answers
//! bypass the middleware inside it: no CORS headers, no compression, no trace span for them.
//! CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) are never the gateway's:
//! they go to the wrapped service, so a CORS layer anywhere in the stack answers them.
//!
//! Both directions use one body type, [`CibaBody`]: the bytes the gateway produced (or
//! buffered and handed on), or the wrapped body. It implements [`Default`] (tower-http's CORS,
//! timeout and validation layers need that) and [`http_body::Body`] with a boxed error, which
//! axum and hyper take as they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::engine::{Engine, EngineRequest, Outcome, WrappedDiscovery};

/// The error type of [`CibaBody`]: the wrapped body's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A body the layer hands on: bytes of the gateway's own (a CIBA answer, or a token request
    /// it buffered and passes to the wrapped service unchanged), or the original body `B`.
    ///
    /// The same type serves requests (what the wrapped service receives) and responses (what
    /// the layer returns). `Default` is an empty body.
    pub struct CibaBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Own { data: Option<Bytes> },
        Wrapped { #[pin] body: B },
    }
}

impl<B> CibaBody<B> {
    /// A body of these bytes.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Own { data },
        }
    }

    /// The original body, passed through.
    pub fn wrap(body: B) -> Self {
        Self {
            kind: Kind::Wrapped { body },
        }
    }
}

impl<B> Default for CibaBody<B> {
    fn default() -> Self {
        Self {
            kind: Kind::Own { data: None },
        }
    }
}

impl<B> std::fmt::Debug for CibaBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Own { data } => f
                .debug_struct("CibaBody::Own")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Wrapped { .. } => f.write_str("CibaBody::Wrapped"),
        }
    }
}

impl<B> Body for CibaBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Wrapped { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Own { data } => data.is_none(),
            Kind::Wrapped { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Own { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Wrapped { body } => body.size_hint(),
        }
    }
}

/// A [`Layer`] that adds CIBA to the wrapped service (see the [module docs](self)).
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

/// The service [`CibaLayer`] produces: answers the gateway's endpoints, passes the rest to `S`.
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

fn own<B>(resp: Response<Bytes>) -> Response<CibaBody<B>> {
    resp.map(CibaBody::full)
}

/// The response future of [`CibaService`].
pub type ResponseFuture<ResBody, E> =
    Pin<Box<dyn Future<Output = Result<Response<CibaBody<ResBody>>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CibaService<S>
where
    S: Service<Request<CibaBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CibaBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

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
        let Some(route) = self
            .engine
            .route(req.method(), req.uri().path(), req.headers())
        else {
            let fut = self.inner.call(req.map(CibaBody::wrap));
            return Box::pin(async move { fut.await.map(|r| r.map(CibaBody::wrap)) });
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
                    return Ok(own(engine.body_too_large()));
                }
                Ok(Err(_)) => return Ok(own(engine.body_unreadable())),
                Err(_) => return Ok(own(engine.body_timed_out())),
            };
            let ereq = EngineRequest {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: std::mem::take(&mut parts.headers),
                body,
                connection: parts
                    .extensions
                    .get::<crate::Connection>()
                    .cloned()
                    .unwrap_or_default(),
            };
            match engine.handle(route, ereq).await {
                Outcome::Respond(r) => Ok(own(r)),
                Outcome::Forward(e) => {
                    parts.headers = e.headers;
                    let req = Request::from_parts(parts, CibaBody::full(e.body));
                    inner.call(req).await.map(|r| r.map(CibaBody::wrap))
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
    S: Service<Request<CibaBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    req.headers_mut().remove(header::ACCEPT_ENCODING);
    *req.method_mut() = Method::GET;
    let resp = inner.call(req.map(CibaBody::wrap)).await?;
    match engine.wrapped_discovery(resp.status()) {
        WrappedDiscovery::PassThrough => Ok(resp.map(CibaBody::wrap)),
        WrappedDiscovery::Replace(r) => Ok(own(r)),
        WrappedDiscovery::Merge => {
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, WrappedDiscovery::MAX_BYTES)
                .collect()
                .await
                .ok()
                .map(|b| b.to_bytes());
            let merged = engine.merged_discovery(parts.headers, body.as_deref());
            Ok(own(merged))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn own_bytes_then_end_and_an_empty_default() {
        let b: CibaBody<Full<Bytes>> = CibaBody::full(Bytes::from_static(b"{}"));
        assert_eq!(b.size_hint().exact(), Some(2));
        assert!(!b.is_end_stream());
        assert_eq!(b.collect().await.unwrap().to_bytes(), "{}");
        let d: CibaBody<Full<Bytes>> = CibaBody::default();
        assert!(d.is_end_stream());
        assert_eq!(d.size_hint().exact(), Some(0));
        assert!(d.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_wrapped_body_passes_through() {
        let b = CibaBody::wrap(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(b.size_hint().exact(), Some(3));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abc");
    }
}
