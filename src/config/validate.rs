//! Raw → validated. Collects every problem instead of stopping at the first, and phrases each
//! as "what is wrong (how to fix it)" under the key path it belongs to. The only I/O is reading
//! secret files, done through the `read_file` argument so tests can supply their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::error::Problem;
use super::raw::{RawConfig, RawOidc, RawRoute, RawSession};
use super::redis_url::parse_redis_url;
use super::types::*;
use crate::secret::Secret;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:4480";
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:4481";
pub const DEFAULT_COOKIE_NAME: &str = "__Host-portcullis";
const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
const DEFAULT_LOGIN_PARAMS: [&str; 5] = [
    "prompt",
    "login_hint",
    "ui_locales",
    "max_age",
    "acr_values",
];
/// Parameters portcullis itself owns in the authorization request; letting the browser set
/// any of them would undo PKCE, state or the redirect-URI binding (RFC 9700 §2.1).
const RESERVED_LOGIN_PARAMS: [&str; 13] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
    "claims",
    "resource",
];

pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

struct Checker<'a> {
    problems: Vec<Problem>,
    base_dir: PathBuf,
    read_file: ReadFile<'a>,
}

pub fn validate(
    raw: RawConfig,
    source: &Path,
    read_file: ReadFile<'_>,
) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
        base_dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        read_file,
    };
    let listen = c.socket_addr("listen", raw.listen.as_deref(), DEFAULT_LISTEN);
    let admin_listen = c.socket_addr(
        "admin_listen",
        raw.admin_listen.as_deref(),
        DEFAULT_ADMIN_LISTEN,
    );
    if listen == admin_listen {
        c.problem(
            "admin_listen",
            "must differ from listen (the admin port is never browser-facing)",
        );
    }
    let public = c.public_url(raw.public_url.as_deref());
    let public_origin = public.as_ref().map(origin_of).unwrap_or_default();
    let oidc = c.oidc(raw.oidc, &public_origin);
    let session = c.session(raw.session);
    let routes = c.routes(raw.routes);
    let server = c.server(&raw.server);
    let log = c.log(&raw.log);
    let security = c.security(raw.security);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    // Every Option below is Some: a None would have recorded a problem above.
    let (
        Some(public),
        Some(oidc),
        Some(session),
        Some(routes),
        Some(server),
        Some(log),
        Some(security),
    ) = (public, oidc, session, routes, server, log, security)
    else {
        return Err(vec![Problem::new("", "invalid configuration")]);
    };
    let redirect_uri = match Url::parse(&format!("{public_origin}/bff/callback")) {
        Ok(u) => u,
        Err(_) => {
            return Err(vec![Problem::new(
                "public_url",
                "cannot build the redirect URI from it",
            )])
        }
    };
    Ok(Config {
        source: source.to_path_buf(),
        listen,
        admin_listen,
        public_is_https: public.scheme() == "https",
        public_origin,
        redirect_uri,
        oidc,
        session,
        routes,
        server,
        log,
        security,
    })
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => is_loopback_name(d),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `localhost` or a loopback address literal: traffic that never leaves the machine (or pod).
pub fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Checker<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn socket_addr(&mut self, key: &str, value: Option<&str>, default: &str) -> String {
        let value = value.unwrap_or(default);
        if value.parse::<SocketAddr>().is_err() {
            self.problem(
                key,
                format!("{value:?} is not an address (write IP:PORT, e.g. {default:?})"),
            );
        }
        value.to_string()
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(key, "must be longer than zero (e.g. \"30s\", \"5m\")");
                Duration::from_secs(1)
            }
            Err(_) => {
                self.problem(
                    key,
                    format!("{text:?} is not a duration (write e.g. \"90s\", \"30m\", \"12h\")"),
                );
                Duration::from_secs(1)
            }
        }
    }

    fn url(&mut self, key: &str, value: &str) -> Option<Url> {
        match Url::parse(value) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
            Ok(_) => {
                self.problem(key, format!("{value:?} must be an http(s) URL"));
                None
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("{value:?} is not a URL: {e} (write e.g. \"https://host.example\")"),
                );
                None
            }
        }
    }

    fn public_url(&mut self, value: Option<&str>) -> Option<Url> {
        let Some(value) = value else {
            self.problem(
                "public_url",
                "is required (the origin the browser sees, e.g. \"https://app.example.com\")",
            );
            return None;
        };
        let url = self.url("public_url", value)?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            self.problem("public_url", "must be an origin without path, query or fragment (e.g. \"https://app.example.com\")");
        }
        if url.scheme() == "http" && !is_loopback_host(&url) {
            self.problem(
                "public_url",
                "plain http is accepted only for loopback hosts (serve the app over https)",
            );
        }
        Some(url)
    }

    fn oidc(&mut self, raw: Option<RawOidc>, public_origin: &str) -> Option<OidcConfig> {
        let Some(raw) = raw else {
            self.problem(
                "oidc",
                "is required (set oidc.issuer, oidc.client_id and a client secret)",
            );
            return None;
        };
        let issuer = self.issuer(raw.issuer.as_deref(), raw.allow_plaintext_http);
        let client_id = match raw.client_id.as_deref() {
            Some(id) if !id.trim().is_empty() => Some(id.to_string()),
            _ => {
                self.problem(
                    "oidc.client_id",
                    "is required (the client id registered at the identity provider)",
                );
                None
            }
        };
        let client_secret =
            self.client_secret(raw.client_secret, raw.client_secret_file.as_deref());
        let scopes = raw
            .scopes
            .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
        if !scopes.iter().any(|s| s == "openid") {
            self.problem(
                "oidc.scopes",
                "must include \"openid\" (portcullis is an OpenID Connect client)",
            );
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace()))
        {
            self.problem(
                "oidc.scopes",
                format!("{bad:?} is not a scope (one scope per list item, no spaces)"),
            );
        }
        let post_logout = raw
            .post_logout_redirect_uri
            .unwrap_or_else(|| format!("{public_origin}/"));
        let post_logout_redirect_uri = self.url("oidc.post_logout_redirect_uri", &post_logout);
        let auth_method = match raw
            .token_endpoint_auth_method
            .as_deref()
            .unwrap_or("client_secret_basic")
        {
            "client_secret_basic" => TokenAuthMethod::ClientSecretBasic,
            "client_secret_post" => TokenAuthMethod::ClientSecretPost,
            other => {
                self.problem(
                    "oidc.token_endpoint_auth_method",
                    format!("{other:?} is not supported (use client_secret_basic or client_secret_post)"),
                );
                TokenAuthMethod::ClientSecretBasic
            }
        };
        let allowed_login_params = raw
            .allowed_login_params
            .unwrap_or_else(|| DEFAULT_LOGIN_PARAMS.iter().map(|s| s.to_string()).collect());
        for p in &allowed_login_params {
            if RESERVED_LOGIN_PARAMS.contains(&p.as_str()) {
                self.problem(
                    "oidc.allowed_login_params",
                    format!("{p:?} is set by portcullis itself and cannot be passed through (remove it)"),
                );
            }
        }
        let refresh_skew = self.duration("oidc.refresh_skew", raw.refresh_skew.as_deref(), "60s");
        let clock_skew = self.duration("oidc.clock_skew", raw.clock_skew.as_deref(), "60s");
        let http_timeout = self.duration("oidc.http_timeout", raw.http_timeout.as_deref(), "10s");
        let discovery_refresh = self.duration(
            "oidc.discovery_refresh",
            raw.discovery_refresh.as_deref(),
            "1h",
        );
        Some(OidcConfig {
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            scopes,
            post_logout_redirect_uri: post_logout_redirect_uri?,
            auth_method,
            allowed_login_params,
            refresh_skew,
            clock_skew,
            http_timeout,
            discovery_refresh,
            send_id_token_hint: raw.send_id_token_hint.unwrap_or(false),
        })
    }

    fn issuer(&mut self, value: Option<&str>, allow_plaintext: bool) -> Option<String> {
        let Some(value) = value else {
            self.problem("oidc.issuer", "is required (the identity provider's issuer URL, exactly as its discovery document spells it)");
            return None;
        };
        let url = self.url("oidc.issuer", value)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.problem("oidc.issuer", "must not have a query or fragment");
        }
        if url.scheme() == "http" && !is_loopback_host(&url) && !allow_plaintext {
            self.problem(
                "oidc.issuer",
                "plain http is accepted only for loopback hosts (use https, or set oidc.allow_plaintext_http: true to accept the risk)",
            );
        }
        // Kept as written: discovery must echo it exactly (OIDC Discovery §4.3).
        Some(value.to_string())
    }

    fn client_secret(
        &mut self,
        inline: Option<String>,
        file: Option<&str>,
    ) -> Option<Secret<String>> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    "oidc.client_secret",
                    "set either client_secret or client_secret_file, not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    "oidc.client_secret_file",
                    "is required (a file holding the client secret; or set oidc.client_secret)",
                );
                None
            }
            (Some(s), None) if s.is_empty() => {
                self.problem("oidc.client_secret", "must not be empty");
                None
            }
            (Some(s), None) => Some(Secret::new(s)),
            (None, Some(path)) => self.secret_file("oidc.client_secret_file", path),
        }
    }

    /// Reads a file named by `key` (relative to the config file), reporting a failure under it.
    fn read_named_file(&mut self, key: &str, path: &str) -> Option<(String, PathBuf)> {
        let full = self.base_dir.join(path);
        match (self.read_file)(&full) {
            Ok(text) => Some((text, full)),
            Err(e) => {
                self.problem(
                    key,
                    format!(
                        "cannot read {}: {e} (check the path and its permissions)",
                        full.display()
                    ),
                );
                None
            }
        }
    }

    fn secret_file(&mut self, key: &str, path: &str) -> Option<Secret<String>> {
        let (text, full) = self.read_named_file(key, path)?;
        // Files written by `echo` or Kubernetes tooling often end in a newline that is no part of the secret.
        let trimmed = text.trim_end_matches(['\r', '\n']).to_string();
        if trimmed.is_empty() {
            self.problem(
                key,
                format!("{} is empty (write the secret into it)", full.display()),
            );
            return None;
        }
        Some(Secret::new(trimmed))
    }

    /// A file that is configuration, not a secret: its content may appear nowhere, but its
    /// path may be named.
    fn text_file(&mut self, key: &str, path: &str) -> Option<String> {
        let (text, full) = self.read_named_file(key, path)?;
        if text.trim().is_empty() {
            self.problem(key, format!("{} is empty", full.display()));
            return None;
        }
        Some(text)
    }

    fn session(&mut self, raw: RawSession) -> Option<SessionConfig> {
        let store = match raw.store.as_deref().unwrap_or("memory") {
            // The contract's own example sets redis_url beside store: memory, so it is accepted
            // (and ignored) rather than rejected.
            "memory" => Some(StoreConfig::Memory),
            "redis" => self.redis(&raw),
            other => {
                self.problem(
                    "session.store",
                    format!("{other:?} is not a store (use memory or redis)"),
                );
                None
            }
        };
        let idle_timeout =
            self.duration("session.idle_timeout", raw.idle_timeout.as_deref(), "30m");
        let absolute_timeout = self.duration(
            "session.absolute_timeout",
            raw.absolute_timeout.as_deref(),
            "12h",
        );
        if idle_timeout > absolute_timeout {
            self.problem(
                "session.idle_timeout",
                "must not be longer than session.absolute_timeout",
            );
        }
        let login_timeout =
            self.duration("session.login_timeout", raw.login_timeout.as_deref(), "10m");
        let refresh_lock_timeout = self.duration(
            "session.refresh_lock_timeout",
            raw.refresh_lock_timeout.as_deref(),
            "10s",
        );
        let refresh_wait_timeout = self.duration(
            "session.refresh_wait_timeout",
            raw.refresh_wait_timeout.as_deref(),
            "5s",
        );
        let cookie_name = raw
            .cookie_name
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.to_string());
        if !cookie_name.starts_with("__Host-") {
            self.problem("session.cookie_name", "must start with \"__Host-\" (the prefix makes browsers refuse Domain-scoped or non-Secure overwrites)");
        }
        if cookie_name.is_empty() || !cookie_name.bytes().all(is_cookie_name_byte) {
            self.problem(
                "session.cookie_name",
                "may hold only letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("strict") => SameSite::Strict,
            Some("lax") => SameSite::Lax,
            Some(other) => {
                self.problem("session.same_site", format!("{other:?} is not allowed (use strict or lax; none would send the cookie on cross-site requests)"));
                SameSite::Strict
            }
        };
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis".to_string());
        if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
            self.problem(
                "session.key_prefix",
                "must be non-empty without braces or spaces (braces are Redis Cluster hash tags)",
            );
        }
        Some(SessionConfig {
            store: store?,
            key_prefix,
            idle_timeout,
            absolute_timeout,
            login_timeout,
            refresh_lock_timeout,
            refresh_wait_timeout,
            cookie_name,
            same_site,
            cache_max_entries: raw.cache_max_entries.unwrap_or(10_000),
        })
    }

    fn redis(&mut self, raw: &RawSession) -> Option<StoreConfig> {
        // The budget a request may wait for the store: long enough to ride out a failover
        // (about twice cluster-node-timeout / down-after-milliseconds), short enough that a
        // dead store fails closed quickly.
        let command_timeout = self.duration(
            "session.redis_command_timeout",
            raw.redis_command_timeout.as_deref(),
            "6s",
        );
        let connect_timeout = self.duration(
            "session.redis_connect_timeout",
            raw.redis_connect_timeout.as_deref(),
            "2s",
        );
        let file_password = match raw.redis_password_file.as_deref() {
            Some(path) => Some(self.secret_file("session.redis_password_file", path)?),
            None => None,
        };
        let Some(url) = raw.redis_url.as_deref() else {
            self.problem(
                "session.redis_url",
                "is required when session.store is redis (e.g. \"redis://127.0.0.1:6379\")",
            );
            return None;
        };
        // The URL may hold a password, so messages describe it without echoing it.
        let parsed = match parse_redis_url(url) {
            Ok(p) => p,
            Err(message) => {
                self.problem("session.redis_url", message);
                return None;
            }
        };
        if file_password.is_some() && parsed.password.is_some() {
            self.problem(
                "session.redis_password_file",
                "is set but session.redis_url carries a password too (keep one of them)",
            );
        }
        let tls_ca_pem = match raw.redis_tls_ca_file.as_deref() {
            Some(path) => Some(self.text_file("session.redis_tls_ca_file", path)?),
            None => None,
        };
        if tls_ca_pem.is_some() && !parsed.tls {
            self.problem(
                "session.redis_tls_ca_file",
                "is set but session.redis_url is not TLS (use rediss://, rediss-cluster:// or rediss-sentinel://)",
            );
        }
        let reconnect_max_delay = self.duration(
            "session.redis_reconnect_max_delay",
            raw.redis_reconnect_max_delay.as_deref(),
            "1s",
        );
        Some(StoreConfig::Redis(RedisConfig {
            topology: parsed.topology,
            tls: parsed.tls,
            tls_ca_pem,
            reconnect_max_delay,
            username: parsed.username,
            password: file_password.or(parsed.password),
            command_timeout,
            connect_timeout,
        }))
    }

    fn routes(&mut self, raw: Vec<RawRoute>) -> Option<Vec<RouteConfig>> {
        if raw.is_empty() {
            self.problem(
                "routes",
                "needs at least one route (e.g. path \"/\" to your SPA, kind page)",
            );
            return None;
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            if let Some(route) = self.route(i, r) {
                if routes
                    .iter()
                    .any(|o: &RouteConfig| o.prefix == route.prefix)
                {
                    self.problem(
                        format!("routes[{i}].path"),
                        format!("{:?} appears twice (each path once)", route.prefix),
                    );
                }
                routes.push(route);
            }
        }
        Some(routes)
    }

    fn route(&mut self, i: usize, raw: RawRoute) -> Option<RouteConfig> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let prefix = match raw.path {
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
        let kind = match raw.kind.as_deref() {
            Some("api") => Some(RouteKind::Api),
            Some("public") => Some(RouteKind::Public),
            Some("page") => Some(RouteKind::Page),
            Some(other) => {
                self.problem(
                    key("kind"),
                    format!("{other:?} is not a route kind (use api, public or page)"),
                );
                None
            }
            None => {
                self.problem(key("kind"), "is required (api, public or page)");
                None
            }
        };
        let upstream = match raw.upstream.as_deref() {
            Some(u) => self.upstream(&key("upstream"), u, raw.allow_plaintext_http),
            None => {
                self.problem(
                    key("upstream"),
                    "is required (e.g. \"http://127.0.0.1:8080\")",
                );
                None
            }
        };
        let methods = raw
            .methods
            .as_ref()
            .map(|m| self.methods(&key("methods"), m));
        Some(RouteConfig {
            prefix: prefix?,
            upstream: upstream?,
            kind: kind?,
            methods,
            websocket: raw.websocket,
            allow_ambiguous_paths: raw.allow_ambiguous_paths,
        })
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

    fn security(&mut self, raw: super::raw::RawSecurity) -> Option<SecurityConfig> {
        let mut size = |key: &str, value: Option<usize>, default: usize| {
            let v = value.unwrap_or(default);
            if v < 256 {
                self.problem(key, "must be at least 256 bytes");
            }
            v
        };
        let max_uri_bytes = size("security.max_uri_bytes", raw.max_uri_bytes, 8 * 1024);
        let max_header_bytes = size("security.max_header_bytes", raw.max_header_bytes, 32 * 1024);
        let max_cookie_bytes = size("security.max_cookie_bytes", raw.max_cookie_bytes, 8 * 1024);
        let max_header_count = raw.max_header_count.unwrap_or(100);
        if !(8..=1000).contains(&max_header_count) {
            self.problem("security.max_header_count", "must be between 8 and 1000");
        }
        let mut allowed_origins = Vec::new();
        for (i, origin) in raw.allowed_origins.unwrap_or_default().iter().enumerate() {
            let key = format!("security.allowed_origins[{i}]");
            match Url::parse(origin) {
                Ok(u) if origin_of(&u) == origin.trim_end_matches('/') && u.scheme().starts_with("http") => {
                    allowed_origins.push(origin_of(&u))
                }
                _ => self.problem(key, format!("{origin:?} is not an origin (write scheme://host[:port], exactly; no wildcards)")),
            }
        }
        let content_security_policy = raw.content_security_policy.filter(|c| !c.trim().is_empty());
        if content_security_policy
            .as_deref()
            .is_some_and(|c| c.contains(['\r', '\n']))
        {
            self.problem("security.content_security_policy", "must be a single line");
        }
        let rate_limit_per_client = self.rate(
            "security.rate_limit_per_client",
            raw.rate_limit_per_client.as_deref(),
            "60/min",
        );
        let rate_limit_global = self.rate(
            "security.rate_limit_global",
            raw.rate_limit_global.as_deref(),
            "1200/min",
        );
        Some(SecurityConfig {
            max_uri_bytes,
            max_header_bytes,
            max_header_count,
            max_cookie_bytes,
            allowed_origins,
            content_security_policy,
            rate_limit_per_client,
            rate_limit_global,
        })
    }

    fn rate(&mut self, key: &str, value: Option<&str>, default: &str) -> Rate {
        let text = value.unwrap_or(default);
        let parsed = text.split_once('/').and_then(|(n, unit)| {
            let count: u32 = n.trim().parse().ok().filter(|c| *c > 0)?;
            let per = match unit.trim() {
                "s" | "sec" | "second" => Duration::from_secs(1),
                "min" | "minute" => Duration::from_secs(60),
                "h" | "hour" => Duration::from_secs(3600),
                _ => return None,
            };
            Some(Rate { count, per })
        });
        parsed.unwrap_or_else(|| {
            self.problem(
                key,
                format!("{text:?} is not a rate (write e.g. \"60/min\", \"5/s\", \"1000/h\")"),
            );
            Rate {
                count: 1,
                per: Duration::from_secs(1),
            }
        })
    }

    fn server(&mut self, raw: &super::raw::RawServer) -> Option<ServerSettings> {
        let threads = raw.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            self.problem("server.threads", "must be between 1 and 256");
        }
        Some(ServerSettings {
            threads,
            drain_timeout: self.duration(
                "server.drain_timeout",
                raw.drain_timeout.as_deref(),
                "10s",
            ),
            upstream_connect_timeout: self.duration(
                "server.upstream_connect_timeout",
                raw.upstream_connect_timeout.as_deref(),
                "5s",
            ),
            upstream_read_timeout: self.duration(
                "server.upstream_read_timeout",
                raw.upstream_read_timeout.as_deref(),
                "60s",
            ),
        })
    }

    fn log(&mut self, raw: &super::raw::RawLog) -> Option<LogConfig> {
        let (log, problems) = validate_log(raw.format.as_deref(), raw.level.as_deref());
        self.problems.extend(problems);
        Some(log)
    }
}

/// `log.format` and `log.level`, for the proxy's and the webhook's configuration alike.
pub fn validate_log(format: Option<&str>, level: Option<&str>) -> (LogConfig, Vec<Problem>) {
    let mut problems = Vec::new();
    let format = match format.unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            problems.push(Problem::new(
                "log.format",
                format!("{other:?} is not a format (use text or json)"),
            ));
            LogFormat::Text
        }
    };
    let level = level.unwrap_or("info").to_string();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        problems.push(Problem::new(
            "log.level",
            format!("{level:?} is not a level (use error, warn, info, debug or trace)"),
        ));
    }
    (LogConfig { format, level }, problems)
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
