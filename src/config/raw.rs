//! Serde mirror of the YAML file: every key the file may hold, as written, with no logic.
//! Values stay strings where validation must name the key in its message (durations, URLs).
//! Unknown keys are rejected by `super::parse`, which collects all of them through
//! `serde_ignored` (serde's `deny_unknown_fields` would stop at the first).

use serde::Deserialize;

use super::known_keys::{fields, KnownKeys};

impl KnownKeys for RawConfig {
    fn keys_of(section: &str) -> &'static [&'static str] {
        match section {
            "" => fields::<RawConfig>(),
            "oidc" => fields::<RawOidc>(),
            "session" => fields::<RawSession>(),
            "routes" => fields::<RawRoute>(),
            "server" => fields::<RawServer>(),
            "log" => fields::<RawLog>(),
            "security" => fields::<RawSecurity>(),
            "access" | "ingress_auth.hosts.access" | "routes.access" => fields::<RawAccess>(),
            "access.claims" | "ingress_auth.hosts.access.claims" | "routes.access.claims" => {
                fields::<RawClaimRule>()
            }
            "routes.machine_clients" | "ingress_auth.hosts.machine_clients" => {
                fields::<RawMachineClients>()
            }
            "telemetry" => fields::<RawTelemetry>(),
            "ingress_auth" => fields::<RawIngressAuth>(),
            "ingress_auth.hosts" => fields::<RawIngressHost>(),
            "ingress_auth.hosts.paths" => fields::<RawIngressPath>(),
            "identity_assertion" => fields::<RawIdentityAssertion>(),
            _ => &[],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub oidc: Option<RawOidc>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub access: RawAccess,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub ingress_auth: RawIngressAuth,
    pub identity_assertion: Option<RawIdentityAssertion>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIngressAuth {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub controller: Option<String>,
    pub trusted_ingress: Option<Vec<String>>,
    /// Header name → claim, in the order written.
    pub identity_headers: Option<serde_yaml::Mapping>,
    pub identity_assertion: Option<bool>,
    #[serde(default)]
    pub hosts: Vec<RawIngressHost>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIdentityAssertion {
    pub key_file: Option<String>,
    pub alg: Option<String>,
    pub header: Option<String>,
    pub lifetime: Option<String>,
    pub claims: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIngressHost {
    pub host: Option<String>,
    pub access: Option<RawAccess>,
    pub machine_clients: Option<RawMachineClients>,
    #[serde(default)]
    pub paths: Vec<RawIngressPath>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIngressPath {
    pub path: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTelemetry {
    pub enabled: Option<bool>,
    pub otlp_endpoint: Option<String>,
    pub sampling_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub export_timeout: Option<String>,
    pub trusted_trace_callers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAccess {
    pub email_domains: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub claims: Vec<RawClaimRule>,
    pub require: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClaimRule {
    pub claim: Option<String>,
    pub equals: Option<String>,
    pub contains: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSecurity {
    pub max_uri_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_header_count: Option<usize>,
    pub max_cookie_bytes: Option<usize>,
    pub max_chunked_body_bytes: Option<usize>,
    pub allowed_origins: Option<Vec<String>>,
    pub content_security_policy: Option<String>,
    pub rate_limit_per_client: Option<String>,
    pub rate_limit_global: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub post_logout_redirect_uri: Option<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub allowed_login_params: Option<Vec<String>>,
    pub refresh_skew: Option<String>,
    pub clock_skew: Option<String>,
    pub http_timeout: Option<String>,
    pub discovery_refresh: Option<String>,
    pub send_id_token_hint: Option<bool>,
    #[serde(default)]
    pub allow_plaintext_http: bool,
    pub pushed_authorization_requests: Option<String>,
    pub client_key_file: Option<String>,
    pub client_key_alg: Option<String>,
    pub client_key_id: Option<String>,
    pub client_certificate_file: Option<String>,
    pub client_certificate_key_file: Option<String>,
    pub tls_ca_file: Option<String>,
    pub dpop: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSession {
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_password_file: Option<String>,
    pub redis_tls_ca_file: Option<String>,
    pub redis_reconnect_max_delay: Option<String>,
    pub redis_command_timeout: Option<String>,
    pub redis_connect_timeout: Option<String>,
    pub key_prefix: Option<String>,
    pub idle_timeout: Option<String>,
    pub absolute_timeout: Option<String>,
    pub login_timeout: Option<String>,
    pub refresh_lock_timeout: Option<String>,
    pub refresh_wait_timeout: Option<String>,
    pub cookie_name: Option<String>,
    pub cache_max_entries: Option<usize>,
    pub same_site: Option<String>,
    pub cookie_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub allow_plaintext_http: bool,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub websocket: bool,
    #[serde(default)]
    pub allow_ambiguous_paths: bool,
    #[serde(default)]
    pub allow_chunked_requests: bool,
    pub policy: Option<String>,
    pub access: Option<RawAccess>,
    /// Header name → claim, in the order written.
    pub identity_headers: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub dpop: bool,
    #[serde(default)]
    pub identity_assertion: bool,
    /// `kind: static`: the directory served, and how.
    pub root: Option<String>,
    pub index: Option<String>,
    pub fallback: Option<bool>,
    pub immutable_hashed: Option<bool>,
    pub immutable_paths: Option<Vec<String>>,
    pub serve_source_maps: Option<bool>,
    pub machine_clients: Option<RawMachineClients>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMachineClients {
    pub audiences: Option<Vec<String>>,
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub introspection: bool,
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub drain_timeout: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    pub upstream_read_timeout: Option<String>,
    pub request_header_timeout: Option<String>,
    pub request_body_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub upstream_keepalive_pool_size: Option<usize>,
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}
