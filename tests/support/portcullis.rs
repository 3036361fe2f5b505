//! The portcullis binary as a child process with a generated config, its logs kept in a file
//! so tests can scan them for secrets.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::op::{CLIENT_ID, CLIENT_SECRET};
use super::upstream::Upstream;
use super::{eventually, free_port};

#[derive(Clone)]
pub enum Store {
    Memory,
    Redis(String),
}

pub struct Portcullis {
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    restarts: usize,
    /// `RUST_LOG` for the process: `info` unless a test wants every event; empty leaves it
    /// unset, so the configured `log.level` decides.
    pub rust_log: &'static str,
    /// The configuration file to serve with, when not `config_path`'s plain file (a ConfigMap
    /// layout, say).
    config_file: Option<PathBuf>,
}

impl Portcullis {
    /// Reserves the ports now, so the OP can be told the callback URL before either starts.
    pub fn reserve() -> Portcullis {
        Portcullis {
            port: free_port(),
            admin_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            restarts: 0,
            rust_log: "info",
            config_file: None,
        }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The standard test configuration: `/api/` (api), `/public/` (public), `/` (page), all to
    /// the recording upstream. `extra` is appended at the top level.
    pub fn config(&self, issuer: &str, upstream: &Upstream, store: &Store, extra: &str) -> String {
        let secret_file = self.dir.path().join("client-secret");
        std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("write secret");
        let store = match store {
            Store::Memory => "  store: memory\n".to_string(),
            Store::Redis(url) => format!("  store: redis\n  redis_url: \"{url}\"\n"),
        };
        format!(
            "listen: \"127.0.0.1:{port}\"\nadmin_listen: \"127.0.0.1:{admin}\"\npublic_url: \"{origin}\"\n\
             oidc:\n  issuer: \"{issuer}\"\n  client_id: \"{CLIENT_ID}\"\n  client_secret_file: \"{secret}\"\n\
             session:\n{store}\
             routes:\n  - {{ path: \"/api/\", upstream: \"{up}\", kind: api }}\n  - {{ path: \"/public/\", upstream: \"{up}\", kind: public }}\n  - {{ path: \"/\", upstream: \"{up}\", kind: page }}\n\
             log:\n  level: \"info\"\n{extra}",
            port = self.port,
            admin = self.admin_port,
            origin = self.origin(),
            secret = secret_file.display(),
            up = upstream.url(),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_file
            .clone()
            .unwrap_or_else(|| self.dir.path().join("portcullis.yaml"))
    }

    /// Starts serving the configuration at `path` as it is (a test that edits it later).
    pub async fn start_with_file(&mut self, path: PathBuf) {
        self.config_file = Some(path);
        self.spawn();
        self.wait_ready().await;
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIG{signal} delivered");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("portcullis.{}.log", self.restarts))
    }

    pub async fn start(&mut self, config: &str) {
        std::fs::write(self.config_path(), config).expect("write config");
        self.spawn();
        self.wait_ready().await;
    }

    /// Starts with `config` and waits for the process to exit on its own; returns its exit
    /// code and what it wrote to stderr.
    pub async fn start_expecting_exit(&mut self, config: &str) -> (Option<i32>, String) {
        std::fs::write(self.config_path(), config).expect("write config");
        self.spawn();
        let child = self.child.as_mut().expect("spawned");
        let status = eventually("portcullis to exit", Duration::from_secs(30), || {
            let status = child.try_wait().expect("wait on portcullis");
            async move { status }
        })
        .await;
        self.child = None;
        (status.code(), self.logs())
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.arg("serve").arg("--config").arg(self.config_path());
        if self.rust_log.is_empty() {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", self.rust_log);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("portcullis starts");
        self.child = Some(child);
    }

    pub async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        let client = reqwest::Client::new();
        eventually(
            "portcullis /readyz to answer 200",
            Duration::from_secs(30),
            || {
                let req = client.get(&url).send();
                async move { req.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
            },
        )
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM, as Kubernetes does before it kills a pod.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Waits for the process to exit; returns its exit code and how long that took.
    pub async fn wait_exit(&mut self, deadline: Duration) -> (Option<i32>, Duration) {
        let started = std::time::Instant::now();
        let mut child = self.child.take().expect("running");
        let code = eventually("portcullis to exit", deadline, || {
            let exited = child.try_wait().expect("try_wait");
            async move { exited.map(|s| s.code()) }
        })
        .await;
        (code, started.elapsed())
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.restarts += 1;
        self.spawn();
        self.wait_ready().await;
    }

    /// Everything every run of this instance has logged so far.
    pub fn logs(&self) -> String {
        (0..=self.restarts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("portcullis.{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(self.admin_url(path))
            .await
            .expect("admin answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        self.stop();
    }
}
