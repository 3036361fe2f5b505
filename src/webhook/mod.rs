//! `portcullis webhook`: the mutating admission webhook that injects portcullis as a sidecar
//! into pods labelled or annotated `bff.portcullis.dev/inject: "true"`.
//!
//! ```text
//! API server ──TLS POST /mutate──▶ http::MutateApp ─▶ review::answer ─▶ inject::sidecar_patch
//!                                                                          (sidecar: the container)
//!                                   (tls::ReloadingCert serves the mounted, hot-reloaded cert)
//! kubelet, Prometheus ──HTTP──▶ http::AdminApp: /healthz /readyz /metrics
//! ```
//!
//! Nothing here calls the Kubernetes API: the decision uses only the review itself, so the
//! webhook has no side effects, needs no RBAC and answers in microseconds.

mod annotations;
pub mod config;
pub mod error;
mod http;
pub mod inject;
pub mod review;
mod sidecar;
mod tls;

use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service as ListeningService;

pub use config::WebhookConfig;
pub use error::{RunError, WebhookError};

/// Serves until SIGTERM. The certificate is loaded and the addresses checked first, so a bad
/// certificate or a taken port fails the start.
pub fn run(cfg: WebhookConfig) -> Result<(), RunError> {
    let metrics = Arc::new(http::WebhookMetrics::new()?);
    let cert = Arc::new(tls::ReloadingCert::load(&cfg.tls, &metrics)?);
    crate::listen::check_listen_addresses(&[
        ("listen", cfg.listen),
        ("admin_listen", cfg.admin_listen),
    ])?;

    let mut server = Server::new_with_opt_and_conf(None, server_conf());
    server.bootstrap();
    server.add_service(background_service(
        "webhook certificate reloader",
        tls::CertReloader {
            cert: cert.clone(),
            files: cfg.tls.clone(),
            metrics: metrics.clone(),
        },
    ));

    let mut mutate = ListeningService::new(
        "portcullis webhook".to_string(),
        HttpServer::new_app(http::MutateApp {
            settings: cfg.sidecar.clone(),
            metrics: metrics.clone(),
        }),
    );
    // The resolver replaces the file paths `intermediate` takes; it serves the reloaded pair.
    let mut tls = TlsSettings::intermediate("", "").map_err(|e| RunError::Certificate {
        cert: cfg.tls.cert_file.clone(),
        key: cfg.tls.key_file.clone(),
        reason: e.to_string(),
    })?;
    tls.set_cert_resolver(cert);
    mutate.add_tls_with_settings(&cfg.listen.to_string(), None, tls);
    server.add_service(mutate);

    let mut admin = ListeningService::new(
        "portcullis webhook admin".to_string(),
        HttpServer::new_app(http::AdminApp { metrics }),
    );
    admin.threads = Some(1);
    admin.add_tcp(&cfg.admin_listen.to_string());
    server.add_service(admin);

    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, "portcullis webhook starting");
    server.run(RunArgs::default());
    Ok(())
}

fn server_conf() -> ServerConf {
    ServerConf {
        threads: 2,
        // The API server retries nothing and times out after 5 s (the chart's timeoutSeconds):
        // a short grace lets in-flight reviews finish while the endpoint is removed.
        grace_period_seconds: Some(3),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}
