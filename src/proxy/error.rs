//! `ProxyError`: every reason portcullis answers a request itself instead of forwarding it,
//! and every way forwarding it failed. `respond::classify` is the one place each becomes a
//! status, a fixed body and a log level; `reason()` is the stable code logged with it.

use crate::oidc::OidcError;
use crate::session::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A static route's files are read, never written: 405 with `Allow: GET, HEAD`.
    #[error("only GET and HEAD are served")]
    OnlyGetAndHead,
    /// Nothing to serve on a static route; the reason says why (missing, hidden, outside
    /// the root), the client is told only 404.
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("the CSRF header is missing or wrong")]
    CsrfRejected,
    #[error("no valid session")]
    Unauthenticated,
    /// A session cookie that names no live session (unknown, ended, malformed, duplicated):
    /// a 401 that also expires the cookie.
    #[error("session cookie names no session: {0}")]
    StaleCookie(&'static str),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The user logged in at the OP, but the `access` policy does not admit them.
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    #[error("login failed: {0}")]
    LoginFailed(&'static str),
    /// The OP's answer to the code exchange was refused or unusable: a 400 like `LoginFailed`,
    /// logged with the rule that failed.
    #[error("login failed: {0}")]
    LoginRejected(OidcError),
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("identity provider: {0}")]
    Oidc(#[from] OidcError),
    #[error("ambiguous request target: {0}")]
    AmbiguousPath(&'static str),
    /// The request names a host that is not portcullis's (421).
    #[error("request for another host")]
    Misdirected,
    #[error("the request body stopped arriving")]
    BodyTimeout,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request headers too large: {0}")]
    HeadersTooLarge(&'static str),
    #[error("rate limited: {0}")]
    RateLimited(&'static str),
    #[error("logout token rejected: {0}")]
    LogoutTokenRejected(&'static str),
    /// A machine client's bearer token was refused (`routes[].machine_clients`): a 401.
    #[error("machine client token rejected: {0}")]
    MachineTokenRejected(&'static str),
    /// A request with both a session cookie and its own bearer token: which one speaks for
    /// it would be a guess, so neither does.
    #[error("both a session cookie and a bearer token")]
    MixedCredentials,
    #[error("token refresh is temporarily unavailable")]
    RefreshUnavailable,
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The upstream did not connect, answer or take the request in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream refused the connection, broke it off or answered with something unusable.
    #[error("upstream failed")]
    UpstreamFailed,
    /// The client broke off its request while it was being forwarded.
    #[error("the client broke off the request")]
    ClientAborted,
    /// Pingora refused the exchange with a status of its own choosing.
    #[error("proxying refused with status {0}")]
    ProxyStatus(u16),
}

impl ProxyError {
    /// Whether the connection is closed after the answer: the request's own bytes were the
    /// problem, so whatever follows them on the connection is not trusted.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BodyTimeout
                | ProxyError::BodyTooLarge
                | ProxyError::BadRequest("body_unreadable")
        )
    }

    /// Whether this is portcullis refusing to serve without a dependency (the session store,
    /// the OP) rather than guessing: a 503, counted in `portcullis_fail_closed_total`.
    pub fn fails_closed(&self) -> bool {
        matches!(
            self,
            ProxyError::Store(_)
                | ProxyError::Oidc(OidcError::NotReady)
                | ProxyError::RefreshUnavailable
        )
    }

    /// A stable, low-cardinality reason code for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed | ProxyError::OnlyGetAndHead => "method_not_allowed",
            ProxyError::NotFound(r) => r,
            ProxyError::CsrfRejected => "csrf_header_missing",
            ProxyError::Unauthenticated => "unauthenticated",
            ProxyError::BadRequest(r) | ProxyError::Forbidden(r) | ProxyError::LoginFailed(r) => r,
            ProxyError::StaleCookie(r) | ProxyError::AccessDenied(r) => r,
            ProxyError::LoginRejected(e) => e.reason(),
            ProxyError::LogoutTokenRejected(r) | ProxyError::MachineTokenRejected(r) => r,
            ProxyError::MixedCredentials => "mixed_credentials",
            ProxyError::AmbiguousPath(r)
            | ProxyError::HeadersTooLarge(r)
            | ProxyError::RateLimited(r) => r,
            ProxyError::Misdirected => "misdirected_request",
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::Store(_) => "store_unavailable",
            ProxyError::Oidc(e) => e.reason(),
            ProxyError::RefreshUnavailable => "refresh_unavailable",
            ProxyError::Internal(r) => r,
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamFailed => "upstream_failed",
            ProxyError::ClientAborted => "client_aborted",
            ProxyError::ProxyStatus(_) => "proxy_status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::FAIL_CLOSED_REASONS;
    use crate::proxy::respond::{error_reply, Format};

    /// The fail-closed series are pre-created from `FAIL_CLOSED_REASONS`: a reason outside it
    /// would appear only on first use, and one inside it that no error has would stay at zero.
    #[test]
    fn fail_closed_errors_are_503s_whose_reasons_are_pre_created() {
        let errors = [
            ProxyError::Store(StoreError::Unavailable("down".into())),
            ProxyError::Oidc(OidcError::NotReady),
            ProxyError::RefreshUnavailable,
        ];
        let reasons: Vec<&str> = errors.iter().map(ProxyError::reason).collect();
        assert_eq!(reasons, FAIL_CLOSED_REASONS);
        for e in &errors {
            assert!(e.fails_closed(), "{e}");
            assert_eq!(error_reply(e, Format::Text).status, 503, "{e}");
        }
        assert!(!ProxyError::Unauthenticated.fails_closed());
        assert!(!ProxyError::Oidc(OidcError::Discovery("x".into())).fails_closed());
    }
}
