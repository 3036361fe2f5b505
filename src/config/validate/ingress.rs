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

/// Headers the ingress copies upstream from portcullis's answer besides the identity headers;
/// an identity header may not take their place.
const ANSWER_HEADERS: [&str; 3] = ["authorization", "cookie", "cache-control"];

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
        let identity_headers =
            self.identity_headers(raw.identity_headers.as_ref(), &global_access.groups_claim);
        let hosts = self.ingress_hosts(raw.hosts, global_access);
        Some(IngressAuthConfig {
            listen,
            controller,
            trusted_ingress,
            identity_headers,
            hosts,
        })
    }

    /// Settings under a mode that is off would silently do nothing: say so.
    fn refuse_settings_of_a_disabled_mode(&mut self, raw: &RawIngressAuth) {
        let set = raw.listen.is_some()
            || raw.controller.is_some()
            || raw.trusted_ingress.is_some()
            || raw.identity_headers.is_some()
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

    fn identity_headers(
        &mut self,
        raw: Option<&serde_yaml::Mapping>,
        groups_claim: &str,
    ) -> Vec<IdentityHeader> {
        let Some(raw) = raw else {
            return DEFAULT_IDENTITY_HEADERS
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
                .collect();
        };
        let mut headers: Vec<IdentityHeader> = Vec::new();
        for (name, claim) in raw {
            let (Some(name), Some(claim)) = (name.as_str(), claim.as_str()) else {
                self.problem(
                    "ingress_auth.identity_headers",
                    "must map header names to claim names (e.g. X-Auth-Request-Email: email)",
                );
                continue;
            };
            let key = format!("ingress_auth.identity_headers.{name}");
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                self.problem(key, "is not a header name");
                continue;
            };
            if ANSWER_HEADERS.contains(&header.as_str()) || headers.iter().any(|h| h.name == header)
            {
                self.problem(
                    key,
                    "is already in the answer (Authorization, Cookie and Cache-Control are portcullis's; each header once)",
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
            let paths = self.ingress_paths(&key("paths"), raw_host.paths);
            if let Some(host) = pattern {
                hosts.push(IngressHost {
                    host,
                    access,
                    paths,
                });
            }
        }
        hosts
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
            let kind = self.route_kind(&format!("{key}[{j}].kind"), p.kind.as_deref());
            if let (Some(prefix), Some(kind)) = (prefix, kind) {
                rules.push(PathRule { prefix, kind });
            }
        }
        rules
    }

    /// `session.cookie_domain` must cover every host that logs in or asks about a session,
    /// else the browser would never send the cookie there.
    pub(super) fn cookie_domain_covers(
        &mut self,
        session: &SessionConfig,
        public_host: &str,
        ingress: Option<&IngressAuthConfig>,
    ) {
        let Some(domain) = &session.cookie_domain else {
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
