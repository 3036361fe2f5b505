//! A strict reader of chunked request bodies (RFC 9112 §7.1), for routes that accept them.
//!
//! Every construct two HTTP implementations have been shown to read differently is refused
//! rather than interpreted: a chunk size that is not `1*HEXDIG` (`0x10`, ` 10`, `+10`), one with
//! more digits than fit in 64 bits, a line ended by a bare LF or a bare CR, chunk data not
//! followed by exactly CRLF, control bytes in an extension, and chunk lines or trailers past
//! a small bound. The body is then handed on re-encoded as one chunk without extensions or
//! trailers, so what the upstream parses is what this reader accepted.

use super::head::{memchr_lf, strip_crlf};
use super::Refusal;

/// A chunk line (size and extensions) longer than this is refused; real extensions are short.
const MAX_CHUNK_LINE: usize = 4096;
/// 16 hex digits are 64 bits; more could only overflow somebody's parser.
const MAX_SIZE_DIGITS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeLine,
    Data { remaining: u64 },
    DataEnd,
    Trailers,
}

#[derive(Debug)]
pub struct ChunkedReader {
    state: State,
    /// Offset into the caller's buffer of the first byte not yet consumed.
    pos: usize,
    body: Vec<u8>,
    trailer_bytes: usize,
    max_body: usize,
    max_trailer_bytes: usize,
}

impl ChunkedReader {
    /// A reader for a body that starts at `start` in the caller's buffer.
    pub fn new(start: usize, max_body: usize, max_trailer_bytes: usize) -> ChunkedReader {
        ChunkedReader {
            state: State::SizeLine,
            pos: start,
            body: Vec::new(),
            trailer_bytes: 0,
            max_body,
            max_trailer_bytes,
        }
    }

    /// Reads on through `buf` (everything received so far). `Ok(Some(end))`: the body ended at
    /// `end`; `Ok(None)`: more bytes are needed.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, Refusal> {
        loop {
            let rest = &buf[self.pos..];
            let done = match self.state {
                State::SizeLine => self.size_line(rest)?,
                State::Data { remaining } => self.data(rest, remaining),
                State::DataEnd => self.data_end(rest)?,
                State::Trailers => match self.trailer_line(rest)? {
                    Some(true) => return Ok(Some(self.pos)),
                    Some(false) => true,
                    None => false,
                },
            };
            if !done {
                return Ok(None);
            }
        }
    }

    /// The body as one chunk and the last chunk, without extensions or trailers.
    pub fn canonical_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 32);
        if !self.body.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", self.body.len()).as_bytes());
            out.extend_from_slice(&self.body);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn size_line(&mut self, rest: &[u8]) -> Result<bool, Refusal> {
        let Some(line) = take_line(rest)? else {
            return Ok(false);
        };
        self.pos += line.len() + 2;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // `0x10` and the like: a size that goes on in other characters is not a size.
        let runs_on = line.get(digits).is_some_and(u8::is_ascii_alphanumeric);
        if digits == 0 || digits > MAX_SIZE_DIGITS || runs_on {
            return Err(Refusal::BadFraming("chunk_size"));
        }
        check_extensions(&line[digits..])?;
        let size = line[..digits]
            .iter()
            .try_fold(0u64, |n, &d| Some((n << 4) | u64::from(hex_value(d)?)))
            .ok_or(Refusal::BadFraming("chunk_size"))?;
        let room = (self.max_body - self.body.len()) as u64;
        if size > room {
            return Err(Refusal::BodyTooLarge);
        }
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::Data { remaining: size }
        };
        Ok(true)
    }

    fn data(&mut self, rest: &[u8], remaining: u64) -> bool {
        let take = rest
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        self.body.extend_from_slice(&rest[..take]);
        self.pos += take;
        let left = remaining - take as u64;
        self.state = if left == 0 {
            State::DataEnd
        } else {
            State::Data { remaining: left }
        };
        left == 0
    }

    fn data_end(&mut self, rest: &[u8]) -> Result<bool, Refusal> {
        match rest {
            [b'\r', b'\n', ..] => {
                self.pos += 2;
                self.state = State::SizeLine;
                Ok(true)
            }
            [] | [b'\r'] => Ok(false),
            _ => Err(Refusal::BadFraming("chunk_data_end")),
        }
    }

    /// `Some(true)` at the empty line that ends the body; trailer fields are checked for
    /// framing, counted against the header limit and dropped.
    fn trailer_line(&mut self, rest: &[u8]) -> Result<Option<bool>, Refusal> {
        let Some(line) = take_line(rest)? else {
            if self.trailer_bytes + rest.len() > self.max_trailer_bytes {
                return Err(Refusal::HeadersTooLarge("trailers_too_large"));
            }
            return Ok(None);
        };
        self.pos += line.len() + 2;
        self.trailer_bytes += line.len() + 2;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(Refusal::HeadersTooLarge("trailers_too_large"));
        }
        if line.is_empty() {
            return Ok(Some(true));
        }
        let colon = line.iter().position(|&b| b == b':');
        if !colon
            .is_some_and(|c| c > 0 && line[..c].iter().copied().all(super::head::is_token_byte))
        {
            return Err(Refusal::BadFraming("trailer_field"));
        }
        Ok(Some(false))
    }
}

/// The next CRLF-ended line of `rest` without its CRLF, `None` while it has not ended; refused
/// once it is longer than any chunk line needs to be.
fn take_line(rest: &[u8]) -> Result<Option<&[u8]>, Refusal> {
    match memchr_lf(rest) {
        Some(i) if i < MAX_CHUNK_LINE => strip_crlf(&rest[..=i]).map(Some),
        Some(_) => Err(Refusal::BadFraming("chunk_line_too_long")),
        None if rest.len() >= MAX_CHUNK_LINE => Err(Refusal::BadFraming("chunk_line_too_long")),
        None => Ok(None),
    }
}

/// `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, checked loosely for shape and strictly for
/// bytes: visible ASCII, spaces and tabs only.
fn check_extensions(ext: &[u8]) -> Result<(), Refusal> {
    if ext.is_empty() {
        return Ok(());
    }
    let starts_right = ext.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b';');
    let clean = ext.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    if starts_right && clean {
        Ok(())
    } else {
        Err(Refusal::BadFraming("chunk_extension"))
    }
}

fn hex_value(d: u8) -> Option<u8> {
    (d as char).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &[u8]) -> Result<Option<(usize, Vec<u8>)>, Refusal> {
        let mut r = ChunkedReader::new(0, 1024, 256);
        Ok(r.feed(body)?.map(|end| (end, r.canonical_body())))
    }

    fn read_bytewise(body: &[u8]) -> Result<Option<(usize, Vec<u8>)>, Refusal> {
        let mut r = ChunkedReader::new(0, 1024, 256);
        for end in 1..=body.len() {
            if let Some(done) = r.feed(&body[..end])? {
                return Ok(Some((done, r.canonical_body())));
            }
        }
        Ok(None)
    }

    #[test]
    fn a_well_formed_body_is_re_encoded_as_one_chunk() {
        let body = b"5;name=\"v\"\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for result in [read(body), read_bytewise(body)] {
            let (end, canonical) = result.unwrap().unwrap();
            assert_eq!(end, body.len() - 4);
            assert_eq!(canonical, b"f\r\nhello, world!!!\r\n0\r\n\r\n");
        }
        assert_eq!(read(b"0\r\n\r\n").unwrap().unwrap().1, b"0\r\n\r\n");
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        assert_eq!(read(b"5\r\nhel").unwrap(), None);
        assert_eq!(read(b"0\r\n").unwrap(), None);
    }

    #[test]
    fn funky_chunks_are_refused() {
        let ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(100 * 1024));
        let cases: Vec<(&[u8], &str)> = vec![
            (b"0x5\r\nhello\r\n0\r\n\r\n", "chunk_size"),
            (b" 5\r\nhello\r\n0\r\n\r\n", "chunk_size"),
            (b"+5\r\nhello\r\n0\r\n\r\n", "chunk_size"),
            (b"\r\nhello\r\n0\r\n\r\n", "chunk_size"),
            (b"10000000000000005\r\nhello\r\n0\r\n\r\n", "chunk_size"),
            (b"5;ext\nhello\r\n0\r\n\r\n", "bare_lf"),
            (b"5\nhello\r\n0\r\n\r\n", "bare_lf"),
            (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "bare_cr"),
            (b"5;a\x00\r\nhello\r\n0\r\n\r\n", "chunk_extension"),
            (b"5 x\r\nhello\r\n0\r\n\r\n", "chunk_extension"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk_data_end"),
            (b"5\r\nhello\n0\r\n\r\n", "chunk_data_end"),
            (b"0\r\nbad trailer\r\n\r\n", "trailer_field"),
            (ext.as_bytes(), "chunk_line_too_long"),
        ];
        for (body, reason) in cases {
            let expected = Err(Refusal::BadFraming(reason));
            assert_eq!(read(body), expected, "{}", body.escape_ascii());
            assert_eq!(
                read_bytewise(body),
                expected,
                "bytewise {}",
                body.escape_ascii()
            );
        }
    }

    #[test]
    fn sizes_past_the_limit_are_refused_before_the_data_arrives() {
        assert_eq!(read(b"401\r\n"), Err(Refusal::BodyTooLarge));
        assert_eq!(read(b"200\r\n").unwrap(), None);
        let big = format!("0\r\nX: {}\r\n\r\n", "t".repeat(300));
        assert_eq!(
            read(big.as_bytes()),
            Err(Refusal::HeadersTooLarge("trailers_too_large"))
        );
    }
}
