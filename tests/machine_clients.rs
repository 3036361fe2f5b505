//! Machine clients (`routes[].machine_clients`): a service with a token from the OP's
//! client-credentials grant calls an api route with only `Authorization: Bearer`, and the
//! upstream receives that header unchanged; tokens from another issuer, for another audience,
//! expired, or failing the route's claim rules are refused and nothing is forwarded; a request
//! with a session cookie too is refused; an opaque token is admitted by introspection, served
//! from the cache while it is fresh, and refused once revoked; no token reaches a log or metric.

mod support;

use std::time::Duration;

use serde_json::json;
use support::browser::{Browser, Response};
use support::op::{Op, OpOptions};
use support::{eventually, metric, World, WorldOptions};

const MACHINE_ID: &str = "machine";
const MACHINE_SECRET: &str = "machine-s3cret";
const API: &str = "https://api.test";
const OPAQUE: &str = "https://opaque.test";

fn machine_op_env() -> Vec<(&'static str, String)> {
    vec![("MACHINE_CLIENT", "1".to_string())]
}

/// A token from `issuer`'s token endpoint by the client-credentials grant, for `resource`.
async fn client_token(issuer: &str, resource: &str, scope: &str) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(MACHINE_ID, Some(MACHINE_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("the token endpoint answers")
        .json()
        .await
        .expect("a JSON token response");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {body}"))
        .to_string()
}

/// RFC 7009 revocation by the machine client itself.
async fn revoke(issuer: &str, token: &str) {
    let status = reqwest::Client::new()
        .post(format!("{issuer}/token/revocation"))
        .basic_auth(MACHINE_ID, Some(MACHINE_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("the revocation endpoint answers")
        .status();
    assert_eq!(status, 200);
}

async fn with_bearer(client: &mut Browser, path: &str, token: &str) -> Response {
    client
        .get(path, &[("authorization", &format!("Bearer {token}"))])
        .await
}

/// The `/extra/` route with `token`, and a client's own copy of the identity header.
async fn with_forged_identity(client: &mut Browser, token: &str) -> Response {
    client
        .get(
            "/extra/x",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-client", "forged"),
            ],
        )
        .await
}

async fn metrics(world: &World) -> String {
    world.proxy.admin_get("/metrics").await.1
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_clients_are_admitted_on_their_own_token_and_refused_otherwise() {
    let mut world = World::start(WorldOptions {
        redis: false,
        rust_log: "trace",
        op_env: machine_op_env(),
        ..WorldOptions::default()
    })
    .await;
    let other_op = Op::start(OpOptions {
        env: machine_op_env(),
        ..OpOptions::default()
    });
    let up = world.upstream.url();
    let routes = format!(
        "routes:\n  \
         - {{ path: \"/m/\", upstream: \"{up}\", kind: api, \
              machine_clients: {{ audiences: [\"{API}\", \"{OPAQUE}\"], introspection: true, cache_ttl: 3s }}, \
              access: {{ claims: [{{ claim: scope, contains: read }}] }} }}\n  \
         - {{ path: \"/extra/\", upstream: \"{up}\", kind: api, \
              machine_clients: {{ audiences: [\"{API}\"], issuers: [\"{other}\"] }}, \
              identity_headers: {{ X-Client: client_id }} }}\n",
        other = other_op.issuer,
    );
    world.reconfigure("routes:\n", &routes).await;
    let issuer = world.op.issuer.clone();
    let mut service = Browser::new(&world.proxy.origin());
    let forwarded = || world.upstream.count();

    // A JWT access token from the OP's client-credentials grant: admitted without X-CSRF, and
    // forwarded exactly as the client sent it.
    let token = client_token(&issuer, API, "read").await;
    assert_eq!(token.split('.').count(), 3, "a JWT access token");
    let admitted = with_bearer(&mut service, "/m/orders", &token).await;
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    let last = world.upstream.last();
    assert_eq!(last.path, "/m/orders");
    assert_eq!(last.all("authorization"), [format!("Bearer {token}")]);
    let lower_case = service
        .get(
            "/m/orders",
            &[("authorization", &format!("bearer {token}"))],
        )
        .await;
    assert_eq!(lower_case.status, 200);
    assert_eq!(
        world.upstream.last().all("authorization"),
        [format!("bearer {token}")],
        "unchanged, scheme spelling included"
    );
    let hits = metric(
        &metrics(&world).await,
        "portcullis_machine_token_cache_events_total{event=\"hit\"}",
    );
    assert!(hits >= 1, "the repeated token came from the cache: {hits}");

    // Another issuer's token: refused on a route that does not name it, admitted on one that
    // does (its keys found through its discovery).
    let foreign = client_token(&other_op.issuer, API, "read").await;
    let before = forwarded();
    let refused = with_bearer(&mut service, "/m/orders", &foreign).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body, "{\"error\":\"invalid_token\"}");
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(forwarded(), before, "nothing forwarded");
    let own = with_forged_identity(&mut service, &token).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(
        world.upstream.last().all("x-client"),
        [MACHINE_ID],
        "identity headers from the OP's token's claims, the forged copy replaced"
    );
    let extra = with_forged_identity(&mut service, &foreign).await;
    assert_eq!(extra.status, 200, "{}", extra.body);
    assert_eq!(forwarded(), before + 2);
    assert!(
        world.upstream.last().header("x-client").is_none(),
        "an extra issuer's client_id is not the OP's: no identity headers, the forged one removed"
    );

    // Another audience, an expired token and a token of another type are refused; the same
    // claims signed the same way but unexpired are admitted, so only the one claim decided.
    let other_audience = client_token(&issuer, "https://other-api.test", "read").await;
    let now = unix_now();
    let claims = |exp: u64| {
        json!({"iss": issuer, "aud": API, "sub": MACHINE_ID, "client_id": MACHINE_ID,
               "scope": "read", "iat": now - 600, "exp": exp, "jti": format!("j{exp}")})
    };
    let expired = world
        .op
        .sign(claims(now - 300), json!({"typ": "at+jwt"}))
        .await;
    let fresh = world
        .op
        .sign(claims(now + 300), json!({"typ": "at+jwt"}))
        .await;
    let logout_typed = world
        .op
        .sign(claims(now + 301), json!({"typ": "logout+jwt"}))
        .await;
    let tampered = {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("JSON claims");
        claims["scope"] = json!("read write admin");
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let before = forwarded();
    for (what, t) in [
        ("a changed payload", &tampered),
        ("another audience", &other_audience),
        ("expired", &expired),
        ("a logout token's type", &logout_typed),
        ("not a token", &"garbage".to_string()),
    ] {
        let r = with_bearer(&mut service, "/m/orders", t).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
    }
    assert_eq!(forwarded(), before, "nothing forwarded");
    assert_eq!(
        with_bearer(&mut service, "/m/orders", &fresh).await.status,
        200
    );

    // The route's claim rule: a token without the `read` scope is 403, the rule in the audit.
    let write_only = client_token(&issuer, API, "write").await;
    let before = forwarded();
    let denied = with_bearer(&mut service, "/m/orders", &write_only).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "{\"error\":\"access_denied\"}");
    assert_eq!(forwarded(), before);
    assert!(world
        .proxy
        .logs()
        .lines()
        .any(|l| l.contains("machine_access")
            && l.contains("access_denied_claim")
            && l.contains(MACHINE_ID)));

    // A DPoP-scheme token is not taken for a bearer one.
    let dpop = service
        .get("/m/orders", &[("authorization", &format!("DPoP {token}"))])
        .await;
    assert_eq!(dpop.status, 401);

    // A browser: its session still serves on the route, but a session cookie with a bearer
    // token is refused, whichever would have been admitted alone.
    let mut browser = world.browser();
    browser.login("alice", "/").await;
    assert_eq!(browser.api("/extra/x").await.status, 200);
    let before = forwarded();
    let mixed = browser
        .get(
            "/extra/x",
            &[
                ("x-csrf", "1"),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
        .await;
    assert_eq!(mixed.status, 400);
    assert_eq!(mixed.body, "{\"error\":\"mixed_credentials\"}");
    assert_eq!(forwarded(), before);

    // A bearer token on a route without machine_clients changes nothing: no session, 401.
    let plain = service
        .get(
            "/api/x",
            &[
                ("x-csrf", "1"),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
        .await;
    assert_eq!(plain.status, 401);
    assert_eq!(plain.body, "{\"error\":\"unauthorized\"}");
    assert_eq!(forwarded(), before);

    // An opaque token: admitted through introspection, then from the cache; once revoked at
    // the OP, refused as soon as the cached verdict (3 s) ends.
    let introspections = |text: &str| {
        metric(
            text,
            "portcullis_op_request_duration_seconds_count{call=\"introspection\"}",
        )
    };
    let opaque = client_token(&issuer, OPAQUE, "read").await;
    assert_ne!(opaque.split('.').count(), 3, "an opaque token");
    let first = with_bearer(&mut service, "/m/orders", &opaque).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        world.upstream.last().all("authorization"),
        [format!("Bearer {opaque}")]
    );
    let asked = introspections(&metrics(&world).await);
    assert!(asked >= 1);
    assert_eq!(
        with_bearer(&mut service, "/m/orders", &opaque).await.status,
        200
    );
    let after_repeat = introspections(&metrics(&world).await);
    assert_eq!(
        after_repeat, asked,
        "a repeat within the TTL is served from the cache"
    );
    // A flood of one unknown token costs the OP one introspection: the refusal is cached too.
    for _ in 0..5 {
        let r = with_bearer(&mut service, "/m/orders", "flood-of-one-token").await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(introspections(&metrics(&world).await), asked + 1);
    let on_jwt_only = with_bearer(&mut service, "/extra/x", &opaque).await;
    assert_eq!(on_jwt_only.status, 401, "a route without introspection");
    revoke(&issuer, &opaque).await;
    eventually(
        "the revoked token to be refused",
        Duration::from_secs(10),
        || {
            let mut service = Browser::new(&world.proxy.origin());
            let opaque = opaque.clone();
            async move {
                (with_bearer(&mut service, "/m/orders", &opaque).await.status == 401).then_some(())
            }
        },
    )
    .await;

    let text = metrics(&world).await;
    for (outcome, at_least) in [
        ("admitted", 6),
        ("bad_issuer", 1),
        ("bad_audience", 1),
        ("expired", 1),
        ("bad_type", 1),
        ("bad_signature", 1),
        ("access_denied", 1),
        ("dpop_scheme", 1),
        ("mixed_credentials", 1),
        ("inactive", 1),
    ] {
        let n = metric(
            &text,
            &format!("portcullis_machine_auth_total{{outcome=\"{outcome}\"}}"),
        );
        assert!(n >= at_least, "{outcome}: {n}");
    }

    // No token, whole or signature, in portcullis's logs or metrics.
    let logs = world.proxy.logs();
    for t in [
        &token,
        &foreign,
        &other_audience,
        &expired,
        &fresh,
        &write_only,
        &opaque,
    ] {
        let signature = t.rsplit('.').next().unwrap_or(t);
        for (place, text) in [("logs", &logs), ("metrics", &text)] {
            assert!(!text.contains(signature), "a token in the {place}");
        }
    }
}

/// In ingress auth mode a host with `machine_clients` answers an auth request that carries a
/// service's own bearer token (no cookie, no CSRF header) with that same `Authorization`, for
/// the ingress to pass on; another audience is a 401 the ingress hands back, and a token beside
/// a session cookie is a 403 (an ingress-nginx auth answer other than 2xx, 401 or 403 would
/// become a 500).
#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_auth_answer_admits_a_machine_client_on_its_own_token() {
    let auth_port = support::free_port();
    let world = World::start(WorldOptions {
        redis: false,
        op_env: machine_op_env(),
        extra_config: format!(
            "ingress_auth:\n  enabled: true\n  listen: \"127.0.0.1:{auth_port}\"\n  controller: nginx\n  \
             trusted_ingress: [\"127.0.0.1\"]\n  identity_headers: {{ X-Auth-Request-User: client_id }}\n  hosts:\n    \
             - host: api.localhost\n      machine_clients: {{ audiences: [\"{API}\"] }}\n      \
             access: {{ claims: [{{ claim: scope, contains: read }}] }}\n      paths:\n        \
             - {{ path: /, kind: api }}\n"
        ),
        ..WorldOptions::default()
    })
    .await;
    let ask = |token: String, extra: &'static [(&'static str, &'static str)]| {
        let mut req = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{auth_port}/bff/auth"))
            .header("x-original-url", "http://api.localhost/orders")
            .header("x-original-method", "POST")
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let token = client_token(&world.op.issuer, API, "read").await;
    let admitted = ask(token.clone(), &[]).await.expect("answer");
    assert_eq!(admitted.status(), 200);
    let header = |name: &str| {
        admitted
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("authorization"), Some(format!("Bearer {token}")));
    assert_eq!(header("x-auth-request-user").as_deref(), Some(MACHINE_ID));

    let write_only = client_token(&world.op.issuer, API, "write").await;
    let denied = ask(write_only, &[]).await.expect("answer");
    assert_eq!(denied.status(), 403, "the host's claim rule");
    let other = client_token(&world.op.issuer, "https://other-api.test", "read").await;
    let refused = ask(other, &[]).await.expect("answer");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("authorization").is_none());
    let mixed = ask(token.clone(), &[("cookie", "__Host-portcullis=x")])
        .await
        .expect("answer");
    assert_eq!(mixed.status(), 403);
    let logs = world.proxy.logs();
    assert!(!logs.contains(&token), "no token in the logs");
}
