//! Configuration reload without a restart, against the real binary with its configuration in a
//! directory laid out and updated as the kubelet lays out and updates a ConfigMap volume.
//! A valid change applies under load with no failed request and sessions survive; an invalid
//! file or one that changes a restart-only key is refused whole, logged and counted; SIGHUP
//! reloads too.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::configmap::ConfigMapVolume;
use support::op::{Op, OpOptions};
use support::portcullis::{Portcullis, Store};
use support::upstream::Upstream;
use support::{eventually, metric};

const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
const LOAD_CLIENTS: usize = 4;
/// Each load client stops after this many requests even if the test never says stop.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

/// One OP, two upstreams and a portcullis serving a ConfigMap-style file whose routes all go
/// to the first upstream.
struct Setup {
    _op: Op,
    first: Upstream,
    second: Upstream,
    proxy: Portcullis,
    volume: ConfigMapVolume,
    config: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(log_level: &str) -> Setup {
        let first = Upstream::start();
        let second = Upstream::start();
        let mut proxy = Portcullis::reserve();
        // The configured level decides, so a reload can change it.
        proxy.rust_log = "";
        let op = Op::start(OpOptions {
            app_origins: vec![proxy.origin()],
            ..OpOptions::default()
        });
        let config = proxy
            .config(&op.issuer, &first, &Store::Memory, "")
            .replace("level: \"info\"", &format!("level: \"{log_level}\""));
        let dir = tempfile::tempdir().expect("temp dir");
        let volume = ConfigMapVolume::create(dir.path(), "portcullis.yaml", &config);
        proxy.start_with_file(volume.path()).await;
        Setup {
            _op: op,
            first,
            second,
            proxy,
            volume,
            config,
            _dir: dir,
        }
    }

    /// The running file with every route sent to the second upstream.
    fn routes_to_second(&self) -> String {
        self.config.replace(&self.first.url(), &self.second.url())
    }

    async fn reloads(&self, outcome: &str) -> u64 {
        let (_, text) = self.proxy.admin_get("/metrics").await;
        metric(
            &text,
            &format!("portcullis_config_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    }

    async fn wait_for_reload(&self, outcome: &str, count: u64) {
        eventually(
            &format!("{count} reload(s) with outcome {outcome}"),
            RELOAD_DEADLINE,
            || async move { (self.reloads(outcome).await >= count).then_some(()) },
        )
        .await;
    }

    async fn public_get(&self, client: &reqwest::Client) -> u16 {
        let resp = client
            .get(format!("{}/public/probe", self.proxy.origin()))
            .send()
            .await
            .expect("portcullis answers");
        resp.status().as_u16()
    }
}

/// Steady traffic on a public route from several keep-alive clients until told to stop;
/// counts requests and failures (an error or any status but 200).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(origin: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let clients = (0..LOAD_CLIENTS)
            .map(|_| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let url = format!("{origin}/public/load");
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    for _ in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let ok = match client.get(&url).send().await {
                            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        sent.fetch_add(1, Ordering::SeqCst);
                        if !ok {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            clients,
        }
    }

    /// Stops the clients; returns (requests, failures).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.expect("load client");
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Waits until a request tagged `request_id` to an unknown `/bff/` endpoint (logged at info)
/// shows in the log.
async fn wait_for_info_logging(proxy: &Portcullis, client: &reqwest::Client, request_id: &str) {
    eventually("info lines in the log", RELOAD_DEADLINE, || async move {
        let _ = client
            .get(format!("{}/bff/no-such-endpoint", proxy.origin()))
            .header("x-request-id", request_id)
            .send()
            .await;
        proxy.logs().contains(request_id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_under_load_applies_with_no_failed_request_and_sessions_survive() {
    let mut s = Setup::start("warn").await;
    let mut browser = support::browser::Browser::new(&s.proxy.origin());
    browser.login("alice", "/").await;
    let api = browser.get("/api/before", &[("x-csrf", "1")]).await;
    assert_eq!(api.status, 200, "the session works before the reload");
    let client = reqwest::Client::new();
    let _ = client
        .get(format!("{}/bff/no-such-endpoint", s.proxy.origin()))
        .header("x-request-id", "marker-before-reload")
        .send()
        .await;

    let load = Load::start(&s.proxy.origin());
    eventually("load to flow", RELOAD_DEADLINE, || {
        let n = load.sent.load(Ordering::SeqCst);
        async move { (n > 50).then_some(()) }
    })
    .await;
    let new_config = s
        .routes_to_second()
        .replace("level: \"warn\"", "level: \"info\"");
    s.volume.update(&new_config);
    eventually("the new upstream to get traffic", RELOAD_DEADLINE, || {
        let seen = s.second.count();
        async move { (seen > 0).then_some(()) }
    })
    .await;
    let before = load.sent.load(Ordering::SeqCst);
    eventually("more load after the swap", RELOAD_DEADLINE, || {
        let n = load.sent.load(Ordering::SeqCst);
        async move { (n > before + 50).then_some(()) }
    })
    .await;
    let (sent, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "no request failed across the reload ({sent} sent)"
    );
    assert_eq!(s.reloads("success").await, 1);

    let first_before = s.first.count();
    assert_eq!(s.public_get(&client).await, 200);
    assert_eq!(
        s.first.count(),
        first_before,
        "new requests go to the new upstream only"
    );

    let api = browser.get("/api/after", &[("x-csrf", "1")]).await;
    assert_eq!(api.status, 200, "the session survives the reload");
    let last = s.second.last();
    assert_eq!(last.path, "/api/after");
    assert!(
        last.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ")),
        "the token is still injected"
    );

    wait_for_info_logging(&s.proxy, &client, "marker-after-reload").await;
    assert!(
        !s.proxy.logs().contains("marker-before-reload"),
        "info lines were off before the reload"
    );
    assert!(s.proxy.logs().contains("configuration reloaded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_keeps_the_running_configuration_and_logs_what_check_prints() {
    let mut s = Setup::start("info").await;
    let invalid = s.routes_to_second().replace("kind: public", "kind: bogus");
    s.volume.update(&invalid);
    s.wait_for_reload("failure", 1).await;

    let check = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(s.volume.path())
        .output()
        .expect("check runs");
    assert_eq!(check.status.code(), Some(2));
    let problems = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(
        problems.contains("portcullis.yaml: routes[1].kind: \"bogus\" is not a route kind"),
        "{problems}"
    );
    let logs = s.proxy.logs();
    for line in problems.lines() {
        assert!(
            logs.contains(line),
            "the log has check's line {line:?}:\n{logs}"
        );
    }

    let client = reqwest::Client::new();
    assert_eq!(s.public_get(&client).await, 200);
    assert_eq!(s.second.count(), 0, "nothing of the invalid file applied");
    assert_eq!(s.reloads("success").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_listen_address_needs_a_restart_and_nothing_of_the_file_applies() {
    let mut s = Setup::start("info").await;
    let moved = s.routes_to_second().replace(
        &format!("listen: \"127.0.0.1:{}\"", s.proxy.port),
        &format!("listen: \"127.0.0.1:{}\"", support::free_port()),
    );
    assert_ne!(moved, s.routes_to_second());
    s.volume.update(&moved);
    s.wait_for_reload("restart_required", 1).await;

    let logs = s.proxy.logs();
    assert!(
        logs.contains(
            "listen changed, which only a restart applies; nothing of this file was applied"
        ),
        "{logs}"
    );
    let client = reqwest::Client::new();
    assert_eq!(
        s.public_get(&client).await,
        200,
        "still served on the old address"
    );
    assert_eq!(
        s.second.count(),
        0,
        "the route change in that file did not apply"
    );
    assert_eq!(s.reloads("success").await, 0);
    assert_eq!(s.reloads("failure").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_file() {
    let mut s = Setup::start("info").await;
    s.proxy.signal("HUP");
    s.wait_for_reload("success", 1).await;
    assert!(s.proxy.is_running(), "SIGHUP does not end the process");

    // A change made in place (not through the volume's swap) applies at the next SIGHUP at
    // the latest; the file watcher may see it first.
    std::fs::write(s.volume.path(), s.routes_to_second()).expect("rewrite in place");
    s.proxy.signal("HUP");
    let client = reqwest::Client::new();
    eventually(
        "the second upstream to get traffic",
        RELOAD_DEADLINE,
        || {
            let req = s.public_get(&client);
            let second = &s.second;
            async move {
                req.await;
                (second.count() > 0).then_some(())
            }
        },
    )
    .await;
    assert!(s.reloads("success").await >= 2);
}
