//! `ChunkedReader`: the strict reader of chunked request bodies.
//!
//! Properties, for any bytes:
//! - acceptance and the body do not depend on delivery (whole, or one byte at a time);
//! - on an accepted body, httparse's chunk-size parser (Pingora's) walks the same chunks to the
//!   same end and the same payload, so portcullis and Pingora agree on where the body ends;
//! - the re-encoded body holds exactly that payload, as one chunk and the last chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::edge::chunked::ChunkedReader;

const MAX_BODY: usize = 4096;
const MAX_TRAILERS: usize = 512;

/// The body and its end as httparse reads the chunk sizes (data and CRLFs taken on trust).
fn httparse_walk(raw: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(&raw[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            _ => return None,
        };
        pos += used;
        if size == 0 {
            // Trailer section: up to the empty line.
            let rest = &raw[pos..];
            if rest.starts_with(b"\r\n") {
                return Some((pos + 2, body));
            }
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
            return Some((pos + end + 4, body));
        }
        let size = usize::try_from(size).ok()?;
        body.extend_from_slice(raw.get(pos..pos + size)?);
        pos += size + 2;
    }
}

fuzz_target!(|raw: &[u8]| {
    let mut whole = ChunkedReader::new(0, MAX_BODY, MAX_TRAILERS);
    let verdict = whole.feed(raw);
    let mut bytewise = ChunkedReader::new(0, MAX_BODY, MAX_TRAILERS);
    let mut stepped = Ok(None);
    for end in 0..=raw.len() {
        stepped = bytewise.feed(&raw[..end]);
        if !matches!(stepped, Ok(None)) {
            break;
        }
    }
    // Acceptance, and where the body ends, never depend on delivery; a refusal may name
    // another reason when it comes on a prefix (a line refused before it ends).
    match (&verdict, &stepped) {
        (Err(_), Err(_)) => {}
        (a, b) => assert_eq!(a, b, "verdict depends on delivery"),
    }
    let Ok(Some(end)) = verdict else { return };
    assert_eq!(whole.canonical_body(), bytewise.canonical_body());
    let (their_end, payload) = httparse_walk(raw).expect("httparse refuses an accepted body");
    assert_eq!(their_end, end, "the parsers end the body at different bytes");
    let mut expected = Vec::new();
    if !payload.is_empty() {
        expected.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
        expected.extend_from_slice(&payload);
        expected.extend_from_slice(b"\r\n");
    }
    expected.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(whole.canonical_body(), expected);
});
