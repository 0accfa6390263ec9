//! W3C trace context at the edge: a request's span continues the trace its client named in
//! `traceparent` (and carries its trace id, for JSON log lines), and an upstream call
//! carries the trace on. Both go through OpenTelemetry's global propagator, which the
//! binary sets only when traces are exported; until then extraction finds nothing and
//! injection writes nothing.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The span a request's handling runs in: every log line it writes names its id (a field of
/// each JSON line with `log_format = "json"`) and, when traces are exported, its trace id;
/// the trace continues the client's `traceparent` if it sent one.
pub fn request_span(request_id: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("request", request_id, trace_id = tracing::field::Empty);
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Whether the current span's trace is sampled, so that its spans are exported: false for
/// a trace the sampler dropped, and whenever traces are not exported at all. A request makes
/// its detailed spans (the model call and its children) only when it is: the exporter's
/// layer builds every span it is given, attributes and all, and drops the unsampled ones
/// only at their end.
pub fn sampled() -> bool {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .is_sampled()
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into the headers
/// of a call going upstream, replacing the client's: the upstream's work is a child of
/// tollgate's.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}
