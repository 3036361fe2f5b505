//! Ingress auth mode (issue #12) against the real thing: Debian's nginx configured the way
//! ingress-nginx configures itself for `auth-url` + `auth-signin` + `auth-response-headers`
//! (tests/support/ingress_nginx.rs, deploy/demo/ingress-nginx/), portcullis as its auth
//! service, the OP fixture, Redis where the session store is shared, headless Chromium for the
//! browser's view (tests/e2e/ingress.mjs), and hostile inputs sent as raw HTTP.
//!
//! Every test starts its own world (OP, upstreams, portcullis, nginx; Redis where it matters)
//! and tears it down when it ends. Hosts are `app.example.localhost` and
//! `other.example.localhost` on one nginx port; `*.wild.example.localhost` (shared worlds only) is on the allow-list
//! without a server block (for `rd` checks only).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::chromium::run_scenario;
use support::ingress_nginx::{
    IngressNginx, Upstreams, APP_HOST, HOST_CHECK_HTTP_SNIPPET, HOST_CHECK_SERVER_SNIPPET,
    OTHER_HOST, PARENT_DOMAIN,
};
use support::op::{Op, OpOptions, CLIENT_ID, CLIENT_SECRET};
use support::portcullis::Portcullis;
use support::redis::RedisServer;
use support::upstream::Upstream;
use support::{free_port, repo_root};

// ------------------------------------------------------------------ world ----

#[derive(Default)]
struct Options {
    /// `session.cookie_domain: example.localhost` (one session for both hosts).
    shared: bool,
    /// Redis session store (else memory).
    redis: bool,
    /// Serve "/" and "/api/" from the demo SPA instead of the recording upstream.
    demo: bool,
    /// nginx with the Host check snippets (HOST_CHECK_*_SNIPPET).
    host_check: bool,
    /// The OP's access-token lifetime in seconds (0: the fixture's default, 300).
    access_token_ttl: u64,
}

struct IngressWorld {
    op: Op,
    redis: Option<RedisServer>,
    /// The recording upstream behind app's "/" and "/api/" (unless `demo`).
    upstream: Upstream,
    /// The recording upstream behind other's (unless `demo`): another application.
    other_upstream: Upstream,
    demo: Option<support::node::NodeServer>,
    proxy: Portcullis,
    auth_port: u16,
    nginx: IngressNginx,
    opts: Options,
    secret_dir: tempfile::TempDir,
}

impl IngressWorld {
    async fn start(opts: Options) -> IngressWorld {
        let redis = opts.redis.then(RedisServer::start);
        let upstream = Upstream::start();
        let other_upstream = Upstream::start();
        let demo = opts.demo.then(support::node::demo_upstream);
        let nginx = IngressNginx::reserve();
        let proxy = Portcullis::reserve();
        let auth_port = free_port();
        let op = Op::start(OpOptions {
            app_origins: vec![nginx.origin(APP_HOST), nginx.origin(OTHER_HOST)],
            access_token_ttl: if opts.access_token_ttl == 0 {
                300
            } else {
                opts.access_token_ttl
            },
            ..Default::default()
        });
        let mut w = IngressWorld {
            op,
            redis,
            upstream,
            other_upstream,
            demo,
            proxy,
            auth_port,
            nginx,
            opts,
            secret_dir: tempfile::tempdir().expect("temp dir"),
        };
        let config = w.config(w.proxy.port, w.proxy.admin_port, auth_port, "127.0.0.1/32");
        w.proxy.start(&config).await;
        let bff = format!("127.0.0.1:{}", w.proxy.port);
        let serve = |to: String| Upstreams {
            bff: bff.clone(),
            page: to.clone(),
            api: to,
        };
        let (app, other) = match &w.demo {
            Some(d) => (
                serve(format!("127.0.0.1:{}", d.port)),
                serve(format!("127.0.0.1:{}", d.port)),
            ),
            None => (
                serve(format!("127.0.0.1:{}", w.upstream.port)),
                serve(format!("127.0.0.1:{}", w.other_upstream.port)),
            ),
        };
        if w.opts.host_check {
            w.nginx.http_snippet = HOST_CHECK_HTTP_SNIPPET.to_string();
            w.nginx.server_snippet = HOST_CHECK_SERVER_SNIPPET.to_string();
        }
        w.nginx.start(
            &format!("127.0.0.1:{auth_port}"),
            &[(APP_HOST, &app), (OTHER_HOST, &other)],
        );
        w
    }

    fn store(&self) -> String {
        match &self.redis {
            Some(r) => format!("  store: redis\n  redis_url: \"{}\"\n", r.url()),
            None => "  store: memory\n".to_string(),
        }
    }

    /// A portcullis configuration for this world: ingress auth on `auth_port`, trusting
    /// `trusted` only.
    fn config(&self, port: u16, admin_port: u16, auth_port: u16, trusted: &str) -> String {
        let secret = self.secret_dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).expect("write secret");
        let cookie_domain = if self.opts.shared {
            format!("  cookie_domain: \"{PARENT_DOMAIN}\"\n")
        } else {
            String::new()
        };
        format!(
            "listen: \"127.0.0.1:{port}\"\n\
             admin_listen: \"127.0.0.1:{admin_port}\"\n\
             public_url: \"{public}\"\n\
             oidc:\n  issuer: \"{issuer}\"\n  client_id: \"{CLIENT_ID}\"\n  client_secret_file: \"{secret}\"\n\
             session:\n{store}{cookie_domain}\
             routes: []\n\
             ingress_auth:\n\
             \x20 enabled: true\n\
             \x20 listen: \"127.0.0.1:{auth_port}\"\n\
             \x20 controller: nginx\n\
             \x20 trusted_ingress: [\"{trusted}\"]\n\
             \x20 hosts:\n\
             \x20   - host: \"{APP_HOST}\"\n\
             \x20     paths:\n\
             \x20       - {{ path: \"/api/\", kind: api }}\n\
             \x20       - {{ path: \"/public/\", kind: public }}\n\
             \x20       - {{ path: \"/\", kind: page }}\n\
             \x20   - host: \"{OTHER_HOST}\"\n\
             \x20     paths:\n\
             \x20       - {{ path: \"/api/\", kind: api }}\n\
             \x20       - {{ path: \"/\", kind: page }}\n\
             \x20   - host: \"admin.{PARENT_DOMAIN}\"\n\
             \x20     access:\n\
             \x20       groups: [\"admins\"]\n\
             \x20     paths:\n\
             \x20       - {{ path: \"/\", kind: page }}\n\
             {wild}\
             log:\n  level: \"info\"\n",
            public = self.origin(APP_HOST),
            issuer = self.op.issuer,
            secret = secret.display(),
            store = self.store(),
            wild = self.wildcard_host(),
        )
    }

    /// A wildcard host needs a shared cookie (its logins end on `public_url`'s host), so it is
    /// configured only in the shared worlds.
    fn wildcard_host(&self) -> String {
        if self.opts.shared {
            format!(
                "\x20   - host: \"*.wild.{PARENT_DOMAIN}\"\n\x20     paths:\n\x20       - {{ path: \"/\", kind: page }}\n"
            )
        } else {
            String::new()
        }
    }

    fn origin(&self, host: &str) -> String {
        self.nginx.origin(host)
    }

    fn cookie_name(&self) -> &'static str {
        if self.opts.shared {
            "__Secure-portcullis"
        } else {
            "__Host-portcullis"
        }
    }

    /// A client that reaches both hosts on nginx's loopback port and follows no redirect.
    fn client(&self) -> reqwest::Client {
        let at: SocketAddr = ([127, 0, 0, 1], self.nginx.port).into();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(APP_HOST, at)
            .resolve(OTHER_HOST, at)
            .resolve(&format!("admin.{PARENT_DOMAIN}"), at)
            .build()
            .expect("client")
    }

    /// Logs `user` in through nginx on `host` (as a browser would, minus JavaScript); returns
    /// the cookies portcullis set (the session cookie among them).
    async fn login(&self, host: &str, user: &str) -> Jar {
        let client = self.client();
        let origin = self.origin(host);
        let mut jar = Jar::default();
        let start = client
            .get(format!(
                "{origin}/bff/login?rd={}",
                enc(&format!("{origin}/"))
            ))
            .send()
            .await
            .expect("login answers");
        assert_eq!(start.status(), 302, "login redirects to the OP");
        jar.absorb(start.headers());
        let auth_url = url::Url::parse(location(start.headers()).as_str()).expect("OP URL");
        let callback = support::browser::Browser::new(&origin)
            .authorize_at_op(auth_url, user)
            .await;
        let landing = client
            .get(&callback)
            .header("cookie", jar.header())
            .send()
            .await
            .expect("callback answers");
        assert!(
            landing.status() == 200 || landing.status().is_redirection(),
            "the callback lands: {}",
            landing.status()
        );
        jar.absorb(landing.headers());
        assert!(
            jar.get(self.cookie_name()).is_some(),
            "the callback set {}: {:?}",
            self.cookie_name(),
            jar.0
        );
        jar
    }

    /// Requests both applications received.
    fn forwarded(&self) -> usize {
        self.upstream.count() + self.other_upstream.count()
    }

    async fn metrics(&self) -> String {
        self.proxy.admin_get("/metrics").await.1
    }
}

/// The cookies portcullis set, by name.
#[derive(Default, Clone)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for line in headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let first = line.split(';').next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else {
                continue;
            };
            let expired = line
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if expired || value.is_empty() {
                self.0.remove(name.trim());
            } else {
                self.0
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn enc(s: &str) -> String {
    support::op::form_encode(s)
}

fn location(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Writes `request` on a fresh connection to 127.0.0.1:`port` and returns the status and the
/// whole answer (read until the server closes or 5 s pass).
fn raw(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    (support::status_of(&text), text)
}

/// The head of a raw HTTP answer, lower-cased header lines only.
fn header_lines(answer: &str) -> Vec<String> {
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// An auth subrequest as ingress-nginx sends it, straight to an auth port.
fn auth_request(original_url: &str, extra: &str) -> String {
    format!(
        "GET /bff/auth HTTP/1.1\r\nHost: portcullis-auth.portcullis.svc.cluster.local\r\n\
         X-Original-URL: {original_url}\r\nX-Original-Method: GET\r\n\
         X-Sent-From: nginx-ingress-controller\r\nX-Real-IP: 127.0.0.1\r\n\
         X-Forwarded-For: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    )
}

/// The sum of the `portcullis_auth_requests_total` series with `decision="<decision>"`.
fn auth_decisions(metrics: &str, decision: &str) -> u64 {
    let label = format!("decision=\"{decision}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_auth_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

// --------------------------------------------------------------- browser ----

/// Runs tests/e2e/ingress.mjs against `w`; returns its stdout and the text it recorded
/// (response bodies and storage dumps).
async fn run_browser(w: &IngressWorld, name: &str) -> (String, String) {
    let out_dir = repo_root().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let shared = if w.opts.shared { "1" } else { "0" };
    let run = run_scenario(
        "ingress.mjs",
        vec![
            ("APP_URL", w.origin(APP_HOST)),
            ("OTHER_URL", w.origin(OTHER_HOST)),
            ("SHARED", shared.to_string()),
            ("SESSION_COOKIE", w.cookie_name().to_string()),
            ("OUT_DIR", out_dir.display().to_string()),
            ("LOGIN", "alice".to_string()),
        ],
    )
    .await;
    assert!(
        run.passed,
        "browser scenario failed:\n{}\n{}\nnginx error log:\n{}\nportcullis log:\n{}",
        run.stdout,
        run.stderr,
        w.nginx.error_log(),
        w.proxy.logs()
    );
    let stdout = run.stdout;
    let seen = std::fs::read_to_string(out_dir.join("responses.txt")).expect("responses")
        + &std::fs::read_to_string(out_dir.join("storage.json")).expect("storage");
    (stdout, seen)
}

/// What every browser run must leave true: no secret the OP issued reached the page or a log
/// line, nginx never saw an auth answer other than 2xx/401/403, and the auth endpoint allowed.
async fn assert_nothing_leaked(w: &IngressWorld, seen: &str) {
    let secrets = w.op.issued_secrets().await;
    assert!(
        secrets.len() >= 3,
        "the OP issued tokens: {}",
        secrets.len()
    );
    let logs = w.proxy.logs();
    for (i, s) in secrets.iter().enumerate().filter(|(_, s)| s.len() >= 8) {
        assert!(!seen.contains(s.as_str()), "secret #{i} reached the page");
        assert!(
            !logs.contains(s.as_str()),
            "secret #{i} is in portcullis's log"
        );
    }
    let errors = w.nginx.error_log();
    assert!(
        !errors.contains("auth request unexpected status"),
        "the auth endpoint answered nginx something other than 2xx/401/403:\n{errors}"
    );
    let metrics = w.metrics().await;
    assert!(
        auth_decisions(&metrics, "allow") >= 3,
        "auth decisions counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("portcullis_auth_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Chromium logs in through nginx on app, its API calls carry the bearer and identity, the
/// session spans other.example.localhost (cookie_domain), logout ends it on both hosts.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_through_nginx_with_a_session_shared_across_hosts() {
    let w = IngressWorld::start(Options {
        shared: true,
        redis: true,
        demo: true,
        ..Options::default()
    })
    .await;
    let (stdout, seen) = run_browser(&w, "ingress-shared").await;
    assert!(
        stdout.contains("ok - other host: its page loads signed in, without a new login"),
        "{stdout}"
    );
    assert_nothing_leaked(&w, &seen).await;
    let (codes, _) = w.op.grant_counts().await;
    assert_eq!(codes, 1, "one login served both hosts");
}

/// Without cookie_domain every host keeps its own `__Host-` session: the other host's page
/// goes to its own login.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_through_nginx_with_host_only_sessions() {
    let w = IngressWorld::start(Options {
        demo: true,
        ..Options::default()
    })
    .await;
    let (stdout, seen) = run_browser(&w, "ingress-host-only").await;
    assert!(
        stdout.contains("ok - other host: its page redirects to its own /bff/login"),
        "{stdout}"
    );
    assert_nothing_leaked(&w, &seen).await;
    let (codes, _) = w.op.grant_counts().await;
    assert_eq!(codes, 2, "each host logged in on its own");
}

// ---------------------------------------------------------- upstream view ----

/// What the application receives through nginx: the bearer portcullis holds (active at the
/// OP), the identity headers, the app's own cookies, and nothing the client forged or
/// portcullis's cookie.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_gets_the_bearer_and_identity_never_the_session_cookie() {
    let w = IngressWorld::start(Options {
        redis: true,
        ..Options::default()
    })
    .await;
    let jar = w.login(APP_HOST, "alice").await;
    let session = jar.get(w.cookie_name()).expect("session").to_string();
    let client = w.client();
    let app = w.origin(APP_HOST);

    let resp = client
        .get(format!("{app}/api/orders?x=1"))
        .header("cookie", format!("{}; theme=dark", jar.header()))
        .header("x-csrf", "1")
        .header("authorization", "Bearer forged-by-the-client")
        .header("x-auth-request-user", "mallory")
        .header("x-auth-request-groups", "admins")
        .send()
        .await
        .expect("api answers");
    assert_eq!(resp.status(), 200, "an authenticated API call is proxied");
    let got = w.upstream.last();
    assert_eq!(got.path, "/api/orders?x=1");
    let bearer = support::last_bearer(&w.upstream);
    assert_ne!(bearer, "forged-by-the-client");
    assert!(
        w.op.introspect_active(&bearer).await,
        "the upstream got the session's live access token"
    );
    assert_eq!(got.all("x-auth-request-user"), vec!["alice"]);
    assert_eq!(got.all("x-auth-request-email"), vec!["alice@example.test"]);
    assert!(
        got.all("x-auth-request-groups")
            .iter()
            .all(|g| *g != "admins"),
        "a client-sent X-Auth-Request-Groups reached the upstream: {:?}",
        got.all("x-auth-request-groups")
    );
    assert_eq!(
        got.all("cookie"),
        vec!["theme=dark"],
        "the app's cookie passes, portcullis's does not"
    );
    let raw_request = String::from_utf8_lossy(&got.raw).into_owned();
    assert!(
        !raw_request.contains(&session) && !raw_request.contains("portcullis-txn"),
        "portcullis's cookie reached the upstream:\n{raw_request}"
    );

    // A page navigation gets the bearer too.
    let page = client
        .get(format!("{app}/dashboard"))
        .header("cookie", jar.header())
        .send()
        .await
        .expect("page answers");
    assert_eq!(page.status(), 200);
    assert_eq!(w.upstream.last().path, "/dashboard");
    assert!(
        w.op.introspect_active(&support::last_bearer(&w.upstream))
            .await
    );
    assert!(w.upstream.last().all("cookie").is_empty(), "no cookie left");

    // A public path: served without identity or token, even for a signed-in browser.
    let public = client
        .get(format!("{app}/public/logo.svg"))
        .header("cookie", jar.header())
        .header("authorization", "Bearer forged-by-the-client")
        .header("x-auth-request-user", "mallory")
        .send()
        .await
        .expect("public answers");
    assert_eq!(public.status(), 200);
    let got = w.upstream.last();
    assert_eq!(got.path, "/public/logo.svg");
    assert!(got.all("authorization").is_empty(), "{:?}", got.headers);
    assert!(
        got.all("x-auth-request-user").is_empty(),
        "{:?}",
        got.headers
    );
    assert!(
        !String::from_utf8_lossy(&got.raw).contains(&session),
        "the session cookie reached a public upstream"
    );
}

// ------------------------------------------------------------ hostile ----

/// Spoofed X-Original-*/X-Forwarded-* from an address outside trusted_ingress: 403 and no
/// token even with a valid session; the same request from the trusted ingress address is
/// allowed (so the refusal is the trust check). And /bff/auth is not on the browser-facing
/// listener, directly or through nginx's /bff/ location.
#[tokio::test(flavor = "multi_thread")]
async fn auth_port_trusts_only_the_ingress_and_is_not_on_the_browser_listener() {
    let w = IngressWorld::start(Options {
        redis: true,
        ..Options::default()
    })
    .await;
    let jar = w.login(APP_HOST, "alice").await;
    let app = w.origin(APP_HOST);
    let cookie = format!("Cookie: {}\r\n", jar.header());
    let api = format!("{app}/api/orders");
    let spoof = format!(
        "{cookie}X-CSRF: 1\r\nOrigin: {app}\r\nSec-Fetch-Site: same-origin\r\n\
         X-Forwarded-For: 10.9.9.9\r\nForwarded: for=10.9.9.9;proto=http;host={APP_HOST}\r\n\
         X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: {APP_HOST}\r\n\
         X-Forwarded-Uri: /api/orders\r\n"
    );

    // Control: from the trusted address the same description is allowed, with the token.
    let (status, answer) = raw(w.auth_port, &auth_request(&api, &spoof));
    assert_eq!(status, 200, "the trusted ingress is allowed:\n{answer}");
    let heads = header_lines(&answer);
    assert!(
        heads
            .iter()
            .any(|l| l.starts_with("authorization: bearer ")),
        "{answer}"
    );
    assert!(
        heads.iter().any(|l| l == "cache-control: no-store"),
        "{answer}"
    );
    assert!(
        heads.iter().any(|l| l == "x-auth-request-user: alice"),
        "{answer}"
    );
    // Every identity header is answered, empty when the claim is absent (the fixture issues no
    // groups), so the ingress replaces a client's copy with nothing.
    assert!(
        heads
            .iter()
            .any(|l| l.trim_end() == "x-auth-request-groups:"),
        "{answer}"
    );
    // Cookie: the request's cookies minus portcullis's own (here: none left).
    let cookie_line: Vec<&String> = heads.iter().filter(|l| l.starts_with("cookie:")).collect();
    assert_eq!(cookie_line.len(), 1, "{answer}");
    assert_eq!(cookie_line[0].trim_end(), "cookie:", "{answer}");

    // A second portcullis on the same store, whose trusted_ingress excludes 127.0.0.1.
    let mut untrusting = Portcullis::reserve();
    let auth_port = free_port();
    let config = w.config(
        untrusting.port,
        untrusting.admin_port,
        auth_port,
        "10.9.9.9/32",
    );
    untrusting.start(&config).await;
    for request in [
        auth_request(&api, &spoof),
        // Traefik's description only, and Envoy's path form, from the same stranger.
        format!(
            "GET /bff/auth HTTP/1.1\r\nHost: {APP_HOST}\r\n{spoof}Connection: close\r\n\r\n"
        ),
        format!(
            "GET /bff/auth/api/orders HTTP/1.1\r\nHost: {APP_HOST}\r\n{spoof}Connection: close\r\n\r\n"
        ),
    ] {
        let (status, answer) = raw(auth_port, &request);
        assert_eq!(status, 403, "an untrusted caller is refused:\n{answer}");
        let heads = header_lines(&answer);
        assert!(
            !heads
                .iter()
                .any(|l| l.starts_with("authorization:") || l.starts_with("x-auth-request-")),
            "a refused caller got a token or identity:\n{answer}"
        );
        assert!(!answer.to_ascii_lowercase().contains("bearer"), "{answer}");
    }
    let metrics = untrusting.admin_get("/metrics").await.1;
    assert_eq!(auth_decisions(&metrics, "allow"), 0, "{metrics}");

    // /bff/auth on the browser-facing listener: 404 through nginx's /bff/ location and directly.
    let client = w.client();
    for path in ["/bff/auth", "/bff/auth/api/orders"] {
        let resp = client
            .get(format!("{app}{path}"))
            .header("cookie", jar.header())
            .header("x-original-url", &api)
            .header("x-original-method", "GET")
            .header("x-csrf", "1")
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(resp.status(), 404, "{path} through nginx");
        assert!(resp.headers().get("authorization").is_none());
        assert!(!resp.text().await.unwrap_or_default().contains("Bearer"));
        let (status, answer) = raw(
            w.proxy.port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {APP_HOST}:{}\r\n{cookie}X-Original-URL: {api}\r\n\
                 X-Original-Method: GET\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n",
                w.nginx.port
            ),
        );
        assert_eq!(status, 404, "{path} on listen:\n{answer}");
        assert!(!answer.to_ascii_lowercase().contains("bearer"), "{answer}");
    }
    assert_eq!(w.forwarded(), 0, "nothing reached the application upstream");
}

/// `rd` may only return to an allowed host on public_url's scheme and port, with a path that
/// passes the returnTo checks; every open-redirect spelling is 400 with no Location.
#[tokio::test(flavor = "multi_thread")]
async fn login_rd_refuses_hosts_off_the_list_and_open_redirect_spellings() {
    let w = IngressWorld::start(Options {
        shared: true,
        ..Options::default()
    })
    .await;
    let client = w.client();
    let app = w.origin(APP_HOST);
    let port = w.nginx.port;
    let elsewhere = free_port();
    let bad: Vec<String> = vec![
        "https://evil.test/".into(),
        "http://evil.test/".into(),
        "//evil.test".into(),
        "//evil.test/".into(),
        "///evil.test/".into(),
        "https:/\\evil.test".into(),
        "http:/\\evil.test/".into(),
        "/\\evil.test".into(),
        "\\\\evil.test".into(),
        "/%2F%2Fevil.test".into(),
        "/%2F/evil.test".into(),
        "/%5Cevil.test".into(),
        "javascript:alert(1)".into(),
        "data:text/html,<script>alert(1)</script>".into(),
        format!("http://{APP_HOST}.evil.test:{port}/"),
        format!("http://{APP_HOST}@evil.test:{port}/"),
        format!("http://user:pass@{APP_HOST}:{port}/"),
        format!("http://evil.test\\@{APP_HOST}:{port}/"),
        format!("http://{APP_HOST}%2eevil.test:{port}/"),
        format!("http://{APP_HOST}:{elsewhere}/"),
        format!("http://{APP_HOST}/"),
        format!("https://{APP_HOST}:{port}/"),
        format!("http://{APP_HOST}:{port}//evil.test"),
        format!("http://{APP_HOST}:{port}/a/../b"),
        format!("http://{APP_HOST}:{port}/%2e%2e/b"),
        format!("http://{APP_HOST}:{port}/a\\b"),
        format!("http://{APP_HOST}:{port}/a\r\nSet-Cookie: x=y"),
        format!("http://{PARENT_DOMAIN}:{port}/"),
        format!("http://wild.{PARENT_DOMAIN}:{port}/"),
        format!("http://evil.test/?{APP_HOST}:{port}/"),
        format!("http://evil.test#{APP_HOST}:{port}/"),
    ];
    for rd in &bad {
        let resp = client
            .get(format!("{app}/bff/login?rd={}", enc(rd)))
            .send()
            .await
            .expect("login answers");
        assert_eq!(resp.status(), 400, "rd={rd:?} must be refused");
        assert!(
            resp.headers().get("location").is_none(),
            "rd={rd:?} redirected somewhere"
        );
    }
    // Both spellings at once, and rd twice.
    for query in [
        format!("rd={}&returnTo=/", enc(&format!("{app}/"))),
        format!(
            "rd={}&rd={}",
            enc(&format!("{app}/")),
            enc("https://evil.test/")
        ),
    ] {
        let resp = client
            .get(format!("{app}/bff/login?{query}"))
            .send()
            .await
            .expect("login answers");
        assert_eq!(resp.status(), 400, "{query}");
        assert!(resp.headers().get("location").is_none());
    }

    // What is allowed starts a login at the OP, with the redirect_uri of the host it began on.
    let other = w.origin(OTHER_HOST);
    for (origin, rd) in [
        (app.clone(), format!("{app}/")),
        (app.clone(), format!("{app}/orders/7?tab=items")),
        (app.clone(), format!("{other}/")),
        (
            app.clone(),
            format!("http://a.wild.{PARENT_DOMAIN}:{port}/x"),
        ),
        (app.clone(), "/orders/7".to_string()),
        (other.clone(), format!("{other}/")),
    ] {
        let resp = client
            .get(format!("{origin}/bff/login?rd={}", enc(&rd)))
            .send()
            .await
            .expect("login answers");
        assert_eq!(resp.status(), 302, "rd={rd:?} from {origin} is allowed");
        let to = url::Url::parse(&location(resp.headers())).expect("absolute OP URL");
        assert!(
            to.as_str().starts_with(&w.op.issuer),
            "rd={rd:?} goes to the OP first, not {to}"
        );
        let redirect_uri: Vec<String> = to
            .query_pairs()
            .filter(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(redirect_uri, vec![format!("{origin}/bff/callback")]);
    }

    // The whole way back: a login that began on app with rd on other lands on other.
    let mut jar = Jar::default();
    let start = client
        .get(format!(
            "{app}/bff/login?rd={}",
            enc(&format!("{other}/orders"))
        ))
        .send()
        .await
        .expect("login");
    jar.absorb(start.headers());
    let callback = support::browser::Browser::new(&app)
        .authorize_at_op(
            url::Url::parse(&location(start.headers())).unwrap(),
            "alice",
        )
        .await;
    let landing = client
        .get(&callback)
        .header("cookie", jar.header())
        .send()
        .await
        .expect("callback");
    let landing_status = landing.status();
    let landing_location = location(landing.headers());
    let body = landing.text().await.unwrap_or_default();
    assert!(
        landing_location == format!("{other}/orders")
            || body.contains(&format!("url={other}/orders\"")),
        "the callback sends the browser on to rd ({landing_status}, location {landing_location:?}):\n{body}"
    );
}

/// Paths nginx normalises (decoding %2F and %2E, resolving dot segments, ignoring `;`) before
/// it picks a location, while the auth subrequest carries the raw URI: portcullis refuses the
/// ambiguous ones, so without a session nothing reaches the application.
#[tokio::test(flavor = "multi_thread")]
async fn paths_nginx_normalises_differently_never_reach_the_application() {
    let w = IngressWorld::start(Options {
        ..Options::default()
    })
    .await;
    let port = w.nginx.port;
    let ambiguous = [
        "/public/..%2Fapi/x",
        "/public/%2e%2e/api/x",
        "/api/%2e%2e/x",
        "/public;/../api/x",
        "/public/%2F..%2Fapi",
        "/public/..;/api/x",
        "/public/.%2e/api/x",
        "/public//../api/x",
        "/public/%2Fapi/x",
        "/public%2F..%2Fapi/x",
        "/PUBLIC/../api/x",
    ];
    for path in ambiguous {
        for host in [APP_HOST, OTHER_HOST] {
            let (status, answer) = raw(
                port,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-CSRF: 1\r\n\
                     Sec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n"
                ),
            );
            assert!(
                !(200..300).contains(&status),
                "{host}{path} was served without a session ({status}):\n{answer}"
            );
        }
        // What portcullis itself says about the raw URI nginx forwards.
        let url = format!("http://{APP_HOST}:{port}{path}");
        let (status, answer) = raw(
            w.auth_port,
            &auth_request(&url, "X-CSRF: 1\r\nSec-Fetch-Site: same-origin\r\n"),
        );
        assert_eq!(status, 403, "ambiguous path {path}:\n{answer}");
    }
    assert_eq!(
        w.forwarded(),
        0,
        "an ambiguous path reached an application: {:?}",
        [w.upstream.requests(), w.other_upstream.requests()]
            .concat()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        !w.nginx
            .error_log()
            .contains("auth request unexpected status"),
        "{}",
        w.nginx.error_log()
    );
    // Control: the plain public path is served through the same nginx.
    let (status, answer) = raw(
        port,
        &format!("GET /public/x HTTP/1.1\r\nHost: {APP_HOST}:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.upstream.count(), 1);
}

/// No session: a public path of app is served; the same path on other (a page there) and the
/// protected paths of both are refused or sent to login; unknown hosts never reach anything.
#[tokio::test(flavor = "multi_thread")]
async fn public_on_one_host_is_not_public_on_the_other() {
    let w = IngressWorld::start(Options {
        shared: true,
        ..Options::default()
    })
    .await;
    let client = w.client();
    let (app, other) = (w.origin(APP_HOST), w.origin(OTHER_HOST));

    let public = client
        .get(format!("{app}/public/terms"))
        .send()
        .await
        .expect("nginx answers");
    assert_eq!(public.status(), 200, "app's public path needs no session");
    assert_eq!(w.upstream.count(), 1);
    assert_eq!(w.upstream.last().path, "/public/terms");
    assert!(w.upstream.last().all("authorization").is_empty());

    let resp = client
        .get(format!("{other}/public/terms"))
        .send()
        .await
        .expect("nginx answers");
    assert_eq!(resp.status(), 302, "on other /public/ is a page");
    let to = location(resp.headers());
    let expected = format!("{other}/bff/login?rd=");
    assert!(to.starts_with(&expected), "{to}");
    let rd = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    assert_eq!(rd, Some(format!("{other}/public/terms")));

    for origin in [&app, &other] {
        let resp = client
            .get(format!("{origin}/api/orders"))
            .header("x-csrf", "1")
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(resp.status(), 401, "{origin}/api/ without a session");
        let resp = client
            .get(format!("{origin}/account"))
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(resp.status(), 302, "{origin}/account without a session");
    }
    // A client's own description is overwritten by nginx's (proxy_set_header), not added to.
    let resp = client
        .get(format!("{other}/account"))
        .header("x-original-url", format!("{app}/public/terms"))
        .header("x-original-method", "GET")
        .header("x-forwarded-uri", "/public/terms")
        .header("x-forwarded-host", APP_HOST)
        .send()
        .await
        .expect("nginx answers");
    assert_eq!(resp.status(), 302, "a spoofed X-Original-URL through nginx");
    assert_eq!(w.forwarded(), 1, "only the public request got through");

    // Straight to the auth port (as the ingress): hosts off the list, and the wildcard.
    let port = w.nginx.port;
    for (url, expected) in [
        ("http://evil.test/public/terms".to_string(), 403),
        (format!("http://{PARENT_DOMAIN}:{port}/"), 403),
        (format!("http://wild.{PARENT_DOMAIN}:{port}/"), 403),
        (format!("http://a.wild.{PARENT_DOMAIN}:{port}/"), 401),
        (format!("http://a.b.wild.{PARENT_DOMAIN}:{port}/"), 401),
        (format!("{app}/public/terms"), 200),
        (format!("{other}/public/terms"), 401),
        ("not a url".to_string(), 400),
    ] {
        let (status, answer) = raw(w.auth_port, &auth_request(&url, ""));
        assert_eq!(status, expected, "{url}:\n{answer}");
    }
    // The description itself: missing, doubled or not an absolute URL is 400, never a guess.
    let app_url = format!("{app}/account");
    for (what, request) in [
        (
            "no X-Original-URL",
            "GET /bff/auth HTTP/1.1\r\nHost: auth\r\nX-Original-Method: GET\r\nConnection: close\r\n\r\n"
                .to_string(),
        ),
        (
            "no X-Original-Method",
            format!("GET /bff/auth HTTP/1.1\r\nHost: auth\r\nX-Original-URL: {app_url}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "two X-Original-URL",
            auth_request(&app_url, "X-Original-URL: http://evil.test/\r\n"),
        ),
        ("a relative X-Original-URL", auth_request("/account", "")),
        (
            "a userinfo X-Original-URL",
            auth_request(&format!("http://evil.test@{APP_HOST}:{port}/account"), ""),
        ),
    ] {
        let (status, answer) = raw(w.auth_port, &request);
        assert!(
            status == 400 || (what.contains("userinfo") && status == 403),
            "{what}: {answer}"
        );
        assert!(!answer.to_ascii_lowercase().contains("bearer"), "{answer}");
    }

    // An unknown host at nginx meets the controller's default server.
    let (status, _) = raw(
        port,
        "GET /public/terms HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    assert_eq!(w.forwarded(), 1);

    // API refusals are JSON (their bodies are spelled out in auth_error_bodies_are_the_specified_json).
    let (status, answer) = raw(w.auth_port, &auth_request(&format!("{app}/api/orders"), ""));
    assert_eq!(status, 403, "no X-CSRF: {answer}");
    assert!(
        header_lines(&answer)
            .iter()
            .any(|l| l.starts_with("content-type: application/json")),
        "{answer}"
    );

    // Every decision is counted.
    let metrics = w.metrics().await;
    for decision in ["public", "unauthenticated", "denied", "invalid"] {
        assert!(
            auth_decisions(&metrics, decision) >= 1,
            "decision {decision} not counted:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total{")
                && l.contains("route_kind=\"auth\"")),
        "auth requests in portcullis_requests_total:\n{metrics}"
    );
}

/// With a session: API calls need X-CSRF and a same-origin Origin/Sec-Fetch-Site, and a host
/// whose access policy the user does not meet answers 403 (not a login loop).
#[tokio::test(flavor = "multi_thread")]
async fn api_rules_and_host_access_policies_apply_with_a_session() {
    let w = IngressWorld::start(Options {
        shared: true,
        ..Options::default()
    })
    .await;
    let jar = w.login(APP_HOST, "alice").await;
    let client = w.client();
    let app = w.origin(APP_HOST);
    let get = |extra: Vec<(&'static str, String)>| {
        let mut req = client
            .get(format!("{app}/api/orders"))
            .header("cookie", jar.header());
        for (k, v) in extra {
            req = req.header(k, v);
        }
        req.send()
    };
    assert_eq!(
        get(vec![("x-csrf", "1".into())]).await.unwrap().status(),
        200
    );
    let before = w.upstream.count();
    for (what, headers) in [
        ("no X-CSRF", vec![]),
        ("X-CSRF: 0", vec![("x-csrf", "0".to_string())]),
        (
            "a foreign Origin",
            vec![
                ("x-csrf", "1".into()),
                ("origin", "https://evil.test".into()),
            ],
        ),
        (
            "Sec-Fetch-Site: cross-site",
            vec![
                ("x-csrf", "1".into()),
                ("sec-fetch-site", "cross-site".into()),
            ],
        ),
    ] {
        let status = get(headers).await.unwrap().status();
        assert_eq!(status, 403, "{what}");
    }
    assert_eq!(w.upstream.count(), before, "no refused call was forwarded");

    // A valid session on a host whose access policy wants the "admins" group.
    let admin = format!("http://admin.{PARENT_DOMAIN}:{}/", w.nginx.port);
    let (status, answer) = raw(
        w.auth_port,
        &auth_request(&admin, &format!("Cookie: {}\r\n", jar.header())),
    );
    assert_eq!(status, 403, "access policy denies:\n{answer}");
    assert!(
        !header_lines(&answer)
            .iter()
            .any(|l| l.starts_with("authorization:")),
        "{answer}"
    );
    let metrics = w.metrics().await;
    assert!(auth_decisions(&metrics, "denied") >= 1, "{metrics}");
}

/// The bodies: an untrusted caller gets 403 `{"error":"forbidden"}`, an API call without a
/// session 401 `{"error":"unauthorized"}` (the proxy's own api 401), both JSON.
#[tokio::test(flavor = "multi_thread")]
async fn auth_error_bodies_are_the_specified_json() {
    let w = IngressWorld::start(Options {
        ..Options::default()
    })
    .await;
    let api = format!("{}/api/orders", w.origin(APP_HOST));
    let (status, answer) = raw(w.auth_port, &auth_request(&api, "X-CSRF: 1\r\n"));
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.ends_with("{\"error\":\"unauthorized\"}"),
        "no session on an api path:\n{answer}"
    );

    let mut untrusting = Portcullis::reserve();
    let auth_port = free_port();
    let config = w.config(
        untrusting.port,
        untrusting.admin_port,
        auth_port,
        "10.9.9.9/32",
    );
    untrusting.start(&config).await;
    let (status, answer) = raw(auth_port, &auth_request(&api, "X-CSRF: 1\r\n"));
    assert_eq!(status, 403, "{answer}");
    assert!(
        header_lines(&answer)
            .iter()
            .any(|l| l.starts_with("content-type: application/json")),
        "an untrusted caller's refusal is JSON:\n{answer}"
    );
    assert!(answer.ends_with("{\"error\":\"forbidden\"}"), "{answer}");
}

/// nginx picks the server block by the request line's host when the target is absolute-form
/// (`GET http://other/… HTTP/1.1` with `Host: app`), while ingress-nginx's `X-Original-URL` names
/// `$http_host`, the Host header: without more, such a request for other's page is described to
/// portcullis as app's (watched: other's upstream served it). Portcullis cannot see the request
/// line, so the README gives ingress-nginx users these ConfigMap snippets, which refuse a Host
/// header naming another host than the request line: 400, nothing served, while ordinary logins
/// and API calls through the same nginx still work.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_check_snippet_closes_the_absolute_form_gap() {
    let w = IngressWorld::start(Options {
        host_check: true,
        ..Options::default()
    })
    .await;
    let port = w.nginx.port;
    let (status, answer) = raw(
        port,
        &format!(
            "GET http://{OTHER_HOST}:{port}/public/report HTTP/1.1\r\nHost: {APP_HOST}:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(w.forwarded(), 0);
    // Absolute-form naming the same host as Host is still fine.
    let (status, answer) = raw(
        port,
        &format!(
            "GET http://{APP_HOST}:{port}/public/report HTTP/1.1\r\nHost: {APP_HOST}:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{answer}");
    let jar = w.login(APP_HOST, "alice").await;
    let resp = w
        .client()
        .get(format!("{}/api/orders", w.origin(APP_HOST)))
        .header("cookie", jar.header())
        .header("x-csrf", "1")
        .send()
        .await
        .expect("api answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(w.upstream.count(), 2);
    assert_eq!(w.other_upstream.count(), 0);
}

/// The auth answer refreshes the access token first when it is due, once for many concurrent
/// auth requests, and hands the ingress the new token.
#[tokio::test(flavor = "multi_thread")]
async fn auth_answers_refresh_a_due_token_once_for_concurrent_requests() {
    let w = IngressWorld::start(Options {
        redis: true,
        access_token_ttl: 4,
        ..Options::default()
    })
    .await;
    let jar = w.login(APP_HOST, "alice").await;
    let client = w.client();
    let url = format!("{}/api/orders", w.origin(APP_HOST));
    let call = || {
        client
            .get(&url)
            .header("cookie", jar.header())
            .header("x-csrf", "1")
            .send()
    };
    assert_eq!(call().await.expect("api").status(), 200);
    let first = support::last_bearer(&w.upstream);
    w.op.wait_until_inactive(&first, "the first access token to expire")
        .await;
    let (_, refreshes_before) = w.op.grant_counts().await;
    let answers = futures_join_all((0..8).map(|_| call())).await;
    for a in answers {
        assert_eq!(
            a.expect("api").status(),
            200,
            "a due token is refreshed, not refused"
        );
    }
    let (_, refreshes_after) = w.op.grant_counts().await;
    assert_eq!(
        refreshes_after - refreshes_before,
        1,
        "one refresh for eight concurrent auth requests"
    );
    let bearers: std::collections::BTreeSet<String> = w
        .upstream
        .requests()
        .iter()
        .skip(1)
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(
        bearers.len(),
        1,
        "every request got the same new token: {bearers:?}"
    );
    let second = support::last_bearer(&w.upstream);
    assert_ne!(second, first);
    assert!(w.op.introspect_active(&second).await);
}

/// Awaits every future, concurrently (tokio tasks; no extra crate).
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
