//! Edits of a proxied message's header fields made on its `http::HeaderMap` itself. Pingora's
//! `RequestHeader` and `ResponseHeader` methods parse each field name again (allocating for any
//! name outside the standard table) and keep a second map with the names' spelling as
//! received; on the forwarding path that doubled every removal and addition. Edited this way,
//! the message goes on with lower-case names (Pingora writes a dozen common ones, `Host` and
//! `Content-Type` among them, in title case), as HTTP/2 and Envoy send them: field names are
//! case-insensitive (RFC 9110 §5.1).

use http::header::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType::InvalidHTTPHeader, OrErr};

/// A field could not be added: the map holds `http`'s maximum number of fields.
#[derive(Debug, thiserror::Error)]
#[error("the header map is full")]
pub struct TooManyFields;

impl From<http::header::MaxSizeReached> for TooManyFields {
    fn from(_: http::header::MaxSizeReached) -> TooManyFields {
        TooManyFields
    }
}

/// Runs `edit` on the request's header map. The rest of the head is kept: a target the URI
/// does not reproduce (absolute-form, on a route with `allow_ambiguous_paths`, or bytes that
/// are not UTF-8) is set again from its bytes.
pub fn edit_request<T>(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<T, TooManyFields>,
) -> pingora::Result<T> {
    let from_uri = req.uri.path_and_query().map(|pq| pq.as_str().as_bytes());
    let verbatim = (from_uri != Some(req.raw_path())).then(|| req.raw_path().to_vec());
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
    let edited = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(target) = verbatim {
        req.set_raw_path(&target)?;
    }
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
    edited.or_err(
        InvalidHTTPHeader,
        "too many header fields toward the upstream",
    )
}

/// Runs `edit` on the response's header map, keeping an uncommon reason phrase.
pub fn edit_response<T>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> Result<T, TooManyFields>,
) -> pingora::Result<T> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_string);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    let edited = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    edited.or_err(
        InvalidHTTPHeader,
        "too many header fields toward the client",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_head_and_loses_only_the_spelling_of_names() {
        let mut req = RequestHeader::build("POST", b"/api/x?q=1", None).unwrap();
        req.append_header("X-Custom", "1").unwrap();
        req.insert_header("Host", "app.example").unwrap();
        edit_request(&mut req, |h| {
            h.try_insert("x-added", "2".parse().unwrap())?;
            Ok(())
        })
        .unwrap();
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.raw_path(), b"/api/x?q=1");
        assert_eq!(req.headers.get("x-custom").unwrap(), "1");
        assert_eq!(req.headers.get("x-added").unwrap(), "2");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("x-custom: 1\r\n") && wire.contains("Host: app.example\r\n"));
    }

    #[test]
    fn targets_the_uri_does_not_reproduce_survive() {
        for target in [&b"http://upstream.test/a?b"[..], b"/caf\xe9"] {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            edit_request(&mut req, |_| Ok(())).unwrap();
            assert_eq!(req.raw_path(), target);
        }
    }

    #[test]
    fn a_response_keeps_its_status_and_an_uncommon_reason() {
        let mut resp = ResponseHeader::build(299, None).unwrap();
        resp.set_reason_phrase(Some("Fine Anyway")).unwrap();
        resp.append_header("Content-Type", "text/plain").unwrap();
        edit_response(&mut resp, |h| {
            h.remove("content-type");
            Ok(())
        })
        .unwrap();
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(resp.get_reason_phrase(), Some("Fine Anyway"));
        assert!(resp.headers.is_empty());
    }

    #[test]
    fn a_full_map_is_an_error_not_a_panic() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let err = edit_request(&mut req, |_| Err::<(), _>(TooManyFields)).unwrap_err();
        assert!(err.to_string().contains("too many header fields"));
    }
}
