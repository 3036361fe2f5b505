//! What the injected sidecar looks like: its container (ports, probes, resources, the
//! restricted security context, mounts), its volumes and the status annotation's value.
//! `inject` decides whether and where it goes; this file only describes it.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::annotations::PodOptions;

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

/// The status annotation's value: what was injected, so a later reader (or a future
/// version of this webhook) knows exactly what to expect.
pub(super) fn status(mode: SidecarMode) -> String {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": mode,
        "containers": [CONTAINER_NAME],
        "volumes": [CONFIG_VOLUME, SECRET_VOLUME, TMP_VOLUME],
    })
    .to_string()
}

pub(super) fn volumes(options: &PodOptions) -> Vec<Value> {
    vec![
        json!({"name": CONFIG_VOLUME, "configMap": {"name": options.config_map}}),
        json!({"name": SECRET_VOLUME, "secret": {"secretName": options.secret}}),
        // Read-only root filesystem: anything the process must write goes here, in memory.
        json!({"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}),
    ]
}

pub(super) fn container(options: &PodOptions, settings: &SidecarSettings, native: bool) -> Value {
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
