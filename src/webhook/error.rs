//! The webhook's error types, one per boundary: `WebhookError` (why a pod is denied; its
//! `Display` is the message the user reads in the API server's answer), `RequestError` (why an
//! HTTP request is not an AdmissionReview we can answer) and `RunError` (why the server cannot
//! start).

use std::path::PathBuf;

/// Why a pod that asked for portcullis is refused. Each message names the field or annotation
/// at fault and the fix, because it reaches the user only as a one-line event or `kubectl` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("{key}: {message} (fix: {fix})")]
    Denied {
        key: String,
        message: String,
        fix: String,
    },
    #[error("the pod is not a valid object: {0}")]
    MalformedPod(String),
}

impl WebhookError {
    pub fn denied(key: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        WebhookError::Denied {
            key: key.to_string(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// Why an HTTP request to `/mutate` gets no AdmissionReview answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("request body could not be read")]
    BodyUnreadable,
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("only admission.k8s.io/v1 AdmissionReview is served (got {0})")]
    UnsupportedVersion(String),
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::UnsupportedMediaType => 415,
            RequestError::BodyTooLarge(_) => 413,
            _ => 400,
        }
    }
}

/// Why `portcullis webhook` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the TLS certificate {cert} / key {key}: {reason}")]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Listen(#[from] crate::listen::ListenError),
}
