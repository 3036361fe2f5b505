//! The project's OpenID Provider fixture (`tests/fixtures/op/op.mjs`, oidc-provider) on
//! 127.0.0.2 with an ephemeral port, so OP → app is cross-site as in production.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::repo_root;

/// The fixture's client secret has reserved characters on purpose: it proves portcullis
/// form-url-encodes it inside Basic authentication (RFC 6749 §2.3.1).
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "s3c:r+t/=%";

pub struct OpOptions {
    pub app_origins: Vec<String>,
    pub access_token_ttl: u64,
    pub refresh_delay_ms: u64,
    /// How long the revocation endpoint waits before it revokes.
    pub revocation_delay_ms: u64,
    /// Register `<first origin>/bff/backchannel-logout` as the client's back-channel URI.
    pub backchannel: bool,
    /// More of the fixture's env vars (`PAR`, `DPOP_NONCE`, …); they override the above.
    pub env: Vec<(&'static str, String)>,
}

impl Default for OpOptions {
    fn default() -> Self {
        OpOptions {
            app_origins: Vec::new(),
            access_token_ttl: 300,
            refresh_delay_ms: 0,
            revocation_delay_ms: 0,
            backchannel: false,
            env: Vec::new(),
        }
    }
}

/// The tokens in a refresh response the OP is holding back.
pub struct HeldTokens {
    pub access_token: String,
    pub refresh_token: String,
}

pub struct Op {
    pub issuer: String,
    child: Child,
    // Held open: the fixture exits when its stdin closes, so a crashed test leaves no OP behind.
    _stdin: ChildStdin,
}

impl Op {
    pub fn start(opts: OpOptions) -> Op {
        let dir = repo_root().join("tests/fixtures/op");
        assert!(
            dir.join("node_modules").exists(),
            "tests/fixtures/op/node_modules is missing: run `make test` (it runs npm ci)"
        );
        let redirects: Vec<String> = opts
            .app_origins
            .iter()
            .map(|o| format!("{o}/bff/callback"))
            .collect();
        let post_logout: Vec<String> = opts
            .app_origins
            .iter()
            .flat_map(|o| [format!("{o}/"), format!("{o}/bff/logout/callback")])
            .collect();
        let backchannel = match (opts.backchannel, opts.app_origins.first()) {
            (true, Some(o)) => format!("{o}/bff/backchannel-logout"),
            _ => String::new(),
        };
        let mut child = Command::new("node")
            .arg("op.mjs")
            .env("BACKCHANNEL_LOGOUT_URI", backchannel)
            .current_dir(&dir)
            .env("OP_PORT", "0")
            .env("REDIRECT_URIS", redirects.join(","))
            .env("POST_LOGOUT_REDIRECT_URIS", post_logout.join(","))
            .env("AT_TTL", opts.access_token_ttl.to_string())
            .env("REFRESH_DELAY_MS", opts.refresh_delay_ms.to_string())
            .env("REVOCATION_DELAY_MS", opts.revocation_delay_ms.to_string())
            .env("CLOCK_TOLERANCE", "0")
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the OP fixture");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("OP_READY ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(i) => i,
            Err(_) => {
                let _ = child.kill();
                panic!("the OP fixture did not print OP_READY within 30 s");
            }
        };
        Op {
            issuer,
            child,
            _stdin: stdin,
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().build().expect("reqwest client")
    }

    /// RFC 7662 introspection with the client's own credentials.
    pub async fn introspect_active(&self, token: &str) -> bool {
        let body: serde_json::Value = Self::client()
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(form_encode(CLIENT_ID), Some(form_encode(CLIENT_SECRET)))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection answers")
            .json()
            .await
            .expect("introspection is JSON");
        body["active"] == serde_json::Value::Bool(true)
    }

    /// Polls introspection until `token` is no longer active (expired or revoked); `what`
    /// names the wait in the failure message.
    pub async fn wait_until_inactive(&self, token: &str, what: &str) {
        super::eventually(what, Duration::from_secs(20), || async move {
            (!self.introspect_active(token).await).then_some(())
        })
        .await;
    }

    /// `GET` on one of the fixture's test endpoints, as JSON.
    async fn test_endpoint(&self, path_and_query: &str) -> serde_json::Value {
        Self::client()
            .get(format!("{}{path_and_query}", self.issuer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the OP answers {path_and_query}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path_and_query} answers JSON: {e}"))
    }

    /// Successful token responses so far, by grant type.
    pub async fn grant_counts(&self) -> (u64, u64) {
        let body = self.test_endpoint("/test/stats").await;
        (
            body["authorization_code"].as_u64().unwrap_or(0),
            body["refresh_token"].as_u64().unwrap_or(0),
        )
    }

    /// A JWT signed with the OP's own key: `header` members override the defaults
    /// (`alg: RS256`, the OP's `kid`, `typ: logout+jwt`).
    pub async fn sign(&self, claims: serde_json::Value, header: serde_json::Value) -> String {
        let body: serde_json::Value = Self::client()
            .post(format!("{}/test/sign", self.issuer))
            .json(&serde_json::json!({ "claims": claims, "header": header }))
            .send()
            .await
            .expect("sign answers")
            .json()
            .await
            .expect("sign is JSON");
        body["jwt"].as_str().expect("a jwt").to_string()
    }

    /// Every authorization code, PKCE verifier and token that crossed the OP's token endpoint.
    pub async fn issued_secrets(&self) -> Vec<String> {
        let body = self.test_endpoint("/test/secrets").await;
        body["secrets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The OP session id of the latest session `sub` logged in to.
    pub async fn latest_sid(&self, sub: &str) -> String {
        let body = self.test_endpoint(&format!("/test/sids?sub={sub}")).await;
        body["sids"]
            .as_array()
            .and_then(|sids| sids.last())
            .and_then(|sid| sid.as_str())
            .expect("the OP issued a sid")
            .to_string()
    }

    async fn test_post(&self, path: &str) {
        let status = Self::client()
            .post(format!("{}{path}", self.issuer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the OP answers {path}: {e}"))
            .status();
        assert!(status.is_success(), "{path} answered {status}");
    }

    /// From now on the OP holds every refresh-token grant response (the rotation has already
    /// happened) until `release_refreshes`.
    pub async fn hold_refreshes(&self) {
        self.test_post("/test/hold-refresh").await;
    }

    /// Waits until a refresh response is being held; the tokens it carries.
    pub async fn held_refresh(&self) -> HeldTokens {
        super::eventually(
            "a refresh to be held at the OP",
            Duration::from_secs(20),
            || async move {
                let body = self.test_endpoint("/test/held-refreshes").await;
                let held = body["held"].as_array()?.first()?.clone();
                Some(HeldTokens {
                    access_token: held["access_token"].as_str()?.to_string(),
                    refresh_token: held["refresh_token"].as_str()?.to_string(),
                })
            },
        )
        .await
    }

    /// Sends the held refresh responses and stops holding.
    pub async fn release_refreshes(&self) {
        self.test_post("/test/release-refresh").await;
    }

    /// The tokens the revocation endpoint accepted so far, with their `token_type_hint`.
    pub async fn revocations(&self) -> Vec<(String, String)> {
        let body = self.test_endpoint("/test/revocations").await;
        body["revocations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let field = |name: &str| r[name].as_str().unwrap_or("").to_string();
                        (field("token"), field("token_type_hint"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the revocation endpoint has accepted `token` as a `hint`.
    pub async fn wait_for_revocation(&self, token: &str, hint: &str) {
        super::eventually(
            "the OP to see the token revoked",
            Duration::from_secs(20),
            || async move {
                let wanted = (token.to_string(), hint.to_string());
                self.revocations().await.contains(&wanted).then_some(())
            },
        )
        .await;
    }

    pub async fn revoke_grants(&self, sub: &str) {
        self.test_post(&format!("/test/revoke-grants?sub={sub}"))
            .await;
    }

    /// Account `sub`'s extra claims (groups, department, ...) in ID tokens issued from now on.
    pub async fn set_claims(&self, sub: &str, claims: serde_json::Value) {
        let status = Self::client()
            .post(format!("{}/test/claims?sub={sub}", self.issuer))
            .json(&serde_json::json!({ "claims": claims }))
            .send()
            .await
            .expect("the OP answers /test/claims")
            .status();
        assert!(status.is_success(), "/test/claims answered {status}");
    }
}

pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Op {
    /// Stops the OP: its endpoints refuse connections from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}
