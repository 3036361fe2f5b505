//! A whole run (login, API calls, a silent refresh, back-channel and local logout), then one scan:
//! no authorization code, PKCE verifier, access, refresh or ID token, client secret or session
//! cookie in any log line, metric, response the browser got, value the store holds, or span
//! exported to the trace backend (Jaeger). The proxy logs at `trace`, as an operator chasing a
//! problem would run it, and exports every trace.

mod support;

use support::jaeger::Jaeger;
use support::{last_bearer, World, WorldOptions};

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_escapes_anywhere_during_a_whole_run() {
    let jaeger = Jaeger::start().await;
    let w = World::start(WorldOptions {
        access_token_ttl: 4,
        backchannel: true,
        rust_log: "trace",
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
    assert_eq!(b.api("/api/x").await.status, 200, "refreshed");
    assert_ne!(last_bearer(&w.upstream), first);
    assert_eq!(b.api("/bff/user").await.status, 200);
    let cookie = b.session_cookie().unwrap().to_string();
    let store_dump: Vec<String> = w
        .redis()
        .dump()
        .into_iter()
        .map(|(k, v)| format!("{k} {}", String::from_utf8_lossy(&v)))
        .collect();

    let mut other = w.browser();
    other.login("bob", "/").await;
    other.logout_at_op(&w.op.issuer).await;
    assert_eq!(b.logout().await, 302);

    let mut secrets = w.op.issued_secrets().await;
    assert!(
        secrets.len() >= 8,
        "codes, verifiers and tokens were recorded: {}",
        secrets.len()
    );
    secrets.push(support::op::CLIENT_SECRET.to_string());
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    let logs = w.proxy.logs();
    // The last logout's trace, with its revocation at the OP, is the last one exported.
    jaeger
        .wait_for_operation("portcullis", "GET /bff/logout", |t| {
            t.operations().contains("oidc revocation")
        })
        .await;
    let spans = jaeger.all_traces_json("portcullis").await.to_string();
    assert!(
        spans.contains("token_refresh") && spans.contains("POST /bff/backchannel-logout"),
        "the whole run was exported"
    );
    let responses = format!("{}\n{}", b.transcript, other.transcript);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a log line holds a secret");
        assert!(
            !metrics.contains(secret.as_str()),
            "a metric holds a secret"
        );
        assert!(
            !spans.contains(secret.as_str()),
            "an exported span holds a secret"
        );
        assert!(
            !store_dump.iter().any(|e| e.contains(secret.as_str())),
            "the store holds a secret in clear"
        );
        assert!(
            !responses.contains(secret.as_str()),
            "a response to the browser holds a secret"
        );
    }
    assert!(
        !logs.contains(&cookie) && !metrics.contains(&cookie) && !spans.contains(&cookie),
        "the session cookie leaked"
    );
}
