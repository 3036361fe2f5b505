//! A bare Pingora HTTP proxy for `make bench`: every request goes to one upstream and nothing
//! else happens. Its row is the floor portcullis's own work sits on, so the benchmark shows how
//! much of a request's cost is Pingora's and how much is portcullis's.
//!
//! `bare_passthrough LISTEN UPSTREAM THREADS POOL`, e.g.
//! `bare_passthrough 127.0.0.1:9000 127.0.0.1:8080 1 1024` (POOL: idle upstream connections
//! kept, all threads together, as `server.upstream_keepalive_pool_size`).

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

struct Passthrough {
    upstream: String,
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
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, threads, pool] = args.as_slice() else {
        eprintln!("usage: bare_passthrough LISTEN UPSTREAM THREADS POOL");
        std::process::exit(2);
    };
    let (Ok(threads), Ok(pool)) = (threads.parse::<usize>(), pool.parse::<usize>()) else {
        eprintln!("THREADS and POOL must be numbers");
        std::process::exit(2);
    };
    let threads = threads.max(1);
    // The same runtime choices portcullis makes (see `server::server_conf`).
    let conf = ServerConf {
        threads,
        work_stealing: threads > 1,
        upstream_keepalive_pool_size: pool.div_ceil(threads),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: upstream.clone(),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
