//! Pingora wiring: one server with a background service (store connection, OIDC discovery and
//! its periodic refresh, memory-store sweeping, configuration reloads), one proxy service per
//! `server.threads` on `listen` (the `edge` in front of Pingora's HTTP proxy), and the admin
//! app on `admin_listen` with a thread of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service as ListeningService;
use pingora::services::{Service, ServiceReadyNotifier};
use tokio::sync::Semaphore;

use crate::admin::{Admin, ProxyListening};
use crate::assertion::{AssertionError, IdentityAssertions};
use crate::config::{is_loopback_name, Config, SessionConfig, StoreConfig};
use crate::edge::Edge;
use crate::listen::{check_listen_addresses, ListenError};
use crate::metrics::Metrics;
use crate::oidc::{Oidc, OidcError};
use crate::proxy::{Portcullis, Shared};
use crate::reload::{listen_for_hangup, Reloader};
use crate::session::cache::SessionCache;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::{SessionStore, Sessions, StoreError};
use crate::shutdown::{DrainOnTerm, InFlight};
use crate::telemetry::export::TracePipeline;

/// How long start-up waits for the first Redis connection before serving anyway (requests
/// that need a session get 503 until it connects).
const STORE_CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Discovery retry backoff bounds while the OP is unreachable.
const DISCOVERY_RETRY_MIN: Duration = Duration::from_millis(500);
const DISCOVERY_RETRY_MAX: Duration = Duration::from_secs(30);
/// Expired memory-store entries are invisible at once; sweeping only reclaims their memory.
const MEMORY_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the session store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up the OIDC client: {0}")]
    Oidc(#[from] OidcError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The OP answered at start-up with metadata this configuration cannot use.
    #[error("{}: {error}", file.display())]
    Provider { file: PathBuf, error: OidcError },
    #[error("cannot start a runtime for start-up checks: {0}")]
    Runtime(std::io::Error),
    #[error("{}: {error}", file.display())]
    Listen { file: PathBuf, error: ListenError },
    #[error("{}: identity_assertion.key_file: {error}", file.display())]
    AssertionKey {
        file: PathBuf,
        error: AssertionError,
    },
}

impl ServeError {
    /// Whether the fix is in the configuration file (exit code 2) rather than the environment.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            ServeError::Provider { .. }
                | ServeError::Listen { .. }
                | ServeError::AssertionKey { .. }
        )
    }
}

/// How long start-up waits for a first discovery before leaving it to the background loop.
const PREFLIGHT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

enum StoreHandle {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

impl StoreHandle {
    /// The store, and the session cache in front of it unless `cache_max_entries` is 0.
    fn from_config(
        cfg: &SessionConfig,
        metrics: &Metrics,
    ) -> Result<(StoreHandle, Option<Arc<SessionCache>>), StoreError> {
        let cache = (cfg.cache_max_entries > 0).then(|| {
            Arc::new(SessionCache::new(
                cfg.cache_max_entries,
                metrics.session_cache.clone(),
            ))
        });
        Ok(match &cfg.store {
            StoreConfig::Memory => {
                // Every write passes through this process, so the cache is coherent from the
                // start.
                if let Some(cache) = &cache {
                    cache.resume();
                }
                (StoreHandle::Memory(Arc::new(MemoryStore::new())), cache)
            }
            StoreConfig::Redis(rc) => {
                let tracking = cache
                    .clone()
                    .map(|c| (c, Sessions::session_key_prefix(cfg)));
                (
                    StoreHandle::Redis(Arc::new(RedisStore::new(rc, tracking)?)),
                    cache,
                )
            }
        })
    }

    fn as_store(&self) -> Arc<dyn SessionStore> {
        match self {
            StoreHandle::Memory(m) => m.clone(),
            StoreHandle::Redis(r) => r.clone(),
        }
    }
}

/// Serves until shutdown. `traces` is the span export, if tracing is on: it is flushed before
/// a drained process exits.
pub fn run(cfg: Config, traces: Option<TracePipeline>) -> Result<(), ServeError> {
    let traces = traces.map(Arc::new);
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new(cfg.session.store.label())?);
    let (store, cache) = StoreHandle::from_config(&cfg.session, &metrics)?;
    let sessions = Arc::new(Sessions::new(
        store.as_store(),
        cache,
        cfg.session.clone(),
        metrics.clone(),
    ));
    let oidc = Arc::new(Oidc::new(
        cfg.oidc.clone(),
        cfg.redirect_uri.clone(),
        metrics.op_duration.clone(),
    )?);
    warn_about_risky_settings(&cfg);
    let mut listeners = vec![("listen", cfg.listen), ("admin_listen", cfg.admin_listen)];
    if let Some(auth) = &cfg.ingress_auth {
        listeners.push(("ingress_auth.listen", auth.listen));
    }
    check_listen_addresses(&listeners).map_err(|error| ServeError::Listen {
        file: cfg.source.clone(),
        error,
    })?;
    preflight_discovery(&cfg, &metrics)?;
    let assertions = match &cfg.identity_assertion {
        Some(a) => Some(Arc::new(
            IdentityAssertions::load(a, &cfg.public_origin).map_err(|error| {
                ServeError::AssertionKey {
                    file: cfg.source.clone(),
                    error,
                }
            })?,
        )),
        None => None,
    };

    let mut server = Server::new_with_opt_and_conf(None, server_conf(&cfg));
    server.bootstrap();

    let in_flight = InFlight::default();
    let shared = Shared::new(
        &cfg,
        sessions.clone(),
        oidc.clone(),
        metrics.clone(),
        in_flight.clone(),
        assertions.clone(),
    );
    let background = background_service(
        "portcullis",
        Background {
            store,
            oidc: oidc.clone(),
            reloader: Reloader::new(
                cfg.clone(),
                shared.live(),
                oidc.clone(),
                metrics.config_reloads.clone(),
            ),
        },
    );
    let background = server.add_service(background);
    let connections = Arc::new(Semaphore::new(cfg.server.max_connections));
    for thread in 0..cfg.server.threads {
        let edge = Edge::new(
            shared.live(),
            pingora::proxy::http_proxy(
                &proxy_thread_conf(&cfg),
                Portcullis::new(&cfg, shared.clone()),
            ),
            connections.clone(),
            &metrics,
        );
        let proxy = server.add_service(ProxyThread::new(&cfg, thread, edge));
        proxy.add_dependency(&background);
    }

    let mut admin = ListeningService::new(
        "portcullis admin".to_string(),
        HttpServer::new_app(Admin {
            sessions,
            oidc,
            metrics,
            assertions,
            proxy: ProxyListening::new(cfg.listen),
        }),
    );
    admin.threads = Some(1);
    admin.add_tcp(&cfg.admin_listen.to_string());
    server.add_service(admin);

    match &cfg.ingress_auth {
        Some(auth) => {
            tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, ingress_auth = %auth.listen, "portcullis starting")
        }
        None => {
            tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, "portcullis starting")
        }
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerm { in_flight, traces }),
    });
    Ok(())
}

/// One discovery before serving: an OP that answers with metadata portcullis cannot use
/// (another issuer, no PKCE) is a configuration error, so it shows as a failed start naming the
/// setting rather than as a pod that never becomes ready. An OP that does not answer yet is left
/// to the background loop, which retries. A throwaway client and runtime: nothing from this
/// check outlives it.
fn preflight_discovery(cfg: &Config, metrics: &Metrics) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let oidc = Oidc::new(
        cfg.oidc.clone(),
        cfg.redirect_uri.clone(),
        metrics.op_duration.clone(),
    )?;
    // The timer must be created inside the runtime, hence the async block.
    let outcome = runtime.block_on(async {
        tokio::time::timeout(PREFLIGHT_DISCOVERY_TIMEOUT, oidc.discover()).await
    });
    match outcome {
        Ok(Err(error @ OidcError::Incompatible { .. })) => Err(ServeError::Provider {
            file: cfg.source.clone(),
            error,
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "identity provider discovery failed at start-up; retrying in the background");
            Ok(())
        }
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

/// The server's own runtimes (background work, admin) get one thread: the proxy's threads are
/// its services (see `ProxyThread`).
fn server_conf(cfg: &Config) -> ServerConf {
    ServerConf {
        threads: 1,
        // A single-threaded runtime: nothing to steal with one thread, and ~20 % less CPU per
        // request than a work-stealing one in `make bench`.
        work_stealing: false,
        // Pingora's default grace is 300 s; Kubernetes kills a pod after 30 s.
        grace_period_seconds: Some(cfg.server.drain_timeout.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

/// A proxy thread's share of `server.upstream_keepalive_pool_size`: each keeps its own pool.
fn proxy_thread_conf(cfg: &Config) -> Arc<ServerConf> {
    Arc::new(ServerConf {
        upstream_keepalive_pool_size: cfg
            .server
            .upstream_keepalive_pool_size
            .div_ceil(cfg.server.threads.max(1)),
        ..server_conf(cfg)
    })
}

/// One of `server.threads` proxy services: a single-threaded runtime with its own listening
/// socket on `listen` (SO_REUSEPORT when there are several, so the kernel spreads new
/// connections), edge, Pingora proxy and upstream pool. A request never leaves the thread that
/// accepted its connection, so more threads do not cost more per request (Pingora's
/// work-stealing runtime cost 1.75x the CPU per request at 4 threads); only what must be is
/// shared: sessions, rate limits, the connection cap, metrics.
struct ProxyThread {
    service: ListeningService<Edge>,
}

impl ProxyThread {
    fn new(cfg: &Config, thread: usize, edge: Edge) -> ProxyThread {
        let mut service = ListeningService::new(format!("portcullis proxy {thread}"), edge);
        let mut options = TcpSocketOptions::default();
        options.so_reuseport = Some(cfg.server.threads > 1);
        service.add_tcp_with_settings(&cfg.listen.to_string(), options.clone());
        // The ingress controllers' auth port is served by the same threads; the proxy tells its
        // requests apart by the port they arrived on.
        if let Some(auth) = &cfg.ingress_auth {
            service.add_tcp_with_settings(&auth.listen.to_string(), options);
        }
        ProxyThread { service }
    }
}

#[async_trait]
impl Service for ProxyThread {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        // Pingora's table of inherited listening sockets is keyed by address, so with it every
        // thread would accept from the first thread's socket. Portcullis never takes sockets
        // over from an old process (Kubernetes replaces pods), so each thread binds its own.
        self.service
            .start_service(None, shutdown, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        self.service.name()
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// Plain http to a non-loopback host passed validation only through an explicit opt-in; say so
/// loudly at every start.
fn warn_about_risky_settings(cfg: &Config) {
    let issuer_host = url::Url::parse(&cfg.oidc.issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    if cfg.oidc.issuer.starts_with("http://") && !is_loopback_name(&issuer_host) {
        tracing::warn!("oidc.issuer uses plain http (oidc.allow_plaintext_http): discovery, keys and tokens travel unencrypted");
    }
    for r in cfg.routes.iter().filter(|r| {
        r.upstream()
            .is_some_and(|up| !up.tls && !is_loopback_name(&up.host))
    }) {
        tracing::warn!(route = %r.prefix, "route upstream uses plain http (allow_plaintext_http): bearer tokens travel unencrypted");
    }
}

struct Background {
    store: StoreHandle,
    oidc: Arc<Oidc>,
    reloader: Reloader,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let hangup = listen_for_hangup();
        if let StoreHandle::Redis(redis) = &self.store {
            redis.connect(STORE_CONNECT_WAIT).await;
        }
        ready.notify_ready();
        tokio::join!(
            self.maintain(shutdown.clone()),
            self.reloader.watch(hangup, shutdown)
        );
    }
}

impl Background {
    /// Discovery (and its periodic refresh) and memory-store sweeping, until shutdown.
    async fn maintain(&self, mut shutdown: ShutdownWatch) {
        // A deadline rather than a sleep made anew on each pass: the sweep's ticks must not
        // push the next discovery back.
        let mut next_discovery = tokio::time::Instant::now();
        let mut retry = DISCOVERY_RETRY_MIN;
        let mut sweep = tokio::time::interval(MEMORY_SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = sweep.tick() => {
                    if let StoreHandle::Memory(m) = &self.store {
                        m.sweep();
                    }
                }
                _ = tokio::time::sleep_until(next_discovery) => {
                    next_discovery = tokio::time::Instant::now() + match self.oidc.discover().await {
                        Ok(()) => {
                            tracing::info!(issuer = %self.oidc.issuer(), "identity provider discovery loaded");
                            retry = DISCOVERY_RETRY_MIN;
                            self.oidc.config().discovery_refresh
                        }
                        Err(e) => {
                            tracing::warn!(reason = e.reason(), error = %e, retry_in = ?retry, "identity provider discovery failed");
                            let wait = retry;
                            retry = (retry * 2).min(DISCOVERY_RETRY_MAX);
                            wait
                        }
                    };
                }
            }
        }
    }
}
