//! Ingress auth mode: portcullis as the external auth service of an ingress controller
//! (ingress-nginx `auth-url`, Traefik `ForwardAuth`, Envoy `ext_authz`). The controller stays in
//! the data path and asks, per request, on a port of its own (`ingress_auth.listen`): may this
//! request pass, and with which headers? The answer is judged from the browser's session like a
//! proxied request's (the same cache, refresh single-flight, CSRF and Origin rules), by the
//! host's and path's policy in `ingress_auth.hosts`.
//!
//! A 200 carries the access token, so it is given only to configured ingress addresses, and only
//! on the auth port, which is never routed to browsers (`/bff/auth` on `listen` is a 404).

pub mod original;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::HeaderMap;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::{Map, Value};

use self::original::Original;
use super::access::check_access;
use super::authenticate::NOT_A_HEADER_VALUE;
use super::bff::{require_csrf_header, validate_return_to};
use super::canonical;
use super::error::ProxyError;
use super::identity::claim_value;
use super::live::Live;
use super::machine::{self, Offered};
use super::policy::{is_navigation, RoutePolicy, WithoutSession};
use super::respond::{error_reply, Format, Reply};
use super::route::matches_at_boundary;
use super::Portcullis;
use crate::config::{
    AccessConfig, HostPattern, IdentityHeader, IngressAuthConfig, IngressController, IpNetwork,
    MachineClientsConfig, PathRule, RouteKind,
};
use crate::session::cache::HotSession;

/// The reloadable part of `ingress_auth`: who may ask, what each host's paths need, and which
/// identity headers an answer carries.
pub struct IngressPolicy {
    controller: IngressController,
    trusted: Vec<IpNetwork>,
    identity: Vec<IdentityHeader>,
    /// Answers carry the signed identity assertion (empty without a session).
    assertion: bool,
    hosts: Vec<HostPolicy>,
}

struct HostPolicy {
    host: HostPattern,
    access: Option<AccessConfig>,
    machine_clients: Option<MachineClientsConfig>,
    /// Longest prefix first, so the first match is the longest.
    paths: Vec<PathRule>,
}

impl IngressPolicy {
    pub fn new(cfg: &IngressAuthConfig) -> IngressPolicy {
        let mut hosts: Vec<HostPolicy> = cfg
            .hosts
            .iter()
            .map(|h| {
                let mut paths: Vec<PathRule> = h
                    .paths
                    .iter()
                    .map(|p| PathRule {
                        prefix: p.prefix.to_ascii_lowercase(),
                        kind: p.kind,
                    })
                    .collect();
                paths.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
                HostPolicy {
                    host: h.host.clone(),
                    access: h.access.clone(),
                    machine_clients: h.machine_clients.clone(),
                    paths,
                }
            })
            .collect();
        // Exact names before wildcards, and the narrowest wildcard first.
        hosts.sort_by_key(|h| match &h.host {
            HostPattern::Exact(_) => (0, 0),
            HostPattern::Under(suffix) => (1, usize::MAX - suffix.len()),
        });
        IngressPolicy {
            controller: cfg.controller,
            trusted: cfg.trusted_ingress.clone(),
            identity: cfg.identity_headers.clone(),
            assertion: cfg.identity_assertion,
            hosts,
        }
    }

    fn trusts(&self, caller: Option<IpAddr>) -> bool {
        caller.is_some_and(|ip| self.trusted.iter().any(|n| n.contains(ip)))
    }

    fn host(&self, name: &str) -> Option<&HostPolicy> {
        self.hosts.iter().find(|h| h.host.matches(name))
    }
}

impl HostPolicy {
    /// Matched without regard to case: controllers that route case-insensitively (ingress-nginx
    /// with regex paths) must not get `/API/x` judged as anything but `/api/`'s.
    fn kind_for(&self, path: &str) -> Option<RouteKind> {
        let path = path.to_ascii_lowercase();
        self.paths
            .iter()
            .find(|p| matches_at_boundary(&p.prefix, &path))
            .map(|p| p.kind)
    }
}

/// What the auth endpoint decided, before it becomes a response.
enum Verdict {
    /// A public path: the request passes anonymously.
    Public,
    /// The session's `Authorization` value and claims, and the host the request was for.
    Allow(HeaderValue, HotSession, String),
    /// A machine client's own `Authorization`, passed on as it came, and the claims identity
    /// headers are filled from (none for an extra issuer's token).
    Machine(HeaderValue, Option<Arc<Map<String, Value>>>),
    /// No session; `login` is where a navigation is sent when the controller returns the
    /// answer to the browser (Traefik, Envoy), rather than redirecting on a 401 itself.
    Unauthenticated {
        kind: RouteKind,
        login: Option<String>,
    },
    Denied {
        kind: Option<RouteKind>,
        error: ProxyError,
    },
    /// The controller's description of the request is missing or malformed.
    Invalid(&'static str),
}

impl Verdict {
    /// The `decision` label of `portcullis_auth_requests_total`.
    fn label(&self) -> &'static str {
        match self {
            Verdict::Public => "public",
            Verdict::Allow(..) | Verdict::Machine(..) => "allow",
            Verdict::Unauthenticated { login: Some(_), .. } => "redirect",
            Verdict::Unauthenticated { login: None, .. } => "unauthenticated",
            Verdict::Denied { .. } => "denied",
            Verdict::Invalid(_) => "invalid",
        }
    }
}

const EMPTY: HeaderValue = HeaderValue::from_static("");

impl Portcullis {
    /// The answer to an ingress controller's auth request; `started`: when it came in.
    pub(super) async fn ingress_auth(
        &self,
        session: &Session,
        live: &Live,
        started: Instant,
    ) -> Reply {
        let Some(policy) = &live.ingress else {
            return error_reply(&ProxyError::NoRoute, Format::Json);
        };
        let verdict = match self.judge(session, policy, live, started).await {
            Ok(verdict) => verdict,
            // The store or the OP is down: fail closed, as a proxied request would.
            Err(e) => {
                tracing::warn!(reason = e.reason(), error = %e, "auth request failed");
                if e.fails_closed() {
                    self.count_fail_closed(&e);
                }
                self.metrics
                    .auth_requests
                    .with_label_values(&["error"])
                    .inc();
                return error_reply(&e, Format::Json);
            }
        };
        self.metrics
            .auth_requests
            .with_label_values(&[verdict.label()])
            .inc();
        let req = session.req_header();
        match verdict {
            Verdict::Public => {
                let reply = answer_headers(Reply::new(200), None, policy, None);
                self.with_assertion(reply, policy, None)
                    .header_value(http::header::COOKIE, self.forwardable_cookies(&req.headers))
            }
            Verdict::Allow(bearer, hot, host) => {
                let reply =
                    answer_headers(Reply::new(200), Some(bearer), policy, Some(&hot.claims));
                let assertion = match policy.assertion {
                    true => self.identity_assertion(&hot, &host),
                    false => Ok(None),
                };
                match assertion {
                    Ok(assertion) => self
                        .with_assertion(reply, policy, assertion)
                        .header_value(http::header::COOKIE, self.forwardable_cookies(&req.headers)),
                    Err(e) => error_reply(&e, Format::Json),
                }
            }
            Verdict::Machine(bearer, claims) => {
                let reply =
                    answer_headers(Reply::new(200), Some(bearer), policy, claims.as_deref());
                self.with_assertion(reply, policy, None)
                    .header_value(http::header::COOKIE, self.forwardable_cookies(&req.headers))
            }
            Verdict::Unauthenticated {
                login: Some(to), ..
            } => Reply::redirect(to),
            Verdict::Unauthenticated { kind, login: None } => {
                tracing::debug!(reason = "unauthenticated", "auth request refused");
                error_reply(&ProxyError::Unauthenticated, answer_format(Some(kind)))
            }
            Verdict::Denied { kind, error } => {
                tracing::info!(reason = error.reason(), "auth request refused");
                error_reply(&error, answer_format(kind))
            }
            Verdict::Invalid(reason) => {
                tracing::info!(reason, "auth request refused");
                error_reply(&ProxyError::BadRequest(reason), Format::Json)
            }
        }
    }

    async fn judge(
        &self,
        session: &Session,
        policy: &IngressPolicy,
        live: &Live,
        started: Instant,
    ) -> Result<Verdict, ProxyError> {
        let denied = |kind, error| Ok(Verdict::Denied { kind, error });
        let caller = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if !policy.trusts(caller) {
            return denied(None, ProxyError::Forbidden("auth_caller_not_trusted"));
        }
        let req = session.req_header();
        let original = match original::describe(policy.controller, req) {
            Ok(original) => original,
            Err(reason) => return Ok(Verdict::Invalid(reason)),
        };
        let Some(host) = policy.host(&original.host) else {
            return denied(None, ProxyError::Forbidden("auth_host_unknown"));
        };
        // The path the ingress routes by must be the one judged here: refuse any spelling that
        // two parsers could read as different paths, as the proxy does.
        if let Err(rejection) = canonical::check_target(original.target.as_bytes()) {
            return denied(None, ProxyError::Forbidden(rejection.reason()));
        }
        if super::is_refused_method(&original.method) {
            return denied(None, ProxyError::Forbidden("method_not_allowed"));
        }
        let Some(kind) = host.kind_for(original.path()) else {
            return denied(None, ProxyError::Forbidden("no_route"));
        };
        let rules = RoutePolicy::of(kind);
        let Some(without_session) = rules.session else {
            return Ok(Verdict::Public);
        };
        if let Some(cfg) = &host.machine_clients {
            // Before the CSRF rules, which guard the session cookie a browser adds by itself; a
            // bearer token is only ever sent by whoever holds it.
            match machine::offered(req) {
                Ok(Offered::Bearer(bearer)) => {
                    let header = bearer.header.clone();
                    let judged = self
                        .judge_machine(&req.headers, cfg, host.access.as_ref(), bearer.token)
                        .await;
                    let error = match judged {
                        Ok(claims) => return Ok(Verdict::Machine(header, claims)),
                        Err(error) => error,
                    };
                    self.count_machine(&error);
                    return match error {
                        // ingress-nginx turns any answer but 2xx, 401 and 403 into a 500.
                        ProxyError::MixedCredentials => {
                            denied(Some(kind), ProxyError::Forbidden("mixed_credentials"))
                        }
                        e if e.fails_closed() || matches!(e, ProxyError::Oidc(_)) => Err(e),
                        e => denied(Some(kind), e),
                    };
                }
                Ok(Offered::Nothing) => {}
                Err(error) => {
                    self.count_machine(&error);
                    return denied(Some(kind), error);
                }
            }
        }
        if rules.csrf {
            // CSRF first: a forged request learns nothing, not even whether a session exists.
            if let Err(e) = require_csrf_header(req) {
                return denied(Some(kind), e);
            }
            if let Err(e) = live.origins.check_request_origin(req, &original.host) {
                return denied(Some(kind), e);
            }
        }
        let login = (without_session == WithoutSession::LoginNavigations
            && is_navigation(req, &original.method)
            && policy.controller != IngressController::Nginx)
            .then(|| login_url(live.hosts.scheme(), &original));
        self.admit(req, host, &original.host, kind, login, started)
            .await
    }

    /// The answer's assertion header when the policy sends one: the session's, or empty (so the
    /// ingress overwrites a client's copy) on a public path.
    fn with_assertion(
        &self,
        reply: Reply,
        policy: &IngressPolicy,
        assertion: Option<HeaderValue>,
    ) -> Reply {
        match (&self.assertions, policy.assertion) {
            (Some(assertions), true) => {
                reply.header_value(assertions.header().clone(), assertion.unwrap_or(EMPTY))
            }
            _ => reply,
        }
    }

    /// A session (refreshed first when due) that the host's access rules admit; without one,
    /// `login` is where the browser is sent, if anywhere.
    async fn admit(
        &self,
        req: &RequestHeader,
        host: &HostPolicy,
        host_name: &str,
        kind: RouteKind,
        login: Option<String>,
        started: Instant,
    ) -> Result<Verdict, ProxyError> {
        let Some(hot) = self.fresh_session(&req.headers, started).await? else {
            return Ok(Verdict::Unauthenticated { kind, login });
        };
        if let Some(access) = &host.access {
            if let Err(error) = check_access(access, &hot.claims) {
                let sub = hot.claims.get("sub").and_then(Value::as_str);
                crate::telemetry::audit("ingress_auth", "failure", error.reason(), sub);
                return Ok(Verdict::Denied {
                    kind: Some(kind),
                    error,
                });
            }
        }
        // A token with bytes a header cannot carry would be a broken OP: refuse, never mangle.
        let bearer = hot.bearer.clone().ok_or(NOT_A_HEADER_VALUE)?;
        Ok(Verdict::Allow(bearer, hot, host_name.to_string()))
    }

    /// The request's cookies without portcullis's own, for the ingress to put in their place
    /// upstream (empty: it then sends none).
    fn forwardable_cookies(&self, headers: &HeaderMap) -> HeaderValue {
        self.cookies
            .forwardable_cookies(headers)
            .and_then(|c| HeaderValue::try_from(c).ok())
            .unwrap_or(EMPTY)
    }
}

/// A refusal on a path is written as its kind writes errors (a page's for the person whose
/// browser Traefik or Envoy shows it to); one before any path is chosen is for the controller.
fn answer_format(kind: Option<RouteKind>) -> Format {
    kind.map_or(Format::Json, |k| RoutePolicy::of(k).errors)
}

/// `Authorization` and every identity header, empty when there is nothing to say: the ingress
/// copies each named header from the answer, replacing whatever the client sent under it.
fn answer_headers(
    reply: Reply,
    bearer: Option<HeaderValue>,
    policy: &IngressPolicy,
    claims: Option<&Map<String, Value>>,
) -> Reply {
    let reply = reply.header_value(http::header::AUTHORIZATION, bearer.unwrap_or(EMPTY));
    policy.identity.iter().fold(reply, |reply, h| {
        let value = claims.map_or(EMPTY, |c| claim_value(c, &h.claim));
        reply.header_value(h.name.clone(), value)
    })
}

/// Where a navigation without a session is sent: the login on the same host, returning to the
/// page asked for (its root if that is not a path the login would return to) by its absolute
/// URL, since a login on a wildcard-named host ends on `public_url`'s host.
fn login_url(scheme: &str, original: &Original) -> String {
    let path = validate_return_to(&original.target).unwrap_or("/");
    let origin = format!("{scheme}://{}", original.authority);
    let encoded: String =
        url::form_urlencoded::byte_serialize(format!("{origin}{path}").as_bytes()).collect();
    format!("{origin}/bff/login?rd={encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[(&str, &[(&str, RouteKind)])]) -> IngressPolicy {
        IngressPolicy::new(&IngressAuthConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
            controller: IngressController::Nginx,
            trusted_ingress: vec![IpNetwork::new("10.0.0.0".parse().unwrap(), 8).unwrap()],
            identity_headers: Vec::new(),
            identity_assertion: false,
            hosts: hosts
                .iter()
                .map(|(h, paths)| crate::config::IngressHost {
                    host: match h.strip_prefix("*") {
                        Some(suffix) => HostPattern::Under(suffix.to_string()),
                        None => HostPattern::Exact(h.to_string()),
                    },
                    access: None,
                    machine_clients: None,
                    paths: paths
                        .iter()
                        .map(|(p, k)| PathRule {
                            prefix: p.to_string(),
                            kind: *k,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    #[test]
    fn hosts_and_paths_pick_the_most_specific_rule() {
        let p = policy(&[
            ("*.example.com", &[("/", RouteKind::Public)]),
            (
                "app.example.com",
                &[("/", RouteKind::Page), ("/api/", RouteKind::Api)],
            ),
        ]);
        let app = p.host("app.example.com").unwrap();
        assert_eq!(app.kind_for("/api/x"), Some(RouteKind::Api));
        assert_eq!(app.kind_for("/apix"), Some(RouteKind::Page));
        assert_eq!(app.kind_for("/API/x"), Some(RouteKind::Api));
        assert_eq!(
            p.host("other.example.com").unwrap().kind_for("/x"),
            Some(RouteKind::Public)
        );
        assert!(p.host("example.com").is_none());
        assert!(p.host("app.example.com.evil.test").is_none());
    }

    #[test]
    fn only_configured_callers_are_trusted() {
        let p = policy(&[]);
        assert!(p.trusts(Some("10.1.2.3".parse().unwrap())));
        assert!(p.trusts(Some("::ffff:10.1.2.3".parse().unwrap())));
        assert!(!p.trusts(Some("192.0.2.1".parse().unwrap())));
        assert!(!p.trusts(None));
    }
}
