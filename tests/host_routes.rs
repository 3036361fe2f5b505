//! Routes that name a host (`routes[].host`): each host reaches its own upstream, with its own
//! policy, and a host no route or setting names is refused before anything is forwarded.

mod support;

use support::upstream::Upstream;
use support::{World, WorldOptions};

async fn get(world: &World, host: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client
        .get(format!("{}{path}", world.proxy.origin()))
        .header("host", format!("{host}:{}", world.proxy.port));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("portcullis answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_host_reaches_its_own_routes_and_unknown_hosts_nothing() {
    let mut world = World::start(WorldOptions {
        redis: false,
        ..WorldOptions::default()
    })
    .await;
    let docs = Upstream::start();
    let shop = Upstream::start();
    let routes = format!(
        "routes:\n  - {{ host: \"*.docs.localhost\", path: \"/\", upstream: \"{docs}\", kind: public }}\n  \
         - {{ host: shop.localhost, path: \"/api/\", upstream: \"{shop}\", kind: api }}\n",
        docs = docs.url(),
        shop = shop.url(),
    );
    world.reconfigure("routes:\n", &routes).await;

    // Any name under docs.localhost: `/` is public there, while `/` without a host is a page
    // route.
    let on_docs = get(&world, "v2.docs.localhost", "/guide", &[]).await;
    assert_eq!(on_docs.status(), 200);
    assert_eq!(docs.count(), 1);
    assert_eq!(docs.last().path, "/guide");
    let on_default = get(&world, "127.0.0.1", "/guide", &[]).await;
    assert_eq!(
        on_default.status(),
        302,
        "the page route sends a navigation to login"
    );
    assert_eq!(docs.count(), 1);

    // shop.localhost: its api route (CSRF rules and all); other paths fall back to the routes
    // without a host.
    let api = get(&world, "shop.localhost", "/api/cart", &[]).await;
    assert_eq!(api.status(), 403, "an api route still needs X-CSRF");
    let api = get(&world, "shop.localhost", "/api/cart", &[("x-csrf", "1")]).await;
    assert_eq!(api.status(), 401);
    assert_eq!(shop.count(), 0, "nothing forwarded without a session");
    let public = get(&world, "shop.localhost", "/public/x", &[]).await;
    assert_eq!(public.status(), 200);
    assert_eq!(world.upstream.last().path, "/public/x");

    // A host nothing names is misdirected, and the wildcard does not cover its parent.
    for host in ["evil.localhost", "docs.localhost", "eu.shop.localhost"] {
        let refused = get(&world, host, "/public/x", &[]).await;
        assert_eq!(refused.status(), 421, "{host}");
    }
    assert_eq!(docs.count() + shop.count(), 1);
}

/// A route's policy and claim rules, and identity headers from the session's claims: `optional`
/// passes anonymously and forwards the token when there is one; a claim rule the user does not
/// meet is 403 with the rule in the audit line; client-sent identity headers never get through.
#[tokio::test(flavor = "multi_thread")]
async fn route_policies_claim_rules_and_identity_headers() {
    let mut world = World::start(WorldOptions {
        redis: false,
        ..WorldOptions::default()
    })
    .await;
    let up = world.upstream.url();
    let routes = format!(
        "routes:\n  - {{ path: \"/maybe/\", upstream: \"{up}\", kind: page, policy: optional, \
         identity_headers: {{ X-User: sub, X-Email: email }} }}\n  \
         - {{ path: \"/finance/\", upstream: \"{up}\", kind: api, \
         access: {{ claims: [{{ claim: department, equals: finance }}] }} }}\n  \
         - {{ path: \"/staff/\", upstream: \"{up}\", kind: api, \
         access: {{ email_domains: [corp.test], claims: [{{ claim: email_verified, equals: \"true\" }}], require: any }} }}\n"
    );
    world.reconfigure("routes:\n", &routes).await;
    let forged = [("x-user", "root"), ("x-email", "root@corp.test")];

    // Anonymous on an optional route: forwarded, without a token, and the forged identity gone.
    let mut anonymous = world.browser();
    assert_eq!(anonymous.get("/maybe/x", &forged).await.status, 200);
    let seen = world.upstream.last();
    assert_eq!(seen.path, "/maybe/x");
    assert!(seen.header("authorization").is_none());
    assert!(seen.header("x-user").is_none() && seen.header("x-email").is_none());

    let mut browser = world.browser();
    browser.login("alice", "/").await;
    assert_eq!(browser.get("/maybe/x", &forged).await.status, 200);
    let seen = world.upstream.last();
    assert!(seen
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    assert_eq!(seen.all("x-user"), ["alice"]);
    assert_eq!(seen.all("x-email"), ["alice@example.test"]);

    // The OP's users have no department: refused, nothing forwarded, the rule audited.
    let before = world.upstream.count();
    let denied = browser.api("/finance/report").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "{\"error\":\"access_denied\"}");
    assert_eq!(world.upstream.count(), before);
    assert!(world.proxy.logs().contains("access_denied_claim"));
    // `any`: the verified e-mail admits alice although her domain is not corp.test.
    assert_eq!(browser.api("/staff/list").await.status, 200);
    assert_eq!(world.upstream.last().path, "/staff/list");
}
