//! The host a request names, read one strict way everywhere it matters: the proxy's host check
//! and route choice, the edge's, an ingress controller's description of a request, `rd` targets
//! and origins.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// `name`, `name:port`, `[v6]` or `[v6]:port` → the lower-case name (or bracketed address);
/// `None` for anything a `Host` header cannot be: userinfo, a path, a space, an empty name, a
/// port that is not a number. Borrowed when the name is lower-case already, as it nearly always
/// is: this runs on every request.
pub fn host_of(authority: &str) -> Option<Cow<'_, str>> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| NAME_BYTES[usize::from(b)]),
    };
    if !valid {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// A host name's bytes: letters, digits, `-`, `.` and `_` (a table: every request is checked).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports_come_apart_and_nothing_else_passes() {
        for (authority, host) in [
            ("App.example.com:443", "app.example.com"),
            ("app.example.com", "app.example.com"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("shop_svc", "shop_svc"),
        ] {
            assert_eq!(host_of(authority).as_deref(), Some(host), "{authority}");
        }
        assert!(
            matches!(host_of("app.example.com:443"), Some(Cow::Borrowed(_))),
            "a lower-case name is not copied"
        );
        for bad in [
            "", "a@b", "a:b", "a/b", "a b", "a:123456", "a:", "[::1", "[zz]:80", "::1", "a\\b",
            "a%2eb",
        ] {
            assert_eq!(host_of(bad), None, "{bad}");
        }
    }
}
