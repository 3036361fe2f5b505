//! The webhook's serving certificate, reloaded while running: the chart mounts it from a
//! Secret that cert-manager (or a `helm upgrade`) may rotate, and the kubelet swaps the files
//! in place. `CertReloader` polls the files and, when their bytes change, swaps the key that
//! `ReloadingCert` hands to every new TLS handshake. A bad new pair is logged and ignored: the
//! old certificate keeps serving rather than the webhook failing closed for every pod.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

use super::config::TlsFiles;
use super::error::RunError;
use super::http::WebhookMetrics;

/// The certificate every new handshake gets.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn load(files: &TlsFiles, metrics: &WebhookMetrics) -> Result<ReloadingCert, RunError> {
        let key = load_pair(&files.cert_file, &files.key_file).map_err(|reason| {
            RunError::Certificate {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
                reason,
            }
        })?;
        record_expiry(metrics, &key);
        Ok(ReloadingCert {
            current: RwLock::new(Arc::new(key)),
        })
    }

    fn replace(&self, key: CertifiedKey) {
        // A poisoned lock only means a reader panicked; the value inside is still whole.
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(key);
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(current.clone())
    }
}

/// Reads and checks a PEM certificate chain and its private key.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider is installed")?;
    let (chain, private_key) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| e.to_string())?
            .ok_or("the files hold no certificate or no private key")?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| e.to_string())
}

/// When the leaf certificate stops being valid, in Unix seconds.
fn expiry_of(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Publishes the expiry of the certificate now serving, which the chart's alert watches: a
/// rotation that never arrives (cert-manager stuck, a Secret not renewed) shows up there.
fn record_expiry(metrics: &WebhookMetrics, key: &CertifiedKey) {
    match expiry_of(key) {
        Some(not_after) => metrics.tls_certificate_expiry.set(not_after),
        None => tracing::warn!("cannot read the serving certificate's expiry date"),
    }
}

/// Polls the certificate files and reloads them when their contents change.
pub struct CertReloader {
    pub cert: Arc<ReloadingCert>,
    pub files: TlsFiles,
    pub metrics: Arc<WebhookMetrics>,
}

impl CertReloader {
    fn contents(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        Some((
            std::fs::read(&self.files.cert_file).ok()?,
            std::fs::read(&self.files.key_file).ok()?,
        ))
    }

    fn reload(&self) {
        let cert_file = &self.files.cert_file;
        match load_pair(cert_file, &self.files.key_file) {
            Ok(key) => {
                record_expiry(&self.metrics, &key);
                self.cert.replace(key);
                self.metrics
                    .tls_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(cert = %cert_file.display(), "webhook TLS certificate reloaded");
            }
            Err(reason) => {
                self.metrics
                    .tls_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::warn!(cert = %cert_file.display(), %reason, "new webhook TLS certificate rejected; the previous one keeps serving");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = self.contents();
        let mut tick =
            tokio::time::interval(self.files.reload_interval.max(Duration::from_millis(50)));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let now = self.contents();
                    // A pair caught half-written (new cert, old key) fails to load; the
                    // second write changes the bytes again and triggers another attempt.
                    if now.is_some() && now != seen {
                        self.reload();
                        seen = now;
                    }
                }
            }
        }
    }
}
