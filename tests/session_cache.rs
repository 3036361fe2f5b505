//! The in-process session cache in front of Redis: requests are served without a store round
//! trip, and a change on one replica is seen by another before its next request.

mod support;

use support::browser::Browser;
use support::{metric, World, WorldOptions};

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
    let hits = metric(
        &metrics,
        "portcullis_session_cache_events_total{event=\"hit\"}",
    );
    assert!(
        hits >= 15,
        "most requests were served from the cache: {hits} hits"
    );
    let misses = metric(
        &metrics,
        "portcullis_session_cache_events_total{event=\"miss\"}",
    );
    assert!(misses <= 8, "{misses} store reads for 20 requests");

    // Logout through the other replica: this one must not serve its cached copy even once.
    let user: serde_json::Value = serde_json::from_str(&there.api("/bff/user").await.body).unwrap();
    assert_eq!(
        there
            .get(user["logout_url"].as_str().unwrap(), &[])
            .await
            .status,
        302
    );
    assert_eq!(
        here.api("/api/x").await.status,
        401,
        "the logout on the other replica is visible here"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "portcullis_session_cache_events_total{event=\"invalidation\"}"
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_can_be_turned_off() {
    let mut w = World::start(WorldOptions::default()).await;
    let config = std::fs::read_to_string(w.proxy.config_path())
        .unwrap()
        .replace(
            "  store: redis\n",
            "  store: redis\n  cache_max_entries: 0\n",
        );
    w.proxy.stop();
    w.proxy.start(&config).await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    for _ in 0..5 {
        assert_eq!(b.api("/api/x").await.status, 200);
    }
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_session_cache_events_total{event=\"hit\"}"
        ),
        0
    );
}
