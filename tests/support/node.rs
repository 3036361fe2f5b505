//! Node programs the tests run beside portcullis (the demo app, the assertion-verifying app):
//! started with a piped stdin so they exit with the test, ready once they print their line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A node program listening on a loopback port it printed as `<ready> <port>`; killed on drop.
pub struct NodeServer {
    pub port: u16,
    child: Child,
    // Held open: a script that watches stdin exits when the test process goes.
    _stdin: ChildStdin,
}

impl NodeServer {
    /// Runs `node script` in `dir` with `env`, waiting at most 30 s for `<ready> <port>`.
    pub fn start(dir: &Path, script: &str, env: &[(&str, String)], ready: &str) -> NodeServer {
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("node runs {script}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let prefix = format!("{ready} ");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix(&prefix) {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("{script} did not print {ready} within 30 s");
        };
        NodeServer {
            port,
            child,
            _stdin: stdin,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo SPA + API (`deploy/demo/upstream.mjs`), which the browser scenarios click through.
pub fn demo_upstream() -> NodeServer {
    let demo = super::repo_root().join("deploy/demo");
    NodeServer::start(
        &demo,
        "upstream.mjs",
        &[("PORT", "0".to_string())],
        "UPSTREAM_READY",
    )
}
