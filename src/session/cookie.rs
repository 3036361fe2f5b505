//! Cookie names, parsing and `Set-Cookie` lines. Attribute strings are built once at start-up.
//!
//! Two cookies exist: the session cookie (`__Host-portcullis`, SameSite Strict by default) and
//! the pre-login transaction cookie (`…-txn`, always SameSite Lax, because the identity
//! provider's redirect back to `/bff/callback` is a cross-site navigation that never carries a
//! Strict cookie). With `session.cookie_domain` the session cookie is `__Secure-portcullis` with
//! `Domain=`, shared by every host under it; the transaction cookie stays host-only, since a
//! login ends on the host it began on.

use http::HeaderMap;

use super::crypto::CookieSecret;
use crate::config::SessionConfig;

pub struct CookiePolicy {
    session_name: String,
    txn_name: String,
    /// The session cookie's name without its `__Host-`/`__Secure-` prefix: what `is_own`
    /// recognises under either prefix.
    base_name: Vec<u8>,
    session_attrs: String,
    txn_attrs: String,
    session_expired_attrs: String,
    txn_expired_attrs: String,
}

/// What the request carried under one cookie name.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Absent,
    /// Present but not in the format portcullis mints.
    Malformed,
    /// Sent more than once: ambiguous, so treated as no session (a sibling subdomain can plant
    /// a second cookie of the same name; the prefix stops only some of those).
    Duplicated,
    Valid(CookieSecret),
}

impl CookiePolicy {
    pub fn new(cfg: &SessionConfig) -> CookiePolicy {
        let same_site = cfg.same_site.as_str();
        let domain = cfg
            .cookie_domain
            .as_ref()
            .map_or_else(String::new, |d| format!("Domain={d}; "));
        CookiePolicy {
            session_name: cfg.cookie_name.clone(),
            txn_name: cfg.transaction_cookie_name(),
            base_name: unprefixed(cfg.cookie_name.as_bytes()).to_vec(),
            session_attrs: format!(
                "{domain}Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={}",
                cfg.absolute_timeout.as_secs()
            ),
            txn_attrs: format!(
                "Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                cfg.transaction_kept_for().as_secs()
            ),
            session_expired_attrs: format!(
                "{domain}Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age=0"
            ),
            txn_expired_attrs: "Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0".to_string(),
        }
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    pub fn session(&self, headers: &HeaderMap) -> Presented {
        presented(headers, &self.session_name)
    }

    pub fn transaction(&self, headers: &HeaderMap) -> Presented {
        presented(headers, &self.txn_name)
    }

    pub fn set_session(&self, secret: &CookieSecret) -> String {
        format!(
            "{}={}; {}",
            self.session_name,
            secret.encode(),
            self.session_attrs
        )
    }

    pub fn set_transaction(&self, secret: &CookieSecret) -> String {
        format!("{}={}; {}", self.txn_name, secret.encode(), self.txn_attrs)
    }

    pub fn expire_session(&self) -> String {
        format!("{}=; {}", self.session_name, self.session_expired_attrs)
    }

    pub fn expire_transaction(&self) -> String {
        format!("{}=; {}", self.txn_name, self.txn_expired_attrs)
    }

    /// Whether `name` is one of portcullis's cookies, under either prefix: switching
    /// `session.cookie_domain` on or off renames the cookie (`__Host-` ↔ `__Secure-`), and the
    /// browser keeps the old one, with a live session behind it, until it expires.
    /// Case-insensitive on purpose: stripping more than browsers would send is harmless,
    /// letting a variant through is not.
    pub fn is_own(&self, name: &[u8]) -> bool {
        if name == self.session_name.as_bytes() {
            return true;
        }
        let base = unprefixed(name);
        let ours = self.base_name.as_slice();
        base.eq_ignore_ascii_case(ours)
            || (base.len() == ours.len() + 4
                && base[..ours.len()].eq_ignore_ascii_case(ours)
                && base[ours.len()..].eq_ignore_ascii_case(b"-txn"))
    }

    /// The `Cookie` value to forward upstream: every cookie except portcullis's own, in order,
    /// merged from all `Cookie` lines. `None` when nothing is left.
    pub fn forwardable_cookies(&self, headers: &HeaderMap) -> Option<Vec<u8>> {
        // The usual request to a session route carries the session cookie alone. Such a line
        // leaves nothing to forward whether or not it is text, so it is not checked for that.
        if sole_line(headers).is_some_and(|line| self.is_own(split_pair(line).0)) {
            return None;
        }
        let mut kept = Vec::new();
        for pair in cookie_pairs(headers) {
            if self.is_own(split_pair(pair).0) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
        (!kept.is_empty()).then_some(kept)
    }

    /// Whether a `Set-Cookie` line from an upstream would set one of portcullis's cookies.
    pub fn sets_own_cookie(&self, set_cookie: &[u8]) -> bool {
        let text = String::from_utf8_lossy(set_cookie);
        let name = text
            .split_once('=')
            .map_or(text.as_ref(), |(n, _)| n)
            .trim();
        self.is_own(name.as_bytes())
    }
}

/// A cookie name without its `__Host-` or `__Secure-` prefix (any case).
fn unprefixed(name: &[u8]) -> &[u8] {
    [b"__host-".as_slice(), b"__secure-"]
        .iter()
        .find_map(|prefix| {
            name.get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .map(|_| &name[prefix.len()..])
        })
        .unwrap_or(name)
}

/// The `name=value` pairs of every `Cookie` line, trimmed, empty ones skipped. Read as bytes:
/// every request to a session route comes here twice (its session, what to forward), and a line
/// is looked at only if it is text (visible ASCII, SP, HTAB), as `HeaderValue::to_str` would
/// have it.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .filter(|line| is_text(line))
        .flat_map(split_on_semicolons)
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// The one pair `cookie_pairs` would yield when the request has a single `Cookie` line holding
/// a single pair; `None` whenever it might yield anything else.
fn only_pair(headers: &HeaderMap) -> Option<&[u8]> {
    sole_line(headers)
        .filter(|line| is_text(line))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
}

/// The request's `Cookie` line when it has only one, and that one holds no `;`.
fn sole_line(headers: &HeaderMap) -> Option<&[u8]> {
    let mut lines = headers.get_all(http::header::COOKIE).iter();
    let line = lines.next()?.as_bytes();
    (lines.next().is_none() && memchr::memchr(b';', line).is_none()).then_some(line)
}

/// No early exit: a loop without one is vectorised, and cookie lines are long.
fn is_text(line: &[u8]) -> bool {
    !line.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b >= 0x7f)
    })
}

fn split_on_semicolons(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let current = rest?;
        let Some(end) = memchr::memchr(b';', current) else {
            rest = None;
            return Some(current);
        };
        rest = Some(&current[end + 1..]);
        Some(&current[..end])
    })
}

/// A pair's trimmed name and, after its first `=`, its trimmed value (`None` without one).
fn split_pair(pair: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b'=', pair) {
        Some(eq) => (pair[..eq].trim_ascii(), Some(pair[eq + 1..].trim_ascii())),
        None => (pair.trim_ascii(), None),
    }
}

fn presented(headers: &HeaderMap, name: &str) -> Presented {
    match only_pair(headers) {
        // The usual request to a session route: one line, one pair.
        Some(pair) => presented_among(std::iter::once(pair), name),
        None => presented_among(cookie_pairs(headers), name),
    }
}

fn presented_among<'a>(pairs: impl Iterator<Item = &'a [u8]>, name: &str) -> Presented {
    let mut found = None;
    for pair in pairs {
        let (n, Some(v)) = split_pair(pair) else {
            continue;
        };
        if n != name.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Presented::Duplicated;
        }
        found = Some(v);
    }
    match found {
        None => Presented::Absent,
        Some(v) => CookieSecret::parse(v).map_or(Presented::Malformed, Presented::Valid),
    }
}

/// The default cookie policy, for unit tests of code that strips or reads cookies.
#[cfg(test)]
pub(crate) fn test_policy() -> CookiePolicy {
    CookiePolicy::new(&test_config())
}

#[cfg(test)]
fn test_config() -> SessionConfig {
    use crate::config::{SameSite, StoreConfig};
    use std::time::Duration;
    SessionConfig {
        store: StoreConfig::Memory,
        key_prefix: "p".into(),
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(3600),
        login_timeout: Duration::from_secs(600),
        refresh_lock_timeout: Duration::from_secs(10),
        refresh_wait_timeout: Duration::from_secs(5),
        cookie_name: "__Host-portcullis".into(),
        cache_max_entries: 0,
        same_site: SameSite::Strict,
        cookie_domain: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy() -> CookiePolicy {
        test_policy()
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(http::header::COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn finds_one_valid_session_cookie() {
        let s = CookieSecret::generate();
        let h = headers(&[&format!("a=1; __Host-portcullis={}; b=2", s.encode())]);
        assert_eq!(policy().session(&h), Presented::Valid(s));
    }

    #[test]
    fn duplicates_malformed_and_case_variants_are_not_sessions() {
        let s = CookieSecret::generate().encode();
        let p = policy();
        assert_eq!(
            p.session(&headers(&[
                &format!("__Host-portcullis={s}"),
                &format!("__Host-portcullis={s}")
            ])),
            Presented::Duplicated
        );
        assert_eq!(
            p.session(&headers(&["__Host-portcullis=abc"])),
            Presented::Malformed
        );
        assert_eq!(
            p.session(&headers(&[&format!("__host-portcullis={s}")])),
            Presented::Absent
        );
        assert_eq!(p.session(&headers(&[])), Presented::Absent);
    }

    #[test]
    fn forwarded_cookies_drop_only_our_own_in_order() {
        let s = CookieSecret::generate().encode();
        let p = policy();
        let h = headers(&[
            &format!("a=1; __Host-portcullis={s}; b=2"),
            &format!("__Host-portcullis-txn={s};c=3"),
        ]);
        assert_eq!(
            p.forwardable_cookies(&h).as_deref(),
            Some(b"a=1; b=2; c=3".as_slice())
        );
        let only_ours = headers(&[&format!("__HOST-PORTCULLIS={s}")]);
        assert_eq!(p.forwardable_cookies(&only_ours), None);
        let renamed = headers(&[&format!(
            "__Secure-portcullis={s}; __secure-portcullis-txn={s}; portcullis=1; portcullis-txn=2; d=4"
        )]);
        assert_eq!(
            p.forwardable_cookies(&renamed).as_deref(),
            Some(b"d=4".as_slice()),
            "the name under the other prefix, or none, is still portcullis's"
        );
    }

    #[test]
    fn a_lone_cookie_is_judged_as_in_a_list() {
        let s = CookieSecret::generate().encode();
        let p = policy();
        for (line, forwarded) in [
            (format!("__Host-portcullis={s}"), None),
            (format!("\t__Host-portcullis-txn={s} "), None),
            ("a=1".to_string(), Some("a=1")),
            (" a=1\t".to_string(), Some("a=1")),
            ("portcullis".to_string(), None),
            ("  ".to_string(), None),
        ] {
            assert_eq!(
                p.forwardable_cookies(&headers(&[&line])).as_deref(),
                forwarded.map(str::as_bytes),
                "{line:?}"
            );
        }
        let twice = headers(&[&format!("__Host-portcullis={s}"), "b=2"]);
        assert_eq!(
            p.forwardable_cookies(&twice).as_deref(),
            Some(b"b=2".as_slice())
        );
    }

    #[test]
    fn a_cookie_line_that_is_not_text_is_not_read_or_forwarded() {
        let s = CookieSecret::generate().encode();
        let p = policy();
        let mut h = headers(&["a=1;b=2 ;  ; c"]);
        let binary = format!("__Host-portcullis={s}; x=caf\u{e9}");
        h.append(
            http::header::COOKIE,
            HeaderValue::from_bytes(
                &binary
                    .as_bytes()
                    .iter()
                    .map(|&b| if b == 0xc3 { 0x80 } else { b })
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        );
        assert_eq!(
            p.session(&h),
            Presented::Absent,
            "the session is read only from text"
        );
        assert_eq!(
            p.forwardable_cookies(&h).as_deref(),
            Some(b"a=1; b=2; c".as_slice()),
            "pairs are trimmed, empty ones dropped, a non-text line left out whole"
        );
        let tabbed = headers(&[&format!("\t__Host-portcullis = {s}\t")]);
        assert!(
            matches!(p.session(&tabbed), Presented::Valid(_)),
            "SP and HTAB trimmed"
        );
    }

    #[test]
    fn set_cookie_lines_carry_the_contract_attributes() {
        let p = policy();
        let s = CookieSecret::generate();
        assert_eq!(
            p.set_session(&s),
            format!(
                "__Host-portcullis={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600",
                s.encode()
            )
        );
        assert!(p
            .set_transaction(&s)
            .ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=1200"));
        assert!(p.expire_session().ends_with("Max-Age=0"));
        assert!(p.sets_own_cookie(b"__Host-Portcullis=x; Path=/"));
        assert!(!p.set_session(&s).contains("Domain"));
        assert!(!p.sets_own_cookie(b"theme=dark"));
    }

    #[test]
    fn a_cookie_domain_scopes_the_session_cookie_but_not_the_transaction_cookie() {
        use crate::config::SameSite;
        use std::time::Duration;
        let p = CookiePolicy::new(&SessionConfig {
            cookie_name: "__Secure-portcullis".into(),
            cookie_domain: Some("example.com".into()),
            same_site: SameSite::Lax,
            absolute_timeout: Duration::from_secs(60),
            ..test_config()
        });
        let s = CookieSecret::generate();
        assert_eq!(
            p.set_session(&s),
            format!(
                "__Secure-portcullis={}; Domain=example.com; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60",
                s.encode()
            )
        );
        assert!(p.expire_session().contains("; Domain=example.com; "));
        assert!(!p.set_transaction(&s).contains("Domain"));
    }
}
