//! `kind: static` routes serving a real SPA build (esbuild, `tests/e2e/build-spa.mjs`): deep
//! links and cache headers in a real Chromium (`tests/e2e/spa.mjs`), validators, precompressed
//! copies and methods over HTTP, and traversal attempts (encoded, backslash, NUL, hidden names,
//! symlinks out of the root) refused without a byte of what lies outside.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::chromium::run_scenario;
use support::{eventually, metric, repo_root, status_of, World, WorldOptions};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'";
const OUTSIDE_SECRET: &str = "OUTSIDE-THE-ROOT-7f3a";
const DOTFILE_SECRET: &str = "DOTFILE-SECRET-91c2";
/// Bigger than any single read, so the body goes out in many chunks.
const BIG: usize = 5 * 1024 * 1024 + 123;

/// The SPA's build directory, with what a careless deploy leaves beside it: a dotfile, a
/// `.git` directory, and symlinks pointing out of the root.
struct Spa {
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
    script: String,
    style: String,
}

fn build_spa() -> Spa {
    let root = tempfile::tempdir().expect("build dir");
    let outside = tempfile::tempdir().expect("outside dir");
    let e2e = repo_root().join("tests/e2e");
    assert!(
        e2e.join("node_modules/esbuild").exists(),
        "tests/e2e/node_modules is missing esbuild: run `make test-deps`"
    );
    let out = Command::new("node")
        .arg(e2e.join("build-spa.mjs"))
        .arg(root.path())
        .arg("/app/")
        .output()
        .expect("node runs build-spa.mjs");
    assert!(
        out.status.success(),
        "build-spa.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("build-spa.mjs prints JSON");
    let name =
        |k: &str| {
            let name = built[k].as_str().expect("asset name").to_string();
            // The build is reproducible, so this holds for good once it holds: the hashed-name
            // rule wants a digit in the hash (see `has_content_hash`).
            assert!(
            name.split(['-', '.']).nth(1).is_some_and(|h| h.chars().any(|c| c.is_ascii_digit())),
            "{name}: the build's hash has no digit, so it is not taken for one (change the app)"
        );
            name
        };
    let r = root.path();
    std::fs::write(r.join(".env"), DOTFILE_SECRET).expect("dotfile");
    std::fs::create_dir_all(r.join(".git")).expect(".git");
    std::fs::write(r.join(".git/config"), DOTFILE_SECRET).expect(".git/config");
    std::fs::write(outside.path().join("secret.txt"), OUTSIDE_SECRET).expect("outside file");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), r.join("leak.txt"))
        .expect("file symlink");
    std::os::unix::fs::symlink(outside.path(), r.join("out")).expect("dir symlink");
    let big: Vec<u8> = (0..BIG).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(r.join("assets/video-9f8e7d6c.bin"), big).expect("big file");
    Spa {
        script: name("script"),
        style: name("style"),
        root,
        _outside: outside,
    }
}

/// portcullis with the standard routes, the page CSP, and the build at `/app/` (public) and at
/// `/members/` (`policy: user`).
async fn serve(spa: &Spa) -> World {
    let mut world = World::start(WorldOptions {
        redis: false,
        extra_config: format!("security:\n  content_security_policy: \"{CSP}\"\n"),
        ..WorldOptions::default()
    })
    .await;
    let root = spa.root.path().display();
    world
        .reconfigure(
            "routes:\n",
            &format!(
                "routes:\n  - {{ path: \"/app/\", kind: static, root: \"{root}\" }}\n  \
                 - {{ path: \"/members/\", kind: static, root: \"{root}\", policy: user }}\n"
            ),
        )
        .await;
    world
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn request(world: &World, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().request(
        method.parse().expect("method"),
        format!("{}{path}", world.proxy.origin()),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("portcullis answers");
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

fn file(spa: &Spa, name: &str) -> Vec<u8> {
    std::fs::read(spa.root.path().join(name)).expect("built file")
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_loads_deep_links_reloads_and_caches_a_built_spa() {
    let spa = build_spa();
    let world = serve(&spa).await;
    let run = run_scenario(
        "spa.mjs",
        vec![
            ("APP_URL", world.proxy.origin()),
            ("BASE", "/app/".to_string()),
            ("CSP", CSP.to_string()),
            ("SCRIPT", spa.script.clone()),
        ],
    )
    .await;
    assert!(
        run.passed,
        "browser scenario failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    let stdout = run.stdout;
    println!("{stdout}");
    assert_eq!(
        world.upstream.count(),
        0,
        "nothing of the SPA came from an upstream"
    );
    // The browser shows a revalidated page as 200 from its cache; portcullis answered 304.
    let (_, metrics) = world.proxy.admin_get("/metrics").await;
    let revalidated = metric(
        &metrics,
        "portcullis_requests_total{route_kind=\"static\",status_class=\"3xx\"}",
    );
    assert!(revalidated >= 1, "no 304 was sent:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_validators_encodings_and_cache_rules() {
    let spa = build_spa();
    let world = serve(&spa).await;
    let index = file(&spa, "index.html");

    // The route's own path and deep links get index.html, revalidated on every use.
    for path in [
        "/app/",
        "/app/orders/42",
        "/app/orders/42?tab=items",
        "/app/index.html",
    ] {
        let got = request(&world, "GET", path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.body, index, "{path}");
        assert_eq!(got.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(got.header("cache-control"), "public, no-cache", "{path}");
        assert_eq!(got.header("content-security-policy"), CSP, "{path}");
        assert_eq!(got.header("x-content-type-options"), "nosniff");
        assert_eq!(got.header("content-encoding"), "", "none asked for");
        assert_eq!(got.header("vary"), "Accept-Encoding");
        assert!(!got.header("x-request-id").is_empty());
    }

    // The hashed bundle: immutable, typed, no page CSP, each precompressed copy on request.
    let js = format!("/app/{}", spa.script);
    let plain = request(&world, "GET", &js, &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body, file(&spa, &spa.script));
    assert_eq!(
        plain.header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        plain.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(plain.header("content-security-policy"), "");
    let br = request(
        &world,
        "GET",
        &js,
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(br.header("content-encoding"), "br");
    assert_eq!(br.body, file(&spa, &format!("{}.br", spa.script)));
    assert_eq!(br.header("content-type"), "text/javascript; charset=utf-8");
    assert_ne!(br.header("etag"), plain.header("etag"));
    let gz = request(&world, "GET", &js, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gz.body, file(&spa, &format!("{}.gz", spa.script)));
    let css = request(&world, "GET", &format!("/app/{}", spa.style), &[]).await;
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");

    // Revalidation: ETag first, else the date; a changed tag gets the file again.
    let etag = plain.header("etag").to_string();
    let last_modified = plain.header("last-modified").to_string();
    let same = request(&world, "GET", &js, &[("if-none-match", &etag)]).await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), etag);
    assert_eq!(
        same.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let dated = request(&world, "GET", &js, &[("if-modified-since", &last_modified)]).await;
    assert_eq!(dated.status, 304);
    let changed = request(&world, "GET", &js, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, plain.body);

    // HEAD: the headers of the GET, no body.
    let head = request(&world, "HEAD", &js, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), plain.body.len().to_string());
    assert!(head.body.is_empty());

    // A large file goes out whole, in chunks.
    let big = request(&world, "GET", "/app/assets/video-9f8e7d6c.bin", &[]).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), BIG);
    assert_eq!(big.body, file(&spa, "assets/video-9f8e7d6c.bin"));
    assert_eq!(big.header("content-type"), "application/octet-stream");

    // Files are read, never written; a missing asset is a 404, not the index.
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let refused = request(&world, method, "/app/orders/42", &[]).await;
        assert_eq!(refused.status, 405, "{method}");
        assert_eq!(refused.header("allow"), "GET, HEAD", "{method}");
    }
    let missing = request(&world, "GET", "/app/assets/main-MISSING1.js", &[]).await;
    assert_eq!(missing.status, 404);
    assert_ne!(missing.body, index);
    let directory = request(&world, "GET", "/app/assets/", &[]).await;
    assert_eq!(directory.body, index, "a directory is never listed");

    // policy: user: a page load goes to the login, a script gets 401; nothing is served.
    let nav = request(&world, "GET", "/members/orders/42", &[]).await;
    assert_eq!(nav.status, 302);
    assert!(nav
        .header("location")
        .starts_with("/bff/login?returnTo=%2Fmembers%2Forders%2F42"));
    let script = request(
        &world,
        "GET",
        &format!("/members/{}", spa.script),
        &[("sec-fetch-mode", "no-cors")],
    )
    .await;
    assert_eq!(script.status, 401);
    assert_ne!(script.body, plain.body);

    assert_eq!(world.upstream.count(), 0, "nothing was forwarded");
    let (_, metrics) = world.proxy.admin_get("/metrics").await;
    let served = metric(
        &metrics,
        "portcullis_requests_total{route_kind=\"static\",status_class=\"2xx\"}",
    );
    assert!(served >= 12, "static requests counted by kind: {served}");
    assert!(
        metric(
            &metrics,
            "portcullis_requests_total{route_kind=\"static\",status_class=\"4xx\"}"
        ) >= 5
    );
}

/// Writes one raw request (the target exactly as given: no client normalises it) and returns
/// the whole answer.
fn raw_get(port: u16, target: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_hidden_files_and_escaping_symlinks_are_refused() {
    let spa = build_spa();
    let world = serve(&spa).await;
    let port = world.proxy.port;
    let attempts = [
        "/app/../secret.txt",
        "/app/%2e%2e/secret.txt",
        "/app/%2E%2E/%2E%2E/etc/passwd",
        "/app/..%2fsecret.txt",
        "/app/..%2Fout/secret.txt",
        "/app/%2fetc/passwd",
        "/app/..\\secret.txt",
        "/app/%5c..%5csecret.txt",
        "/app/a%00b",
        "/app/%252e%252e/secret.txt",
        "/app/%c0%ae%c0%ae/secret.txt",
        "/app//etc/passwd",
        "/app/./.env",
        "/app/.env",
        "/app/.git/config",
        "/app/%2eenv",
        "/app/leak.txt",
        "/app/out/secret.txt",
        "/app/assets/../../out/secret.txt",
    ];
    for target in attempts {
        let answer = raw_get(port, target);
        let status = status_of(&answer);
        assert!([400, 404].contains(&status), "{target}: {status}\n{answer}");
        for secret in [OUTSIDE_SECRET, DOTFILE_SECRET] {
            assert!(
                !answer.contains(secret),
                "{target} leaked a file:\n{answer}"
            );
        }
        assert!(!answer.contains("root:"), "{target} leaked /etc/passwd");
    }
    let logs = world.proxy.logs();
    for reason in [
        "static_outside_root",
        "static_hidden_name",
        "path_dot_segment",
        "path_encoded_separator",
    ] {
        assert!(logs.contains(reason), "no refusal logged as {reason}");
    }
    assert_eq!(world.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_root_is_a_configuration_error_naming_the_key() {
    let mut world = World::start(WorldOptions {
        redis: false,
        ..WorldOptions::default()
    })
    .await;
    let config = std::fs::read_to_string(world.proxy.config_path()).expect("config");
    let missing = Path::new("/nonexistent/portcullis-spa-build");
    world.proxy.stop();
    let (code, stderr) = world
        .proxy
        .start_expecting_exit(&config.replace(
            "routes:\n",
            &format!(
                "routes:\n  - {{ path: \"/app/\", kind: static, root: \"{}\" }}\n",
                missing.display()
            ),
        ))
        .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("routes[0].root: cannot open /nonexistent/portcullis-spa-build"),
        "{stderr}"
    );
}

async fn reloads(world: &World, outcome: &str) -> u64 {
    let (_, text) = world.proxy.admin_get("/metrics").await;
    metric(
        &text,
        &format!("portcullis_config_reloads_total{{outcome=\"{outcome}\"}}"),
    )
}

/// A reload checks the root again: a root that is gone is refused whole (the running routes
/// keep serving), a new build directory is served once the reload applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_checks_the_root_again() {
    let spa = build_spa();
    let world = serve(&spa).await;
    let config = std::fs::read_to_string(world.proxy.config_path()).expect("config");
    let root = spa.root.path().display().to_string();
    let deadline = Duration::from_secs(20);

    let gone = config.replace(&root, "/nonexistent/portcullis-next-build");
    std::fs::write(world.proxy.config_path(), gone).expect("write config");
    world.proxy.signal("HUP");
    let w = &world;
    eventually("the reload to be refused", deadline, || async move {
        (reloads(w, "failure").await >= 1).then_some(())
    })
    .await;
    assert!(world
        .proxy
        .logs()
        .contains("routes[0].root: cannot open /nonexistent/portcullis-next-build"));
    let still = request(&world, "GET", "/app/orders/1", &[]).await;
    assert_eq!(still.status, 200, "the running routes keep serving");
    assert_eq!(still.body, file(&spa, "index.html"));

    let next = tempfile::tempdir().expect("next build");
    std::fs::write(
        next.path().join("index.html"),
        "<!doctype html><title>next</title>",
    )
    .expect("next index");
    let moved = config.replace(&root, &next.path().display().to_string());
    std::fs::write(world.proxy.config_path(), moved).expect("write config");
    world.proxy.signal("HUP");
    eventually("the next build to be served", deadline, || async move {
        let got = request(w, "GET", "/app/orders/1", &[]).await;
        (got.body == b"<!doctype html><title>next</title>").then_some(())
    })
    .await;
}

/// The process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A file far larger than a read goes out whole while portcullis's peak memory grows by much
/// less than the file: it is streamed, never held.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_is_streamed_not_held() {
    const HUGE: usize = 64 * 1024 * 1024;
    let spa = build_spa();
    let body: Vec<u8> = (0..HUGE).map(|i| (i % 253) as u8).collect();
    std::fs::write(spa.root.path().join("assets/dump-1a2b3c4d.bin"), &body).expect("huge file");
    let world = serve(&spa).await;
    let warm = request(&world, "GET", "/app/orders/1", &[]).await;
    assert_eq!(warm.status, 200);
    let before = peak_rss_kib(world.proxy.pid());
    let got = request(&world, "GET", "/app/assets/dump-1a2b3c4d.bin", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), HUGE);
    assert!(got.body == body, "the file arrived intact");
    let grown = peak_rss_kib(world.proxy.pid()).saturating_sub(before);
    println!(
        "peak RSS grew by {grown} KiB for a {} KiB file",
        HUGE / 1024
    );
    assert!(
        grown < 16 * 1024,
        "peak memory grew by {grown} KiB serving a {} KiB file",
        HUGE / 1024
    );
}
