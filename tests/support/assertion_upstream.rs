//! An upstream app that verifies portcullis's identity assertion itself, with the `jose` npm
//! library against the published JWKS (`tests/fixtures/op/assertion-upstream.mjs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::repo_root;

pub struct AssertionUpstream {
    pub port: u16,
    child: Child,
    // Held open: the script exits when its stdin closes.
    _stdin: ChildStdin,
}

impl AssertionUpstream {
    /// `jwks_url`: portcullis's admin `/.well-known/jwks.json`; `issuer`: its public origin.
    pub fn start(jwks_url: &str, issuer: &str) -> AssertionUpstream {
        let mut child = Command::new("node")
            .arg("assertion-upstream.mjs")
            .current_dir(repo_root().join("tests/fixtures/op"))
            .env("JWKS_URL", jwks_url)
            .env("ISSUER", issuer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the assertion upstream");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("UPSTREAM_READY ") {
                    let _ = tx.send(port.parse::<u16>().ok());
                }
            }
        });
        let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the assertion upstream did not print UPSTREAM_READY within 30 s");
        };
        AssertionUpstream {
            port,
            child,
            _stdin: stdin,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for AssertionUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
