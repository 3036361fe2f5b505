//! Golden tests of the injection webhook's answers, over AdmissionReview fixtures in
//! `tests/fixtures/webhook/<case>.review.yaml`. Each answer is compared with
//! `<case>.golden.json` (the response with its patch decoded, so a diff is readable);
//! `UPDATE_GOLDEN=1 cargo test --test webhook` rewrites them. Every injected pod is then
//! patched, checked for the sidecar's invariants, validated strictly against the Kubernetes
//! schemas, and reviewed again to prove a second pass changes nothing.

mod k8s;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use portcullis::webhook::review::{self, Decision};
use portcullis::webhook::WebhookConfig;
use serde_json::{json, Value};

const SETTINGS: &str = "tls: {cert_file: unused.crt, key_file: unused.key}\n\
                        sidecar: {image: \"ghcr.io/portcullis/portcullis:0.1.0\"}\n";

fn settings() -> portcullis::webhook::inject::SidecarSettings {
    WebhookConfig::from_yaml(SETTINGS, Path::new("webhook.yaml"))
        .expect("valid settings")
        .sidecar
}

fn fixtures() -> Vec<(String, Value)> {
    let dir = k8s::repo().join("tests/fixtures/webhook");
    let mut out: Vec<(String, Value)> = fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".review.yaml")?
                .to_string();
            let text = fs::read_to_string(&p).expect("fixture");
            Some((name, serde_yaml::from_str(&text).expect("fixture YAML")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 15,
        "fixtures are missing from {}",
        dir.display()
    );
    out
}

fn answer(review: &Value) -> review::Answer {
    let body = serde_json::to_vec(review).expect("json");
    review::answer(&body, &settings()).expect("an AdmissionReview answer")
}

/// The JSON patch carried by a response, checked the way the API server checks it.
fn decoded_patch(response: &Value) -> Option<Value> {
    let patch = response.get("patch")?;
    assert_eq!(
        response["patchType"], "JSONPatch",
        "patch without patchType"
    );
    let text = patch.as_str().expect("patch is a string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("patch is standard, padded base64");
    Some(serde_json::from_slice(&bytes).expect("patch is JSON"))
}

/// The response in readable form: the patch decoded in place.
fn golden_view(body: &Value) -> Value {
    let mut view = body.clone();
    let response = &body["response"];
    if let Some(patch) = decoded_patch(response) {
        view["response"]["patch"] = patch;
    } else {
        assert!(
            response.get("patchType").is_none(),
            "patchType without a patch"
        );
    }
    view
}

#[test]
fn answers_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for (name, review) in fixtures() {
        let body = answer(&review).body;
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(body["kind"], "AdmissionReview", "{name}");
        assert_eq!(
            body["response"]["uid"], review["request"]["uid"],
            "{name}: uid echoed"
        );
        let view = golden_view(&body);
        let path = k8s::repo().join(format!("tests/fixtures/webhook/{name}.golden.json"));
        let rendered = serde_json::to_string_pretty(&view).expect("json") + "\n";
        if update {
            fs::write(&path, &rendered).expect("write golden");
        } else if fs::read_to_string(&path).ok().as_deref() != Some(rendered.as_str()) {
            mismatched.push(name);
        }
    }
    assert!(
        mismatched.is_empty(),
        "answers differ from their golden files (review, then UPDATE_GOLDEN=1): {mismatched:?}"
    );
}

#[test]
fn every_case_gets_the_expected_decision() {
    let expected = |name: &str| match name {
        "native-by-label" | "deployment-pod-no-maps" | "port-moved" | "native-job" => {
            Decision::Injected(portcullis::webhook::inject::SidecarMode::Native)
        }
        "classic-with-init-containers" => {
            Decision::Injected(portcullis::webhook::inject::SidecarMode::Classic)
        }
        "port-collision"
        | "bad-port-annotation"
        | "bad-sidecar-mode"
        | "missing-config"
        | "host-network"
        | "system-namespace"
        | "opt-in-label-yes"
        | "opt-in-annotation-capital-true" => Decision::Denied,
        _ => Decision::Skipped,
    };
    for (name, review) in fixtures() {
        assert_eq!(answer(&review).decision, expected(&name), "{name}");
    }
}

#[test]
fn denials_name_the_annotation_and_the_fix() {
    let message = |name: &str| {
        let (_, review) = fixtures()
            .into_iter()
            .find(|(n, _)| n == name)
            .expect("fixture");
        let body = answer(&review).body;
        assert_eq!(body["response"]["allowed"], false, "{name}");
        body["response"]["status"]["message"]
            .as_str()
            .expect("message")
            .to_string()
    };
    assert_eq!(
        message("port-collision"),
        "bff.portcullis.dev/port: port 4480 is already used by container \"web\" \
         (fix: set bff.portcullis.dev/port to a free port, and the ConfigMap's listen/admin_listen to match)"
    );
    assert_eq!(
        message("bad-port-annotation"),
        "bff.portcullis.dev/port: \"http\" is not a port number (fix: use a free port between 1 and 65535, \
         and the same port in the ConfigMap's listen/admin_listen)"
    );
    assert!(message("bad-sidecar-mode").starts_with(
        "bff.portcullis.dev/sidecar-mode: \"sidecar\" is not a sidecar mode (fix: use \"native\""
    ));
    assert!(message("missing-config").starts_with("bff.portcullis.dev/config: is missing"));
    assert_eq!(
        message("opt-in-label-yes"),
        "bff.portcullis.dev/inject: \"yes\" is neither \"true\" nor \"false\" (the value is \
         case-sensitive) (fix: set it to \"true\" to inject portcullis, or to \"false\" or remove \
         it to opt out)"
    );
    assert!(message("opt-in-annotation-capital-true")
        .starts_with("bff.portcullis.dev/inject: \"True\" is neither \"true\" nor \"false\""));
}

#[test]
fn unknown_annotations_draw_warnings_not_denials() {
    let (_, review) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "classic-with-init-containers")
        .expect("fixture");
    let body = answer(&review).body;
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["warnings"],
        json!(["unknown annotation bff.portcullis.dev/secrte ignored (did you mean bff.portcullis.dev/secret?)"])
    );
}

/// The injected pod after the API server applied our patch.
fn patched_pod(review: &Value) -> Option<Value> {
    let ops = decoded_patch(&answer(review).body["response"])?;
    let mut pod = review["request"]["object"].clone();
    k8s::apply_patch(&mut pod, &ops).expect("the patch applies to the pod");
    Some(pod)
}

fn sidecar(pod: &Value) -> &Value {
    let all: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .filter(|c| c["name"] == "portcullis")
        .collect();
    assert_eq!(all.len(), 1, "exactly one portcullis container");
    all[0]
}

#[test]
fn injected_pods_hold_one_restricted_sidecar_and_a_second_pass_changes_nothing() {
    for (name, review) in fixtures() {
        let Some(pod) = patched_pod(&review) else {
            continue;
        };
        let c = sidecar(&pod);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(
            c["startupProbe"]["httpGet"].is_object(),
            "{name}: startup probe"
        );
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{name}: resources"
        );
        assert_eq!(
            pod["metadata"]["labels"]["bff.portcullis.dev/injected"], "true",
            "{name}"
        );
        let status = pod["metadata"]["annotations"]["bff.portcullis.dev/status"]
            .as_str()
            .expect("status annotation");
        assert!(
            serde_json::from_str::<Value>(status).is_ok(),
            "{name}: status is JSON"
        );
        let native = c.get("restartPolicy") == Some(&json!("Always"));
        let in_init = pod["spec"]["initContainers"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["name"] == "portcullis"));
        assert_eq!(
            native, in_init,
            "{name}: native sidecars are restartable init containers"
        );
        let mut again = review.clone();
        again["request"]["object"] = pod;
        let second = answer(&again).body;
        assert!(
            second["response"].get("patch").is_none(),
            "{name}: reinjection patched again"
        );
        assert_eq!(second["response"]["allowed"], true, "{name}");
    }
}

#[test]
fn injected_pods_validate_strictly_against_every_supported_kubernetes_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<PathBuf> = fixtures()
        .into_iter()
        .filter_map(|(name, review)| {
            let pod = patched_pod(&review)?;
            let path = dir.path().join(format!("{name}.json"));
            fs::write(&path, serde_json::to_vec_pretty(&pod).expect("json")).expect("write");
            Some(path)
        })
        .collect();
    assert!(files.len() >= 5, "too few injected fixtures");
    for v in k8s::KUBE_VERSIONS {
        if let Err(e) = k8s::validate_strict(v, &files) {
            panic!("injected pods fail strict validation for Kubernetes {v}:\n{e}");
        }
    }
}

#[test]
fn strict_validation_catches_a_broken_pod() {
    // Guards the check above: a misspelt field must make kubernetes-validate fail.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                     "spec": {"containers": [{"name": "x", "image": "x", "restartPolicyy": "Always"}]}});
    fs::write(&path, pod.to_string()).expect("write");
    assert!(k8s::validate_strict("1.33.0", &[path]).is_err());
}

#[test]
fn malformed_requests_are_refused_without_an_answer() {
    let s = settings();
    assert!(review::answer(b"not json", &s).is_err());
    let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}});
    assert!(review::answer(v1beta1.to_string().as_bytes(), &s).is_err());
    let no_uid =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}});
    assert!(review::answer(no_uid.to_string().as_bytes(), &s).is_err());
    // A request with a uid but a broken pod is answered: denied, uid echoed.
    let broken = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                    "object": {"metadata": {"labels": "not-a-map"}, "spec": {}}}});
    let a = review::answer(broken.to_string().as_bytes(), &s).expect("answered");
    assert_eq!(a.body["response"]["uid"], "u1");
    assert_eq!(a.body["response"]["allowed"], false);
}

#[test]
fn a_dry_run_gets_the_same_answer() {
    // `kubectl apply --dry-run=server` calls the webhook with dryRun: true; with no side
    // effects (sideEffects: None) the answer must be the real one.
    for (name, review) in fixtures() {
        let mut dry = review.clone();
        dry["request"]["dryRun"] = json!(true);
        assert_eq!(answer(&dry).body, answer(&review).body, "{name}");
    }
}
