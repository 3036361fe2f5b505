//! What each kind of route asks of a request, resolved once when the configuration is loaded.
//! This is the one place a kind's behaviour is written down: the request path (`decide`, the
//! response phases, the ingress auth endpoint) reads these fields, never the kind, so a new kind
//! or rule is a new arm here that the compiler makes complete.

use super::respond::Format;
use crate::config::RouteKind;

/// What happens to a request that needs a session and has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutSession {
    /// 401 (JSON): a script asked, and handles it.
    Refuse,
    /// A navigation (GET or HEAD, not an upgrade) goes to the login; anything else gets 401.
    LoginNavigations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub kind: RouteKind,
    /// `None`: no session is looked up and no token forwarded. `Some`: the session's token is
    /// forwarded, and this is what happens without one.
    pub session: Option<WithoutSession>,
    /// `X-CSRF: 1` and the `Origin` / Fetch-Metadata checks, before the session is looked up (a
    /// WebSocket handshake, which cannot carry the header, needs a trusted `Origin` instead).
    pub csrf: bool,
    /// CORS preflights from trusted origins are answered, and those origins echoed.
    pub cors: bool,
    /// `security.content_security_policy` is added to responses that carry none of their own.
    pub page_csp: bool,
    /// How portcullis's own error answers on this route are written.
    pub errors: Format,
}

impl RoutePolicy {
    pub const fn of(kind: RouteKind) -> RoutePolicy {
        match kind {
            RouteKind::Public => RoutePolicy {
                kind,
                session: None,
                csrf: false,
                cors: false,
                page_csp: false,
                errors: Format::Text,
            },
            RouteKind::Api => RoutePolicy {
                kind,
                session: Some(WithoutSession::Refuse),
                csrf: true,
                cors: true,
                page_csp: false,
                errors: Format::Json,
            },
            RouteKind::Page => RoutePolicy {
                kind,
                session: Some(WithoutSession::LoginNavigations),
                csrf: false,
                cors: false,
                page_csp: true,
                errors: Format::Text,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_resolves_to_its_rules() {
        let api = RoutePolicy::of(RouteKind::Api);
        assert_eq!(api.session, Some(WithoutSession::Refuse));
        assert!(api.csrf && api.cors && !api.page_csp);
        assert_eq!(api.errors, Format::Json);
        let page = RoutePolicy::of(RouteKind::Page);
        assert_eq!(page.session, Some(WithoutSession::LoginNavigations));
        assert!(!page.csrf && page.page_csp);
        let public = RoutePolicy::of(RouteKind::Public);
        assert_eq!(public.session, None);
        assert!(!public.csrf && !public.cors);
    }
}
