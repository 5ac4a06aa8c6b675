//! Certificates the TLS tests make with `openssl`: a self-signed server certificate, or a private
//! test CA and a server certificate it signed, each for the IP addresses the registry listens on.
//! EC P-256 keys: quick to make, and accepted by Go's TLS server and by rustls.
//!
//! Invariant: every file lives in the `TestCerts` temp dir, which is removed on drop; nothing is
//! ever added to the system's trust store.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::common::temp_dir;

pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// A self-signed server certificate (`server.pem`, `server.key`) for `ips`, not a CA: what
    /// `openssl req -x509` users make for a registry.
    pub fn self_signed(ips: &[&str]) -> TestCerts {
        let certs = TestCerts { dir: temp_dir("oras-certs-") };
        let san = format!("subjectAltName={}", san_list(ips));
        certs.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dfget-e2e-self-signed",
            "-addext",
            &san,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
        ]);
        certs
    }

    /// A test CA (`ca.pem`) and a server certificate it signed for `ips`.
    pub fn private_ca(ips: &[&str]) -> TestCerts {
        let certs = TestCerts { dir: temp_dir("oras-certs-") };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        certs.openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=dfget-e2e-test-ca", "-keyout", "ca.key", "-out", "ca.pem"],
                &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        let csr = ["-subj", "/CN=dfget-e2e-registry", "-keyout", "server.key", "-out", "server.csr"];
        certs.openssl(&[&["req"][..], &ec, &csr].concat());
        let ext = format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            san_list(ips)
        );
        std::fs::write(certs.dir.path().join("server.ext"), ext).expect("write server.ext");
        certs.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        certs
    }

    /// `(certificate, key)` for the registry's `http.tls`.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("server.pem"), self.dir.path().join("server.key"))
    }

    /// The CA certificate (the server certificate itself when it is self-signed).
    pub fn ca(&self) -> PathBuf {
        let ca = self.dir.path().join("ca.pem");
        if ca.is_file() {
            ca
        } else {
            self.dir.path().join("server.pem")
        }
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn san_list(ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("IP:{ip}")).collect::<Vec<_>>().join(",")
}
