//! Shared by the Kubernetes tests (`webhook`, `webhook_e2e`, `chart`, `alerts`, …): the pinned
//! tools that `make k8s-tools` installs into `.tools/` (helm, kubernetes-validate, cel-python,
//! promtool), chart rendering, strict schema validation, and an RFC 6902 `add` applier standing
//! in for the API server's.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

#[path = "../support/ports.rs"]
mod ports;
#[path = "../support/promtool.rs"]
mod promtool;

pub fn free_port() -> u16 {
    ports::free_port()
}

/// Kubernetes minors the chart and the injected pods are validated against.
pub const KUBE_VERSIONS: [&str; 4] = ["1.29.0", "1.31.0", "1.33.0", "1.35.0"];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(relative: &str) -> PathBuf {
    let path = repo().join(".tools").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `make k8s-tools` (make test does)",
        path.display()
    );
    path
}

/// promtool (Prometheus 3.16), built by `make k8s-tools`.
pub fn promtool() -> Command {
    promtool::command()
}

/// `promtool check metrics` on a `/metrics` body; Err holds promtool's findings.
pub fn promtool_check_metrics(exposition: &str) -> Result<String, String> {
    promtool::check_metrics(exposition)
}

/// Evaluates a webhook `matchConditions` expression the way the API server does, with CEL (the
/// cel-python interpreter `make k8s-tools` installs) and `object` bound to `object`. `Err` is an
/// evaluation error, which the API server handles by the webhook's failurePolicy.
pub fn cel_matches(expression: &str, object: &Value) -> Result<bool, String> {
    use std::io::Write;
    let mut child = Command::new(tool("venv/bin/python"))
        .args(["-m", "celpy", "--json-document", "object", expression])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run celpy: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("celpy has no stdin")?;
    writeln!(stdin, "{object}").map_err(|e| format!("cannot write to celpy: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| format!("celpy did not finish: {e}"))?;
    // celpy prints the result as JSON; an evaluation error prints `null` (and exits 0).
    let printed = String::from_utf8_lossy(&out.stdout);
    match printed.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "{expression} on {object}: {other} {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

pub fn helm() -> Command {
    let mut cmd = Command::new(tool("helm/helm"));
    // Keep helm's caches and config out of $HOME, so tests neither read nor write a user's setup.
    let home = repo().join(".tools/helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/portcullis")
}

/// `helm template` of the chart with the given values files and extra arguments.
pub fn render(values: &[&Path], extra: &[&str]) -> Result<String, String> {
    let mut cmd = helm();
    cmd.args(["template", "portcullis"]).arg(chart_dir());
    cmd.args(["--namespace", "portcullis"]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    cmd.args(extra);
    run(cmd)
}

/// The rendered YAML stream as JSON values, empty documents dropped.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("YAML that does not parse"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// `kubernetes-validate --strict` (unknown fields rejected) against one Kubernetes version.
pub fn validate_strict(kube_version: &str, files: &[PathBuf]) -> Result<String, String> {
    let mut cmd = Command::new(tool("venv/bin/kubernetes-validate"));
    cmd.args(["--strict", "--quiet", "-k", kube_version])
        .args(files);
    run(cmd)
}

pub fn run(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match out.status.success() {
        true => Ok(text(&out.stdout)),
        false => Err(format!("{}{}", text(&out.stdout), text(&out.stderr))),
    }
}

/// Applies JSON-patch `add` operations as RFC 6902 §4.1 defines them (the only op the webhook
/// emits); anything else, or a path whose parent is missing, is an error, as in the API server.
pub fn apply_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("the patch is not an array")? {
        if op["op"] != "add" {
            return Err(format!("unexpected op {op}"));
        }
        let path = op["path"].as_str().ok_or("path is not a string")?;
        let (parent, last) = path.rsplit_once('/').ok_or("path has no '/'")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .ok_or_else(|| format!("parent of {path} does not exist"))?;
        match target {
            Value::Object(m) => {
                m.insert(last, op["value"].clone());
            }
            Value::Array(a) if last == "-" => a.push(op["value"].clone()),
            Value::Array(a) => {
                let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                if i > a.len() {
                    return Err(format!("index out of range in {path}"));
                }
                a.insert(i, op["value"].clone());
            }
            _ => return Err(format!("parent of {path} is not a container")),
        }
    }
    Ok(())
}

/// Every values file under `helm/`, plus `None` for the chart's defaults.
pub fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("helm"))
        .expect("helm/ values dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "values files are missing from helm/");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `deadline`.
pub fn eventually<T>(
    what: &str,
    deadline: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
