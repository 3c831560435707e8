//! Each request in a span of its trace ([`crate::trace`]): the caller's trace when it may
//! choose it, a new one otherwise; the hooks that make the span and hear the answer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

use super::Engine;
use crate::trace::{Accept, DefaultHooks, Kind, Opened, RequestInfo, TraceContext, TraceHooks};

/// The engine's tracing: whose `traceparent` is continued, and the hooks.
pub(super) struct Tracing {
    pub(super) accept: Accept,
    hooks: Arc<dyn TraceHooks>,
}

impl Tracing {
    pub(super) fn new(cfg: &crate::config::TraceConfig) -> Self {
        Self {
            accept: Accept::new(&cfg.accept_traceparent_from),
            hooks: Arc::new(DefaultHooks),
        }
    }
}

/// A request's span, open while it is served.
pub(crate) struct Traced {
    /// When it was opened: the request's latency is measured from here.
    started: std::time::Instant,
    opened: Opened,
    span: tracing::Span,
    method: Method,
    route: &'static str,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced")
            .field("trace", &self.opened.ctx)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Traced {
    /// The request's trace context (the pingora module hands it to `upstream_request_filter`).
    #[cfg(feature = "pingora")]
    pub(crate) fn ctx(&self) -> TraceContext {
        self.opened.ctx
    }

    /// Runs `f` in the request's span and trace context.
    pub(crate) fn run<F: Future>(&self, f: F) -> impl Future<Output = F::Output> {
        tracing::Instrument::instrument(self.opened.ctx.scope(f), self.span.clone())
    }
}

impl Engine {
    /// Makes `hooks` the span maker and answer hook of every request this engine serves (and
    /// of the requests the binary forwards). The default makes a DEBUG span
    /// `request{route=… trace_id=…}` ([`crate::trace::DefaultHooks`]).
    #[must_use]
    pub fn with_trace_hooks(mut self, hooks: impl TraceHooks) -> Self {
        self.tracing.hooks = Arc::new(hooks);
        self
    }

    /// Opens the span of a request for `route` (a [`crate::Route`]'s metric label, or
    /// `forwarded`), in the caller's trace if `peer` may choose it.
    pub(crate) fn open_trace(
        &self,
        route: &'static str,
        method: &Method,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Traced {
        let started = std::time::Instant::now();
        let parent = self.tracing.accept.parent(headers, peer.map(|p| p.ip()));
        let opened = Opened::start("ciba.request", Kind::Server, route, parent);
        let span = self.tracing.hooks.make_span(&RequestInfo {
            method,
            route,
            trace: opened.ctx,
        });
        Traced {
            started,
            opened,
            span,
            method: method.clone(),
            route,
        }
    }

    /// Closes a request's span with its answer's status (`None`: handed back to be forwarded);
    /// returns the time the request took.
    pub(crate) fn close_trace(&self, t: Traced, status: Option<StatusCode>) -> Duration {
        let latency = t.started.elapsed();
        let info = RequestInfo {
            method: &t.method,
            route: t.route,
            trace: t.opened.ctx,
        };
        self.tracing
            .hooks
            .on_response(&info, status, latency, &t.span);
        t.opened.finish(status);
        latency
    }

    /// The trace context a forwarded request carries on: the current span's (a request the
    /// engine handed back, or one the binary's tower runtime forwards in a span of its own),
    /// else a new span in the caller's trace if it may choose it, else a new trace. With it,
    /// whether the caller's `tracestate` may go on too.
    pub(super) fn forwarded_trace(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
    ) -> (TraceContext, bool) {
        let trusted = self.tracing.accept.parent(headers, peer);
        let ctx = TraceContext::current()
            .or_else(|| trusted.map(|p| p.child()))
            .unwrap_or_else(TraceContext::root);
        (ctx, trusted.is_some())
    }
}
