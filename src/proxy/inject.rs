//! The upstream request: strip what the client must not control, then add what portcullis
//! vouches for. Stripping happens first, so a client cannot name `Authorization` in
//! `Connection` to delete the injected token (R44). The fields a `Connection` header nominates
//! are already gone, with `Connection` itself: Pingora's default upstream request policy removes
//! them before this filter runs (portcullis never sets another policy).

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use pingora::http::RequestHeader;
use pingora::{ErrorType::InvalidHTTPHeader, OrErr};
use smallvec::SmallVec;

use super::header_map;
use super::hop_by_hop::is_hop_by_hop;
use crate::session::cookie::CookiePolicy;

/// Credentials and identity/forwarding claims only portcullis may set. Matched after
/// lower-casing and mapping `_` to `-`, because WSGI/PHP upstreams treat both alike
/// (oauth2-proxy GHSA-vjrc-mh2v-45x6). The W3C trace context too: portcullis sets it itself,
/// continuing only a trusted caller's (`telemetry::propagation`).
const CLIENT_FORBIDDEN: [&str; 13] = [
    "authorization",
    // A client's own DPoP proof would stand beside (or for) the one portcullis makes.
    "dpop",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "x-remote-user",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-csrf",
    "traceparent",
    "tracestate",
];
const CLIENT_FORBIDDEN_PREFIXES: [&str; 3] = ["x-forwarded-", "x-original-", "x-auth-request-"];

/// What portcullis adds toward the upstream, prepared by the proxy from the request context.
pub struct Injection<'a> {
    pub bearer: Option<&'a HeaderValue>,
    pub client_ip: Option<HeaderValue>,
    pub public_proto: &'a HeaderValue,
    /// The host the browser addressed (already screened as one of portcullis's).
    pub forwarded_host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    pub websocket: bool,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    cookies: &CookiePolicy,
    add: Injection<'_>,
) -> pingora::Result<()> {
    let forwarded_cookies = match cookies.forwardable_cookies(&req.headers) {
        Some(c) => Some(HeaderValue::try_from(c).or_err(InvalidHTTPHeader, "forwarded cookies")?),
        None => None,
    };
    header_map::edit_request(req, |headers| {
        for name in names_to_strip(headers, add.websocket) {
            headers.remove(&name);
        }
        headers.remove(COOKIE);
        let added = [
            forwarded_cookies.map(|c| (COOKIE, c)),
            add.bearer.map(|b| (AUTHORIZATION, b.clone())),
            add.client_ip.map(|ip| (X_FORWARDED_FOR, ip)),
            Some((X_FORWARDED_PROTO, add.public_proto.clone())),
            add.forwarded_host.map(|h| (X_FORWARDED_HOST, h)),
            Some((X_REQUEST_ID, add.request_id.clone())),
        ];
        // Reserved exactly: the map was cloned from the client's, with room for its fields only.
        headers.try_reserve(added.iter().flatten().count())?;
        for (name, value) in added.into_iter().flatten() {
            headers.try_insert(name, value)?;
        }
        Ok(())
    })
}

fn names_to_strip(headers: &HeaderMap, websocket: bool) -> SmallVec<[HeaderName; 4]> {
    let mut strip = SmallVec::new();
    for name in headers.keys() {
        // Most names have no `_`: borrow them rather than allocate per header per request.
        let normalized: Cow<'_, str> = if name.as_str().as_bytes().contains(&b'_') {
            Cow::Owned(name.as_str().replace('_', "-"))
        } else {
            Cow::Borrowed(name.as_str())
        };
        let normalized = normalized.as_ref();
        let keep_for_upgrade = websocket && (normalized == "upgrade" || normalized == "connection");
        let hop = is_hop_by_hop(normalized) && !keep_for_upgrade;
        if hop || is_client_forbidden(normalized) {
            strip.push(name.clone());
        }
    }
    strip
}

fn is_client_forbidden(name: &str) -> bool {
    CLIENT_FORBIDDEN.contains(&name)
        || CLIENT_FORBIDDEN_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// A client address as an `X-Forwarded-For` value. IPv4 is written by hand: `Display` goes
/// through the formatting machinery, a measurable share of a proxied request.
pub fn ip_header_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                len += write_decimal(octet, &mut text[len..]);
            }
            HeaderValue::from_bytes(text.get(..len)?).ok()
        }
        IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()).ok(),
    }
}

/// Writes `n` in decimal at the start of `out` (room for three digits), returning its length.
fn write_decimal(n: u8, out: &mut [u8]) -> usize {
    let digits = [n / 100, n / 10 % 10, n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    for (slot, d) in out.iter_mut().zip(&digits[skip..]) {
        *slot = b'0' + d;
    }
    3 - skip
}

/// Whether the request is a WebSocket upgrade Pingora may tunnel.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cookie::test_policy as policy;

    #[test]
    fn strips_client_credentials_forwarding_and_hop_by_hop_then_injects() {
        let mut req = RequestHeader::build("GET", b"/api/x", None).unwrap();
        for (k, v) in [
            ("authorization", "Basic YTpi"),
            ("proxy-authorization", "Basic YTpi"),
            ("connection", "keep-alive, authorization"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x_forwarded_user", "admin"),
            ("x-auth-request-email", "ceo@corp"),
            ("x-real-ip", "127.0.0.1"),
            ("x-http-method-override", "DELETE"),
            ("cookie", "a=1; __Host-portcullis=secret; b=2"),
            ("accept", "application/json"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=chosen-by-the-client"),
        ] {
            req.append_header(k, v).unwrap();
        }
        let bearer = HeaderValue::from_static("Bearer t0k");
        let (proto, host) = (
            HeaderValue::from_static("https"),
            HeaderValue::from_static("app.example"),
        );
        let add = Injection {
            bearer: Some(&bearer),
            client_ip: ip_header_value("192.0.2.1".parse().unwrap()),
            public_proto: &proto,
            forwarded_host: Some(host),
            request_id: &HeaderValue::from_static("r-1"),
            websocket: false,
        };
        prepare_upstream_request(&mut req, &policy(), add).unwrap();
        let h = &req.headers;
        assert_eq!(
            h.get_all("authorization").iter().collect::<Vec<_>>(),
            vec!["Bearer t0k"]
        );
        for gone in [
            "proxy-authorization",
            "connection",
            "keep-alive",
            "te",
            "x_forwarded_user",
            "x-auth-request-email",
            "x-real-ip",
            "x-http-method-override",
            "traceparent",
            "tracestate",
        ] {
            assert!(h.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.1");
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(h.get("accept").unwrap(), "application/json");
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(ip).unwrap(), ip.to_string().as_str());
        }
    }
}
