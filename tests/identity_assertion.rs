//! The identity assertion (`identity_assertion`, `routes[].identity_assertion`): an upstream
//! that trusts no header verifies who the user is with the `jose` library against the JWKS on
//! portcullis's admin port; a forged assertion never reaches an upstream; and a refresh that
//! changes the user's claims changes both the assertion and the route's claim rules' verdict.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use support::assertion_upstream;
use support::{World, WorldOptions};

const HEADER: &str = "x-portcullis-assertion";

fn write_signing_key(dir: &std::path::Path) -> std::path::PathBuf {
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("a P-256 key");
    let path = dir.join("assertion-key.pem");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der.as_ref())
    );
    std::fs::write(&path, pem).expect("write the key");
    path
}

fn verified_claims(body: &str) -> Value {
    let answer: Value = serde_json::from_str(body).expect("the upstream answers JSON");
    answer["claims"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_verify_the_assertion_and_a_refresh_changes_what_it_says() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = write_signing_key(keys.path());
    let mut world = World::start(WorldOptions {
        // Short-lived access tokens: the session refreshes within seconds.
        access_token_ttl: 4,
        extra_config: format!("identity_assertion:\n  key_file: \"{}\"\n", key.display()),
        ..WorldOptions::default()
    })
    .await;
    world
        .op
        .set_claims("alice", json!({ "groups": ["admins", "staff"] }))
        .await;
    let origin = world.proxy.origin();
    let app = assertion_upstream::start(&world.proxy.admin_url("/.well-known/jwks.json"), &origin);
    let plain = world.upstream.url();
    let routes = format!(
        "routes:\n  - {{ path: \"/verified/\", upstream: \"{app}\", kind: api, identity_assertion: true }}\n  \
         - {{ path: \"/admin/\", upstream: \"{app}\", kind: api, identity_assertion: true, \
         access: {{ groups: [admins] }} }}\n  \
         - {{ path: \"/plain/\", upstream: \"{plain}\", kind: api }}\n",
        app = app.url(),
    );
    world.reconfigure("routes:\n", &routes).await;

    let (status, jwks) = world.proxy.admin_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&jwks).expect("a JWKS");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private half");

    let mut browser = world.browser();
    browser.login("alice", "/").await;
    let forged = [("x-csrf", "1"), (HEADER, "eyJhbGciOiJub25lIn0.e30.")];
    let answer = browser.get("/verified/me", &forged).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = verified_claims(&answer.body);
    assert_eq!(claims["iss"], origin.as_str());
    assert_eq!(claims["aud"], "127.0.0.1");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["groups"], json!(["admins", "staff"]));
    assert_eq!(browser.api("/admin/panel").await.status, 200);

    // A route without the assertion: the client's copy is removed all the same.
    assert_eq!(browser.get("/plain/x", &forged).await.status, 200);
    assert!(world.upstream.last().header(HEADER).is_none());

    // The app really verifies: a well-formed assertion signed by another key (the OP's) for
    // the same issuer and host is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let other_key = world
        .op
        .sign(
            json!({ "iss": origin, "aud": "127.0.0.1", "sub": "mallory", "iat": now, "exp": now + 60 }),
            json!({}),
        )
        .await;
    let direct = reqwest::Client::new()
        .get(format!("{}/verified/me", app.url()))
        .header(HEADER, other_key)
        .send()
        .await
        .expect("the app answers");
    assert_eq!(direct.status(), 401);

    // The user leaves the admins group at the OP: the next refresh's ID token says so, the
    // route's rule refuses her, and the assertion the app verifies no longer claims it.
    world
        .op
        .set_claims("alice", json!({ "groups": ["staff"] }))
        .await;
    let until = Instant::now() + Duration::from_secs(30);
    let denied = loop {
        let answer = browser.api("/admin/panel").await;
        if answer.status == 403 {
            break answer;
        }
        assert_eq!(answer.status, 200, "admitted until the refresh");
        assert!(
            Instant::now() < until,
            "no refresh brought the new groups in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(denied.body, "{\"error\":\"access_denied\"}");
    let answer = browser.get("/verified/me", &forged).await;
    assert_eq!(answer.status, 200);
    assert_eq!(verified_claims(&answer.body)["groups"], json!(["staff"]));
    let logs = world.proxy.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("route_access") && l.contains("access_denied_group")),
        "the audit line names the rule"
    );
    assert!(!logs.contains("eyJ"), "no token or assertion in the logs");
}

/// In ingress auth mode the answer carries the assertion for the host the ingress asked about,
/// which the app behind the ingress verifies as it would behind the proxy; a public path's
/// answer carries an empty one, so the ingress overwrites a client's copy.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_auth_answer_carries_an_assertion_for_the_original_host() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = write_signing_key(keys.path());
    let auth_port = support::free_port();
    let world = World::start(WorldOptions {
        redis: false,
        extra_config: format!(
            "identity_assertion:\n  key_file: \"{}\"\n\
             ingress_auth:\n  enabled: true\n  listen: \"127.0.0.1:{auth_port}\"\n  controller: nginx\n  \
             trusted_ingress: [\"127.0.0.1\"]\n  identity_assertion: true\n  hosts:\n    \
             - host: app.localhost\n      paths:\n        - {{ path: /public/, kind: public }}\n        \
             - {{ path: /, kind: page }}\n",
            key.display()
        ),
        ..WorldOptions::default()
    })
    .await;
    let app = assertion_upstream::start(
        &world.proxy.admin_url("/.well-known/jwks.json"),
        &world.proxy.origin(),
    );
    let mut browser = world.browser();
    browser.login("alice", "/").await;
    let cookie = format!(
        "__Host-portcullis={}",
        browser.session_cookie().expect("a session cookie")
    );
    let ask = |url: &'static str, cookie: Option<String>| {
        let mut req = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{auth_port}/bff/auth"))
            .header("x-original-url", url)
            .header("x-original-method", "GET");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };

    let answer = ask("http://app.localhost/orders", Some(cookie))
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    let assertion = answer
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("an assertion in the answer")
        .to_string();
    // What the ingress would do: copy it onto the request to the app, whose Host is the one asked
    // about.
    let at_app = |host: &'static str| {
        reqwest::Client::new()
            .get(format!("{}/orders", app.url()))
            .header("host", host)
            .header(HEADER, assertion.clone())
            .send()
    };
    let verified = at_app("app.localhost").await.expect("the app answers");
    assert_eq!(verified.status(), 200);
    let body = verified.text().await.expect("body");
    assert_eq!(verified_claims(&body)["aud"], "app.localhost");
    assert_eq!(verified_claims(&body)["sub"], "alice");
    assert_eq!(
        at_app("other.localhost")
            .await
            .expect("the app answers")
            .status(),
        401,
        "an assertion for one host is refused by an app on another"
    );

    let public = ask("http://app.localhost/public/logo.png", None)
        .await
        .expect("answer");
    assert_eq!(public.status(), 200);
    assert_eq!(
        public.headers().get(HEADER).map(|v| v.as_bytes()),
        Some(&b""[..]),
        "empty, so the ingress overwrites a client's copy"
    );
}
