//! Browser-facing defences beyond the CSRF header: Fetch Metadata and `Origin` checks (R33),
//! CORS for explicitly trusted origins only (R34), the `Host` a request may name, and the
//! header size the forwarded request may reach (R48).

use std::borrow::Cow;

use http::header::HeaderName;
use http::Method;
use pingora::http::RequestHeader;

use super::error::ProxyError;
use super::host::host_of;
use crate::config::{HostPattern, SecurityConfig};

/// The origins portcullis trusts: its own public origin, configured ones (exact match), and for
/// a request to a host named by a route or the ingress auth mode, that host's own origin (at
/// `public_url`'s scheme and port), not its siblings': a page on one host is cross-origin to
/// the others.
pub struct TrustedOrigins {
    public: String,
    others: Vec<String>,
    own: OurHosts,
}

impl TrustedOrigins {
    pub fn new(public: &str, security: &SecurityConfig, own: OurHosts) -> TrustedOrigins {
        TrustedOrigins {
            public: public.to_string(),
            others: security.allowed_origins.clone(),
            own,
        }
    }

    /// `host`: the host the request is for (without port).
    fn is_trusted(&self, origin: &str, host: &str) -> bool {
        origin == self.public
            || self.others.iter().any(|o| o == origin)
            || self.own.is_own_origin(origin, host)
    }

    /// The CORS-trusted origin of a request, if any (never the public origin: same-origin
    /// requests need no CORS headers).
    pub fn cors_origin<'r>(&self, req: &'r RequestHeader) -> Option<&'r str> {
        let origin = header(req, &http::header::ORIGIN)?;
        self.others.iter().any(|o| o == origin).then_some(origin)
    }

    /// Refuses requests a page on another site made the browser send: `Sec-Fetch-Site`
    /// must be same-origin (or none, a user-typed navigation) unless the `Origin` is trusted,
    /// and a present `Origin` must be trusted. SameSite cookies stay a second line (R35).
    pub fn check_request_origin(&self, req: &RequestHeader, host: &str) -> Result<(), ProxyError> {
        let origin = header(req, &http::header::ORIGIN);
        if let Some(o) = origin {
            if !self.is_trusted(o, host) {
                return Err(ProxyError::Forbidden("origin_not_trusted"));
            }
        }
        match header(req, &SEC_FETCH_SITE) {
            None | Some("same-origin") | Some("none") => Ok(()),
            Some(_) if origin.is_some_and(|o| self.others.iter().any(|t| t == o)) => Ok(()),
            Some(_) => Err(ProxyError::Forbidden("cross_site_request")),
        }
    }

    /// A WebSocket handshake cannot carry `X-CSRF`, so it must name a trusted `Origin`
    /// (browsers always send one on upgrades).
    pub fn check_upgrade_origin(&self, req: &RequestHeader, host: &str) -> Result<(), ProxyError> {
        match header(req, &http::header::ORIGIN) {
            Some(o) if self.is_trusted(o, host) => Ok(()),
            _ => Err(ProxyError::Forbidden("websocket_origin_not_trusted")),
        }
    }
}

/// Whether this is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && header(req, &http::header::ACCESS_CONTROL_REQUEST_METHOD).is_some()
}

/// Login is started only by a top-level navigation, never from a frame or by a script (L15).
pub fn check_top_level_navigation(req: &RequestHeader) -> Result<(), ProxyError> {
    match header(req, &SEC_FETCH_DEST) {
        None | Some("document") => Ok(()),
        Some(_) => Err(ProxyError::Forbidden("login_not_top_level")),
    }
}

/// The size of the request's header block, counted as on the wire. The edge has already held
/// it to `security.max_header_bytes`; the forwarded request adds `Authorization` to it.
pub fn header_block_bytes(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// The host names a request may be for: `public_url`'s, `server.allowed_hosts`, and the hosts
/// named by `routes[].host` and `ingress_auth.hosts`. Anything else was misdirected (a
/// DNS-rebinding page, a scanner, a wrong route in an ingress) and is answered 421 with nothing
/// forwarded (RFC 9110 §15.5.20). Ports are not compared: the name is what a rebinding attack
/// cannot fake.
#[derive(Clone)]
pub struct OurHosts {
    public: Option<String>,
    names: Vec<String>,
    /// Hosts named by `routes[].host` and `ingress_auth.hosts`.
    named: Vec<HostPattern>,
    /// `public_url`'s scheme and explicit port, which every host shares behind one ingress.
    scheme: String,
    port: Option<u16>,
}

impl OurHosts {
    pub fn new(public_origin: &str, allowed: &[String], named: &[HostPattern]) -> OurHosts {
        let url = url::Url::parse(public_origin).ok();
        let public = url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        OurHosts {
            names: public
                .iter()
                .cloned()
                .chain(allowed.iter().cloned())
                .collect(),
            public,
            named: named.to_vec(),
            scheme: url
                .as_ref()
                .map_or_else(|| "https".to_string(), |u| u.scheme().to_string()),
            port: url.as_ref().and_then(url::Url::port),
        }
    }

    /// `host`: the request's, as `request_host` reads it.
    pub fn check(&self, host: &str) -> Result<(), ProxyError> {
        if self.allows(host) {
            Ok(())
        } else {
            Err(ProxyError::Misdirected)
        }
    }

    /// Whether `host` (without port, any case) is one of portcullis's.
    pub fn allows(&self, host: &str) -> bool {
        self.names.iter().any(|h| h.eq_ignore_ascii_case(host)) || self.is_named_host(host)
    }

    fn is_named_host(&self, host: &str) -> bool {
        let lower = host.to_ascii_lowercase();
        self.named.iter().any(|p| p.matches(&lower))
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `scheme://host[:port]` for a host behind the same ingress as `public_url`.
    fn origin_of(&self, host: &str) -> String {
        match self.port {
            Some(port) => format!("{}://{host}:{port}", self.scheme),
            None => format!("{}://{host}", self.scheme),
        }
    }

    /// Whether `origin` is the origin of `host`, one of the named hosts.
    fn is_own_origin(&self, origin: &str, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.is_named_host(&host) && self.origin_of(&host) == origin
    }

    /// A login started on a host named exactly (not by a wildcard: OPs match redirect URIs
    /// exactly) ends there: the OP sends the browser back to that host's `/bff/callback`
    /// (registered at the OP), whose cookies are that host's. `None`: the configured redirect
    /// URI.
    pub fn redirect_uri_for(&self, req: &RequestHeader) -> Option<url::Url> {
        let host = request_host(req).ok()?;
        let named_exactly = self.named.iter().any(|p| p.exact() == Some(host.as_ref()));
        if self.public.as_deref() == Some(host.as_ref()) || !named_exactly {
            return None;
        }
        url::Url::parse(&format!("{}/bff/callback", self.origin_of(&host))).ok()
    }

    /// An absolute `rd` target, accepted only on one of portcullis's hosts with `public_url`'s
    /// scheme and port, without userinfo, and with a path `validate_return_to` accepts; returned
    /// as portcullis writes it.
    pub fn absolute_return_to(&self, value: &str) -> Option<String> {
        let rest = value
            .strip_prefix(self.scheme.as_str())
            .and_then(|r| r.strip_prefix("://"))?;
        let (authority, path) = rest.split_at(rest.find('/')?);
        let host = host_of(authority)?;
        let expected = self.origin_of(&host);
        let origin = format!("{}://{}", self.scheme, authority.to_ascii_lowercase());
        if origin != expected || !self.allows(&host) || host.starts_with('[') {
            return None;
        }
        super::bff::validate_return_to(path).ok()?;
        Some(format!("{expected}{path}"))
    }
}

/// The lower-case host name a request names (the target's authority, else `Host`), without its
/// port.
pub fn request_host(req: &RequestHeader) -> Result<Cow<'_, str>, ProxyError> {
    let authority = match req.uri.authority() {
        Some(a) => a.as_str(),
        None => header(req, &http::header::HOST).ok_or(ProxyError::BadRequest("host_missing"))?,
    };
    host_of(authority).ok_or(ProxyError::BadRequest("host_malformed"))
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

// Looked up by `HeaderName`, not by string: a string name is parsed again on every lookup.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

fn header<'r>(req: &'r RequestHeader, name: &HeaderName) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> OurHosts {
        OurHosts::new(
            "https://auth.example.com",
            &["shop.svc".to_string()],
            &[
                HostPattern::Exact("app.example.com".into()),
                HostPattern::Under(".apps.example.com".into()),
            ],
        )
    }

    fn request(host: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/bff/login", None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    #[test]
    fn absolute_return_targets_stay_on_our_hosts() {
        let h = hosts();
        for (ok, written) in [
            (
                "https://app.example.com/x?y=1",
                "https://app.example.com/x?y=1",
            ),
            ("https://APP.example.com/", "https://app.example.com/"),
            (
                "https://a.apps.example.com/r",
                "https://a.apps.example.com/r",
            ),
            ("https://auth.example.com/", "https://auth.example.com/"),
            ("https://shop.svc/", "https://shop.svc/"),
        ] {
            assert_eq!(h.absolute_return_to(ok).as_deref(), Some(written), "{ok}");
        }
        for bad in [
            "https://evil.test/",
            "http://app.example.com/",
            "https://app.example.com",
            "https://app.example.com:8443/",
            "https://app.example.com.evil.test/",
            "https://app.example.com@evil.test/",
            "https://evil.test\\@app.example.com/",
            "https://evil.test/@app.example.com/",
            "https://apps.example.com/",
            "https://app.example.com//evil.test/",
            "https://app.example.com/%2F%2Fevil.test",
            "https://app.example.com/bff/logout",
            "https://app.example.com/a/../b",
            "https://app.example.com/a\r\nSet-Cookie:x",
            "https:/\\evil.test",
            "https:evil.test",
            "//app.example.com/",
            "javascript:alert(1)",
        ] {
            let got = h.absolute_return_to(bad);
            assert!(got.is_none(), "{bad:?} accepted as {got:?}");
        }
    }

    #[test]
    fn logins_on_ingress_hosts_return_to_their_own_callback() {
        let h = hosts();
        assert_eq!(
            h.redirect_uri_for(&request("app.example.com"))
                .map(String::from),
            Some("https://app.example.com/bff/callback".to_string())
        );
        assert_eq!(
            h.redirect_uri_for(&request("APP.example.com:443"))
                .map(String::from),
            Some("https://app.example.com/bff/callback".to_string())
        );
        assert_eq!(
            h.redirect_uri_for(&request("x.apps.example.com")),
            None,
            "a wildcard host's callbacks cannot all be registered"
        );
        assert_eq!(h.redirect_uri_for(&request("auth.example.com")), None);
        assert_eq!(h.redirect_uri_for(&request("shop.svc")), None);
        assert!(h.check("x.apps.example.com").is_ok());
        assert!(h.check("apps.example.com").is_err());
    }

    #[test]
    fn an_ingress_host_trusts_its_own_origin_only() {
        let h = hosts();
        assert!(h.is_own_origin("https://app.example.com", "app.example.com"));
        assert!(h.is_own_origin("https://b.apps.example.com", "B.apps.example.com"));
        assert!(!h.is_own_origin("https://app.example.com", "b.apps.example.com"));
        assert!(!h.is_own_origin("http://app.example.com", "app.example.com"));
        assert!(!h.is_own_origin("https://app.example.com:8443", "app.example.com"));
        assert!(!h.is_own_origin("https://evil.test", "evil.test"));
    }
}
