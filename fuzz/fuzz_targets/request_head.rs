//! `HeadScanner`: the edge's check of a request head before Pingora parses it.
//!
//! Properties, for any bytes split at any point into two deliveries:
//! - the verdict does not depend on how the bytes arrived (whole, or in two parts);
//! - an accepted head ends with CRLF CRLF, has no bare CR or LF, and keeps every limit;
//! - httparse (the parser inside Pingora) reads an accepted ASCII head completely, at the same length,
//!   with the same method, target and number of fields: the two never disagree on framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::edge::head::{Framing, HeadLimits, HeadScanner};

const LIMITS: HeadLimits = HeadLimits {
    max_target_bytes: 512,
    max_header_bytes: 2048,
    max_header_count: 16,
    max_cookie_bytes: 256,
};

fuzz_target!(|input: (u16, &[u8])| {
    let (split, raw) = input;
    let whole = HeadScanner::default().scan(raw, &LIMITS);
    let cut = usize::from(split) % (raw.len() + 1);
    let mut parts = HeadScanner::default();
    let in_parts = match parts.scan(&raw[..cut], &LIMITS) {
        Ok(None) => parts.scan(raw, &LIMITS),
        early => early,
    };
    // Whether a head is accepted, and as what, never depends on delivery; a refusal may name
    // another reason when it comes on a prefix (a line refused before it ends).
    match (&whole, &in_parts) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "verdict depends on delivery (cut at {cut})"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("verdict depends on delivery (cut at {cut}): {a:?} / {b:?}"),
    }
    let Ok(Some(head)) = whole else { return };
    let bytes = &raw[..head.len];
    assert!(bytes.ends_with(b"\r\n\r\n"));
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(head.target.len() <= LIMITS.max_target_bytes);

    // Pingora escapes a target with bytes past ASCII before parsing it; compare the rest.
    if !head.target.is_ascii() {
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, head.len, "httparse ends the head elsewhere"),
        other => panic!("httparse refuses an accepted head: {other:?}"),
    }
    assert_eq!(req.path, Some(head.target.as_str()));
    assert!(req.headers.len() <= LIMITS.max_header_count);
    let lengths = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).count();
    let codings = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding")).count();
    match head.framing {
        Framing::Chunked => assert_eq!((lengths, codings), (0, 1)),
        Framing::Length(_) => assert_eq!((lengths, codings), (1, 0)),
        Framing::NoBody => assert_eq!((lengths, codings), (0, 0)),
    }
});
