//! Validated configuration handed to the rest of portcullis. Every value here has passed
//! `validate`, so consumers never re-check it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

pub use super::redis_url::RedisTopology;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The origin the browser sees, without a trailing slash, e.g. `https://app.example.com`.
    pub public_origin: String,
    pub public_is_https: bool,
    pub redirect_uri: Url,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub routes: Vec<RouteConfig>,
    pub server: ServerSettings,
    pub log: LogConfig,
    pub security: SecurityConfig,
    pub access: AccessConfig,
    pub telemetry: TelemetryConfig,
    /// The ingress controllers' auth endpoint; `None` when the mode is off (the default).
    pub ingress_auth: Option<IngressAuthConfig>,
    /// The signed identity assertion routes may send upstream; `None` when not configured.
    pub identity_assertion: Option<IdentityAssertionConfig>,
}

/// `identity_assertion`: portcullis's own signing key and what the JWT carries.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityAssertionConfig {
    pub key_file: std::path::PathBuf,
    pub alg: SigningAlg,
    /// The request header the JWT travels in.
    pub header: http::HeaderName,
    pub lifetime: Duration,
    /// ID-token claims copied into the JWT besides `sub`.
    pub claims: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 §2.2: a JWT signed with the client's own key (`oidc.client_key_file`).
    PrivateKeyJwt,
    /// RFC 8705 §2.1: mutual TLS with a CA-issued client certificate.
    TlsClientAuth,
}

impl TokenAuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::PrivateKeyJwt => "private_key_jwt",
            TokenAuthMethod::TlsClientAuth => "tls_client_auth",
        }
    }

    /// Whether the client authenticates with a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost
        )
    }
}

/// The client certificate and key for `tls_client_auth`, read again when either file changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTlsConfig {
    pub certificate_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// `oidc.pushed_authorization_requests` (RFC 9126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParMode {
    /// The authorization request goes through the browser, as before PAR.
    Off,
    /// PAR when discovery advertises `pushed_authorization_request_endpoint`.
    Auto,
    /// PAR always; an OP without it is refused (start-up) or reported (`/readyz`).
    Required,
}

/// The JWS algorithms a client assertion may be signed with (FAPI 2.0 §5.4: PS256 or ES256;
/// RS256 for OPs that offer nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    Es256,
    Ps256,
    Rs256,
}

impl SigningAlg {
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Es256 => "ES256",
            SigningAlg::Ps256 => "PS256",
            SigningAlg::Rs256 => "RS256",
        }
    }

    pub fn from_name(name: &str) -> Option<SigningAlg> {
        match name {
            "ES256" => Some(SigningAlg::Es256),
            "PS256" => Some(SigningAlg::Ps256),
            "RS256" => Some(SigningAlg::Rs256),
            _ => None,
        }
    }
}

/// The client's signing key for `private_key_jwt`: read again whenever the file changes, so it
/// can rotate without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientKeyConfig {
    pub file: std::path::PathBuf,
    pub alg: SigningAlg,
    /// The JWS `kid`: `oidc.client_key_id`, else the JWK's own `kid`, else none.
    pub kid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    /// `None` with `private_key_jwt`, which needs no shared secret.
    pub client_secret: Option<Secret<String>>,
    pub client_key: Option<ClientKeyConfig>,
    pub client_tls: Option<ClientTlsConfig>,
    /// A PEM bundle the OP's TLS certificate may chain to, besides the built-in roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub pushed_authorization_requests: ParMode,
    /// RFC 9449: a DPoP key per session, proofs on token requests, DPoP-bound tokens.
    pub dpop: bool,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uri: Url,
    pub auth_method: TokenAuthMethod,
    pub allowed_login_params: Vec<String>,
    pub refresh_skew: Duration,
    pub clock_skew: Duration,
    pub http_timeout: Duration,
    pub discovery_refresh: Duration,
    /// Put the ID token in the RP-initiated logout URL (`id_token_hint`). Off by default: that
    /// URL passes through the browser, and tokens never should; some OPs (Okta) require it.
    pub send_id_token_hint: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Memory,
    Redis(RedisConfig),
}

impl StoreConfig {
    /// The metrics label of the store: `memory`, `redis`, `redis-cluster` or `redis-sentinel`.
    pub fn label(&self) -> &'static str {
        match self {
            StoreConfig::Memory => "memory",
            StoreConfig::Redis(r) => r.topology.label(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub tls: bool,
    /// PEM bundle of the CAs a `rediss` server certificate must chain to; `None` uses the
    /// system trust store.
    pub tls_ca_pem: Option<String>,
    pub reconnect_max_delay: Duration,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub store: StoreConfig,
    pub key_prefix: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub login_timeout: Duration,
    pub refresh_lock_timeout: Duration,
    pub refresh_wait_timeout: Duration,
    pub cookie_name: String,
    pub same_site: SameSite,
    /// Sessions kept in process in front of Redis (0: no cache).
    pub cache_max_entries: usize,
    /// The parent domain the session cookie is scoped to (`Domain=`), shared by every host under
    /// it; `None` keeps it host-only.
    pub cookie_domain: Option<String>,
}

impl SessionConfig {
    /// The pre-login transaction cookie lives beside the session cookie, under a derived name.
    pub fn transaction_cookie_name(&self) -> String {
        format!("{}-txn", self.cookie_name)
    }

    /// How long a login transaction (its record and its cookie) is kept: `login_timeout`, and
    /// as long again (at least a minute), so a late callback is told the login expired (the
    /// callback compares `created_at` with the timeout) rather than that it is unknown.
    pub fn transaction_kept_for(&self) -> Duration {
        self.login_timeout + self.login_timeout.max(Duration::from_secs(60))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// XHR/fetch API: needs the CSRF header, 401 JSON without a session, token injected.
    Api,
    /// No session needed, no token injected.
    Public,
    /// Browser navigations: 302 to login without a session, token injected.
    Page,
    /// Files from a directory (an SPA's build), answered by portcullis itself; no upstream.
    Static,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Api => "api",
            RouteKind::Public => "public",
            RouteKind::Page => "page",
            RouteKind::Static => "static",
        }
    }

    /// Whether requests on a route of this kind look a session up, as `routes[].policy` (if
    /// set) decides: what validation needs of the proxy's resolved policy, which agrees.
    pub fn looks_up_session(self, policy: Option<SessionPolicy>) -> bool {
        match policy {
            Some(policy) => policy != SessionPolicy::None,
            None => matches!(self, RouteKind::Api | RouteKind::Page),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Upstream {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The host this route serves (`routes[].host`); `None` serves every host of portcullis's.
    pub host: Option<HostPattern>,
    pub prefix: String,
    /// Where the route's requests go: an upstream, or (kind `static`) a directory.
    pub target: RouteTarget,
    pub kind: RouteKind,
    /// Allowed methods; `None` allows every method except TRACE, TRACK and CONNECT.
    pub methods: Option<Vec<http::Method>>,
    /// WebSocket upgrades are accepted on this route (only with a session and a trusted Origin).
    pub websocket: bool,
    /// Skip the ambiguous-path check for this route's (unusual) upstream API.
    pub allow_ambiguous_paths: bool,
    /// Requests with a chunked body are accepted (strictly checked, then buffered) on this route.
    pub allow_chunked_requests: bool,
    /// Overrides the kind's session requirement (`routes[].policy`).
    pub session: Option<SessionPolicy>,
    /// Claim rules every request's session must pass (403 otherwise).
    pub access: Option<AccessConfig>,
    /// Headers set on the upstream request from the session's claims (a client's copies are
    /// always removed).
    pub identity_headers: Vec<IdentityHeader>,
    /// Forward the session's DPoP-bound token as `Authorization: DPoP` with a fresh proof.
    pub dpop: bool,
    /// Send the signed identity assertion (`identity_assertion`) to the upstream.
    pub identity_assertion: bool,
    /// Requests carrying their own `Authorization: Bearer` token (and no session cookie) are
    /// admitted on the token's strength (`routes[].machine_clients`).
    pub machine_clients: Option<MachineClientsConfig>,
}

impl RouteConfig {
    /// A route under `prefix` to 127.0.0.1:1 with every option off, for unit tests.
    #[cfg(test)]
    pub fn for_test(prefix: &str, kind: RouteKind, session: Option<SessionPolicy>) -> RouteConfig {
        RouteConfig {
            host: None,
            prefix: prefix.into(),
            target: RouteTarget::Upstream(Upstream {
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            }),
            kind,
            methods: None,
            websocket: false,
            allow_ambiguous_paths: false,
            allow_chunked_requests: false,
            session,
            access: None,
            identity_headers: Vec::new(),
            dpop: false,
            identity_assertion: false,
            machine_clients: None,
        }
    }

    /// The upstream a proxied route forwards to; `None` for a static route.
    pub fn upstream(&self) -> Option<&Upstream> {
        match &self.target {
            RouteTarget::Upstream(up) => Some(up),
            RouteTarget::Static(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum RouteTarget {
    Upstream(Upstream),
    Static(std::sync::Arc<StaticSite>),
}

/// A `kind: static` route's directory and how its files are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSite {
    /// `routes[].root`, canonical (no symlinks, absolute): files are served only from inside it.
    pub root: PathBuf,
    /// The file answered for the route's own path and, with `fallback`, for client-side routes.
    pub index: String,
    /// A missing path whose last segment has no extension is answered with the index (a deep
    /// link into the SPA); a missing path with an extension is a 404.
    pub fallback: bool,
    /// Files whose names carry a content hash (`index-BdE3fX9a.js`) are cached as immutable.
    pub immutable_hashed: bool,
    /// Paths under the route (e.g. `/assets/`) whose files are all cached as immutable.
    pub immutable_paths: Vec<String>,
    /// `.map` files are served; by default they are not, since they carry the app's source.
    pub serve_source_maps: bool,
}

/// The longest `routes[].machine_clients.cache_ttl`: a revoked token is admitted until its
/// cached verdict ends, so that is bounded whatever the file says.
pub const MACHINE_CACHE_TTL_MAX: Duration = Duration::from_secs(600);

/// `routes[].machine_clients`: which bearer tokens a service or CLI may present itself.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineClientsConfig {
    /// The token's `aud` must hold one of these (at least one is required).
    pub audiences: Vec<String>,
    /// Issuers accepted beside `oidc.issuer`, each discovered for its `jwks_uri`.
    pub issuers: Vec<String>,
    /// Opaque (non-JWT) tokens are asked about at the OP's introspection endpoint.
    pub introspection: bool,
    /// How long a verdict on a token is reused (never past the token's `exp`).
    pub cache_ttl: Duration,
}

/// `routes[].policy`: whether a route needs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionPolicy {
    /// No session is looked up, no token forwarded.
    None,
    /// A session is required.
    User,
    /// The token is forwarded when there is a session; without one the request passes anonymously.
    Optional,
}

/// Portcullis as the external auth service of an ingress controller: it answers, per request,
/// whether the ingress may pass it on and with which headers.
#[derive(Debug, Clone)]
pub struct IngressAuthConfig {
    /// The auth endpoint's own port: only the ingress controller calls it, never a browser.
    pub listen: SocketAddr,
    pub controller: IngressController,
    /// Addresses whose description of the original request is believed; no one else is answered.
    pub trusted_ingress: Vec<IpNetwork>,
    pub identity_headers: Vec<IdentityHeader>,
    /// The answer also carries the signed identity assertion (`identity_assertion`).
    pub identity_assertion: bool,
    pub hosts: Vec<IngressHost>,
}

/// How the ingress controller describes the request it asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressController {
    /// ingress-nginx (`auth_request`): `X-Original-URL` and `X-Original-Method`.
    Nginx,
    /// Traefik `ForwardAuth`: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`.
    Traefik,
    /// Envoy `ext_authz` (HTTP service): the original request itself, its path after `/bff/auth`.
    Envoy,
}

/// A header the ingress copies to the upstream, filled from an ID-token claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    pub name: http::HeaderName,
    pub claim: String,
}

#[derive(Debug, Clone)]
pub struct IngressHost {
    pub host: HostPattern,
    /// Who may pass on this host besides holding a session; `None` admits every session.
    pub access: Option<AccessConfig>,
    /// Requests carrying their own bearer token (and no session cookie) are admitted on it.
    pub machine_clients: Option<MachineClientsConfig>,
    pub paths: Vec<PathRule>,
}

/// A lower-case host name, or `*.parent` for every name under `parent` (not `parent` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot, e.g. `.example.com`.
    Under(String),
}

impl HostPattern {
    /// `host` is lower-case and without a port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Under(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    pub fn exact(&self) -> Option<&str> {
        match self {
            HostPattern::Exact(name) => Some(name),
            HostPattern::Under(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub prefix: String,
    pub kind: RouteKind,
}

/// A token-bucket rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Who may pass, from the ID token's claims: at login (`access`), and per request on a route
/// (`routes[].access`) or an ingress host. No rules admit everyone the OP admits.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Lower-case domains; the `email` claim must be at one of them and not unverified.
    pub email_domains: Vec<String>,
    /// At least one of these must be in the `groups_claim` claim.
    pub groups: Vec<String>,
    pub groups_claim: String,
    pub claims: Vec<ClaimRule>,
    /// Whether every rule (the e-mail domains, the groups, each claim rule) must admit, or one.
    pub require: Require,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Require {
    #[default]
    All,
    Any,
}

/// A rule on one claim: its value equals a string, or (an array, or a string) contains one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    pub claim: String,
    pub test: ClaimTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimTest {
    Equals(String),
    Contains(String),
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub max_cookie_bytes: usize,
    /// The most a chunked request body may hold; portcullis buffers it whole before forwarding.
    pub max_chunked_body_bytes: usize,
    /// Origins besides `public_url` trusted for CORS and Origin/Fetch-Metadata checks (exact).
    pub allowed_origins: Vec<String>,
    pub content_security_policy: Option<String>,
    pub rate_limit_per_client: Rate,
    pub rate_limit_global: Rate,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub drain_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    /// The whole request header must arrive within this (from the connection's start, or from
    /// the first byte of a later request on it).
    pub request_header_timeout: Duration,
    /// The longest pause between two reads of a request body.
    pub request_body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Downstream connections served at once by this process; more are answered 503 and closed.
    pub max_connections: usize,
    /// Idle upstream connections kept for reuse by this process, all upstreams together.
    pub upstream_keepalive_pool_size: usize,
    /// Lower-case host names (no port) besides `public_url`'s that requests may name in `Host`.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// OpenTelemetry tracing, and whose W3C trace context portcullis believes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// Where and how spans are exported; `None` when tracing is off (the default).
    pub traces: Option<TraceExport>,
    /// Callers whose `traceparent`/`tracestate` portcullis continues (or, with tracing off,
    /// passes on); anyone else's is dropped.
    pub trusted_trace_callers: Vec<IpNetwork>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The collector's OTLP/HTTP traces URL: `telemetry.otlp_endpoint` + `/v1/traces`.
    pub endpoint: Url,
    /// The share of new traces recorded (0..=1); a continued trace keeps its caller's decision.
    pub sampling_ratio: f64,
    pub service_name: String,
    pub export_timeout: Duration,
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`; a bare address is a network of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    network: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// The network of `addr` with `prefix_len` leading bits; `None` when the length exceeds the
    /// address's bits or `addr` has bits set past it (a typo such as `10.0.0.1/8`).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<IpNetwork> {
        (prefix_len <= max_prefix(addr) && masked(addr, prefix_len) == addr).then_some(IpNetwork {
            network: addr,
            prefix_len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix_len) == self.network
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `addr` with every bit past the first `prefix_len` cleared.
fn masked(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}
