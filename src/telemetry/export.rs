//! Span export over OTLP/HTTP with protobuf bodies. OpenTelemetry's batch processor runs on a
//! thread of its own: request threads only queue finished spans, and when the queue is full
//! (the collector is slow or down) spans are dropped, never waited for. Each batch is sent by
//! [`OtlpClient`], on the reqwest client portcullis already carries for the OP, from a one-thread
//! Tokio runtime that does nothing else.
//!
//! Why not gRPC as well: every collector (and Jaeger) takes OTLP/HTTP on port 4318, and the
//! gRPC exporter would add tonic and six more crates to the build for no new reach.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::TraceExport;

/// An OTLP response is a small status message; a collector that sends more is not read further.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot start the trace export thread: {0}")]
    Runtime(std::io::Error),
    #[error("cannot build the trace export HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running export: spans recorded through [`TracePipeline::tracer`] reach the collector
/// until [`TracePipeline::shutdown`] or drop, which send what is still queued.
pub struct TracePipeline {
    provider: SdkTracerProvider,
    export_timeout: Duration,
}

impl TracePipeline {
    pub fn start(cfg: &TraceExport) -> Result<TracePipeline, ExportError> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpClient::new(cfg.export_timeout)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.as_str())
            .with_timeout(cfg.export_timeout)
            .build()?;
        // A caller's sampling decision is kept (its trace is recorded or not as a whole); the
        // ratio applies to the traces portcullis starts.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sampling_ratio)));
        // `Resource::builder` also reads OTEL_RESOURCE_ATTRIBUTES (pod name, namespace, …).
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Ok(TracePipeline {
            provider,
            export_timeout: cfg.export_timeout,
        })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(env!("CARGO_PKG_NAME"))
    }

    /// Sends the spans still queued (waiting at most the export timeout) and stops exporting.
    /// Later calls do nothing.
    pub fn shutdown(&self) {
        match self.provider.shutdown_with_timeout(self.export_timeout) {
            Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
            Err(e) => tracing::warn!(error = %e, "the last spans could not be exported"),
        }
    }
}

impl Drop for TracePipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sends OTLP requests for the batch processor. The processor awaits each export on its own
/// thread without a Tokio runtime, which reqwest needs, so the request runs on a runtime of
/// its own and the processor awaits only its result.
#[derive(Debug)]
struct OtlpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl OtlpClient {
    fn new(timeout: Duration) -> Result<OtlpClient, ExportError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A collector has no reason to redirect; following one would send spans elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ExportError::Client)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-otlp")
            .enable_all()
            .build()
            .map_err(ExportError::Runtime)?;
        Ok(OtlpClient { http, runtime })
    }
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let sent = self.runtime.spawn(send(self.http.clone(), request));
        sent.await?
    }
}

async fn send(
    http: reqwest::Client,
    request: reqwest::Request,
) -> Result<http::Response<Bytes>, HttpError> {
    let mut response = http.execute(request).await?;
    let mut answer = http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = std::mem::take(response.headers_mut());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("the collector's response is too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(answer.body(Bytes::from(body))?)
}
