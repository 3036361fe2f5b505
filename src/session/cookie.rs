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
    base_name: String,
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
            base_name: unprefixed(&cfg.cookie_name).to_string(),
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
    pub fn is_own(&self, name: &str) -> bool {
        let base = unprefixed(name);
        let ours = self.base_name.len();
        base.eq_ignore_ascii_case(&self.base_name)
            || (base.len() == ours + 4
                && base
                    .get(..ours)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&self.base_name))
                && base
                    .get(ours..)
                    .is_some_and(|t| t.eq_ignore_ascii_case("-txn")))
    }

    /// The `Cookie` value to forward upstream: every cookie except portcullis's own, in order,
    /// merged from all `Cookie` lines. `None` when nothing is left.
    pub fn forwardable_cookies(&self, headers: &HeaderMap) -> Option<String> {
        let mut kept = String::new();
        for pair in cookie_pairs(headers) {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if self.is_own(name) {
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(pair);
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
        self.is_own(name)
    }
}

/// A cookie name without its `__Host-` or `__Secure-` prefix (any case).
fn unprefixed(name: &str) -> &str {
    ["__host-", "__secure-"]
        .iter()
        .find_map(|prefix| {
            name.get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .map(|_| &name[prefix.len()..])
        })
        .unwrap_or(name)
}

fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

fn presented(headers: &HeaderMap, name: &str) -> Presented {
    let mut found = None;
    for pair in cookie_pairs(headers) {
        let Some((n, v)) = pair.split_once('=') else {
            continue;
        };
        if n.trim() != name {
            continue;
        }
        if found.is_some() {
            return Presented::Duplicated;
        }
        found = Some(v.trim());
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
        assert_eq!(p.forwardable_cookies(&h).as_deref(), Some("a=1; b=2; c=3"));
        let only_ours = headers(&[&format!("__HOST-PORTCULLIS={s}")]);
        assert_eq!(p.forwardable_cookies(&only_ours), None);
        let renamed = headers(&[&format!(
            "__Secure-portcullis={s}; __secure-portcullis-txn={s}; portcullis=1; portcullis-txn=2; d=4"
        )]);
        assert_eq!(
            p.forwardable_cookies(&renamed).as_deref(),
            Some("d=4"),
            "the name under the other prefix, or none, is still portcullis's"
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
