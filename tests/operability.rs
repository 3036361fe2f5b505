//! Structured logs and request ids: JSON lines by configuration, an audit line per security
//! event, a request id shared with the upstream, and no secret in any of it. The admin
//! `/metrics` passes `promtool check metrics` and holds every series from start-up.

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

/// The values a label takes in the series of one family that exist now.
fn label_values(metrics: &str, family: &str, label: &str) -> std::collections::BTreeSet<String> {
    let marker = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| {
            l.split(&marker)
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect()
}

/// What promtool's linter and a scrape see: a clean exposition, and from start-up (before any
/// login, refresh or store error) every series an alert or the dashboard divides by, each label
/// spelt in the one `outcome` vocabulary (`success`/`failure` plus specific cases).
#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_every_series_exists_from_start_up() {
    let w = World::start(WorldOptions::default()).await;
    let (status, metrics) = w.proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    if let Err(e) = support::promtool::check_metrics(&metrics) {
        panic!("promtool check metrics:\n{e}\n{metrics}");
    }
    let set = |values: &[&str]| values.iter().map(|v| v.to_string()).collect();
    for (family, label, expected) in [
        (
            "portcullis_session_store_errors_total",
            "op",
            set(&[
                "get", "set", "take", "expire", "delete", "lock", "unlock", "ping", "index",
            ]),
        ),
        (
            "portcullis_session_store_operation_duration_seconds_count",
            "op",
            set(&[
                "get", "set", "take", "expire", "delete", "lock", "unlock", "ping", "index",
            ]),
        ),
        (
            "portcullis_logins_total",
            "outcome",
            set(&["started", "success", "failure"]),
        ),
        (
            "portcullis_token_refreshes_total",
            "outcome",
            set(&[
                "success",
                "fatal",
                "transient",
                "waited",
                "session_ended",
                "superseded",
            ]),
        ),
        (
            "portcullis_backchannel_logouts_total",
            "outcome",
            set(&["success", "rejected", "replayed"]),
        ),
        (
            "portcullis_fail_closed_total",
            "reason",
            set(&["store_unavailable", "oidc_not_ready", "refresh_unavailable"]),
        ),
    ] {
        assert_eq!(label_values(&metrics, family, label), expected, "{family}");
    }
    assert!(
        metrics.contains("portcullis_session_store_errors_total{op=\"index\",store=\"redis\"} 0"),
        "{metrics}"
    );

    let mut b = w.browser();
    b.login("alice", "/").await;
    let forged = b.get("/bff/callback?state=forged&code=forged", &[]).await;
    assert_eq!(forged.status, 400);
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    let logins = |outcome: &str| {
        support::metric(
            &metrics,
            &format!("portcullis_logins_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (logins("started"), logins("success"), logins("failure")),
        (1, 1, 1)
    );
}
