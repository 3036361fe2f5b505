//! Refresh against the real OP with short-lived access tokens and refresh-token rotation:
//! silent refresh, single flight across replicas, and a revoked grant ending the session once.

mod support;

use std::time::Duration;

use support::{eventually, last_bearer, metric, World, WorldOptions};

#[tokio::test(flavor = "multi_thread")]
async fn expired_access_tokens_are_refreshed_before_forwarding_with_rotation() {
    let w = World::start(WorldOptions {
        access_token_ttl: 4,
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let mut current = last_bearer(&w.upstream);
    // A 4 s token is due 1-2 s after it was issued, so on a slow machine the first call may
    // already have refreshed: count from here.
    let (_, refreshed_before) = w.op.grant_counts().await;
    // T05: the OP rotates refresh tokens and revokes the grant when an old one comes back, so
    // three refreshes in a row succeed only if each stored the refresh token it was given.
    for refreshes in 1..=3 {
        w.op.wait_until_inactive(&current, "the access token to expire at the OP")
            .await;
        assert_eq!(b.api("/api/x").await.status, 200, "refresh {refreshes}");
        let next = last_bearer(&w.upstream);
        assert_ne!(current, next, "a new access token was injected");
        assert!(w.op.introspect_active(&next).await);
        assert_eq!(
            w.op.grant_counts().await,
            (1, refreshed_before + refreshes),
            "one code exchange, one refresh per expiry"
        );
        current = next;
    }
    assert_eq!(b.api("/bff/user").await.status, 200);
    assert!(!b.transcript.contains(&current));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_over_three_replicas_refresh_once() {
    let mut w = World::start(WorldOptions {
        access_token_ttl: 6,
        // A slow refresh response widens the race window so a missing lock shows every time.
        refresh_delay_ms: 300,
        ..Default::default()
    })
    .await;
    // With a 1 s skew the refreshed token stays current for 4-5 s, far longer than the burst
    // takes, so a second refresh can only come from a missing lock.
    let short_skew =
        |config: String| config.replacen("oidc:\n", "oidc:\n  refresh_skew: \"1s\"\n", 1);
    w.reconfigure("oidc:\n", &short_skew("oidc:\n".to_string()))
        .await;
    let r2 = w.replica_edited(short_skew).await;
    let r3 = w.replica_edited(short_skew).await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let (_, refreshed_before) = w.op.grant_counts().await;
    let first = last_bearer(&w.upstream);
    let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    w.op.wait_until_inactive(&first, "the access token to expire at the OP")
        .await;

    let origins = [w.proxy.origin(), r2.origin(), r3.origin()];
    let client = reqwest::Client::new();
    let requests = (0..50).map(|i| {
        let req = client
            .get(format!("{}/api/burst/{i}", origins[i % 3]))
            .header("cookie", &cookie)
            .header("x-csrf", "1")
            .send();
        async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let statuses = futures_join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request succeeded: {statuses:?}"
    );
    assert_eq!(
        w.op.grant_counts().await.1,
        refreshed_before + 1,
        "exactly one refresh grant for the session"
    );
    let tokens: std::collections::BTreeSet<String> = w
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/burst/"))
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 1, "all fifty carried the one refreshed token");
    let token = tokens.into_iter().next().unwrap();
    assert!(
        w.op.introspect_active(token.strip_prefix("Bearer ").unwrap())
            .await,
        "the grant is still alive"
    );
    assert_eq!(b.api("/api/after").await.status, 200);
}

async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap_or(0));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grant_ends_the_session_once() {
    let w = World::start(WorldOptions {
        access_token_ttl: 4,
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("mallory", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    w.op.revoke_grants("mallory").await;

    let status = eventually(
        "portcullis to notice the revoked grant",
        Duration::from_secs(20),
        || {
            let origin = b.origin.clone();
            let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
            async move {
                let resp = reqwest::Client::new()
                    .get(format!("{origin}/api/poll"))
                    .header("cookie", cookie)
                    .header("x-csrf", "1")
                    .send()
                    .await
                    .ok()?;
                (resp.status() != 200).then_some(resp.status().as_u16())
            }
        },
    )
    .await;
    assert_eq!(status, 401, "a dead grant is a logout, not an outage");
    assert_eq!(b.api("/api/x").await.status, 401);
    assert!(
        w.redis().keys("portcullis:s:*").is_empty(),
        "the session was deleted"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_token_refreshes_total{outcome=\"fatal\"}"
        ),
        1,
        "one attempt, no retry loop"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_op_keeps_the_session_and_never_storms() {
    let mut w = World::start(WorldOptions {
        access_token_ttl: 4,
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    w.op.stop();

    let mut attempts = 0u32;
    let resp = eventually(
        "the token to expire with the OP down",
        Duration::from_secs(20),
        || {
            attempts += 1;
            let origin = b.origin.clone();
            let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
            async move {
                let resp = reqwest::Client::new()
                    .get(format!("{origin}/api/poll"))
                    .header("cookie", cookie)
                    .header("x-csrf", "1")
                    .send()
                    .await
                    .ok()?;
                if resp.status() == 200 {
                    return None;
                }
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                Some((
                    resp.status().as_u16(),
                    retry_after,
                    resp.text().await.unwrap_or_default(),
                ))
            }
        },
    )
    .await;
    assert_eq!(
        resp,
        (
            503,
            Some("5".to_string()),
            "{\"error\":\"unavailable\"}".to_string()
        )
    );
    assert!(
        !w.redis().keys("portcullis:s:*").is_empty(),
        "an outage is not a logout"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    let tries = metric(
        &metrics,
        "portcullis_token_refreshes_total{outcome=\"transient\"}",
    );
    assert!(tries >= 1, "a refresh was attempted");
    assert!(
        u64::from(attempts) > tries * 2 && tries <= 8,
        "{tries} refresh attempts for {attempts} requests: the cool-down bounds them"
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_token_refreshes_total{outcome=\"fatal\"}"
        ),
        0
    );
}
