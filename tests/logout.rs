//! Logout in all its forms against the real OP: back-channel logout (driven by the OP and by
//! crafted tokens signed with the OP's key), logout everywhere across replicas, and refresh-token
//! revocation.

mod support;

use std::time::Duration;

use serde_json::json;
use support::browser::Browser;
use support::{eventually, last_bearer, metric, World, WorldOptions};

async fn until_logged_out(b: &Browser) {
    let origin = b.origin.clone();
    let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    eventually("the session to be gone", Duration::from_secs(10), || {
        let (origin, cookie) = (origin.clone(), cookie.clone());
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{origin}/bff/user"))
                .header("cookie", cookie)
                .header("x-csrf", "1")
                .send()
                .await
                .ok()?;
            (resp.status() == 401).then_some(())
        }
    })
    .await;
}

async fn backchannel_world() -> World {
    World::start(WorldOptions {
        backchannel: true,
        ..Default::default()
    })
    .await
}

async fn post_logout_token(origin: &str, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{origin}/bff/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("portcullis answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn logout_claims(w: &World, sid: Option<&str>, sub: Option<&str>) -> serde_json::Value {
    let mut c = json!({
        "iss": w.op.issuer,
        "aud": support::op::CLIENT_ID,
        "iat": now(),
        "exp": now() + 120,
        "jti": format!("jti-{}", now()),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn logging_out_at_the_op_ends_the_session_here() {
    let w = backchannel_world().await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    b.logout_at_op(&w.op.issuer).await;
    until_logged_out(&b).await;
    assert_eq!(b.api("/api/x").await.status, 401);
    assert!(w.redis().keys("portcullis:s:*").is_empty());
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_backchannel_logouts_total{outcome=\"success\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_logout_token_works_once_and_only_for_its_sid() {
    let w = backchannel_world().await;
    let mut a = w.browser();
    a.login("alice", "/").await;
    let sid = w.op.latest_sid("alice").await;
    // K13: the OP's session id stays server-side; only logout tokens name it.
    let user = a.api("/bff/user").await;
    assert_eq!(user.status, 200);
    assert!(!user.body.contains(&sid), "{}", user.body);
    let mut other = w.browser();
    other.login("alice", "/").await;
    assert_ne!(sid, w.op.latest_sid("alice").await, "two OP sessions");

    let token =
        w.op.sign(logout_claims(&w, Some(&sid), Some("alice")), json!({}))
            .await;
    let (status, body) = post_logout_token(&w.proxy.origin(), &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.api("/api/x").await.status, 401, "the sid's session ended");
    assert_eq!(
        other.api("/api/x").await.status,
        200,
        "the user's other session did not"
    );

    let (status, body) = post_logout_token(&w.proxy.origin(), &token).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "{\"error\":\"invalid_request\"}"),
        "a replay is refused"
    );
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_backchannel_logouts_total{outcome=\"replayed\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_confused_tokens_change_nothing() {
    let w = backchannel_world().await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let sid = w.op.latest_sid("alice").await;
    let base = logout_claims(&w, Some(&sid), Some("alice"));
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let mut cases: Vec<(&str, String)> = Vec::new();
    let valid = w.op.sign(base.clone(), json!({})).await;
    let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
    let sig = parts[2].clone();
    let flipped = if sig.ends_with('A') {
        format!("{}B", &sig[..sig.len() - 1])
    } else {
        format!("{}A", &sig[..sig.len() - 1])
    };
    parts[2] = flipped;
    cases.push(("flipped signature", parts.join(".")));
    let unsigned_header = base64_url(br#"{"alg":"none"}"#);
    cases.push((
        "alg none",
        format!("{unsigned_header}.{}.", valid.split('.').nth(1).unwrap()),
    ));
    cases.push((
        "expired",
        w.op.sign(
            with(&|c| {
                c["exp"] = json!(now() - 600);
                c["iat"] = json!(now() - 700);
            }),
            json!({}),
        )
        .await,
    ));
    cases.push((
        "nonce",
        w.op.sign(with(&|c| c["nonce"] = json!("n")), json!({}))
            .await,
    ));
    cases.push((
        "no events",
        w.op.sign(
            with(&|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
            json!({}),
        )
        .await,
    ));
    cases.push((
        "wrong aud",
        w.op.sign(with(&|c| c["aud"] = json!("someone-else")), json!({}))
            .await,
    ));
    cases.push((
        "wrong iss",
        w.op.sign(with(&|c| c["iss"] = json!("http://127.0.0.9:1")), json!({}))
            .await,
    ));
    cases.push((
        "no sub or sid",
        w.op.sign(
            with(&|c| {
                let o = c.as_object_mut().unwrap();
                o.remove("sid");
                o.remove("sub");
            }),
            json!({}),
        )
        .await,
    ));
    cases.push((
        "jku header",
        w.op.sign(base.clone(), json!({"jku": "http://127.0.0.1:9/jwks"}))
            .await,
    ));
    cases.push((
        "unknown kid",
        w.op.sign(base.clone(), json!({"kid": "nope"})).await,
    ));
    cases.push(("not a JWT", "abc".to_string()));
    for (name, token) in &cases {
        let (status, _) = post_logout_token(&w.proxy.origin(), token).await;
        assert_eq!(status, 400, "{name}");
        assert_eq!(
            b.api("/api/x").await.status,
            200,
            "{name} ended the session"
        );
    }
    let wildcard =
        w.op.sign(
            with(&|c| {
                c["sid"] = json!("*");
                c["sub"] = json!("*");
            }),
            json!({}),
        )
        .await;
    assert_eq!(
        post_logout_token(&w.proxy.origin(), &wildcard).await.0,
        200,
        "valid, but matches nobody"
    );
    assert_eq!(b.api("/api/x").await.status, 200, "no pattern matching");

    let resp = reqwest::Client::new()
        .post(format!("{}/bff/backchannel-logout", w.proxy.origin()))
        .header(
            "cookie",
            format!("__Host-portcullis={}", b.session_cookie().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a cookie alone does nothing");
    assert_eq!(b.api("/api/x").await.status, 200);
    assert!(
        !w.proxy.logs().contains(&valid),
        "a logout token reached the logs"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sub_only_token_ends_every_session_of_the_user() {
    let w = backchannel_world().await;
    let mut a = w.browser();
    a.login("alice", "/").await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let mut bob = w.browser();
    bob.login("bob", "/").await;
    let token =
        w.op.sign(logout_claims(&w, None, Some("alice")), json!({}))
            .await;
    assert_eq!(post_logout_token(&w.proxy.origin(), &token).await.0, 200);
    assert_eq!(a.api("/api/x").await.status, 401);
    assert_eq!(b.api("/api/x").await.status, 401);
    assert_eq!(
        bob.api("/api/x").await.status,
        200,
        "other users are untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sub_only_token_spares_logins_made_after_its_logout_event() {
    let w = backchannel_world().await;
    let mut a = w.browser();
    a.login("alice", "/").await;
    let mut late = logout_claims(&w, None, Some("alice"));
    // Issued 200 s ago: inside the 5 minutes a token is accepted for, but further back than
    // the 60 s of clock skew allowed before alice logged in.
    late["iat"] = json!(now() - 200);
    late["jti"] = json!("late-delivery");
    let token = w.op.sign(late, json!({})).await;
    let (status, body) = post_logout_token(&w.proxy.origin(), &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        a.api("/api/x").await.status,
        200,
        "a login after the logout event survives a late token"
    );
    assert!(w.proxy.logs().contains("sessions=0"), "nothing was ended");

    let token =
        w.op.sign(logout_claims(&w, None, Some("alice")), json!({}))
            .await;
    assert_eq!(post_logout_token(&w.proxy.origin(), &token).await.0, 200);
    assert_eq!(a.api("/api/x").await.status, 401, "a current token ends it");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_everywhere_ends_the_users_sessions_on_every_replica() {
    let w = World::start(WorldOptions::default()).await;
    let replica = w.replica("").await;
    let mut laptop = w.browser();
    laptop.login("alice", "/").await;
    let mut phone = w.browser();
    phone.login("alice", "/").await;
    phone.origin = replica.origin();
    let mut bob = w.browser();
    bob.login("bob", "/").await;
    assert_eq!(
        phone.api("/api/x").await.status,
        200,
        "the session works on the other replica"
    );

    let url = format!("{}&everywhere=1", laptop.logout_url().await);
    assert_eq!(laptop.get(&url, &[]).await.status, 302);
    assert_eq!(
        phone.api("/api/x").await.status,
        401,
        "logged out on the other device and replica"
    );
    assert_eq!(laptop.api("/api/x").await.status, 401);
    assert_eq!(bob.api("/api/x").await.status, 200);
}

/// The refresh token is revoked before the browser is sent to the OP's end-session endpoint,
/// so the OP's state when the browser arrives never depends on a race (Keycloak asks for a
/// confirmation, or not, depending on it). The OP's revocation endpoint is slow here, so a
/// revocation sent beside the redirect would not have happened yet when the 302 arrives.
#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_refresh_token_before_redirecting_to_the_op() {
    let w = World::start(WorldOptions {
        revocation_delay_ms: 500,
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let token = last_bearer(&w.upstream);
    assert!(w.op.introspect_active(&token).await);
    assert_eq!(b.logout().await, 302);
    let hints: Vec<String> =
        w.op.revocations()
            .await
            .into_iter()
            .map(|(_, h)| h)
            .collect();
    assert_eq!(hints, ["refresh_token"], "revoked by the time of the 302");
    assert!(
        !w.op.introspect_active(&token).await,
        "the grant was revoked at the OP before the 302"
    );
}

/// The JSON payload of a JWT, unverified (the OP that issued it checks it).
fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .expect("absolute URL")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// R57: `oidc.send_id_token_hint: true` puts the session's ID token in the end-session URL (what
/// Keycloak and Okta need to log out without asking); by default the URL carries `client_id`
/// only, so no ID token passes through the browser. The OP accepts the hint it issued.
#[tokio::test(flavor = "multi_thread")]
async fn the_end_session_url_carries_the_id_token_hint_only_when_configured() {
    let mut w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    b.login("frank", "/").await;
    let url = b.logout_url().await;
    let logout = b.get(&url, &[]).await;
    let end_session = logout.header("location").expect("a redirect").to_string();
    assert_eq!(query_param(&end_session, "id_token_hint"), None);
    assert_eq!(
        query_param(&end_session, "client_id").as_deref(),
        Some(support::op::CLIENT_ID)
    );

    w.reconfigure("oidc:\n", "oidc:\n  send_id_token_hint: true\n")
        .await;
    let mut b = w.browser();
    b.login("frank", "/").await;
    let url = b.logout_url().await;
    let logout = b.get(&url, &[]).await;
    let end_session = logout.header("location").expect("a redirect").to_string();
    let hint = query_param(&end_session, "id_token_hint").expect("an id_token_hint");
    let claims = jwt_claims(&hint);
    assert_eq!(claims["sub"], "frank");
    assert_eq!(claims["iss"], w.op.issuer.as_str());
    assert_eq!(claims["aud"], support::op::CLIENT_ID);
    let back = b.end_session_at_op(&end_session).await;
    assert!(
        back.starts_with(&format!("{}/bff/logout/callback?", w.proxy.origin())),
        "the OP accepted the hint and sent the browser back: {back}"
    );
}

/// R57, R58, O09: the end-session redirect carries a `state`; the OP returns through
/// `/bff/logout/callback` (the default post-logout URI) to the `returnTo` chosen at logout, once;
/// a forged or replayed return gets a 400 and no redirect; a foreign `returnTo` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn rp_initiated_logout_returns_through_the_callback_to_a_local_page() {
    let w = World::start(WorldOptions::default()).await;
    let origin = w.proxy.origin();
    let mut b = w.browser();
    b.login("erin", "/").await;
    let logout_url = b.logout_url().await;

    let foreign = b
        .get(&format!("{logout_url}&returnTo=https://evil.test/"), &[])
        .await;
    assert_eq!(foreign.status, 400, "a foreign returnTo is refused");
    assert_eq!(b.api("/api/x").await.status, 200, "and logs nobody out");

    let resp = b
        .get(&format!("{logout_url}&returnTo=/goodbye?x=1"), &[])
        .await;
    assert_eq!(resp.status, 302);
    let end_session = resp.header("location").unwrap().to_string();
    let parsed = url::Url::parse(&end_session).unwrap();
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(
        param("post_logout_redirect_uri").as_deref(),
        Some(format!("{origin}/bff/logout/callback").as_str())
    );
    let state = param("state").expect("a state");
    assert_eq!(state.len(), 43);

    let back = b.end_session_at_op(&end_session).await;
    assert!(
        back.starts_with(&format!("{origin}/bff/logout/callback?"))
            && back.contains(&format!("state={state}")),
        "{back}"
    );
    let landing = b.get(&back, &[]).await;
    assert_eq!(landing.status, 302);
    assert_eq!(
        landing.header("location"),
        Some(format!("{origin}/goodbye?x=1").as_str())
    );

    for (case, url) in [
        ("replayed", back.clone()),
        (
            "forged",
            format!("{origin}/bff/logout/callback?state=forged&returnTo=https://evil.test"),
        ),
    ] {
        let resp = b.get(&url, &[]).await;
        assert_eq!(resp.status, 400, "{case}");
        assert!(resp.header("location").is_none(), "{case}: redirected");
    }
    let no_state = b.get(&format!("{origin}/bff/logout/callback"), &[]).await;
    assert_eq!(
        (no_state.status, no_state.header("location")),
        (302, Some(format!("{origin}/").as_str())),
        "an OP that drops the state still gets the browser home"
    );
}

/// An `api` request with this cookie, outside any `Browser` (so it can run in a task); its status.
async fn api_status(origin: &str, cookie: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{origin}{path}"))
        .header("cookie", cookie)
        .header("x-csrf", "1")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A logged-in browser whose access token has expired at the OP, with its logout link read
/// while reading it still needed no refresh; `opts` start the world.
async fn expired_session(opts: WorldOptions) -> (World, Browser, String) {
    let w = World::start(WorldOptions {
        access_token_ttl: 4,
        ..opts
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let logout_url = b.logout_url().await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let token = last_bearer(&w.upstream);
    w.op.wait_until_inactive(&token, "the access token to expire at the OP")
        .await;
    (w, b, logout_url)
}

/// Starts a request on `origin` that refreshes the session's token, and waits until the OP
/// holds that refresh's response; the request's task and the tokens held.
async fn request_held_in_refresh(
    w: &World,
    origin: &str,
    cookie: &str,
) -> (tokio::task::JoinHandle<u16>, support::op::HeldTokens) {
    w.op.hold_refreshes().await;
    let (origin, cookie) = (origin.to_string(), cookie.to_string());
    let request =
        tokio::spawn(async move { api_status(&origin, &cookie, "/api/during-refresh").await });
    let held = w.op.held_refresh().await;
    (request, held)
}

/// After the held refresh is released: the request it held answers as one without a session,
/// the session stays gone, nothing reached the upstream after the logout, and the tokens the
/// losing refresh obtained are revoked at the OP.
async fn assert_logout_won(
    w: &World,
    request: tokio::task::JoinHandle<u16>,
    held: &support::op::HeldTokens,
    cookie: &str,
    forwarded_before_logout: usize,
) {
    w.op.release_refreshes().await;
    assert_eq!(
        request.await.unwrap(),
        401,
        "the held request is not forwarded"
    );
    assert_eq!(
        api_status(&w.proxy.origin(), cookie, "/bff/user").await,
        401
    );
    assert_eq!(
        api_status(&w.proxy.origin(), cookie, "/api/after").await,
        401
    );
    assert_eq!(
        w.upstream.count(),
        forwarded_before_logout,
        "nothing reached the upstream after the logout"
    );
    if let Some(redis) = &w.redis {
        assert!(
            redis.keys("portcullis:s:*").is_empty(),
            "the refresh wrote the session back"
        );
    }
    w.op.wait_for_revocation(&held.refresh_token, "refresh_token")
        .await;
    w.op.wait_for_revocation(&held.access_token, "access_token")
        .await;
    w.op.wait_until_inactive(&held.refresh_token, "the lost refresh token to be dead")
        .await;
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_token_refreshes_total{outcome=\"session_ended\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "portcullis_token_refreshes_total{outcome=\"success\"}"
        ),
        0
    );
}

async fn logout_during_a_held_refresh(redis: bool) {
    let (w, mut b, logout_url) = expired_session(WorldOptions {
        redis,
        ..Default::default()
    })
    .await;
    let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    let (request, held) = request_held_in_refresh(&w, &w.proxy.origin(), &cookie).await;
    assert_eq!(b.get(&logout_url, &[]).await.status, 302);
    let forwarded = w.upstream.count();
    assert_logout_won(&w, request, &held, &cookie, forwarded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_in_flight_never_undoes_a_logout_memory_store() {
    logout_during_a_held_refresh(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_in_flight_never_undoes_a_logout_redis_store() {
    logout_during_a_held_refresh(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_on_one_replica_wins_over_a_refresh_in_flight_on_another() {
    let (w, mut b, logout_url) = expired_session(WorldOptions::default()).await;
    let replica = w.replica("").await;
    let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    let (request, held) = request_held_in_refresh(&w, &w.proxy.origin(), &cookie).await;
    let on_replica = format!("{}{logout_url}", replica.origin());
    assert_eq!(b.get(&on_replica, &[]).await.status, 302);
    let forwarded = w.upstream.count();
    assert_logout_won(&w, request, &held, &cookie, forwarded).await;
    assert_eq!(
        api_status(&replica.origin(), &cookie, "/bff/user").await,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backchannel_logout_wins_over_a_refresh_in_flight() {
    let (w, b, _) = expired_session(WorldOptions {
        backchannel: true,
        ..Default::default()
    })
    .await;
    let sid = w.op.latest_sid("alice").await;
    let cookie = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    let (request, held) = request_held_in_refresh(&w, &w.proxy.origin(), &cookie).await;
    let token =
        w.op.sign(logout_claims(&w, Some(&sid), None), json!({}))
            .await;
    let (status, body) = post_logout_token(&w.proxy.origin(), &token).await;
    assert_eq!(status, 200, "{body}");
    let forwarded = w.upstream.count();
    assert_logout_won(&w, request, &held, &cookie, forwarded).await;
}

/// Ending sessions through one index (back-channel logout by `sid`) unlists them from the
/// other (the user's), so a later logout everywhere counts only the sessions still alive.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_bulk_logouts_count_each_session_once() {
    let w = backchannel_world().await;
    let mut browsers = Vec::new();
    let mut first_sid = None;
    for _ in 0..4 {
        let mut b = w.browser();
        b.login("alice", "/").await;
        first_sid.get_or_insert(w.op.latest_sid("alice").await);
        browsers.push(b);
    }
    let ended = |metrics: &str| {
        metric(
            metrics,
            "portcullis_sessions_ended_total{reason=\"logout\"}",
        )
    };
    let before = ended(&w.proxy.admin_get("/metrics").await.1);

    let token =
        w.op.sign(logout_claims(&w, first_sid.as_deref(), None), json!({}))
            .await;
    assert_eq!(post_logout_token(&w.proxy.origin(), &token).await.0, 200);
    let url = format!("{}&everywhere=1", browsers[1].logout_url().await);
    assert_eq!(browsers[1].get(&url, &[]).await.status, 302);
    for b in &mut browsers {
        assert_eq!(b.api("/api/x").await.status, 401);
    }

    let after = ended(&w.proxy.admin_get("/metrics").await.1);
    assert_eq!(after - before, 4, "four sessions existed, four ended");
    for kind in ["s", "user-logins", "op-session", "listed"] {
        assert_eq!(
            w.redis().keys(&format!("portcullis:{kind}:*")),
            [] as [String; 0],
            "{kind} keys left behind"
        );
    }
}
