//! The core data path against real parts: the oidc-provider fixture, redis-server, the
//! portcullis binary and a recording upstream.

mod support;

use support::{last_bearer, World, WorldOptions};

#[tokio::test(flavor = "multi_thread")]
async fn login_injects_an_active_bearer_and_exposes_no_token() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let auth = b.start_login("/app?x=1").await;
    let callback = b.authorize_at_op(auth, "alice").await;
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("an authorization code");
    let landing = b.get(&callback, &[]).await;
    assert_eq!(landing.status, 200);
    assert!(
        landing.body.contains("url=/app?x=1"),
        "bounce page targets returnTo: {}",
        landing.body
    );
    let cookie = b.session_cookie().expect("session cookie").to_string();
    assert_eq!(cookie.len(), 43);
    let set = landing.set_cookies().join("\n");
    assert!(set.contains("HttpOnly; SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/; Secure"), "{set}");
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");

    let resp = b.api("/api/orders").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let token = last_bearer(&w.upstream);
    assert!(
        w.op.introspect_active(&token).await,
        "the OP calls the injected token active"
    );

    let forwarded = w.upstream.last();
    assert!(
        !String::from_utf8_lossy(&forwarded.raw).contains(&cookie),
        "the session cookie reached the upstream"
    );
    assert!(
        forwarded.header("cookie").is_none(),
        "no other cookies were sent, so no Cookie header"
    );

    let user = b.api("/bff/user").await;
    assert_eq!(user.status, 200);
    let json: serde_json::Value = serde_json::from_str(&user.body).expect("JSON");
    assert_eq!(json["sub"], "alice");
    assert_eq!(json["claims"]["email"], "alice@example.test");
    assert!(json["session"]["expires_in"].as_u64().unwrap() > 0);
    assert!(json["logout_url"]
        .as_str()
        .unwrap()
        .starts_with("/bff/logout?sid="));
    assert_eq!(user.header("cache-control"), Some("no-store"));

    assert!(
        !b.transcript.contains(&token),
        "a response to the browser contained the access token"
    );
    assert!(
        !b.transcript.contains("eyJ"),
        "a response to the browser contained a JWT"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    let logs = w.proxy.logs();
    for (what, secret) in [
        ("access token", token.as_str()),
        ("session cookie", cookie.as_str()),
        ("authorization code", code.as_str()),
        ("client secret", support::op::CLIENT_SECRET),
    ] {
        assert!(!logs.contains(secret), "a log line contained the {what}");
        assert!(
            !metrics.contains(secret),
            "the metrics contained the {what}"
        );
    }
    assert!(!b.transcript.contains(support::op::CLIENT_SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_holds_neither_tokens_nor_the_cookie() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("bob", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let token = last_bearer(&w.upstream);
    let cookie = b.session_cookie().unwrap().to_string();
    let dump = w.redis().dump();
    assert!(!dump.is_empty());
    for (k, v) in &dump {
        let v = String::from_utf8_lossy(v);
        for secret in [&token, &cookie] {
            assert!(
                !k.contains(secret.as_str()) && !v.contains(secret.as_str()),
                "{k} reveals a secret"
            );
        }
        assert!(
            !v.contains("eyJ") && !v.contains("alice") && !v.contains("bob"),
            "{k} holds plaintext"
        );
        assert!(
            k.starts_with("portcullis:") && k.contains('{') && k.ends_with('}'),
            "{k} is not cluster-safe"
        );
    }
    let ttl = w
        .redis()
        .command(&["PTTL", &w.redis().keys("portcullis:s:*")[0]]);
    match ttl {
        support::redis::Resp::Int(ms) => assert!(ms > 0 && ms <= 30 * 60 * 1000, "idle TTL {ms}"),
        other => panic!("PTTL answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_the_session_and_a_replayed_cookie_gets_401() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("carol", "/").await;
    let old = b.session_cookie().unwrap().to_string();
    let logout_url = b.logout_url().await;
    let mut dave = w.browser();
    dave.login("dave", "/").await;
    let daves_logout_url = dave.logout_url().await;

    // O03: carol's browser follows dave's logout link, and a made-up one.
    for forged_url in [daves_logout_url.as_str(), "/bff/logout?sid=forged"] {
        let forged = b.get(forged_url, &[]).await;
        assert_eq!(
            forged.status, 403,
            "a logout link with another sid is refused: {forged_url}"
        );
    }
    assert_eq!(
        b.api("/api/x").await.status,
        200,
        "the session survived the forged logout"
    );
    assert_eq!(
        dave.api("/api/x").await.status,
        200,
        "so did the owner's of the sid"
    );
    dave.logout().await;

    let resp = b.get(&logout_url, &[]).await;
    assert_eq!(resp.status, 302);
    let location = resp.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/session/end?", w.op.issuer)),
        "{location}"
    );
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    assert!(
        location.contains("&state="),
        "RP-initiated logout sends a state: {location}"
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let cleared = resp.set_cookies().join("\n");
    assert!(
        cleared
            .contains("__Host-portcullis=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        "{cleared}"
    );
    assert!(
        cleared.contains("__Host-portcullis-txn=; Path=/; Secure; HttpOnly;")
            && cleared.matches("Max-Age=0").count() == 2,
        "both cookies expired: {cleared}"
    );
    assert_eq!(resp.header("clear-site-data"), Some("\"cookies\""));
    assert!(
        w.redis().keys("portcullis:s:*").is_empty(),
        "the session record is gone"
    );

    b.cookies.insert("__Host-portcullis".into(), old);
    let before = w.upstream.count();
    let replay = b.api("/api/x").await;
    assert_eq!(replay.status, 401);
    assert_eq!(replay.body, "{\"error\":\"unauthorized\"}");
    assert_eq!(w.upstream.count(), before, "nothing was forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_logout_needs_the_csrf_header() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("dave", "/").await;
    assert_eq!(b.request("POST", "/bff/logout", &[]).await.status, 403);
    assert_eq!(b.api("/api/x").await.status, 200);
    let resp = b.request("POST", "/bff/logout", &[("x-csrf", "1")]).await;
    assert_eq!(resp.status, 302);
    assert_eq!(b.api("/api/x").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_survives_a_restart_with_the_redis_store() {
    let mut w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("erin", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    w.proxy.restart().await;
    assert_eq!(
        b.api("/api/x").await.status,
        200,
        "the session outlived the process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_routes_need_the_csrf_header_and_a_session() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let anon = b.api("/api/x").await;
    assert_eq!(
        (anon.status, anon.header("content-type")),
        (401, Some("application/json"))
    );
    b.login("frank", "/").await;
    for headers in [
        vec![],
        vec![("x-csrf", "0")],
        vec![("X-CSRF", "1"), ("x-csrf", "1")],
    ] {
        let resp = b.get("/api/x", &headers).await;
        assert_eq!(resp.status, 403, "{headers:?}");
    }
    assert_eq!(w.upstream.count(), 0, "nothing reached the upstream");
    assert_eq!(b.api("/api/x").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn page_routes_redirect_to_login_and_public_routes_need_nothing() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let resp = b.get("/reports/q3?year=2026", &[]).await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location"),
        Some("/bff/login?returnTo=%2Freports%2Fq3%3Fyear%3D2026")
    );
    assert_eq!(w.upstream.count(), 0);

    let resp = b
        .get("/public/logo.svg", &[("authorization", "Bearer forged")])
        .await;
    assert_eq!(resp.status, 200);
    assert!(
        w.upstream.last().header("authorization").is_none(),
        "a client Authorization reached a public route"
    );

    b.login("grace", "/reports/q3").await;
    assert_eq!(b.get("/reports/q3", &[]).await.status, 200);
    let req = w.upstream.last();
    assert_eq!(req.path, "/reports/q3");
    assert!(req.header("authorization").unwrap().starts_with("Bearer "));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_get_exactly_the_sanitised_request() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("heidi", "/").await;
    b.cookies.insert("theme".into(), "dark".into());
    let resp = b
        .get(
            "/api/x",
            &[
                ("x-csrf", "1"),
                ("authorization", "Basic YTpi"),
                ("proxy-authorization", "Basic YTpi"),
                // Naming `Authorization` must not cost the request the injected token (R44).
                ("connection", "keep-alive, x-secret-hop, authorization"),
                ("x-secret-hop", "1"),
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-host", "evil.test"),
                ("forwarded", "for=10.9.9.9"),
                ("x-real-ip", "10.9.9.9"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    let req = w.upstream.last();
    assert_eq!(req.all("authorization").len(), 1);
    assert!(req.header("authorization").unwrap().starts_with("Bearer "));
    for gone in [
        "proxy-authorization",
        "x-secret-hop",
        "forwarded",
        "x-real-ip",
        "x-csrf",
    ] {
        assert!(req.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        req.header("x-forwarded-host"),
        Some(&*format!("127.0.0.1:{}", w.proxy.port))
    );
    assert_eq!(
        req.header("cookie"),
        Some("theme=dark"),
        "other cookies pass, portcullis's do not"
    );

    let planted = b.api("/api/set-cookie").await;
    let set = planted.set_cookies();
    assert_eq!(
        set,
        vec!["theme=dark; Path=/".to_string()],
        "the upstream's portcullis cookie was dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_are_single_use_and_bound_to_the_browser() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let auth = b.start_login("/").await;
    let callback = b.authorize_at_op(auth, "ivan").await;

    let mut other = w.browser();
    let stolen = other.get(&callback, &[]).await;
    assert_eq!(
        stolen.status, 400,
        "another browser cannot finish this login"
    );
    assert!(other.session_cookie().is_none());

    assert_eq!(b.get(&callback, &[]).await.status, 200);
    let replay = b.get(&callback, &[]).await;
    assert_eq!(replay.status, 400, "a callback works once");
    assert!(
        !replay.body.contains("state"),
        "error bodies reflect nothing: {}",
        replay.body
    );

    let mut c = w.browser();
    let auth = c.start_login("/").await;
    let callback = c.authorize_at_op(auth, "ivan").await;
    let tampered = callback.replace("state=", "state=x");
    assert_eq!(c.get(&tampered, &[]).await.status, 400);
    let (codes, _) = w.op.grant_counts().await;
    assert_eq!(codes, 1, "no code was exchanged for a rejected callback");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_tabs_each_complete_their_own_login() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let first = b.start_login("/first").await;
    let second = b.start_login("/second").await;
    let cb_first = b.authorize_at_op(first, "judy").await;
    let cb_second = b.authorize_at_op(second, "judy").await;
    let landed_second = b.get(&cb_second, &[]).await;
    assert!(
        landed_second.body.contains("url=/second"),
        "{}",
        landed_second.body
    );
    let landed_first = b.get(&cb_first, &[]).await;
    assert_eq!(landed_first.status, 200);
    assert!(
        landed_first.body.contains("url=/first"),
        "{}",
        landed_first.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_rejects_open_redirects_and_keeps_its_own_parameters() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    for bad in [
        "//evil.test/",
        "https://evil.test/",
        "/%2F/evil.test",
        "/\\evil.test",
    ] {
        let path = format!("/bff/login?returnTo={}", support::op::form_encode(bad));
        assert_eq!(b.get(&path, &[]).await.status, 400, "{bad}");
    }
    let resp = b
        .get("/bff/login?returnTo=/&redirect_uri=https://evil.test/cb&client_id=other&scope=admin&prompt=login&code_challenge_method=plain", &[])
        .await;
    assert_eq!(resp.status, 302);
    let url = url::Url::parse(resp.header("location").unwrap()).unwrap();
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| {
        q.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        get("redirect_uri"),
        vec![format!("{}/bff/callback", w.proxy.origin())]
    );
    assert_eq!(get("client_id"), vec!["portcullis"]);
    assert_eq!(get("response_type"), vec!["code"]);
    assert_eq!(get("code_challenge_method"), vec!["S256"]);
    assert_eq!(get("prompt"), vec!["login"], "allow-listed parameters pass");
    assert!(!get("scope")[0].contains("admin"));
    let txn = resp.set_cookies().join("\n");
    assert!(
        txn.contains("__Host-portcullis-txn=") && txn.contains("SameSite=Lax; Max-Age=1200"),
        "{txn}"
    );
    assert_eq!(
        b.get("/bff/login?returnTo=/a&returnTo=/b", &[])
            .await
            .status,
        400,
        "duplicate parameters"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_and_refused_methods() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    assert_eq!(b.get("/bff/nothing", &[]).await.status, 404);
    assert_eq!(b.request("TRACE", "/public/x", &[]).await.status, 405);
    assert_eq!(b.request("DELETE", "/bff/login", &[]).await.status, 405);
    assert_eq!(w.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_live_on_their_own_port() {
    let w = World::start(WorldOptions::default()).await;
    assert_eq!(w.proxy.admin_get("/healthz").await.0, 200);
    assert_eq!(
        w.proxy.admin_get("/readyz").await,
        (200, "ready\n".to_string())
    );
    let (status, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_logins_total",
        "portcullis_session_store_operation_duration_seconds",
        "portcullis_session_store_errors_total",
        "portcullis_sessions_created_total",
        "portcullis_sessions_ended_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing at start-up"
        );
    }
    let mut b = w.browser();
    assert_eq!(
        b.get("/metrics", &[]).await.status,
        302,
        "/metrics on the proxy port is just a page route"
    );
    assert_eq!(w.upstream.count(), 0);
}

/// K09: a session left idle past `idle_timeout` is gone; one kept busy still ends at
/// `absolute_timeout`. Store state is polled, not slept on; the busy loop is paced and bounded.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_after_the_idle_and_the_absolute_timeout() {
    let mut w = World::start(WorldOptions::default()).await;
    w.reconfigure(
        "session:\n",
        "session:\n  idle_timeout: 3s\n  absolute_timeout: 7s\n",
    )
    .await;

    let mut idle = w.browser();
    idle.login("alice", "/").await;
    assert_eq!(idle.api("/api/x").await.status, 200);
    let redis = w.redis();
    support::eventually(
        "the idle session to expire in the store",
        std::time::Duration::from_secs(10),
        || async { redis.keys("portcullis:s:*").is_empty().then_some(()) },
    )
    .await;
    assert_eq!(idle.api("/api/x").await.status, 401, "idle session ended");

    // Timed from before the login, so the session is younger than `started` says.
    let started = std::time::Instant::now();
    let mut busy = w.browser();
    busy.login("bob", "/").await;
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(250));
    let ended_after = loop {
        pace.tick().await;
        let status = busy.api("/api/x").await.status;
        if status != 200 {
            assert_eq!(status, 401);
            break started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the busy session outlived its absolute timeout"
        );
    };
    assert!(
        ended_after >= std::time::Duration::from_secs(4),
        "ended after {ended_after:?}: activity kept it past the 3 s idle timeout"
    );
    assert!(redis.keys("portcullis:s:*").is_empty(), "session deleted");
}
