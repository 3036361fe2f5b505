//! The Helm chart, tested without a cluster: `helm lint --strict` and `helm template` for every
//! values file in `helm/` (and the defaults) × Kubernetes 1.29/1.31/1.33/1.35, each render
//! validated strictly (unknown fields rejected) by kubernetes-validate; assertions on the
//! rendered objects; values the schema must refuse; and the example sidecar configurations,
//! which must pass `portcullis check`.

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

#[test]
fn bad_values_fail_rendering_and_name_the_key() {
    let cases: [(&[&str], &str); 9] = [
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
/// `portcullis check`, with the Secret mount emulated by a temporary directory.
#[test]
fn every_rendered_portcullis_config_passes_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_dir = dir.path().join("secret");
    fs::create_dir_all(&secret_dir).expect("mkdir");
    fs::write(secret_dir.join("client-secret"), "s3cret\n").expect("secret");
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
                text.replace("/etc/portcullis/secret", &secret_dir.to_string_lossy()),
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
