//! `telemetry.*`: OpenTelemetry trace export, and the callers whose trace context is believed.

use std::net::IpAddr;

use super::Checker;
use crate::config::raw::RawTelemetry;
use crate::config::types::{IpNetwork, TelemetryConfig, TraceExport};

/// OTLP/HTTP's standard address: a collector beside portcullis (sidecar or node agent).
const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";
const DEFAULT_SERVICE_NAME: &str = "portcullis";
const MAX_SERVICE_NAME: usize = 255;

impl Checker<'_> {
    /// The export keys are checked even while tracing is off, so a mistake shows before the
    /// day someone turns it on.
    pub(super) fn telemetry(&mut self, raw: RawTelemetry) -> TelemetryConfig {
        let export = self.trace_export(&raw);
        let trusted_trace_callers =
            self.trusted_trace_callers(raw.trusted_trace_callers.as_deref().unwrap_or_default());
        TelemetryConfig {
            traces: export.filter(|_| raw.enabled.unwrap_or(false)),
            trusted_trace_callers,
        }
    }

    fn trace_export(&mut self, raw: &RawTelemetry) -> Option<TraceExport> {
        let endpoint = self.otlp_traces_url(raw.otlp_endpoint.as_deref());
        let sampling_ratio = raw.sampling_ratio.unwrap_or(1.0);
        // `contains` is false for NaN too.
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.problem(
                "telemetry.sampling_ratio",
                "must be between 0 and 1 (e.g. 0.1 records one new trace in ten)",
            );
        }
        let service_name = raw
            .service_name
            .as_deref()
            .unwrap_or(DEFAULT_SERVICE_NAME)
            .trim()
            .to_string();
        if service_name.is_empty()
            || service_name.len() > MAX_SERVICE_NAME
            || service_name.contains(char::is_control)
        {
            self.problem(
                "telemetry.service_name",
                format!(
                    "must be 1 to {MAX_SERVICE_NAME} printable characters (e.g. \"portcullis\")"
                ),
            );
        }
        let export_timeout = self.duration(
            "telemetry.export_timeout",
            raw.export_timeout.as_deref(),
            "10s",
        );
        Some(TraceExport {
            endpoint: endpoint?,
            sampling_ratio,
            service_name,
            export_timeout,
        })
    }

    /// The collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it, with the traces
    /// path appended. Plain http is fine anywhere: spans carry no secret (see
    /// `telemetry::propagation`), and in-cluster collectors mostly listen without TLS.
    fn otlp_traces_url(&mut self, value: Option<&str>) -> Option<url::Url> {
        const KEY: &str = "telemetry.otlp_endpoint";
        let text = value.unwrap_or(DEFAULT_OTLP_ENDPOINT);
        let mut url = match url::Url::parse(text) {
            Ok(url) if url.scheme() == "http" || url.scheme() == "https" => url,
            Ok(_) => {
                self.problem(KEY, format!("{text:?} must be an http(s) URL (portcullis sends OTLP over HTTP/protobuf, usually to port 4318; gRPC is not supported)"));
                return None;
            }
            Err(e) => {
                self.problem(KEY, format!("{text:?} is not a URL: {e} (write the collector's base URL, e.g. \"http://otel-collector:4318\")"));
                return None;
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(
                KEY,
                "must not hold credentials (pass them as headers in OTEL_EXPORTER_OTLP_HEADERS)",
            );
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(KEY, "must not have a query or fragment (write the collector's base URL, e.g. \"http://otel-collector:4318\")");
            return None;
        }
        match url.path_segments_mut() {
            Ok(mut path) => {
                path.pop_if_empty().extend(["v1", "traces"]);
            }
            Err(()) => {
                self.problem(
                    KEY,
                    "must be the collector's base URL (e.g. \"http://otel-collector:4318\")",
                );
                return None;
            }
        }
        Some(url)
    }

    fn trusted_trace_callers(&mut self, entries: &[String]) -> Vec<IpNetwork> {
        let mut networks = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_network(entry) {
                Ok(network) => networks.push(network),
                Err(message) => {
                    self.problem(format!("telemetry.trusted_trace_callers[{i}]"), message)
                }
            }
        }
        networks
    }
}

/// `ADDRESS` or `ADDRESS/PREFIX-LENGTH`, IPv4 or IPv6.
pub(super) fn parse_network(entry: &str) -> Result<IpNetwork, String> {
    let not_a_network = || {
        format!("{entry:?} is not an IP address or network (write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"fd00::/8\")")
    };
    let (addr, prefix_len) = match entry.trim().split_once('/') {
        Some((addr, len)) => (addr, Some(len.parse::<u8>().map_err(|_| not_a_network())?)),
        None => (entry.trim(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| not_a_network())?;
    let prefix_len = prefix_len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
    IpNetwork::new(addr, prefix_len).ok_or_else(|| {
        format!("{entry:?} is not a network: its prefix length is too long, or the address has bits set past it (write the network's first address, e.g. \"10.0.0.0/8\")")
    })
}
