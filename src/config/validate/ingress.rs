//! `ingress_auth.*`: the auth endpoint an ingress controller calls, who may call it, what it
//! answers per host and path; and `session.cookie_domain`, which decides whether those hosts
//! share one session.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::telemetry::parse_network;
use super::Checker;
use crate::config::raw::{RawIngressAuth, RawIngressHost};
use crate::config::types::*;

const DEFAULT_INGRESS_AUTH_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4482));

/// The identity headers when none are configured: oauth2-proxy's names, so ingress annotations
/// written for it keep working.
const DEFAULT_IDENTITY_HEADERS: [(&str, &str); 4] = [
    ("x-auth-request-user", "sub"),
    ("x-auth-request-email", "email"),
    ("x-auth-request-preferred-username", "preferred_username"),
    ("x-auth-request-groups", ""),
];

/// Headers an identity header may not be: portcullis's own in the answer, and those that frame,
/// route or redirect a message (a claim must never choose the upstream `Host`, nor break the
/// answer's framing).
const RESERVED_HEADERS: [&str; 17] = [
    "authorization",
    "cookie",
    "cache-control",
    "set-cookie",
    "host",
    "location",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
];

/// oauth2-proxy's header names, so ingress annotations written for it keep working.
fn default_identity_headers(groups_claim: &str) -> Vec<IdentityHeader> {
    DEFAULT_IDENTITY_HEADERS
        .iter()
        .map(|(name, claim)| IdentityHeader {
            name: http::HeaderName::from_static(name),
            claim: if claim.is_empty() {
                groups_claim
            } else {
                claim
            }
            .to_string(),
        })
        .collect()
}

impl Checker<'_> {
    pub(super) fn ingress_auth(
        &mut self,
        raw: RawIngressAuth,
        global_access: &AccessConfig,
    ) -> Option<IngressAuthConfig> {
        if !raw.enabled.unwrap_or(false) {
            self.refuse_settings_of_a_disabled_mode(&raw);
            return None;
        }
        let listen = self.socket_addr(
            "ingress_auth.listen",
            raw.listen.as_deref(),
            DEFAULT_INGRESS_AUTH_LISTEN,
        );
        let controller = match raw.controller.as_deref() {
            Some("nginx") => IngressController::Nginx,
            Some("traefik") => IngressController::Traefik,
            Some("envoy") => IngressController::Envoy,
            Some(other) => {
                self.problem(
                    "ingress_auth.controller",
                    format!("{other:?} is not a controller (use nginx, traefik or envoy)"),
                );
                IngressController::Nginx
            }
            None => {
                self.problem(
                    "ingress_auth.controller",
                    "is required: nginx (ingress-nginx auth-url), traefik (ForwardAuth) or envoy (ext_authz, Envoy Gateway)",
                );
                IngressController::Nginx
            }
        };
        let trusted_ingress = self.trusted_ingress(raw.trusted_ingress.unwrap_or_default());
        let identity_headers = match raw.identity_headers.as_ref() {
            Some(raw) => self.identity_headers("ingress_auth.identity_headers", raw),
            None => default_identity_headers(&global_access.groups_claim),
        };
        let hosts = self.ingress_hosts(raw.hosts, global_access);
        Some(IngressAuthConfig {
            listen,
            controller,
            trusted_ingress,
            identity_headers,
            identity_assertion: raw.identity_assertion.unwrap_or(false),
            hosts,
        })
    }

    /// Settings under a mode that is off would silently do nothing: say so.
    fn refuse_settings_of_a_disabled_mode(&mut self, raw: &RawIngressAuth) {
        let set = raw.listen.is_some()
            || raw.controller.is_some()
            || raw.trusted_ingress.is_some()
            || raw.identity_headers.is_some()
            || raw.identity_assertion.is_some()
            || !raw.hosts.is_empty();
        if set {
            self.problem(
                "ingress_auth.enabled",
                "is not true, so the other ingress_auth keys would do nothing (set enabled: true, or remove them)",
            );
        }
    }

    fn trusted_ingress(&mut self, entries: Vec<String>) -> Vec<IpNetwork> {
        if entries.is_empty() {
            self.problem(
                "ingress_auth.trusted_ingress",
                "must list the ingress controller's addresses (e.g. the pod network \"10.0.0.0/8\"): the auth endpoint answers no one else, and believes no one else's description of a request",
            );
        }
        let mut networks = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_network(entry) {
                Ok(network) => networks.push(network),
                Err(message) => self.problem(format!("ingress_auth.trusted_ingress[{i}]"), message),
            }
        }
        networks
    }

    /// Header name → claim, as `ingress_auth.identity_headers` and `routes[].identity_headers`
    /// write it; `section` names the key in problems.
    pub(super) fn identity_headers(
        &mut self,
        section: &str,
        raw: &serde_yaml::Mapping,
    ) -> Vec<IdentityHeader> {
        let mut headers: Vec<IdentityHeader> = Vec::new();
        for (name, claim) in raw {
            let (Some(name), Some(claim)) = (name.as_str(), claim.as_str()) else {
                self.problem(
                    section,
                    "must map header names to claim names (e.g. X-Auth-Request-Email: email)",
                );
                continue;
            };
            let key = format!("{section}.{name}");
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                self.problem(key, "is not a header name");
                continue;
            };
            let reserved = RESERVED_HEADERS.contains(&header.as_str())
                || header.as_str().starts_with("x-forwarded-")
                || header.as_str().starts_with("content-");
            if reserved || headers.iter().any(|h| h.name == header) {
                self.problem(
                    key,
                    "cannot carry a claim (Authorization, Cookie and Cache-Control are the answer's own; framing, routing and forwarding headers are never a claim's; each header once)",
                );
                continue;
            }
            if claim.is_empty() {
                self.problem(key, "must name a claim (e.g. email)");
                continue;
            }
            headers.push(IdentityHeader {
                name: header,
                claim: claim.to_string(),
            });
        }
        headers
    }

    fn ingress_hosts(
        &mut self,
        raw: Vec<RawIngressHost>,
        global_access: &AccessConfig,
    ) -> Vec<IngressHost> {
        if raw.is_empty() {
            self.problem(
                "ingress_auth.hosts",
                "must list the hosts the ingress asks about, each with its paths (e.g. host: app.example.com, paths: [{path: /, kind: page}])",
            );
        }
        let mut hosts: Vec<IngressHost> = Vec::new();
        for (i, raw_host) in raw.into_iter().enumerate() {
            let key = |k: &str| format!("ingress_auth.hosts[{i}].{k}");
            let pattern = self.host_pattern(&key("host"), raw_host.host.as_deref());
            if let Some(p) = &pattern {
                if let Some(j) = hosts.iter().position(|h| &h.host == p) {
                    self.problem(
                        key("host"),
                        format!("is the same host as ingress_auth.hosts[{j}].host (list each host once)"),
                    );
                }
            }
            let access = raw_host
                .access
                .map(|a| self.access_rules(&key("access"), a, &global_access.groups_claim));
            let machine_clients = raw_host
                .machine_clients
                .map(|m| self.machine_clients(&key("machine_clients"), m));
            let paths = self.ingress_paths(&key("paths"), raw_host.paths);
            if let Some(host) = pattern {
                hosts.push(IngressHost {
                    host,
                    access,
                    machine_clients,
                    paths,
                });
            }
        }
        hosts
    }

    fn wildcards_need_a_cookie_domain(
        &mut self,
        ingress: Option<&IngressAuthConfig>,
        routes: &[RouteConfig],
    ) {
        let fix = "names hosts by a wildcard and needs a session, but without session.cookie_domain its logins end on public_url's host, whose cookie it never sees (set session.cookie_domain, or name the hosts exactly)";
        for (i, host) in ingress.map_or(&[][..], |a| &a.hosts).iter().enumerate() {
            let needs_session = host.paths.iter().any(|p| p.kind != RouteKind::Public);
            if host.host.exact().is_none() && needs_session {
                self.problem(format!("ingress_auth.hosts[{i}].host"), fix);
            }
        }
        for (i, route) in routes.iter().enumerate() {
            let wildcard = route.host.as_ref().is_some_and(|h| h.exact().is_none());
            let needs_session = route.session != Some(SessionPolicy::None)
                && (route.kind != RouteKind::Public || route.session.is_some());
            if wildcard && needs_session {
                self.problem(format!("routes[{i}].host"), fix);
            }
        }
    }

    fn ingress_paths(
        &mut self,
        key: &str,
        raw: Vec<crate::config::raw::RawIngressPath>,
    ) -> Vec<PathRule> {
        if raw.is_empty() {
            self.problem(
                key,
                "must list at least one path (e.g. {path: /, kind: page}); paths not listed are refused",
            );
        }
        let mut rules: Vec<PathRule> = Vec::new();
        for (j, p) in raw.into_iter().enumerate() {
            let path_key = format!("{key}[{j}].path");
            let prefix = match p.path {
                Some(path)
                    if path.starts_with('/') && !path.contains(['?', '#', '%', '\\', ';']) =>
                {
                    if rules.iter().any(|r| r.prefix == path) {
                        self.problem(
                            &path_key,
                            format!("{path:?} appears twice (each path once)"),
                        );
                    }
                    Some(path)
                }
                Some(path) => {
                    self.problem(
                        &path_key,
                        format!("{path:?} must be a plain path starting with \"/\""),
                    );
                    None
                }
                None => {
                    self.problem(&path_key, "is required (a path prefix such as \"/api/\")");
                    None
                }
            };
            let kind = self.route_kind(&format!("{key}[{j}].kind"), p.kind.as_deref(), false);
            if let (Some(prefix), Some(kind)) = (prefix, kind) {
                rules.push(PathRule { prefix, kind });
            }
        }
        rules
    }

    /// Every host that needs a session must be able to get its cookie: `session.cookie_domain`
    /// must cover it; without one, a wildcard-named host cannot, since its logins end on
    /// `public_url`'s host (an OP registers redirect URIs exactly, so they cannot end on it).
    pub(super) fn cookie_domain_covers(
        &mut self,
        session: &SessionConfig,
        public_host: &str,
        ingress: Option<&IngressAuthConfig>,
        routes: &[RouteConfig],
    ) {
        let Some(domain) = &session.cookie_domain else {
            self.wildcards_need_a_cookie_domain(ingress, routes);
            return;
        };
        let covers = |host: &str| host == domain || host.ends_with(&format!(".{domain}"));
        if !covers(public_host) {
            self.problem(
                "session.cookie_domain",
                format!("{domain:?} does not cover public_url's host {public_host:?} (use a parent domain of it)"),
            );
        }
        for (i, host) in ingress.map_or(&[][..], |a| &a.hosts).iter().enumerate() {
            let name = match &host.host {
                HostPattern::Exact(name) => name.as_str(),
                HostPattern::Under(suffix) => &suffix[1..],
            };
            if !covers(name) {
                self.problem(
                    format!("ingress_auth.hosts[{i}].host"),
                    format!("{name:?} is not under session.cookie_domain {domain:?}: the session cookie would never reach it"),
                );
            }
        }
    }
}
