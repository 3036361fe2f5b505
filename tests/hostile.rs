//! Hostile input through the real running proxy (real OP, real Redis, the recording upstream):
//! for each input the status, that nothing (or exactly the sanitised request) reached the
//! upstream, and that no session state changed. Requests are written as raw bytes so they reach
//! portcullis exactly as an attacker would send them.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{status_of, World, WorldOptions};

const PARTNER: &str = "https://partner.example";

/// A world whose config adds a WebSocket route, a method-restricted route and the security
/// section under test.
async fn hostile_world() -> World {
    let mut w = World::start(WorldOptions::default()).await;
    let up = w.upstream.url();
    w.reconfigure(
        "routes:\n",
        &format!(
            "security:\n  allowed_origins: [\"{PARTNER}\"]\n  content_security_policy: \"default-src 'self'\"\n  rate_limit_per_client: \"6/h\"\n\
             routes:\n  - {{ path: \"/ws/\", upstream: \"{up}\", kind: api, websocket: true }}\n  - {{ path: \"/api/orders/\", upstream: \"{up}\", kind: api, methods: [GET, POST] }}\n"
        ),
    )
    .await;
    w
}

/// Writes `request` on a fresh connection and returns everything read until the server closes
/// or 3 s pass.
fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Attack {
    name: &'static str,
    target: String,
    extra_headers: String,
    expected: &'static [u16],
}

fn attack(
    name: &'static str,
    target: &str,
    extra_headers: &str,
    expected: &'static [u16],
) -> Attack {
    Attack {
        name,
        target: target.to_string(),
        extra_headers: extra_headers.to_string(),
        expected,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_and_reach_nothing() {
    let w = hostile_world().await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let session = format!("__Host-portcullis={}", b.session_cookie().unwrap());
    let big = "a".repeat(100 * 1024);
    let cookie_bomb = format!("Cookie: {session}; bomb={}\r\n", "b".repeat(64 * 1024));
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let attacks = vec![
        attack("dot segments", "/public/../api/secret", "", &[400]),
        attack("dot segment with params", "/public;/../api/secret", "", &[400]),
        attack("encoded slash", "/public%2F..%2Fapi/secret", "", &[400]),
        attack("encoded slash, lower case", "/public/..%2fapi/secret", "", &[400]),
        attack("encoded dot", "/public/%2e%2e/api/secret", "", &[400]),
        attack("double encoding", "/public/%252e%252e/api/secret", "", &[400]),
        attack("encoded NUL", "/public%00/../api/secret", "", &[400]),
        attack("overlong UTF-8", "/public/%c0%ae%c0%ae/api/secret", "", &[400]),
        attack("malformed escape", "/public/%zz", "", &[400]),
        attack("escape with markup", "/public/%<script>", "", &[400]),
        attack("backslash", "/public\\..\\api\\secret", "", &[400]),
        attack("empty segment", "/api//secret", "", &[400]),
        // The HTTP parser drops a fragment before routing, so route and upstream agree on the path.
        attack("fragment", "/api/secret#/public/", "", &[400, 403]),
        attack("asterisk form", "*", "", &[400]),
        attack("no leading slash", "api/secret", "", &[400]),
        attack("TRACE", "/public/x", "", &[405]),
        attack("method not allowed on the route", "/api/orders/1", "X-CSRF: 1\r\n", &[405]),
        attack("cross-site fetch", "/api/x", "X-CSRF: 1\r\nSec-Fetch-Site: cross-site\r\n", &[403]),
        attack("same-site sibling", "/api/x", "X-CSRF: 1\r\nSec-Fetch-Site: same-site\r\nOrigin: https://other.app.test\r\n", &[403]),
        attack("foreign origin", "/api/x", "X-CSRF: 1\r\nOrigin: https://evil.test\r\n", &[403]),
        attack("h2c upgrade", "/public/x", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", &[403]),
        attack("websocket on a plain route", "/api/x", "X-CSRF: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n", &[403]),
        attack("websocket from a foreign origin", "/ws/feed", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.test\r\n", &[403]),
        attack("long request line", &format!("/public/{}", "a".repeat(12 * 1024)), "", &[414]),
        attack("huge request line", &format!("/public/{big}"), "", &[414]),
        attack("huge header", "/public/x", &format!("X-Big: {big}\r\n"), &[431]),
        attack("cookie bomb", "/public/x", &cookie_bomb, &[431]),
        attack("too many headers", "/public/x", &many_headers, &[431]),
        attack("login from a frame", "/bff/login?returnTo=/", "Sec-Fetch-Dest: iframe\r\nSec-Fetch-Site: cross-site\r\n", &[403]),
    ];
    let keys_before = w.redis().keys("*").len();
    let port = w.proxy.port;
    for a in &attacks {
        let method = match a.name {
            "TRACE" => "TRACE",
            "method not allowed on the route" => "DELETE",
            _ => "GET",
        };
        let has_cookie = a.extra_headers.starts_with("Cookie:");
        let cookie_line = if has_cookie {
            String::new()
        } else {
            format!("Cookie: {session}\r\n")
        };
        let request = format!(
            "{method} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie_line}{}Connection: close\r\n\r\n",
            a.target, a.extra_headers
        );
        let before = w.upstream.count();
        let response = raw(port, request.as_bytes());
        let status = status_of(&response);
        assert!(
            a.expected.contains(&status),
            "{}: got {status}: {}",
            a.name,
            &response[..response.len().min(300)]
        );
        assert_eq!(
            w.upstream.count(),
            before,
            "{}: something reached the upstream",
            a.name
        );
        assert!(
            !response.contains("<script>"),
            "{}: the response reflects input",
            a.name
        );
    }
    assert_eq!(
        w.redis().keys("*").len(),
        keys_before,
        "no session state changed"
    );
    let request = format!("GET /public/x#/../../api/secret HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let status = status_of(&raw(port, request.as_bytes()));
    if status == 200 {
        assert_eq!(
            w.upstream.last().path,
            "/public/x",
            "the path that was routed is the path forwarded"
        );
    } else {
        assert_eq!(status, 400);
    }
    assert_eq!(b.api("/api/still-works").await.status, 200);
    let logs = w.proxy.logs();
    for reason in [
        "path_dot_segment",
        "path_encoded_separator",
        "cross_site_request",
        "upgrade_not_allowed",
        "uri_too_long",
    ] {
        assert!(
            logs.contains(reason),
            "no reason-coded log line for {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_never_reaches_the_upstream_as_a_second_request() {
    let w = hostile_world().await;
    let port = w.proxy.port;
    let smuggled = format!(
        "POST /public/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 37\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/admin HTTP/1.1\r\nX: x\r\n\r\n"
    );
    let response = raw(port, smuggled.as_bytes());
    assert!(matches!(status_of(&response), 200 | 400), "{response}");
    assert!(
        w.upstream
            .requests()
            .iter()
            .all(|r| !r.path.contains("admin")),
        "a smuggled request was forwarded"
    );
    for te in ["chunked, identity", "xchunked", "identity"] {
        let request = format!(
            "POST /public/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n0\r\n\r\n"
        );
        let before = w.upstream.count();
        let status = status_of(&raw(port, request.as_bytes()));
        assert!(
            status == 400 || status == 501,
            "Transfer-Encoding: {te} gave {status}"
        );
        assert_eq!(w.upstream.count(), before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_origins_get_exact_cors_and_others_none() {
    let w = hostile_world().await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let preflight = |origin: &str| {
        vec![
            ("origin", origin.to_string()),
            ("access-control-request-method", "POST".to_string()),
            ("access-control-request-headers", "x-csrf".to_string()),
        ]
    };
    let evil = preflight("https://evil.test");
    let evil: Vec<(&str, &str)> = evil.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = b.request("OPTIONS", "/api/x", &evil).await;
    assert_eq!(resp.status, 403);
    assert!(resp.header("access-control-allow-origin").is_none());
    let good = preflight(PARTNER);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = b.request("OPTIONS", "/api/orders/1", &good).await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("access-control-allow-origin"), Some(PARTNER));
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        resp.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(resp.header("vary"), Some("Origin"));
    let resp = b
        .get(
            "/api/x",
            &[
                ("x-csrf", "1"),
                ("origin", PARTNER),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("access-control-allow-origin"), Some(PARTNER));
    let page = b.get("/home", &[]).await;
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_need_a_session_and_get_the_token() {
    let w = hostile_world().await;
    let port = w.proxy.port;
    let handshake = |cookie: &str| {
        format!(
            "GET /ws/feed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
        )
    };
    assert_eq!(status_of(&raw(port, handshake("").as_bytes())), 401);
    assert_eq!(w.upstream.count(), 0);
    let mut b = w.browser();
    b.login("alice", "/").await;
    let cookie = format!(
        "Cookie: __Host-portcullis={}\r\n",
        b.session_cookie().unwrap()
    );
    raw(port, handshake(&cookie).as_bytes());
    let req = w.upstream.last();
    assert_eq!(req.path, "/ws/feed");
    assert!(
        req.header("authorization").unwrap().starts_with("Bearer "),
        "the token rides on the upgrade request"
    );
    assert_eq!(req.header("upgrade"), Some("websocket"));
    assert!(req.header("cookie").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_is_rate_limited_per_client() {
    let w = hostile_world().await;
    let mut b = w.browser();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(b.get("/bff/login?returnTo=/", &[]).await.status);
    }
    assert_eq!(statuses, vec![302, 302, 302, 302, 302, 302, 429, 429]);
    let (_, metrics) = w.proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("portcullis_rate_limited_total{endpoint=\"login\",limit=\"client\"} 2"),
        "{metrics}"
    );
}

/// K01: a cookie that names no session gets a 401 that expires it, a log line saying why, and
/// nothing written to the store; no cookie at all gets a plain 401.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_session_cookie_is_expired_and_named_in_the_log() {
    let w = World::start(WorldOptions::default()).await;
    let keys_before = w.redis().keys("*").len();
    let never_issued = "q7W0vOm3Yc2Jm8d1S9kX4pZ6tR5uL0bN2hV8aE3fG1g";
    let client = reqwest::Client::new();
    for (case, cookie, reason) in [
        (
            "never issued",
            Some(never_issued.to_string()),
            "unknown_session",
        ),
        (
            "malformed",
            Some("not*base64".to_string()),
            "cookie_malformed",
        ),
        ("no cookie", None, "unauthenticated"),
    ] {
        let logged = w.proxy.logs().len();
        let mut req = client
            .get(format!("{}/api/x", w.proxy.origin()))
            .header("x-csrf", "1");
        if let Some(c) = &cookie {
            req = req.header("cookie", format!("a=1; __Host-portcullis={c}"));
        }
        let resp = req.send().await.expect("portcullis answers");
        assert_eq!(resp.status(), 401, "{case}");
        let expired = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.starts_with("__Host-portcullis=;") && v.contains("Max-Age=0"));
        assert_eq!(expired, cookie.is_some(), "{case}: cookie expired");
        let logs = &w.proxy.logs()[logged..];
        assert!(
            logs.contains(&format!("reason=\"{reason}\"")),
            "{case}: {logs}"
        );
        assert_eq!(
            logs.matches("request rejected").count(),
            1,
            "{case}: one line per rejection"
        );
        if let Some(c) = &cookie {
            assert!(!logs.contains(c.as_str()), "{case}: the cookie was logged");
        }
    }
    assert_eq!(w.upstream.count(), 0);
    assert_eq!(
        w.redis().keys("*").len(),
        keys_before,
        "the store was written"
    );
}

/// X03: hostile bytes in parameters and paths give one rejection line each, which neither
/// echoes them nor grows with them.
#[tokio::test(flavor = "multi_thread")]
async fn each_rejection_logs_one_short_line_without_the_input() {
    let w = World::start(WorldOptions::default()).await;
    let client = reqwest::Client::new();
    let long = "A".repeat(10_000);
    let targets = [
        "/bff/login?returnTo=%1b%5b31m%0d%0aFAKE-LOG-LINE".to_string(),
        "/bff/login?returnTo=/x%0d%0aFAKE-LOG-LINE".to_string(),
        format!("/bff/callback?code=x&state={}", &long[..6_000]),
        format!("/api/{long}"),
        "/public/%1b%5b2J%0aFAKE-LOG-LINE".to_string(),
    ];
    for target in &targets {
        let logged = w.proxy.logs().len();
        let resp = client
            .get(format!("{}{target}", w.proxy.origin()))
            .send()
            .await
            .expect("portcullis answers");
        assert!(
            resp.status().is_client_error(),
            "{target:.60}: {}",
            resp.status()
        );
        let logs = w.proxy.logs()[logged..].to_string();
        assert_eq!(
            logs.matches("request rejected").count(),
            1,
            "{target:.60}: {logs}"
        );
        assert!(!logs.contains("FAKE-LOG-LINE") && !logs.contains('\u{1b}'));
        assert!(!logs.contains(&long[..200]), "{target:.60}: input echoed");
        assert!(
            logs.lines().all(|l| l.len() < 1_000),
            "{target:.60}: {logs}"
        );
    }
    assert_eq!(w.upstream.count(), 0);
}
