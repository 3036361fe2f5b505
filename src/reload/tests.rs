//! Which changes a reload applies live and which need a restart.

use std::path::Path;

use super::*;

const BASE: &str = r#"
listen: "127.0.0.1:4480"
public_url: "https://app.example.com"
oidc:
  issuer: "https://idp.example.com/realms/main"
  client_id: "spa"
  client_secret: "s3cret"
routes:
  - path: "/"
    upstream: "http://127.0.0.1:3000"
    kind: page
"#;

fn config(text: &str) -> Config {
    Config::from_yaml(text, Path::new("/etc/portcullis/config.yaml")).expect("valid")
}

fn edited(from: &str, to: &str) -> Config {
    assert!(BASE.contains(from), "BASE has {from:?}");
    config(&BASE.replace(from, to))
}

#[test]
fn routes_oidc_security_access_and_log_level_apply_live() {
    let running = config(BASE);
    let changes = [
        ("127.0.0.1:3000", "127.0.0.1:3001"),
        ("client_id: \"spa\"", "client_id: \"spa2\""),
        ("realms/main", "realms/other"),
        (
            "routes:",
            "log:\n  level: debug\nsecurity:\n  max_uri_bytes: 4096\naccess:\n  groups: [admins]\nserver:\n  upstream_read_timeout: 5s\nroutes:",
        ),
    ];
    for (from, to) in changes {
        assert_eq!(
            restart_required(&running, &edited(from, to)),
            Vec::<&str>::new(),
            "{to}"
        );
    }
}

#[test]
fn listeners_store_threads_and_public_url_need_a_restart() {
    let running = config(BASE);
    let cases = [
        (
            "listen: \"127.0.0.1:4480\"",
            "listen: \"127.0.0.1:4490\"",
            vec!["listen"],
        ),
        (
            "public_url: \"https://app.example.com\"",
            "public_url: \"https://other.example.com\"",
            vec!["public_url"],
        ),
        (
            "routes:",
            "session:\n  store: redis\n  redis_url: \"redis://127.0.0.1:6379\"\nroutes:",
            vec!["session.store"],
        ),
        (
            "routes:",
            "server:\n  threads: 3\nlog:\n  format: json\nroutes:",
            vec!["server.threads", "log.format"],
        ),
    ];
    for (from, to, keys) in cases {
        assert_eq!(restart_required(&running, &edited(from, to)), keys, "{to}");
    }
}

#[test]
fn a_fingerprint_follows_the_symlink_and_the_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&first, "one").expect("write");
    std::fs::write(&second, "one").expect("write");
    let link = dir.path().join("config.yaml");
    std::os::unix::fs::symlink(&first, &link).expect("symlink");
    let before = Fingerprint::of(&link);
    assert!(before.is_some());
    assert_eq!(Fingerprint::of(&link), before, "nothing changed");

    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&second, &link).expect("symlink");
    assert_ne!(Fingerprint::of(&link), before, "the link points elsewhere");

    std::fs::write(&second, "two").expect("write");
    let after = Fingerprint::of(&link);
    std::fs::write(&second, "one").expect("write");
    assert_ne!(Fingerprint::of(&link), after, "the content changed");
}
