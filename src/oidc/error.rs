//! `OidcError`: what can go wrong talking to the OpenID Provider. Messages name the step and the
//! rule, never token values.

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The OP answered, and what it answered cannot work with the configuration: retrying
    /// will not help, `key` is the setting to fix.
    #[error("{key}: {message}")]
    Incompatible { key: &'static str, message: String },
    #[error("identity provider not ready (discovery has not completed)")]
    NotReady,
    #[error("token endpoint unreachable or failed: {0}")]
    TokenEndpoint(String),
    /// The OP answered with an OAuth error (RFC 6749 §5.2); `invalid_grant` is fatal for refresh.
    #[error("token endpoint rejected the request: {code}")]
    Rejected { code: String },
    #[error("token response invalid: {0}")]
    TokenResponse(&'static str),
    /// The pushed authorization request (RFC 9126) failed; `reason` is the logged code.
    #[error("pushed authorization request failed ({reason}): {detail}")]
    Par {
        reason: &'static str,
        detail: String,
    },
    /// The client could not authenticate or prove possession: its key file is unusable, a
    /// DPoP proof could not be made, or the OP kept demanding a new DPoP nonce.
    #[error("client credentials failed ({reason}): {detail}")]
    Credentials {
        reason: &'static str,
        detail: String,
    },
    /// The introspection endpoint (RFC 7662) could not be asked, or did not answer usably.
    #[error("token introspection failed: {0}")]
    Introspection(String),
    /// `reason` is the stable code logged and audited; `detail` says which value failed.
    #[error("ID token invalid ({reason}): {detail}")]
    IdToken {
        reason: &'static str,
        detail: String,
    },
}

impl OidcError {
    pub fn id_token(reason: &'static str, detail: impl ToString) -> OidcError {
        OidcError::IdToken {
            reason,
            detail: detail.to_string(),
        }
    }

    /// A stable, low-cardinality reason code for logs and audit lines.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Discovery(_) => "discovery_failed",
            OidcError::Incompatible { .. } => "discovery_incompatible",
            OidcError::NotReady => "oidc_not_ready",
            OidcError::TokenEndpoint(_) => "token_endpoint_failed",
            OidcError::Rejected { code } => match code.as_str() {
                "invalid_dpop_proof" => "dpop_proof_rejected",
                "use_dpop_nonce" => "dpop_nonce_required",
                "invalid_client" => "client_auth_rejected",
                _ => "token_request_rejected",
            },
            OidcError::Par { reason, .. } | OidcError::Credentials { reason, .. } => reason,
            OidcError::TokenResponse(_) => "token_response_invalid",
            OidcError::Introspection(_) => "introspection_failed",
            OidcError::IdToken { reason, .. } => reason,
        }
    }

    /// Whether a failed refresh means the grant is gone (end the session) rather than a
    /// passing outage (keep it).
    pub fn is_fatal_for_refresh(&self) -> bool {
        matches!(self, OidcError::Rejected { code } if code == "invalid_grant")
            || matches!(
                self,
                OidcError::IdToken { .. } | OidcError::TokenResponse(_)
            )
    }
}
