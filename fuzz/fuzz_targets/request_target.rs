//! `check_target`: the one canonical request target portcullis routes, authorises and forwards.
//!
//! Properties of an accepted target (path and query as received):
//! - it starts with `/` and holds no control byte and no `#`;
//! - its path (before the first `?`) has no `.` or `..` segment (also not with `;params`), no
//!   `//` and no `\`;
//! - every `%` in the path starts a `%XX` escape, and decoding them gives valid UTF-8 in which no
//!   `/`, `\`, `.` or control byte came from an escape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::canonical::check_target;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fuzz_target!(|raw: &[u8]| {
    if check_target(raw).is_err() {
        return;
    }
    let shown = String::from_utf8_lossy(raw);
    let what = format!("accepted target {shown:?}");

    assert!(raw.starts_with(b"/"), "{what}: not origin-form");
    assert!(
        !raw.iter().any(u8::is_ascii_control),
        "{what}: holds a control byte"
    );
    assert!(!raw.contains(&b'#'), "{what}: holds a fragment");

    let path = raw.split(|b| *b == b'?').next().unwrap_or(raw);
    assert!(!path.contains(&b'\\'), "{what}: path holds a backslash");
    assert!(
        !path.windows(2).any(|w| w == b"//"),
        "{what}: path holds an empty segment"
    );
    for segment in path[1..].split(|b| *b == b'/') {
        let name = segment.split(|b| *b == b';').next().unwrap_or(segment);
        assert!(
            name != b"." && name != b"..",
            "{what}: path holds a dot segment"
        );
    }

    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            decoded.push(path[i]);
            i += 1;
            continue;
        }
        let byte = match (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => panic!("{what}: malformed escape at byte {i}"),
        };
        assert!(
            !matches!(byte, b'/' | b'\\' | b'.'),
            "{what}: escape at byte {i} hides {:?}",
            byte as char
        );
        assert!(
            !byte.is_ascii_control(),
            "{what}: escape at byte {i} hides a control byte"
        );
        decoded.push(byte);
        i += 3;
    }
    assert!(
        std::str::from_utf8(&decoded).is_ok(),
        "{what}: decoded path is not UTF-8"
    );
});
