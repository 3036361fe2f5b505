//! OpenTelemetry traces, read back from a real Jaeger: a login and an API call through
//! portcullis (Redis store, the oidc-provider OP), the API call as one trace from portcullis
//! into the upstream, spans for the session store and every call to the OP, a refresh with its
//! lock wait, a trusted caller's trace continued and an untrusted one's replaced, nothing
//! secret in what was exported, and the last spans sent before a drained process exits.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use support::jaeger::{Jaeger, Trace};
use support::{last_bearer, World, WorldOptions};

/// The trusted caller (an ingress, say) connects from here; the browser from 127.0.0.1.
const TRUSTED_CALLER: &str = "127.0.0.2";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const FORGED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// (trace id, parent span id) of a `traceparent` value.
fn traceparent(value: Option<&str>) -> (String, String) {
    let value = value.expect("the upstream received a traceparent");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "a version-00 traceparent: {value}");
    (parts[1].to_string(), parts[2].to_string())
}

fn child_operations<'t>(trace: &'t Trace, operation: &str) -> Vec<&'t str> {
    trace
        .children(trace.span(operation))
        .into_iter()
        .map(|s| s.operation.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_and_an_api_call_are_traced_into_the_upstream() {
    let jaeger = Jaeger::start().await;
    let w = World::start(WorldOptions {
        extra_config: jaeger.portcullis_config(&[TRUSTED_CALLER]),
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;

    // The browser is no trusted caller: its trace context is replaced, not forwarded.
    let forged = format!("00-{FORGED_TRACE}-00f067aa0ba902b7-01");
    let resp = b
        .get(
            "/api/orders?card=4111111111111111",
            &[
                ("x-csrf", "1"),
                ("traceparent", &forged),
                ("tracestate", "forged=1"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    let seen = w.upstream.last();
    let (trace_id, parent) = traceparent(seen.header("traceparent"));
    assert_ne!(
        trace_id, FORGED_TRACE,
        "the client's trace id is not continued"
    );
    assert_eq!(seen.header("tracestate"), None, "nor its tracestate");
    // The upstream, instrumented, records its own span under the one portcullis named.
    jaeger
        .report_span("test-upstream", &trace_id, &parent, "GET /api/orders")
        .await;

    let api = jaeger
        .wait_for_trace(&trace_id, |t| {
            let ops = t.operations();
            ops.contains("GET /api/") && ops.contains("upstream") && ops.contains("GET /api/orders")
        })
        .await;
    let request = api.span("GET /api/");
    assert_eq!(request.service, "portcullis");
    assert_eq!(request.parent, None, "a new trace");
    assert_eq!(request.tag("span.kind"), Some(&json!("server")));
    assert_eq!(request.tag("http.request.method"), Some(&json!("GET")));
    assert_eq!(request.tag("http.route"), Some(&json!("/api/")));
    assert_eq!(request.tag("http.response.status_code"), Some(&json!(200)));
    assert_eq!(request.tag("portcullis.route_kind"), Some(&json!("api")));
    let upstream = api.by_id(&parent);
    assert_eq!(upstream.operation, "upstream");
    assert_eq!(upstream.parent.as_deref(), Some(request.span_id.as_str()));
    assert_eq!(upstream.tag("span.kind"), Some(&json!("client")));
    assert_eq!(upstream.tag("http.response.status_code"), Some(&json!(200)));
    let app = api.span("GET /api/orders");
    assert_eq!(app.service, "test-upstream");
    assert_eq!(app.parent.as_deref(), Some(parent.as_str()));
    let lookup = api.span("session_lookup");
    assert_eq!(lookup.parent.as_deref(), Some(request.span_id.as_str()));
    assert!(lookup.tag("session.cache").is_some(), "{lookup:?}");
    assert!(
        jaeger.trace(FORGED_TRACE).await.is_none(),
        "nothing was recorded under the forged trace id"
    );

    // The login: the callback took the transaction, exchanged the code at the OP and stored the
    // session; discovery at start-up is a trace of its own.
    let callback = jaeger
        .wait_for_operation("portcullis", "GET /bff/callback", |t| {
            t.operations().contains("oidc token")
        })
        .await;
    let steps = child_operations(&callback, "GET /bff/callback");
    for step in [
        "session_store take",
        "oidc token",
        "session_store set",
        "session_store index",
    ] {
        assert!(steps.contains(&step), "{step} in the callback: {steps:?}");
    }
    let login = jaeger
        .wait_for_operation("portcullis", "GET /bff/login", |_| true)
        .await;
    assert!(child_operations(&login, "GET /bff/login").contains(&"session_store set"));
    let store_op = callback.span("session_store take");
    assert_eq!(store_op.tag("db.system.name"), Some(&json!("redis")));
    assert_eq!(store_op.tag("db.operation.name"), Some(&json!("take")));
    jaeger
        .wait_for_operation("portcullis", "oidc discovery", |_| true)
        .await;

    // A trusted caller's trace goes on through portcullis, tracestate and all.
    let caller = reqwest::Client::builder()
        .local_address(TRUSTED_CALLER.parse::<IpAddr>().expect("an address"))
        .build()
        .expect("client");
    let resp = caller
        .get(format!("{}/public/status", w.proxy.origin()))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("tracestate", "ingress=7")
        .send()
        .await
        .expect("portcullis answers");
    assert_eq!(resp.status(), 200);
    let seen = w.upstream.last();
    let (trace_id, parent) = traceparent(seen.header("traceparent"));
    assert_eq!(trace_id, CALLER_TRACE, "the caller's trace continues");
    assert_ne!(parent, CALLER_SPAN, "under portcullis's own span");
    assert_eq!(seen.header("tracestate"), Some("ingress=7"));
    let continued = jaeger
        .wait_for_trace(CALLER_TRACE, |t| {
            t.operations().contains("GET /public/") && t.operations().contains("upstream")
        })
        .await;
    let request = continued.span("GET /public/");
    assert_eq!(request.parent.as_deref(), Some(CALLER_SPAN));
    assert_eq!(
        continued.by_id(&parent).parent.as_deref(),
        Some(request.span_id.as_str())
    );

    // Nothing secret was exported: no code, verifier, token or client secret, no cookie, no
    // query string.
    let exported = jaeger.all_traces_json("portcullis").await.to_string();
    let mut secrets = w.op.issued_secrets().await;
    assert!(
        secrets.len() >= 4,
        "codes, verifiers and tokens were recorded"
    );
    secrets.push(support::op::CLIENT_SECRET.to_string());
    secrets.push(b.session_cookie().expect("a session").to_string());
    secrets.push("4111111111111111".to_string());
    for secret in &secrets {
        assert!(
            !exported.contains(secret.as_str()),
            "an exported span holds a secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_and_a_wait_for_another_requests_refresh_are_spans() {
    let jaeger = Jaeger::start().await;
    let w = World::start(WorldOptions {
        access_token_ttl: 4,
        // The OP answers refreshes slowly, so the second request finds the lock taken.
        refresh_delay_ms: 500,
        extra_config: jaeger.portcullis_config(&[]),
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    assert_eq!(b.api("/api/x").await.status, 200);
    let first = last_bearer(&w.upstream);
    w.op.wait_until_inactive(&first, "the access token to expire")
        .await;
    let mut same_session = w.browser();
    same_session.cookies = b.cookies.clone();
    let (one, two) = tokio::join!(b.api("/api/one"), same_session.api("/api/two"));
    assert_eq!((one.status, two.status), (200, 200));

    let refreshed = jaeger
        .wait_for_operation("portcullis", "token_refresh", |t| {
            t.operations().contains("oidc refresh")
        })
        .await;
    let steps = child_operations(&refreshed, "token_refresh");
    for step in [
        "session_store lock",
        "oidc refresh",
        "session_store set",
        "session_store unlock",
    ] {
        assert!(steps.contains(&step), "{step} in the refresh: {steps:?}");
    }
    let waited = jaeger
        .wait_for_operation("portcullis", "refresh_lock_wait", |_| true)
        .await;
    let wait = waited.span("refresh_lock_wait");
    assert_eq!(
        wait.parent.as_deref(),
        Some(waited.span("token_refresh").span_id.as_str())
    );
    assert!(
        child_operations(&waited, "refresh_lock_wait").contains(&"session_store get"),
        "the waiting request re-read the session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_process_exports_its_last_spans_before_it_exits() {
    let jaeger = Jaeger::start().await;
    let mut w = World::start(WorldOptions {
        redis: false,
        extra_config: jaeger.portcullis_config(&[]),
        ..Default::default()
    })
    .await;
    let mut b = w.browser();
    assert_eq!(b.get("/public/last", &[]).await.status, 200);
    let (trace_id, _) = traceparent(w.upstream.last().header("traceparent"));
    w.proxy.terminate();
    let (code, _) = w.proxy.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0));
    // Not waited for: the spans were sent before the exit, not at the next batch.
    let trace = jaeger
        .trace(&trace_id)
        .await
        .expect("the trace was exported");
    assert_eq!(trace.span("GET /public/").service, "portcullis");
    assert_eq!(
        trace.span("upstream").tag("http.response.status_code"),
        Some(&json!(200))
    );
}
