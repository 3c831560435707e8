//! The gateway's spans as OpenTelemetry spans, through the global tracer provider (feature
//! `otel`). The SDK makes the ids and decides the sampling; the gateway then carries them as
//! its [`TraceContext`], so that what is exported, what is logged and what `traceparent` says
//! are one and the same.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use super::{Kind, TraceContext};

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Sends the gateway's spans to OpenTelemetry's global tracer provider from now on: call it
/// once the provider is installed (`opentelemetry::global::set_tracer_provider`). Until then
/// (and without the `otel` feature) the gateway keeps its own ids and records nothing, which
/// costs next to nothing on the hot path.
pub fn export_spans() {
    EXPORTING.store(true, Ordering::Release);
}

/// A span being exported, ended by [`Exported::finish`] (or when dropped).
#[derive(Default)]
pub(super) struct Exported(Option<opentelemetry::global::BoxedSpan>);

impl Exported {
    pub(super) fn finish(mut self, status: Option<http::StatusCode>) {
        let Some(span) = self.0.as_mut() else { return };
        if let Some(s) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(s.as_u16()),
            ));
            if s.is_server_error() {
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }
}

/// Opens span `name` (child of `parent`) in the global provider; `None` when not exporting or
/// when the provider made no valid ids (a no-op provider).
pub(super) fn start(
    name: &'static str,
    kind: Kind,
    route: &'static str,
    parent: Option<TraceContext>,
) -> Option<(TraceContext, Exported)> {
    if !EXPORTING.load(Ordering::Acquire) {
        return None;
    }
    let tracer = opentelemetry::global::tracer("ciba-gateway");
    let parent_cx = match parent {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(p.trace_id),
            opentelemetry::trace::SpanId::from_bytes(p.span_id),
            TraceFlags::new(p.flags),
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let builder = tracer
        .span_builder(name)
        .with_kind(match kind {
            Kind::Server => SpanKind::Server,
            Kind::Background => SpanKind::Internal,
        })
        .with_attributes([KeyValue::new("ciba.route", route)]);
    let span = tracer.build_with_context(builder, &parent_cx);
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let ctx = TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: if sc.is_sampled() { super::SAMPLED } else { 0 },
    };
    Some((ctx, Exported(Some(span))))
}
