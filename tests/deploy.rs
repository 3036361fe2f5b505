//! The files under `deploy/`: the demo application's manifests (valid for every supported
//! Kubernetes version, its sidecar config accepted by `portcullis check`, its pod template
//! injected into a valid pod whose `bff` port its Service targets), the Grafana dashboard
//! (every metric it queries is one portcullis exports) and the image's Dockerfile.

mod k8s;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use portcullis::webhook::{review, WebhookConfig};
use serde_json::{json, Value};

fn demo_docs() -> Vec<Value> {
    let text = fs::read_to_string(k8s::repo().join("deploy/kubernetes/demo-app.yaml"))
        .expect("demo manifests");
    k8s::documents(&text)
}

#[test]
fn the_demo_manifests_validate_strictly() {
    let file = k8s::repo().join("deploy/kubernetes/demo-app.yaml");
    for v in k8s::KUBE_VERSIONS {
        if let Err(e) = k8s::validate_strict(v, std::slice::from_ref(&file)) {
            panic!("demo-app.yaml is invalid for Kubernetes {v}:\n{e}");
        }
    }
}

#[test]
fn the_demo_sidecar_config_passes_check() {
    let docs = demo_docs();
    let config = k8s::find(&docs, "ConfigMap", "shop-bff")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("client-secret"), "s3cret").expect("secret");
    let path = dir.path().join("config.yaml");
    fs::write(
        &path,
        config.replace("/etc/portcullis/secret", &dir.path().to_string_lossy()),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_pod_is_injected_and_its_service_reaches_the_sidecar() {
    let docs = demo_docs();
    let deploy = k8s::find(&docs, "Deployment", "shop");
    let mut pod = deploy["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["generateName"] = json!("shop-");
    let request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "demo", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "shop",
        "operation": "CREATE", "object": pod}});
    let settings = WebhookConfig::from_yaml(
        "tls: {cert_file: a, key_file: b}\nsidecar: {image: \"ghcr.io/portcullis/portcullis:0.1.0\"}\n",
        Path::new("webhook.yaml"),
    )
    .expect("settings")
    .sidecar;
    let answer = review::answer(request.to_string().as_bytes(), &settings).expect("answered");
    let patch = answer.body["response"]["patch"]
        .as_str()
        .expect("the demo pod is injected");
    let ops: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64"),
    )
    .expect("json");
    k8s::apply_patch(&mut pod, &ops).expect("patch applies");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pod.json");
    fs::write(&path, pod.to_string()).expect("write");
    if let Err(e) = k8s::validate_strict("1.33.0", &[path]) {
        panic!("the injected demo pod is invalid:\n{e}");
    }
    let ports: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let svc = k8s::find(&docs, "Service", "shop");
    let target = &svc["spec"]["ports"][0]["targetPort"];
    assert!(
        ports.iter().any(|p| &p["name"] == target),
        "Service targetPort {target} is no port of the pod"
    );
    let policy = k8s::find(&docs, "NetworkPolicy", "shop-only-through-portcullis");
    for rule in policy["spec"]["ingress"].as_array().expect("ingress") {
        let name = &rule["ports"][0]["port"];
        assert!(
            ports.iter().any(|p| &p["name"] == name),
            "NetworkPolicy port {name} is no port of the pod"
        );
    }
}

/// `portcullis_…` names a PromQL expression uses, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("portcullis_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_portcullis_exports() {
    let text =
        fs::read_to_string(k8s::repo().join("deploy/grafana/portcullis.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let sources: String = ["src/metrics.rs", "src/webhook/http.rs"]
        .iter()
        .map(|p| fs::read_to_string(k8s::repo().join(p)).expect("metrics source"))
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64()),
            "duplicate panel id {}",
            panel["id"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    assert!(
        queried.len() >= 10,
        "the dashboard queries too little: {queried:?}"
    );
    for name in &queried {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "the dashboard queries {name}, which portcullis does not export"
        );
    }
}

#[test]
fn the_image_is_static_and_runs_as_non_root() {
    let text = fs::read_to_string(k8s::repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "not a multi-stage build");
    assert!(
        stages
            .last()
            .is_some_and(|s| s.contains("distroless/static")),
        "final stage is not static"
    );
    let user = text
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
}
