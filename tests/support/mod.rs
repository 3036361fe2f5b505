//! Test harness: real processes on loopback (redis-server, the oidc-provider fixture, the
//! portcullis binary) plus a recording upstream, each stopped when its handle drops.
//! Servers in this process bind port 0; processes get a port from `free_port`. Every wait polls
//! with a deadline.
#![allow(dead_code)]

pub mod assertion_upstream;
pub mod browser;
pub mod chromium;
pub mod configmap;
pub mod dpop;
pub mod ingress_nginx;
pub mod jaeger;
pub mod mtls;
pub mod node;
pub mod op;
pub mod portcullis;
mod ports;
pub mod promtool;
pub mod redis;
pub mod redis_topologies;
pub mod rogue_op;
pub mod upstream;

pub use ports::free_port;

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Binds a loopback port and runs `serve` on it on a thread and runtime of its own, so the
/// server outlives any one test's runtime; it stops when the returned sender fires or drops.
/// Returns the port too.
pub fn spawn_server<F, Fut>(serve: F) -> (u16, tokio::sync::oneshot::Sender<()>)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let port = listener.local_addr().expect("local address").port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            tokio::select! {
                _ = stop_rx => {}
                _ = serve(listener) => {}
            }
        });
    });
    (port, stop_tx)
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking twin of `eventually` for synchronous set-up code.
pub fn eventually_blocking<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One OP, one recording upstream, optionally one redis-server, and one portcullis.
pub struct World {
    pub op: op::Op,
    pub upstream: upstream::Upstream,
    pub redis: Option<redis::RedisServer>,
    pub proxy: portcullis::Portcullis,
    store: portcullis::Store,
}

pub struct WorldOptions {
    pub redis: bool,
    pub access_token_ttl: u64,
    pub refresh_delay_ms: u64,
    pub revocation_delay_ms: u64,
    pub backchannel: bool,
    /// Use this session store URL (a Cluster or Sentinel the test started) instead of a
    /// standalone redis-server or memory.
    pub store_url: Option<String>,
    /// Serve the `/` page route from this upstream instead of the recording one.
    pub page_upstream: Option<String>,
    pub extra_config: String,
    /// `RUST_LOG` for portcullis.
    pub rust_log: &'static str,
    /// More host names portcullis answers on (with its port): the OP accepts their
    /// `/bff/callback` too.
    pub other_hosts: Vec<&'static str>,
    /// More of the OP fixture's env options (`op::OpOptions::env`).
    pub op_env: Vec<(&'static str, String)>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            redis: true,
            access_token_ttl: 300,
            refresh_delay_ms: 0,
            revocation_delay_ms: 0,
            backchannel: false,
            store_url: None,
            page_upstream: None,
            extra_config: String::new(),
            rust_log: "info",
            other_hosts: Vec::new(),
            op_env: Vec::new(),
        }
    }
}

impl World {
    pub async fn start(opts: WorldOptions) -> World {
        let redis = (opts.redis && opts.store_url.is_none()).then(redis::RedisServer::start);
        let upstream = upstream::Upstream::start();
        let mut proxy = portcullis::Portcullis::reserve();
        proxy.rust_log = opts.rust_log;
        let op = op::Op::start(op::OpOptions {
            app_origins: std::iter::once(proxy.origin())
                .chain(
                    opts.other_hosts
                        .iter()
                        .map(|h| format!("http://{h}:{}", proxy.port)),
                )
                .collect(),
            access_token_ttl: opts.access_token_ttl,
            refresh_delay_ms: opts.refresh_delay_ms,
            revocation_delay_ms: opts.revocation_delay_ms,
            backchannel: opts.backchannel,
            env: opts.op_env.clone(),
        });
        let store = match (&opts.store_url, &redis) {
            (Some(url), _) => portcullis::Store::Redis(url.clone()),
            (None, Some(r)) => portcullis::Store::Redis(r.url()),
            (None, None) => portcullis::Store::Memory,
        };
        let mut config = proxy.config(&op.issuer, &upstream, &store, &opts.extra_config);
        if let Some(page) = &opts.page_upstream {
            let page_route = format!(
                "{{ path: \"/\", upstream: \"{}\", kind: page }}",
                upstream.url()
            );
            config = config.replace(
                &page_route,
                &format!("{{ path: \"/\", upstream: \"{page}\", kind: page }}"),
            );
        }
        proxy.start(&config).await;
        World {
            op,
            upstream,
            redis,
            proxy,
            store,
        }
    }

    pub fn browser(&self) -> browser::Browser {
        browser::Browser::new(&self.proxy.origin())
    }

    /// Another portcullis process with the same configuration (and so the same store).
    pub async fn replica(&self, extra_config: &str) -> portcullis::Portcullis {
        self.replica_edited(|config| config + extra_config).await
    }

    /// Another portcullis process whose configuration is this world's as `edit` changes it.
    pub async fn replica_edited(
        &self,
        edit: impl FnOnce(String) -> String,
    ) -> portcullis::Portcullis {
        let mut replica = portcullis::Portcullis::reserve();
        let config = edit(replica.config(&self.op.issuer, &self.upstream, &self.store, ""));
        replica.start(&config).await;
        replica
    }

    /// Restarts this world's portcullis with `from` in its configuration replaced by `to`.
    pub async fn reconfigure(&mut self, from: &str, to: &str) {
        let config = std::fs::read_to_string(self.proxy.config_path()).expect("read config");
        assert!(config.contains(from), "the configuration has no {from:?}");
        self.proxy.stop();
        self.proxy.start(&config.replace(from, to)).await;
    }

    pub fn redis(&self) -> &redis::RedisServer {
        self.redis.as_ref().expect("this world has redis")
    }
}

/// The bearer token the upstream received on its last request.
pub fn last_bearer(upstream: &upstream::Upstream) -> String {
    let last = upstream.last();
    let auth = last.all("authorization");
    assert_eq!(auth.len(), 1, "exactly one Authorization header: {auth:?}");
    auth[0]
        .strip_prefix("Bearer ")
        .expect("a Bearer token")
        .to_string()
}

/// The status code of a raw HTTP/1 response (0 when there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The value of one series in Prometheus text output (0 when absent).
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
