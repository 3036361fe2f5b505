//! The request head as it arrives, checked line by line before Pingora parses it: the limits a
//! browser never needs to exceed (each refused with the status that names it, as soon as the
//! bytes received prove it, so a huge line is never buffered whole) and the framing fields,
//! refused whenever two parsers could read them differently (RFC 9112 §6.1, §6.3, §11.2).
//!
//! The scan is incremental: bytes are fed as they arrive and each complete line is looked at
//! once, so a client sending one byte at a time costs no more than one sending them together.

use std::ops::Range;

use super::Refusal;

/// Longest method portcullis accepts (room for extension methods); with the version and
/// separators it bounds the request line beyond the target's own limit.
const MAX_METHOD: usize = 32;
const REQUEST_LINE_OVERHEAD: usize = MAX_METHOD + " HTTP/1.1\r\n".len() + 1;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_target_bytes: usize,
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub max_cookie_bytes: usize,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    NoBody,
    Length(u64),
    Chunked,
}

/// A complete, acceptable request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
    pub framing: Framing,
    /// Where the head's buffer holds the request target as sent (origin-, absolute-,
    /// authority- or asterisk-form; UTF-8). Ranges, not copies: only a request with a body
    /// reads them.
    target: Range<usize>,
    /// Where it holds the `Host` field's value, when there is one (and only one).
    host: Option<Range<usize>>,
    pub expects_continue: bool,
}

impl Head {
    /// The request target, from the buffer the head was scanned in.
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a str {
        buf.get(self.target.clone())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default()
    }

    /// The `Host` value, from the buffer the head was scanned in, if it is UTF-8.
    pub fn host<'a>(&self, buf: &'a [u8]) -> Option<&'a str> {
        let range = self.host.clone()?;
        buf.get(range).and_then(|h| std::str::from_utf8(h).ok())
    }
}

#[derive(Debug, Default)]
pub struct HeadScanner {
    /// Start of the first line not yet looked at.
    line_start: usize,
    target: Option<Range<usize>>,
    http10: bool,
    header_count: usize,
    header_bytes: usize,
    cookie_bytes: usize,
    content_length: Option<u64>,
    chunked: bool,
    hosts: usize,
    host: Option<Range<usize>>,
    expects_continue: bool,
}

impl HeadScanner {
    /// Looks at the lines of `buf` (everything received so far) not yet looked at. `Ok(None)`:
    /// the head is not complete yet, and nothing received so far breaks a rule.
    pub fn scan(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<Option<Head>, Refusal> {
        while let Some(offset) = memchr_lf(&buf[self.line_start..]) {
            let (start, end) = (self.line_start, self.line_start + offset + 1);
            let line = &buf[start..end];
            self.line_start = end;
            let content = line
                .strip_suffix(b"\r\n")
                .ok_or(Refusal::BadFraming("bare_lf"))?;
            // A CR inside a line fails every check of the line, and is named as the reason
            // only then: the lines that pass are not searched for one.
            let looked = self
                .look_at(content, start, end, limits)
                .map_err(|refusal| {
                    if content.contains(&b'\r') {
                        Refusal::BadFraming("bare_cr")
                    } else {
                        refusal
                    }
                })?;
            if looked.is_some() {
                return Ok(looked);
            }
        }
        self.check_partial_line(buf.len(), limits)?;
        Ok(None)
    }

    /// One complete line without its CRLF; `start..end`: where the whole line lies in the
    /// buffer. `Some` once it is the empty line that ends the head.
    fn look_at(
        &mut self,
        content: &[u8],
        start: usize,
        end: usize,
        limits: &HeadLimits,
    ) -> Result<Option<Head>, Refusal> {
        if self.target.is_none() {
            if end > limits.max_target_bytes + REQUEST_LINE_OVERHEAD {
                return Err(Refusal::UriTooLong);
            }
            self.request_line(content, start, limits)?;
        } else if content.is_empty() {
            return self.finish(end).map(Some);
        } else {
            self.header_line(content, start, end - start, limits)?;
        }
        Ok(None)
    }

    /// An unfinished line already longer than its limit is refused without waiting for its end.
    /// Before the request line, everything received counts (empty lines included), so endless
    /// empty lines are bounded too.
    fn check_partial_line(&self, received: usize, limits: &HeadLimits) -> Result<(), Refusal> {
        if self.target.is_none() {
            if received > limits.max_target_bytes + REQUEST_LINE_OVERHEAD {
                return Err(Refusal::UriTooLong);
            }
        } else if self.header_bytes + (received - self.line_start) > limits.max_header_bytes {
            return Err(Refusal::HeadersTooLarge("headers_too_large"));
        }
        Ok(())
    }

    /// `start`: where the line begins in the buffer.
    fn request_line(
        &mut self,
        line: &[u8],
        start: usize,
        limits: &HeadLimits,
    ) -> Result<(), Refusal> {
        // RFC 9112 §2.2: empty lines before the request line are ignored; they still count
        // towards the request line's bound, as the partial-line check counts them.
        if line.is_empty() {
            return Ok(());
        }
        let bad = Refusal::BadRequest("request_line");
        let first = memchr::memchr(b' ', line).ok_or(bad)?;
        let second = first + 1 + memchr::memchr(b' ', &line[first + 1..]).ok_or(bad)?;
        let (method, target, version) = (
            &line[..first],
            &line[first + 1..second],
            &line[second + 1..],
        );
        if target.len() > limits.max_target_bytes {
            return Err(Refusal::UriTooLong);
        }
        let visible = |b: &u8| *b > 0x20 && *b != 0x7f;
        if method.is_empty()
            || method.len() > MAX_METHOD
            || !method.iter().copied().all(is_token_byte)
            || target.is_empty()
            || !target.iter().all(visible)
            || (!target.is_ascii() && std::str::from_utf8(target).is_err())
        {
            return Err(bad);
        }
        self.http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            // More than two spaces: not a request line at all.
            _ if memchr::memchr(b' ', version).is_some() => return Err(bad),
            _ => return Err(Refusal::BadRequest("http_version")),
        };
        let target_start = start + first + 1;
        self.target = Some(target_start..target_start + target.len());
        Ok(())
    }

    /// `start`: where the line begins in the buffer.
    fn header_line(
        &mut self,
        line: &[u8],
        start: usize,
        wire_len: usize,
        limits: &HeadLimits,
    ) -> Result<(), Refusal> {
        self.header_count += 1;
        self.header_bytes += wire_len;
        if self.header_count > limits.max_header_count {
            return Err(Refusal::HeadersTooLarge("too_many_headers"));
        }
        if self.header_bytes > limits.max_header_bytes {
            return Err(Refusal::HeadersTooLarge("headers_too_large"));
        }
        let colon = memchr::memchr(b':', line).ok_or(Refusal::BadRequest("header_line"))?;
        let trimmed = without_ows(&line[colon + 1..]);
        let value_at = start + colon + 1 + trimmed.start..start + colon + 1 + trimmed.end;
        let (name, value) = (&line[..colon], &line[colon + 1..][trimmed]);
        // Also refuses obs-fold (a line starting with whitespace) and "Name :" (RFC 9112 §5.1).
        if name.is_empty() || !name.iter().copied().all(is_token_byte) {
            return Err(Refusal::BadRequest("header_line"));
        }
        if has_control_byte(value) {
            return Err(Refusal::BadRequest("header_value"));
        }
        self.note_field(name, value, value_at, limits)
    }

    /// Remembers the fields that decide framing, routing and limits.
    fn note_field(
        &mut self,
        name: &[u8],
        value: &[u8],
        at: Range<usize>,
        limits: &HeadLimits,
    ) -> Result<(), Refusal> {
        if name.eq_ignore_ascii_case(b"cookie") {
            self.cookie_bytes += value.len();
            if self.cookie_bytes > limits.max_cookie_bytes {
                return Err(Refusal::HeadersTooLarge("cookies_too_large"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err(Refusal::BadFraming("content_length_repeated"));
            }
            self.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a single `chunked` is understood; a list or another coding could be
            // read differently by the upstream.
            if self.chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::BadFraming("transfer_encoding"));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
            self.host = Some(at);
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expects_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    fn finish(&mut self, len: usize) -> Result<Head, Refusal> {
        // RFC 9112 §3.2: a request with more than one Host is answered 400.
        if self.hosts > 1 {
            return Err(Refusal::BadRequest("host_repeated"));
        }
        let framing = match (self.chunked, self.content_length) {
            (true, Some(_)) => return Err(Refusal::BadFraming("length_and_chunked")),
            // RFC 9112 §6.1: HTTP/1.0 has no chunked coding; its framing would be faulty.
            (true, None) if self.http10 => return Err(Refusal::BadFraming("chunked_in_http10")),
            (true, None) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::NoBody,
        };
        Ok(Head {
            len,
            framing,
            target: self.target.take().unwrap_or_default(),
            host: self.host.take(),
            expects_continue: self.expects_continue,
        })
    }
}

/// `1*DIGIT`, at most 18 digits so it always fits a `u64`.
fn parse_content_length(value: &[u8]) -> Result<u64, Refusal> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::BadFraming("content_length"));
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(Refusal::BadFraming("content_length"))
    })
}

pub(super) fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', bytes)
}

/// Whether a field value holds a control byte other than HTAB. No early exit: a loop without
/// one is vectorised, and values (cookies above all) are the bulk of a head.
fn has_control_byte(value: &[u8]) -> bool {
    value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// A line without its CRLF; a bare LF or a CR anywhere else is refused (RFC 9112 §2.2 lets a
/// recipient accept a bare LF, and that leniency is what request smuggling feeds on).
pub(super) fn strip_crlf(line: &[u8]) -> Result<&[u8], Refusal> {
    let content = line
        .strip_suffix(b"\r\n")
        .ok_or(Refusal::BadFraming("bare_lf"))?;
    if content.contains(&b'\r') {
        return Err(Refusal::BadFraming("bare_cr"));
    }
    Ok(content)
}

/// Where `v` is left once optional whitespace is trimmed from both ends.
fn without_ows(v: &[u8]) -> Range<usize> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    start..end
}

/// RFC 9110 §5.6.2 `tchar`.
pub(super) fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_target_bytes: 64,
        max_header_bytes: 256,
        max_header_count: 4,
        max_cookie_bytes: 40,
    };

    fn scan_all(input: &[u8]) -> Result<Option<Head>, Refusal> {
        HeadScanner::default().scan(input, &LIMITS)
    }

    fn scan_bytewise(input: &[u8]) -> Result<Option<Head>, Refusal> {
        let mut s = HeadScanner::default();
        for end in 1..input.len() {
            if let Some(head) = s.scan(&input[..end], &LIMITS)? {
                return Ok(Some(head));
            }
        }
        s.scan(input, &LIMITS)
    }

    #[test]
    fn a_plain_get_is_complete_whether_it_arrives_whole_or_byte_by_byte() {
        let req = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n\r\nNEXT";
        for result in [scan_all(req), scan_bytewise(req)] {
            let head = result.unwrap().unwrap();
            assert_eq!(head.len, req.len() - 4);
            assert_eq!(head.framing, Framing::NoBody);
            assert_eq!(head.target(req), "/a?b=1");
            assert_eq!(head.host(req), Some("x"));
        }
        let utf8 = "GET /caf\u{e9} HTTP/1.1\r\nHost:  h\u{e9}  \r\n\r\n".as_bytes();
        for result in [scan_all(utf8), scan_bytewise(utf8)] {
            let head = result.unwrap().unwrap();
            assert_eq!(head.target(utf8), "/caf\u{e9}");
            assert_eq!(head.host(utf8), Some("h\u{e9}"));
        }
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert_eq!(scan_all(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn framing_fields_are_read() {
        let head = |h: &str| scan_all(format!("POST / HTTP/1.1\r\nHost: x\r\n{h}\r\n").as_bytes());
        assert_eq!(
            head("Content-Length: 12\r\n").unwrap().unwrap().framing,
            Framing::Length(12)
        );
        assert_eq!(
            head("transfer-encoding: Chunked\r\n")
                .unwrap()
                .unwrap()
                .framing,
            Framing::Chunked
        );
        assert!(
            head("Expect: 100-continue\r\n")
                .unwrap()
                .unwrap()
                .expects_continue
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (fields, reason) in [
            (
                "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
                "length_and_chunked",
            ),
            (
                "Content-Length: 1\r\nContent-Length: 1\r\n",
                "content_length_repeated",
            ),
            ("Content-Length: +1\r\n", "content_length"),
            ("Content-Length: 1, 1\r\n", "content_length"),
            ("Content-Length: 99999999999999999999\r\n", "content_length"),
            ("Transfer-Encoding: gzip, chunked\r\n", "transfer_encoding"),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "transfer_encoding",
            ),
            ("Transfer-Encoding: xchunked\r\n", "transfer_encoding"),
        ] {
            let req = format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
            assert_eq!(
                scan_all(req.as_bytes()),
                Err(Refusal::BadFraming(reason)),
                "{fields}"
            );
        }
        assert_eq!(
            scan_all(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Refusal::BadFraming("chunked_in_http10"))
        );
    }

    #[test]
    fn line_endings_other_than_crlf_are_refused() {
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
            Err(Refusal::BadFraming("bare_lf"))
        );
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\rst: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
            b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n",
            b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G\rET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(
                scan_all(req),
                Err(Refusal::BadFraming("bare_cr")),
                "{}",
                req.escape_ascii()
            );
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for req in [
            &b"GET  / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET /\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
            b"G\xc3T / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(
                matches!(scan_all(req), Err(Refusal::BadRequest(_))),
                "{}",
                req.escape_ascii()
            );
        }
    }

    #[test]
    fn limits_name_their_status_before_the_line_ends() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64));
        assert_eq!(scan_all(long_target.as_bytes()), Err(Refusal::UriTooLong));
        // A request line that never ends is refused once it is past any acceptable length.
        let endless = format!("GET /{}", "a".repeat(200));
        assert_eq!(scan_bytewise(endless.as_bytes()), Err(Refusal::UriTooLong));
        let endless_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300));
        assert_eq!(
            scan_bytewise(endless_header.as_bytes()),
            Err(Refusal::HeadersTooLarge("headers_too_large"))
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: 1\r\n".repeat(5));
        assert_eq!(
            scan_all(many.as_bytes()),
            Err(Refusal::HeadersTooLarge("too_many_headers"))
        );
        let cookies = format!(
            "GET / HTTP/1.1\r\nCookie: {0}\r\nCookie: {0}\r\n\r\n",
            "c".repeat(30)
        );
        assert_eq!(
            scan_all(cookies.as_bytes()),
            Err(Refusal::HeadersTooLarge("cookies_too_large"))
        );
    }

    #[test]
    fn token_and_control_bytes_follow_the_rfc_for_every_byte() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token_byte(b), tchar, "byte {b:#04x}");
            let control = b < 0x20 && b != b'\t' || b == 0x7f;
            assert_eq!(has_control_byte(&[b'a', b, b'z']), control, "byte {b:#04x}");
        }
        assert!(!has_control_byte(b"text/html,\tq=0.9"));
    }
}
