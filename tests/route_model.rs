//! The route model in a real Chromium (`tests/e2e/routes.mjs`) with the real OP and Redis: two
//! hosts with routes of their own, each policy (`none`, `user`, `optional`), and claim rules
//! that admit and deny; then what the upstream received, request by request.

mod support;

use serde_json::json;
use support::chromium::run_scenario;
use support::{World, WorldOptions};

const DOCS: &str = "docs.localhost";

#[tokio::test(flavor = "multi_thread")]
async fn chromium_crosses_two_hosts_and_every_policy() {
    let mut world = World::start(WorldOptions {
        other_hosts: vec![DOCS],
        ..WorldOptions::default()
    })
    .await;
    world
        .op
        .set_claims(
            "alice",
            json!({ "groups": ["staff"], "department": "sales" }),
        )
        .await;
    let up = world.upstream.url();
    let routes = format!(
        "routes:\n  - {{ host: {DOCS}, path: \"/\", upstream: \"{up}\", kind: public }}\n  \
         - {{ host: {DOCS}, path: \"/private/\", upstream: \"{up}\", kind: page, \
         identity_headers: {{ X-User: sub }} }}\n  \
         - {{ path: \"/maybe/\", upstream: \"{up}\", kind: page, policy: optional, \
         identity_headers: {{ X-User: sub }} }}\n  \
         - {{ path: \"/app/\", upstream: \"{up}\", kind: page }}\n  \
         - {{ path: \"/open/\", upstream: \"{up}\", kind: page, policy: none }}\n  \
         - {{ path: \"/api/staff/\", upstream: \"{up}\", kind: api, access: {{ groups: [staff] }} }}\n  \
         - {{ path: \"/api/finance/\", upstream: \"{up}\", kind: api, \
         access: {{ claims: [{{ claim: department, equals: finance }}] }} }}\n"
    );
    world.reconfigure("routes:\n", &routes).await;

    let run = run_scenario(
        "routes.mjs",
        vec![
            ("APP_URL", world.proxy.origin()),
            ("DOCS_URL", format!("http://{DOCS}:{}", world.proxy.port)),
            ("LOGIN", "alice".to_string()),
        ],
    )
    .await;
    assert!(
        run.passed,
        "browser scenario failed:\n{}\n{}\nportcullis log:\n{}",
        run.stdout,
        run.stderr,
        world.proxy.logs()
    );

    let seen = world.upstream.requests();
    let at = |path: &str| {
        seen.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("the upstream never saw {path}"))
    };
    let docs_home = at("/");
    let docs_authority = format!("{DOCS}:{}", world.proxy.port);
    assert_eq!(docs_home.header("host"), Some(docs_authority.as_str()));
    assert_eq!(
        docs_home.header("x-forwarded-host"),
        Some(docs_authority.as_str()),
        "the upstream learns which host its page was asked on"
    );
    assert!(
        docs_home.header("authorization").is_none(),
        "public: no token"
    );
    let anonymous = at("/maybe/anonymous");
    assert!(anonymous.header("authorization").is_none() && anonymous.header("x-user").is_none());
    let docs_private = at("/private/notes");
    assert!(docs_private
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    assert_eq!(docs_private.all("x-user"), ["alice"]);
    assert!(
        at("/maybe/before-login").header("authorization").is_none(),
        "the docs session is not the app host's"
    );
    assert!(at("/app/home").header("authorization").is_some());
    assert!(
        at("/open/signed-in").header("authorization").is_none(),
        "policy none: no token even with a session"
    );
    let signed_in = at("/maybe/signed-in");
    assert!(signed_in
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    assert_eq!(signed_in.all("x-user"), ["alice"]);
    assert!(at("/api/staff/list").header("authorization").is_some());
    assert!(
        seen.iter().all(|r| r.path != "/api/finance/report"),
        "a denied request is never forwarded"
    );
    assert!(world.proxy.logs().contains("access_denied_claim"));
}
