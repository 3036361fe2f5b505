//! End to end, playing the API server without a cluster: render the chart, start
//! `portcullis webhook` with the rendered certificate and config, and call it over TLS the way
//! the API server does — trusting only the rendered caBundle, under the Service's DNS name
//! (`<svc>.<ns>.svc`). The response is checked as k8s.io/apiserver's `VerifyAdmissionResponse`
//! checks it, the patch is applied, the pod validated strictly, and a second call (the
//! IfNeeded reinvocation) must change nothing. The rendered selectors and matchConditions (CEL)
//! decide which pods reach it, and a pod opted in with an unknown value is denied with the fix.
//! A rotated certificate must be served without a restart; the admin `/metrics` passes
//! `promtool check metrics`.

mod k8s;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

const STARTUP: Duration = Duration::from_secs(20);

/// What the chart rendered that the API server would use.
struct Rendered {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    webhook_yaml: String,
    hook: Value,
    host: String,
}

fn b64(text: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("base64 string"))
        .expect("standard base64");
    String::from_utf8(bytes).expect("PEM text")
}

fn render_chart() -> Rendered {
    let docs = k8s::documents(&k8s::render(&[], &[]).expect("helm template"));
    let hook = k8s::find(&docs, "MutatingWebhookConfiguration", "portcullis-injector")["webhooks"]
        [0]
    .clone();
    let svc = &hook["clientConfig"]["service"];
    let secret = k8s::find(&docs, "Secret", "portcullis-injector-tls");
    let cm = k8s::find(&docs, "ConfigMap", "portcullis-injector");
    Rendered {
        ca_pem: b64(&hook["clientConfig"]["caBundle"]),
        cert_pem: b64(&secret["data"]["tls.crt"]),
        key_pem: b64(&secret["data"]["tls.key"]),
        webhook_yaml: cm["data"]["webhook.yaml"]
            .as_str()
            .expect("webhook.yaml")
            .to_string(),
        host: format!(
            "{}.{}.svc",
            svc["name"].as_str().expect("name"),
            svc["namespace"].as_str().expect("ns")
        ),
        hook,
    }
}

struct Webhook {
    child: Child,
    dir: tempfile::TempDir,
    tls_port: u16,
    admin_port: u16,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    /// Starts the binary on the rendered config, with loopback ports and the certificate files
    /// where a Secret volume would put them.
    fn start(r: &Rendered) -> Webhook {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("tls.crt"), &r.cert_pem).expect("cert");
        fs::write(dir.path().join("tls.key"), &r.key_pem).expect("key");
        let (tls_port, admin_port) = (k8s::free_port(), k8s::free_port());
        let mut config: Value = serde_yaml::from_str(&r.webhook_yaml).expect("yaml");
        config["listen"] = json!(format!("127.0.0.1:{tls_port}"));
        config["admin_listen"] = json!(format!("127.0.0.1:{admin_port}"));
        config["tls"] =
            json!({"cert_file": "tls.crt", "key_file": "tls.key", "reload_interval": "100ms"});
        let config_path = dir.path().join("webhook.yaml");
        fs::write(&config_path, serde_yaml::to_string(&config).expect("yaml")).expect("config");
        let log = fs::File::create(dir.path().join("webhook.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["webhook", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("portcullis webhook starts");
        let w = Webhook {
            child,
            dir,
            tls_port,
            admin_port,
        };
        w.wait_ready();
        w
    }

    /// The admin port answers and the TLS port accepts: two services, bound by two threads.
    fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        k8s::eventually("the webhook's /readyz", STARTUP, || {
            let status = block_on(async { reqwest::get(&url).await.map(|r| r.status().as_u16()) });
            (status.ok() == Some(200)).then_some(())
        });
        k8s::eventually("the webhook's TLS port to accept", STARTUP, || {
            std::net::TcpStream::connect(("127.0.0.1", self.tls_port)).ok()
        });
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir().join("webhook.log")).unwrap_or_default()
    }

    /// A client like the API server's: only `ca_pem` is trusted, and the webhook is reached
    /// under the Service DNS name the certificate must carry.
    fn client(&self, host: &str, ca_pem: &str) -> reqwest::Client {
        let addr: SocketAddr = ([127, 0, 0, 1], self.tls_port).into();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"),
            )
            .resolve(host, addr)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/mutate", self.tls_port)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<(u16, Value), String> {
    block_on(async {
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, value))
    })
}

/// The checks k8s.io/apiserver applies to a mutating webhook's answer; returns the patch.
fn verify_admission_response(request: &Value, review: &Value) -> Option<Value> {
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review.get("response").expect("response present");
    assert_eq!(
        response["uid"], request["request"]["uid"],
        "expected response.uid"
    );
    assert!(response["allowed"].is_boolean());
    match (response.get("patch"), response.get("patchType")) {
        (None, None) => None,
        (Some(patch), Some(kind)) => {
            assert_eq!(kind, "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch.as_str().expect("patch string"))
                .expect("patch in standard base64");
            Some(serde_json::from_slice(&bytes).expect("patch JSON"))
        }
        (p, t) => panic!("patch and patchType must come together: {p:?} {t:?}"),
    }
}

/// LabelSelector semantics for the matchExpressions the chart uses.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let value = labels.get(e["key"].as_str().unwrap_or_default());
            let listed = |v: &Value| e["values"].as_array().is_some_and(|vs| vs.contains(v));
            match e["operator"].as_str() {
                Some("In") => value.is_some_and(listed),
                Some("NotIn") => !value.is_some_and(listed),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                other => panic!("unexpected operator {other:?}"),
            }
        })
}

fn fixture(name: &str) -> Value {
    let path = k8s::repo().join(format!("tests/fixtures/webhook/{name}.review.yaml"));
    serde_yaml::from_str(&fs::read_to_string(path).expect("fixture")).expect("yaml")
}

#[test]
fn the_api_server_path_injects_over_tls_and_reinvocation_is_a_no_op() {
    let r = render_chart();
    let webhook = Webhook::start(&r);
    let client = webhook.client(&r.host, &r.ca_pem);
    let url = webhook.url(&r.host);

    let review = fixture("native-by-label");
    let pod = &review["request"]["object"];
    let namespace_labels = json!({"kubernetes.io/metadata.name": review["request"]["namespace"]});
    assert!(
        selects(&r.hook["namespaceSelector"], &namespace_labels),
        "namespaceSelector skips the pod"
    );
    assert!(
        selects(&r.hook["objectSelector"], &pod["metadata"]["labels"]),
        "objectSelector skips the pod"
    );
    assert_eq!(
        k8s::cel_matches(match_condition(&r), pod),
        Ok(true),
        "matchConditions skip the pod"
    );

    let (status, answer) =
        post(&client, &url, &review).unwrap_or_else(|e| panic!("{e}\n{}", webhook.log()));
    assert_eq!(status, 200);
    let ops = verify_admission_response(&review, &answer).expect("a patch");
    let mut patched = pod.clone();
    k8s::apply_patch(&mut patched, &ops).expect("patch applies");
    let pod_file: PathBuf = webhook.dir().join("pod.json");
    fs::write(&pod_file, patched.to_string()).expect("write pod");
    if let Err(e) = k8s::validate_strict("1.33.0", &[pod_file]) {
        panic!("the injected pod is invalid:\n{e}");
    }

    let mut again = review.clone();
    again["request"]["object"] = patched;
    let (_, second) = post(&client, &url, &again).expect("second call");
    assert_eq!(
        verify_admission_response(&again, &second),
        None,
        "reinvocation patched again"
    );
    assert_eq!(second["response"]["allowed"], true);

    let metrics = admin_metrics(&webhook);
    assert!(
        metrics.contains("portcullis_injector_requests_total{result=\"injected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_injector_requests_total{result=\"skipped\"} 1"),
        "{metrics}"
    );
}

fn match_condition(r: &Rendered) -> &str {
    r.hook["matchConditions"][0]["expression"]
        .as_str()
        .expect("the chart renders matchConditions")
}

fn admin_metrics(webhook: &Webhook) -> String {
    block_on(async {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", webhook.admin_port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    })
}

/// A pod opted in with a value the webhook does not know ("yes") passes the rendered selectors
/// and matchConditions, so the API server calls the webhook, which denies it with the fix: the
/// user sees why in the ReplicaSet's events instead of a pod running without portcullis.
#[test]
fn an_unknown_opt_in_value_reaches_the_webhook_and_is_denied_with_the_fix() {
    let r = render_chart();
    let webhook = Webhook::start(&r);
    let client = webhook.client(&r.host, &r.ca_pem);
    let review = fixture("opt-in-label-yes");
    let pod = &review["request"]["object"];
    assert!(selects(
        &r.hook["objectSelector"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(k8s::cel_matches(match_condition(&r), pod), Ok(true));

    let (status, answer) = post(&client, &webhook.url(&r.host), &review)
        .unwrap_or_else(|e| panic!("{e}\n{}", webhook.log()));
    assert_eq!(status, 200);
    assert_eq!(verify_admission_response(&review, &answer), None);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().expect("a message");
    assert!(
        message.starts_with("bff.portcullis.dev/inject: \"yes\" is neither \"true\" nor \"false\"")
            && message.contains("(fix: set it to \"true\""),
        "{message}"
    );
    assert!(
        admin_metrics(&webhook).contains("portcullis_injector_requests_total{result=\"denied\"} 1")
    );

    // An explicit opt-out never reaches the webhook: an injector outage cannot block it.
    let mut opted_out = pod.clone();
    opted_out["metadata"]["labels"]["bff.portcullis.dev/inject"] = json!("false");
    assert_eq!(k8s::cel_matches(match_condition(&r), &opted_out), Ok(false));
    assert!(!selects(
        &r.hook["objectSelector"],
        &opted_out["metadata"]["labels"]
    ));
}

/// The injector's `/metrics` passes `promtool check metrics`, and its certificate-expiry gauge
/// is the notAfter of the certificate the chart rendered (what the expiry alert watches).
#[test]
fn the_admin_metrics_pass_promtool_and_show_the_certificate_expiry() {
    let r = render_chart();
    let webhook = Webhook::start(&r);
    let metrics = admin_metrics(&webhook);
    if let Err(e) = k8s::promtool_check_metrics(&metrics) {
        panic!("promtool check metrics:\n{e}\n{metrics}");
    }
    for family in [
        "portcullis_injector_requests_total",
        "portcullis_injector_request_duration_seconds",
        "portcullis_injector_tls_reloads_total",
        "portcullis_injector_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family}");
    }
    for series in [
        "portcullis_injector_requests_total{result=\"error\"} 0",
        "portcullis_injector_tls_reloads_total{outcome=\"success\"} 0",
        "portcullis_injector_tls_reloads_total{outcome=\"failure\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing at start-up");
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(r.cert_pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("X.509");
    let not_after = cert.validity().not_after.timestamp();
    assert!(
        metrics.contains(&format!(
            "portcullis_injector_tls_certificate_expiry_timestamp_seconds {not_after}\n"
        )),
        "expiry {not_after} not in:\n{metrics}"
    );
}

#[test]
fn requests_that_are_not_admission_reviews_are_refused() {
    let r = render_chart();
    let webhook = Webhook::start(&r);
    let client = webhook.client(&r.host, &r.ca_pem);
    let url = webhook.url(&r.host);
    let status = |req: reqwest::RequestBuilder| {
        block_on(async { req.send().await.expect("sent").status().as_u16() })
    };
    assert_eq!(
        status(
            client
                .post(&url)
                .header("content-type", "text/plain")
                .body("{}")
        ),
        415
    );
    assert_eq!(status(client.get(&url)), 405);
    assert_eq!(
        status(
            client
                .post(&url)
                .header("content-type", "application/json")
                .body("nope")
        ),
        400
    );
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(
        status(
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(huge)
        ),
        413
    );
    // Nothing is served in plain HTTP on the webhook port.
    let plain = block_on(async {
        reqwest::get(format!("http://127.0.0.1:{}/mutate", webhook.tls_port)).await
    });
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let first = render_chart();
    let webhook = Webhook::start(&first);
    let review = fixture("native-by-label");
    let old_client = webhook.client(&first.host, &first.ca_pem);
    assert!(post(&old_client, &webhook.url(&first.host), &review).is_ok());

    // A second render is a new CA and certificate, as a re-issue by cert-manager would be.
    let second = render_chart();
    assert_ne!(second.ca_pem, first.ca_pem);
    let new_client = webhook.client(&second.host, &second.ca_pem);
    assert!(
        post(&new_client, &webhook.url(&second.host), &review).is_err(),
        "an untrusted CA was accepted"
    );

    fs::write(webhook.dir().join("tls.key"), &second.key_pem).expect("key");
    fs::write(webhook.dir().join("tls.crt"), &second.cert_pem).expect("cert");
    k8s::eventually("the rotated certificate", STARTUP, || {
        // A fresh client per try: no pooled connection may keep the old session alive.
        let client = webhook.client(&second.host, &second.ca_pem);
        post(&client, &webhook.url(&second.host), &review).ok()
    });
    let client = webhook.client(&first.host, &first.ca_pem);
    assert!(
        post(&client, &webhook.url(&first.host), &review).is_err(),
        "the old certificate is still served"
    );
    assert!(
        webhook.log().contains("webhook TLS certificate reloaded"),
        "{}",
        webhook.log()
    );
}

#[test]
fn a_bad_config_exits_2_and_a_missing_certificate_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |yaml: &str| {
        let path = dir.path().join("webhook.yaml");
        fs::write(&path, yaml).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["webhook", "--config"])
            .arg(&path)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run("sidecar: {mode: sideways}\n");
    assert_eq!(code, Some(2), "{stderr}");
    let file = dir.path().join("webhook.yaml");
    assert!(
        stderr.contains(&format!(
            "{}: sidecar.mode: \"sideways\" is not a mode",
            file.display()
        )),
        "{stderr}"
    );
    let (code, stderr) =
        run("tls: {cert_file: none.crt, key_file: none.key}\nsidecar: {image: \"img:1\"}\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot load the TLS certificate"),
        "{stderr}"
    );
}
