//! `Config::from_yaml_with` (what `Config::from_yaml` and `Config::load` run) on any text.
//!
//! Files named in the config (`client_secret_file`, `redis_password_file`, …) are read from
//! memory here, never from disk: the fuzzer must not open `/dev/zero` or `/dev/stdin`, and the
//! result must not depend on the working directory.
//!
//! Properties:
//! - it never panics;
//! - an error names at least one problem, one per line, each line starting with `fuzz.yaml: `
//!   (no line break hides inside a key or message);
//! - secrets never appear in errors: the content of a secret file never does, and the value
//!   of an inline `oidc.client_secret` (8+ letters or digits, written once in the text) does
//!   not influence the error text at all, checked by loading the same text again with only
//!   that value changed (same length).
#![no_main]

use std::io;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use serde_yaml::Value;

const ORIGIN: &str = "fuzz.yaml";
const FILE_SECRET: &str = "Fz9-file-secret-Qx4";

/// Stands in for the file system: `…missing` does not exist, `…empty` holds a newline, any other
/// path holds `FILE_SECRET`.
fn read_file(path: &Path) -> io::Result<String> {
    let name = path.to_string_lossy();
    if name.ends_with("missing") {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        ))
    } else if name.ends_with("empty") {
        Ok("\n".to_string())
    } else {
        Ok(format!("{FILE_SECRET}\n"))
    }
}

/// The error text, or `None` when the configuration is valid.
fn load(text: &str) -> Option<String> {
    Config::from_yaml_with(text, Path::new(ORIGIN), &read_file)
        .err()
        .map(|e| e.to_string())
}

fn check_lines(text: &str, err: &str) {
    let prefix = format!("{ORIGIN}: ");
    assert!(!err.is_empty(), "an error without a problem for {text:?}");
    let body = err.strip_suffix('\n').unwrap_or(err);
    for line in body.split('\n') {
        assert!(
            line.starts_with(&prefix) && !line.contains('\r'),
            "error line {line:?} does not start with {prefix:?}\nerror: {err:?}\ninput: {text:?}"
        );
    }
}

/// Every letter and digit moved to the next one of its kind: same length, no position equal.
fn rotate(secret: &str) -> String {
    secret
        .chars()
        .map(|c| match c {
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c => char::from(c as u8 + 1),
        })
        .collect()
}

fn client_secret(doc: &Value) -> Option<&str> {
    doc.get("oidc")?.get("client_secret")?.as_str()
}

fn check_client_secret(text: &str, err: &Option<String>) {
    let Ok(doc) = serde_yaml::from_str::<Value>(text) else {
        return;
    };
    let Some(secret) = client_secret(&doc) else {
        return;
    };
    if secret.len() < 8
        || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        || text.matches(secret).count() != 1
    {
        return;
    }
    let canary = rotate(secret);
    let changed = text.replacen(secret, &canary, 1);
    // Go on only if the edit changed the client secret and nothing else.
    let Ok(mut doc2) = serde_yaml::from_str::<Value>(&changed) else {
        return;
    };
    if client_secret(&doc2) != Some(canary.as_str()) {
        return;
    }
    if let Some(v) = doc2
        .get_mut("oidc")
        .and_then(|o| o.get_mut("client_secret"))
    {
        *v = Value::String(secret.to_string());
    }
    if doc2 != doc {
        return;
    }
    let err2 = load(&changed);
    if let Some(e) = err {
        assert!(
            !e.contains(secret) || err2.as_deref().is_some_and(|e2| e2.contains(secret)),
            "oidc.client_secret {secret:?} appears in the error:\n{e}\ninput: {text:?}"
        );
    }
    assert_eq!(
        err, &err2,
        "the value of oidc.client_secret changes the error text\ninput: {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let err = load(text);
    if let Some(e) = &err {
        check_lines(text, e);
        assert!(
            text.contains(FILE_SECRET) || !e.contains(FILE_SECRET),
            "a secret file's content appears in the error:\n{e}\ninput: {text:?}"
        );
    }
    check_client_secret(text, &err);
});
