//! Traces: every request the gateway serves is a span of a W3C trace (Trace Context,
//! `traceparent`), and so is the work it leaves behind — the user's notification, the ping or
//! push to the client, the push of an expiry — whichever replica does it, since a pending
//! request keeps its trace context in the store.
//!
//! - **In:** a request's `traceparent` continues the caller's trace only from the addresses in
//!   `trace.accept_traceparent_from` (CIDR blocks; default none): anyone else starts a new
//!   trace, so that nobody outside can choose the gateway's trace ids or its sampling.
//! - **Out:** every call the gateway makes — to the provider (forwarded requests, code
//!   exchange, discovery), to the authentication channel, to the user directory, to a client's
//!   notification endpoint, to a notifier's webhook — carries a `traceparent` naming the span
//!   that made it.
//! - **Logs:** [`TraceContext::current`] is the trace of whatever a line is written for; the
//!   binary's line formats ([`crate::log_format`], for your subscriber too) put its trace id on
//!   every line. The request's span (`request{route=… trace_id=…}`) and the background work's
//!   (`background{task=… trace_id=…}`) are DEBUG spans, as tower-http's are: enabled, a span
//!   costs every request about a microsecond (10 % of a poll, measured), whether or not it
//!   writes a line.
//! - **Your own spans:** [`TraceHooks`] (given to [`crate::Engine::with_trace_hooks`]) makes
//!   the span of each request and hears its answer, like tower-http's `MakeSpan` and
//!   `OnResponse`; [`TraceContext::current`] tells your code, inside a request, which trace it
//!   is in.
//! - **Export** (feature `otel`): with [`export_spans`] switched on, the gateway's spans also
//!   go to the global OpenTelemetry tracer provider (the binary installs an OTLP exporter from
//!   the standard `OTEL_*` environment variables). The ids are then the OpenTelemetry SDK's
//!   own, and its sampler's decision is what `traceparent` carries on.
//!
//! Without an exporter and with the DEBUG spans off, a request's trace costs tens of
//! nanoseconds (two random numbers and a task-local copy of 25 bytes), so the propagation and
//! the log correlation are always on.

#[cfg(feature = "otel")]
mod otel;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

#[cfg(feature = "otel")]
pub use otel::export_spans;

/// The W3C `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C `tracestate` header (passed on only with a trusted `traceparent`).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One span's place in a trace: the trace id, the span id and whether the trace is sampled —
/// what a `traceparent` header says. 25 bytes, `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: SAMPLED,
        }
    }

    /// A new span in this span's trace (a random span id; the same trace id and sampling).
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(),
            ..*self
        }
    }

    /// Parses a `traceparent` value (W3C Trace Context, level 1): version `00` exactly as
    /// specified; a later version by its first four fields. Invalid ids (all zeros), upper-case
    /// hex and version `ff` are refused.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&value[..2])?[0];
        match version {
            0xff => return None,
            0x00 if value.len() != 55 => return None,
            // A later version may add fields, after a dash.
            _ if value.len() > 55 && value[55] != b'-' => return None,
            _ => {}
        }
        let ctx = Self {
            trace_id: hex(&value[3..35])?,
            span_id: hex(&value[36..52])?,
            flags: hex::<1>(&value[53..55])?[0] & SAMPLED,
        };
        (ctx.trace_id != [0; 16] && ctx.span_id != [0; 8]).then_some(ctx)
    }

    /// This span's `traceparent` header value (version `00`).
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        write_hex(&mut buf[3..35], &self.trace_id);
        buf[35] = b'-';
        write_hex(&mut buf[36..52], &self.span_id);
        buf[52] = b'-';
        write_hex(&mut buf[53..55], &[self.flags]);
        HeaderValue::from_bytes(&buf).expect("hex and dashes are a valid header value")
    }

    /// The trace id, shown as 32 hex digits.
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// The span id, as its 8 bytes.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the trace is sampled (recorded by whoever exports it).
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The context of the request or background work this code runs for, if any: inside
    /// [`crate::Engine::handle`], a forwarded request of the binary, or the gateway's
    /// background work.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `f` with `self` as the [current](Self::current) context.
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// Calls `f` with `self` as the [current](Self::current) context (the synchronous
    /// [`TraceContext::scope`]).
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.traceparent().to_str().unwrap_or_default())
    }
}

/// A trace id; `Display` writes its 32 hex digits (the form trace viewers search by).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 16]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        write_hex(&mut buf, &self.0);
        f.write_str(std::str::from_utf8(&buf).expect("hex"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

thread_local! {
    /// Trace and span ids need to be unique, not secret (W3C Trace Context §security: they
    /// must not be derived from anything sensitive): a fast generator per thread, seeded from
    /// the operating system's, costs a nanosecond where the CSPRNG costs tens on every request.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

fn nonzero<const N: usize>() -> [u8; N] {
    IDS.with_borrow_mut(|rng| {
        loop {
            let b: [u8; N] = rand::Rng::random(rng);
            if b != [0; N] {
                return b;
            }
        }
    })
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (o, b) in out.chunks_exact_mut(2).zip(bytes) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// What a [`TraceHooks`] is told of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// What it is for: a [`crate::Route`]'s metric label (`backchannel`, `token`, …), or
    /// `forwarded` for a request the binary passes to the provider. Never the path, which
    /// may carry an approval handle.
    pub route: &'static str,
    /// Its trace context.
    pub trace: TraceContext,
}

/// Hooks around each request the engine serves ([`crate::Engine::with_trace_hooks`]), in the
/// style of tower-http's `MakeSpan` and `OnResponse`: the span the request runs in, and what
/// to do with its answer.
pub trait TraceHooks: Send + Sync + 'static {
    /// The span the request runs in. The default is a DEBUG span
    /// `request{route=… trace_id=…}`.
    fn make_span(&self, request: &RequestInfo<'_>) -> tracing::Span {
        default_span(request)
    }

    /// Called with the answer's status (`None` for a request handed back to be forwarded, whose
    /// answer is the provider's) and the time taken, in the request's span.
    fn on_response(
        &self,
        request: &RequestInfo<'_>,
        status: Option<StatusCode>,
        latency: Duration,
        span: &tracing::Span,
    ) {
        let _ = (request, status, latency, span);
    }
}

/// The engine's default [`TraceHooks`]: a DEBUG span per request, nothing on the answer (the
/// metrics count it).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultHooks;

impl TraceHooks for DefaultHooks {}

fn default_span(request: &RequestInfo<'_>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        route = request.route,
        trace_id = %request.trace.trace_id()
    )
}

/// Which callers' `traceparent` the gateway continues (`trace.accept_traceparent_from`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Accept(Vec<ipnet::IpNet>);

impl Accept {
    pub(crate) fn new(from: &[ipnet::IpNet]) -> Self {
        Self(from.to_vec())
    }

    /// The caller's context, if `peer` is trusted and the request carries exactly one valid
    /// `traceparent`.
    pub(crate) fn parent(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<TraceContext> {
        if self.0.is_empty() {
            return None;
        }
        // An IPv4 client of a dual-stack listener is seen as `::ffff:a.b.c.d`.
        let peer = peer?.to_canonical();
        if !self.0.iter().any(|n| n.contains(&peer)) {
            return None;
        }
        let mut values = headers.get_all(TRACEPARENT).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return None;
        };
        TraceContext::parse(v.as_bytes())
    }
}

/// A span the gateway opened: its context, and its exported copy (feature `otel`, when
/// exporting).
pub(crate) struct Opened {
    pub(crate) ctx: TraceContext,
    #[cfg(feature = "otel")]
    exported: otel::Exported,
}

/// What kind of span the gateway opens.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A request the gateway serves or forwards.
    Server,
    /// Work a request left behind (notifications, expiry).
    Background,
}

impl Opened {
    /// Opens span `name` as a child of `parent` (a new trace without one).
    #[cfg_attr(not(feature = "otel"), allow(unused_variables))]
    pub(crate) fn start(
        name: &'static str,
        kind: Kind,
        route: &'static str,
        parent: Option<TraceContext>,
    ) -> Self {
        #[cfg(feature = "otel")]
        if let Some((ctx, exported)) = otel::start(name, kind, route, parent) {
            return Self { ctx, exported };
        }
        Self {
            ctx: parent.map_or_else(TraceContext::root, |p| p.child()),
            #[cfg(feature = "otel")]
            exported: otel::Exported::default(),
        }
    }

    /// Closes the span with the answer's status, if there is one.
    #[cfg_attr(not(feature = "otel"), allow(unused_variables))]
    pub(crate) fn finish(self, status: Option<StatusCode>) {
        #[cfg(feature = "otel")]
        self.exported.finish(status);
    }
}

/// Runs work that request context `of` left behind (`None`: one that had none, e.g. a request
/// stored before an upgrade) in a span of its own, `background{task=…}`, in the same trace.
pub(crate) fn background<F: Future>(
    of: Option<TraceContext>,
    task: &'static str,
    work: F,
) -> impl Future<Output = F::Output> {
    let opened = Opened::start(task, Kind::Background, task, of);
    let span = tracing::debug_span!("background", task, trace_id = %opened.ctx.trace_id());
    let ctx = opened.ctx;
    let work = tracing::Instrument::instrument(ctx.scope(work), span);
    async move {
        let out = work.await;
        opened.finish(None);
        out
    }
}

/// The `traceparent` for a call made now: the current span's, if there is one.
pub(crate) fn outgoing() -> Option<HeaderValue> {
    TraceContext::current().map(|c| c.traceparent())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_round_trips() {
        let c = TraceContext::parse(W3C_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.span_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(c.is_sampled());
        assert_eq!(c.traceparent(), W3C_EXAMPLE);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad.as_bytes()).is_none(), "{bad}");
        }
        // A later version is read by its first fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next";
        let c = TraceContext::parse(later.as_bytes()).unwrap();
        assert!(!c.is_sampled());
        assert_eq!(
            c.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let root = TraceContext::root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert!(child.is_sampled());
        assert_ne!(TraceContext::root().trace_id(), root.trace_id());
    }

    #[test]
    fn only_a_trusted_peer_continues_its_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(W3C_EXAMPLE));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        let accept = Accept::new(&["127.0.0.0/8".parse().unwrap()]);
        assert!(accept.parent(&h, Some(local)).is_some());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(accept.parent(&h, Some(mapped)).is_some());
        assert!(accept.parent(&h, Some(other)).is_none());
        assert!(accept.parent(&h, None).is_none());
        assert!(Accept::default().parent(&h, Some(local)).is_none());
        // Two values: invalid (W3C: a vendor cannot tell which one is meant).
        h.append(TRACEPARENT, HeaderValue::from_static(W3C_EXAMPLE));
        assert!(accept.parent(&h, Some(local)).is_none());
    }

    #[tokio::test]
    async fn background_work_runs_in_a_child_of_its_request() {
        let req = TraceContext::root();
        let seen = background(Some(req), "test", async { TraceContext::current() })
            .await
            .unwrap();
        assert_eq!(seen.trace_id(), req.trace_id());
        assert_ne!(seen.span_id(), req.span_id());
        assert!(TraceContext::current().is_none());
    }
}
