//! Browser-facing defences beyond the CSRF header: Fetch Metadata and `Origin` checks (R33),
//! CORS for explicitly trusted origins only (R34), and the size limits a browser never needs
//! to exceed (R48).

use http::Method;
use pingora::http::RequestHeader;

use super::error::ProxyError;
use crate::config::SecurityConfig;

/// The origins portcullis trusts: its own public origin plus configured ones, exact match.
pub struct TrustedOrigins {
    public: String,
    others: Vec<String>,
}

impl TrustedOrigins {
    pub fn new(public: &str, security: &SecurityConfig) -> TrustedOrigins {
        TrustedOrigins {
            public: public.to_string(),
            others: security.allowed_origins.clone(),
        }
    }

    fn is_trusted(&self, origin: &str) -> bool {
        origin == self.public || self.others.iter().any(|o| o == origin)
    }

    /// The CORS-trusted origin of a request, if any (never the public origin: same-origin
    /// requests need no CORS headers).
    pub fn cors_origin<'r>(&self, req: &'r RequestHeader) -> Option<&'r str> {
        let origin = header(req, "origin")?;
        self.others.iter().any(|o| o == origin).then_some(origin)
    }

    /// Refuses requests a page on another site made the browser send: `Sec-Fetch-Site`
    /// must be same-origin (or none, a user-typed navigation) unless the `Origin` is trusted,
    /// and a present `Origin` must be trusted. SameSite cookies stay a second line (R35).
    pub fn check_request_origin(&self, req: &RequestHeader) -> Result<(), ProxyError> {
        let origin = header(req, "origin");
        if let Some(o) = origin {
            if !self.is_trusted(o) {
                return Err(ProxyError::Forbidden("origin_not_trusted"));
            }
        }
        match header(req, "sec-fetch-site") {
            None | Some("same-origin") | Some("none") => Ok(()),
            Some(_) if origin.is_some_and(|o| self.others.iter().any(|t| t == o)) => Ok(()),
            Some(_) => Err(ProxyError::Forbidden("cross_site_request")),
        }
    }

    /// A WebSocket handshake cannot carry `X-CSRF`, so it must name a trusted `Origin`
    /// (browsers always send one on upgrades).
    pub fn check_upgrade_origin(&self, req: &RequestHeader) -> Result<(), ProxyError> {
        match header(req, "origin") {
            Some(o) if self.is_trusted(o) => Ok(()),
            _ => Err(ProxyError::Forbidden("websocket_origin_not_trusted")),
        }
    }
}

/// Whether this is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS && header(req, "access-control-request-method").is_some()
}

/// Login is started only by a top-level navigation, never from a frame or by a script (L15).
pub fn check_top_level_navigation(req: &RequestHeader) -> Result<(), ProxyError> {
    match header(req, "sec-fetch-dest") {
        None | Some("document") => Ok(()),
        Some(_) => Err(ProxyError::Forbidden("login_not_top_level")),
    }
}

/// URI, header and cookie sizes (414 / 431), checked before anything else reads them. Returns
/// the size of the header block, counted as on the wire.
pub fn check_sizes(req: &RequestHeader, limits: &SecurityConfig) -> Result<usize, ProxyError> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if req.headers.len() > limits.max_header_count {
        return Err(ProxyError::HeadersTooLarge("too_many_headers"));
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge("headers_too_large"));
    }
    let cookie_bytes: usize = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(|v| v.len())
        .sum();
    if cookie_bytes > limits.max_cookie_bytes {
        return Err(ProxyError::HeadersTooLarge("cookies_too_large"));
    }
    Ok(header_bytes)
}

/// The forwarded request also carries `Authorization: Bearer …`: an OP that issues very large
/// access tokens must not make portcullis send a header block past the same limit, which the
/// upstream would refuse or cut.
pub fn check_forwarded_size(
    header_bytes: usize,
    bearer: &http::HeaderValue,
    limits: &SecurityConfig,
) -> Result<(), ProxyError> {
    let authorization_line = "authorization".len() + bearer.len() + 4;
    if header_bytes + authorization_line > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge("upstream_headers_too_large"));
    }
    Ok(())
}

fn header<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}
