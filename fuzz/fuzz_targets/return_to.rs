//! `validate_return_to`: the `returnTo` of `/bff/login`, where the browser is sent after login.
//!
//! Properties of an accepted value (it must be a local path, also once decoded):
//! - it is returned unchanged;
//! - it starts with `/` but not with `//` or `/\`, and holds no `\`, no control character and no
//!   whitespace (a decoded layer may hold a plain space, from `%20`);
//! - neither does any of its first three percent-decodings (`%XX` → byte, `+` left alone), and
//!   none of them is `/bff` or under `/bff/`;
//! - resolved against `https://app.test`, it stays on `https://app.test`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::validate_return_to;
use url::Url;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// One layer of percent-decoding over bytes; a `%` without two hex digits stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn check_local_path(value: &str, layer: usize, bytes: &[u8]) {
    let shown = String::from_utf8_lossy(bytes);
    let what = format!("accepted returnTo {value:?}, decoded {layer} time(s) to {shown:?}");
    assert!(bytes.starts_with(b"/"), "{what}: does not start with /");
    assert!(
        !bytes.starts_with(b"//") && !bytes.starts_with(b"/\\"),
        "{what}: starts with // or /\\ (another host)"
    );
    assert!(!bytes.contains(&b'\\'), "{what}: holds a backslash");
    assert!(
        !bytes.iter().any(u8::is_ascii_control),
        "{what}: holds a control character"
    );
    // An encoded plain space is allowed in a decoded layer; other whitespace is not.
    assert!(
        !bytes.iter().any(|b| b.is_ascii_whitespace() && *b != b' '),
        "{what}: holds whitespace"
    );
    assert!(
        !(bytes == b"/bff" || bytes.starts_with(b"/bff/")),
        "{what}: points into /bff/"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = validate_return_to(input) else {
        return;
    };
    assert_eq!(value, input, "an accepted returnTo is returned unchanged");
    assert!(
        !value.chars().any(|c| c.is_control() || c.is_whitespace()),
        "accepted returnTo {value:?} holds a control character or whitespace"
    );
    check_local_path(value, 0, value.as_bytes());
    let mut layer = value.as_bytes().to_vec();
    for n in 1..=3 {
        let next = percent_decode(&layer);
        if next == layer {
            break;
        }
        check_local_path(value, n, &next);
        layer = next;
    }

    let base = Url::parse("https://app.test").expect("base URL");
    let joined = base
        .join(value)
        .unwrap_or_else(|e| panic!("accepted returnTo {value:?} does not resolve: {e}"));
    assert_eq!(
        (joined.scheme(), joined.host_str(), joined.port()),
        ("https", Some("app.test"), None),
        "accepted returnTo {value:?} leaves the origin: {joined}"
    );
    assert!(
        joined.username().is_empty() && joined.password().is_none(),
        "accepted returnTo {value:?} adds credentials: {joined}"
    );
});
