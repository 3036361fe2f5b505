//! The webhook's own small YAML file (`portcullis webhook --config FILE`): file → `Raw*` (serde
//! mirror, unknown keys rejected by `config::parse`) → `WebhookConfig`, every problem collected
//! and printed as `FILE: key.path: message (fix)`, the same way the proxy's file is checked.
//!
//! ```yaml
//! listen: "0.0.0.0:8443"            # TLS, POST /mutate
//! admin_listen: "0.0.0.0:8081"      # plain HTTP: /healthz /readyz /metrics
//! tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key, reload_interval: 10s}
//! sidecar:
//!   image: "ghcr.io/portcullis/portcullis:0.1.0"   # the only required key
//!   mode: native                    # native (init container, restartPolicy Always) | classic
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::annotations::{is_dns_subdomain, is_quantity};
use super::inject::{Resources, SidecarMode, SidecarSettings};
use crate::config::known_keys::{fields, KnownKeys};
use crate::config::{
    listen_addresses_overlap, validate_log, validate_socket_addr, ConfigError, LogConfig, Problem,
};

const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8443));
const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8081));
/// A kubelet refreshes a mounted Secret within about a minute; polling every 10 s keeps the
/// served certificate at most that much behind cert-manager's renewal.
const DEFAULT_RELOAD_INTERVAL: &str = "10s";
/// The distroless "nonroot" user; any non-zero uid satisfies Pod Security "restricted".
const DEFAULT_RUN_AS_USER: i64 = 65532;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: TlsFiles,
    pub sidecar: SidecarSettings,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_interval: Duration,
}

impl KnownKeys for RawWebhook {
    fn keys_of(section: &str) -> &'static [&'static str] {
        match section {
            "" => fields::<RawWebhook>(),
            "tls" => fields::<RawTls>(),
            "sidecar" => fields::<RawSidecar>(),
            "sidecar.resources" => fields::<RawResources>(),
            "log" => fields::<RawLog>(),
            _ => &[],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawWebhook {
    listen: Option<String>,
    admin_listen: Option<String>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    sidecar: RawSidecar,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSidecar {
    image: Option<String>,
    image_pull_policy: Option<String>,
    mode: Option<String>,
    config_map: Option<String>,
    secret: Option<String>,
    proxy_port: Option<u16>,
    admin_port: Option<u16>,
    run_as_user: Option<i64>,
    #[serde(default)]
    resources: RawResources,
}

#[derive(Debug, Default, Deserialize)]
struct RawResources {
    cpu_request: Option<String>,
    memory_request: Option<String>,
    cpu_limit: Option<String>,
    memory_limit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

impl WebhookConfig {
    pub fn load(path: &Path) -> Result<WebhookConfig, ConfigError> {
        let fail = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![Problem::new(
                "(file)",
                format!("cannot read the file: {e}"),
            )])
        })?;
        WebhookConfig::from_yaml(&text, path)
    }

    pub fn from_yaml(text: &str, origin: &Path) -> Result<WebhookConfig, ConfigError> {
        let fail = |problems| ConfigError {
            file: origin.to_path_buf(),
            problems,
        };
        let raw: RawWebhook = crate::config::parse(text).map_err(fail)?;
        let base_dir = origin.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut c = Checker {
            problems: Vec::new(),
            base_dir,
        };
        let config = c.webhook(raw);
        match c.problems.is_empty() {
            true => Ok(config),
            false => Err(fail(c.problems)),
        }
    }
}

struct Checker {
    problems: Vec<Problem>,
    base_dir: PathBuf,
}

impl Checker {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn webhook(&mut self, raw: RawWebhook) -> WebhookConfig {
        let listen = self.socket_addr("listen", raw.listen, DEFAULT_LISTEN);
        let admin_listen = self.socket_addr("admin_listen", raw.admin_listen, DEFAULT_ADMIN_LISTEN);
        if listen_addresses_overlap(listen, admin_listen) {
            self.problem(
                "admin_listen",
                "must differ from listen (probes and metrics stay off the TLS webhook port)",
            );
        }
        WebhookConfig {
            listen,
            admin_listen,
            tls: self.tls(raw.tls),
            sidecar: self.sidecar(raw.sidecar),
            log: self.log(raw.log),
        }
    }

    fn socket_addr(&mut self, key: &str, value: Option<String>, default: SocketAddr) -> SocketAddr {
        let (addr, problem) = validate_socket_addr(key, value.as_deref(), default);
        self.problems.extend(problem);
        addr
    }

    fn tls(&mut self, raw: RawTls) -> TlsFiles {
        let reload = raw
            .reload_interval
            .as_deref()
            .unwrap_or(DEFAULT_RELOAD_INTERVAL);
        let reload_interval = match humantime::parse_duration(reload) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                self.problem(
                    "tls.reload_interval",
                    format!("{reload:?} is not a duration longer than zero (write e.g. \"10s\")"),
                );
                Duration::from_secs(10)
            }
        };
        TlsFiles {
            cert_file: self.required_path("tls.cert_file", raw.cert_file),
            key_file: self.required_path("tls.key_file", raw.key_file),
            reload_interval,
        }
    }

    /// A relative path is relative to the config file, as `oidc.client_secret_file` is.
    fn required_path(&mut self, key: &str, value: Option<String>) -> PathBuf {
        match value.filter(|v| !v.trim().is_empty()) {
            Some(v) => self.base_dir.join(v),
            None => {
                self.problem(
                    key,
                    "is required (the PEM file mounted from the webhook's TLS Secret)",
                );
                PathBuf::new()
            }
        }
    }

    fn sidecar(&mut self, raw: RawSidecar) -> SidecarSettings {
        let image = raw.image.unwrap_or_default();
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            self.problem(
                "sidecar.image",
                "is required: the portcullis image injected into pods (e.g. \"ghcr.io/portcullis/portcullis:0.1.0\")",
            );
        }
        let image_pull_policy = raw
            .image_pull_policy
            .unwrap_or_else(|| "IfNotPresent".to_string());
        if !["Always", "IfNotPresent", "Never"].contains(&image_pull_policy.as_str()) {
            self.problem(
                "sidecar.image_pull_policy",
                format!("{image_pull_policy:?} is not a pull policy (use Always, IfNotPresent or Never)"),
            );
        }
        let mode = match raw.mode.as_deref() {
            None | Some("native") => SidecarMode::Native,
            Some("classic") => SidecarMode::Classic,
            Some(other) => {
                self.problem(
                    "sidecar.mode",
                    format!("{other:?} is not a mode (use native or classic)"),
                );
                SidecarMode::Native
            }
        };
        let (proxy_port, admin_port) = self.ports(raw.proxy_port, raw.admin_port);
        let run_as_user = raw.run_as_user.unwrap_or(DEFAULT_RUN_AS_USER);
        if run_as_user <= 0 {
            self.problem(
                "sidecar.run_as_user",
                "must be a non-root uid above 0 (Pod Security \"restricted\" requires it)",
            );
        }
        SidecarSettings {
            image,
            image_pull_policy,
            mode,
            default_config_map: self.object_name("sidecar.config_map", raw.config_map),
            default_secret: self.object_name("sidecar.secret", raw.secret),
            proxy_port,
            admin_port,
            run_as_user,
            resources: self.resources(raw.resources),
        }
    }

    fn ports(&mut self, proxy: Option<u16>, admin: Option<u16>) -> (u16, u16) {
        let proxy = proxy.unwrap_or(4480);
        let admin = admin.unwrap_or(4481);
        for (key, port) in [("sidecar.proxy_port", proxy), ("sidecar.admin_port", admin)] {
            if port == 0 {
                self.problem(key, "must be a port between 1 and 65535");
            }
        }
        if proxy == admin {
            self.problem("sidecar.admin_port", "must differ from sidecar.proxy_port");
        }
        (proxy, admin)
    }

    fn object_name(&mut self, key: &str, value: Option<String>) -> Option<String> {
        let name = value.filter(|v| !v.is_empty())?;
        if !is_dns_subdomain(&name) {
            self.problem(
                key,
                format!("{name:?} is not a Kubernetes object name (lowercase letters, digits, '-' and '.')"),
            );
        }
        Some(name)
    }

    fn resources(&mut self, raw: RawResources) -> Resources {
        Resources {
            cpu_request: self.quantity(
                "sidecar.resources.cpu_request",
                raw.cpu_request,
                Some("20m"),
            ),
            memory_request: self.quantity(
                "sidecar.resources.memory_request",
                raw.memory_request,
                Some("32Mi"),
            ),
            cpu_limit: self.quantity("sidecar.resources.cpu_limit", raw.cpu_limit, None),
            memory_limit: self.quantity(
                "sidecar.resources.memory_limit",
                raw.memory_limit,
                Some("128Mi"),
            ),
        }
    }

    /// An empty string means "none" (e.g. no CPU limit, which avoids throttling a proxy).
    fn quantity(
        &mut self,
        key: &str,
        value: Option<String>,
        default: Option<&str>,
    ) -> Option<String> {
        let text = match value {
            Some(v) if v.is_empty() => return None,
            Some(v) => v,
            None => default?.to_string(),
        };
        if !is_quantity(&text) {
            self.problem(
                key,
                format!("{text:?} is not a Kubernetes quantity (write e.g. \"100m\", \"64Mi\")"),
            );
        }
        Some(text)
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let (log, problems) = validate_log(raw.format.as_deref(), raw.level.as_deref());
        self.problems.extend(problems);
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match WebhookConfig::from_yaml(yaml, Path::new("/etc/w/webhook.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn minimal_file_gets_defaults_and_relative_paths_resolve_against_the_file() {
        let yaml =
            "tls: {cert_file: tls/tls.crt, key_file: /abs/tls.key}\nsidecar: {image: img:1}\n";
        let c = WebhookConfig::from_yaml(yaml, Path::new("/etc/w/webhook.yaml")).expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:8081");
        assert_eq!(c.tls.cert_file, PathBuf::from("/etc/w/tls/tls.crt"));
        assert_eq!(c.tls.key_file, PathBuf::from("/abs/tls.key"));
        assert_eq!(c.tls.reload_interval, Duration::from_secs(10));
        assert_eq!(c.sidecar.mode, SidecarMode::Native);
        assert_eq!((c.sidecar.proxy_port, c.sidecar.admin_port), (4480, 4481));
        assert_eq!(c.sidecar.resources.cpu_limit, None);
        assert_eq!(c.sidecar.resources.memory_limit.as_deref(), Some("128Mi"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let yaml = "listen: nope\nbogus: 1\ntls: {reload_interval: 0s}\n\
                    sidecar: {mode: sideways, proxy_port: 9, admin_port: 9, run_as_user: 0, \
                    config_map: Bad_Name, resources: {memory_limit: lots}}\nlog: {format: xml}\n";
        assert_eq!(
            problems(yaml),
            vec!["bogus: is not a known key (check its spelling and indentation)"]
        );
        let yaml = yaml.replace("bogus: 1\n", "");
        assert_eq!(
            problems(&yaml),
            vec![
                "listen: \"nope\" is not an address (write IP:PORT, e.g. \"0.0.0.0:8443\")",
                "tls.reload_interval: \"0s\" is not a duration longer than zero (write e.g. \"10s\")",
                "tls.cert_file: is required (the PEM file mounted from the webhook's TLS Secret)",
                "tls.key_file: is required (the PEM file mounted from the webhook's TLS Secret)",
                "sidecar.image: is required: the portcullis image injected into pods (e.g. \"ghcr.io/portcullis/portcullis:0.1.0\")",
                "sidecar.mode: \"sideways\" is not a mode (use native or classic)",
                "sidecar.admin_port: must differ from sidecar.proxy_port",
                "sidecar.run_as_user: must be a non-root uid above 0 (Pod Security \"restricted\" requires it)",
                "sidecar.config_map: \"Bad_Name\" is not a Kubernetes object name (lowercase letters, digits, '-' and '.')",
                "sidecar.resources.memory_limit: \"lots\" is not a Kubernetes quantity (write e.g. \"100m\", \"64Mi\")",
                "log.format: \"xml\" is not a format (use text or json)",
            ]
        );
    }
}
