//! The webhook's two HTTP apps and its metrics. `MutateApp` serves `POST /mutate` on the TLS
//! port (the API server's only caller); `AdminApp` serves `GET /healthz`, `/readyz` and
//! `/metrics` in plain HTTP on the admin port, for kubelet probes and Prometheus.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::error::RequestError;
use super::inject::SidecarSettings;
use super::review::{self, Decision};

/// The API server caps a request at 3 MiB of object; 4 MiB leaves room for the envelope.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Building a patch takes microseconds; the tail buckets catch a starved runtime.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
];
const RESULTS: [&str; 4] = ["injected", "skipped", "denied", "error"];
/// `outcome`, spelt as in every portcullis family.
const RELOAD_OUTCOMES: [&str; 2] = ["success", "failure"];

pub struct WebhookMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub tls_reloads: IntCounterVec,
    pub tls_certificate_expiry: IntGauge,
}

impl WebhookMetrics {
    pub fn new() -> Result<WebhookMetrics, prometheus::Error> {
        let m = WebhookMetrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new(
                    "portcullis_injector_requests_total",
                    "Admission reviews answered, by result",
                ),
                &["result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "portcullis_injector_request_duration_seconds",
                    "Time to answer an admission review",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["result"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(
                    "portcullis_injector_tls_reloads_total",
                    "Serving-certificate reloads, by outcome",
                ),
                &["outcome"],
            )?,
            tls_certificate_expiry: IntGauge::new(
                "portcullis_injector_tls_certificate_expiry_timestamp_seconds",
                "When the serving certificate in use stops being valid (its notAfter), in Unix seconds",
            )?,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.tls_reloads.clone()))?;
        m.registry
            .register(Box::new(m.tls_certificate_expiry.clone()))?;
        for r in RESULTS {
            m.requests.with_label_values(&[r]);
            m.duration.with_label_values(&[r]);
        }
        for o in RELOAD_OUTCOMES {
            m.tls_reloads.with_label_values(&[o]);
        }
        Ok(m)
    }

    fn observe(&self, result: &str, started: Instant) {
        self.requests.with_label_values(&[result]).inc();
        self.duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

pub struct MutateApp {
    pub settings: SidecarSettings,
    pub metrics: Arc<WebhookMetrics>,
}

impl MutateApp {
    async fn handle(&self, session: &mut ServerSession) -> Result<review::Answer, RequestError> {
        let json = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
        if !json {
            return Err(RequestError::UnsupportedMediaType);
        }
        let body = read_body(session).await?;
        review::answer(&body, &self.settings)
    }
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, RequestError> {
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| RequestError::BodyUnreadable)?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(RequestError::BodyTooLarge(MAX_BODY));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[async_trait]
impl ServeHttp for MutateApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = Instant::now();
        let req = session.req_header();
        if req.uri.path() != "/mutate" {
            return respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec());
        }
        if req.method != Method::POST {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"use POST\n".to_vec(),
            );
        }
        match self.handle(session).await {
            Ok(answer) => {
                log_decision(&answer);
                self.metrics.observe(answer.decision.label(), started);
                let body = serde_json::to_vec(&answer.body).unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            Err(e) => {
                tracing::warn!(error = %e, "admission request rejected");
                self.metrics.observe("error", started);
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                respond(status, "text/plain", format!("{e}\n").into_bytes())
            }
        }
    }
}

fn log_decision(answer: &review::Answer) {
    let response = &answer.body["response"];
    let uid = response["uid"].as_str().unwrap_or("");
    match answer.decision {
        Decision::Denied => {
            let message = response["status"]["message"].as_str().unwrap_or("");
            tracing::info!(uid, reason = %crate::text::sanitize(message), "pod denied");
        }
        d => tracing::debug!(uid, result = d.label(), "admission review answered"),
    }
}

pub struct AdminApp {
    pub metrics: Arc<WebhookMetrics>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            );
        }
        match req.uri.path() {
            // The certificate is loaded before the listeners open, and a failed reload keeps
            // the old one: once this answers at all, the webhook can serve.
            "/healthz" | "/readyz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let len = resp.body().len();
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    resp
}
