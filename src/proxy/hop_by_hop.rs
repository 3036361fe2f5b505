//! Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection only, so they never cross
//! portcullis, in either direction. Requests are stripped in `inject`; responses here.

use http::header::HeaderMap;
use pingora::http::ResponseHeader;

/// The fixed hop-by-hop fields and relatives that must not cross a proxy.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
    "proxy-authenticate",
];

/// Fields whose removal would change how the message is delimited. A `Connection` that names
/// them is ignored for them: Pingora writes the framing downstream from these fields, so they
/// stay and the framing is regenerated consistently.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// The lower-cased field names a message's `Connection` headers nominate.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes an upstream response's hop-by-hop fields before it goes to the browser. A `101`
/// keeps `Upgrade` and a `Connection: upgrade` (the handshake needs them) and loses the rest;
/// Pingora writes its own `Connection` on every other response.
pub fn strip_from_response(resp: &mut ResponseHeader) {
    let switching = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    // Most responses carry none of these: look before removing, and allocate only for the
    // names a `Connection` header nominates.
    let nominated = if resp.headers.contains_key(http::header::CONNECTION) {
        connection_tokens(&resp.headers)
    } else {
        Vec::new()
    };
    let nominated = nominated
        .iter()
        .map(String::as_str)
        .filter(|n| !FRAMING.contains(n));
    for name in HOP_BY_HOP.into_iter().chain(nominated) {
        if !(switching && name == "upgrade") && resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
    if switching {
        // Cannot fail: a static, valid value.
        let _ = resp.insert_header(http::header::CONNECTION, "upgrade");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, None).unwrap();
        for (k, v) in fields {
            resp.append_header(k.to_string(), *v).unwrap();
        }
        resp
    }

    const UPSTREAM: [(&str, &str); 10] = [
        ("connection", "close, x-secret-hop, content-length"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authenticate", "Basic realm=x"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "h2c"),
        ("content-length", "2"),
        ("x-kept", "1"),
    ];

    #[test]
    fn every_hop_by_hop_field_is_removed_and_framing_stays() {
        let mut resp = response(200, &UPSTREAM);
        strip_from_response(&mut resp);
        let mut names: Vec<&str> = resp.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-length", "x-kept"]);
    }

    #[test]
    fn a_switching_protocols_response_keeps_only_the_upgrade_pair() {
        let mut resp = response(
            101,
            &[
                ("connection", "Upgrade, x-hop"),
                ("x-hop", "1"),
                ("upgrade", "websocket"),
                ("keep-alive", "1"),
            ],
        );
        strip_from_response(&mut resp);
        assert_eq!(resp.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(resp.headers.get("connection").unwrap(), "upgrade");
        assert!(resp.headers.get("x-hop").is_none() && resp.headers.get("keep-alive").is_none());
    }
}
