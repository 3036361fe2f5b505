//! The in-process session cache: requests are served without a store round trip or a
//! decryption, and a change on one replica is seen by another before its next request.

mod support;

use std::time::{Duration, Instant};

use support::browser::Browser;
use support::{last_bearer, metric, World, WorldOptions};

fn cache_events(metrics: &str, event: &str) -> u64 {
    metric(
        metrics,
        &format!("portcullis_session_cache_events_total{{event=\"{event}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_sessions_follow_changes_made_on_another_replica() {
    let w = World::start(WorldOptions::default()).await;
    let other = w.replica("").await;
    let mut here = w.browser();
    here.login("alice", "/").await;
    let mut there = Browser::new(&other.origin());
    there.cookies = here.cookies.clone();

    for _ in 0..20 {
        assert_eq!(here.api("/api/x").await.status, 200);
        assert_eq!(there.api("/api/x").await.status, 200);
    }
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    let hits = cache_events(&metrics, "hit");
    assert!(
        hits >= 15,
        "most requests were served from the cache: {hits} hits"
    );
    let misses = cache_events(&metrics, "miss");
    assert!(misses <= 8, "{misses} store reads for 20 requests");

    // A full read here extends the idle timeout: a write, after which Redis reports the key's
    // changes to this replica only once it reads the key plainly again. The cached copy must
    // not outlive that.
    assert_eq!(here.api("/bff/user").await.status, 200);
    assert_eq!(here.api("/api/x").await.status, 200);
    // Logout through the other replica: this one must not serve its cached copy even once.
    assert_eq!(there.logout().await, 302);
    assert_eq!(
        here.api("/api/x").await.status,
        401,
        "the logout on the other replica is visible here"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(cache_events(&metrics, "invalidation") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_can_be_turned_off() {
    let mut w = World::start(WorldOptions::default()).await;
    w.reconfigure(
        "  store: redis\n",
        "  store: redis\n  cache_max_entries: 0\n",
    )
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    for _ in 0..5 {
        assert_eq!(b.api("/api/x").await.status, 200);
    }
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(cache_events(&metrics, "hit"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_on_one_replica_is_forwarded_by_the_other_at_once() {
    // Tokens live 10 s. `there` refreshes with 5 s left (half the lifetime caps its skew);
    // `here`, with a 1 s skew, would keep forwarding the old token for 4 s more if it trusted
    // its cached copy after the refresh.
    let w = World::start(WorldOptions {
        access_token_ttl: 10,
        ..WorldOptions::default()
    })
    .await;
    let with_skew = |skew: &'static str| {
        move |config: String| {
            config.replacen(
                "  client_id:",
                &format!("  refresh_skew: \"{skew}\"\n  client_id:"),
                1,
            )
        }
    };
    let here_proxy = w.replica_edited(with_skew("1s")).await;
    let there_proxy = w.replica_edited(with_skew("60s")).await;
    let mut login = w.browser();
    login.login("alice", "/").await;
    let mut here = Browser::new(&here_proxy.origin());
    here.cookies = login.cookies.clone();
    let mut there = Browser::new(&there_proxy.origin());
    there.cookies = login.cookies.clone();

    // Touches come first; five calls leave room for a flush before the first hit.
    for _ in 0..5 {
        assert_eq!(here.api("/api/x").await.status, 200);
    }
    let first = last_bearer(&w.upstream);
    let (_, metrics) = here_proxy.admin_get("/metrics").await;
    assert!(
        cache_events(&metrics, "hit") >= 1,
        "here serves from its cache"
    );

    // Polled by hand: the browser is borrowed mutably, which `eventually`'s closure cannot do.
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        assert_eq!(there.api("/api/x").await.status, 200);
        let bearer = last_bearer(&w.upstream);
        if bearer != first {
            break bearer;
        }
        assert!(
            Instant::now() < deadline,
            "the other replica never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(here.api("/api/x").await.status, 200);
    assert_eq!(
        last_bearer(&w.upstream),
        second,
        "the refreshed token is forwarded by the replica that did not refresh"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_store_serves_from_the_cache_and_sees_its_own_logout() {
    let w = World::start(WorldOptions {
        redis: false,
        ..WorldOptions::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    for _ in 0..10 {
        assert_eq!(b.api("/api/x").await.status, 200);
    }
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(cache_events(&metrics, "hit") >= 8, "{metrics}");
    let mut stale = Browser::new(&w.proxy.origin());
    stale.cookies = b.cookies.clone();
    assert_eq!(b.logout().await, 302);
    assert_eq!(
        stale.api("/api/x").await.status,
        401,
        "a cached session is gone once logged out"
    );
}
