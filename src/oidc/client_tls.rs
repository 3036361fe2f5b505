//! `tls_client_auth` (RFC 8705 §2.1): the client certificate portcullis presents to the OP
//! over mutual TLS, and the CA bundle the OP's own certificate may chain to. The certificate
//! and key are read again whenever either file changes, so they can rotate without a restart.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use openidconnect::reqwest;

use crate::config::{ClientTlsConfig, OidcConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1} (check the path and its permissions)")]
    Read(String, String),
    #[error("{0}: holds no certificate (write the client certificate as PEM, \"BEGIN CERTIFICATE\", leaf first)")]
    NoCertificate(String),
    #[error(
        "{0}: holds no private key (write the certificate's key as PEM, \"BEGIN PRIVATE KEY\")"
    )]
    NoKey(String),
    #[error("the certificate and key do not make a TLS client identity: {0} (check that the key belongs to the certificate)")]
    Identity(String),
    #[error("holds no certificate (write the CA certificates the provider's certificate chains to, as PEM)")]
    NoCa,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e.to_string()))
}

/// The client certificate chain and key as one TLS identity.
pub fn identity(cfg: &ClientTlsConfig) -> Result<reqwest::Identity, TlsError> {
    let cert = read(&cfg.certificate_file)?;
    let key = read(&cfg.key_file)?;
    if !rustls_pemfile::certs(&mut cert.as_slice()).any(|c| c.is_ok()) {
        return Err(TlsError::NoCertificate(
            cfg.certificate_file.display().to_string(),
        ));
    }
    if !matches!(
        rustls_pemfile::private_key(&mut key.as_slice()),
        Ok(Some(_))
    ) {
        return Err(TlsError::NoKey(cfg.key_file.display().to_string()));
    }
    let mut pem = cert;
    pem.push(b'\n');
    pem.extend_from_slice(&key);
    reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::Identity(super::error_chain(&e)))
}

/// The certificates of a CA bundle.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, TlsError> {
    match reqwest::Certificate::from_pem_bundle(pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(TlsError::NoCa),
    }
}

/// Adds the configured CA bundle and client identity to an HTTP client for the OP.
pub fn configure(
    mut builder: reqwest::ClientBuilder,
    cfg: &OidcConfig,
) -> Result<reqwest::ClientBuilder, TlsError> {
    if let Some(path) = &cfg.tls_ca_file {
        for cert in ca_certificates(&read(path)?)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(tls) = &cfg.client_tls {
        builder = builder.identity(identity(tls)?);
    }
    Ok(builder)
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The HTTP client with the current certificate: built again when the certificate or key file
/// changes. A change that does not make a usable identity (a rotation half written) keeps the
/// previous client, with a warning.
pub struct ClientTlsSource {
    cfg: OidcConfig,
    current: Mutex<(Stamp, Stamp, reqwest::Client)>,
}

impl ClientTlsSource {
    pub fn new(cfg: &OidcConfig, client: reqwest::Client) -> Option<ClientTlsSource> {
        let tls = cfg.client_tls.as_ref()?;
        let stamps = (stamp(&tls.certificate_file), stamp(&tls.key_file));
        Some(ClientTlsSource {
            cfg: cfg.clone(),
            current: Mutex::new((stamps.0, stamps.1, client)),
        })
    }

    pub fn client(&self) -> reqwest::Client {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tls) = &self.cfg.client_tls else {
            return current.2.clone();
        };
        let stamps = (stamp(&tls.certificate_file), stamp(&tls.key_file));
        if (current.0, current.1) == stamps {
            return current.2.clone();
        }
        match super::http_client(&self.cfg) {
            Ok(client) => {
                tracing::info!(file = %tls.certificate_file.display(), "client certificate changed; new certificate in use");
                *current = (stamps.0, stamps.1, client);
            }
            Err(e) => {
                tracing::warn!(reason = "client_certificate_reload_failed", error = %e, "client certificate unusable; the previous one stays in use");
                // Not again until the files change once more.
                current.0 = stamps.0;
                current.1 = stamps.1;
            }
        }
        current.2.clone()
    }
}
