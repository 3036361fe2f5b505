//! SIGTERM: requests in flight finish, new connections are refused, the process exits 0 as soon
//! as it has drained and within `server.drain_timeout`.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::upstream::SLOW_RESPONSE;
use support::{eventually, World, WorldOptions};

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
