//! The callback against a scriptable OP that returns what a conformant OP never would: ID
//! tokens with one rule broken each, headers that name their own key, and a rotated key set.
//! Each bad token is refused with 400 and its own reason code, leaves no session, reaches no
//! upstream and makes no request to a URL the token names.

mod support;

use std::sync::Arc;

use serde_json::{json, Value};
use support::browser::{Browser, Response};
use support::portcullis::{Portcullis, Store};
use support::rogue_op::{b64_json, Grant, Key, RogueOp};
use support::upstream::Upstream;

struct Rig {
    rogue: RogueOp,
    upstream: Upstream,
    proxy: Portcullis,
}

async fn rig() -> Rig {
    rig_edited(|config| config).await
}

/// A rig whose portcullis configuration ends with `extra`.
async fn rig_with(extra: &str) -> Rig {
    rig_edited(|config| config + extra).await
}

/// A rig whose portcullis configuration is the usual one as `edit` changes it.
async fn rig_edited(edit: impl FnOnce(String) -> String) -> Rig {
    let rogue = RogueOp::start();
    let upstream = Upstream::start();
    let mut proxy = Portcullis::reserve();
    let config = edit(proxy.config(&rogue.issuer, &upstream, &Store::Memory, ""));
    proxy.start(&config).await;
    Rig {
        rogue,
        upstream,
        proxy,
    }
}

impl Rig {
    /// One login through the rogue OP; returns the callback's response and the browser.
    async fn login(&self) -> (Response, Browser) {
        let mut b = Browser::new(&self.proxy.origin());
        let auth = b.start_login("/").await;
        let callback = b.authorize_at_op(auth, "rogue-user").await;
        let resp = b.get(&callback, &[]).await;
        (resp, b)
    }

    /// Logs in with the ID token `script` mints and asserts it is refused for `reason`.
    async fn refused(
        &self,
        case: &str,
        reason: &str,
        script: impl Fn(&Grant) -> String + Send + 'static,
    ) {
        self.rogue.issue(script);
        let forwarded = self.upstream.count();
        let logged = self.proxy.logs().len();
        let (resp, mut b) = self.login().await;
        assert_eq!(resp.status, 400, "{case}: {}", resp.body);
        assert!(b.session_cookie().is_none(), "{case}: a session was set");
        assert_eq!(b.api("/api/x").await.status, 401, "{case}");
        assert_eq!(
            self.upstream.count(),
            forwarded,
            "{case}: the upstream was called"
        );
        let logs = &self.proxy.logs()[logged..];
        assert!(
            logs.contains(&format!("reason=\"{reason}\"")),
            "{case}: no rejection logged with reason {reason}"
        );
    }
}

type ClaimsEdit = Box<dyn Fn(&mut Value) + Send>;

/// A token signed by `key` with `header` merged over the usual one and `edit` applied to the
/// valid claims.
fn crafted(
    key: &Arc<Key>,
    header: Value,
    edit: impl Fn(&mut Value) + Send + 'static,
) -> impl Fn(&Grant) -> String + Send + 'static {
    let key = key.clone();
    move |g| {
        let mut h = key.header();
        for (k, v) in header.as_object().into_iter().flatten() {
            h[k] = v.clone();
        }
        let mut claims = g.valid_claims();
        edit(&mut claims);
        key.sign(&h, &claims)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_breaking_one_rule_each_are_refused_with_its_reason() {
    let r = rig().await;
    let (resp, mut b) = r.login().await;
    assert_eq!(
        resp.status, 200,
        "the rogue OP's valid token logs in: {}",
        resp.body
    );
    assert_eq!(b.api("/api/x").await.status, 200);
    assert!(
        r.upstream
            .last()
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer rogue-at-")),
        "the rogue OP's access token is forwarded"
    );
    let key = r.rogue.key.clone();
    let cases: Vec<(&str, &str, ClaimsEdit)> = vec![
        (
            "foreign iss",
            "id_token_iss",
            Box::new(|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "iss with a trailing slash",
            "id_token_iss",
            Box::new(|c| c["iss"] = json!(format!("{}/", c["iss"].as_str().unwrap()))),
        ),
        (
            "another audience",
            "id_token_aud",
            Box::new(|c| c["aud"] = json!("someone-else")),
        ),
        (
            "an extra untrusted audience",
            "id_token_aud",
            Box::new(|c| c["aud"] = json!([support::op::CLIENT_ID, "someone-else"])),
        ),
        (
            "expired two minutes ago",
            "id_token_exp",
            Box::new(|c| c["exp"] = json!(c["iat"].as_u64().unwrap() - 120)),
        ),
        (
            "issued ten minutes ahead",
            "id_token_iat",
            Box::new(|c| c["iat"] = json!(c["iat"].as_u64().unwrap() + 600)),
        ),
        (
            "another nonce",
            "id_token_nonce",
            Box::new(|c| c["nonce"] = json!("not-the-nonce")),
        ),
        (
            "no nonce",
            "id_token_nonce",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        (
            "at_hash of another token",
            "id_token_at_hash",
            Box::new(|c| c["at_hash"] = json!(support::rogue_op::at_hash("another-access-token"))),
        ),
        (
            "empty sub",
            "id_token_sub",
            Box::new(|c| c["sub"] = json!("")),
        ),
        // C21: a logout token (events, no nonce) returned as the ID token.
        (
            "a logout token",
            "id_token_nonce",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("nonce");
                c["events"] = json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
            }),
        ),
    ];
    for (case, reason, edit) in cases {
        r.refused(case, reason, crafted(&key, json!({}), edit))
            .await;
    }

    // Signatures and algorithms.
    let k = key.clone();
    r.refused(
        "one flipped signature bit",
        "id_token_signature",
        move |g| {
            let jwt = k.sign(&k.header(), &g.valid_claims());
            let (head, sig) = jwt.rsplit_once('.').unwrap();
            let mut bytes = base64_url_decode(sig);
            bytes[10] ^= 1;
            format!("{head}.{}", base64_url(&bytes))
        },
    )
    .await;
    for none in ["none", "None"] {
        r.refused("alg none, no signature", "id_token_alg", move |g| {
            format!(
                "{}.{}.",
                b64_json(&json!({ "alg": none, "typ": "JWT" })),
                b64_json(&g.valid_claims())
            )
        })
        .await;
    }
    let k = key.clone();
    r.refused(
        "HS256 keyed with the public key",
        "id_token_alg",
        move |g| {
            let input = format!(
                "{}.{}",
                b64_json(&json!({ "alg": "HS256", "kid": k.kid })),
                b64_json(&g.valid_claims())
            );
            let mac_key =
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.jwk().to_string().as_bytes());
            let tag = ring::hmac::sign(&mac_key, input.as_bytes());
            format!("{input}.{}", base64_url(tag.as_ref()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_naming_its_own_key_is_refused_without_fetching_it() {
    let r = rig().await;
    let evil = Upstream::start();
    let attacker = Key::generate("attacker");
    for (case, header) in [
        (
            "jku",
            json!({ "kid": "attacker", "jku": format!("{}/jwks", evil.url()) }),
        ),
        (
            "x5u",
            json!({ "kid": "attacker", "x5u": format!("{}/cert", evil.url()) }),
        ),
        ("jwk", json!({ "kid": "attacker", "jwk": attacker.jwk() })),
        ("crit", json!({ "crit": ["exp"], "exp": 1 })),
    ] {
        r.refused(
            case,
            if case == "crit" {
                "crit_header"
            } else {
                "key_in_header"
            },
            crafted(&attacker, header, |_| {}),
        )
        .await;
    }
    assert_eq!(evil.count(), 0, "portcullis fetched a URL a token named");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_fetched_once_and_then_used() {
    let r = rig().await;
    let at_start = r.rogue.jwks_fetches();
    assert!(at_start >= 1, "discovery fetched the JWKS");

    // The OP rotates: it publishes a new key and signs with it. One refetch, then login works.
    let rotated = Key::generate("rogue-2");
    r.rogue.publish(vec![r.rogue.key.clone(), rotated.clone()]);
    r.rogue.issue(crafted(&rotated, json!({}), |_| {}));
    let (resp, mut b) = r.login().await;
    assert_eq!(
        resp.status, 200,
        "a token under the rotated key: {}",
        resp.body
    );
    assert_eq!(b.api("/api/x").await.status, 200);
    assert_eq!(r.rogue.jwks_fetches(), at_start + 1, "exactly one refetch");
}

/// C19: tokens under keys the OP never published are refused after exactly one refetch,
/// however many arrive within the refetch interval (anyone can post logout tokens).
#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_refused_after_one_refetch_per_interval() {
    let r = rig().await;
    let at_start = r.rogue.jwks_fetches();
    let began = std::time::Instant::now();
    for i in 0..5 {
        let stranger = Key::generate(&format!("unknown-{i}"));
        r.refused(
            "unknown kid",
            "id_token_kid",
            crafted(&stranger, json!({}), |_| {}),
        )
        .await;
    }
    // One refetch per 10 s interval; a machine slow enough to spread the logins over more
    // than one interval may see one more per interval begun.
    let intervals = 1 + began.elapsed().as_secs() as usize / 10;
    let refetches = r.rogue.jwks_fetches() - at_start;
    assert!(
        (1..=intervals).contains(&refetches),
        "{refetches} JWKS refetches for 5 unknown kids over {intervals} interval(s)"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url")
}

/// Discovery answers that cannot work stop the start with exit code 2 and a message naming
/// the setting and the file, instead of a process that is never ready.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_the_configuration_cannot_use_stops_the_start() {
    let rogue = RogueOp::start();
    let upstream = Upstream::start();
    for (case, edit) in [
        (
            "another issuer",
            Box::new(|d: &mut Value| d["issuer"] = json!("https://evil.test")) as ClaimsEdit,
        ),
        (
            "no PKCE S256",
            Box::new(|d: &mut Value| d["code_challenge_methods_supported"] = json!(["plain"])),
        ),
    ] {
        rogue.edit_discovery(edit);
        let mut proxy = Portcullis::reserve();
        let config = proxy.config(&rogue.issuer, &upstream, &Store::Memory, "");
        let (code, stderr) = proxy.start_expecting_exit(&config).await;
        assert_eq!(code, Some(2), "{case}: {stderr}");
        let named = format!("{}: oidc.issuer: ", proxy.config_path().display());
        assert!(stderr.contains(&named), "{case}: {stderr}");
    }
}

/// P53: with a 20 KB access token the forwarded header block grows by 20 KB; portcullis sends it
/// while it fits `security.max_header_bytes` and answers 431 itself once it would not.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_access_token_is_forwarded_only_while_the_headers_fit() {
    let spa = tempfile::tempdir().expect("spa dir");
    std::fs::write(spa.path().join("index.html"), "<!doctype html>").expect("index");
    let r = rig_edited(|config| {
        config.replacen(
            "routes:\n",
            &format!(
                "routes:\n  - {{ path: \"/app/\", kind: static, root: {:?}, policy: user }}\n",
                spa.path().display().to_string()
            ),
            1,
        )
    })
    .await;
    r.rogue.access_tokens_of(20_000);
    let (resp, mut b) = r.login().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(b.api("/api/x").await.status, 200);
    assert_eq!(
        r.upstream.last().header("authorization").map(str::len),
        Some("Bearer ".len() + 20_000),
        "the whole token is forwarded"
    );
    let forwarded = r.upstream.count();
    let padding = "y".repeat(14_000);
    let resp = b
        .get("/api/x", &[("x-csrf", "1"), ("x-padding", &padding)])
        .await;
    assert_eq!(resp.status, 431, "{}", resp.body);
    assert_eq!(r.upstream.count(), forwarded, "nothing was forwarded");
    assert!(r.proxy.logs().contains("upstream_headers_too_large"));
    assert!(
        !resp.body.contains("rogue-at-"),
        "the answer does not carry the token"
    );
    // A static route answers itself: the token is never sent anywhere, so its size is no limit.
    let file = b.get("/app/", &[("x-padding", &padding)]).await;
    assert_eq!(file.status, 200, "{}", file.body);
    assert_eq!(file.body, "<!doctype html>");
}

type ParamsEdit = Box<dyn Fn(&mut Vec<(String, String)>) + Send>;

fn set(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    params.retain(|(k, _)| k != name);
    params.push((name.to_string(), value.to_string()));
}

/// C05, C07, C09: authorization responses a conformant OP would not send are refused with
/// 400 before the token endpoint is called, and an error response echoes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_authorization_responses_never_reach_the_token_endpoint() {
    let r = rig().await;
    let cases: Vec<(&str, &str, ParamsEdit)> = vec![
        (
            "no code",
            "code_missing",
            Box::new(|p| p.retain(|(k, _)| k != "code")),
        ),
        (
            "empty code",
            "code_missing",
            Box::new(|p| set(p, "code", "")),
        ),
        (
            "two codes",
            "duplicate_parameter",
            Box::new(|p| p.push(("code".into(), "another".into()))),
        ),
        (
            "no iss",
            "iss_missing",
            Box::new(|p| p.retain(|(k, _)| k != "iss")),
        ),
        (
            "foreign iss",
            "iss_mismatch",
            Box::new(|p| set(p, "iss", "https://evil.test")),
        ),
        (
            "another state",
            "unknown_or_expired_transaction",
            Box::new(|p| set(p, "state", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw")),
        ),
        (
            "an error",
            "authorization_error",
            Box::new(|p| {
                p.retain(|(k, _)| k == "state");
                set(p, "error", "access_denied");
                set(p, "error_description", "<script>alert(1)</script>");
                set(p, "error_uri", "https://evil.test/");
            }),
        ),
    ];
    for (case, reason, edit) in cases {
        r.rogue.edit_callback(edit);
        let token_requests = r.rogue.token_requests();
        let logged = r.proxy.logs().len();
        let (resp, b) = r.login().await;
        assert_eq!(resp.status, 400, "{case}: {}", resp.body);
        assert!(b.session_cookie().is_none(), "{case}");
        assert_eq!(
            r.rogue.token_requests(),
            token_requests,
            "{case}: token endpoint called"
        );
        assert!(resp.header("location").is_none(), "{case}: redirected");
        assert!(
            !resp.body.contains('<') && !resp.body.contains("evil"),
            "{case}: {}",
            resp.body
        );
        let logs = &r.proxy.logs()[logged..];
        assert!(
            logs.contains(&format!("reason=\"{reason}\"")),
            "{case}: {logs}"
        );
    }
    assert_eq!(r.upstream.count(), 0);
}

/// `access.*`: a user the OP logs in but the policy does not admit (e-mail domain, unverified
/// address, group) gets a 403 and no session; the others log in.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_policy_admits_by_email_domain_and_group() {
    let r = rig_with(
        "access:\n  email_domains: [\"Example.com\"]\n  groups: [\"admins\"]\n  groups_claim: \"roles\"\n",
    )
    .await;
    let cases: Vec<(&str, u16, &str, ClaimsEdit)> = vec![
        (
            "admitted",
            200,
            "-",
            Box::new(|c| {
                c["email"] = json!("ada@example.com");
                c["roles"] = json!(["users", "admins"]);
            }),
        ),
        (
            "case of the domain",
            200,
            "-",
            Box::new(|c| {
                c["email"] = json!("ada@EXAMPLE.COM");
                c["email_verified"] = json!(true);
                c["roles"] = json!("admins");
            }),
        ),
        (
            "lookalike domain",
            403,
            "access_denied_email",
            Box::new(|c| {
                c["email"] = json!("ada@example.com.evil.test");
                c["roles"] = json!(["admins"]);
            }),
        ),
        (
            "unverified address",
            403,
            "access_denied_email",
            Box::new(|c| {
                c["email"] = json!("ada@example.com");
                c["email_verified"] = json!(false);
                c["roles"] = json!(["admins"]);
            }),
        ),
        (
            "no e-mail",
            403,
            "access_denied_email",
            Box::new(|c| {
                c["roles"] = json!(["admins"]);
            }),
        ),
        (
            "not in the group",
            403,
            "access_denied_group",
            Box::new(|c| {
                c["email"] = json!("ada@example.com");
                c["roles"] = json!(["users"]);
            }),
        ),
        (
            "groups under another claim",
            403,
            "access_denied_group",
            Box::new(|c| {
                c["email"] = json!("ada@example.com");
                c["groups"] = json!(["admins"]);
            }),
        ),
    ];
    for (case, status, reason, edit) in cases {
        r.rogue.issue(crafted(&r.rogue.key, json!({}), edit));
        let forwarded = r.upstream.count();
        let logged = r.proxy.logs().len();
        let (resp, mut b) = r.login().await;
        assert_eq!(resp.status, status, "{case}: {}", resp.body);
        if status == 200 {
            assert_eq!(b.api("/api/x").await.status, 200, "{case}");
            continue;
        }
        assert!(resp.body.contains("Access denied"), "{case}: {}", resp.body);
        assert!(b.session_cookie().is_none(), "{case}: a session was set");
        assert_eq!(b.api("/api/x").await.status, 401, "{case}");
        assert_eq!(r.upstream.count(), forwarded, "{case}");
        let logs = &r.proxy.logs()[logged..];
        assert!(
            logs.contains(&format!("outcome=\"failure\" reason=\"{reason}\"")),
            "{case}: {logs}"
        );
    }
}

/// A user removed from the admitted group loses the session at the next refresh, whose new ID
/// token carries the current claims.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_policy_is_checked_again_on_refresh() {
    let r = rig_with("access:\n  groups: [\"admins\"]\n").await;
    r.rogue.access_tokens_live(2);
    r.rogue.issue(crafted(&r.rogue.key, json!({}), |c| {
        c["groups"] = json!(["admins"])
    }));
    let (resp, mut b) = r.login().await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let after_login = r.rogue.token_requests();
    poll_api_until(&mut b, "a refresh while still admitted", |status| {
        status == 200 && r.rogue.token_requests() > after_login
    })
    .await;

    r.rogue.issue(crafted(&r.rogue.key, json!({}), |c| {
        c["groups"] = json!(["users"])
    }));
    let logged = r.proxy.logs().len();
    poll_api_until(&mut b, "the session to end at the next refresh", |status| {
        status == 401
    })
    .await;
    let logs = &r.proxy.logs()[logged..];
    assert!(
        logs.contains("event=\"token_refresh\" outcome=\"failure\" reason=\"access_denied_group\""),
        "{logs}"
    );
}

/// Calls `/api/x` every 100 ms until `done` accepts the status, for at most 10 s.
async fn poll_api_until(b: &mut Browser, what: &str, done: impl Fn(u16) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if done(b.api("/api/x").await.status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// C11: a callback that arrives after `session.login_timeout` is refused as expired (not as
/// unknown), before the token endpoint is called.
#[tokio::test(flavor = "multi_thread")]
async fn a_callback_after_the_login_timeout_is_told_it_expired() {
    let r =
        rig_edited(|config| config.replace("session:\n", "session:\n  login_timeout: 1s\n")).await;
    let mut b = Browser::new(&r.proxy.origin());
    let auth = b.start_login("/").await;
    let started = support::rogue_op::unix_now();
    let callback = b.authorize_at_op(auth, "rogue-user").await;
    // Valid for 1 s from the second it started (at most `started`): wait for the clock to
    // pass that, polling it with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while support::rogue_op::unix_now() < started + 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token_requests = r.rogue.token_requests();
    let logged = r.proxy.logs().len();
    let resp = b.get(&callback, &[]).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(b.session_cookie().is_none());
    assert_eq!(r.rogue.token_requests(), token_requests);
    let logs = &r.proxy.logs()[logged..];
    assert!(logs.contains("reason=\"transaction_expired\""), "{logs}");
}
