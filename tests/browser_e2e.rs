//! The whole login in a real headless Chromium (Debian `chromium` driven by `playwright-core`,
//! `tests/e2e/login.mjs`): OP pages, SameSite=Strict landing without a login loop, no token
//! visible to the page, silent refresh, logout. The screenshot is kept in `target/e2e/`.

mod support;

use support::chromium::run_scenario;
use support::{repo_root, World, WorldOptions};

const ACCESS_TOKEN_TTL: u64 = 4;

#[tokio::test(flavor = "multi_thread")]
async fn chromium_logs_in_uses_the_api_refreshes_silently_and_logs_out() {
    let demo = support::node::demo_upstream();
    let w = World::start(WorldOptions {
        access_token_ttl: ACCESS_TOKEN_TTL,
        page_upstream: Some(demo.url()),
        ..Default::default()
    })
    .await;
    let out_dir = repo_root().join("target/e2e");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let run = run_scenario(
        "login.mjs",
        vec![
            ("APP_URL", w.proxy.origin()),
            ("OUT_DIR", out_dir.display().to_string()),
            ("LOGIN", "alice".to_string()),
            ("AT_TTL", ACCESS_TOKEN_TTL.to_string()),
        ],
    )
    .await;
    assert!(
        run.passed,
        "browser scenario failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        out_dir.join("logged-in.png").exists(),
        "the screenshot was saved"
    );

    // Every access token the upstream ever received, checked against everything the page saw.
    let tokens: Vec<String> = w
        .upstream
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .collect();
    assert!(
        tokens.len() >= 2,
        "the scenario refreshed at least once: {} tokens",
        tokens.len()
    );
    let seen = std::fs::read_to_string(out_dir.join("responses.txt")).expect("responses recorded")
        + &std::fs::read_to_string(out_dir.join("storage.json")).expect("storage recorded");
    let logs = w.proxy.logs();
    for t in &tokens {
        assert!(!seen.contains(t.as_str()), "the page saw an access token");
        assert!(
            !logs.contains(t.as_str()),
            "a log line holds an access token"
        );
    }
    let (codes, refreshes) = w.op.grant_counts().await;
    assert_eq!(codes, 1, "one login");
    assert!(refreshes >= 1, "silent refresh happened");
}
