//! The admin listener, never on the browser-facing port:
//! `GET /healthz` (the process serves), `GET /readyz` (discovery loaded, the proxy port
//! accepting and the session store answering), `GET /metrics` (Prometheus text format, every
//! family `portcullis_`), `GET /.well-known/jwks.json` (the key that verifies identity
//! assertions; upstreams reach it in-cluster, browsers never).
//! It runs as its own Pingora service with its own runtime thread, so proxy load cannot queue
//! ahead of a probe.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::assertion::IdentityAssertions;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::session::Sessions;

/// A store that cannot answer a ping within this is not ready for traffic.
const READINESS_PING_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Admin {
    pub sessions: Arc<Sessions>,
    pub oidc: Arc<Oidc>,
    pub metrics: Arc<Metrics>,
    /// Publishes the identity assertion's verification key, when assertions are configured.
    pub assertions: Option<Arc<IdentityAssertions>>,
    pub proxy: ProxyListening,
}

/// Pingora binds the proxy's port in the proxy service's own thread, after the session store
/// connects, while this service may already be answering; a probe that said ready before the
/// bind would send traffic to a closed port. Until one connection to the port succeeds the
/// process is not ready; after that the answer is remembered, as the port stays bound until
/// exit.
pub struct ProxyListening {
    addr: SocketAddr,
    seen: AtomicBool,
}

impl ProxyListening {
    /// `listen` is the validated `listen` setting; a wildcard address is probed on loopback.
    pub fn new(listen: SocketAddr) -> ProxyListening {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        ProxyListening {
            addr: SocketAddr::new(ip, listen.port()),
            seen: AtomicBool::new(false),
        }
    }

    async fn accepting(&self) -> bool {
        if self.seen.load(Ordering::Relaxed) {
            return true;
        }
        let connect = tokio::net::TcpStream::connect(self.addr);
        let accepting = matches!(
            tokio::time::timeout(READINESS_PING_TIMEOUT, connect).await,
            Ok(Ok(_))
        );
        if accepting {
            self.seen.store(true, Ordering::Relaxed);
        }
        accepting
    }
}

impl Admin {
    async fn readiness(&self) -> Result<(), Cow<'static, str>> {
        // A provider that dropped a feature the configuration requires (PAR, private_key_jwt,
        // DPoP) still serves logins from the previous discovery, but not for long.
        if let Some(why) = self.oidc.incompatibility() {
            return Err(
                format!("identity provider no longer fits the configuration: {why}\n").into(),
            );
        }
        if !self.oidc.is_ready() {
            return Err("identity provider discovery has not completed\n".into());
        }
        if !self.proxy.accepting().await {
            return Err("the proxy port is not accepting connections yet\n".into());
        }
        match tokio::time::timeout(READINESS_PING_TIMEOUT, self.sessions.ping()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err("session store is not answering\n".into()),
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

#[async_trait]
impl ServeHttp for Admin {
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
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.readiness().await {
                Ok(()) => respond(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Err(why) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    why.as_bytes().to_vec(),
                ),
            },
            "/.well-known/jwks.json" => match &self.assertions {
                Some(a) => respond(
                    StatusCode::OK,
                    "application/jwk-set+json",
                    a.jwks().to_vec(),
                ),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no identity_assertion configured\n".to_vec(),
                ),
            },
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
