//! AdmissionReview (admission.k8s.io/v1) in and out: decode the request, decide with
//! `inject::sidecar_patch`, and encode the response exactly as the API server checks it
//! (k8s.io/apiserver `VerifyAdmissionResponse`): `uid` echoed, `patchType` present if and only
//! if `patch` is, the patch in standard padded base64. Pure: bytes in, JSON out.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::error::{RequestError, WebhookError};
use super::inject::{sidecar_patch, Outcome, SidecarMode, SidecarSettings};

pub const API_VERSION: &str = "admission.k8s.io/v1";
/// Defence in depth behind the chart's namespaceSelector: these never get a sidecar.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// What happened to one review, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Injected(SidecarMode),
    Skipped,
    Denied,
}

impl Decision {
    pub fn label(self) -> &'static str {
        match self {
            Decision::Injected(_) => "injected",
            Decision::Skipped => "skipped",
            Decision::Denied => "denied",
        }
    }
}

pub struct Answer {
    pub body: Value,
    pub decision: Decision,
}

/// Answers one AdmissionReview request body.
pub fn answer(body: &[u8], settings: &SidecarSettings) -> Result<Answer, RequestError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::NotAReview(e.to_string()))?;
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version != API_VERSION
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err(RequestError::UnsupportedVersion(format!("{api_version:?}")));
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| RequestError::NotAReview("request is missing".to_string()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| RequestError::NotAReview("request.uid is missing".to_string()))?;
    let (response, decision) = match decide(request, settings) {
        Ok((outcome, patch, warnings)) => (
            allowed(uid, outcome, &patch, warnings),
            decision_of(outcome),
        ),
        Err(e) => (denied(uid, &e), Decision::Denied),
    };
    Ok(Answer {
        body: json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}),
        decision,
    })
}

type Decided = (Outcome, Vec<super::inject::PatchOp>, Vec<String>);

fn decide(request: &Value, settings: &SidecarSettings) -> Result<Decided, WebhookError> {
    let str_at = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
    let is_pod = request.pointer("/kind/kind").and_then(Value::as_str) == Some("Pod")
        && request
            .pointer("/kind/group")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
    // Only pod creation is ours; anything else that reaches us (a widened rule, an UPDATE,
    // a subresource) passes untouched.
    if !is_pod || str_at("operation") != "CREATE" || !str_at("subResource").is_empty() {
        return Ok((Outcome::NotRequested, Vec::new(), Vec::new()));
    }
    let pod = request
        .get("object")
        .filter(|o| o.is_object())
        .ok_or_else(|| WebhookError::MalformedPod("request.object is missing".to_string()))?;
    let patch = sidecar_patch(pod, settings)?;
    let namespace = str_at("namespace");
    if matches!(patch.outcome, Outcome::Injected(_)) && SYSTEM_NAMESPACES.contains(&namespace) {
        return Err(WebhookError::denied(
            "metadata.namespace",
            format!("pods in {namespace} are never injected"),
            "run the application in its own namespace",
        ));
    }
    Ok((patch.outcome, patch.ops, patch.warnings))
}

fn decision_of(outcome: Outcome) -> Decision {
    match outcome {
        Outcome::Injected(mode) => Decision::Injected(mode),
        Outcome::NotRequested | Outcome::AlreadyInjected => Decision::Skipped,
    }
}

fn allowed(
    uid: &str,
    outcome: Outcome,
    ops: &[super::inject::PatchOp],
    warnings: Vec<String>,
) -> Value {
    let mut r = Map::new();
    r.insert("uid".into(), json!(uid));
    r.insert("allowed".into(), json!(true));
    if !ops.is_empty() {
        // Serialising a Vec of plain structs cannot fail; an empty array would be a no-op anyway.
        let bytes = serde_json::to_vec(ops).unwrap_or_else(|_| b"[]".to_vec());
        r.insert("patchType".into(), json!("JSONPatch"));
        r.insert(
            "patch".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        );
    }
    if !warnings.is_empty() {
        r.insert("warnings".into(), json!(warnings));
    }
    r.insert(
        "auditAnnotations".into(),
        json!({"injection": audit_value(outcome)}),
    );
    Value::Object(r)
}

fn audit_value(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Injected(SidecarMode::Native) => "native",
        Outcome::Injected(SidecarMode::Classic) => "classic",
        Outcome::NotRequested => "not-requested",
        Outcome::AlreadyInjected => "already-injected",
    }
}

fn denied(uid: &str, e: &WebhookError) -> Value {
    json!({
        "uid": uid,
        "allowed": false,
        "status": {"code": 400, "reason": "BadRequest", "message": e.to_string()},
    })
}
