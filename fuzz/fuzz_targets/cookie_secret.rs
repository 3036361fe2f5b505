//! `CookieSecret::parse` and the `Cookie` header handling of `CookiePolicy`.
//!
//! Properties:
//! - a secret that parses has exactly one spelling: `encode()` gives back the input, which is
//!   43 base64url characters;
//! - `session()` and `transaction()` find a cookie by its exact name; two of them are
//!   `Duplicated`, none is `Absent`, a value that does not parse is `Malformed`;
//! - `forwardable_cookies()` keeps every other cookie, in order, and never one whose name is
//!   `__Host-portcullis` or `__Host-portcullis-txn` in any letter case; what it returns is a
//!   valid header value again.
//!
//! The input is the secret candidate and, split at `\n`, the `Cookie` lines of one request.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use portcullis::session::cookie::{CookiePolicy, Presented};
use portcullis::session::CookieSecret;

const SESSION: &str = "__Host-portcullis";
const TXN: &str = "__Host-portcullis-txn";

const CONFIG: &str = r#"
public_url: "http://127.0.0.1:4480"
oidc:
  issuer: "http://127.0.0.1:4490"
  client_id: "spa"
  client_secret: "x"
routes:
  - path: "/"
    upstream: "http://127.0.0.1:3000"
    kind: page
"#;

fn policy() -> &'static CookiePolicy {
    static POLICY: OnceLock<CookiePolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let cfg = Config::from_yaml(CONFIG, Path::new("fuzz.yaml"))
            .unwrap_or_else(|e| panic!("the fuzz target's own config is invalid:\n{e}"));
        let policy = CookiePolicy::new(&cfg.session);
        assert_eq!(policy.session_name(), SESSION);
        policy
    })
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Cookie-pair whitespace: header values hold no other (CR, LF and NUL are refused by `http`).
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn pair_name(pair: &str) -> &str {
    trim_ows(pair.split_once('=').map_or(pair, |(name, _)| name))
}

/// The non-empty cookie pairs of all lines, in order. A line that is not visible ASCII (obs-text)
/// is not readable as text, so none of its pairs count.
fn pairs<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
        .flat_map(|l| l.split(';'))
        .map(trim_ows)
        .filter(|p| !p.is_empty())
        .collect()
}

/// What the request presents under `name`: exact name, one occurrence, a value that parses.
fn expected(pairs: &[&str], name: &str) -> Presented {
    let values: Vec<&str> = pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .filter(|(n, _)| trim_ows(n) == name)
        .map(|(_, v)| trim_ows(v))
        .collect();
    match values.as_slice() {
        [] => Presented::Absent,
        [v] => CookieSecret::parse(v).map_or(Presented::Malformed, Presented::Valid),
        _ => Presented::Duplicated,
    }
}

fn check_secret(input: &str) {
    if let Some(secret) = CookieSecret::parse(input) {
        assert_eq!(
            secret.encode(),
            input,
            "a parsed secret must encode to its input"
        );
        assert_eq!(input.len(), 43, "a secret is 43 characters: {input:?}");
        assert!(
            input.bytes().all(is_base64url),
            "a secret is base64url: {input:?}"
        );
    }
}

fn check_cookies(input: &str) {
    let lines: Vec<&str> = input
        .split('\n')
        .filter(|l| HeaderValue::from_str(l).is_ok())
        .collect();
    let mut headers = HeaderMap::new();
    for line in &lines {
        headers.append(COOKIE, HeaderValue::from_str(line).expect("checked above"));
    }
    let policy = policy();
    let pairs = pairs(&lines);

    assert_eq!(
        policy.session(&headers),
        expected(&pairs, SESSION),
        "session cookie of {lines:?}"
    );
    assert_eq!(
        policy.transaction(&headers),
        expected(&pairs, TXN),
        "transaction cookie of {lines:?}"
    );

    let forwarded = policy.forwardable_cookies(&headers);
    if let Some(fwd) = &forwarded {
        for pair in fwd.split(';') {
            let name = pair_name(pair);
            assert!(
                !name.eq_ignore_ascii_case(SESSION) && !name.eq_ignore_ascii_case(TXN),
                "portcullis's own cookie {name:?} forwarded upstream in {fwd:?} (from {lines:?})"
            );
        }
        assert!(
            HeaderValue::from_str(fwd).is_ok(),
            "forwarded Cookie is not a header value: {fwd:?}"
        );
    }
    let kept: Vec<&str> = pairs
        .iter()
        .copied()
        .filter(|p| {
            let name = pair_name(p);
            !name.eq_ignore_ascii_case(SESSION) && !name.eq_ignore_ascii_case(TXN)
        })
        .collect();
    let kept = (!kept.is_empty()).then(|| kept.join("; "));
    assert_eq!(
        forwarded, kept,
        "every other cookie is forwarded, in order (from {lines:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check_secret(input);
    check_cookies(input);
});
