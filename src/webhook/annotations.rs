//! The pod-facing vocabulary: every `bff.portcullis.dev/*` label and annotation, how a pod opts
//! in, and how its annotations override the injector's defaults. Pure: it reads the pod's
//! `metadata.labels`/`metadata.annotations` maps and never calls the Kubernetes API.

use serde_json::{Map, Value};

use super::error::WebhookError;
use super::inject::{Resources, SidecarMode, SidecarSettings};
use crate::text::nearest;

pub const PREFIX: &str = "bff.portcullis.dev/";
/// Opt-in, as a label (preferred: selectors and CEL can see it) or an annotation.
pub const INJECT: &str = "bff.portcullis.dev/inject";
pub const CONFIG: &str = "bff.portcullis.dev/config";
pub const SECRET: &str = "bff.portcullis.dev/secret";
pub const SIDECAR_MODE: &str = "bff.portcullis.dev/sidecar-mode";
pub const PORT: &str = "bff.portcullis.dev/port";
pub const ADMIN_PORT: &str = "bff.portcullis.dev/admin-port";
pub const CPU_REQUEST: &str = "bff.portcullis.dev/cpu-request";
pub const MEMORY_REQUEST: &str = "bff.portcullis.dev/memory-request";
pub const CPU_LIMIT: &str = "bff.portcullis.dev/cpu-limit";
pub const MEMORY_LIMIT: &str = "bff.portcullis.dev/memory-limit";
/// Written by the webhook: what it injected (JSON). Its presence marks a pod as injected.
pub const STATUS: &str = "bff.portcullis.dev/status";
/// Written by the webhook: the label the PodMonitor and NetworkPolicies select on.
pub const INJECTED: &str = "bff.portcullis.dev/injected";

const KNOWN_ANNOTATIONS: [&str; 11] = [
    INJECT,
    CONFIG,
    SECRET,
    SIDECAR_MODE,
    PORT,
    ADMIN_PORT,
    CPU_REQUEST,
    MEMORY_REQUEST,
    CPU_LIMIT,
    MEMORY_LIMIT,
    STATUS,
];
const KNOWN_LABELS: [&str; 2] = [INJECT, INJECTED];

/// What one pod asks for, its annotations resolved against the injector's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    pub config_map: String,
    pub secret: String,
    pub mode: SidecarMode,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub resources: Resources,
}

/// `Some(true)` when the pod opted in, `Some(false)` when it opted out, `None` when it said
/// nothing. The label wins over the annotation, as Istio's does, because selectors see labels.
pub fn opt_in(
    labels: Option<&Map<String, Value>>,
    annotations: Option<&Map<String, Value>>,
) -> Result<Option<bool>, WebhookError> {
    let value = match (string_at(labels, INJECT)?, string_at(annotations, INJECT)?) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    match value {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        other => Err(WebhookError::denied(
            INJECT,
            format!("{other:?} is neither \"true\" nor \"false\" (the value is case-sensitive)"),
            "set it to \"true\" to inject portcullis, or to \"false\" or remove it to opt out",
        )),
    }
}

pub fn pod_options(
    annotations: Option<&Map<String, Value>>,
    settings: &SidecarSettings,
) -> Result<PodOptions, WebhookError> {
    let get = |key| string_at(annotations, key);
    let config_map = object_name(
        CONFIG,
        get(CONFIG)?,
        settings.default_config_map.as_deref(),
        "ConfigMap",
    )?;
    let secret = object_name(
        SECRET,
        get(SECRET)?,
        settings.default_secret.as_deref(),
        "Secret",
    )?;
    let mode = match get(SIDECAR_MODE)? {
        None => settings.mode,
        Some("native") => SidecarMode::Native,
        Some("classic") => SidecarMode::Classic,
        Some(other) => {
            return Err(WebhookError::denied(
                SIDECAR_MODE,
                format!("{other:?} is not a sidecar mode"),
                "use \"native\" (an init container with restartPolicy: Always, Kubernetes >= 1.29) or \"classic\"",
            ))
        }
    };
    let proxy_port = port(PORT, get(PORT)?, settings.proxy_port)?;
    let admin_port = port(ADMIN_PORT, get(ADMIN_PORT)?, settings.admin_port)?;
    if proxy_port == admin_port {
        return Err(WebhookError::denied(
            ADMIN_PORT,
            format!("port {admin_port} is also the proxy port"),
            format!("choose different ports in {PORT} and {ADMIN_PORT}"),
        ));
    }
    let defaults = &settings.resources;
    let resources = Resources {
        cpu_request: quantity(CPU_REQUEST, get(CPU_REQUEST)?, &defaults.cpu_request)?,
        memory_request: quantity(
            MEMORY_REQUEST,
            get(MEMORY_REQUEST)?,
            &defaults.memory_request,
        )?,
        cpu_limit: quantity(CPU_LIMIT, get(CPU_LIMIT)?, &defaults.cpu_limit)?,
        memory_limit: quantity(MEMORY_LIMIT, get(MEMORY_LIMIT)?, &defaults.memory_limit)?,
    };
    Ok(PodOptions {
        config_map,
        secret,
        mode,
        proxy_port,
        admin_port,
        resources,
    })
}

/// One warning per `bff.portcullis.dev/*` key portcullis does not know, with the nearest known
/// key when one is close: a typo must not silently fall back to a default.
pub fn unknown_key_warnings(
    labels: Option<&Map<String, Value>>,
    annotations: Option<&Map<String, Value>>,
) -> Vec<String> {
    let unknown = |map: Option<&Map<String, Value>>, known: &[&str], what: &str| -> Vec<String> {
        map.into_iter()
            .flat_map(|m| m.keys())
            .filter(|k| k.starts_with(PREFIX) && !known.contains(&k.as_str()))
            .map(|k| match nearest(k, known) {
                Some(near) => format!("unknown {what} {k} ignored (did you mean {near}?)"),
                None => format!("unknown {what} {k} ignored"),
            })
            .collect()
    };
    let mut warnings = unknown(labels, &KNOWN_LABELS, "label");
    warnings.extend(unknown(annotations, &KNOWN_ANNOTATIONS, "annotation"));
    warnings
}

/// A label or annotation value. Kubernetes maps are `map[string]string`, so anything else
/// means the object is not a real pod.
fn string_at<'a>(
    map: Option<&'a Map<String, Value>>,
    key: &str,
) -> Result<Option<&'a str>, WebhookError> {
    match map.and_then(|m| m.get(key)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(WebhookError::MalformedPod(format!("{key} is not a string"))),
    }
}

fn object_name(
    key: &str,
    value: Option<&str>,
    default: Option<&str>,
    kind: &str,
) -> Result<String, WebhookError> {
    let name = match value.or(default) {
        Some(name) => name,
        None => {
            return Err(WebhookError::denied(
                key,
                format!("is missing and the injector has no default {kind}"),
                format!("annotate the pod with {key}: <name of a {kind} in the pod's namespace>"),
            ))
        }
    };
    if !is_dns_subdomain(name) {
        return Err(WebhookError::denied(
            key,
            format!("{name:?} is not a valid {kind} name"),
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ));
    }
    Ok(name.to_string())
}

fn port(key: &str, value: Option<&str>, default: u16) -> Result<u16, WebhookError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(WebhookError::denied(
            key,
            format!("{text:?} is not a port number"),
            "use a free port between 1 and 65535, and the same port in the ConfigMap's listen/admin_listen",
        )),
    }
}

fn quantity(
    key: &str,
    value: Option<&str>,
    default: &Option<String>,
) -> Result<Option<String>, WebhookError> {
    match value {
        None => Ok(default.clone()),
        Some(q) if is_quantity(q) => Ok(Some(q.to_string())),
        Some(q) => Err(WebhookError::denied(
            key,
            format!("{q:?} is not a Kubernetes quantity"),
            "write e.g. \"100m\" for CPU or \"64Mi\" for memory",
        )),
    }
}

/// RFC 1123 subdomain, the rule for ConfigMap and Secret names.
pub fn is_dns_subdomain(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A non-negative Kubernetes resource quantity: a decimal number and an optional binary
/// (`Ki`…`Ei`), decimal (`n`…`E`) or exponent (`e3`) suffix.
pub fn is_quantity(text: &str) -> bool {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let digits = number.replace('.', "");
    let number_ok = !digits.is_empty() && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || exponent_ok(suffix);
    number_ok && suffix_ok
}

fn exponent_ok(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in ["1", "100m", "0.5", "64Mi", "1Gi", "2e3", "1.5G", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "-1", "1.2.3", "64MB", "1e", "lots", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn object_names_are_rfc1123_subdomains() {
        assert!(is_dns_subdomain("web-bff.v2"));
        for bad in ["", "Web", "-web", "web-", "web_bff", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn a_typo_gets_the_nearest_known_key() {
        let annotations: Map<String, Value> =
            serde_json::from_str(r#"{"bff.portcullis.dev/secrte": "s", "bff.portcullis.dev/zzzzzzzzzzzz": "x", "other/key": "y"}"#)
                .expect("json");
        assert_eq!(
            unknown_key_warnings(None, Some(&annotations)),
            vec![
                "unknown annotation bff.portcullis.dev/secrte ignored (did you mean bff.portcullis.dev/secret?)",
                "unknown annotation bff.portcullis.dev/zzzzzzzzzzzz ignored",
            ]
        );
    }

    #[test]
    fn the_label_decides_before_the_annotation() {
        let map = |v: &str| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({ INJECT: v })).expect("map")
        };
        assert_eq!(
            opt_in(Some(&map("false")), Some(&map("true"))),
            Ok(Some(false))
        );
        assert_eq!(opt_in(None, Some(&map("true"))), Ok(Some(true)));
        assert_eq!(opt_in(None, None), Ok(None));
        assert!(opt_in(Some(&map("yes")), None).is_err());
    }
}
