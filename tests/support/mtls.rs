//! A throwaway PKI for mutual TLS to the OP fixture, made with the `openssl` command: a CA, a
//! server certificate for the OP's loopback address, and client certificates by common name.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA and a server certificate for `server_ip`.
    pub fn new(server_ip: &str) -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let dir = pki.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=portcullis-test-ca",
            ],
        );
        pki.issue(
            "server",
            &format!("/CN={server_ip}"),
            &format!("subjectAltName=IP:{server_ip}"),
        );
        pki
    }

    /// Issues `<name>.pem` and `<name>.key` for `subject` with the extension line `ext`.
    fn issue(&self, name: &str, subject: &str, ext: &str) {
        let dir = self.dir.path();
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).expect("write ext");
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ],
        );
    }

    /// A client certificate for `cn`: its certificate and key files.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(cn, &format!("/CN={cn}"), "extendedKeyUsage=clientAuth");
        (
            self.path(&format!("{cn}.pem")),
            self.path(&format!("{cn}.key")),
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The fixture's env vars for its mutual-TLS listener.
    pub fn op_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MTLS_PORT", "0".to_string()),
            (
                "MTLS_CERT_FILE",
                self.path("server.pem").display().to_string(),
            ),
            (
                "MTLS_KEY_FILE",
                self.path("server.key").display().to_string(),
            ),
            ("MTLS_CA_FILE", self.path("ca.pem").display().to_string()),
        ]
    }
}
