//! Raw → validated. Collects every problem instead of stopping at the first, and phrases each
//! as "what is wrong (how to fix it)" under the key path it belongs to. The only I/O is reading
//! secret files, done through the `read_file` argument so tests can supply their own.

mod access;
mod assertion;
mod client_auth;
mod ingress;
mod limits;
mod oidc;
mod routes;
mod session;
mod telemetry;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::error::Problem;
use super::raw::RawConfig;
use super::types::*;
use crate::secret::Secret;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4480));
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 4481));
pub const DEFAULT_COOKIE_NAME: &str = "__Host-portcullis";
/// The default name when `session.cookie_domain` shares the cookie across hosts.
pub const DEFAULT_SHARED_COOKIE_NAME: &str = "__Secure-portcullis";

/// Reads a file named in the configuration; tests pass their own.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// Collects problems while each section is validated: one `impl` per section, in the child
/// modules (`oidc`, `session`, `routes`, `limits`, `access`, `telemetry`).
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
    if listen_addresses_overlap(listen, admin_listen) {
        c.problem(
            "admin_listen",
            "must differ from listen (the admin port is never browser-facing)",
        );
    }
    let public = c.public_url(raw.public_url.as_deref());
    let public_origin = public.as_ref().map(origin_of).unwrap_or_default();
    let oidc = c.oidc(raw.oidc, &public_origin);
    let session = c.session(raw.session);
    let access = c.access(raw.access);
    let ingress_enabled = raw.ingress_auth.enabled.unwrap_or(false);
    let routes = c.routes(raw.routes, ingress_enabled, &access.groups_claim);
    let server = c.server(&raw.server);
    let log = c.log(&raw.log);
    let security = c.security(raw.security);
    let telemetry = c.telemetry(raw.telemetry);
    let ingress_auth = c.ingress_auth(raw.ingress_auth, &access);
    let assertion_written = raw.identity_assertion.is_some();
    let identity_assertion = c.identity_assertion(raw.identity_assertion, &access.groups_claim);
    if let Some(ingress) = &ingress_auth {
        c.ingress_listen_apart(ingress.listen, listen, admin_listen);
    }
    if let Some(routes) = &routes {
        c.dpop_routes(routes, oidc.as_ref().is_some_and(|o| o.dpop));
        c.assertion_users(routes, ingress_auth.as_ref(), assertion_written);
        if let Some(oidc) = &oidc {
            c.machine_client_audiences(routes, ingress_auth.as_ref(), &oidc.client_id);
        }
    }
    if let (Some(session), Some(public), Some(routes)) = (&session, &public, &routes) {
        let public_host = public.host_str().unwrap_or_default().to_ascii_lowercase();
        c.cookie_domain_covers(session, &public_host, ingress_auth.as_ref(), routes);
    }

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
        access,
        telemetry,
        ingress_auth,
        identity_assertion,
    })
}

pub(super) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

pub(super) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => is_loopback_name(d),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `localhost`, a name under `.localhost` (RFC 6761: always loopback, and browsers resolve it so
/// themselves) or a loopback address literal: traffic that never leaves the machine (or pod).
pub fn is_loopback_name(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Checker<'_> {
    /// A host as a `Host` header names it (lower-cased), or `*.parent` for the names under it.
    pub(super) fn host_pattern(&mut self, key: &str, value: Option<&str>) -> Option<HostPattern> {
        let Some(value) = value else {
            self.problem(key, "is required (e.g. app.example.com or *.example.com)");
            return None;
        };
        let lower = value.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(parent) => (parent, true),
            None => (lower.as_str(), false),
        };
        // Parsing as a URL host and printing it back must give the same text: a port, a path,
        // another wildcard or another spelling of an address is refused.
        let valid = !name.contains('*')
            && matches!(url::Host::parse(name), Ok(url::Host::Domain(d)) if d == name)
            && (!wildcard || name.contains('.'));
        if !valid {
            self.problem(
                key,
                format!("{value:?} is not a host name (write it as in a Host header, without scheme or port; a wildcard only as a leading \"*.\" on a parent with a dot, e.g. *.example.com)"),
            );
            return None;
        }
        Some(if wildcard {
            HostPattern::Under(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }

    fn ingress_listen_apart(&mut self, auth: SocketAddr, listen: SocketAddr, admin: SocketAddr) {
        // The proxy tells auth requests apart by the port they arrive on.
        if auth.port() == listen.port() || listen_addresses_overlap(auth, admin) {
            self.problem(
                "ingress_auth.listen",
                "must differ from listen and admin_listen (the auth port is for the ingress controller only, never for browsers)",
            );
        }
    }

    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn socket_addr(&mut self, key: &str, value: Option<&str>, default: SocketAddr) -> SocketAddr {
        let (addr, problem) = validate_socket_addr(key, value, default);
        self.problems.extend(problem);
        addr
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
}

/// `log.format` and `log.level`, for the proxy's and the webhook's configuration alike.
/// A listen address (`IP:PORT`), or `default` when unset; shared with the webhook's config.
pub fn validate_socket_addr(
    key: &str,
    value: Option<&str>,
    default: SocketAddr,
) -> (SocketAddr, Option<Problem>) {
    let Some(value) = value else {
        return (default, None);
    };
    match value.parse() {
        Ok(addr) => (addr, None),
        Err(_) => (
            default,
            Some(Problem::new(
                key,
                format!("{value:?} is not an address (write IP:PORT, e.g. \"{default}\")"),
            )),
        ),
    }
}

/// Whether two listen addresses would claim the same port: the same IP, or either a wildcard.
pub fn listen_addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

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
