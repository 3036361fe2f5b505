//! portcullis on a real 3-master/3-replica Redis Cluster and a real Sentinel set: sessions
//! shared between replicas, a master killed under load, and a store that goes away entirely.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::browser::Browser;
use support::redis::Resp;
use support::redis_topologies::{RedisCluster, RedisSentinel};
use support::{eventually, metric, World, WorldOptions};

fn session_keys_on(cluster: &RedisCluster, master: u16) -> usize {
    match cluster.command_on(master, &["KEYS", "portcullis:s:*"]) {
        Resp::Array(keys) => keys.len(),
        other => panic!("KEYS answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_sessions_through_a_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let w = World::start(WorldOptions {
        store_url: Some(cluster.url()),
        ..Default::default()
    })
    .await;
    let second = w.replica("").await;
    // Log in until every master holds a session: each master's changes must reach the first
    // replica's session cache. Keys hash uniformly, so 40 logins miss a master with odds of
    // 3 * (2/3)^40, below one in a million.
    let masters = cluster.master_ports();
    let mut firsts = Vec::new();
    let mut per_master = Vec::new();
    for i in 0..40 {
        let mut b = w.browser();
        b.login(&format!("user{i}"), "/").await;
        // The first calls touch the session (a store write); the later ones are cache hits
        // unless an invalidation or a reconnect flushes the cache, so one hit per browser
        // leaves room for a flush.
        for _ in 0..5 {
            assert_eq!(b.api("/api/x").await.status, 200);
        }
        firsts.push(b);
        per_master = masters
            .iter()
            .map(|m| (*m, session_keys_on(&cluster, *m)))
            .collect::<Vec<_>>();
        if per_master.iter().all(|(_, n)| *n > 0) {
            break;
        }
    }
    assert!(
        per_master.iter().all(|(_, n)| *n > 0),
        "sessions on every master: (port, sessions) {per_master:?}"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "portcullis_session_cache_events_total{event=\"hit\"}"
        ) >= firsts.len() as u64,
        "the first replica serves from its cache"
    );

    for first in &mut firsts {
        let mut other = Browser::new(&second.origin());
        other.cookies = first.cookies.clone();
        assert_eq!(
            other.api("/api/x").await.status,
            200,
            "the second replica knows the session"
        );
        assert_eq!(other.logout().await, 302);
        assert_eq!(
            first.api("/api/x").await.status,
            401,
            "logged out through the second, gone on the first at once"
        );
    }
    assert!(cluster.keys_matching("portcullis:s:*").is_empty());
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("store=\"redis-cluster\""),
        "store metrics name the topology"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_cluster_master_loses_no_session() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let mut w = World::start(WorldOptions {
        store_url: Some(cluster.url()),
        ..Default::default()
    })
    .await;
    // The failover itself takes 3-4 s here; a request waiting on the killed master must ride
    // it out even when this machine stalls, so the store budget is well above the default 6 s.
    w.reconfigure(
        "  store: redis\n",
        "  store: redis\n  redis_command_timeout: \"15s\"\n",
    )
    .await;
    let mut browsers = Vec::new();
    for i in 0..12 {
        let mut b = w.browser();
        b.login(&format!("user{i}"), "/").await;
        browsers.push(b);
    }
    cluster.wait_replicas_synced();
    let victim = cluster
        .master_ports()
        .into_iter()
        .max_by_key(|m| session_keys_on(&cluster, *m))
        .unwrap();
    let on_victim = session_keys_on(&cluster, victim);
    assert!(on_victim > 0, "some sessions live on the master to kill");

    // A steady stream of authenticated requests, round robin over the sessions.
    let cookies: Vec<String> = browsers
        .iter()
        .map(|b| format!("__Host-portcullis={}", b.session_cookie().unwrap()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Four concurrent clients, each a bounded loop that stops when told to.
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, sent, failed, origin) =
                (stop.clone(), sent.clone(), failed.clone(), w.proxy.origin());
            let cookies = cookies.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0..5_000usize {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let resp = client
                        .get(format!("{origin}/api/load/{worker}/{i}"))
                        .header("cookie", &cookies[(i + worker) % cookies.len()])
                        .header("x-csrf", "1")
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !matches!(resp, Ok(ref r) if r.status() == 200) {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let counter = sent.clone();
    eventually("load to be flowing", Duration::from_secs(10), || {
        let n = counter.load(Ordering::SeqCst);
        async move { (n >= 50).then_some(()) }
    })
    .await;

    let killed_at = Instant::now();
    cluster.kill_master(victim);
    let (cluster, promoted) = tokio::task::spawn_blocking(move || {
        let promoted = cluster.wait_failover(victim);
        (cluster, promoted)
    })
    .await
    .unwrap();
    let failover = killed_at.elapsed();
    let before = sent.load(Ordering::SeqCst);
    let counter = sent.clone();
    eventually(
        "load to continue after the failover",
        Duration::from_secs(20),
        || {
            let n = counter.load(Ordering::SeqCst);
            async move { (n >= before + 50).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        worker.await.unwrap();
    }

    let (total, lost) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!(
        "failover: master :{victim} (holding {on_victim} of 12 sessions) killed, replica :{promoted} promoted after {failover:?}; {total} requests, {lost} failed"
    );
    for (i, b) in browsers.iter_mut().enumerate() {
        assert_eq!(
            b.api("/api/after").await.status,
            200,
            "session {i} was lost"
        );
    }
    assert_eq!(lost, 0, "requests failed during the failover window");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_sentinel_failover() {
    let mut sentinel = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let w = World::start(WorldOptions {
        store_url: Some(sentinel.url()),
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    assert_eq!(sentinel.keys("portcullis:s:*").len(), 1);
    let old = sentinel.kill_master();
    let sentinel = tokio::task::spawn_blocking(move || {
        sentinel.wait_failover(old);
        sentinel
    })
    .await
    .unwrap();
    assert_eq!(
        b.api("/api/x").await.status,
        200,
        "the session lives on the promoted replica"
    );
    let user = b.api("/bff/user").await;
    assert_eq!(user.status, 200);
    let (status, _) = w.proxy.admin_get("/readyz").await;
    assert_eq!(status, 200);
    drop(sentinel);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_store_fails_closed_and_recovers_without_a_restart() {
    let mut w = World::start(WorldOptions {
        extra_config: String::new(),
        ..Default::default()
    })
    .await;
    // A short store budget keeps this test quick; the default rides out failovers.
    w.reconfigure(
        "  store: redis\n",
        "  store: redis\n  redis_command_timeout: \"800ms\"\n",
    )
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let forwarded = w.upstream.count();

    w.redis.as_mut().unwrap().stop();
    let proxy = &w.proxy;
    eventually(
        "/readyz to report the store down",
        Duration::from_secs(10),
        || async move { (proxy.admin_get("/readyz").await.0 == 503).then_some(()) },
    )
    .await;

    // The session was just used (and cached); with the store gone it must not serve.
    let resp = b.api("/api/x").await;
    assert_eq!((resp.status, resp.header("retry-after")), (503, Some("5")));
    assert_eq!(
        b.get("/reports", &[]).await.status,
        503,
        "page routes fail closed too"
    );
    assert_eq!(
        w.upstream.count(),
        forwarded,
        "nothing reached the upstream"
    );
    w.redis.as_mut().unwrap().restart();
    let proxy = &w.proxy;
    eventually(
        "/readyz to recover",
        Duration::from_secs(15),
        || async move { (proxy.admin_get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    // The restarted server is empty (no persistence in tests): the old session is gone, and a
    // new login works without restarting portcullis.
    assert_eq!(b.api("/api/x").await.status, 401);
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
}
