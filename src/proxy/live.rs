//! The part of the proxy's configuration a reload replaces (see `reload`): routes and their
//! upstream peers, the security limits, access rules, trusted origins and hosts, the page CSP,
//! and the edge's head limits and timeouts. Built whole from one validated `Config` and never
//! changed after; a reload swaps in a new one. Each request takes one snapshot when it starts
//! and keeps it to the end, so it sees one configuration even if a reload lands half-way
//! through it (a route index taken in `request_filter` still names the same peer in
//! `upstream_peer`).
//! The `/bff/*` endpoints and a token refresh load it where they check the access rules or
//! a trusted origin: a login or refresh is judged by the rules in force when it is judged.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::browser_checks::{OurHosts, TrustedOrigins};
use super::ingress::IngressPolicy;
use super::route::RouteTable;
use crate::config::{AccessConfig, Config, HostPattern, RouteConfig, SecurityConfig};
use crate::edge::head::HeadLimits;

/// Held by every proxy thread and edge; `load_full` gives a request its snapshot.
pub type LiveConfig = Arc<ArcSwap<Live>>;

pub struct Live {
    pub(crate) routes: RouteTable,
    /// By route index; `None` for a static route, which has no upstream.
    pub(super) peers: Vec<Option<HttpPeer>>,
    pub(super) limits: SecurityConfig,
    pub(super) access: AccessConfig,
    pub(super) origins: TrustedOrigins,
    pub(super) hosts: OurHosts,
    pub(super) page_csp: Option<HeaderValue>,
    /// The ingress controllers' auth endpoint's rules, when that mode is on.
    pub(super) ingress: Option<IngressPolicy>,
    /// Whether the OP returns logged-out browsers through `/bff/logout/callback`.
    pub(super) logout_callback_registered: bool,
    pub(crate) edge: EdgeSettings,
}

/// What the edge checks before Pingora sees a request.
pub struct EdgeSettings {
    pub limits: HeadLimits,
    pub max_chunked_body: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
}

impl Live {
    pub fn from_config(cfg: &Config) -> Live {
        // Hosts named by routes and by the ingress auth mode are portcullis's too.
        let named_hosts: Vec<HostPattern> = cfg
            .ingress_auth
            .iter()
            .flat_map(|a| a.hosts.iter().map(|h| h.host.clone()))
            .chain(cfg.routes.iter().filter_map(|r| r.host.clone()))
            .collect();
        let hosts = OurHosts::new(&cfg.public_origin, &cfg.server.allowed_hosts, &named_hosts);
        Live {
            routes: RouteTable::new(&cfg.routes),
            peers: cfg.routes.iter().map(|r| build_peer(r, cfg)).collect(),
            limits: cfg.security.clone(),
            access: cfg.access.clone(),
            origins: TrustedOrigins::new(&cfg.public_origin, &cfg.security, hosts.clone()),
            hosts,
            ingress: cfg.ingress_auth.as_ref().map(IngressPolicy::new),
            page_csp: cfg
                .security
                .content_security_policy
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok()),
            logout_callback_registered: cfg.oidc.post_logout_redirect_uri.as_str()
                == format!("{}/bff/logout/callback", cfg.public_origin),
            edge: EdgeSettings::from_config(cfg),
        }
    }

    /// The shared, swappable holder the proxy threads and edges are built with.
    pub fn shared(cfg: &Config) -> LiveConfig {
        Arc::new(ArcSwap::from_pointee(Live::from_config(cfg)))
    }
}

impl EdgeSettings {
    fn from_config(cfg: &Config) -> EdgeSettings {
        EdgeSettings {
            limits: HeadLimits {
                max_target_bytes: cfg.security.max_uri_bytes,
                max_header_bytes: cfg.security.max_header_bytes,
                max_header_count: cfg.security.max_header_count,
                max_cookie_bytes: cfg.security.max_cookie_bytes,
            },
            max_chunked_body: cfg.security.max_chunked_body_bytes,
            header_timeout: cfg.server.request_header_timeout,
            body_timeout: cfg.server.request_body_timeout,
            keepalive_timeout: cfg.server.keepalive_timeout,
        }
    }
}

fn build_peer(route: &RouteConfig, cfg: &Config) -> Option<HttpPeer> {
    let up = route.upstream()?;
    let mut peer = HttpPeer::new(up.address(), up.tls, up.host.clone());
    peer.options.connection_timeout = Some(cfg.server.upstream_connect_timeout);
    peer.options.read_timeout = Some(cfg.server.upstream_read_timeout);
    peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
    Some(peer)
}
