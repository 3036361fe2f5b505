//! A real nginx (Debian's, with `auth_request` and the ndk + set-misc modules ingress-nginx
//! also loads) configured the way ingress-nginx configures itself for `auth-url`,
//! `auth-signin` and `auth-response-headers`, in front of portcullis's ingress auth endpoint.
//! The configuration is `deploy/demo/ingress-nginx/*.conf.in` (shared with `make
//! demo-ingress`; what it mirrors of ingress-nginx's nginx.tmpl is written there). One nginx
//! process (`master_process off`, `daemon off`) in a prefix directory of its own, listening on
//! a free loopback port, stopped when the handle drops.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually_blocking, free_port, repo_root};

/// The two hosts of the tests, under one parent domain. Chromium resolves `*.localhost` to
/// loopback and treats `http://*.localhost` as a secure context.
pub const APP_HOST: &str = "app.example.localhost";
pub const OTHER_HOST: &str = "other.example.localhost";
pub const PARENT_DOMAIN: &str = "example.localhost";

/// Where Debian's libnginx-mod-http-ndk and libnginx-mod-http-set-misc put their modules.
pub const MODULES_DIR: &str = "/usr/lib/nginx/modules";

/// Where nginx sends one host's traffic; every address is `host:port` on loopback.
pub struct Upstreams {
    /// portcullis's `listen` (the BFF endpoints under /bff/).
    pub bff: String,
    /// The application's "/" (pages, and everything not under /api/ or /bff/).
    pub page: String,
    /// The application's "/api/".
    pub api: String,
}

/// A ConfigMap `http-snippet` + `server-snippet` pair that refuses a request whose `Host`
/// header names another host than its request line (absolute-form targets), so that
/// X-Original-URL, built from `$http_host`, describes the server block nginx really chose.
pub const HOST_CHECK_HTTP_SNIPPET: &str = r#"    map "$host $http_host" $host_differs {
        "~*^(?<h>[^ ]+) \k<h>(:[0-9]+)?$" 0;
        default 1;
    }"#;
pub const HOST_CHECK_SERVER_SNIPPET: &str = r#"    if ($host_differs) {
        return 400;
    }"#;

pub struct IngressNginx {
    pub port: u16,
    /// The ConfigMap's `http-snippet` and `server-snippet` (empty: none).
    pub http_snippet: String,
    pub server_snippet: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl IngressNginx {
    /// Reserves the port now: portcullis's public_url and the OP's redirect URIs name it.
    pub fn reserve() -> IngressNginx {
        IngressNginx {
            port: free_port(),
            http_snippet: String::new(),
            server_snippet: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }

    /// `http://<host>:<port>`, the origin the browser sees for `host`.
    pub fn origin(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// Writes the configuration (`auth`: portcullis's `ingress_auth.listen`; a server block
    /// per host) and starts nginx; returns once it accepts connections. Panics with nginx's own
    /// error log when it does not start.
    pub fn start(&mut self, auth: &str, hosts: &[(&str, &Upstreams)]) {
        for module in ["ndk_http_module.so", "ngx_http_set_misc_module.so"] {
            assert!(
                Path::new(MODULES_DIR).join(module).exists(),
                "{MODULES_DIR}/{module} is missing: install nginx-light, libnginx-mod-http-ndk \
                 and libnginx-mod-http-set-misc (`make test-deps` does)"
            );
        }
        let prefix = self.dir.path();
        let config = render_main(prefix, self.port, auth, &self.http_snippet);
        std::fs::write(self.config_path(), config).expect("write nginx.conf");
        let servers = prefix.join("servers");
        std::fs::create_dir_all(&servers).expect("servers dir");
        for (host, up) in hosts {
            std::fs::write(
                servers.join(format!("{host}.conf")),
                render_server(host, self.port, up, &self.server_snippet),
            )
            .expect("write server conf");
        }
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(self.config_path())
            .arg("-e")
            .arg(self.error_log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx runs (make test-deps installs nginx-light)");
        self.child = Some(child);
        let port = self.port;
        let child = self.child.as_mut().expect("spawned");
        let error_log = prefix.join("error.log");
        eventually_blocking(
            "nginx to accept connections",
            Duration::from_secs(20),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "nginx exited ({status}) at start:\n{}",
                        std::fs::read_to_string(&error_log).unwrap_or_default()
                    );
                }
                TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
            },
        );
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// nginx's error log so far (it names every auth subrequest that answered something other
    /// than 2xx/401/403 as "auth request unexpected status").
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// One line per request and subrequest: `addr "host" "request line" "normalised path" status
    /// upstream_status "upstream_addr"`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for IngressNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_binary() -> PathBuf {
    std::env::var_os("NGINX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

fn template(name: &str) -> String {
    let path = repo_root().join("deploy/demo/ingress-nginx").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn render_main(prefix: &Path, port: u16, auth: &str, snippet: &str) -> String {
    let out = template("nginx.conf.in")
        .replace("@@HTTP_SNIPPET@@", snippet)
        .replace("@@PREFIX@@", &prefix.display().to_string())
        .replace("@@MODULES@@", MODULES_DIR)
        .replace("@@PORT@@", &port.to_string())
        .replace("@@AUTH@@", auth);
    assert!(!out.contains("@@"), "a placeholder is left in nginx.conf");
    out
}

fn render_server(host: &str, port: u16, up: &Upstreams, snippet: &str) -> String {
    let out = template("server.conf.in")
        .replace("@@SERVER_SNIPPET@@", snippet)
        .replace("@@HOST@@", host)
        .replace("@@PORT@@", &port.to_string())
        .replace("@@BFF@@", &up.bff)
        .replace("@@PAGE@@", &up.page)
        .replace("@@API@@", &up.api);
    assert!(!out.contains("@@"), "a placeholder is left in {host}.conf");
    out
}
