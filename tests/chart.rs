//! The Helm chart, tested without a cluster: `helm lint --strict` and `helm template` for every
//! values file in `helm/` (and the defaults) × Kubernetes 1.29/1.31/1.33/1.35, each render
//! validated strictly (unknown fields rejected) by kubernetes-validate; assertions on the
//! rendered objects; values the schema must refuse; and the example sidecar configurations,
//! which must pass `portcullis check`. The ingress auth examples' controller objects (Traefik,
//! Envoy Gateway, Gateway API kinds) are validated strictly against the real CRDs that
//! `make k8s-tools` puts in `.tools/crds`, by `tests/fixtures/chart/crd_validate.py`.

mod k8s;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn render(values: Option<&Path>, extra: &[&str]) -> Vec<Value> {
    let files: Vec<&Path> = values.into_iter().collect();
    match k8s::render(&files, extra) {
        Ok(yaml) => k8s::documents(&yaml),
        Err(e) => panic!("helm template failed for {values:?}:\n{e}"),
    }
}

fn file(name: &str) -> PathBuf {
    k8s::repo().join("helm").join(name)
}

fn label(values: &Option<PathBuf>) -> String {
    values
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or("(defaults)".to_string(), |n| {
            n.to_string_lossy().into_owned()
        })
}

#[test]
fn every_values_file_lints_strictly() {
    for values in k8s::values_files() {
        let mut cmd = k8s::helm();
        cmd.args(["lint", "--strict"]).arg(k8s::chart_dir());
        if let Some(v) = &values {
            cmd.arg("-f").arg(v);
        }
        let out = cmd.output().expect("helm lint runs");
        assert!(
            out.status.success(),
            "helm lint --strict failed for {}:\n{}{}",
            label(&values),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_render_validates_strictly_for_every_kubernetes_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kube in k8s::KUBE_VERSIONS {
        let mut files = Vec::new();
        for (i, values) in k8s::values_files().into_iter().enumerate() {
            let files_arg: Vec<&Path> = values.iter().map(PathBuf::as_path).collect();
            let yaml = k8s::render(&files_arg, &["--kube-version", kube])
                .unwrap_or_else(|e| panic!("{} on {kube}: {e}", label(&values)));
            let path = dir.path().join(format!("{kube}-{i}.yaml"));
            fs::write(&path, yaml).expect("write render");
            files.push(path);
        }
        if let Err(e) = k8s::validate_strict(kube, &files) {
            panic!("rendered objects fail strict validation for Kubernetes {kube}:\n{e}");
        }
    }
}

#[test]
fn the_chart_refuses_kubernetes_older_than_1_29() {
    assert!(k8s::render(&[], &["--kube-version", "1.28.0"]).is_err());
}

#[test]
fn the_webhook_is_fail_closed_and_sees_only_opted_in_pods() {
    let docs = render(None, &[]);
    let mwc = k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector");
    let hook = &mwc["webhooks"][0];
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    assert!(hook["timeoutSeconds"].as_u64().is_some_and(|t| t <= 10));
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "portcullis",
    ] {
        assert!(
            excluded["values"]
                .as_array()
                .expect("values")
                .contains(&json!(ns)),
            "{ns}"
        );
    }
    let own_pods = &hook["objectSelector"]["matchExpressions"][1];
    assert_eq!(
        own_pods,
        &json!({"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["portcullis"]})
    );
}

/// A pod opted in by the label or annotation `bff.portcullis.dev/inject` (metadata only).
fn pod_with(labels: Value, annotations: Value) -> Value {
    let mut metadata = json!({"name": "web", "namespace": "shop"});
    if !labels.is_null() {
        metadata["labels"] = labels;
    }
    if !annotations.is_null() {
        metadata["annotations"] = annotations;
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

/// The webhook's answer for `pod`, with the config and secret it needs named by the injector.
fn webhook_decision(pod: &Value) -> portcullis::webhook::review::Decision {
    let settings = portcullis::webhook::WebhookConfig::from_yaml(
        "tls: {cert_file: a, key_file: b}\n\
         sidecar: {image: \"ghcr.io/portcullis/portcullis:0.1.0\", config_map: web-bff, secret: web-bff-oidc}\n",
        Path::new("webhook.yaml"),
    )
    .expect("settings")
    .sidecar;
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "shop", "operation": "CREATE", "object": pod}});
    portcullis::webhook::review::answer(review.to_string().as_bytes(), &settings)
        .expect("answered")
        .decision
}

/// The matchConditions, evaluated with CEL as the API server does, send the webhook every pod
/// that names the opt-in key with any value but "false" ("yes", "True" included, which the
/// webhook then denies with its message, instead of the pod starting without portcullis), and
/// exactly the pods the webhook would not skip: the label wins over the annotation in both.
#[test]
fn match_conditions_send_every_opt_in_value_but_false_and_agree_with_the_webhook() {
    use portcullis::webhook::review::Decision;
    let docs = render(None, &[]);
    let hook =
        &k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector")["webhooks"][0];
    let condition = hook["matchConditions"][0]["expression"]
        .as_str()
        .expect("matchConditions");
    let key = "bff.portcullis.dev/inject";
    let cases = [
        ("label true", json!({key: "true"}), Value::Null, true),
        ("label yes", json!({key: "yes"}), Value::Null, true),
        ("label True", json!({key: "True"}), Value::Null, true),
        ("empty label", json!({key: ""}), Value::Null, true),
        (
            "annotation yes",
            json!({"app": "web"}),
            json!({key: "yes"}),
            true,
        ),
        ("annotation true", Value::Null, json!({key: "true"}), true),
        ("label false", json!({key: "false"}), Value::Null, false),
        (
            "annotation false",
            Value::Null,
            json!({key: "false"}),
            false,
        ),
        (
            "label false wins",
            json!({key: "false"}),
            json!({key: "true"}),
            false,
        ),
        (
            "label true wins",
            json!({key: "true"}),
            json!({key: "false"}),
            true,
        ),
        (
            "not opted in",
            json!({"app": "web"}),
            json!({"note": "x"}),
            false,
        ),
        ("no labels or annotations", Value::Null, Value::Null, false),
    ];
    for (case, labels, annotations, sent) in cases {
        let pod = pod_with(labels, annotations);
        let matched = k8s::cel_matches(condition, &pod).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(matched, sent, "{case}: sent to the webhook");
        let decision = webhook_decision(&pod);
        assert_eq!(
            decision != Decision::Skipped,
            sent,
            "{case}: the webhook's decision {decision:?} disagrees with the matchConditions"
        );
    }
    let denied = webhook_decision(&pod_with(json!({key: "yes"}), Value::Null));
    assert_eq!(denied, Decision::Denied);
}

#[test]
fn the_webhook_service_port_and_certificate_are_wired_together() {
    let docs = render(None, &[]);
    let hook =
        &k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector")["webhooks"][0];
    let svc_ref = &hook["clientConfig"]["service"];
    let svc = k8s::find(&docs, "Service", svc_ref["name"].as_str().expect("name"));
    assert_eq!(svc["metadata"]["namespace"], svc_ref["namespace"]);
    assert_eq!(svc_ref["path"], "/mutate");
    let port = svc["spec"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == svc_ref["port"]))
        .expect("the Service has the webhook's port");
    let deploy = k8s::find(&docs, "Deployment", "portcullis-injector");
    let pod = &deploy["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let target = container["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == port["targetPort"]))
        .expect("the Service's targetPort names a container port");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod["metadata"]["labels"][k], v, "Service selector {k}");
    }
    // The port the webhook listens on (its config) is the container port the Service targets.
    let cm = k8s::find(&docs, "ConfigMap", "portcullis-injector");
    let config: Value =
        serde_yaml::from_str(cm["data"]["webhook.yaml"].as_str().expect("config")).expect("yaml");
    assert_eq!(
        config["listen"],
        format!("0.0.0.0:{}", target["containerPort"])
    );
    // helm mode: the caBundle is the CA in the Secret the Deployment mounts.
    let secret_name = pod["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "tls"))
        .map(|v| v["secret"]["secretName"].clone())
        .expect("tls volume");
    let secret = k8s::find(&docs, "Secret", secret_name.as_str().expect("name"));
    assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    assert!(secret["data"]["tls.key"].is_string());
}

fn workload_pods(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_container_runs_restricted() {
    for values in k8s::values_files() {
        let docs = render(values.as_deref(), &[]);
        for (name, pod) in workload_pods(&docs) {
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
            for c in pod["containers"].as_array().expect("containers") {
                let sc = &c["securityContext"];
                assert_eq!(sc["runAsNonRoot"], true, "{name}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
                assert!(
                    c["resources"]["requests"]["memory"].is_string(),
                    "{name}: requests"
                );
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    let port = &c[probe]["httpGet"]["port"];
                    assert!(
                        port == "admin" || port == "bff-admin",
                        "{name}: {probe} on the admin port"
                    );
                }
            }
        }
    }
}

#[test]
fn every_object_carries_the_standard_labels() {
    for values in k8s::values_files() {
        for doc in render(values.as_deref(), &[]) {
            let labels = &doc["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/component",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{} {} lacks {key}",
                    doc["kind"],
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn monitors_and_policies_exist_only_when_enabled() {
    let defaults = k8s::kinds(&render(None, &[]));
    for kind in [
        "ServiceMonitor",
        "PodMonitor",
        "NetworkPolicy",
        "PrometheusRule",
    ] {
        assert!(
            !defaults.contains(&kind.to_string()),
            "{kind} rendered by default"
        );
    }
    let docs = render(Some(&file("test-monitoring.yaml")), &[]);
    let sm = k8s::find(&docs, "ServiceMonitor", "portcullis-injector");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let svc = k8s::find(&docs, "Service", "portcullis-injector");
    assert!(svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == "http-metrics"));
    let rule = k8s::find(&docs, "PrometheusRule", "portcullis");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let pm = k8s::find(&docs, "PodMonitor", "portcullis-sidecars");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({"bff.portcullis.dev/injected": "true"})
    );
    assert_eq!(pm["spec"]["namespaceSelector"], json!({"any": true}));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "bff-admin");
    let np = k8s::find(&docs, "NetworkPolicy", "portcullis-injector");
    assert_eq!(
        np["spec"]["ingress"][0],
        json!({"ports": [{"port": "webhook", "protocol": "TCP"}]})
    );
    assert_eq!(np["spec"]["egress"], json!([]));
    let cm = k8s::find(&docs, "ConfigMap", "portcullis-injector");
    assert!(cm["data"]["webhook.yaml"]
        .as_str()
        .expect("config")
        .contains("mode: classic"));
}

#[test]
fn cert_manager_mode_injects_the_ca_instead_of_rendering_one() {
    let docs = render(Some(&file("test-cert-manager.yaml")), &[]);
    let mwc = k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "portcullis/portcullis-injector"
    );
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    let cert = k8s::find(&docs, "Certificate", "portcullis-injector");
    assert_eq!(cert["spec"]["secretName"], "portcullis-injector-tls");
    assert!(cert["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .contains(&json!("portcullis-injector.portcullis.svc")));
    let kinds = k8s::kinds(&docs);
    assert!(
        !kinds.contains(&"Secret".to_string()),
        "no Helm-made Secret in certManager mode"
    );
    assert!(
        !kinds.contains(&"PodDisruptionBudget".to_string()),
        "no PDB for one replica"
    );
}

#[test]
fn existing_secret_mode_uses_the_given_secret_and_ca() {
    let docs = render(Some(&file("test-existing-secret.yaml")), &[]);
    let hook =
        &k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector")["webhooks"][0];
    assert_eq!(
        hook["clientConfig"]["caBundle"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
    );
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert!(hook.get("matchConditions").is_none());
    assert!(hook["namespaceSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .expect("values")
        .contains(&json!("monitoring")));
    let deploy = k8s::find(&docs, "Deployment", "portcullis-injector");
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"] == "injector-serving-cert"));
    assert!(!k8s::kinds(&docs).contains(&"Secret".to_string()));
}

#[test]
fn the_gateway_serves_its_bff_port_through_its_service() {
    let docs = render(Some(&file("test-gateway.yaml")), &[]);
    assert!(!k8s::kinds(&docs).contains(&"MutatingWebhookConfiguration".to_string()));
    let svc = k8s::find(&docs, "Service", "portcullis-gateway");
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"name": "http", "port": 80, "targetPort": "bff", "protocol": "TCP"})
    );
    let pod = &k8s::find(&docs, "Deployment", "portcullis-gateway")["spec"]["template"];
    let ports = &pod["spec"]["containers"][0]["ports"];
    assert_eq!(
        ports[0],
        json!({"name": "bff", "containerPort": 4480, "protocol": "TCP"})
    );
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod["metadata"]["labels"][k], v);
    }
    let cm = k8s::find(&docs, "ConfigMap", "portcullis-gateway");
    let config: Value =
        serde_yaml::from_str(cm["data"]["config.yaml"].as_str().expect("config")).expect("yaml");
    assert_eq!(config["listen"], "0.0.0.0:4480");
    assert_eq!(config["admin_listen"], "0.0.0.0:4481");
    assert_eq!(
        config["server"]["allowed_hosts"][0],
        "portcullis-gateway.portcullis.svc.cluster.local"
    );
    assert_eq!(
        k8s::find(&docs, "PodDisruptionBudget", "portcullis-gateway")["spec"]["minAvailable"],
        1
    );
    let sm = k8s::find(&docs, "ServiceMonitor", "portcullis-gateway");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    k8s::find(&docs, "NetworkPolicy", "portcullis-gateway");
}

/// The SPA's build reaches portcullis read-only at `spa.mountPath`, copied out of its image by
/// an init container or mounted from the given volume; static routes without a root get it.
#[test]
fn the_gateway_serves_the_spa_build_from_an_image_or_a_volume() {
    let docs = render_with("test-static-spa.yaml", &[]);
    let pod = &k8s::find(&docs, "Deployment", "portcullis-gateway")["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "spa");
    assert!(init["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("registry.example.com/shop/web-build@sha256:")));
    assert_eq!(init["command"], json!(["cp", "-R", "/spa/.", "/srv/spa"]));
    assert_eq!(
        init["volumeMounts"],
        json!([{"name": "spa", "mountPath": "/srv/spa"}])
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(mounts.contains(&json!({"name": "spa", "mountPath": "/srv/spa", "readOnly": true})));
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(volumes.contains(&json!({"name": "spa", "emptyDir": {"sizeLimit": "256Mi"}})));
    let config = gateway_config(&docs);
    assert_eq!(config["routes"][1]["kind"], "static");
    assert_eq!(config["routes"][1]["root"], "/srv/spa");
    assert!(
        config["routes"][0].get("root").is_none(),
        "only static routes"
    );

    let from_volume = render_with(
        "test-static-spa.yaml",
        &[
            "--set",
            "gateway.spa.image.repository=",
            "--set-json",
            r#"gateway.spa.volume={"persistentVolumeClaim":{"claimName":"web-build","readOnly":true}}"#,
            "--set",
            "gateway.spa.mountPath=/srv/web",
            "--set-json",
            r#"gateway.config.routes=[{"path":"/","kind":"static","root":"/srv/web/dist"}]"#,
        ],
    );
    let pod =
        &k8s::find(&from_volume, "Deployment", "portcullis-gateway")["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none());
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(volumes.contains(&json!({"name": "spa",
        "persistentVolumeClaim": {"claimName": "web-build", "readOnly": true}})));
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(mounts.contains(&json!({"name": "spa", "mountPath": "/srv/web", "readOnly": true})));
    assert_eq!(
        gateway_config(&from_volume)["routes"][0]["root"],
        "/srv/web/dist",
        "a root written in the config is kept"
    );
}

#[test]
fn bad_values_fail_rendering_and_name_the_key() {
    let cases: [(&[&str], &str); 12] = [
        (
            &["--set", "injector.webhook.failurePolicy=Nope"],
            "/injector/webhook/failurePolicy",
        ),
        (&["--set", "injector.bogus=1"], "bogus"),
        (
            &["--set", "injector.sidecar.mode=sideways"],
            "/injector/sidecar/mode",
        ),
        (
            &["--set", "injector.sidecar.ports.proxy=70000"],
            "/injector/sidecar/ports/proxy",
        ),
        (
            &["--set", "injector.sidecar.resources.limits.memory=lots"],
            "/injector/sidecar/resources/limits/memory",
        ),
        (
            &["--set", "injector.webhook.tls.mode=vault"],
            "/injector/webhook/tls/mode",
        ),
        (
            &["--set", "injector.webhook.tls.mode=existingSecret"],
            "injector.webhook.tls.existingSecret.name is required",
        ),
        (
            &[
                "--set",
                "gateway.enabled=true",
                "--set",
                "gateway.replicaCount=2",
                "--set",
                "gateway.config.public_url=x",
            ],
            "needs gateway.config.session.store: redis",
        ),
        (
            &["--set-json", r#"telemetry={"sampling_ratio":2}"#],
            "/telemetry/sampling_ratio",
        ),
        (
            &[
                "--set",
                "gateway.enabled=true",
                "--set",
                "gateway.spa.enabled=true",
                "--set",
                "gateway.config.public_url=x",
            ],
            "gateway.spa.enabled needs exactly one of gateway.spa.image.repository and gateway.spa.volume",
        ),
        (
            &[
                "--set",
                "gateway.enabled=true",
                "--set",
                "gateway.spa.enabled=true",
                "--set",
                "gateway.spa.image.repository=web",
                "--set",
                "gateway.config.public_url=x",
            ],
            "gateway.spa.image.tag or digest is required",
        ),
        (
            &["--set", "gateway.spa.image.path=spa"],
            "/gateway/spa/image/path",
        ),
    ];
    for (args, expected) in cases {
        match k8s::render(&[], args) {
            Ok(_) => panic!("{args:?} rendered"),
            Err(e) => assert!(e.contains(expected), "{args:?}: {expected:?} not in:\n{e}"),
        }
    }
}

/// The injector's own config file, as the chart renders it, is one the webhook accepts.
#[test]
fn the_rendered_webhook_config_is_valid() {
    for values in k8s::values_files() {
        let docs = render(values.as_deref(), &[]);
        let Some(cm) = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["webhook.yaml"].is_string())
        else {
            continue;
        };
        let text = cm["data"]["webhook.yaml"].as_str().unwrap_or_default();
        if let Err(e) =
            portcullis::webhook::WebhookConfig::from_yaml(text, Path::new("webhook.yaml"))
        {
            panic!("{}: rendered webhook.yaml is invalid:\n{e}", label(&values));
        }
    }
}

/// Every portcullis config the chart renders (sidecar ConfigMaps, the gateway's) passes
/// `portcullis check`, with the Secret and SPA mounts emulated by temporary directories.
#[test]
fn every_rendered_portcullis_config_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_dir = dir.path().join("secret");
    fs::create_dir_all(&secret_dir).expect("mkdir");
    fs::write(secret_dir.join("client-secret"), "s3cret\n").expect("secret");
    let spa_dir = dir.path().join("spa");
    fs::create_dir_all(&spa_dir).expect("mkdir");
    fs::write(spa_dir.join("index.html"), "<!doctype html>").expect("index");
    let mut checked = 0;
    for values in k8s::values_files() {
        for doc in render(values.as_deref(), &[]) {
            let Some(text) = doc["data"]["config.yaml"].as_str() else {
                continue;
            };
            let name = format!(
                "{}-{}.yaml",
                label(&values),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            let path = dir.path().join(&name);
            fs::write(
                &path,
                text.replace("/etc/portcullis/secret", &secret_dir.to_string_lossy())
                    .replace("/srv/spa", &spa_dir.to_string_lossy()),
            )
            .expect("write");
            let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .expect("portcullis check runs");
            assert!(
                out.status.success(),
                "{name}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} configs rendered");
}

/// The chart-wide `telemetry` values reach every portcullis configuration the chart renders,
/// under the configuration's own `telemetry` keys, which win; without them nothing is added.
#[test]
fn chart_wide_telemetry_reaches_every_rendered_config() {
    let config_of = |doc: &Value| -> Value {
        serde_yaml::from_str(doc["data"]["config.yaml"].as_str().expect("config")).expect("yaml")
    };
    let docs = render(Some(&file("test-gateway.yaml")), &[]);
    let gateway = config_of(k8s::find(&docs, "ConfigMap", "portcullis-gateway"));
    assert_eq!(
        gateway["telemetry"],
        json!({
            "enabled": true,
            "otlp_endpoint": "http://otel-collector.observability.svc.cluster.local:4318",
            "trusted_trace_callers": ["10.0.0.0/8"],
            "sampling_ratio": 0.25,
        })
    );
    let sidecar_config = |extra: &[&str]| {
        let docs = render(Some(&file("values-keycloak.yaml")), extra);
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
            .expect("a sidecar ConfigMap");
        config_of(cm)
    };
    assert_eq!(sidecar_config(&[])["telemetry"], Value::Null);
    let traced = sidecar_config(&[
        "--set-json",
        r#"telemetry={"enabled":true,"sampling_ratio":0.1}"#,
    ]);
    assert_eq!(
        traced["telemetry"],
        json!({"enabled": true, "sampling_ratio": 0.1})
    );
}

/// Keycloak issues refresh tokens without `offline_access`, and with it they would be offline
/// tokens that survive a logout at Keycloak; without `id_token_hint` its logout asks the user to
/// confirm. The example keeps both right.
#[test]
fn the_keycloak_example_avoids_offline_tokens_and_sends_the_id_token_hint() {
    let docs = render(Some(&file("values-keycloak.yaml")), &[]);
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
        .expect("a sidecar ConfigMap");
    let config: Value =
        serde_yaml::from_str(cm["data"]["config.yaml"].as_str().expect("config")).expect("yaml");
    let scopes = config["oidc"]["scopes"].as_array().expect("scopes");
    assert!(scopes.contains(&json!("openid")));
    assert!(!scopes.contains(&json!("offline_access")), "{scopes:?}");
    assert_eq!(config["oidc"]["send_id_token_hint"], true);
}

// ---------------------------------------------------------------------------------------------
// Ingress auth mode: the gateway as an ingress controller's auth service, and the controller's
// own objects (ingressAuth) for ingress-nginx, Traefik and Envoy Gateway.

/// The ingress auth examples and the `ingress_auth.controller` each configures.
const INGRESS_EXAMPLES: [(&str, &str); 3] = [
    ("values-ingress-nginx.yaml", "nginx"),
    ("values-ingress-traefik.yaml", "traefik"),
    ("values-ingress-envoy-gateway.yaml", "envoy"),
];

/// Kinds defined by the controllers' CRDs, which kubernetes-validate has no schema for.
const CRD_KINDS: [&str; 5] = [
    "Middleware",
    "IngressRoute",
    "SecurityPolicy",
    "HTTPRoute",
    "ReferenceGrant",
];

/// Renders with values and extra arguments (e.g. `--set`), panicking with helm's message.
#[test]
fn every_controller_copies_the_identity_assertion_when_the_answer_carries_one() {
    for (values, controller) in INGRESS_EXAMPLES {
        let docs = render_with(
            values,
            &[
                "--set",
                "gateway.config.ingress_auth.identity_assertion=true",
                "--set",
                "gateway.config.identity_assertion.key_file=/etc/portcullis/secret/assertion-key.pem",
                "--set",
                "gateway.config.identity_assertion.header=X-App-Identity",
            ],
        );
        let guards: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                ["Ingress", "Middleware", "SecurityPolicy"]
                    .contains(&d["kind"].as_str().unwrap_or(""))
            })
            .filter(|d| d.to_string().contains("X-Auth-Request-User"))
            .collect();
        assert!(
            !guards.is_empty(),
            "{controller}: no object copies the answer's headers"
        );
        for guard in guards {
            assert!(
                guard.to_string().contains("X-App-Identity"),
                "{controller}: {} does not copy the assertion",
                guard["metadata"]["name"]
            );
        }
    }
}

#[test]
fn envoy_sends_the_authorization_header_when_a_host_admits_machine_clients() {
    let to_ext_auth = |docs: &[Value]| -> Vec<String> {
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "SecurityPolicy")
            .expect("a SecurityPolicy");
        strs(&policy["spec"]["extAuth"]["headersToExtAuth"])
    };
    let plain = render_with("values-ingress-envoy-gateway.yaml", &[]);
    assert!(!to_ext_auth(&plain).contains(&"Authorization".to_string()));
    let machine = render_with(
        "values-ingress-envoy-gateway.yaml",
        &[
            "--set-json",
            r#"gateway.config.ingress_auth.hosts=[{"host":"shop.example.com","machine_clients":{"audiences":["https://shop.example.com/api"]},"paths":[{"path":"/api/","kind":"api"},{"path":"/","kind":"page"}]}]"#,
        ],
    );
    assert!(to_ext_auth(&machine).contains(&"Authorization".to_string()));
}

#[test]
fn apps_verifying_identity_assertions_may_reach_the_admin_port() {
    let docs = render(
        None,
        &[
            "--set",
            "gateway.enabled=true",
            "--set",
            "gateway.networkPolicy.enabled=true",
            "--set-json",
            r#"gateway.networkPolicy.metricsFrom=[{"podSelector":{"matchLabels":{"app":"prometheus"}}}]"#,
            "--set-json",
            r#"gateway.networkPolicy.jwksFrom=[{"podSelector":{"matchLabels":{"app":"orders"}}}]"#,
        ],
    );
    let np = k8s::find(&docs, "NetworkPolicy", "portcullis-gateway");
    let admin = np["spec"]["ingress"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["ports"][0]["port"] == "bff-admin")
        .expect("an admin port rule");
    let apps: Vec<&Value> = admin["from"]
        .as_array()
        .expect("from")
        .iter()
        .map(|peer| &peer["podSelector"]["matchLabels"]["app"])
        .collect();
    assert_eq!(apps, ["prometheus", "orders"]);
}

fn render_with(values: &str, extra: &[&str]) -> Vec<Value> {
    render(Some(&file(values)), extra)
}

fn gateway_config(docs: &[Value]) -> Value {
    let cm = k8s::find(docs, "ConfigMap", "portcullis-gateway");
    serde_yaml::from_str(cm["data"]["config.yaml"].as_str().expect("config")).expect("yaml")
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The auth endpoint as the cluster sees it, each link checked: ingress_auth.listen's port is
/// the Deployment's container port named `auth`, which exactly one port of the gateway Service
/// targets. Returns (Service name, namespace, Service port).
fn auth_endpoint(docs: &[Value]) -> (String, String, u64) {
    let config = gateway_config(docs);
    let listen = config["ingress_auth"]["listen"]
        .as_str()
        .expect("ingress_auth.listen is rendered");
    let listen_port: u64 = listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port in ingress_auth.listen");
    assert_ne!(
        config["listen"], listen,
        "the auth port is not the browser-facing one"
    );
    assert_ne!(config["admin_listen"], listen);
    let deploy = k8s::find(docs, "Deployment", "portcullis-gateway");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let ports = container["ports"].as_array().expect("ports");
    let auth = ports
        .iter()
        .find(|p| p["name"] == "auth")
        .expect("a container port named auth");
    assert_eq!(auth["containerPort"], listen_port);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "bff-admin", "{probe}");
    }
    let svc = k8s::find(docs, "Service", "portcullis-gateway");
    let targeting: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["targetPort"] == "auth" || p["targetPort"] == listen_port)
        .collect();
    assert_eq!(targeting.len(), 1, "one Service port for the auth port");
    assert_eq!(targeting[0]["name"], "auth");
    (
        "portcullis-gateway".to_string(),
        svc["metadata"]["namespace"]
            .as_str()
            .expect("ns")
            .to_string(),
        targeting[0]["port"].as_u64().expect("port"),
    )
}

fn auth_url(docs: &[Value]) -> String {
    let (svc, ns, port) = auth_endpoint(docs);
    format!("http://{svc}.{ns}.svc.cluster.local:{port}/bff/auth")
}

/// Authorization, every identity header the configuration sends (its own or the default
/// four) and Cookie: what the controller must copy from the auth answer onto the request,
/// which is what replaces client-sent copies and strips portcullis's cookie upstream.
fn assert_copies_every_auth_header(config: &Value, listed: &[String], what: &str) {
    let mut expected = vec!["Authorization".to_string(), "Cookie".to_string()];
    match config["ingress_auth"]["identity_headers"].as_object() {
        Some(own) => expected.extend(own.keys().cloned()),
        None => expected.extend(
            [
                "X-Auth-Request-User",
                "X-Auth-Request-Email",
                "X-Auth-Request-Preferred-Username",
                "X-Auth-Request-Groups",
            ]
            .map(String::from),
        ),
    }
    if config["ingress_auth"]["identity_assertion"] == true {
        let header = config["identity_assertion"]["header"]
            .as_str()
            .unwrap_or("X-Portcullis-Assertion");
        expected.push(header.to_string());
    }
    for header in &expected {
        assert!(
            listed.iter().any(|l| l.eq_ignore_ascii_case(header)),
            "{what}: {header} is not copied from the auth answer: {listed:?}"
        );
    }
    assert_eq!(listed.len(), expected.len(), "{what}: {listed:?}");
}

/// (namespace, Service, port) of every backend an Ingress, IngressRoute or HTTPRoute routes
/// browsers to, with the object's kind and name.
fn browser_backends(docs: &[Value]) -> Vec<(String, String, String, Value)> {
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
        let what = format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap_or("?"));
        let mut push = |svc: &Value, svc_ns: &Value, port: Value| {
            let svc_ns = svc_ns.as_str().unwrap_or(ns).to_string();
            let svc = svc.as_str().expect("service name").to_string();
            out.push((what.clone(), svc_ns, svc, port));
        };
        match kind {
            "Ingress" => {
                for rule in doc["spec"]["rules"].as_array().into_iter().flatten() {
                    for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                        let s = &p["backend"]["service"];
                        let port = if s["port"]["name"].is_string() {
                            s["port"]["name"].clone()
                        } else {
                            s["port"]["number"].clone()
                        };
                        push(&s["name"], &Value::Null, port);
                    }
                }
            }
            "IngressRoute" => {
                for route in doc["spec"]["routes"].as_array().into_iter().flatten() {
                    for s in route["services"].as_array().into_iter().flatten() {
                        push(&s["name"], &s["namespace"], s["port"].clone());
                    }
                }
            }
            "HTTPRoute" => {
                for rule in doc["spec"]["rules"].as_array().into_iter().flatten() {
                    for b in rule["backendRefs"].as_array().into_iter().flatten() {
                        push(&b["name"], &b["namespace"], b["port"].clone());
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// No route a browser can take leads to the auth port (a 200 there carries the access
/// token): routes to portcullis use its Service's `http` port, which targets `bff`.
fn assert_auth_port_never_routed(docs: &[Value], what: &str) {
    let (svc_name, svc_ns, auth_port) = auth_endpoint(docs);
    let svc = k8s::find(docs, "Service", &svc_name);
    let http = svc["spec"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "http"))
        .expect("an http port");
    assert_eq!(http["targetPort"], "bff");
    let mut to_portcullis = 0;
    for (route, ns, name, port) in browser_backends(docs) {
        if ns != svc_ns || name != svc_name {
            continue;
        }
        to_portcullis += 1;
        assert!(
            port == http["port"] || port == "http",
            "{what}: {route} routes browsers to {name} port {port}, not its http port"
        );
        assert!(port != auth_port && port != "auth", "{what}: {route}");
    }
    assert!(
        to_portcullis > 0,
        "{what}: nothing routes /bff/ to portcullis"
    );
}

fn crds_dir() -> PathBuf {
    let dir = k8s::repo().join(".tools/crds");
    assert!(
        dir.is_dir(),
        "{} is missing: run `make k8s-tools` (make test does)",
        dir.display()
    );
    dir
}

/// Runs tests/fixtures/chart/crd_validate.py: the objects of the controllers' CRD kinds
/// checked strictly against the real CRDs' openAPIV3Schema and CEL rules.
fn crd_validate(files: &[PathBuf]) -> Value {
    let mut cmd = Command::new(k8s::repo().join(".tools/venv/bin/python"));
    cmd.arg(k8s::repo().join("tests/fixtures/chart/crd_validate.py"))
        .arg(crds_dir())
        .args(files);
    let out = cmd.output().expect("crd_validate.py runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "crd_validate.py printed no report ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every values file (the ingress examples among them, also with the app in the release
/// namespace): each object of a controller's CRD kind passes that CRD's schema, strictly, and
/// its CEL rules; no object of a kind we have the CRD for goes unchecked.
#[test]
fn controller_objects_validate_strictly_against_their_crds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut renders: Vec<(String, String)> = k8s::values_files()
        .iter()
        .map(|v| {
            let files: Vec<&Path> = v.iter().map(PathBuf::as_path).collect();
            let yaml = k8s::render(&files, &[]).unwrap_or_else(|e| panic!("{}: {e}", label(v)));
            (label(v), yaml)
        })
        .collect();
    for (values, _) in INGRESS_EXAMPLES {
        let yaml = k8s::render(&[&file(values)], &["--set", "ingressAuth.namespace="])
            .unwrap_or_else(|e| panic!("{values} in one namespace: {e}"));
        renders.push((format!("{values} (one namespace)"), yaml));
    }
    let mut checked_kinds = Vec::new();
    for (what, yaml) in renders {
        let path = dir.path().join("render.yaml");
        fs::write(&path, &yaml).expect("write");
        let report = crd_validate(&[path]);
        assert_eq!(report["errors"], json!([]), "{what}");
        let checked = report["checked"].as_array().expect("checked");
        for doc in k8s::documents(&yaml) {
            let kind = doc["kind"].as_str().expect("kind");
            if CRD_KINDS.contains(&kind) {
                assert!(
                    checked.contains(&json!([kind, doc["metadata"]["name"]])),
                    "{what}: {kind} {} was not validated",
                    doc["metadata"]["name"]
                );
                checked_kinds.push(kind.to_string());
            }
        }
        for u in report["unchecked"].as_array().expect("unchecked") {
            let api = u[0].as_str().expect("apiVersion");
            let group = api.rsplit_once('/').map_or("", |(g, _)| g);
            assert!(
                group.is_empty()
                    || group.ends_with(".k8s.io") && !group.starts_with("gateway.")
                    || group == "apps"
                    || group == "policy"
                    || group == "monitoring.coreos.com"
                    || group == "cert-manager.io",
                "{what}: {u} is of no kind kubernetes-validate or a CRD here checks"
            );
        }
    }
    for kind in CRD_KINDS {
        assert!(
            checked_kinds.iter().any(|k| k == kind),
            "no {kind} rendered"
        );
    }
}

/// The validator itself refuses what the API server would: an unknown field, a wrong type, a
/// broken CEL rule of the CRD, a bad name.
#[test]
fn the_crd_validator_refuses_what_the_api_server_would() {
    let envoy = render_with("values-ingress-envoy-gateway.yaml", &[]);
    let traefik = render_with("values-ingress-traefik.yaml", &[]);
    let policy = k8s::find(&envoy, "SecurityPolicy", "portcullis-ingress-auth");
    let route = k8s::find(&envoy, "HTTPRoute", "portcullis-bff");
    let middleware = k8s::find(&traefik, "Middleware", "portcullis-ingress-auth");
    let mutate = |doc: &Value, pointer: &str, value: Value| {
        let mut doc = doc.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        doc.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent")
            .insert(key.to_string(), value);
        doc
    };
    let cases = [
        (
            mutate(
                middleware,
                "/spec/forwardAuth/trustForwardHeaders",
                json!(false),
            ),
            "'trustForwardHeaders' was unexpected",
        ),
        (
            mutate(
                middleware,
                "/spec/forwardAuth/trustForwardHeader",
                json!("false"),
            ),
            "is not of type 'boolean'",
        ),
        (
            mutate(policy, "/spec/extAuth/http/pathOverride", json!("/x")),
            "only one of path or pathOverride",
        ),
        (
            mutate(
                policy,
                "/spec/extAuth/grpc",
                json!({"backendRefs": [{"name": "x", "port": 1}]}),
            ),
            "only one of grpc or http",
        ),
        (
            mutate(
                route,
                "/spec/rules/0/matches/0/path/value",
                json!("/bff//x"),
            ),
            "must not contain '//'",
        ),
        (
            mutate(route, "/metadata/name", json!("Bad_Name")),
            "metadata.name",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (doc, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.yaml"));
        fs::write(&path, serde_yaml::to_string(doc).expect("yaml")).expect("write");
        let report = crd_validate(&[path]);
        let errors = report["errors"].as_array().expect("errors");
        assert!(
            errors
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.contains(expected))),
            "case {i}: {expected:?} not in {errors:?}"
        );
    }
}

/// Each example configures the controller the chart renders objects for, with the auth port
/// wired from portcullis's config to the Service, and no browser route to that port.
#[test]
fn every_ingress_example_wires_the_auth_port_and_never_routes_browsers_to_it() {
    for (values, controller) in INGRESS_EXAMPLES {
        for extra in [&[][..], &["--set", "ingressAuth.namespace="][..]] {
            let docs = render_with(values, extra);
            let config = gateway_config(&docs);
            assert_eq!(config["ingress_auth"]["enabled"], true, "{values}");
            assert_eq!(config["ingress_auth"]["controller"], controller, "{values}");
            assert!(
                !config["ingress_auth"]["trusted_ingress"]
                    .as_array()
                    .expect("trusted_ingress")
                    .is_empty(),
                "{values}"
            );
            assert_auth_port_never_routed(&docs, values);
            let kinds = k8s::kinds(&docs);
            let expected: &[&str] = match controller {
                "nginx" => &["Ingress"],
                "traefik" => &["Middleware", "IngressRoute"],
                _ => &["SecurityPolicy", "HTTPRoute"],
            };
            for kind in CRD_KINDS.iter().chain(&["Ingress"]) {
                assert_eq!(
                    kinds.contains(&kind.to_string()),
                    expected.contains(kind)
                        || (*kind == "ReferenceGrant" && controller == "envoy" && extra.is_empty()),
                    "{values} {extra:?}: {kind}"
                );
            }
        }
    }
}

/// The auth port is open to the ingress controller's pods only.
#[test]
fn the_network_policy_admits_only_the_ingress_controller_to_the_auth_port() {
    for (values, _) in INGRESS_EXAMPLES {
        let docs = render_with(values, &[]);
        let np = k8s::find(&docs, "NetworkPolicy", "portcullis-gateway");
        let rules = np["spec"]["ingress"].as_array().expect("rules");
        let auth_rules: Vec<&Value> = rules
            .iter()
            .filter(|r| {
                r["ports"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["port"] == "auth" || p["port"] == 4482))
            })
            .collect();
        assert_eq!(auth_rules.len(), 1, "{values}");
        let from = auth_rules[0]["from"].as_array().expect("from");
        assert!(!from.is_empty(), "{values}");
        for peer in from {
            assert!(
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].is_string(),
                "{values}: {peer}"
            );
            assert!(peer["podSelector"]["matchLabels"].is_object(), "{values}");
        }
        assert!(rules.iter().all(|r| r["ports"].is_array()), "{values}");
    }
}

#[test]
fn ingress_nginx_calls_the_auth_port_and_signs_in_through_portcullis() {
    let docs = render_with("values-ingress-nginx.yaml", &[]);
    let config = gateway_config(&docs);
    let page = k8s::find(&docs, "Ingress", "portcullis-ingress-auth");
    let api = k8s::find(&docs, "Ingress", "portcullis-ingress-auth-api");
    let annotation = |ing: &Value, key: &str| -> Value {
        ing["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{key}")].clone()
    };
    for app in [page, api] {
        assert_eq!(app["metadata"]["namespace"], "shop");
        assert_eq!(annotation(app, "auth-url"), auth_url(&docs));
        let listed: Vec<String> = annotation(app, "auth-response-headers")
            .as_str()
            .expect("auth-response-headers")
            .split(',')
            .map(String::from)
            .collect();
        assert_copies_every_auth_header(&config, &listed, "auth-response-headers");
    }
    // cookie_domain: one session for all hosts, the login on public_url's host with an
    // absolute rd back to the host the browser asked for.
    assert_eq!(config["session"]["cookie_domain"], "example.com");
    assert_eq!(
        annotation(page, "auth-signin"),
        "https://auth.example.com/bff/login?rd=https://$host$escaped_request_uri"
    );
    // auth-signin would turn an API call's 401 into the login redirect: the config's api
    // paths are in the Ingress without it, each exactly once.
    assert_eq!(annotation(api, "auth-signin"), Value::Null);
    let paths = |ing: &Value, host: &str| -> Vec<String> {
        ing["spec"]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["host"] == host)
            .flat_map(|r| r["http"]["paths"].as_array().expect("paths").iter())
            .map(|p| p["path"].as_str().expect("path").to_string())
            .collect()
    };
    for h in config["ingress_auth"]["hosts"].as_array().expect("hosts") {
        let host = h["host"].as_str().expect("host");
        for p in h["paths"].as_array().expect("paths") {
            let path = p["path"].as_str().expect("path");
            let in_api = paths(api, host).contains(&path.to_string());
            assert_eq!(in_api, p["kind"] == "api", "{host}{path}");
            if in_api {
                assert!(
                    !paths(page, host).contains(&path.to_string()),
                    "{host}{path}"
                );
            }
        }
    }
    let hosts = |ing: &Value| -> Vec<String> {
        ing["spec"]["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r["host"].as_str().expect("host").to_string())
            .collect()
    };
    let config_hosts: Vec<String> = config["ingress_auth"]["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["host"].as_str().expect("host").to_string())
        .collect();
    for host in hosts(page).into_iter().chain(hosts(api)) {
        assert!(
            config_hosts.contains(&host),
            "{host} is not an ingress_auth host"
        );
    }
    let app = page;
    // portcullis's own endpoints: /bff/ only, on every app host and the login host, no auth.
    let bff = k8s::find(&docs, "Ingress", "portcullis-bff");
    assert_eq!(bff["metadata"]["namespace"], "portcullis");
    assert!(bff["metadata"]["annotations"]
        .as_object()
        .is_none_or(|m| m.keys().all(|k| !k.contains("auth-"))));
    let mut expected = hosts(app);
    expected.push("auth.example.com".to_string());
    assert_eq!(hosts(bff), expected);
    for rule in bff["spec"]["rules"].as_array().expect("rules") {
        assert_eq!(
            rule["http"]["paths"],
            json!([{"path": "/bff/", "pathType": "Prefix",
                    "backend": {"service": {"name": "portcullis-gateway", "port": {"name": "http"}}}}])
        );
    }
    for app in [page, api] {
        for rule in app["spec"]["rules"].as_array().expect("rules") {
            for p in rule["http"]["paths"].as_array().expect("paths") {
                assert!(!p["path"].as_str().expect("path").starts_with("/bff"));
            }
        }
    }
    // Without cookie_domain each host has its own session: the login runs on that host.
    let dir = tempfile::tempdir().expect("tempdir");
    let per_host = dir.path().join("per-host.yaml");
    let example = fs::read_to_string(file("values-ingress-nginx.yaml")).expect("example");
    let without: String = example
        .lines()
        .filter(|l| !l.trim_start().starts_with("cookie_domain:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without.len(), example.len());
    fs::write(&per_host, without).expect("write");
    let docs = render(Some(&per_host), &[]);
    let app = k8s::find(&docs, "Ingress", "portcullis-ingress-auth");
    assert_eq!(
        app["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-signin"],
        "https://$host/bff/login?rd=$escaped_request_uri"
    );
    assert!(!gateway_config(&docs)["session"]
        .as_object()
        .expect("session")
        .contains_key("cookie_domain"));
}

#[test]
fn traefik_forward_auth_calls_the_auth_port_and_distrusts_client_forwarded_headers() {
    let docs = render_with("values-ingress-traefik.yaml", &[]);
    let config = gateway_config(&docs);
    let mw = k8s::find(&docs, "Middleware", "portcullis-ingress-auth");
    let fa = &mw["spec"]["forwardAuth"];
    assert_eq!(fa["address"], auth_url(&docs));
    assert_eq!(fa["trustForwardHeader"], false);
    // portcullis answers page requests with its own redirect; no Traefik sign-in URL.
    assert!(fa.get("authSigninURL").is_none());
    assert_copies_every_auth_header(
        &config,
        &strs(&fa["authResponseHeaders"]),
        "authResponseHeaders",
    );
    let app = k8s::find(&docs, "IngressRoute", "portcullis-ingress-auth");
    assert_eq!(app["metadata"]["namespace"], mw["metadata"]["namespace"]);
    for route in app["spec"]["routes"].as_array().expect("routes") {
        assert_eq!(
            route["middlewares"],
            json!([{"name": "portcullis-ingress-auth"}]),
            "every app route passes the auth middleware"
        );
        assert!(!route["match"].as_str().expect("match").contains("/bff"));
    }
    let bff = k8s::find(&docs, "IngressRoute", "portcullis-bff");
    for route in bff["spec"]["routes"].as_array().expect("routes") {
        let m = route["match"].as_str().expect("match");
        assert!(m.ends_with("&& PathPrefix(`/bff/`)"), "{m}");
        assert!(route.get("middlewares").is_none());
    }
    // Traefik's default priority is the rule's length: for each host the /bff/ rule must
    // outrank any app rule of that host that also matches /bff/ (a path prefix of it).
    for route in app["spec"]["routes"].as_array().expect("routes") {
        let m = route["match"].as_str().expect("match");
        let host = m.split("&&").next().expect("host part");
        let bff_rule = format!("{host}&& PathPrefix(`/bff/`)");
        assert!(bff["spec"]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .any(|r| r["match"] == bff_rule.as_str()));
        assert!(
            bff_rule.len() > m.len() || !"/bff/".starts_with(m.rsplit('`').nth(1).expect("path"))
        );
    }
}

#[test]
fn envoy_gateway_ext_auth_calls_the_auth_port_and_guards_every_app_route() {
    let docs = render_with("values-ingress-envoy-gateway.yaml", &[]);
    let config = gateway_config(&docs);
    let (svc, ns, port) = auth_endpoint(&docs);
    let sp = k8s::find(&docs, "SecurityPolicy", "portcullis-ingress-auth");
    let ext = &sp["spec"]["extAuth"];
    assert_eq!(ext["failOpen"], false);
    assert_eq!(ext["http"]["path"], "/bff/auth");
    assert_eq!(
        ext["http"]["backendRefs"],
        json!([{"name": svc, "namespace": ns, "port": port}])
    );
    assert_copies_every_auth_header(
        &config,
        &strs(&ext["http"]["headersToBackend"]),
        "headersToBackend",
    );
    // Envoy sends an HTTP auth service only the headers listed: the session cookie and what the
    // CSRF and origin checks read must be among them.
    let to_auth = strs(&ext["headersToExtAuth"]);
    for h in ["Cookie", "X-CSRF", "Origin", "Sec-Fetch-Site"] {
        assert!(to_auth.iter().any(|t| t.eq_ignore_ascii_case(h)), "{h}");
    }
    // Every app HTTPRoute (none of them /bff/) is a target; the /bff/ route is not.
    let app_routes: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "HTTPRoute" && d["metadata"]["namespace"] == "shop")
        .collect();
    assert!(!app_routes.is_empty());
    let targets = sp["spec"]["targetRefs"].as_array().expect("targetRefs");
    assert_eq!(targets.len(), app_routes.len());
    for route in app_routes {
        assert!(
            targets.contains(&json!({"group": "gateway.networking.k8s.io",
            "kind": "HTTPRoute", "name": route["metadata"]["name"]}))
        );
        for rule in route["spec"]["rules"].as_array().expect("rules") {
            let path = rule["matches"][0]["path"]["value"].as_str().expect("path");
            assert!(!path.starts_with("/bff"), "{path}");
        }
    }
    let bff = k8s::find(&docs, "HTTPRoute", "portcullis-bff");
    assert_eq!(bff["metadata"]["namespace"], "portcullis");
    assert_eq!(
        bff["spec"]["rules"][0]["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/bff/"}}])
    );
    // The SecurityPolicy (app namespace) may name portcullis's Service through this grant only.
    let grant = k8s::find(&docs, "ReferenceGrant", "portcullis-ingress-auth");
    assert_eq!(grant["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        grant["spec"],
        json!({"from": [{"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": "shop"}],
               "to": [{"group": "", "kind": "Service", "name": svc}]})
    );
}

#[test]
fn bad_ingress_auth_values_fail_rendering_and_name_the_key() {
    let nginx = file("values-ingress-nginx.yaml");
    let envoy = file("values-ingress-envoy-gateway.yaml");
    let cases: [(&Path, &[&str], &str); 10] = [
        (&nginx, &["--set", "ingressAuth.bogus=1"], "bogus"),
        (
            &nginx,
            &["--set", "gateway.config.ingress_auth.controller=haproxy"],
            "/gateway/config/ingress_auth/controller",
        ),
        (
            &nginx,
            &["--set", "gateway.config.ingress_auth.enabled=false"],
            "ingressAuth.enabled needs gateway.enabled and gateway.config.ingress_auth.enabled",
        ),
        (
            &nginx,
            &["--set", "ingressAuth.hosts[0].host=elsewhere.example.org"],
            "ingressAuth.hosts[0].host elsewhere.example.org must be one of gateway.config.ingress_auth.hosts",
        ),
        (
            &nginx,
            &["--set", "ingressAuth.hosts[0].paths[0].path=/bff/x"],
            "ingressAuth.hosts[0].paths[0].path /bff/x: /bff/ belongs to portcullis",
        ),
        (
            &nginx,
            &[
                "--set",
                "ingressAuth.namespace=portcullis",
                "--set",
                "ingressAuth.hosts[0].paths[0].service=portcullis-gateway",
            ],
            "ingressAuth.hosts[0].paths[0].service portcullis-gateway is portcullis itself",
        ),
        (
            &nginx,
            &["--set", "gateway.networkPolicy.authFrom=null"],
            "gateway.networkPolicy.authFrom is required",
        ),
        (
            &nginx,
            &["--set", "ingressAuth.hosts[0].paths[0].port=0"],
            "/ingressAuth/hosts/0/paths/0/port",
        ),
        (
            &envoy,
            &["--set", "ingressAuth.envoyGateway.parentRefs[0].namespace="],
            "ingressAuth.envoyGateway.parentRefs[].namespace is required",
        ),
        (
            &envoy,
            &["--set", "ingressAuth.envoyGateway.headersToExtAuth[0]=Bad Header"],
            "/ingressAuth/envoyGateway/headersToExtAuth/0",
        ),
    ];
    for (values, args, expected) in cases {
        match k8s::render(&[values], args) {
            Ok(_) => panic!("{values:?} {args:?} rendered"),
            Err(e) => assert!(e.contains(expected), "{args:?}: {expected:?} not in:\n{e}"),
        }
    }
}

/// Without ingress_auth the gateway opens no auth port and nothing of a controller renders.
#[test]
fn the_plain_gateway_has_no_auth_port() {
    let docs = render(Some(&file("test-gateway.yaml")), &[]);
    let ports = |v: &Value| -> Vec<Value> { v.as_array().expect("ports").clone() };
    let svc = k8s::find(&docs, "Service", "portcullis-gateway");
    assert!(ports(&svc["spec"]["ports"])
        .iter()
        .all(|p| p["name"] != "auth" && p["port"] != 4482));
    let deploy = k8s::find(&docs, "Deployment", "portcullis-gateway");
    assert!(
        ports(&deploy["spec"]["template"]["spec"]["containers"][0]["ports"])
            .iter()
            .all(|p| p["name"] != "auth")
    );
    assert_eq!(gateway_config(&docs)["ingress_auth"], Value::Null);
    let kinds = k8s::kinds(&docs);
    for kind in CRD_KINDS.iter().chain(&["Ingress"]) {
        assert!(!kinds.contains(&kind.to_string()), "{kind}");
    }
}
