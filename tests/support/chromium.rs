//! Runs a Chromium scenario (`tests/e2e/<script>`, playwright-core driving Debian's chromium)
//! with a fresh profile, bounded by `timeout`, off the test's runtime.

use std::process::Command;

use super::repo_root;

pub struct ScenarioRun {
    pub passed: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `env`: the scenario's inputs; `USER_DATA_DIR` (a fresh profile) is added.
pub async fn run_scenario(script: &str, env: Vec<(&'static str, String)>) -> ScenarioRun {
    let e2e = repo_root().join("tests/e2e");
    assert!(
        e2e.join("node_modules").exists(),
        "tests/e2e/node_modules is missing: run `make test-deps`"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let script = e2e.join(script);
    let profile_path = profile.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["--kill-after=5", "100"])
            .arg("node")
            .arg(script)
            .envs(env)
            .env("USER_DATA_DIR", profile_path)
            .output()
            .expect("node runs the browser scenario")
    })
    .await
    .expect("scenario thread");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ScenarioRun {
        passed: out.status.success() && stdout.contains(" 0 failed"),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
