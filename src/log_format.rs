//! The binary's log lines, with the trace id of the request (or the background work) each line
//! was written for ([`crate::trace`]), taken from the task's trace context when the line is
//! written. A request therefore needs no enabled span of its own to have its trace id on its
//! lines: a span per request at the default level would cost every request (~1 µs on a poll,
//! measured) for the few that write a line.
//!
//! Add them to your own `tracing_subscriber::fmt` layer with `.event_format(…)`.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::trace::TraceContext;

/// Text lines as tracing-subscriber's default format writes them (time, level, spans, target,
/// fields), with `trace_id=…` after the level when the line belongs to a trace. Colour on the
/// level only when the writer has ANSI escapes on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextWithTraceId;

impl<S, N> FormatEvent<S, N> for TextWithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut w)?;
        let level = meta.level();
        if w.has_ansi_escapes() {
            let colour = match *level {
                tracing::Level::ERROR => 31,
                tracing::Level::WARN => 33,
                tracing::Level::INFO => 32,
                tracing::Level::DEBUG => 34,
                tracing::Level::TRACE => 35,
            };
            write!(w, " \x1b[{colour}m{level:>5}\x1b[0m")?;
        } else {
            write!(w, " {level:>5}")?;
        }
        if let Some(t) = TraceContext::current() {
            write!(w, " trace_id={}", t.trace_id())?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, " {}", span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
                w.write_char(':')?;
            }
        }
        write!(w, " {}: ", meta.target())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// JSON lines as `F` (tracing-subscriber's JSON format) writes them, with `"trace_id"` first
/// when the line belongs to a trace.
#[derive(Debug, Clone, Default)]
pub struct JsonWithTraceId<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JsonWithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(t) = TraceContext::current() else {
            return self.0.format_event(ctx, w, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(w, "{{\"trace_id\":\"{}\",{rest}", t.trace_id()),
            None => w.write_str(&line),
        }
    }
}
