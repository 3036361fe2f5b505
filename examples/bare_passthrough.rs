//! A bare Pingora HTTP proxy for `make bench`: every request goes to one upstream and nothing
//! else happens. Its row is the floor portcullis's own work sits on, so the benchmark shows how
//! much of a request's cost is Pingora's and how much is portcullis's.
//!
//! `bare_passthrough LISTEN UPSTREAM THREADS POOL [per-thread|work-stealing] [timeouts]`, e.g.
//! `bare_passthrough 127.0.0.1:9000 127.0.0.1:8080 1 1024` (POOL: idle upstream connections
//! kept, all threads together, as `server.upstream_keepalive_pool_size`). `per-thread` (the
//! default) runs the threads as portcullis does: one single-threaded service per thread, each
//! with its own SO_REUSEPORT listener and pool; `work-stealing` runs one Pingora service on a
//! work-stealing runtime of THREADS threads, Pingora's default, for comparison. `timeouts` gives
//! the upstream peer the timeouts portcullis gives each of its upstreams by default (connect 5 s,
//! read 60 s, pooled idle 60 s), so the floor includes what Pingora spends arming them.

use async_trait::async_trait;
use pingora::listeners::TcpSocketOptions;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, Server, ShutdownWatch};
use pingora::services::listening::Service as ListeningService;
use pingora::services::Service;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

/// The allocator portcullis uses, so the floor is built the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    upstream: String,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.timeouts {
            peer.options.connection_timeout = Some(Duration::from_secs(5));
            peer.options.read_timeout = Some(Duration::from_secs(60));
            peer.options.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

/// A single-threaded service that binds its own listener, as `server::ProxyThread` does.
struct OwnListener(ListeningService<pingora::proxy::HttpProxy<Passthrough>>);

#[async_trait]
impl Service for OwnListener {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        self.0.start_service(None, shutdown, listeners_per_fd).await;
    }

    fn name(&self) -> &str {
        self.0.name()
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, threads, pool, mode, timeouts) = match args.as_slice() {
        [l, u, t, p] => (l, u, t, p, "per-thread", false),
        [l, u, t, p, m] => (l, u, t, p, m.as_str(), false),
        [l, u, t, p, m, x] if x == "timeouts" => (l, u, t, p, m.as_str(), true),
        _ => usage(),
    };
    let (Ok(threads), Ok(pool)) = (threads.parse::<usize>(), pool.parse::<usize>()) else {
        usage()
    };
    let threads = threads.max(1);
    let passthrough = || Passthrough {
        upstream: upstream.clone(),
        timeouts,
    };
    match mode {
        "per-thread" => {
            let conf = ServerConf {
                threads: 1,
                work_stealing: false,
                upstream_keepalive_pool_size: pool.div_ceil(threads),
                ..ServerConf::default()
            };
            let mut server = Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            for _ in 0..threads {
                let mut proxy =
                    pingora::proxy::http_proxy_service(&server.configuration, passthrough());
                let mut options = TcpSocketOptions::default();
                options.so_reuseport = Some(threads > 1);
                proxy.add_tcp_with_settings(listen, options);
                server.add_service(OwnListener(proxy));
            }
            server.run_forever();
        }
        "work-stealing" => {
            let conf = ServerConf {
                threads,
                work_stealing: true,
                upstream_keepalive_pool_size: pool.div_ceil(threads),
                ..ServerConf::default()
            };
            let mut server = Server::new_with_opt_and_conf(None, conf);
            server.bootstrap();
            let conf: Arc<ServerConf> = server.configuration.clone();
            let mut proxy = pingora::proxy::http_proxy_service(&conf, passthrough());
            proxy.add_tcp(listen);
            server.add_service(proxy);
            server.run_forever();
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bare_passthrough LISTEN UPSTREAM THREADS POOL [per-thread|work-stealing] [timeouts]"
    );
    std::process::exit(2);
}
