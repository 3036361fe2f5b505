//! Structured logs and request ids: JSON lines by configuration, an audit line per security
//! event, a request id shared with the upstream, and no secret in any of it.

mod support;

use support::{last_bearer, World, WorldOptions};

async fn json_logging_world() -> World {
    let mut w = World::start(WorldOptions::default()).await;
    w.reconfigure(
        "log:\n  level: \"info\"\n",
        "log:\n  level: \"info\"\n  format: json\n",
    )
    .await;
    w
}

fn json_lines(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_travel_to_the_upstream_and_back() {
    let w = World::start(WorldOptions::default()).await;
    let mut b = w.browser();
    let resp = b
        .get("/public/x", &[("x-request-id", "trace-42.a_b")])
        .await;
    assert_eq!(resp.header("x-request-id"), Some("trace-42.a_b"));
    assert_eq!(
        w.upstream.last().header("x-request-id"),
        Some("trace-42.a_b")
    );

    let resp = b
        .get("/public/y", &[("x-request-id", "bad id with spaces")])
        .await;
    let generated = resp.header("x-request-id").expect("an id").to_string();
    assert_ne!(generated, "bad id with spaces");
    assert!(
        generated.len() >= 14
            && generated
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(&c)),
        "{generated:?}"
    );
    assert_eq!(
        w.upstream.last().header("x-request-id"),
        Some(generated.as_str())
    );
    let next = b.get("/public/z", &[]).await;
    assert_ne!(
        next.header("x-request-id"),
        Some(generated.as_str()),
        "every request gets its own id"
    );

    let local = b.get("/bff/nothing", &[]).await;
    assert!(
        local.header("x-request-id").is_some(),
        "portcullis's own answers carry an id too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_hold_audit_events_and_no_secrets() {
    let w = json_logging_world().await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let token = last_bearer(&w.upstream);
    let cookie = b.session_cookie().unwrap().to_string();
    let rejected = b.get("/api/x", &[("x-request-id", "csrf-probe")]).await;
    assert_eq!(rejected.status, 403);
    assert_eq!(b.logout().await, 302);

    let logs = w.proxy.logs();
    let lines = json_lines(
        &logs
            .split("\n")
            .skip_while(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let audit: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "audit").collect();
    let has = |event: &str, outcome: &str| {
        audit.iter().any(|l| {
            l["fields"]["event"] == event
                && l["fields"]["outcome"] == outcome
                && l["fields"]["sub"] == "alice"
        })
    };
    assert!(has("login", "success"), "no login audit line in {audit:?}");
    assert!(
        has("logout", "success"),
        "no logout audit line in {audit:?}"
    );
    let rejection = lines
        .iter()
        .find(|l| l["fields"]["reason"] == "csrf_header_missing")
        .expect("a reason-coded rejection line");
    assert_eq!(rejection["fields"]["request_id"], "csrf-probe");
    for secret in [token.as_str(), cookie.as_str(), support::op::CLIENT_SECRET] {
        assert!(!logs.contains(secret), "a log line holds a secret");
    }
}
