//! Routes with `dpop: true` forward the session's DPoP-bound token as `Authorization: DPoP`
//! with a fresh proof for this very request (RFC 9449 §7.1): `htm` its method, `htu` the
//! upstream's URL for its path, `ath` the token's hash. Other routes never reach this module,
//! so they pay nothing for it.

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use crate::config::Upstream;
use crate::oidc::dpop::UpstreamDpop;

pub fn authorize(
    req: &mut RequestHeader,
    dpop: &UpstreamDpop,
    upstream: &Upstream,
) -> pingora::Result<()> {
    let htu = htu(upstream, req.uri.path());
    let (authorization, proof) = dpop
        .headers(req.method.as_str(), &htu)
        .map_err(|e| Error::because(ErrorType::InternalError, "DPoP proof for the upstream", e))?;
    req.insert_header(http::header::AUTHORIZATION, authorization)?;
    req.insert_header("dpop", proof)
}

/// The upstream's URL for `path`, as a resource server normalises its own (RFC 3986 §6.2.3:
/// no default port), without the query (RFC 9449 §4.2).
fn htu(upstream: &Upstream, path: &str) -> String {
    let (scheme, default_port) = if upstream.tls {
        ("https", 443)
    } else {
        ("http", 80)
    };
    if upstream.port == default_port {
        let host = if upstream.host.contains(':') {
            format!("[{}]", upstream.host)
        } else {
            upstream.host.clone()
        };
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{}{path}", upstream.address())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(host: &str, port: u16, tls: bool) -> Upstream {
        Upstream {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn htu_is_the_upstream_url_without_a_default_port() {
        assert_eq!(
            htu(&upstream("api.internal", 443, true), "/v1/x"),
            "https://api.internal/v1/x"
        );
        assert_eq!(
            htu(&upstream("127.0.0.1", 8080, false), "/a"),
            "http://127.0.0.1:8080/a"
        );
        assert_eq!(htu(&upstream("::1", 80, false), "/"), "http://[::1]/");
    }
}
