//! Every metric portcullis exports, defined once. Labels come from small fixed sets (route
//! kind, status class, outcome), never from users, sessions or tokens, so cardinality stays
//! bounded and nothing secret can reach a label.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Request latency buckets: a sidecar adds well under a millisecond, upstreams take longer.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Store latency buckets: a loopback Redis answers in ~100 µs; seconds mean timeouts.
const STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];

pub const ROUTE_KINDS: [&str; 7] = ["api", "page", "public", "static", "bff", "auth", "none"];
/// The answers of the ingress auth endpoint (`proxy::ingress`).
pub const AUTH_DECISIONS: [&str; 7] = [
    "allow",
    "public",
    "unauthenticated",
    "redirect",
    "denied",
    "invalid",
    "error",
];
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "other"];
/// Every family with an `outcome` label spells it the same way: `success` and `failure`, plus
/// values that name a specific case (`started`, `rejected`, `replayed`, …).
pub const LOGIN_OUTCOMES: [&str; 3] = ["started", "success", "failure"];
/// Every `op` the session store times (`Sessions::timed`), so each series exists from start-up.
pub const STORE_OPS: [&str; 9] = [
    "get", "set", "take", "expire", "delete", "lock", "unlock", "ping", "index",
];
pub const SESSION_END_REASONS: [&str; 5] = [
    "logout",
    "expired",
    "refresh_failed",
    "access_denied",
    "invalid",
];
pub const REFRESH_OUTCOMES: [&str; 6] = [
    "success",
    "fatal",
    "transient",
    "waited",
    "session_ended",
    "superseded",
];
pub const RATE_LIMITED_ENDPOINTS: [&str; 3] = ["login", "callback", "backchannel_logout"];
pub const BACKCHANNEL_OUTCOMES: [&str; 3] = ["success", "rejected", "replayed"];
/// Why the edge ended a downstream connection (or a request body read) itself.
pub const CONNECTION_CLOSE_REASONS: [&str; 9] = [
    "header_timeout",
    "body_timeout",
    "keepalive_timeout",
    "connection_limit",
    "uri_too_long",
    "headers_too_large",
    "body_too_large",
    "bad_request",
    "bad_framing",
];
pub const OP_CALLS: [&str; 6] = [
    "discovery",
    "jwks",
    "token",
    "refresh",
    "revocation",
    "introspection",
];
/// Why portcullis answered 503 itself instead of serving without a dependency it needs (it
/// fails closed): the `ProxyError::reason` of each such error.
/// How a configuration reload ended: applied, refused as invalid, or refused because it
/// changes something only a restart applies.
pub const RELOAD_OUTCOMES: [&str; 3] = ["success", "failure", "restart_required"];
/// How a machine client's request on a `routes[].machine_clients` route ended: admitted, or
/// the reason it was refused (`proxy::machine`, `oidc::access_token`).
pub const MACHINE_AUTH_OUTCOMES: [&str; 18] = [
    "admitted",
    "malformed",
    "bad_header",
    "bad_type",
    "bad_algorithm",
    "bad_signature",
    "bad_issuer",
    "bad_audience",
    "expired",
    "not_yet_valid",
    "inactive",
    "not_a_jwt",
    "dpop_scheme",
    "mixed_credentials",
    "access_denied",
    "unavailable",
    "authorization_duplicated",
    "bound_token",
];
pub const FAIL_CLOSED_REASONS: [&str; 3] =
    ["store_unavailable", "oidc_not_ready", "refresh_unavailable"];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub logins: IntCounterVec,
    pub store_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    pub sessions_created: IntCounter,
    pub sessions_ended: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub refresh_lock_waits: IntCounter,
    pub backchannel_logouts: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub session_cache: IntCounterVec,
    pub op_duration: HistogramVec,
    pub connections_open: IntGauge,
    pub connections_closed: IntCounterVec,
    pub upstream_connections_opened: IntCounter,
    pub fail_closed: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub auth_requests: IntCounterVec,
    pub machine_auth: IntCounterVec,
    pub machine_token_cache: IntCounterVec,
    build_info: IntGaugeVec,
}

/// The position of a status's class in `STATUS_CLASSES`.
fn status_class_index(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        500..=599 => 3,
        _ => 4,
    }
}

/// The request series for every route kind and status class, resolved once: `with_label_values`
/// hashes its labels on every call, which a profile of the request path shows.
pub struct RequestSeries {
    counts: Vec<Vec<IntCounter>>,
    durations: Vec<Histogram>,
}

impl RequestSeries {
    pub fn new(m: &Metrics) -> RequestSeries {
        RequestSeries {
            counts: ROUTE_KINDS
                .iter()
                .map(|k| {
                    STATUS_CLASSES
                        .iter()
                        .map(|c| m.requests.with_label_values(&[k, c]))
                        .collect()
                })
                .collect(),
            durations: ROUTE_KINDS
                .iter()
                .map(|k| m.request_duration.with_label_values(&[k]))
                .collect(),
        }
    }

    /// Counts a finished request; `kind` is one of `ROUTE_KINDS`.
    pub fn observe(&self, kind: &str, status: u16, seconds: f64) {
        let Some(k) = ROUTE_KINDS.iter().position(|r| *r == kind) else {
            return;
        };
        if let Some(counter) = self.counts[k].get(status_class_index(status)) {
            counter.inc();
        }
        self.durations[k].observe(seconds);
    }
}

impl Metrics {
    /// Registers every family and pre-creates each label combination, so dashboards and
    /// alerts see zeros from start-up instead of missing series.
    pub fn new(store_kind: &'static str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "portcullis_requests_total",
                    "Requests handled, by route kind and status class",
                ),
                &["route_kind", "status_class"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "portcullis_request_duration_seconds",
                    "Time from request to response end, by route kind",
                )
                .buckets(REQUEST_BUCKETS.to_vec()),
                &["route_kind"],
            )?,
            logins: IntCounterVec::new(
                Opts::new("portcullis_logins_total", "Login flows, by outcome"),
                &["outcome"],
            )?,
            store_duration: HistogramVec::new(
                HistogramOpts::new(
                    "portcullis_session_store_operation_duration_seconds",
                    "Session store operation latency",
                )
                .buckets(STORE_BUCKETS.to_vec()),
                &["op", "store"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "portcullis_session_store_errors_total",
                    "Session store operations that failed",
                ),
                &["op", "store"],
            )?,
            sessions_created: IntCounter::new(
                "portcullis_sessions_created_total",
                "Sessions created by a completed login",
            )?,
            sessions_ended: IntCounterVec::new(
                Opts::new(
                    "portcullis_sessions_ended_total",
                    "Sessions ended, by reason",
                ),
                &["reason"],
            )?,
            refreshes: IntCounterVec::new(
                Opts::new(
                    "portcullis_token_refreshes_total",
                    "Access-token refreshes, by outcome",
                ),
                &["outcome"],
            )?,
            refresh_lock_waits: IntCounter::new(
                "portcullis_token_refresh_lock_waits_total",
                "Requests that waited for another request's (or replica's) refresh of the same session",
            )?,
            backchannel_logouts: IntCounterVec::new(
                Opts::new("portcullis_backchannel_logouts_total", "Back-channel logout requests, by outcome"),
                &["outcome"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new("portcullis_rate_limited_total", "Requests refused by a rate limit, by endpoint and limit"),
                &["endpoint", "limit"],
            )?,
            session_cache: IntCounterVec::new(
                Opts::new("portcullis_session_cache_events_total", "In-process session cache hits, misses, invalidations and flushes"),
                &["event"],
            )?,
            op_duration: HistogramVec::new(
                HistogramOpts::new(
                    "portcullis_op_request_duration_seconds",
                    "Time spent waiting on the OpenID Provider, by call",
                )
                .buckets(REQUEST_BUCKETS.to_vec()),
                &["call"],
            )?,
            connections_open: IntGauge::new(
                "portcullis_connections_open",
                "Downstream connections open now (at most server.max_connections)",
            )?,
            connections_closed: IntCounterVec::new(
                Opts::new(
                    "portcullis_connections_closed_total",
                    "Downstream connections or requests ended by portcullis's own limits and timeouts, by reason",
                ),
                &["reason"],
            )?,
            upstream_connections_opened: IntCounter::new(
                "portcullis_upstream_connections_opened_total",
                "Connections opened to upstreams (a request that reuses a pooled one opens none)",
            )?,
            fail_closed: IntCounterVec::new(
                Opts::new(
                    "portcullis_fail_closed_total",
                    "Requests answered 503 because a dependency (session store, OP) was unavailable, by reason",
                ),
                &["reason"],
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "portcullis_config_reloads_total",
                    "Configuration reloads (file change or SIGHUP), by outcome",
                ),
                &["outcome"],
            )?,
            auth_requests: IntCounterVec::new(
                Opts::new(
                    "portcullis_auth_requests_total",
                    "Ingress controllers' auth requests, by decision (allow, public, unauthenticated, redirect, denied, invalid, error)",
                ),
                &["decision"],
            )?,
            machine_auth: IntCounterVec::new(
                Opts::new(
                    "portcullis_machine_auth_total",
                    "Machine clients' bearer-token requests on machine_clients routes, by outcome (admitted or the refusal's reason)",
                ),
                &["outcome"],
            )?,
            machine_token_cache: IntCounterVec::new(
                Opts::new(
                    "portcullis_machine_token_cache_events_total",
                    "Machine-client token verdicts served from the in-process cache (hit) or verified anew (miss)",
                ),
                &["event"],
            )?,
            build_info: IntGaugeVec::new(
                Opts::new(
                    "portcullis_build_info",
                    "Always 1; labelled with the version",
                ),
                &["version"],
            )?,
            registry,
        };
        m.register_all()?;
        m.initialise_series(store_kind);
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.requests.clone()))?;
        r.register(Box::new(self.request_duration.clone()))?;
        r.register(Box::new(self.logins.clone()))?;
        r.register(Box::new(self.store_duration.clone()))?;
        r.register(Box::new(self.store_errors.clone()))?;
        r.register(Box::new(self.sessions_created.clone()))?;
        r.register(Box::new(self.sessions_ended.clone()))?;
        r.register(Box::new(self.refreshes.clone()))?;
        r.register(Box::new(self.refresh_lock_waits.clone()))?;
        r.register(Box::new(self.backchannel_logouts.clone()))?;
        r.register(Box::new(self.rate_limited.clone()))?;
        r.register(Box::new(self.session_cache.clone()))?;
        r.register(Box::new(self.op_duration.clone()))?;
        r.register(Box::new(self.connections_open.clone()))?;
        r.register(Box::new(self.connections_closed.clone()))?;
        r.register(Box::new(self.upstream_connections_opened.clone()))?;
        r.register(Box::new(self.fail_closed.clone()))?;
        r.register(Box::new(self.config_reloads.clone()))?;
        r.register(Box::new(self.auth_requests.clone()))?;
        r.register(Box::new(self.machine_auth.clone()))?;
        r.register(Box::new(self.machine_token_cache.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        Ok(())
    }

    fn initialise_series(&self, store_kind: &'static str) {
        for kind in ROUTE_KINDS {
            self.request_duration.with_label_values(&[kind]);
            for class in STATUS_CLASSES {
                self.requests.with_label_values(&[kind, class]);
            }
        }
        for o in LOGIN_OUTCOMES {
            self.logins.with_label_values(&[o]);
        }
        for op in STORE_OPS {
            self.store_duration.with_label_values(&[op, store_kind]);
            self.store_errors.with_label_values(&[op, store_kind]);
        }
        for r in SESSION_END_REASONS {
            self.sessions_ended.with_label_values(&[r]);
        }
        for o in REFRESH_OUTCOMES {
            self.refreshes.with_label_values(&[o]);
        }
        for endpoint in RATE_LIMITED_ENDPOINTS {
            for limit in ["client", "global"] {
                self.rate_limited.with_label_values(&[endpoint, limit]);
            }
        }
        for e in ["hit", "miss", "invalidation", "flush"] {
            self.session_cache.with_label_values(&[e]);
        }
        for o in BACKCHANNEL_OUTCOMES {
            self.backchannel_logouts.with_label_values(&[o]);
        }
        for call in OP_CALLS {
            self.op_duration.with_label_values(&[call]);
        }
        for r in CONNECTION_CLOSE_REASONS {
            self.connections_closed.with_label_values(&[r]);
        }
        for r in FAIL_CLOSED_REASONS {
            self.fail_closed.with_label_values(&[r]);
        }
        for o in RELOAD_OUTCOMES {
            self.config_reloads.with_label_values(&[o]);
        }
        for d in AUTH_DECISIONS {
            self.auth_requests.with_label_values(&[d]);
        }
        for o in MACHINE_AUTH_OUTCOMES {
            self.machine_auth.with_label_values(&[o]);
        }
        for e in ["hit", "miss"] {
            self.machine_token_cache.with_label_values(&[e]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
