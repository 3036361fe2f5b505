//! Responses portcullis writes itself, and THE mapping from `ProxyError` to one of them.
//! Bodies are fixed strings keyed by the error kind: nothing from the request is reflected.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::error::ProxyError;
use crate::config::RouteKind;
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
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header("referrer-policy", "no-referrer")?;
        resp.insert_header(
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        )?;
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

/// The one place an error becomes a response. `api` callers get JSON, everyone else text.
pub fn error_reply(e: &ProxyError, kind: Option<RouteKind>) -> Reply {
    let (status, code, text): (u16, &str, &'static str) = match e {
        ProxyError::NoRoute => (404, "not_found", "Not found\n"),
        ProxyError::MethodNotAllowed => (405, "method_not_allowed", "Method not allowed\n"),
        ProxyError::CsrfRejected => (403, "csrf", "Forbidden\n"),
        ProxyError::Forbidden(_) => (403, "forbidden", "Forbidden\n"),
        ProxyError::AccessDenied(_) => (
            403,
            "access_denied",
            "Access denied: this account may not use this application.\n",
        ),
        ProxyError::Unauthenticated | ProxyError::StaleCookie(_) => {
            (401, "unauthorized", "Unauthorized\n")
        }
        ProxyError::BadRequest(_) | ProxyError::AmbiguousPath(_) => {
            (400, "bad_request", "Bad request\n")
        }
        ProxyError::Misdirected => (421, "misdirected_request", "Misdirected request\n"),
        ProxyError::BodyTimeout => (408, "request_timeout", "Request timeout\n"),
        ProxyError::BodyTooLarge => (413, "content_too_large", "Content too large\n"),
        ProxyError::HeadersTooLarge(_) => (
            431,
            "headers_too_large",
            "Request header fields too large\n",
        ),
        ProxyError::RateLimited(_) => (429, "rate_limited", "Too many requests\n"),
        // BCL §2.8: 400, optionally with an OAuth-style JSON error.
        ProxyError::LogoutTokenRejected(_) => (400, "invalid_request", "Bad request\n"),
        ProxyError::LoginFailed(_) | ProxyError::LoginRejected(_) => (
            400,
            "login_failed",
            "Login failed. Start again from the application.\n",
        ),
        ProxyError::Oidc(OidcError::NotReady) | ProxyError::Store(_) => {
            (503, "unavailable", "Service unavailable\n")
        }
        ProxyError::RefreshUnavailable => (503, "unavailable", "Service unavailable\n"),
        ProxyError::Oidc(_) => (502, "identity_provider_error", "Bad gateway\n"),
        ProxyError::Internal(_) => (500, "internal", "Internal error\n"),
    };
    let json = kind == Some(RouteKind::Api)
        || matches!(
            e,
            ProxyError::Unauthenticated
                | ProxyError::StaleCookie(_)
                | ProxyError::LogoutTokenRejected(_)
        );
    let mut reply = if json {
        Reply::json(status, format!("{{\"error\":\"{code}\"}}"))
    } else {
        Reply::text(status, text)
    };
    if status == 503 || status == 429 {
        reply = reply.header("retry-after", "5");
    }
    reply
}
