//! `routes`: path prefixes, upstream URLs, kinds and per-route methods.

use super::{is_loopback_host, Checker};
use crate::config::raw::{RawMachineClients, RawRoute};
use crate::config::types::*;

impl Checker<'_> {
    /// `may_be_empty`: in ingress-auth mode portcullis may proxy nothing itself.
    pub(super) fn routes(
        &mut self,
        raw: Vec<RawRoute>,
        may_be_empty: bool,
        groups_claim: &str,
    ) -> Option<Vec<RouteConfig>> {
        if raw.is_empty() && !may_be_empty {
            self.problem(
                "routes",
                "needs at least one route (e.g. path \"/\" to your SPA, kind page)",
            );
            return None;
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            if let Some(route) = self.route(i, r, groups_claim) {
                let same = |o: &RouteConfig| o.prefix == route.prefix && o.host == route.host;
                if let Some(j) = routes.iter().position(same) {
                    self.problem(
                        format!("routes[{i}].path"),
                        format!(
                            "{:?} on the same host as routes[{j}]: routes[{i}] could never be reached (each host and path once)",
                            route.prefix
                        ),
                    );
                }
                routes.push(route);
            }
        }
        Some(routes)
    }

    /// `groups_claim`: the global `access.groups_claim`, the default of the route's own rules.
    fn route(&mut self, i: usize, raw: RawRoute, groups_claim: &str) -> Option<RouteConfig> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let prefix = match raw.path.clone() {
            Some(p) if p.starts_with('/') && !p.contains(['?', '#', '%', '\\']) => {
                if p == "/bff" || p.starts_with("/bff/") {
                    self.problem(
                        key("path"),
                        "must not be under /bff/ (portcullis owns those endpoints)",
                    );
                }
                Some(p)
            }
            Some(p) => {
                self.problem(
                    key("path"),
                    format!("{p:?} must be a plain path starting with \"/\""),
                );
                None
            }
            None => {
                self.problem(key("path"), "is required (a path prefix such as \"/api/\")");
                None
            }
        };
        let kind = self.route_kind(&key("kind"), raw.kind.as_deref(), true);
        let target = if kind == Some(RouteKind::Static) {
            self.static_site(&key, &raw)
                .map(|site| RouteTarget::Static(std::sync::Arc::new(site)))
        } else {
            self.static_keys_absent(&key, &raw);
            self.upstream_target(&key, &raw).map(RouteTarget::Upstream)
        };
        let host = match raw.host.as_deref() {
            Some(h) => Some(self.host_pattern(&key("host"), Some(h))?),
            None => None,
        };
        let session = match raw.policy.as_deref() {
            None => None,
            Some("none") => Some(SessionPolicy::None),
            Some("user") => Some(SessionPolicy::User),
            Some("optional") => Some(SessionPolicy::Optional),
            Some(other) => {
                self.problem(
                    key("policy"),
                    format!("{other:?} is not a policy (use none, user or optional)"),
                );
                None
            }
        };
        let identity_headers = raw
            .identity_headers
            .as_ref()
            .map(|h| self.identity_headers(&key("identity_headers"), h))
            .unwrap_or_default();
        let access = raw
            .access
            .map(|a| self.access_rules(&key("access"), a, groups_claim));
        let methods = raw
            .methods
            .as_ref()
            .map(|m| self.methods(&key("methods"), m));
        // A static route's dpop, identity_assertion and machine_clients were refused above;
        // not reported twice.
        let is_static = matches!(target, Some(RouteTarget::Static(_)));
        let (dpop, identity_assertion) =
            (raw.dpop && !is_static, raw.identity_assertion && !is_static);
        let machine_clients = raw
            .machine_clients
            .filter(|_| !is_static)
            .map(|m| self.machine_clients(&key("machine_clients"), m));
        let looks_up_session = kind.is_some_and(|k| k.looks_up_session(session));
        if machine_clients.is_some() && !looks_up_session {
            self.problem(
                key("machine_clients"),
                "has no effect on a route that needs no session (kind public or policy none): such a route already admits everyone",
            );
        }
        // Claim rules judge a session's claims: on a route that looks none up they would never
        // be checked, and the route would admit everyone.
        if access.is_some() && !looks_up_session && kind.is_some() {
            self.problem(
                key("access"),
                "is never checked on a route that looks no session up (kind public or static, or policy none): give the route policy user (or optional), or remove the rules",
            );
        }
        Some(RouteConfig {
            host,
            prefix: prefix?,
            target: target?,
            kind: kind?,
            methods,
            websocket: raw.websocket,
            allow_ambiguous_paths: raw.allow_ambiguous_paths,
            allow_chunked_requests: raw.allow_chunked_requests,
            session,
            access,
            identity_headers,
            dpop,
            identity_assertion,
            machine_clients,
        })
    }

    /// `routes[].machine_clients`: an audience is required, since a token for any API of the
    /// OP's would otherwise do; extra issuers are URLs like `oidc.issuer`.
    pub(super) fn machine_clients(
        &mut self,
        key: &str,
        raw: RawMachineClients,
    ) -> MachineClientsConfig {
        let audiences = raw.audiences.unwrap_or_default();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            self.problem(
                format!("{key}.audiences"),
                "must list at least one non-empty audience (the `aud` the issuer gives tokens for this API, e.g. \"https://api.example.com\")",
            );
        }
        let issuers = raw.issuers.unwrap_or_default();
        for (i, issuer) in issuers.iter().enumerate() {
            let key = format!("{key}.issuers[{i}]");
            // Its discovery document and keys decide which tokens are admitted: fetched in the
            // clear, anyone on the path could add a key of their own.
            if let Some(url) = self.url(&key, issuer) {
                if url.scheme() == "http" && !is_loopback_host(&url) {
                    self.problem(
                        key,
                        format!("{issuer:?}: plain http is accepted only for loopback hosts (its keys decide which tokens pass: use https)"),
                    );
                }
            }
        }
        let cache_ttl = self.duration(&format!("{key}.cache_ttl"), raw.cache_ttl.as_deref(), "30s");
        if cache_ttl > MACHINE_CACHE_TTL_MAX {
            self.problem(
                format!("{key}.cache_ttl"),
                "must be at most 10m: a revoked token stays admitted this long",
            );
        }
        MachineClientsConfig {
            audiences,
            issuers,
            introspection: raw.introspection,
            cache_ttl,
        }
    }

    /// A machine-client audience that is portcullis's own client id would admit the ID tokens
    /// the OP issues to portcullis at every login.
    pub(super) fn machine_client_audiences(
        &mut self,
        routes: &[RouteConfig],
        ingress: Option<&IngressAuthConfig>,
        client_id: &str,
    ) {
        let on_routes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("routes[{i}]"), r.machine_clients.as_ref()));
        let on_hosts = ingress
            .map_or(&[][..], |a| &a.hosts)
            .iter()
            .enumerate()
            .map(|(i, h)| {
                (
                    format!("ingress_auth.hosts[{i}]"),
                    h.machine_clients.as_ref(),
                )
            });
        for (at, machine) in on_routes.chain(on_hosts) {
            if machine.is_some_and(|m| m.audiences.iter().any(|a| a == client_id)) {
                self.problem(
                    format!("{at}.machine_clients.audiences"),
                    format!("{client_id:?} is oidc.client_id: the ID tokens portcullis receives carry that audience (name the API's own audience instead)"),
                );
            }
        }
    }

    /// `api`, `public` or `page`, for proxied routes and ingress-auth paths alike; `static`
    /// only where portcullis answers the route itself (`routes[]`, not an ingress's paths).
    pub(super) fn route_kind(
        &mut self,
        key: &str,
        value: Option<&str>,
        may_be_static: bool,
    ) -> Option<RouteKind> {
        let choices = if may_be_static {
            "api, public, page or static"
        } else {
            "api, public or page"
        };
        match value {
            Some("api") => Some(RouteKind::Api),
            Some("public") => Some(RouteKind::Public),
            Some("page") => Some(RouteKind::Page),
            Some("static") if may_be_static => Some(RouteKind::Static),
            Some(other) => {
                self.problem(
                    key,
                    format!("{other:?} is not a route kind (use {choices})"),
                );
                None
            }
            None => {
                self.problem(key, format!("is required ({choices})"));
                None
            }
        }
    }

    fn upstream_target(
        &mut self,
        key: &dyn Fn(&str) -> String,
        raw: &RawRoute,
    ) -> Option<Upstream> {
        match raw.upstream.as_deref() {
            Some(u) => self.upstream(&key("upstream"), u, raw.allow_plaintext_http),
            None => {
                self.problem(
                    key("upstream"),
                    "is required (e.g. \"http://127.0.0.1:8080\")",
                );
                None
            }
        }
    }

    /// A static route's directory must exist when the configuration is loaded (and reloaded):
    /// a typo fails `check` and start-up rather than every request.
    fn static_site(&mut self, key: &dyn Fn(&str) -> String, raw: &RawRoute) -> Option<StaticSite> {
        let root = match raw.root.as_deref() {
            Some(r) if !r.is_empty() => self.static_root(&key("root"), r),
            _ => {
                self.problem(
                    key("root"),
                    "is required with kind static (the directory holding the SPA's build, e.g. \"/srv/spa\")",
                );
                None
            }
        };
        let index = self.static_index(&key("index"), raw.index.as_deref(), root.as_deref());
        self.upstream_keys_absent(key, raw);
        let immutable_paths = raw.immutable_paths.clone().unwrap_or_default();
        for p in &immutable_paths {
            if !p.starts_with('/')
                || p.contains(['?', '#', '%', '\\'])
                || p.split('/').any(|s| s == "..")
            {
                self.problem(
                    key("immutable_paths"),
                    format!("{p:?} must be a plain path under the route, starting with \"/\" (e.g. \"/assets/\")"),
                );
            }
        }
        Some(StaticSite {
            root: root?,
            index: index?,
            fallback: raw.fallback.unwrap_or(true),
            immutable_hashed: raw.immutable_hashed.unwrap_or(true),
            immutable_paths,
            serve_source_maps: raw.serve_source_maps.unwrap_or(false),
        })
    }

    /// A plain file name that must be a file in the root (when the root itself is usable).
    fn static_index(
        &mut self,
        key: &str,
        name: Option<&str>,
        root: Option<&std::path::Path>,
    ) -> Option<String> {
        let name = name.unwrap_or("index.html");
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            self.problem(
                key,
                format!("{name:?} must be a file name in the root (no path, not hidden)"),
            );
            return None;
        }
        if let Some(file) = root.map(|r| r.join(name)).filter(|f| !f.is_file()) {
            self.problem(
                key,
                format!(
                    "{} is not a file (build the SPA into the root, or name its index file)",
                    file.display()
                ),
            );
        }
        Some(name.to_string())
    }

    /// The root, relative to the configuration file's directory, resolved to its canonical
    /// form so that the served files can be held to it.
    fn static_root(&mut self, key: &str, path: &str) -> Option<std::path::PathBuf> {
        let full = self.base_dir.join(path);
        match std::fs::canonicalize(&full) {
            Ok(root) if root.is_dir() => Some(root),
            Ok(_) => {
                self.problem(key, format!("{} is not a directory", full.display()));
                None
            }
            Err(e) => {
                self.problem(
                    key,
                    format!(
                        "cannot open {}: {e} (check the path and its permissions)",
                        full.display()
                    ),
                );
                None
            }
        }
    }

    /// Keys that only mean something where a request is forwarded.
    fn upstream_keys_absent(&mut self, key: &dyn Fn(&str) -> String, raw: &RawRoute) {
        let present = [
            ("upstream", raw.upstream.is_some()),
            ("allow_plaintext_http", raw.allow_plaintext_http),
            ("methods", raw.methods.is_some()),
            ("websocket", raw.websocket),
            ("allow_ambiguous_paths", raw.allow_ambiguous_paths),
            ("allow_chunked_requests", raw.allow_chunked_requests),
            ("identity_headers", raw.identity_headers.is_some()),
            ("dpop", raw.dpop),
            ("identity_assertion", raw.identity_assertion),
            ("machine_clients", raw.machine_clients.is_some()),
        ];
        for (name, _) in present.iter().filter(|(_, set)| *set) {
            self.problem(
                key(name),
                "does not apply to kind static (portcullis serves its files itself: GET and HEAD, nothing forwarded; remove it)",
            );
        }
    }

    fn static_keys_absent(&mut self, key: &dyn Fn(&str) -> String, raw: &RawRoute) {
        let present = [
            ("root", raw.root.is_some()),
            ("index", raw.index.is_some()),
            ("fallback", raw.fallback.is_some()),
            ("immutable_hashed", raw.immutable_hashed.is_some()),
            ("immutable_paths", raw.immutable_paths.is_some()),
            ("serve_source_maps", raw.serve_source_maps.is_some()),
        ];
        for (name, _) in present.iter().filter(|(_, set)| *set) {
            self.problem(
                key(name),
                "applies only to kind static (remove it, or set kind: static)",
            );
        }
    }

    fn upstream(&mut self, key: &str, value: &str, allow_plaintext: bool) -> Option<Upstream> {
        let url = self.url(key, value)?;
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            self.problem(
                key,
                "must be scheme://host:port only (paths are forwarded unchanged)",
            );
        }
        let tls = url.scheme() == "https";
        if !tls && !is_loopback_host(&url) && !allow_plaintext {
            self.problem(
                key,
                "plain http to a non-loopback host would send bearer tokens unencrypted (use https, or set allow_plaintext_http: true on this route for in-cluster traffic)",
            );
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => {
                self.problem(key, "has no host");
                return None;
            }
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Some(Upstream { host, port, tls })
    }

    fn methods(&mut self, key: &str, names: &[String]) -> Vec<http::Method> {
        let mut out = Vec::new();
        for name in names {
            match http::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(m) if matches!(m.as_str(), "TRACE" | "TRACK" | "CONNECT") => {
                    self.problem(key, format!("{name:?} is never proxied (remove it)"))
                }
                Ok(m) => out.push(m),
                Err(_) => self.problem(key, format!("{name:?} is not an HTTP method")),
            }
        }
        if out.is_empty() && names.is_empty() {
            self.problem(
                key,
                "must list at least one method (or be left out to allow all)",
            );
        }
        out
    }
}
