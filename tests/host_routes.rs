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
        "routes:\n  - {{ host: docs.localhost, path: \"/\", upstream: \"{docs}\", kind: public }}\n  \
         - {{ host: \"*.shop.localhost\", path: \"/api/\", upstream: \"{shop}\", kind: api }}\n",
        docs = docs.url(),
        shop = shop.url(),
    );
    world.reconfigure("routes:\n", &routes).await;

    // docs.localhost's `/` is public there, while `/` without a host is a page route.
    let on_docs = get(&world, "docs.localhost", "/guide", &[]).await;
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

    // Any name under shop.localhost: its api route (CSRF rules and all); other paths fall back to
    // the routes without a host.
    let api = get(&world, "eu.shop.localhost", "/api/cart", &[]).await;
    assert_eq!(api.status(), 403, "an api route still needs X-CSRF");
    let api = get(&world, "eu.shop.localhost", "/api/cart", &[("x-csrf", "1")]).await;
    assert_eq!(api.status(), 401);
    assert_eq!(shop.count(), 0, "nothing forwarded without a session");
    let public = get(&world, "eu.shop.localhost", "/public/x", &[]).await;
    assert_eq!(public.status(), 200);
    assert_eq!(world.upstream.last().path, "/public/x");

    // A host nothing names is misdirected, and the wildcard does not cover its parent.
    for host in ["evil.localhost", "shop.localhost"] {
        let refused = get(&world, host, "/public/x", &[]).await;
        assert_eq!(refused.status(), 421, "{host}");
    }
    assert_eq!(docs.count() + shop.count(), 1);
}
