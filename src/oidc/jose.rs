//! The JOSE header of a compact JWT, read apart from signature verification: it picks the key
//! to verify with, and a header that would let a token choose its own key is refused first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::JsonWebKey;
use serde_json::{Map, Value};

use super::tokens::allowed_algs;

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
    decode_part(first)
}

/// One base64url part of a compact JWS as a JSON object.
pub fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Verifies a compact JWS (its three parts as sent) with a key of `keys` chosen by `kid`
/// (any key when the header names none), with an allowed algorithm only. The error is the
/// reason code: `alg` or `signature`.
pub fn verify_signature(
    keys: &CoreJsonWebKeySet,
    header: &Header,
    [header_b64, payload_b64, signature_b64]: [&str; 3],
) -> Result<(), &'static str> {
    let alg: CoreJwsSigningAlgorithm =
        serde_json::from_value(header.get("alg").cloned().unwrap_or(Value::Null))
            .map_err(|_| "alg")?;
    if !allowed_algs().contains(&alg) {
        return Err("alg");
    }
    let candidates: Vec<_> = match kid(header) {
        Some(kid) => keys
            .keys()
            .iter()
            .filter(|k| k.key_id().is_some_and(|id| id.as_str() == kid))
            .collect(),
        None => keys.keys().iter().collect(),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| "signature")?;
    let message = format!("{header_b64}.{payload_b64}");
    let verified = candidates.iter().any(|k| {
        k.verify_signature(&alg, message.as_bytes(), &signature)
            .is_ok()
    });
    if verified {
        Ok(())
    } else {
        Err("signature")
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
