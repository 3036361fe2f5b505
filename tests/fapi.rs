//! portcullis as a FAPI 2.0-grade client against the real OP fixture: pushed authorization
//! requests, `private_key_jwt` on every call to the OP, DPoP-bound tokens (with the OP's
//! nonces) and a `dpop: true` route whose upstream verifies each proof and the token's
//! `cnf.jkt` as a resource server does. Then the ways it goes wrong: a proof the OP refuses,
//! an OP that never stops asking for a new nonce, an OP without PAR, unusable key files.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::dpop::{client_key, introspect, verify_proof, RESOURCE_SERVER_SECRET};
use support::eventually;
use support::op::{Op, OpOptions};
use support::portcullis::{Portcullis, Store};
use support::upstream::Upstream;

const KID: &str = "portcullis-fapi-1";

struct Fapi {
    op: Op,
    upstream: Upstream,
    proxy: Portcullis,
    key_pem: String,
    /// The client's public keys as registered at the OP.
    jwks: String,
    _dir: tempfile::TempDir,
}

/// The OP's FAPI client: `private_key_jwt` with the test's key, DPoP-bound tokens with
/// nonces, PAR required; `op_env` adds to or overrides that.
fn op_env(jwks: &str, op_env: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CLIENT_AUTH_METHOD", "private_key_jwt".to_string()),
        ("CLIENT_JWKS", jwks.to_string()),
        ("PAR", "required".to_string()),
        ("DPOP_BOUND", "1".to_string()),
        ("DPOP_NONCE", "1".to_string()),
        ("RESOURCE_SERVER_SECRET", RESOURCE_SERVER_SECRET.to_string()),
    ];
    env.extend(op_env.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// portcullis's standard test configuration, authenticating with the key file instead of
/// the secret, with `oidc_extra` under `oidc:` and the `/api/` route forwarding DPoP.
fn fapi_config(
    proxy: &Portcullis,
    op: &Op,
    upstream: &Upstream,
    key_file: &str,
    oidc_extra: &str,
) -> String {
    let config = proxy.config(&op.issuer, upstream, &Store::Memory, "");
    let secret_line = config
        .lines()
        .find(|l| l.trim_start().starts_with("client_secret_file:"))
        .expect("the standard config names a secret file")
        .to_string();
    let oidc = format!(
        "  token_endpoint_auth_method: private_key_jwt\n  client_key_file: \"{key_file}\"\n  client_key_id: \"{KID}\"\n  dpop: true\n  pushed_authorization_requests: required\n{oidc_extra}"
    );
    config
        .replace(&format!("{secret_line}\n"), &oidc)
        .replace("kind: api }", "kind: api, dpop: true }")
}

impl Fapi {
    fn prepare(extra_env: &[(&'static str, &str)], access_token_ttl: u64) -> (Fapi, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (key_pem, jwks) = client_key(KID);
        let key_file = dir.path().join("client-key.pem");
        std::fs::write(&key_file, &key_pem).expect("write the key");
        let upstream = Upstream::start();
        let proxy = Portcullis::reserve();
        let op = Op::start(OpOptions {
            app_origins: vec![proxy.origin()],
            access_token_ttl,
            env: op_env(&jwks, extra_env),
            ..OpOptions::default()
        });
        let fapi = Fapi {
            op,
            upstream,
            proxy,
            key_pem,
            jwks,
            _dir: dir,
        };
        (fapi, key_file.display().to_string())
    }

    async fn start(
        extra_env: &[(&'static str, &str)],
        oidc_extra: &str,
        access_token_ttl: u64,
    ) -> Fapi {
        let (mut fapi, key_file) = Fapi::prepare(extra_env, access_token_ttl);
        let config = fapi_config(&fapi.proxy, &fapi.op, &fapi.upstream, &key_file, oidc_extra);
        fapi.proxy.start(&config).await;
        fapi
    }

    /// The upstream's URL for `path`: what a DPoP proof's `htu` must name.
    fn htu(&self, path: &str) -> String {
        format!("{}{path}", self.upstream.url())
    }

    async fn dpop_stats(&self) -> (u64, u64) {
        let body: serde_json::Value = reqwest::get(format!("{}/test/dpop", self.op.issuer))
            .await
            .expect("the OP answers /test/dpop")
            .json()
            .await
            .expect("JSON");
        (
            body["token_requests_with_proof"].as_u64().unwrap_or(0),
            body["nonce_challenges"].as_u64().unwrap_or(0),
        )
    }

    /// The DPoP token and proof of the upstream's last request, the proof verified against
    /// that request as the resource server sees it, and the token's binding at the OP.
    async fn verified_last_request(&self, path: &str) -> (String, String, String) {
        let last = self.upstream.last();
        assert_eq!(last.path, path);
        let auth = last.all("authorization");
        assert_eq!(auth.len(), 1, "one Authorization header: {auth:?}");
        let token = auth[0]
            .strip_prefix("DPoP ")
            .expect("a DPoP token")
            .to_string();
        let proofs = last.all("dpop");
        assert_eq!(proofs.len(), 1, "one DPoP proof");
        let proof = verify_proof(proofs[0], &last.method, &self.htu(path), &token)
            .unwrap_or_else(|e| panic!("the upstream refuses the proof: {e}"));
        let binding = introspect(&self.op.issuer, &token).await;
        assert_eq!(binding["active"], true, "{binding}");
        assert_eq!(binding["token_type"], "DPoP", "{binding}");
        assert_eq!(
            binding["cnf"]["jkt"].as_str(),
            Some(proof.thumbprint.as_str()),
            "the token is bound to the key that signed the proof"
        );
        (token, proof.jti, proof.thumbprint)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fapi_client_logs_in_calls_a_dpop_route_refreshes_and_logs_out() {
    let w = Fapi::start(&[], "", 4).await;
    let mut b = support::browser::Browser::new(&w.proxy.origin());

    // PAR: the browser carries nothing but the client id and the OP's request_uri.
    let auth = b.start_login("/").await;
    let mut names: Vec<String> = auth.query_pairs().map(|(k, _)| k.into_owned()).collect();
    names.sort();
    assert_eq!(names, ["client_id", "request_uri"], "{auth}");
    let callback = b.authorize_at_op(auth, "alice").await;
    assert_eq!(b.get(&callback, &[]).await.status, 200);
    let (proofs, challenges) = w.dpop_stats().await;
    assert!(
        challenges >= 1,
        "the OP demanded a nonce and portcullis answered with one"
    );
    assert_eq!(
        proofs,
        challenges + 1,
        "one retry per challenge, then success"
    );

    let resp = b.api("/api/orders").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let (token, first_jti, jkt) = w.verified_last_request("/api/orders").await;
    assert_eq!(b.api("/api/orders").await.status, 200);
    let (_, second_jti, _) = w.verified_last_request("/api/orders").await;
    assert_ne!(
        first_jti, second_jti,
        "every upstream request gets a fresh proof"
    );

    // Routes that did not opt in keep today's Bearer header and carry no proof.
    assert_eq!(b.get("/page", &[]).await.status, 200);
    let page = w.upstream.last();
    assert!(page
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    assert!(page.header("dpop").is_none());

    // Refresh (rotation) with a proof from the same key: the new token is bound to it too.
    // Polled by requests (each may be the one that refreshes), with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refreshed = loop {
        assert_eq!(b.api("/api/orders").await.status, 200);
        let last = w.upstream.last();
        let current = last
            .header("authorization")
            .and_then(|a| a.strip_prefix("DPoP "));
        if let Some(current) = current.filter(|c| *c != token) {
            break current.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the access token was not refreshed in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (new_token, _, new_jkt) = w.verified_last_request("/api/orders").await;
    assert_eq!(new_token, refreshed);
    assert_eq!(
        new_jkt, jkt,
        "the session keeps its DPoP key across a refresh"
    );
    let (_, refreshes) = w.op.grant_counts().await;
    assert!(refreshes >= 1);

    // Logout revokes the refresh token, authenticated with private_key_jwt as well.
    b.logout().await;
    eventually(
        "the OP to accept a revocation",
        Duration::from_secs(20),
        || async { (!w.op.revocations().await.is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(b.api("/api/orders").await.status, 401);

    let logs = w.proxy.logs();
    let key_body = w.key_pem.lines().nth(1).expect("PEM body");
    for (what, secret) in [
        ("access token", token.as_str()),
        ("refreshed token", new_token.as_str()),
        ("client key", key_body),
    ] {
        assert!(!logs.contains(secret), "a log line contained the {what}");
        assert!(
            !b.transcript.contains(secret),
            "a response contained the {what}"
        );
    }
    for secret in w.op.issued_secrets().await {
        assert!(
            !logs.contains(&secret),
            "a log line contained a token or code"
        );
    }
}

/// Logs in until the callback; returns its status and portcullis's logs.
async fn failed_login(w: &Fapi) -> (u16, String) {
    let mut b = support::browser::Browser::new(&w.proxy.origin());
    let auth = b.start_login("/").await;
    let callback = b.authorize_at_op(auth, "mallory").await;
    let status = b.get(&callback, &[]).await.status;
    let logs = w.proxy.logs();
    let key_body = w.key_pem.lines().nth(1).expect("PEM body");
    assert!(
        !logs.contains(key_body),
        "a log line contained the client key"
    );
    // The fault answers before the OP records the code, so look for it as the callback has it.
    let code = url::Url::parse(&callback)
        .expect("a callback URL")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("an authorization code");
    assert!(!logs.contains(&code), "a log line contained the code");
    (status, logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proof_the_op_refuses_fails_the_login_with_its_reason() {
    let w = Fapi::start(&[("DPOP_FAULT", "reject")], "", 60).await;
    let (status, logs) = failed_login(&w).await;
    assert_eq!(status, 400, "the login fails");
    assert!(
        logs.lines()
            .any(|l| l.contains("login") && l.contains("dpop_proof_rejected")),
        "a log line names the reason: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_op_that_keeps_asking_for_a_new_nonce_is_answered_once() {
    let w = Fapi::start(&[("DPOP_FAULT", "nonce_loop")], "", 60).await;
    let (status, logs) = failed_login(&w).await;
    assert_eq!(status, 400, "the login fails");
    assert!(
        logs.lines().any(|l| l.contains("dpop_nonce_loop")),
        "a log line names the reason: {logs}"
    );
    assert_eq!(w.dpop_stats().await, (2, 2), "one retry, no more");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_par_against_an_op_without_it_refuses_to_start() {
    let (mut w, key_file) = Fapi::prepare(&[("PAR", "off")], 60);
    let config = fapi_config(&w.proxy, &w.op, &w.upstream, &key_file, "");
    let (code, logs) = w.proxy.start_expecting_exit(&config).await;
    assert_eq!(code, Some(2), "{logs}");
    let problem = "oidc.pushed_authorization_requests: is required, but the provider does not advertise pushed_authorization_request_endpoint (enable PAR at the provider, or set auto or off)";
    assert!(logs.contains(problem), "{logs}");

    // `check` alone cannot know; `check --probe` asks the OP and says the same.
    let config_path = w.proxy.config_path();
    let (code, _, stderr) = check(&config_path, &["--probe"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr, format!("{}: {problem}\n", config_path.display()));
    assert_eq!(check(&config_path, &[]).0, Some(0));
}

/// `portcullis check [args] --config path`: exit code, stdout, stderr.
fn check(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("portcullis runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_an_op_that_drops_required_par_until_a_reload_fixes_it() {
    let port = support::free_port();
    let port_env = port.to_string();
    let (mut w, key_file) = Fapi::prepare(&[("OP_PORT", &port_env), ("PAR", "required")], 60);
    let config = fapi_config(
        &w.proxy,
        &w.op,
        &w.upstream,
        &key_file,
        "  discovery_refresh: \"1s\"\n",
    );
    w.proxy.start(&config).await;
    // The same OP, restarted on its port without PAR.
    w.op.stop();
    w.op = Op::start(OpOptions {
        app_origins: vec![w.proxy.origin()],
        env: op_env(&w.jwks, &[("OP_PORT", &port_env), ("PAR", "off")]),
        ..OpOptions::default()
    });
    let body = eventually(
        "/readyz to report the dropped feature",
        Duration::from_secs(20),
        || async {
            let (status, body) = w.proxy.admin_get("/readyz").await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains(
            "oidc.pushed_authorization_requests: is required, but the provider does not advertise"
        ),
        "{body}"
    );
    let logs = w.proxy.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("discovery failed") && l.contains("discovery_incompatible")),
        "{logs}"
    );
    // The fix, applied by a reload: PAR auto. The OP is asked again, found fit, and ready.
    let fixed = config.replace(
        "pushed_authorization_requests: required",
        "pushed_authorization_requests: auto",
    );
    std::fs::write(w.proxy.config_path(), fixed).expect("rewrite the config");
    w.proxy.signal("HUP");
    eventually(
        "/readyz to recover after the reload",
        Duration::from_secs(20),
        || async { (w.proxy.admin_get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    let mut b = support::browser::Browser::new(&w.proxy.origin());
    let auth = b.start_login("/").await;
    assert!(
        auth.query_pairs().any(|(k, _)| k == "code_challenge"),
        "{auth}"
    );
}

#[test]
fn check_names_an_unusable_key_file_and_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pem, jwks) = client_key(KID);
    let public_jwk =
        serde_json::from_str::<serde_json::Value>(&jwks).expect("JSON")["keys"][0].to_string();
    let cases = [
        ("missing.pem", None, "cannot read"),
        ("public.jwk", Some(public_jwk), "holds a public key only (a private key is needed to sign; register its public half at the provider)"),
        ("cert.pem", Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string()), "holds a certificate, not a private key (point the key at the private key file)"),
        ("ok.pem", Some(pem), ""),
    ];
    for (name, content, expected) in cases {
        let key = dir.path().join(name);
        if let Some(content) = &content {
            std::fs::write(&key, content).expect("write the key file");
        }
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "public_url: \"http://127.0.0.1:4480\"\noidc:\n  issuer: \"http://127.0.0.1:9\"\n  client_id: c\n  token_endpoint_auth_method: private_key_jwt\n  client_key_file: \"{}\"\n  client_key_alg: ES256\nroutes:\n  - {{ path: \"/\", upstream: \"http://127.0.0.1:8080\", kind: page }}\n",
                key.display()
            ),
        )
        .expect("write the config");
        let (code, _, stderr) = check(&config, &[]);
        if expected.is_empty() {
            assert_eq!(code, Some(0), "{name}: {stderr}");
            continue;
        }
        assert_eq!(code, Some(2), "{name}: {stderr}");
        let line = format!("{}: oidc.client_key_file: ", config.display());
        let path = key.display().to_string();
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(&path) && l.contains(expected)),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_par_against_an_op_without_it_logs_in_through_the_browser() {
    let (mut w, key_file) = Fapi::prepare(&[("PAR", "off")], 60);
    let config = fapi_config(&w.proxy, &w.op, &w.upstream, &key_file, "").replace(
        "pushed_authorization_requests: required",
        "pushed_authorization_requests: auto",
    );
    w.proxy.start(&config).await;
    let mut b = support::browser::Browser::new(&w.proxy.origin());
    let auth = b.start_login("/").await;
    let names: Vec<String> = auth.query_pairs().map(|(k, _)| k.into_owned()).collect();
    for name in ["code_challenge", "state", "nonce", "dpop_jkt"] {
        assert!(names.iter().any(|n| n == name), "{name} in {auth}");
    }
    let callback = b.authorize_at_op(auth, "alice").await;
    assert_eq!(b.get(&callback, &[]).await.status, 200);
    assert_eq!(b.api("/api/orders").await.status, 200);
    w.verified_last_request("/api/orders").await;
}
