//! Responses portcullis writes itself, and THE mapping from `ProxyError` to a status, a body
//! and a log level (`classify`): refusals, the ingress auth endpoint's answers and upstream
//! failures all go through it. Bodies are fixed strings keyed by the error kind: nothing from
//! the request is reflected.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::error::ProxyError;
use crate::oidc::OidcError;

/// A locally generated response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Headers whose names come from configuration, or values that are already header values.
    pub header_values: Vec<(http::HeaderName, http::HeaderValue)>,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            header_values: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: Bytes::new(),
        }
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            content_type: "application/json",
            body: body.into(),
            ..Reply::new(status)
        }
    }

    pub fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            body: Bytes::from_static(body.as_bytes()),
            ..Reply::new(status)
        }
    }

    pub fn html(status: u16, body: String) -> Reply {
        Reply {
            content_type: "text/html; charset=utf-8",
            body: Bytes::from(body),
            ..Reply::new(status)
        }
    }

    pub fn redirect(location: impl Into<String>) -> Reply {
        Reply::new(302).header("location", location)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn header_value(mut self, name: http::HeaderName, value: http::HeaderValue) -> Reply {
        self.header_values.push((name, value));
        self
    }
}

/// Headers on every response portcullis generates (R36): never cached, never framed, never
/// sniffed, no referrer leaking `code` or `state`.
pub struct SecurityHeaders {
    hsts: bool,
}

impl SecurityHeaders {
    pub fn new(public_is_https: bool) -> SecurityHeaders {
        SecurityHeaders {
            hsts: public_is_https,
        }
    }

    fn apply(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        )?;
        self.apply_to_file(resp)
    }

    /// The headers a static route's files carry too; their caching and (HTML's) CSP are the
    /// route's own.
    pub fn apply_to_file(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header("referrer-policy", "no-referrer")?;
        if self.hsts {
            resp.insert_header(
                "strict-transport-security",
                "max-age=31536000; includeSubDomains",
            )?;
        }
        Ok(())
    }
}

pub async fn write_reply(
    session: &mut Session,
    reply: Reply,
    security: &SecurityHeaders,
) -> pingora::Result<()> {
    let count = reply.headers.len() + reply.header_values.len() + 8;
    let mut resp = ResponseHeader::build(reply.status, Some(count))?;
    security.apply(&mut resp)?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    for (name, value) in reply.header_values {
        resp.append_header(name, value)?;
    }
    resp.insert_header("content-type", reply.content_type)?;
    resp.insert_header("content-length", reply.body.len().to_string())?;
    let empty = reply.body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// How loudly a refusal or failure is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine: a client's connection that stopped sending.
    Debug,
    /// A request refused for what it is (no session, a forged header, a bad path).
    Info,
    /// Something an operator should look at: a dependency or the upstream failing.
    Warn,
}

/// What an error becomes: status, JSON error code, text body and log level.
pub struct Class {
    pub status: u16,
    pub code: &'static str,
    pub text: &'static str,
    pub severity: Severity,
}

/// The one table from errors to answers.
pub fn classify(e: &ProxyError) -> Class {
    use Severity::{Debug, Info, Warn};
    let (status, code, text, severity) = match e {
        ProxyError::NoRoute => (404, "not_found", "Not found\n", Info),
        ProxyError::NotFound(_) => (404, "not_found", "Not found\n", Info),
        ProxyError::MethodNotAllowed | ProxyError::OnlyGetAndHead => {
            (405, "method_not_allowed", "Method not allowed\n", Info)
        }
        ProxyError::CsrfRejected => (403, "csrf", "Forbidden\n", Info),
        ProxyError::Forbidden(_) => (403, "forbidden", "Forbidden\n", Info),
        ProxyError::AccessDenied(_) => (
            403,
            "access_denied",
            "Access denied: this account may not use this application.\n",
            Info,
        ),
        ProxyError::Unauthenticated | ProxyError::StaleCookie(_) => {
            (401, "unauthorized", "Unauthorized\n", Info)
        }
        ProxyError::MachineTokenRejected(_) => (401, "invalid_token", "Unauthorized\n", Info),
        ProxyError::MixedCredentials => (400, "mixed_credentials", "Bad request\n", Info),
        ProxyError::BadRequest(_) | ProxyError::AmbiguousPath(_) => {
            (400, "bad_request", "Bad request\n", Info)
        }
        ProxyError::Misdirected => (421, "misdirected_request", "Misdirected request\n", Info),
        ProxyError::BodyTimeout => (408, "request_timeout", "Request timeout\n", Debug),
        ProxyError::BodyTooLarge => (413, "content_too_large", "Content too large\n", Info),
        ProxyError::HeadersTooLarge(_) => (
            431,
            "headers_too_large",
            "Request header fields too large\n",
            Info,
        ),
        ProxyError::RateLimited(_) => (429, "rate_limited", "Too many requests\n", Info),
        // BCL §2.8: 400, optionally with an OAuth-style JSON error.
        ProxyError::LogoutTokenRejected(_) => (400, "invalid_request", "Bad request\n", Info),
        ProxyError::LoginFailed(_) => (400, "login_failed", LOGIN_FAILED, Info),
        // The OP's answer was refused: worth an operator's look (a misconfigured client).
        ProxyError::LoginRejected(_) => (400, "login_failed", LOGIN_FAILED, Warn),
        ProxyError::Oidc(OidcError::NotReady) | ProxyError::Store(_) => {
            (503, "unavailable", "Service unavailable\n", Warn)
        }
        ProxyError::RefreshUnavailable => (503, "unavailable", "Service unavailable\n", Warn),
        ProxyError::Oidc(_) => (502, "identity_provider_error", "Bad gateway\n", Warn),
        ProxyError::Internal(_) => (500, "internal", "Internal error\n", Warn),
        ProxyError::UpstreamTimeout => (504, "gateway_timeout", "Gateway timeout\n", Warn),
        ProxyError::UpstreamFailed => (502, "bad_gateway", "Bad gateway\n", Warn),
        ProxyError::ClientAborted => (400, "bad_request", "Bad request\n", Info),
        ProxyError::ProxyStatus(code @ 400..=499) => (*code, "bad_request", "Bad request\n", Info),
        ProxyError::ProxyStatus(code) => (*code, "bad_gateway", "Bad gateway\n", Warn),
    };
    Class {
        status,
        code,
        text,
        severity,
    }
}

const LOGIN_FAILED: &str = "Login failed. Start again from the application.\n";

/// How an error is written: JSON for scripts and machines, text for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// The response for an error, in `format` (401s and back-channel logout errors are always JSON).
pub fn error_reply(e: &ProxyError, format: Format) -> Reply {
    let Class {
        status, code, text, ..
    } = classify(e);
    let json = format == Format::Json
        || matches!(
            e,
            ProxyError::Unauthenticated
                | ProxyError::StaleCookie(_)
                | ProxyError::LogoutTokenRejected(_)
                | ProxyError::MachineTokenRejected(_)
                | ProxyError::MixedCredentials
        );
    let mut reply = if json {
        Reply::json(status, format!("{{\"error\":\"{code}\"}}"))
    } else {
        Reply::text(status, text)
    };
    if status == 503 || status == 429 {
        reply = reply.header("retry-after", "5");
    }
    if matches!(e, ProxyError::OnlyGetAndHead) {
        reply = reply.header("allow", "GET, HEAD");
    }
    if matches!(e, ProxyError::MachineTokenRejected(_)) {
        // RFC 6750 §3.1; the reason stays in portcullis's log, not in the answer.
        reply = reply.header("www-authenticate", "Bearer error=\"invalid_token\"");
    }
    reply
}
