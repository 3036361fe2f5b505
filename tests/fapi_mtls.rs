//! `tls_client_auth` (RFC 8705) against the OP fixture: the token, PAR and revocation calls go
//! to the OP's `mtls_endpoint_aliases` over mutual TLS with the client's certificate, and no
//! secret exists. A certificate the OP does not accept fails the login with its reason.

mod support;

use support::dpop::{introspect, RESOURCE_SERVER_SECRET};
use support::mtls::Pki;
use support::op::{Op, OpOptions};
use support::portcullis::{Portcullis, Store};
use support::upstream::Upstream;
use support::{eventually, last_bearer};

use std::time::Duration;

const SUBJECT: &str = "CN=portcullis";

struct Mtls {
    op: Op,
    proxy: Portcullis,
    _upstream: Upstream,
    pki: Pki,
    /// The certificate and key files portcullis is configured with.
    client_files: (std::path::PathBuf, std::path::PathBuf),
}

/// An OP that knows the client by `CN=portcullis` and portcullis presenting `client_cn`.
async fn start(client_cn: &str) -> Mtls {
    let pki = Pki::new("127.0.0.2");
    let (cert, key) = pki.client(client_cn);
    let upstream = Upstream::start();
    let mut proxy = Portcullis::reserve();
    let mut env = pki.op_env();
    env.extend([
        ("CLIENT_AUTH_METHOD", "tls_client_auth".to_string()),
        ("TLS_CLIENT_AUTH_SUBJECT_DN", SUBJECT.to_string()),
        ("PAR", "required".to_string()),
        ("RESOURCE_SERVER_SECRET", RESOURCE_SERVER_SECRET.to_string()),
    ]);
    let op = Op::start(OpOptions {
        app_origins: vec![proxy.origin()],
        env,
        ..OpOptions::default()
    });
    let config = proxy.config(&op.issuer, &upstream, &Store::Memory, "");
    let secret_line = config
        .lines()
        .find(|l| l.trim_start().starts_with("client_secret_file:"))
        .expect("the standard config names a secret file")
        .to_string();
    let oidc = format!(
        "  token_endpoint_auth_method: tls_client_auth\n  client_certificate_file: \"{}\"\n  client_certificate_key_file: \"{}\"\n  tls_ca_file: \"{}\"\n  pushed_authorization_requests: required\n",
        cert.display(),
        key.display(),
        pki.path("ca.pem").display()
    );
    proxy
        .start(&config.replace(&format!("{secret_line}\n"), &oidc))
        .await;
    Mtls {
        op,
        proxy,
        _upstream: upstream,
        pki,
        client_files: (cert, key),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_authenticates_par_token_and_revocation() {
    let w = start("portcullis").await;
    let mut b = support::browser::Browser::new(&w.proxy.origin());
    let auth = b.start_login("/").await;
    assert!(
        auth.query_pairs().any(|(k, _)| k == "request_uri"),
        "pushed over mutual TLS: {auth}"
    );
    let callback = b.authorize_at_op(auth, "alice").await;
    assert_eq!(b.get(&callback, &[]).await.status, 200);
    assert_eq!(b.api("/api/orders").await.status, 200);
    let token = last_bearer(&w._upstream);
    assert_eq!(introspect(&w.op.issuer, &token).await["active"], true);

    b.logout().await;
    eventually(
        "the OP to accept a revocation over mutual TLS",
        Duration::from_secs(20),
        || async { (!w.op.revocations().await.is_empty()).then_some(()) },
    )
    .await;

    // Rotation: the files now hold a certificate the OP does not know, and the next call
    // presents it without a restart.
    let (other_cert, other_key) = w.pki.client("someone-else");
    std::fs::copy(other_cert, &w.client_files.0).expect("rotate the certificate");
    std::fs::copy(other_key, &w.client_files.1).expect("rotate the key");
    assert_eq!(
        login_page(&mut b).await,
        502,
        "the rotated certificate is in use"
    );
}

/// `/bff/login` as a browser navigation; its status.
async fn login_page(b: &mut support::browser::Browser) -> u16 {
    let navigation = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    b.get("/bff/login?returnTo=/", &navigation).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_subject_fails_the_login_with_its_reason() {
    let w = start("someone-else").await;
    let mut b = support::browser::Browser::new(&w.proxy.origin());
    // The OP refuses the pushed request already: the login answers 502 and logs why.
    assert_eq!(login_page(&mut b).await, 502);
    let logs = w.proxy.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("par_rejected") && l.contains("invalid_client")),
        "{logs}"
    );
}
