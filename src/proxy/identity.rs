//! Who the user is, told to upstreams in headers filled from the session's ID-token claims: the
//! ingress auth endpoint's answer, and `routes[].identity_headers` on proxied requests. A
//! client's own copies never get through: on a proxied request they are removed whether or not
//! there is a session; an ingress copies every header of the answer, empty ones included.

use http::header::HeaderValue;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};

use crate::config::IdentityHeader;

const EMPTY: HeaderValue = HeaderValue::from_static("");

/// Sets each identity header on the upstream request from `claims`, after removing the
/// client's copies; without a session (`None`) only the removal happens.
pub fn set_identity_headers(
    upstream: &mut RequestHeader,
    headers: &[IdentityHeader],
    claims: Option<&Map<String, Value>>,
) -> pingora::Result<()> {
    for header in headers {
        upstream.remove_header(&header.name);
        if let Some(claims) = claims {
            upstream.insert_header(header.name.clone(), claim_value(claims, &header.claim))?;
        }
    }
    Ok(())
}

/// A claim as a header value: strings as they are, arrays joined with `,`, numbers and booleans
/// written out; empty for objects and for text a header cannot carry (a line break).
pub fn claim_value(claims: &Map<String, Value>, name: &str) -> HeaderValue {
    let text = match claims.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(scalar_text)
            .collect::<Vec<_>>()
            .join(","),
        Some(v) => scalar_text(v).unwrap_or_default(),
        None => String::new(),
    };
    // UTF-8 passes as opaque bytes (as oauth2-proxy sends it); CR, LF and NUL are refused.
    HeaderValue::from_bytes(text.as_bytes()).unwrap_or(EMPTY)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_become_header_values() {
        let claims = json!({
            "sub": "u1", "groups": ["a", "b", 3], "email_verified": true,
            "address": {"x": 1}, "evil": "a\r\nb"
        });
        let c = claims.as_object().unwrap();
        assert_eq!(claim_value(c, "sub"), "u1");
        assert_eq!(claim_value(c, "groups"), "a,b,3");
        assert_eq!(claim_value(c, "email_verified"), "true");
        assert_eq!(claim_value(c, "address"), "");
        assert_eq!(claim_value(c, "evil"), "");
        let named = json!({ "preferred_username": "józef", "groups": ["équipe", "b"] });
        let c = named.as_object().unwrap();
        assert_eq!(
            claim_value(c, "preferred_username").as_bytes(),
            "józef".as_bytes()
        );
        assert_eq!(claim_value(c, "groups").as_bytes(), "équipe,b".as_bytes());
        assert_eq!(claim_value(c, "missing"), "");
    }

    #[test]
    fn client_copies_are_removed_with_or_without_a_session() {
        let headers = [IdentityHeader {
            name: http::HeaderName::from_static("x-user"),
            claim: "sub".into(),
        }];
        let mut forged = RequestHeader::build("GET", b"/", None).unwrap();
        forged.append_header("x-user", "root").unwrap();
        forged.append_header("x-user", "admin").unwrap();
        set_identity_headers(&mut forged, &headers, None).unwrap();
        assert!(forged.headers.get("x-user").is_none());
        let claims = json!({ "sub": "alice" });
        set_identity_headers(&mut forged, &headers, claims.as_object()).unwrap();
        let values: Vec<_> = forged.headers.get_all("x-user").iter().collect();
        assert_eq!(values, ["alice"]);
    }
}
