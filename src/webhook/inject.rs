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
use super::sidecar::{
    container, status, volumes, CONFIG_VOLUME, CONTAINER_NAME, SECRET_VOLUME, TMP_VOLUME,
};
pub use super::sidecar::{Resources, SidecarMode, SidecarSettings};
use super::sidecar::{ADMIN_PORT_NAME, PROXY_PORT_NAME};

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
