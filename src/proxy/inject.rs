//! The upstream request: strip what the client must not control, then add what portcullis
//! vouches for. Stripping happens first, so a client cannot name `Authorization` in
//! `Connection` to delete the injected token (R44).

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use super::hop_by_hop::{connection_tokens, HOP_BY_HOP};
use crate::session::cookie::CookiePolicy;

/// Credentials and identity/forwarding claims only portcullis may set. Matched after
/// lower-casing and mapping `_` to `-`, because WSGI/PHP upstreams treat both alike
/// (oauth2-proxy GHSA-vjrc-mh2v-45x6). The W3C trace context too: portcullis sets it itself,
/// continuing only a trusted caller's (`telemetry::propagation`).
const CLIENT_FORBIDDEN: [&str; 12] = [
    "authorization",
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
    pub client_ip: Option<String>,
    pub public_proto: &'a HeaderValue,
    pub public_host: Option<&'a HeaderValue>,
    pub websocket: bool,
}

pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    cookies: &CookiePolicy,
    add: Injection<'_>,
) -> pingora::Result<()> {
    let forwarded_cookies = cookies.forwardable_cookies(&req.headers);
    for name in names_to_strip(req, add.websocket) {
        req.remove_header(&name);
    }
    req.remove_header(&http::header::COOKIE);
    if let Some(c) = forwarded_cookies {
        req.insert_header(http::header::COOKIE, c)?;
    }
    if let Some(bearer) = add.bearer {
        req.insert_header(http::header::AUTHORIZATION, bearer.clone())?;
    }
    if let Some(ip) = add.client_ip {
        req.insert_header("x-forwarded-for", ip)?;
    }
    req.insert_header("x-forwarded-proto", add.public_proto.clone())?;
    if let Some(host) = add.public_host {
        req.insert_header("x-forwarded-host", host.clone())?;
    }
    Ok(())
}

fn names_to_strip(req: &RequestHeader, websocket: bool) -> Vec<HeaderName> {
    let nominated = connection_tokens(&req.headers);
    let mut strip = Vec::new();
    for name in req.headers.keys() {
        // Most names have no `_`: borrow them rather than allocate per header per request.
        let normalized: Cow<'_, str> = if name.as_str().contains('_') {
            Cow::Owned(name.as_str().replace('_', "-"))
        } else {
            Cow::Borrowed(name.as_str())
        };
        let normalized = normalized.as_ref();
        let keep_for_upgrade = websocket && (normalized == "upgrade" || normalized == "connection");
        let hop = (HOP_BY_HOP.contains(&normalized) || nominated.iter().any(|n| n == normalized))
            && !keep_for_upgrade;
        let forbidden = CLIENT_FORBIDDEN.contains(&normalized)
            || CLIENT_FORBIDDEN_PREFIXES
                .iter()
                .any(|p| normalized.starts_with(p));
        if hop || forbidden {
            strip.push(name.clone());
        }
    }
    strip
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
            ("connection", "keep-alive, x-custom, authorization"),
            ("x-custom", "1"),
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
            client_ip: Some("192.0.2.1".into()),
            public_proto: &proto,
            public_host: Some(&host),
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
            "x-custom",
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
}
