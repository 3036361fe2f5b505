//! The process's start and end. SIGTERM: requests in flight finish, new connections are
//! refused, the process exits 0 as soon as it has drained and within `server.drain_timeout`.
//! A listen address another process holds stops the start.

mod support;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::portcullis::{Portcullis, Store};
use support::upstream::{Upstream, SLOW_RESPONSE};
use support::{eventually, World, WorldOptions};

/// In a pod every container shares one network namespace, so a sidecar port the app already
/// uses is a plain misconfiguration: it must fail the start, naming the key, rather than leave
/// the admin port answering ready while another process answers the traffic.
#[tokio::test(flavor = "multi_thread")]
async fn a_listen_address_in_use_stops_the_start_naming_the_key() {
    let upstream = Upstream::start();
    for key in ["listen", "admin_listen"] {
        let mut proxy = Portcullis::reserve();
        // The port another process holds: this test's own listener, bound first, so no other
        // process can have taken it between a reservation and this bind.
        let holder = TcpListener::bind(("127.0.0.1", 0)).expect("hold a port");
        let taken = holder.local_addr().expect("held address").port();
        if key == "listen" {
            proxy.port = taken;
        } else {
            proxy.admin_port = taken;
        }
        // Nothing answers on the issuer: the check must come before any network call.
        let config = proxy.config("http://127.0.0.1:9", &upstream, &Store::Memory, "");
        let (code, stderr) = proxy.start_expecting_exit(&config).await;
        assert_eq!(code, Some(2), "{key}: {stderr}");
        let named = format!(
            "{}: {key}: cannot listen on 127.0.0.1:{taken}: ",
            proxy.config_path().display()
        );
        assert!(stderr.contains(&named), "{key}: {stderr}");
        assert!(stderr.contains("in use"), "{key}: {stderr}");
    }
}

const DRAIN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut w = World::start(WorldOptions {
        extra_config: format!("server:\n  drain_timeout: \"{}s\"\n", DRAIN.as_secs()),
        ..Default::default()
    })
    .await;
    let origin = w.proxy.origin();
    let slow: Vec<_> = (0..5)
        .map(|i| {
            let url = format!("{origin}/public/slow/{i}");
            tokio::spawn(async move {
                reqwest::get(url)
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let upstream = &w.upstream;
    eventually(
        "all slow requests to reach the upstream",
        Duration::from_secs(10),
        || async move { (upstream.count() == 5).then_some(()) },
    )
    .await;

    let sent = std::time::Instant::now();
    w.proxy.terminate();
    let port = w.proxy.port;
    eventually(
        "the listener to close",
        Duration::from_secs(SLOW_RESPONSE.as_secs() + 1),
        || async move {
            TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        },
    )
    .await;

    for handle in slow {
        assert_eq!(
            handle.await.unwrap(),
            200,
            "a request in flight was cut off"
        );
    }
    let (code, _) = w.proxy.wait_exit(DRAIN + Duration::from_secs(2)).await;
    assert_eq!(code, Some(0));
    let took = sent.elapsed();
    assert!(
        took < DRAIN,
        "exited {took:?} after SIGTERM; the drain limit is {DRAIN:?}"
    );
}
