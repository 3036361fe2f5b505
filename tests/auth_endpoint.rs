//! The ingress auth endpoint (`ingress_auth`), called directly as an ingress controller would:
//! what each controller's description of a request gets back, with a real OP and Redis. The
//! whole path through a real nginx and Chromium is in `ingress_auth.rs`.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use support::free_port;
use support::{eventually, last_bearer, World, WorldOptions};

/// `ingress_auth` for the world's portcullis: `app.localhost` with the three kinds of path, and
/// `corp.localhost`, which admits only e-mail addresses at corp.test (the OP's users are at
/// example.test).
fn ingress_config(auth_port: u16, controller: &str, trusted: &str) -> String {
    format!(
        "ingress_auth:\n  enabled: true\n  listen: \"127.0.0.1:{auth_port}\"\n  controller: {controller}\n  trusted_ingress: [\"{trusted}\"]\n  hosts:\n\
         \x20   - host: app.localhost\n      paths:\n        - {{ path: /api/, kind: api }}\n        - {{ path: /public/, kind: public }}\n        - {{ path: /, kind: page }}\n\
         \x20   - host: corp.localhost\n      access: {{ email_domains: [corp.test] }}\n      paths:\n        - {{ path: /, kind: page }}\n"
    )
}

struct AuthClient {
    url: String,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl AuthClient {
    fn new(port: u16) -> AuthClient {
        AuthClient {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn ask(&self, path: &str, method: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", self.url),
        );
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("auth request");
        Answer {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    /// ingress-nginx's auth subrequest for `GET url`, with the browser's headers.
    async fn nginx(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("x-original-url", url), ("x-original-method", "GET")];
        all.extend_from_slice(headers);
        self.ask("/bff/auth", "GET", &all).await
    }
}

async fn logged_in_world(auth_port: u16, access_token_ttl: u64) -> (World, String) {
    let world = World::start(WorldOptions {
        access_token_ttl,
        extra_config: ingress_config(auth_port, "nginx", "127.0.0.1"),
        ..WorldOptions::default()
    })
    .await;
    let mut browser = world.browser();
    browser.login("alice", "/").await;
    let cookie = format!(
        "__Host-portcullis={}; theme=dark",
        browser.session_cookie().expect("a session cookie")
    );
    (world, cookie)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_nginx_auth_request_gets_the_token_identity_and_the_other_cookies() {
    let auth_port = free_port();
    let (world, cookie) = logged_in_world(auth_port, 300).await;
    let auth = AuthClient::new(auth_port);

    let page = auth
        .nginx("http://app.localhost/dashboard", &[("cookie", &cookie)])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The token is the one the proxy itself forwards for this session.
    let mut browser = world.browser();
    browser.cookies.insert(
        "__Host-portcullis".into(),
        cookie
            .trim_start_matches("__Host-portcullis=")
            .split(';')
            .next()
            .unwrap()
            .into(),
    );
    assert_eq!(browser.api("/api/whoami").await.status, 200);
    let token = last_bearer(&world.upstream);
    assert_eq!(
        page.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(page.header("x-auth-request-user"), Some("alice"));
    assert_eq!(
        page.header("x-auth-request-email"),
        Some("alice@example.test")
    );
    // Claims the OP did not send are present and empty, so the ingress overwrites a client's copy.
    assert_eq!(page.header("x-auth-request-groups"), Some(""));
    assert_eq!(page.header("cookie"), Some("theme=dark"));
    assert_eq!(page.header("cache-control"), Some("no-store"));

    let with_csrf = auth
        .nginx(
            "http://app.localhost/api/x",
            &[
                ("cookie", &cookie),
                ("x-csrf", "1"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(with_csrf.status, 200);
    let forged = auth
        .nginx("http://app.localhost/api/x", &[("cookie", &cookie)])
        .await;
    assert_eq!(forged.status, 403, "no X-CSRF");
    assert!(forged.header("authorization").is_none());
    let cross_site = auth
        .nginx(
            "http://app.localhost/api/x",
            &[
                ("cookie", &cookie),
                ("x-csrf", "1"),
                ("origin", "http://evil.localhost"),
            ],
        )
        .await;
    assert_eq!(cross_site.status, 403);
    // A page on another of portcullis's hosts is cross-origin to this one; this host's own page
    // is not (both at public_url's scheme and port).
    let port = world.proxy.port;
    let own_origin = format!("http://app.localhost:{port}");
    let sibling_origin = format!("http://corp.localhost:{port}");
    for (origin, status) in [(&own_origin, 200), (&sibling_origin, 403)] {
        let a = auth
            .nginx(
                "http://app.localhost/api/x",
                &[("cookie", &cookie), ("x-csrf", "1"), ("origin", origin)],
            )
            .await;
        assert_eq!(a.status, status, "Origin {origin}");
    }

    let anonymous = auth.nginx("http://app.localhost/dashboard", &[]).await;
    assert_eq!(anonymous.status, 401, "nginx redirects a 401 itself");
    assert!(anonymous.header("location").is_none());
    let anonymous_api = auth
        .nginx("http://app.localhost/api/x", &[("x-csrf", "1")])
        .await;
    assert_eq!(anonymous_api.status, 401);
    assert_eq!(anonymous_api.body, "{\"error\":\"unauthorized\"}");

    let public = auth
        .nginx(
            "http://app.localhost/public/x",
            &[
                ("authorization", "Bearer client-made"),
                ("x-auth-request-user", "root"),
            ],
        )
        .await;
    assert_eq!(public.status, 200);
    assert_eq!(public.header("authorization"), Some(""));
    assert_eq!(public.header("x-auth-request-user"), Some(""));

    let denied = auth
        .nginx("http://corp.localhost/", &[("cookie", &cookie)])
        .await;
    assert_eq!(denied.status, 403, "the host admits only corp.test");
    assert!(denied.header("authorization").is_none());
    assert!(world.proxy.logs().contains("access_denied_email"));

    for (url, why) in [
        ("http://other.localhost/", "a host not configured"),
        ("http://app.localhost/public/..%2Fapi/x", "an encoded slash"),
        ("http://app.localhost/public/../api/x", "a dot segment"),
        (
            "http://app.localhost/public;/../api/x",
            "a dot segment with a parameter",
        ),
        ("http://app.localhost//api/x", "an empty segment"),
        (
            "http://app.localhost/%61pi/x",
            "a letter percent-encoded (nginx routes it as /api/x)",
        ),
        (
            "http://app.localhost/API/x",
            "another case (ingress-nginx regex paths ignore it)",
        ),
    ] {
        let a = auth.nginx(url, &[("cookie", &cookie)]).await;
        assert_eq!(a.status, 403, "{why}: {url}");
        assert!(a.header("authorization").is_none(), "{why}");
    }
    let no_description = auth.ask("/bff/auth", "GET", &[("cookie", &cookie)]).await;
    assert_eq!(no_description.status, 400);
    let repeated = auth
        .ask(
            "/bff/auth",
            "GET",
            &[
                ("x-original-url", "http://app.localhost/public/"),
                ("x-original-url", "http://app.localhost/"),
                ("x-original-method", "GET"),
                ("cookie", &cookie),
            ],
        )
        .await;
    assert_eq!(repeated.status, 400);

    // The browser-facing listener has no auth endpoint: its answer would hand a page the token.
    let mut browser = world.browser();
    let on_listen = browser
        .get(
            "/bff/auth",
            &[
                ("x-original-url", "http://app.localhost/"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
    assert_eq!(on_listen.status, 404);

    let metrics = world.proxy.admin_get("/metrics").await.1;
    // The answer carries the token to the ingress; nothing else ever does.
    assert!(!metrics.contains(&token));
    assert!(!world.proxy.logs().contains(&token), "a token in the log");
    for decision in ["allow", "public", "unauthenticated", "denied", "invalid"] {
        let line = format!("portcullis_auth_requests_total{{decision=\"{decision}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {metrics}"));
        assert!(count >= 1, "{decision}: {count}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_endpoint_refreshes_a_due_token_before_answering() {
    let auth_port = free_port();
    let (_world, cookie) = logged_in_world(auth_port, 4).await;
    let auth = AuthClient::new(auth_port);
    let first = auth
        .nginx("http://app.localhost/", &[("cookie", &cookie)])
        .await;
    assert_eq!(first.status, 200);
    let first_token = first.header("authorization").unwrap().to_string();
    // The token lives 4 s and is refreshed in its second half.
    let refreshed = eventually("a refreshed token", Duration::from_secs(10), || {
        let auth = &auth;
        let cookie = &cookie;
        let first_token = &first_token;
        async move {
            let a = auth
                .nginx("http://app.localhost/", &[("cookie", cookie)])
                .await;
            (a.status == 200 && a.header("authorization") != Some(first_token.as_str()))
                .then(|| a.header("authorization").unwrap().to_string())
        }
    })
    .await;
    assert!(refreshed.starts_with("Bearer "));
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_and_envoy_send_navigations_to_the_login_on_the_same_host() {
    let world = World::start(WorldOptions {
        redis: false,
        ..WorldOptions::default()
    })
    .await;
    for controller in ["traefik", "envoy"] {
        let auth_port = free_port();
        let replica = world
            .replica(&ingress_config(auth_port, controller, "127.0.0.1/32"))
            .await;
        let auth = AuthClient::new(auth_port);
        let (path, headers): (&str, Vec<(&str, &str)>) = match controller {
            "traefik" => (
                "/bff/auth",
                vec![
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", "app.localhost:8080"),
                    ("x-forwarded-uri", "/reports?year=2026"),
                ],
            ),
            _ => (
                "/bff/auth/reports?year=2026",
                vec![("host", "app.localhost:8080")],
            ),
        };
        let navigation = auth.ask(path, "GET", &headers).await;
        assert_eq!(navigation.status, 302, "{controller}");
        assert_eq!(
            navigation.header("location"),
            Some("http://app.localhost:8080/bff/login?rd=http%3A%2F%2Fapp.localhost%3A8080%2Freports%3Fyear%3D2026"),
            "{controller}"
        );
        let mut fetch = headers.clone();
        fetch.push(("sec-fetch-mode", "cors"));
        let scripted = auth.ask(path, "GET", &fetch).await;
        assert_eq!(
            scripted.status, 401,
            "{controller}: a script's fetch is not redirected"
        );
        assert!(scripted.header("location").is_none());
        let post = auth.ask(path, "POST", &headers).await;
        match controller {
            // Traefik describes the method in a header; the auth request's own is irrelevant.
            "traefik" => assert_eq!(post.status, 302),
            _ => assert_eq!(post.status, 401, "a POST is not a navigation"),
        }
        drop(replica);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_outside_trusted_ingress_are_never_answered_with_a_token() {
    let auth_port = free_port();
    let world = World::start(WorldOptions {
        redis: false,
        extra_config: ingress_config(auth_port, "nginx", "10.9.9.9/32"),
        ..WorldOptions::default()
    })
    .await;
    let mut browser = world.browser();
    browser.login("alice", "/").await;
    let cookie = format!("__Host-portcullis={}", browser.session_cookie().unwrap());
    let auth = AuthClient::new(auth_port);
    for url in ["http://app.localhost/", "http://app.localhost/public/x"] {
        let a = auth.nginx(url, &[("cookie", &cookie)]).await;
        assert_eq!(a.status, 403, "{url}");
        assert!(a.header("authorization").is_none());
        assert!(a.header("x-auth-request-user").is_none());
    }
    assert!(world.proxy.logs().contains("auth_caller_not_trusted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_on_an_ingress_host_ends_on_that_host_and_rd_stays_on_our_hosts() {
    let world = World::start(WorldOptions {
        redis: false,
        extra_config: ingress_config(free_port(), "nginx", "127.0.0.1"),
        ..WorldOptions::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let port = world.proxy.origin().rsplit(':').next().unwrap().to_string();
    let app = format!("app.localhost:{port}");
    let login = |host: String, rd: String| {
        let http = http.clone();
        let url = format!("{}/bff/login", world.proxy.origin());
        async move {
            http.get(url)
                .query(&[("rd", rd)])
                .header("host", host)
                .send()
                .await
                .expect("login")
        }
    };
    let started = login(app.clone(), format!("http://{app}/reports?y=1")).await;
    assert_eq!(started.status(), 302);
    let to_op = url::Url::parse(
        started
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap(),
    )
    .unwrap();
    let redirect_uri = to_op
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        redirect_uri,
        Some(format!("http://{app}/bff/callback")),
        "a login on an ingress host comes back to that host"
    );
    let on_public = login(format!("127.0.0.1:{port}"), "/".into()).await;
    let to_op = on_public.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        to_op.contains(&format!(
            "redirect_uri={}",
            url::form_urlencoded::byte_serialize(
                format!("{}/bff/callback", world.proxy.origin()).as_bytes()
            )
            .collect::<String>()
        )),
        "{to_op}"
    );
    for rd in [
        format!("http://evil.localhost:{port}/"),
        format!("http://app.localhost:{port}.evil.test/"),
        format!("http://app.localhost:{port}@evil.test/"),
        format!("https://app.localhost:{port}/"),
        "//evil.test/".to_string(),
        "/%2F%2Fevil.test".to_string(),
    ] {
        let refused = login(app.clone(), rd.clone()).await;
        assert_eq!(refused.status(), 400, "{rd}");
        assert!(refused.headers().get("location").is_none(), "{rd}");
    }
    let unknown_host = login(format!("evil.localhost:{port}"), "/".into()).await;
    assert_eq!(unknown_host.status(), 421);
}
