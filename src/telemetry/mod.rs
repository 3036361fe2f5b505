//! Logs and traces. Logs are text or JSON lines on stderr; `RUST_LOG` overrides the configured
//! level, which a configuration reload can change (`reload_log_level`). Nothing that could hold a secret is logged by value: see `secret::Secret`.
//!
//! Traces (`telemetry.*`, off by default) are OpenTelemetry spans made with `tracing` under
//! [`SPAN_TARGET`]: the request and its upstream call, session lookups and store operations,
//! the token refresh and its lock waits, and every call to the OP. The log filter turns that target off, so logs never show
//! these spans and, with tracing off, they are not even created (a disabled callsite costs a
//! couple of loads). With tracing on, a second layer exports them, with events at WARN and
//! above from portcullis's own modules (the same lines the log shows).

pub mod export;
pub mod propagation;

use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};
use export::{ExportError, TracePipeline};

/// The `tracing` target of every span meant for OpenTelemetry, and of nothing else.
pub const SPAN_TARGET: &str = "portcullis::otel";

/// Dependencies whose debug and trace events print whole requests, responses or commands
/// (Pingora prints request headers with cookies and the authorization code at trace level):
/// capped at `info` whatever `RUST_LOG` asks for, since a log must never hold a secret.
const CAPPED_TARGETS: [&str; 8] = [
    "pingora_proxy",
    "pingora_core",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "fred",
    "rustls",
];

/// Swaps the log filter of the installed subscriber; set once, by whichever init ran.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Logs only: the webhook's setup, and the proxy's while tracing is off.
pub fn init(log: &LogConfig) {
    let (filter, handle) = reload::Layer::new(log_filter(log));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(log_layer(log.format))
        .try_init();
    // A second init (tests that call serve twice in one process) is harmless; ignore it.
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Applies a reloaded `log.level` (`RUST_LOG`, when set, still wins, as at start-up). Events
/// already being written finish under the old filter.
pub fn reload_log_level(log: &LogConfig) -> Result<(), reload::Error> {
    match LOG_FILTER.get() {
        Some(handle) => handle.reload(log_filter(log)),
        None => Ok(()),
    }
}

/// The proxy's setup: logs, and span export when `telemetry.enabled`. The pipeline returned
/// must live until the process exits; dropping it sends the spans still queued.
pub fn init_with_traces(
    log: &LogConfig,
    telemetry: &TelemetryConfig,
) -> Result<Option<TracePipeline>, ExportError> {
    let Some(export) = &telemetry.traces else {
        init(log);
        return Ok(None);
    };
    let pipeline = TracePipeline::start(export)?;
    // Per-layer filters: the log's filter must not hide the spans from the exporter.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(pipeline.tracer())
        // Parents are found through `tracing`'s own span stack; activating an OpenTelemetry
        // context on every enter would only cost time. Thread names, source locations, busy
        // and idle times and the target would add attributes to every span for no use.
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_filter(Exported);
    let (filter, handle) = reload::Layer::new(log_filter(log));
    let installed = tracing_subscriber::registry()
        .with(log_layer(log.format).with_filter(filter))
        .with(spans)
        .try_init();
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
    Ok(Some(pipeline))
}

fn log_filter(log: &LogConfig) -> EnvFilter {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let directives = CAPPED_TARGETS
        .iter()
        .map(|target| format!("{target}=info"))
        .chain([format!("{SPAN_TARGET}=off")]);
    for directive in directives {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.with_ansi(false).boxed(),
    }
}

/// What reaches OpenTelemetry: the spans under [`SPAN_TARGET`], and warnings and errors that
/// portcullis logs while one is current. Decided once per callsite.
struct Exported;

impl Exported {
    fn wants(meta: &Metadata<'_>) -> bool {
        if meta.is_span() {
            meta.target() == SPAN_TARGET
        } else {
            meta.target().starts_with("portcullis") && *meta.level() <= Level::WARN
        }
    }
}

impl<S> Filter<S> for Exported {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Exported::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if Exported::wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// One line per security-relevant event (login, logout, refresh failure, back-channel logout)
/// under the `audit` target, with a stable outcome and reason code. The subject is an OP
/// identifier, not a secret; tokens, cookies and codes are never among the fields.
pub fn audit(event: &'static str, outcome: &'static str, reason: &str, sub: Option<&str>) {
    tracing::info!(target: "audit", event, outcome, reason, sub = sub.unwrap_or("-"), "audit");
}
