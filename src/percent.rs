//! Percent-decoding as servers and browsers do it: `%XX` becomes the byte, a `%` without two hex
//! digits stays as it is, `+` is left alone (it means space only in form bodies).

pub fn decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let pair = input
            .get(i + 1..i + 3)
            .and_then(|p| std::str::from_utf8(p).ok());
        match pair
            .filter(|_| input[i] == b'%')
            .and_then(|p| u8::from_str_radix(p, 16).ok())
        {
            Some(byte) if pair.is_some_and(|p| p.bytes().all(|b| b.is_ascii_hexdigit())) => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// One layer of decoding of a string; invalid UTF-8 in the result is replaced, never trusted.
pub fn decode_str(input: &str) -> String {
    String::from_utf8_lossy(&decode(input.as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_valid_escapes_and_keeps_the_rest() {
        assert_eq!(decode_str("/a%20b%2Fc"), "/a b/c");
        assert_eq!(decode_str("100%25 off"), "100% off");
        assert_eq!(decode_str("%zz%4"), "%zz%4");
        assert_eq!(decode_str("a+b&%5C"), "a+b&\\");
        assert_eq!(decode_str("%+1"), "%+1");
    }
}
