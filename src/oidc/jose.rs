//! The JOSE header of a compact JWT, read apart from signature verification: it picks the key
//! to verify with, and a header that would let a token choose its own key is refused first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Header members that would let a token name its own key; keys come only from the issuer's
/// JWKS (RFC 8725 §3.1).
const KEY_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

pub type Header = Map<String, Value>;

/// The decoded header, or `None` when the token is not three base64url parts with a JSON
/// object first.
pub fn header(jwt: &str) -> Option<Header> {
    let mut parts = jwt.split('.');
    let first = parts.next()?;
    if parts.count() != 2 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(first).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Refuses key-naming members and any `crit` extension: portcullis understands none, and RFC
/// 7515 §4.1.11 requires refusing a token whose critical extensions are not understood.
pub fn check(header: &Header) -> Result<(), &'static str> {
    if KEY_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err("key_in_header");
    }
    if header.contains_key("crit") {
        return Err("crit_header");
    }
    Ok(())
}

pub fn kid(header: &Header) -> Option<&str> {
    header.get("kid").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn reads_the_kid_and_refuses_self_named_keys_and_crit() {
        let h = header(&jwt(r#"{"alg":"ES256","kid":"k1"}"#)).unwrap();
        assert_eq!(kid(&h), Some("k1"));
        assert_eq!(check(&h), Ok(()));
        for bad in [
            r#"{"alg":"ES256","jku":"https://evil.test/jwks"}"#,
            r#"{"alg":"ES256","jwk":{}}"#,
            r#"{"alg":"ES256","x5u":"https://evil.test"}"#,
            r#"{"alg":"ES256","x5c":[]}"#,
            r#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
        ] {
            assert!(check(&header(&jwt(bad)).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_tokens_have_no_header() {
        assert!(header("a.b").is_none());
        assert!(header("a.b.c.d").is_none());
        assert!(header("!!!.e30.c2ln").is_none());
        assert!(header(&format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("[1]"))).is_none());
    }
}
