//! What each kind of route asks of a request, resolved once when the configuration is loaded.
//! This is the one place a kind's behaviour is written down: the request path (`decide`, the
//! response phases, the ingress auth endpoint) reads these fields, never the kind, so a new kind
//! or rule is a new arm here that the compiler makes complete.

use http::header::{HeaderName, HeaderValue};
use http::Method;
use pingora::http::RequestHeader;

use super::respond::Format;
use crate::config::{RouteConfig, RouteKind, SessionPolicy};

/// What happens to a request that needs a session and has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutSession {
    /// 401 (JSON): a script asked, and handles it.
    Refuse,
    /// A navigation (see `is_navigation`) goes to the login; anything else gets 401.
    LoginNavigations,
    /// The request passes on anonymously (`policy: optional`).
    PassAnonymously,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub kind: RouteKind,
    /// `None`: no session is looked up and no token forwarded. `Some`: the session's token is
    /// forwarded, and this is what happens without one.
    pub session: Option<WithoutSession>,
    /// What `policy: user` makes of a request without a session on this kind of route.
    pub required: WithoutSession,
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
    /// A configured route's policy: its kind's, with `routes[].policy` deciding whether a
    /// session is needed.
    pub fn resolve(route: &RouteConfig) -> RoutePolicy {
        let policy = RoutePolicy::of(route.kind);
        let session = match route.session {
            None => policy.session,
            Some(SessionPolicy::None) => None,
            Some(SessionPolicy::User) => Some(policy.required),
            Some(SessionPolicy::Optional) => Some(WithoutSession::PassAnonymously),
        };
        RoutePolicy { session, ..policy }
    }

    pub const fn of(kind: RouteKind) -> RoutePolicy {
        match kind {
            RouteKind::Public => RoutePolicy {
                kind,
                session: None,
                required: WithoutSession::Refuse,
                csrf: false,
                cors: false,
                page_csp: false,
                errors: Format::Text,
            },
            RouteKind::Api => RoutePolicy {
                kind,
                session: Some(WithoutSession::Refuse),
                required: WithoutSession::Refuse,
                csrf: true,
                cors: true,
                page_csp: false,
                errors: Format::Json,
            },
            RouteKind::Page => RoutePolicy {
                kind,
                session: Some(WithoutSession::LoginNavigations),
                required: WithoutSession::LoginNavigations,
                csrf: false,
                cors: false,
                page_csp: true,
                errors: Format::Text,
            },
            // The SPA's shell and assets are public by default (the app asks `/bff/user`);
            // with `policy: user` a page load goes to the login like a `page` route's.
            RouteKind::Static => RoutePolicy {
                kind,
                session: None,
                required: WithoutSession::LoginNavigations,
                csrf: false,
                cors: false,
                page_csp: true,
                errors: Format::Text,
            },
        }
    }
}

/// Whether the browser is loading a page (a redirect to the login helps) rather than a script
/// fetching something (which gets a 401 it can act on): a GET or HEAD that upgrades nothing,
/// that Fetch Metadata does not mark as anything but a navigation, and without the CSRF header
/// only scripts send. `method` is the original request's (an ingress describes it).
pub fn is_navigation(req: &RequestHeader, method: &Method) -> bool {
    let mode = req.headers.get(SEC_FETCH_MODE).map(HeaderValue::as_bytes);
    (method == Method::GET || method == Method::HEAD)
        && !req.headers.contains_key(http::header::UPGRADE)
        && mode.is_none_or(|m| m == b"navigate")
        && !req.headers.contains_key(X_CSRF)
}

const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const X_CSRF: HeaderName = HeaderName::from_static("x-csrf");

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
        let spa = RoutePolicy::of(RouteKind::Static);
        assert_eq!(spa.session, None);
        assert!(!spa.csrf && !spa.cors && spa.page_csp);
    }

    fn route(kind: RouteKind, session: Option<SessionPolicy>) -> RouteConfig {
        RouteConfig::for_test("/", kind, session)
    }

    #[test]
    fn validation_agrees_with_the_resolved_policy_on_session_lookups() {
        let kinds = [
            RouteKind::Api,
            RouteKind::Page,
            RouteKind::Public,
            RouteKind::Static,
        ];
        let policies = [
            None,
            Some(SessionPolicy::None),
            Some(SessionPolicy::User),
            Some(SessionPolicy::Optional),
        ];
        for kind in kinds {
            for policy in policies {
                let resolved = RoutePolicy::resolve(&route(kind, policy)).session.is_some();
                assert_eq!(
                    kind.looks_up_session(policy),
                    resolved,
                    "{kind:?} {policy:?}"
                );
            }
        }
    }

    #[test]
    fn a_required_session_on_a_static_route_sends_page_loads_to_the_login() {
        let user = Some(SessionPolicy::User);
        let resolved = |kind, session| RoutePolicy::resolve(&route(kind, session)).session;
        assert_eq!(
            resolved(RouteKind::Static, user),
            Some(WithoutSession::LoginNavigations)
        );
        assert_eq!(resolved(RouteKind::Static, None), None);
        assert_eq!(
            resolved(RouteKind::Public, user),
            Some(WithoutSession::Refuse)
        );
        assert_eq!(resolved(RouteKind::Api, user), Some(WithoutSession::Refuse));
    }

    #[test]
    fn only_a_page_load_is_a_navigation() {
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/", None).unwrap();
            for (k, v) in headers {
                r.insert_header(k.to_string(), *v).unwrap();
            }
            r
        };
        let nav = |r: &RequestHeader| is_navigation(r, &r.method);
        assert!(nav(&req("GET", &[])));
        assert!(nav(&req("HEAD", &[("sec-fetch-mode", "navigate")])));
        assert!(!nav(&req("POST", &[])));
        assert!(!nav(&req("GET", &[("sec-fetch-mode", "cors")])));
        assert!(!nav(&req("GET", &[("x-csrf", "1")])));
        assert!(!nav(&req("GET", &[("upgrade", "websocket")])));
    }
}
