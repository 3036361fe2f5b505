//! A proxied request's place in a distributed trace (W3C Trace Context).
//!
//! A browser-facing proxy must not let its clients choose trace ids: a forged `traceparent`
//! would graft requests onto someone else's trace, pick the upstream's sampling decision, and
//! `tracestate` would carry arbitrary text into every tracing system downstream. So
//! `traceparent` and `tracestate` are stripped from every request like the other
//! client-forbidden headers (`proxy::inject`), and only callers in
//! `telemetry.trusted_trace_callers` (an ingress, a mesh gateway) are believed:
//! - tracing on: the request's span continues a trusted caller's trace, or starts a new one,
//!   and the upstream receives portcullis's own `traceparent`, naming the span of the upstream
//!   call as its parent;
//! - tracing off: a trusted caller's trace context passes through unchanged, anyone else's is
//!   dropped.
//!
//! Span attributes are fixed names with values from configuration or from small fixed sets
//! (method, status, route prefix, route kind), never the request's path, query, cookies or
//! headers, so no token, code or claim can reach an exported span.

use std::net::IpAddr;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use pingora::http::RequestHeader;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::SPAN_TARGET;
use crate::config::{IpNetwork, TelemetryConfig, Upstream};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// What every request's trace needs from configuration, built once per proxy thread.
pub struct TraceContext {
    /// Spans are recorded (`telemetry.enabled`).
    recording: bool,
    trusted: Vec<IpNetwork>,
    propagator: TraceContextPropagator,
}

/// One request's spans: the request itself (server) and the upstream call (client). Both are
/// `None` unless tracing is on; they end when the request context is dropped after `logging`.
#[derive(Default)]
pub struct RequestTrace {
    request: Option<tracing::Span>,
    upstream: Option<tracing::Span>,
    /// The request's method as OpenTelemetry names it.
    method: &'static str,
}

impl TraceContext {
    pub fn new(cfg: &TelemetryConfig) -> TraceContext {
        TraceContext {
            recording: cfg.traces.is_some(),
            trusted: cfg.trusted_trace_callers.clone(),
            propagator: TraceContextPropagator::new(),
        }
    }

    /// The request's span, continuing the caller's trace if the caller is trusted and sent a
    /// valid `traceparent`; nothing at all while tracing is off.
    pub fn start(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        request_id: &str,
    ) -> RequestTrace {
        if !self.recording {
            return RequestTrace::default();
        }
        let method = method_name(&req.method);
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            otel.name = method,
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method,
            http.route = Empty,
            http.response.status_code = Empty,
            portcullis.route_kind = Empty,
            portcullis.request_id = request_id,
        );
        if let Some(parent) = self.trusted_parent(req, client) {
            // Fails only without the OpenTelemetry layer (a test's in-process proxy): then
            // there is no trace to continue anyway.
            let _ = span.set_parent(parent);
        }
        RequestTrace {
            request: Some(span),
            upstream: None,
            method,
        }
    }

    /// Sets the upstream request's trace context (the client's was stripped before): while
    /// tracing, a span for the upstream call and its `traceparent`; otherwise a trusted
    /// caller's own headers, unchanged.
    pub fn propagate(
        &self,
        downstream: &RequestHeader,
        client: Option<IpAddr>,
        upstream: &mut RequestHeader,
        trace: &mut RequestTrace,
        server: Option<&Upstream>,
    ) {
        match &trace.request {
            Some(request) => {
                let span = tracing::info_span!(
                    target: SPAN_TARGET,
                    parent: request,
                    "upstream",
                    otel.kind = "client",
                    otel.status_code = Empty,
                    http.request.method = trace.method,
                    http.response.status_code = Empty,
                    server.address = server.map(|s| s.host.as_str()),
                    server.port = server.map(|s| i64::from(s.port)),
                );
                self.propagator
                    .inject_context(&span.context(), &mut HeaderInjector(upstream));
                trace.upstream = Some(span);
            }
            None if self.is_trusted(client) => {
                for name in [TRACEPARENT, TRACESTATE] {
                    for value in downstream.headers.get_all(name) {
                        // A value that was a header value stays one.
                        let _ = upstream.append_header(name, value.clone());
                    }
                }
            }
            None => {}
        }
    }

    /// Whether there is anything to do for the upstream request: `propagate` is a no-op
    /// otherwise, and the proxy skips even the client address lookup.
    pub fn is_active(&self) -> bool {
        self.recording || !self.trusted.is_empty()
    }

    fn is_trusted(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| self.trusted.iter().any(|net| net.contains(ip)))
    }

    fn trusted_parent(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
    ) -> Option<opentelemetry::Context> {
        if !req.headers.contains_key(TRACEPARENT) || !self.is_trusted(client) {
            return None;
        }
        let parent = self.propagator.extract(&HeaderExtractor(req));
        parent.span().span_context().is_valid().then_some(parent)
    }
}

impl RequestTrace {
    /// The request's span, for the proxy to run its phases in; a disabled span when not tracing.
    pub fn span(&self) -> tracing::Span {
        self.request.clone().unwrap_or_else(tracing::Span::none)
    }

    pub fn is_recording(&self) -> bool {
        self.request.is_some()
    }

    /// Records how the request ended: its route (a configured prefix or a `/bff/` endpoint,
    /// never the requested path), route kind and status. A 5xx (or no response at all) marks
    /// the request failed; the upstream call failed when proxying it failed or it answered
    /// 4xx/5xx, as OpenTelemetry's HTTP conventions have it.
    pub fn finish(&self, route: Option<&str>, route_kind: &'static str, status: u16, failed: bool) {
        let Some(request) = &self.request else {
            return;
        };
        if let Some(route) = route {
            // tracing-opentelemetry applies a later `otel.name` only to a span not yet started,
            // and children have started this one: rename it through OpenTelemetry itself.
            let name = format!("{} {route}", self.method);
            request.context().span().update_name(name);
            request.record("http.route", route);
        }
        request.record("portcullis.route_kind", route_kind);
        // Integers as i64: tracing-opentelemetry records other integer types as text.
        let status_code = i64::from(status);
        if status != 0 {
            request.record("http.response.status_code", status_code);
        }
        if status == 0 || status >= 500 {
            request.record("otel.status_code", "ERROR");
        }
        if let Some(upstream) = &self.upstream {
            if failed {
                upstream.record("otel.status_code", "ERROR");
                return;
            }
            upstream.record("http.response.status_code", status_code);
            if status >= 400 {
                upstream.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// OpenTelemetry's method names: the registered methods as they are, any other `_OTHER`, so an
/// attribute never carries a client's made-up token.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Reads the trace context headers, and only those, from the downstream request.
struct HeaderExtractor<'a>(&'a RequestHeader);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.0.headers.contains_key(*k))
            .collect()
    }
}

/// Writes the trace context headers into the upstream request.
struct HeaderInjector<'a>(&'a mut RequestHeader);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => TRACEPARENT,
            // The propagator writes an empty tracestate too; W3C Trace Context asks senders
            // to leave it out.
            TRACESTATE if !value.is_empty() => TRACESTATE,
            _ => return,
        };
        // The propagator writes only valid header values (it parsed and re-serialised them).
        let _ = self.0.insert_header(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TraceExport;

    fn context(recording: bool, trusted: &[&str]) -> TraceContext {
        let traces = recording.then(|| TraceExport {
            endpoint: url::Url::parse("http://127.0.0.1:4318/v1/traces").unwrap(),
            sampling_ratio: 1.0,
            service_name: "portcullis".into(),
            export_timeout: std::time::Duration::from_secs(1),
        });
        let trusted_trace_callers = trusted
            .iter()
            .map(|ip| IpNetwork::new(ip.parse().unwrap(), 32).unwrap())
            .collect();
        TraceContext::new(&TelemetryConfig {
            traces,
            trusted_trace_callers,
        })
    }

    fn request_with_context() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/api/x", None).unwrap();
        req.insert_header(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .unwrap();
        req.insert_header(TRACESTATE, "vendor=x").unwrap();
        req
    }

    /// The upstream request as `proxy::inject` leaves it: the client's trace headers gone.
    fn stripped() -> RequestHeader {
        RequestHeader::build("GET", b"/api/x", None).unwrap()
    }

    #[test]
    fn with_tracing_off_only_a_trusted_callers_context_passes() {
        let trace = context(false, &["10.0.0.7"]);
        assert!(trace.is_active());
        let downstream = request_with_context();
        for (client, passes) in [("10.0.0.7", true), ("10.0.0.8", false)] {
            let mut upstream = stripped();
            let mut request = trace.start(&downstream, client.parse().ok(), "id");
            assert!(!request.is_recording());
            trace.propagate(
                &downstream,
                client.parse().ok(),
                &mut upstream,
                &mut request,
                None,
            );
            for name in [TRACEPARENT, TRACESTATE] {
                assert_eq!(
                    upstream.headers.get(name),
                    passes.then(|| downstream.headers.get(name).unwrap()),
                    "{name} from {client}"
                );
            }
        }
        assert!(!context(false, &[]).is_active());
    }

    /// The `traceparent` the upstream gets while spans are recorded (by a tracer with no
    /// exporter), as (trace id, parent span id).
    fn propagated_while_tracing(client: &str, downstream: &RequestHeader) -> (String, String) {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let trace = context(true, &["10.0.0.7"]);
            let client = client.parse().ok();
            let mut request = trace.start(downstream, client, "id");
            let mut upstream = stripped();
            trace.propagate(downstream, client, &mut upstream, &mut request, None);
            let traceparent = upstream.headers.get(TRACEPARENT).expect("a traceparent");
            let parts: Vec<&str> = traceparent.to_str().unwrap().split('-').collect();
            (parts[1].to_string(), parts[2].to_string())
        })
    }

    #[test]
    fn while_tracing_a_trusted_trace_continues_and_any_other_is_replaced() {
        let downstream = request_with_context();
        let (trace_id, parent) = propagated_while_tracing("10.0.0.7", &downstream);
        assert_eq!(trace_id, "0af7651916cd43dd8448eb211c80319c", "continued");
        assert_ne!(
            parent, "b7ad6b7169203331",
            "portcullis's span is the parent"
        );
        let (trace_id, _) = propagated_while_tracing("10.0.0.8", &downstream);
        assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c", "a new trace");
        let (trace_id, _) = propagated_while_tracing("10.0.0.7", &stripped());
        assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c", "a new trace");
    }

    #[test]
    fn methods_outside_the_registry_are_not_attributes() {
        assert_eq!(method_name(&http::Method::PATCH), "PATCH");
        let made_up = http::Method::from_bytes(b"EXFILTRATE-S3CR3T").unwrap();
        assert_eq!(method_name(&made_up), "_OTHER");
    }
}
