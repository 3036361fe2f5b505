//! The sidecar patch: from the raw pod JSON of an AdmissionReview to the RFC 6902 `add`
//! operations that inject portcullis. Pure and deterministic (same pod, same patch), so golden
//! files can pin it.
//!
//! The patch is built against the raw `serde_json::Value`, never a typed round-trip: a typed
//! Pod would silently drop fields newer than our types, and a diff against it would remove them.
//! Every operation is an `add`; a missing map or array is added whole, an existing one gets
//! appended to (`/-`) or gains a key (`~1`-escaped, RFC 6901).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::annotations::{self, PodOptions};
use super::error::WebhookError;

pub const CONTAINER_NAME: &str = "portcullis";
pub const CONFIG_VOLUME: &str = "portcullis-config";
pub const SECRET_VOLUME: &str = "portcullis-secret";
pub const TMP_VOLUME: &str = "portcullis-tmp";
pub const CONFIG_DIR: &str = "/etc/portcullis/config";
pub const SECRET_DIR: &str = "/etc/portcullis/secret";
/// The key the ConfigMap must hold: the proxy's configuration file.
pub const CONFIG_KEY: &str = "config.yaml";
pub const PROXY_PORT_NAME: &str = "bff";
pub const ADMIN_PORT_NAME: &str = "bff-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (KEP-753): started before the app,
    /// stopped after it, and it does not keep a Job from completing.
    Native,
    /// An ordinary container beside the app, for clusters older than 1.29.
    Classic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// The injector's defaults, from its config file; pod annotations may override some.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    pub image: String,
    pub image_pull_policy: String,
    pub mode: SidecarMode,
    pub default_config_map: Option<String>,
    pub default_secret: Option<String>,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub run_as_user: i64,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected(SidecarMode),
    /// No opt-in (or an explicit opt-out).
    NotRequested,
    /// The status annotation or a `portcullis` container is already there: reinvocation,
    /// or a pod injected by hand.
    AlreadyInjected,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub ops: Vec<PatchOp>,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

/// The whole decision for one pod: inject (with the operations), skip, or deny (`Err`).
pub fn sidecar_patch(pod: &Value, settings: &SidecarSettings) -> Result<Patch, WebhookError> {
    let pod = pod
        .as_object()
        .ok_or_else(|| WebhookError::MalformedPod("it is not a JSON object".to_string()))?;
    let metadata = object_at(pod, "metadata")?
        .ok_or_else(|| WebhookError::MalformedPod("metadata is missing".to_string()))?;
    let labels = object_at(metadata, "labels")?;
    let annotations = object_at(metadata, "annotations")?;
    let warnings = annotations::unknown_key_warnings(labels, annotations);
    let skip = |outcome| Patch {
        ops: Vec::new(),
        warnings: warnings.clone(),
        outcome,
    };
    if annotations::opt_in(labels, annotations)? != Some(true) {
        return Ok(skip(Outcome::NotRequested));
    }
    let spec = object_at(pod, "spec")?
        .ok_or_else(|| WebhookError::MalformedPod("spec is missing".to_string()))?;
    if already_injected(annotations, spec)? {
        return Ok(skip(Outcome::AlreadyInjected));
    }
    let options = annotations::pod_options(annotations, settings)?;
    check_pod_fits(spec, &options)?;
    Ok(Patch {
        ops: operations(labels, annotations, spec, &options, settings)?,
        warnings,
        outcome: Outcome::Injected(options.mode),
    })
}

fn already_injected(
    annotations: Option<&Map<String, Value>>,
    spec: &Map<String, Value>,
) -> Result<bool, WebhookError> {
    if annotations.is_some_and(|a| a.contains_key(annotations::STATUS)) {
        return Ok(true);
    }
    let named_portcullis =
        |c: &Value| c.get("name").and_then(Value::as_str) == Some(CONTAINER_NAME);
    for list in ["containers", "initContainers"] {
        if array_at(spec, list)?
            .into_iter()
            .flatten()
            .any(named_portcullis)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses pods the sidecar cannot join cleanly; each refusal says what to change.
fn check_pod_fits(spec: &Map<String, Value>, options: &PodOptions) -> Result<(), WebhookError> {
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(WebhookError::denied(
            "spec.hostNetwork",
            "portcullis cannot be injected into a pod on the node's network (its ports would be the node's)",
            format!("remove hostNetwork: true, or remove {}", annotations::INJECT),
        ));
    }
    for (port, name, key) in [
        (options.proxy_port, PROXY_PORT_NAME, annotations::PORT),
        (options.admin_port, ADMIN_PORT_NAME, annotations::ADMIN_PORT),
    ] {
        check_port_free(spec, port, name, key)?;
    }
    for volume in array_at(spec, "volumes")?.into_iter().flatten() {
        let name = volume
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if [CONFIG_VOLUME, SECRET_VOLUME, TMP_VOLUME].contains(&name) {
            return Err(WebhookError::denied(
                "spec.volumes",
                format!("the pod already has a volume named {name:?}, which portcullis needs"),
                "rename that volume",
            ));
        }
    }
    Ok(())
}

/// Containers share the pod's network namespace, so a port (or port name) used by any
/// long-running container collides with the sidecar's.
fn check_port_free(
    spec: &Map<String, Value>,
    port: u16,
    name: &str,
    key: &str,
) -> Result<(), WebhookError> {
    for container in all_containers(spec)? {
        let owner = container.get("name").and_then(Value::as_str).unwrap_or("?");
        for p in container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if p.get("containerPort").and_then(Value::as_u64) == Some(u64::from(port)) {
                return Err(WebhookError::denied(
                    key,
                    format!("port {port} is already used by container {owner:?}"),
                    format!("set {key} to a free port, and the ConfigMap's listen/admin_listen to match"),
                ));
            }
            if p.get("name").and_then(Value::as_str) == Some(name) {
                return Err(WebhookError::denied(
                    key,
                    format!("container {owner:?} already has a port named {name:?}, the name portcullis's port needs"),
                    "rename that container port (Services should target the sidecar's port by this name)",
                ));
            }
        }
    }
    Ok(())
}

fn operations(
    labels: Option<&Map<String, Value>>,
    annotations: Option<&Map<String, Value>>,
    spec: &Map<String, Value>,
    options: &PodOptions,
    settings: &SidecarSettings,
) -> Result<Vec<PatchOp>, WebhookError> {
    let mut ops = Vec::new();
    add_entries(
        &mut ops,
        "/metadata/labels",
        labels,
        vec![(annotations::INJECTED, json!("true"))],
    );
    let mut new_annotations = vec![(annotations::STATUS, json!(status(options.mode)))];
    if options.mode == SidecarMode::Classic {
        // `kubectl logs/exec` without -c must keep reaching the app, not the sidecar appended
        // after it (Istio sets the same annotation).
        let first_app = array_at(spec, "containers")?
            .and_then(|c| c.first())
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str);
        let unset = annotations.is_none_or(|a| !a.contains_key(DEFAULT_CONTAINER));
        if let (Some(app), true) = (first_app, unset) {
            new_annotations.push((DEFAULT_CONTAINER, json!(app)));
        }
    }
    add_entries(
        &mut ops,
        "/metadata/annotations",
        annotations,
        new_annotations,
    );
    append(
        &mut ops,
        "/spec/volumes",
        array_at(spec, "volumes")?,
        volumes(options),
    );
    let (list, container) = match options.mode {
        SidecarMode::Native => ("/spec/initContainers", container(options, settings, true)),
        SidecarMode::Classic => ("/spec/containers", container(options, settings, false)),
    };
    let existing = array_at(spec, &list["/spec/".len()..])?;
    append(&mut ops, list, existing, vec![container]);
    Ok(ops)
}

const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The status annotation's value: what was injected, so a later reader (or a future
/// version of this webhook) knows exactly what to expect.
fn status(mode: SidecarMode) -> String {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": mode,
        "containers": [CONTAINER_NAME],
        "volumes": [CONFIG_VOLUME, SECRET_VOLUME, TMP_VOLUME],
    })
    .to_string()
}

fn volumes(options: &PodOptions) -> Vec<Value> {
    vec![
        json!({"name": CONFIG_VOLUME, "configMap": {"name": options.config_map}}),
        json!({"name": SECRET_VOLUME, "secret": {"secretName": options.secret}}),
        // Read-only root filesystem: anything the process must write goes here, in memory.
        json!({"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}),
    ]
}

fn container(options: &PodOptions, settings: &SidecarSettings, native: bool) -> Value {
    let probe = |path: &str, period: u32, failures: u32| json!({"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period, "failureThreshold": failures});
    let mut c = json!({
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["serve", "--config", format!("{CONFIG_DIR}/{CONFIG_KEY}")],
        "ports": [
            {"name": PROXY_PORT_NAME, "containerPort": options.proxy_port, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": options.admin_port, "protocol": "TCP"},
        ],
        // The startup probe asks only "is the process serving", so a native sidecar does not
        // hold the app back while the IdP or Redis is unreachable; readiness reports those.
        "startupProbe": probe("/healthz", 1, 60),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": resources(&options.resources),
        "securityContext": security_context(settings.run_as_user),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true},
            {"name": SECRET_VOLUME, "mountPath": SECRET_DIR, "readOnly": true},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if native {
        c["restartPolicy"] = json!("Always");
    }
    c
}

fn resources(r: &Resources) -> Value {
    let pick = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = Map::new();
        if let Some(cpu) = cpu {
            m.insert("cpu".into(), json!(cpu));
        }
        if let Some(memory) = memory {
            m.insert("memory".into(), json!(memory));
        }
        m
    };
    let mut out = Map::new();
    for (key, m) in [
        ("requests", pick(&r.cpu_request, &r.memory_request)),
        ("limits", pick(&r.cpu_limit, &r.memory_limit)),
    ] {
        if !m.is_empty() {
            out.insert(key.into(), Value::Object(m));
        }
    }
    Value::Object(out)
}

/// Pod Security "restricted" at container level, whatever the pod itself sets: the pod-level
/// context may run the app as root, the sidecar never is.
fn security_context(uid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Adds keys to a map at `path`, or the whole map when the pod has none (a JSON-patch `add`
/// below a missing parent fails).
fn add_entries(
    ops: &mut Vec<PatchOp>,
    path: &str,
    current: Option<&Map<String, Value>>,
    entries: Vec<(&str, Value)>,
) {
    match current {
        None => {
            let map: Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            ops.push(add(path.to_string(), Value::Object(map)));
        }
        Some(_) => {
            for (k, v) in entries {
                ops.push(add(format!("{path}/{}", escape_pointer(k)), v));
            }
        }
    }
}

/// Appends to an array at `path`, or adds the whole array when the pod has none.
fn append(ops: &mut Vec<PatchOp>, path: &str, current: Option<&Vec<Value>>, items: Vec<Value>) {
    match current {
        None => ops.push(add(path.to_string(), Value::Array(items))),
        Some(_) => ops.extend(items.into_iter().map(|v| add(format!("{path}/-"), v))),
    }
}

fn add(path: String, value: Value) -> PatchOp {
    PatchOp {
        op: "add",
        path,
        value,
    }
}

/// RFC 6901 §3: `~` and `/` inside a key become `~0` and `~1`.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `value[key]` as a map: `None` when absent or null, an error when it is something else.
fn object_at<'a>(
    value: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, WebhookError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(WebhookError::MalformedPod(format!(
            "{key} is not an object"
        ))),
    }
}

fn array_at<'a>(
    value: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, WebhookError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(WebhookError::MalformedPod(format!(
            "spec.{key} is not a list"
        ))),
    }
}

/// App containers and native sidecars: the containers that run beside portcullis. Ordinary
/// init containers have exited before it starts, so their ports cannot collide.
fn all_containers(spec: &Map<String, Value>) -> Result<Vec<&Value>, WebhookError> {
    let mut out: Vec<&Value> = array_at(spec, "containers")?
        .into_iter()
        .flatten()
        .collect();
    let restartable = |c: &&Value| c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
    out.extend(
        array_at(spec, "initContainers")?
            .into_iter()
            .flatten()
            .filter(restartable),
    );
    Ok(out)
}
