//! A throwaway test PKI (a CA and a server certificate for 127.0.0.1 and localhost, made with the
//! `openssl` CLI) and an nginx serving one directory over plain HTTP and TLS on 127.0.0.1.
//!
//! The nginx itself is the shared harness one (`common::nginx`) with a TLS `server { }` block.
//!
//! Invariant: a `TlsNginx` exists only once its plain port answered HTTP as nginx and its TLS
//! port accepts connections; dropping it always stops the process. The CA never signs anything
//! but the one server certificate, and its key lives only in the test's temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::common::nginx::{Nginx, NginxSite};
use crate::common::{ensure_tool, temp_dir};

/// PEM files in their own temp dir.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// A CA and a leaf for `IP:127.0.0.1, DNS:localhost` signed by it (P-256 keys: fast to make).
    pub fn generate() -> TestPki {
        let dir = temp_dir("dfget-pki-");
        let d = dir.path();
        openssl(d, "ecparam -name prime256v1 -genkey -noout -out ca.key");
        openssl(
            d,
            "req -x509 -new -key ca.key -out ca.pem -days 3 -subj /CN=dfget-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        );
        openssl(d, "ecparam -name prime256v1 -genkey -noout -out server.key");
        openssl(d, "req -new -key server.key -out server.csr -subj /CN=localhost");
        fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 3 \
             -extfile server.ext",
        );
        TestPki { dir }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key_pem(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// Runs `openssl ARGS` in `dir`; `args` is split on whitespace (no argument holds a space).
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let binary = ensure_tool("openssl", &["openssl"]);
    let out = Command::new(&binary)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e}"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// nginx with `root` on a plain port and a TLS port (certificate from `pki`).
pub struct TlsNginx {
    nginx: Nginx,
}

impl TlsNginx {
    pub fn start(root: &Path, pki: &TestPki) -> TlsNginx {
        let server = |ports: &[u16]| {
            format!(
                r#"    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
"#,
                http_port = ports[0],
                https_port = ports[1],
                cert = pki.cert_pem().display(),
                key = pki.key_pem().display(),
                root = root.display()
            )
        };
        let site = NginxSite {
            log_format: r#"$request_method $request_uri $server_port "$http_range" $status"#,
            n_ports: 2,
            http_tail: &server,
        };
        TlsNginx { nginx: Nginx::start_site(&site) }
    }

    pub fn http_port(&self) -> u16 {
        self.nginx.ports()[0]
    }

    pub fn https_port(&self) -> u16 {
        self.nginx.ports()[1]
    }

    /// `https://127.0.0.1:TLS_PORT{path}`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port())
    }

    /// `https://localhost:TLS_PORT{path}` (the certificate's DNS name).
    pub fn https_localhost_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port())
    }

    /// `http://127.0.0.1:PLAIN_PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        self.nginx.url(path)
    }

    /// Access log lines (`$request_method $request_uri $server_port "$http_range" $status`).
    pub fn access_log(&self) -> String {
        self.nginx.access_log()
    }

    pub fn error_log(&self) -> String {
        self.nginx.error_log()
    }
}
