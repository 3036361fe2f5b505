//! promtool (Prometheus 3.16), which `make k8s-tools` builds into `.tools/bin`: shared by the
//! portcullis harness (`support`) and the Kubernetes tests (`k8s`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn command() -> Command {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/promtool");
    assert!(
        path.exists(),
        "{} is missing: run `make k8s-tools` (make test does)",
        path.display()
    );
    Command::new(path)
}

/// `promtool check metrics` on a `/metrics` body: Err with promtool's findings (lint problems
/// such as a counter without `_total`, or text that does not parse).
pub fn check_metrics(exposition: &str) -> Result<String, String> {
    let mut child = command()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("promtool has no stdin")?;
    stdin
        .write_all(exposition.as_bytes())
        .map_err(|e| format!("cannot write to promtool: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool did not finish: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => Ok(text),
        false => Err(text),
    }
}
