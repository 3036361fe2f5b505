//! `OidcError`: what can go wrong talking to the OpenID Provider. Messages name the step and the
//! rule, never token values.

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("identity provider not ready (discovery has not completed)")]
    NotReady,
    #[error("token endpoint unreachable or failed: {0}")]
    TokenEndpoint(String),
    /// The OP answered with an OAuth error (RFC 6749 §5.2); `invalid_grant` is fatal for refresh.
    #[error("token endpoint rejected the request: {code}")]
    Rejected { code: String },
    #[error("token response invalid: {0}")]
    TokenResponse(&'static str),
    #[error("ID token invalid: {0}")]
    IdToken(String),
}

impl OidcError {
    /// Whether a failed refresh means the grant is gone (end the session) rather than a
    /// passing outage (keep it).
    pub fn is_fatal_for_refresh(&self) -> bool {
        matches!(self, OidcError::Rejected { code } if code == "invalid_grant")
            || matches!(self, OidcError::IdToken(_) | OidcError::TokenResponse(_))
    }
}
