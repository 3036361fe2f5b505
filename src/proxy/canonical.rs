//! The request target portcullis routes, authorises and forwards. portcullis never rewrites a
//! path; it refuses the ones that different parsers could read differently (R39), so the path
//! that chose the route, the path the auth decision saw and the path the upstream receives are
//! one and the same. A route may opt out (`allow_ambiguous_paths`) for unusual upstream APIs.

use std::borrow::Cow;

/// Why a request target was refused; `reason()` is the log/metric code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// Not origin-form: no leading `/` (`*`, `api/x`, absolute-form).
    NotOriginForm,
    /// Control characters or NUL, raw or percent-encoded.
    ControlCharacter,
    /// A raw backslash, which some servers treat as `/`.
    Backslash,
    /// `%2F`, `%5C` or `%2E`: a separator or dot hidden from the router.
    EncodedSeparator,
    /// A letter, digit, `-`, `_` or `~` percent-encoded (`/%61pi`): RFC 3986 §2.3 says these
    /// are never encoded, and a server that decodes them routes `/%61pi` as `/api` while a
    /// prefix match on the raw path does not.
    EncodedUnreserved,
    /// `.` or `..` segments (also with `;params`), which would escape the matched prefix.
    DotSegment,
    /// `//`: servers disagree on whether it is one segment or two.
    EmptySegment,
    /// `%25` followed by an encoded separator or dot: decoded twice it becomes one.
    DoubleEncoding,
    /// `%` not followed by two hex digits.
    MalformedEscape,
    /// Percent-decoding yields invalid UTF-8 (e.g. overlong `%C0%AE`).
    InvalidUtf8,
    /// A raw `#`: fragments are never part of a request target.
    Fragment,
}

impl PathRejection {
    pub fn reason(self) -> &'static str {
        match self {
            PathRejection::NotOriginForm => "path_not_origin_form",
            PathRejection::ControlCharacter => "path_control_character",
            PathRejection::Backslash => "path_backslash",
            PathRejection::EncodedSeparator => "path_encoded_separator",
            PathRejection::EncodedUnreserved => "path_encoded_unreserved",
            PathRejection::DotSegment => "path_dot_segment",
            PathRejection::EmptySegment => "path_empty_segment",
            PathRejection::DoubleEncoding => "path_double_encoding",
            PathRejection::MalformedEscape => "path_malformed_escape",
            PathRejection::InvalidUtf8 => "path_invalid_utf8",
            PathRejection::Fragment => "path_fragment",
        }
    }
}

/// Checks the raw request target (path and query as received).
pub fn check_target(raw: &[u8]) -> Result<(), PathRejection> {
    if raw.first() != Some(&b'/') {
        return Err(PathRejection::NotOriginForm);
    }
    // Nearly every target is ASCII with no escape, backslash, fragment or control: one
    // vectorised pass (no early exit) shows that, and then only the segments need a look.
    let path = memchr::memchr(b'?', raw).map_or(raw, |query| &raw[..query]);
    if !raw
        .iter()
        .fold(false, |odd, &b| odd | needs_a_closer_look(b))
    {
        return check_segments(path);
    }
    check_unusual_target(raw, path)
}

/// Bytes after which the plain check is not enough: controls, non-ASCII (it may not be UTF-8),
/// escapes, backslashes, fragments.
fn needs_a_closer_look(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) | (b == b'%') | (b == b'\\') | (b == b'#')
}

/// `check_target` for a target with a byte `needs_a_closer_look`; `path`: its part before `?`.
fn check_unusual_target(raw: &[u8], path: &[u8]) -> Result<(), PathRejection> {
    if raw.iter().fold(false, |bad, b| bad | b.is_ascii_control()) {
        return Err(PathRejection::ControlCharacter);
    }
    if memchr::memchr(b'#', raw).is_some() {
        return Err(PathRejection::Fragment);
    }
    if memchr::memchr(b'\\', path).is_some() {
        return Err(PathRejection::Backslash);
    }
    // Most paths have no escape: nothing to decode, and no copy to decode into.
    let decoded = match memchr::memchr(b'%', path) {
        None => Cow::Borrowed(path),
        Some(_) => Cow::Owned(decode_checked(path)?),
    };
    std::str::from_utf8(&decoded).map_err(|_| PathRejection::InvalidUtf8)?;
    check_second_layer(&decoded)?;
    check_segments(path)
}

/// Percent-decodes, refusing escapes that hide separators, dots, controls or a second layer.
fn decode_checked(path: &[u8]) -> Result<Vec<u8>, PathRejection> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            out.push(path[i]);
            i += 1;
            continue;
        }
        let byte = hex_pair(path.get(i + 1..i + 3)).ok_or(PathRejection::MalformedEscape)?;
        match byte {
            b'/' | b'\\' | b'.' => return Err(PathRejection::EncodedSeparator),
            b if b.is_ascii_alphanumeric() || b"-_~".contains(&b) => {
                return Err(PathRejection::EncodedUnreserved)
            }
            b'%' if hex_pair(path.get(i + 3..i + 5))
                .is_some_and(|b| matches!(b, b'/' | b'\\' | b'.' | b'%')) =>
            {
                return Err(PathRejection::DoubleEncoding)
            }
            b if b.is_ascii_control() => return Err(PathRejection::ControlCharacter),
            b => out.push(b),
        }
        i += 3;
    }
    Ok(out)
}

/// An upstream that decodes twice sees what a second decoding of the once-decoded path yields
/// (`%25%32%65` → `%2e` → `.`); a separator, dot or control appearing there is refused. A `%`
/// that is not an escape after the first decoding (`100%25 off`) is ordinary text.
fn check_second_layer(decoded: &[u8]) -> Result<(), PathRejection> {
    if !decoded.contains(&b'%') {
        return Ok(());
    }
    match decode_checked(decoded) {
        Err(
            PathRejection::EncodedSeparator
            | PathRejection::EncodedUnreserved
            | PathRejection::ControlCharacter
            | PathRejection::DoubleEncoding,
        ) => Err(PathRejection::DoubleEncoding),
        _ => Ok(()),
    }
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16)
        .ok()
        .filter(|_| pair.iter().all(u8::is_ascii_hexdigit))
}

/// No segment (its name being what precedes its `;params`, which servers that strip them
/// ignore) is `.` or `..`, and none but the last is empty (`//`). One pass over the bytes:
/// every request's path comes here.
fn check_segments(path: &[u8]) -> Result<(), PathRejection> {
    let mut segment = Segment::default();
    for &b in &path[1..] {
        if b == b'/' {
            segment.check_inner()?;
            segment = Segment::default();
        } else {
            segment.push(b);
        }
    }
    segment.check()
}

/// A path segment as its bytes go by.
#[derive(Default)]
struct Segment {
    len: usize,
    name_len: usize,
    in_params: bool,
    /// Whether the name has a byte other than a dot.
    not_dots: bool,
}

impl Segment {
    fn push(&mut self, b: u8) {
        self.len += 1;
        if b == b';' {
            self.in_params = true;
        } else if !self.in_params {
            self.name_len += 1;
            self.not_dots |= b != b'.';
        }
    }

    fn check(&self) -> Result<(), PathRejection> {
        if !self.not_dots && matches!(self.name_len, 1 | 2) {
            return Err(PathRejection::DotSegment);
        }
        Ok(())
    }

    /// A segment followed by a `/`.
    fn check_inner(&self) -> Result<(), PathRejection> {
        self.check()?;
        if self.len == 0 {
            return Err(PathRejection::EmptySegment);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRejection::*;

    #[test]
    fn plain_paths_pass() {
        for ok in [
            "/",
            "/api/x",
            "/api/x/",
            "/a%20b",
            "/caf%C3%A9",
            "/api/secret;jsessionid=1",
            "/x?next=/../..&a=%2F",
            "/a.b/c..d/.e",
            "/100%25%20off",
        ] {
            assert_eq!(check_target(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn the_plain_pass_agrees_with_the_full_check_for_every_byte() {
        for b in 0..=255u8 {
            for target in [
                vec![b'/', b'a', b, b'b'],
                vec![b'/', b'a', b'?', b],
                vec![b'/', b],
            ] {
                if target[1..].iter().any(|&b| needs_a_closer_look(b)) {
                    continue;
                }
                let path = memchr::memchr(b'?', &target).map_or(&target[..], |q| &target[..q]);
                assert_eq!(
                    check_target(&target),
                    check_unusual_target(&target, path),
                    "{target:?}"
                );
            }
        }
    }

    #[test]
    fn segments_are_judged_by_their_names() {
        for ok in ["/a/;x/b", "/a/.b;c", "/...", "/a/...;x/", "/;/a", "/.a./b"] {
            assert_eq!(check_target(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (target, expected) in [
            ("/.;x/a", DotSegment),
            ("/a/..", DotSegment),
            ("/a/.;", DotSegment),
            ("/./", DotSegment),
            ("/a//", EmptySegment),
            ("/a/b//c?x", EmptySegment),
        ] {
            assert_eq!(check_target(target.as_bytes()), Err(expected), "{target}");
        }
    }

    #[test]
    fn ambiguous_targets_are_refused_with_their_reason() {
        let cases: &[(&[u8], PathRejection)] = &[
            (b"*", NotOriginForm),
            (b"api/secret", NotOriginForm),
            (b"http://evil.test/api", NotOriginForm),
            (b"/public/../api/secret", DotSegment),
            (b"/public/./x", DotSegment),
            (b"/public;/../api/secret", DotSegment),
            (b"/api/..;/admin", DotSegment),
            (b"/public/..", DotSegment),
            (b"/public%2F..%2Fapi/secret", EncodedSeparator),
            (b"/public/..%2fapi/secret", EncodedSeparator),
            (b"/api%2Fsecret", EncodedSeparator),
            (b"/public/%2e%2e/api", EncodedSeparator),
            (b"/x%5Cy", EncodedSeparator),
            (b"/%61pi/x", EncodedUnreserved),
            (b"/api/%7Euser", EncodedUnreserved),
            (b"/a%2Db", EncodedUnreserved),
            (b"/%2561pi/x", DoubleEncoding),
            (b"/public/%252e%252e/api/secret", DoubleEncoding),
            (b"/public/%252fapi", DoubleEncoding),
            (b"/%25%32%65%25%32%65/x", EncodedUnreserved),
            (b"/a%25%30%30b", EncodedUnreserved),
            (b"/public%00/../api/secret", ControlCharacter),
            (b"/api/secret%00.png", ControlCharacter),
            (b"/a\x01b", ControlCharacter),
            (b"/public/%c0%ae%c0%ae/api/secret", InvalidUtf8),
            (b"/public/%u002e%u002e/api", MalformedEscape),
            (b"/public/%zz", MalformedEscape),
            (b"/public/%<script>", MalformedEscape),
            (b"/public/%", MalformedEscape),
            (b"/api/secret#/public/", Fragment),
            (b"/public\\..\\api", Backslash),
            (b"//evil.test/x", EmptySegment),
            (b"/api//secret", EmptySegment),
        ];
        for (target, expected) in cases {
            assert_eq!(
                check_target(target),
                Err(*expected),
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }
}
