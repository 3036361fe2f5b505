//! Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection only, so they never cross
//! portcullis, in either direction. Requests are stripped in `inject`; responses here.

use http::header::{HeaderMap, HeaderName, HeaderValue, MaxSizeReached, CONNECTION};
use http::StatusCode;
use smallvec::SmallVec;

/// The fixed hop-by-hop fields and relatives that must not cross a proxy (lower case, as
/// `HeaderName`s are).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "http2-settings"
            | "proxy-authenticate"
    )
}

/// Fields whose removal would change how the message is delimited. A `Connection` that names
/// them is ignored for them: Pingora writes the framing downstream from these fields, so they
/// stay and the framing is regenerated consistently.
fn is_framing(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// The field names a message's `Connection` headers nominate, read once per message rather
/// than once per field (the list is nearly always empty, so matching each field against it
/// costs next to nothing).
pub struct Nominated<'a>(Vec<&'a str>);

impl<'a> Nominated<'a> {
    pub fn by_connection(headers: &'a HeaderMap) -> Nominated<'a> {
        Nominated(
            headers
                .get_all(http::header::CONNECTION)
                .iter()
                // The usual value, whole: nothing nominated, nothing to split.
                .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"keep-alive"))
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                // `keep-alive`, nearly every message's only token, names a field that is
                // hop-by-hop anyway: leaving it out keeps the usual list empty, unallocated.
                .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("keep-alive"))
                .collect(),
        )
    }

    /// Whether `name` (lower case) is among them.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|token| token.eq_ignore_ascii_case(name))
    }
}

/// Removes an upstream response's hop-by-hop fields before it goes to the browser. A `101`
/// keeps `Upgrade` and a `Connection: upgrade` (the handshake needs them) and loses the rest;
/// Pingora writes its own `Connection` on every other response.
pub fn strip_from_response(
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(), MaxSizeReached> {
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let nominated = Nominated::by_connection(headers);
    let doomed: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            let hop = is_hop_by_hop(name) || (nominated.contains(name) && !is_framing(name));
            hop && !(switching && name == "upgrade")
        })
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    if switching {
        headers.try_insert(CONNECTION, HeaderValue::from_static("upgrade"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(status: u16, fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in fields {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        strip_from_response(StatusCode::from_u16(status).unwrap(), &mut headers).unwrap();
        headers
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
        let headers = stripped(200, &UPSTREAM);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-length", "x-kept"]);
    }

    #[test]
    fn a_switching_protocols_response_keeps_only_the_upgrade_pair() {
        let headers = stripped(
            101,
            &[
                ("connection", "Upgrade, x-hop"),
                ("x-hop", "1"),
                ("upgrade", "websocket"),
                ("keep-alive", "1"),
            ],
        );
        assert_eq!(headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(headers.get("connection").unwrap(), "upgrade");
        assert!(headers.get("x-hop").is_none() && headers.get("keep-alive").is_none());
    }

    #[test]
    fn every_connection_header_nominates_fields_in_any_case() {
        let headers = stripped(
            200,
            &[
                ("connection", "Keep-Alive, X-A"),
                ("connection", " x-b ,"),
                ("x-a", "1"),
                ("x-b", "1"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "1"),
            ],
        );
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }
}
