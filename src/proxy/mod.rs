//! The `ProxyHttp` implementation: what portcullis decides in each Pingora phase.
//!
//! `request_filter` routes the request, answers `/bff/*` and static routes' files itself, and
//! for proxied routes authenticates (a session, refreshed if needed, or a machine client's own
//! token) and checks CSRF; `upstream_peer` picks the route's upstream;
//! `upstream_request_filter` strips and injects headers (identity, assertion); `response_filter`
//! adds the request id, CORS and CSP headers and drops upstream attempts to set portcullis's
//! cookies; `fail_to_proxy` turns upstream failures into generic 502/504; `logging` records
//! metrics.

mod access;
mod authenticate;
mod bff;
mod browser_checks;
pub mod canonical;
mod dpop;
mod error;
mod header_map;
mod hop_by_hop;
mod host;
mod identity;
mod ingress;
mod inject;
mod live;
mod machine;
mod policy;
mod rate_limit;
mod refresh;
mod respond;
mod route;
mod static_files;
mod trace;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use prometheus::IntCounter;
use serde_json::{Map, Value};

pub use bff::{validate_return_to, MAX_LOCAL_BODY};
use error::ProxyError;
use header_map::TooManyFields;
pub use host::host_of;
pub use live::{EdgeSettings, Live, LiveConfig};
use policy::{is_navigation, WithoutSession};
use respond::Reply;
use route::Route;
pub use route::RouteTable;

use crate::assertion::IdentityAssertions;
use crate::config::{
    AccessConfig, Config, MachineClientsConfig, RouteConfig, RouteTarget, StaticSite,
};
use crate::metrics::{Metrics, RequestSeries};
use crate::oidc::dpop::UpstreamDpop;
use crate::oidc::Oidc;
use crate::random::random_token;
use crate::session::cache::HotSession;
use crate::session::cookie::{CookiePolicy, Presented};
use crate::session::Sessions;
use crate::shutdown::{InFlight, InFlightGuard};
use crate::telemetry::audit;
use crate::telemetry::propagation::{RequestTrace, TraceContext};
use bff::Endpoint;
use machine::{Bearer, MachineAuth, Offered};
use rate_limit::RateLimiter;
use respond::{Format, SecurityHeaders, Severity};
use tracing::Instrument;

/// Per-request state carried between phases.
pub struct RequestCtx {
    started: Instant,
    route: Option<usize>,
    /// Metric label: a route kind, `bff`, or `none` before routing.
    label: &'static str,
    bearer: Option<HeaderValue>,
    /// Set on `dpop: true` routes: the token goes as `Authorization: DPoP` with a proof.
    dpop: Option<Arc<UpstreamDpop>>,
    /// The session's claims, kept when the route sends identity headers.
    claims: Option<Arc<Map<String, Value>>>,
    /// The signed identity assertion, on routes that send one.
    assertion: Option<HeaderValue>,
    /// `X-Forwarded-Host` for a request on a host other than `public_url`'s.
    forwarded_host: Option<HeaderValue>,
    websocket: bool,
    /// A configured CORS origin this `api` request came from; echoed on the response.
    cors_origin: Option<HeaderValue>,
    /// Correlates portcullis's log lines with the upstream's; sent both ways as `X-Request-Id`.
    request_id: RequestId,
    /// The request's spans while tracing is on (see `trace`).
    trace: RequestTrace,
    /// The reloadable configuration as it was when the request began; used to its end.
    live: Arc<Live>,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    /// Forward the session's credentials: its DPoP binding only on a route that asked for it.
    fn forward(&mut self, credentials: authenticate::Credentials, dpop_route: bool) {
        self.bearer = Some(credentials.bearer);
        self.dpop = credentials.dpop.filter(|_| dpop_route);
    }
}

pub struct Portcullis {
    live: LiveConfig,
    sessions: Arc<Sessions>,
    cookies: CookiePolicy,
    oidc: Arc<Oidc>,
    metrics: Arc<Metrics>,
    request_series: RequestSeries,
    upstream_opened: IntCounter,
    request_ids: RequestIds,
    security: SecurityHeaders,
    /// The `X-Forwarded-Proto` value, built once.
    public_proto: HeaderValue,
    forwarded_hosts: ForwardedHosts,
    /// `public_url`'s origin, for redirects portcullis builds itself.
    public_origin: String,
    in_flight: InFlight,
    rate_limiter: Arc<RateLimiter>,
    traces: TraceContext,
    /// `ingress_auth.listen`'s port: requests arriving there are auth requests, nothing else.
    auth_port: Option<u16>,
    assertions: Option<Arc<IdentityAssertions>>,
    machine: Arc<MachineAuth>,
}

/// What every proxy thread shares (see `server`): the reloadable configuration, the session
/// store, the OP client, metrics, the drain counter, and the rate limits and machine-client
/// token verdicts, which are per process, not per thread.
#[derive(Clone)]
pub struct Shared {
    live: LiveConfig,
    sessions: Arc<Sessions>,
    oidc: Arc<Oidc>,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    rate_limiter: Arc<RateLimiter>,
    assertions: Option<Arc<IdentityAssertions>>,
    machine: Arc<MachineAuth>,
}

impl Shared {
    pub fn new(
        cfg: &Config,
        sessions: Arc<Sessions>,
        oidc: Arc<Oidc>,
        metrics: Arc<Metrics>,
        in_flight: InFlight,
        assertions: Option<Arc<IdentityAssertions>>,
    ) -> Shared {
        Shared {
            assertions,
            live: Live::shared(cfg),
            sessions,
            oidc,
            machine: Arc::new(MachineAuth::new(
                metrics.machine_auth.clone(),
                &metrics.machine_token_cache,
            )),
            metrics,
            in_flight,
            rate_limiter: Arc::new(RateLimiter::new(
                cfg.security.rate_limit_per_client,
                cfg.security.rate_limit_global,
            )),
        }
    }

    /// The reloadable configuration every thread and edge reads (and a reload replaces).
    pub fn live(&self) -> LiveConfig {
        self.live.clone()
    }
}

/// What `request_filter` decided.
enum Decision {
    Forward,
    Reply(Reply),
    /// A static route's file (or its headers: HEAD, 304).
    File(static_files::Served),
}

impl Portcullis {
    pub fn new(cfg: &Config, shared: Shared) -> Portcullis {
        let Shared {
            live,
            sessions,
            oidc,
            metrics,
            in_flight,
            rate_limiter,
            assertions,
            machine,
        } = shared;
        Portcullis {
            live,
            cookies: CookiePolicy::new(&cfg.session),
            security: SecurityHeaders::new(cfg.public_is_https),
            forwarded_hosts: ForwardedHosts::new(&cfg.public_origin),
            public_proto: HeaderValue::from_static(if cfg.public_is_https {
                "https"
            } else {
                "http"
            }),
            public_origin: cfg.public_origin.clone(),
            sessions,
            oidc,
            request_series: RequestSeries::new(&metrics),
            upstream_opened: metrics.upstream_connections_opened.clone(),
            metrics,
            request_ids: RequestIds::new(),
            in_flight,
            rate_limiter,
            traces: TraceContext::new(&cfg.telemetry),
            auth_port: cfg.ingress_auth.as_ref().map(|a| a.listen.port()),
            assertions,
            machine,
        }
    }

    /// What to do with a request, in steps: an auth request on the auth port is answered
    /// whole; otherwise screen it (host, method), route it, answer `/bff/*` endpoints, pass the
    /// route's gate (preflight, methods, upgrades, CSRF) and authenticate as its policy asks
    /// (a machine client's request on its own bearer token); a static route then answers with
    /// its file instead of forwarding.
    async fn decide(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Decision, ProxyError> {
        // What is not a proxied request's path (auth requests, `/bff/`, static files, machine
        // clients) is awaited boxed: this future is allocated and copied for every request, and
        // would otherwise be as large as the largest of them.
        let live = ctx.live.clone();
        if self.on_auth_port(session) {
            ctx.label = "auth";
            let reply = Box::pin(self.ingress_auth(session, &live, ctx.started)).await;
            return Ok(Decision::Reply(reply));
        }
        let req = session.req_header();
        let host = browser_checks::request_host(req)?;
        screen(req, &host, &live)?;
        let route = find_route(req, &host, &live)?;
        let path = req.uri.path();
        if path == "/bff" || path.starts_with("/bff/") {
            ctx.label = "bff";
            let endpoint = Endpoint::from_path(path).ok_or(ProxyError::NoRoute)?;
            return Box::pin(self.bff_endpoint(endpoint, session))
                .await
                .map(Decision::Reply);
        }
        let route = route.ok_or(ProxyError::NoRoute)?;
        ctx.route = Some(route.index);
        ctx.forwarded_host = self.forwarded_hosts.for_other_host(&host);
        ctx.label = route.policy.kind.as_str();
        if route.config.machine_clients.is_some() {
            let machine = Box::pin(self.machine_client(req, &host, route, &live, ctx)).await?;
            if let Some(decision) = machine {
                return Ok(decision);
            }
        }
        if let Some(reply) = gate(req, &host, route, &live, ctx, Credential::Cookie)? {
            return Ok(Decision::Reply(reply));
        }
        match &route.config.target {
            RouteTarget::Upstream(_) => self.authenticate_for(req, &host, route, &live, ctx).await,
            RouteTarget::Static(site) => {
                Box::pin(self.serve_static(req, &host, route, site, &live, ctx)).await
            }
        }
    }

    /// A request carrying its own bearer token (and no session cookie) on a route that admits
    /// machine clients: the route's gate for a bearer credential, then the token. `None`: not
    /// such a request, and the session decides.
    async fn machine_client(
        &self,
        req: &RequestHeader,
        host: &str,
        route: &Route,
        live: &Live,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Decision>, ProxyError> {
        let Some(machine) = &route.config.machine_clients else {
            return Ok(None);
        };
        let Offered::Bearer(bearer) =
            machine::offered(req).inspect_err(|e| self.count_machine(e))?
        else {
            return Ok(None);
        };
        if let Some(reply) = gate(req, host, route, live, ctx, Credential::Bearer)? {
            return Ok(Some(Decision::Reply(reply)));
        }
        self.admit_machine(req, route, machine, bearer, ctx)
            .await
            .inspect_err(|e| self.count_machine(e))
            .map(Some)
    }

    /// A static route's file, once the route's session policy admits the request.
    async fn serve_static(
        &self,
        req: &RequestHeader,
        host: &str,
        route: &Route,
        site: &Arc<StaticSite>,
        live: &Live,
        ctx: &mut RequestCtx,
    ) -> Result<Decision, ProxyError> {
        let private = route.policy.session.is_some();
        let ask = static_files::Ask::from_request(req, &route.config.prefix, private)?;
        match self.authenticate_for(req, host, route, live, ctx).await? {
            Decision::Forward => static_files::locate_blocking(site.clone(), ask)
                .await
                .map(Decision::File),
            other => Ok(other),
        }
    }

    /// Writes a static route's file: its own caching headers, the security headers every
    /// answer carries, and the page CSP on HTML.
    async fn write_file(
        &self,
        session: &mut Session,
        served: &static_files::Served,
        ctx: &RequestCtx,
    ) -> pingora::Result<()> {
        let mut resp = static_files::response_header(served)?;
        self.security.apply_to_file(&mut resp)?;
        resp.insert_header("x-request-id", ctx.request_id.0.clone())?;
        let route_wants_csp = ctx
            .route
            .and_then(|i| ctx.live.routes.policy(i))
            .is_some_and(|p| p.page_csp);
        let csp = static_files::page_csp_for(served, ctx.live.page_csp.as_ref());
        if let Some(csp) = csp.filter(|_| route_wants_csp) {
            resp.insert_header("content-security-policy", csp.clone())?;
        }
        let headers_only = served.not_modified || served.head || served.len == 0;
        session
            .write_response_header(Box::new(resp), headers_only)
            .await?;
        if !headers_only {
            static_files::write_body(session, served).await?;
        }
        Ok(())
    }

    /// A machine client's request: never with a session cookie beside the token; the token
    /// verified (or its cached verdict reused), then held to the route's issuers, audiences and
    /// claim rules, and forwarded as it came.
    async fn admit_machine(
        &self,
        req: &RequestHeader,
        route: &Route,
        cfg: &MachineClientsConfig,
        bearer: Bearer<'_>,
        ctx: &mut RequestCtx,
    ) -> Result<Decision, ProxyError> {
        let access = route.config.access.as_ref();
        let identity = self
            .judge_machine(&req.headers, cfg, access, bearer.token)
            .await?;
        if !route.config.identity_headers.is_empty() {
            ctx.claims = identity;
        }
        ctx.bearer = Some(bearer.header.clone());
        Ok(Decision::Forward)
    }

    /// A machine client's token held to `cfg` and the `access` rules, never beside a session
    /// cookie; counted. `Ok` carries the claims identity headers may be filled from: only an
    /// OP's token's, since an extra issuer's `sub: alice` is not the OP's alice and an upstream
    /// could not tell them apart (its identity headers stay removed).
    async fn judge_machine(
        &self,
        headers: &http::HeaderMap,
        cfg: &MachineClientsConfig,
        access: Option<&AccessConfig>,
        token: &str,
    ) -> Result<Option<Arc<Map<String, Value>>>, ProxyError> {
        if !matches!(self.cookies.session(headers), Presented::Absent) {
            return Err(ProxyError::MixedCredentials);
        }
        let verified = self.machine.verify(&self.oidc, token, cfg).await?;
        let op_issuer = &self.oidc.config().issuer;
        machine::check_route(&verified, cfg, op_issuer)?;
        if let Some(rules) = access {
            access::check_access(rules, &verified.claims).inspect_err(|denied| {
                let claims = &verified.claims;
                let who = ["client_id", "sub"]
                    .iter()
                    .find_map(|c| claims.get(*c).and_then(Value::as_str));
                audit("machine_access", "failure", denied.reason(), who);
            })?;
        }
        self.machine.count_admitted();
        let from_op = verified.claims.get("iss").and_then(Value::as_str) == Some(op_issuer);
        Ok(from_op.then(|| Arc::new(verified.claims.clone())))
    }

    fn count_machine(&self, e: &ProxyError) {
        self.machine.count_refused(e);
    }

    /// Looks the session up as the route's policy asks and holds it to the route's claim
    /// rules: its token is forwarded, or the request passes anonymously, is refused, or (a
    /// navigation) goes to the login.
    async fn authenticate_for(
        &self,
        req: &RequestHeader,
        host: &str,
        route: &Route,
        live: &Live,
        ctx: &mut RequestCtx,
    ) -> Result<Decision, ProxyError> {
        let Some(without_session) = route.policy.session else {
            return Ok(Decision::Forward);
        };
        let Some(session) = self.fresh_session(&req.headers, ctx.started).await? else {
            return match without_session {
                WithoutSession::PassAnonymously => Ok(Decision::Forward),
                WithoutSession::LoginNavigations if is_navigation(req, &req.method) => {
                    Ok(Decision::Reply(self.login_redirect(req)))
                }
                _ => Err(self.unauthenticated(&req.headers)),
            };
        };
        if let Some(rules) = &route.config.access {
            access::check_access(rules, &session.claims).inspect_err(|denied| {
                let sub = session.claims.get("sub").and_then(|s| s.as_str());
                audit("route_access", "failure", denied.reason(), sub);
            })?;
        }
        if !route.config.identity_headers.is_empty() {
            ctx.claims = Some(session.claims.clone());
        }
        if route.config.identity_assertion {
            ctx.assertion = self.identity_assertion(&session, host)?;
        }
        let credentials = authenticate::Credentials {
            bearer: session.bearer.ok_or(authenticate::NOT_A_HEADER_VALUE)?,
            dpop: session.dpop,
        };
        if route.config.upstream().is_some() {
            // Only a forwarded request carries the token; a static route's file is answered here.
            let header_bytes = browser_checks::header_block_bytes(req);
            browser_checks::check_forwarded_size(header_bytes, &credentials.bearer, &live.limits)?;
        }
        ctx.forward(credentials, route.config.dpop);
        Ok(Decision::Forward)
    }

    /// The signed assertion of who the session's user is, for the host the browser addressed.
    fn identity_assertion(
        &self,
        session: &HotSession,
        host: &str,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        let Some(assertions) = &self.assertions else {
            return Ok(None);
        };
        assertions
            .for_session(&session.claims, host, &session.assertions)
            .map(Some)
            .map_err(|_| ProxyError::Internal("identity_assertion_sign_failed"))
    }

    fn on_auth_port(&self, session: &Session) -> bool {
        self.auth_port.is_some_and(|port| {
            session
                .server_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| a.port() == port)
        })
    }

    /// A request body that stopped arriving ends its connection like the edge's own timeouts.
    fn count_body_timeout(&self) {
        self.metrics
            .connections_closed
            .with_label_values(&["body_timeout"])
            .inc();
        tracing::debug!(reason = "body_timeout", "connection closed");
    }

    /// A 503 portcullis gave because a dependency was down, by the same reason as the log line.
    fn count_fail_closed(&self, e: &ProxyError) {
        self.metrics
            .fail_closed
            .with_label_values(&[e.reason()])
            .inc();
    }

    /// Removes every upstream `Set-Cookie` that would set or clear one of portcullis's cookies;
    /// says whether there was one.
    fn drop_own_set_cookies(&self, headers: &mut HeaderMap) -> Result<bool, TooManyFields> {
        let own = |v: &HeaderValue| self.cookies.sets_own_cookie(v.as_bytes());
        if !headers.get_all(header::SET_COOKIE).iter().any(own) {
            return Ok(false);
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !own(v))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.try_append(header::SET_COOKIE, v)?;
        }
        Ok(true)
    }

    fn login_redirect(&self, req: &pingora::http::RequestHeader) -> Reply {
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let return_to = validate_return_to(target).unwrap_or("/");
        let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        Reply::redirect(format!("/bff/login?returnTo={encoded}"))
    }
}

/// Refuses what no route may receive: a request for a host that is not portcullis's (421), and
/// methods never proxied.
fn screen(req: &RequestHeader, host: &str, live: &Live) -> Result<(), ProxyError> {
    live.hosts.check(host)?;
    if is_refused_method(&req.method) {
        return Err(ProxyError::MethodNotAllowed);
    }
    Ok(())
}

/// The route for the request's path, once its target has passed the canonical-path rules (or
/// the route opted out of them).
fn find_route<'l>(
    req: &RequestHeader,
    host: &str,
    live: &'l Live,
) -> Result<Option<&'l Route>, ProxyError> {
    let route = live.routes.find(host, req.uri.path());
    if let Err(rejection) = canonical::check_target(req.raw_path()) {
        if !route.is_some_and(|r| r.config.allow_ambiguous_paths) {
            return Err(ProxyError::AmbiguousPath(rejection.reason()));
        }
    }
    Ok(route)
}

/// What a request authenticates with, as far as the gate is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// The session cookie, if any: the browser attaches it to any request to the site.
    Cookie,
    /// The request's own bearer token (a machine client's).
    Bearer,
}

/// The route's checks before any session is looked up: a CORS preflight is answered, the
/// method and any upgrade must be allowed, and the CSRF rules hold (a forged request learns
/// nothing, not even whether a session exists).
fn gate(
    req: &RequestHeader,
    host: &str,
    route: &Route,
    live: &Live,
    ctx: &mut RequestCtx,
    credential: Credential,
) -> Result<Option<Reply>, ProxyError> {
    let policy = &route.policy;
    if policy.cors && browser_checks::is_preflight(req) {
        if let Some(origin) = live.origins.cors_origin(req) {
            return Ok(Some(preflight_reply(origin, &route.config)));
        }
    }
    if route
        .config
        .methods
        .as_ref()
        .is_some_and(|m| !m.contains(&req.method))
    {
        return Err(ProxyError::MethodNotAllowed);
    }
    ctx.websocket = websocket_upgrade(req, &route.config)?;
    if ctx.websocket {
        // A handshake cannot carry X-CSRF; a trusted Origin stands in for it.
        live.origins.check_upgrade_origin(req, host)?;
    } else if policy.csrf && credential == Credential::Cookie {
        // CSRF rides on ambient credentials, which a browser adds to a forged request by
        // itself. A bearer token never is: whoever sends one holds it, and a request with it
        // and a session cookie both is refused (`admit_machine`).
        bff::require_csrf_header(req)?;
        live.origins.check_request_origin(req, host)?;
    }
    if policy.cors {
        // A value of the request's own `Origin` field, so always a valid header value.
        ctx.cors_origin = live
            .origins
            .cors_origin(req)
            .and_then(|o| HeaderValue::from_str(o).ok());
    }
    Ok(None)
}

/// Whether the request is an accepted WebSocket upgrade. Any other upgrade (h2c, or WebSocket
/// on a route not configured for it) is refused rather than silently downgraded (R46).
fn websocket_upgrade(
    req: &pingora::http::RequestHeader,
    route: &RouteConfig,
) -> Result<bool, ProxyError> {
    if req.headers.get(http::header::UPGRADE).is_none() {
        return Ok(false);
    }
    if route.websocket && inject::is_websocket_upgrade(req) {
        Ok(true)
    } else {
        Err(ProxyError::Forbidden("upgrade_not_allowed"))
    }
}

/// The answer to a CORS preflight from a configured origin: exact echo, credentials, never `*`.
fn preflight_reply(origin: &str, route: &RouteConfig) -> Reply {
    let methods = route.methods.as_ref().map_or_else(
        || "GET, HEAD, POST, PUT, PATCH, DELETE".to_string(),
        |m| m.iter().map(Method::as_str).collect::<Vec<_>>().join(", "),
    );
    Reply::new(204)
        .header("access-control-allow-origin", origin)
        .header("access-control-allow-credentials", "true")
        .header("access-control-allow-methods", methods)
        .header("access-control-allow-headers", "x-csrf, content-type")
        .header("access-control-max-age", "600")
        .header("vary", "Origin")
}

/// A failure to proxy as one of portcullis's errors: the client's own fault (a body that
/// stopped arriving, or broke off) or the upstream's, never echoing the error itself.
fn proxy_failure(e: &Error) -> ProxyError {
    let downstream = e.esource() == &pingora::ErrorSource::Downstream;
    match e.etype() {
        ErrorType::HTTPStatus(code) if (400..600).contains(code) => ProxyError::ProxyStatus(*code),
        ErrorType::ReadTimedout if downstream => ProxyError::BodyTimeout,
        _ if downstream => ProxyError::ClientAborted,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ProxyError::UpstreamTimeout
        }
        _ => ProxyError::UpstreamFailed,
    }
}

/// How the request's route writes errors; text before a route is chosen.
fn errors_format(ctx: &RequestCtx) -> Format {
    ctx.route
        .and_then(|i| ctx.live.routes.policy(i))
        .map_or(Format::Text, |p| p.errors)
}

/// `X-Forwarded-Host` values: `public_url`'s authority, built once, and for a request on another
/// of portcullis's hosts that host (as screened: lower case, never the client's spelling or
/// port) with `public_url`'s port, since every host is served behind the same front door.
struct ForwardedHosts {
    public: Option<HeaderValue>,
    public_name: String,
    port_suffix: String,
}

impl ForwardedHosts {
    fn new(public_origin: &str) -> ForwardedHosts {
        let url = url::Url::parse(public_origin).ok();
        let public_name = url
            .as_ref()
            .and_then(|u| u.host_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let port_suffix = url
            .as_ref()
            .and_then(url::Url::port)
            .map_or_else(String::new, |p| format!(":{p}"));
        ForwardedHosts {
            public: HeaderValue::from_str(&format!("{public_name}{port_suffix}")).ok(),
            public_name,
            port_suffix,
        }
    }

    /// `None`: the request named `public_url`'s host, whose value is `public`.
    fn for_other_host(&self, host: &str) -> Option<HeaderValue> {
        if host == self.public_name {
            return None;
        }
        HeaderValue::from_str(&format!("{host}{}", self.port_suffix)).ok()
    }
}

fn is_refused_method(m: &Method) -> bool {
    m == Method::TRACE || m == Method::CONNECT || m.as_str() == "TRACK"
}

#[async_trait]
impl ProxyHttp for Portcullis {
    /// Boxed: Pingora keeps the context in its per-request futures (three copies of it in the
    /// one allocated and copied for every request), so its size is paid per request.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx {
            started: Instant::now(),
            route: None,
            label: "none",
            bearer: None,
            dpop: None,
            claims: None,
            assertion: None,
            forwarded_host: None,
            websocket: false,
            cors_origin: None,
            request_id: RequestId::default(),
            trace: RequestTrace::default(),
            live: self.live.load_full(),
            _in_flight: self.in_flight.enter(),
        })
    }

    /// Route, answer `/bff/*`, authenticate and check CSRF. `Ok(true)` means "response already
    /// written, stop here" (Pingora's contract for this phase).
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> pingora::Result<bool> {
        ctx.request_id = self.request_ids.for_request(session.req_header());
        ctx.trace = self.start_trace(session, ctx.request_id.as_str());
        let span = tracing::info_span!("request", request_id = ctx.request_id.as_str());
        let traced = ctx.trace.span();
        let reply = match self
            .decide(session, ctx)
            .instrument(span)
            .instrument(traced)
            .await
        {
            Ok(Decision::Forward) => return Ok(false),
            Ok(Decision::Reply(reply)) => reply,
            Ok(Decision::File(served)) => {
                Box::pin(self.write_file(session, &served, ctx)).await?;
                return Ok(true);
            }
            Err(e) => {
                log_failure(&e, ctx.request_id.as_str(), None);
                if e.ends_connection() {
                    // The rest of this request (a body, more header) cannot be trusted to be
                    // framed as the client meant: say so and close.
                    session.set_keepalive(None);
                }
                if matches!(e, ProxyError::BodyTimeout) {
                    self.count_body_timeout();
                }
                if e.fails_closed() {
                    self.count_fail_closed(&e);
                }
                let reply = respond::error_reply(&e, errors_format(ctx));
                if matches!(e, ProxyError::StaleCookie(_)) {
                    reply.header("set-cookie", self.cookies.expire_session())
                } else {
                    reply
                }
            }
        };
        let reply = reply.header("x-request-id", ctx.request_id.as_str());
        Box::pin(respond::write_reply(session, reply, &self.security)).await?;
        Ok(true)
    }

    /// The route's upstream, chosen from configuration only (never from the request).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> pingora::Result<Box<HttpPeer>> {
        let peer = ctx
            .route
            .and_then(|i| ctx.live.peers.get(i))
            .and_then(Option::as_ref)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route selected"))?;
        Ok(Box::new(peer.clone()))
    }

    /// Strip client-controlled credentials, forwarding and hop-by-hop headers and portcullis's
    /// cookies, then inject the bearer token and portcullis's own `X-Forwarded-*`.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> pingora::Result<()> {
        let client_ip = trace::client_ip(session).and_then(inject::ip_header_value);
        let add = inject::Injection {
            bearer: ctx.bearer.as_ref(),
            client_ip,
            public_proto: &self.public_proto,
            forwarded_host: ctx
                .forwarded_host
                .take()
                .or_else(|| self.forwarded_hosts.public.clone()),
            request_id: &ctx.request_id.0,
            websocket: ctx.websocket,
        };
        inject::prepare_upstream_request(upstream_request, &self.cookies, add)?;
        let route = ctx.route.and_then(|i| ctx.live.routes.get(i));
        if let (Some(binding), Some(upstream)) =
            (&ctx.dpop, route.and_then(|r| r.config.upstream()))
        {
            dpop::authorize(upstream_request, binding, upstream)?;
        }
        if let Some(route) = route {
            identity::set_identity_headers(
                upstream_request,
                &route.config.identity_headers,
                ctx.claims.as_deref(),
            )?;
        }
        if let Some(assertions) = &self.assertions {
            // Whatever the route: only portcullis's own assertion may reach an upstream.
            upstream_request.remove_header(assertions.header());
            if let Some(value) = ctx.assertion.take() {
                upstream_request.insert_header(assertions.header().clone(), value)?;
            }
        }
        self.propagate_trace(session, upstream_request, ctx);
        Ok(())
    }

    /// Drop the upstream's hop-by-hop fields and any `Set-Cookie` by which it would set or
    /// clear portcullis's cookies; add the request id, CORS and CSP headers.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> pingora::Result<()> {
        let page_csp = ctx
            .route
            .and_then(|i| ctx.live.routes.policy(i))
            .is_some_and(|p| p.page_csp)
            .then_some(ctx.live.page_csp.as_ref())
            .flatten();
        let status = resp.status;
        let dropped_own_cookie = header_map::edit_response(resp, |headers| {
            hop_by_hop::strip_from_response(status, headers)?;
            headers.try_insert(inject::X_REQUEST_ID, ctx.request_id.0.clone())?;
            if let Some(origin) = ctx.cors_origin.clone() {
                headers.try_insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
                headers.try_insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                )?;
                headers.try_append(header::VARY, HeaderValue::from_static("Origin"))?;
            }
            // The upstream's own policy wins; portcullis fills in when there is none.
            if let Some(csp) = page_csp {
                if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
                    headers.try_insert(header::CONTENT_SECURITY_POLICY, csp.clone())?;
                }
            }
            self.drop_own_set_cookies(headers)
        })?;
        if dropped_own_cookie {
            tracing::warn!(
                reason = "upstream_set_own_cookie",
                "dropped an upstream Set-Cookie for a portcullis cookie"
            );
        }
        Ok(())
    }

    /// Counts upstream connections opened (not reused), the figure that shows pool churn.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut Box<RequestCtx>,
    ) -> pingora::Result<()> {
        if !reused {
            self.upstream_opened.inc();
        }
        Ok(())
    }

    /// Upstream failures become a generic 502/504; nothing from the upstream error is echoed.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let failure = proxy_failure(e);
        if matches!(failure, ProxyError::BodyTimeout) {
            self.count_body_timeout();
        }
        log_failure(&failure, ctx.request_id.as_str(), Some(e));
        let reply = respond::error_reply(&failure, errors_format(ctx));
        let status = reply.status;
        session.set_keepalive(None);
        if let Err(write_err) = respond::write_reply(session, reply, &self.security).await {
            tracing::debug!(error = %write_err, "could not write the error response");
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Counts the request by route kind and status class (never by user, session or path), and
    /// ends its trace.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.request_series
            .observe(ctx.label, status, ctx.started.elapsed().as_secs_f64());
        self.finish_trace(session, ctx, status, e.is_some());
    }
}

/// A request's id, as `X-Request-Id` carries it both ways (a header value that is cloned, not
/// copied, onto the upstream request and the response) and as log lines show it.
struct RequestId(HeaderValue);

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId(HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// Ids are checked or minted to be ASCII, so this is the whole id.
    fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// Request ids: the client's `X-Request-Id` when it is a plausible id, else a fresh one made of
/// a random per-process prefix and a counter, so minting one costs no system call.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: random_token::<9>(),
            next: AtomicU64::new(0),
        }
    }

    fn for_request(&self, req: &pingora::http::RequestHeader) -> RequestId {
        const MAX_LEN: usize = 128;
        let plausible = |v: &&HeaderValue| {
            let v = v.as_bytes();
            !v.is_empty()
                && v.len() <= MAX_LEN
                && v.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        };
        match req.headers.get(X_REQUEST_ID).filter(plausible) {
            Some(id) => RequestId(id.clone()),
            None => self.mint(),
        }
    }

    fn mint(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // The prefix is base64url and the counter hex: always a valid header value. Written by
        // hand: `format!` was a measurable share of a proxied request.
        let mut id = Vec::with_capacity(self.prefix.len() + 17);
        id.extend_from_slice(self.prefix.as_bytes());
        id.push(b'-');
        push_hex(&mut id, n);
        let id = bytes::Bytes::from(id);
        RequestId(
            HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("-")),
        )
    }
}

/// Appends `n` in lower-case hex, without leading zeros.
fn push_hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (u64::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

const X_REQUEST_ID: http::header::HeaderName =
    http::header::HeaderName::from_static("x-request-id");

/// One line per request portcullis answered itself or failed to forward, at the level
/// `respond::classify` gives it; the detail (never the request's own bytes) only at warn.
fn log_failure(e: &ProxyError, request_id: &str, cause: Option<&Error>) {
    match respond::classify(e).severity {
        Severity::Warn => match cause {
            Some(cause) => {
                tracing::warn!(request_id, reason = e.reason(), error = %cause, "proxying failed")
            }
            None => tracing::warn!(request_id, reason = e.reason(), error = %e, "request rejected"),
        },
        Severity::Info => tracing::info!(request_id, reason = e.reason(), "request rejected"),
        Severity::Debug => tracing::debug!(request_id, reason = e.reason(), "request rejected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(etype: ErrorType, downstream: bool) -> Box<Error> {
        if downstream {
            Error::new_down(etype)
        } else {
            Error::new_up(etype)
        }
    }

    #[test]
    fn request_id_counters_are_lower_case_hex_without_leading_zeros() {
        for (n, hex) in [(0, "0"), (9, "9"), (10, "a"), (255, "ff"), (256, "100")] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, hex.as_bytes());
        }
        let mut out = Vec::new();
        push_hex(&mut out, u64::MAX);
        assert_eq!(out, format!("{:x}", u64::MAX).as_bytes());
    }

    #[test]
    fn forwarded_host_is_the_screened_host_with_the_public_port() {
        let hosts = ForwardedHosts::new("http://127.0.0.1:4480");
        assert_eq!(hosts.public.as_ref().unwrap(), "127.0.0.1:4480");
        assert_eq!(hosts.for_other_host("127.0.0.1"), None);
        assert_eq!(
            hosts.for_other_host("docs.localhost").unwrap(),
            "docs.localhost:4480"
        );
        let https = ForwardedHosts::new("https://App.Example.com");
        assert_eq!(https.public.as_ref().unwrap(), "app.example.com");
        assert_eq!(
            https.for_other_host("shop.example.com").unwrap(),
            "shop.example.com"
        );
    }

    #[test]
    fn upstream_failures_map_through_the_one_table() {
        let (downstream, upstream) = (true, false);
        let cases = [
            (ErrorType::ReadTimedout, downstream, 408, Severity::Debug),
            (ErrorType::ConnectionClosed, downstream, 400, Severity::Info),
            (ErrorType::ConnectTimedout, upstream, 504, Severity::Warn),
            (ErrorType::ReadTimedout, upstream, 504, Severity::Warn),
            (ErrorType::ConnectRefused, upstream, 502, Severity::Warn),
            (ErrorType::InvalidHTTPHeader, upstream, 502, Severity::Warn),
            (ErrorType::HTTPStatus(413), downstream, 413, Severity::Info),
            (ErrorType::HTTPStatus(503), upstream, 503, Severity::Warn),
        ];
        for (etype, source, status, severity) in cases {
            let e = proxy_failure(&failure(etype.clone(), source));
            let class = respond::classify(&e);
            assert_eq!(
                (class.status, class.severity),
                (status, severity),
                "{etype:?}, downstream: {source}"
            );
        }
        let json = respond::error_reply(&ProxyError::UpstreamFailed, Format::Json);
        assert_eq!(json.body, "{\"error\":\"bad_gateway\"}");
        let text = respond::error_reply(&ProxyError::UpstreamTimeout, Format::Text);
        assert_eq!(text.body, "Gateway timeout\n");
    }
}
