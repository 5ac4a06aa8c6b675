//! A throwaway test PKI (a CA and a server certificate for 127.0.0.1 and localhost, made with the
//! `openssl` CLI) and an nginx serving one directory over plain HTTP and TLS on 127.0.0.1.
//!
//! Invariant: a `TlsNginx` exists only once both its ports answered (the TLS one with a completed
//! handshake as nginx); dropping it always stops the process. The CA never signs anything but
//! the one server certificate, and its key lives only in the test's temp dir.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::ensure_tool;
use crate::common::{free_port, poll_until, terminate};

const START_LIMIT: Duration = Duration::from_secs(10);
const BIND_ATTEMPTS: usize = 5;

/// PEM files in their own temp dir.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// A CA and a leaf for `IP:127.0.0.1, DNS:localhost` signed by it (P-256 keys: fast to make).
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new().prefix("dfget-pki-").tempdir().expect("pki dir");
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
    prefix: TempDir,
    http_port: u16,
    https_port: u16,
    child: Option<Child>,
}

impl TlsNginx {
    pub fn start(root: &Path, pki: &TestPki) -> TlsNginx {
        let binary = ensure_tool("nginx", &["nginx-light", "nginx"]);
        let prefix = tempfile::Builder::new().prefix("dfget-nginx-tls-").tempdir().expect("nginx prefix");
        for dir in ["logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(prefix.path().join(dir)).expect("nginx prefix dirs");
        }
        let mut last_error = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let (http_port, https_port) = (free_port(), free_port());
            if http_port == https_port {
                continue;
            }
            let conf = prefix.path().join("nginx.conf");
            fs::write(&conf, nginx_conf(prefix.path(), root, pki, http_port, https_port)).expect("nginx.conf");
            let mut child = spawn(&binary, prefix.path(), &conf);
            match wait_ready(&mut child, http_port, https_port, prefix.path()) {
                Ok(()) => return TlsNginx { prefix, http_port, https_port, child: Some(child) },
                // Most likely a port was taken between free_port() and nginx's bind.
                Err(e) => {
                    terminate(&mut child, Duration::from_secs(3));
                    last_error = e;
                }
            }
        }
        panic!("nginx (TLS) did not start after {BIND_ATTEMPTS} attempts: {last_error}");
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// `https://127.0.0.1:TLS_PORT{path}`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https_port)
    }

    /// `https://localhost:TLS_PORT{path}` (the certificate's DNS name).
    pub fn https_localhost_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    /// `http://127.0.0.1:PLAIN_PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Access log lines (`$request_method $request_uri $server_port "$http_range" $status`).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

fn nginx_conf(prefix: &Path, root: &Path, pki: &TestPki, http_port: u16, https_port: u16) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/logs/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format t '$request_method $request_uri $server_port "$http_range" $status';
    access_log {p}/logs/access.log t;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"#,
        cert = pki.cert_pem().display(),
        key = pki.key_pem().display(),
        root = root.display()
    )
}

fn spawn(binary: &Path, prefix: &Path, conf: &Path) -> Child {
    let log = |name: &str| fs::File::create(prefix.join("logs").join(name)).expect("nginx log");
    Command::new(binary)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .stdin(Stdio::null())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

fn wait_ready(child: &mut Child, http_port: u16, https_port: u16, prefix: &Path) -> Result<(), String> {
    let error_log = || fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
    let mut exited = None;
    let ready = poll_until(START_LIMIT, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        answers_as_nginx(http_port) && accepts_tcp(https_port)
    });
    match (exited, ready) {
        (Some(status), _) => Err(format!("nginx exited ({status}): {}", error_log())),
        (None, true) => Ok(()),
        (None, false) => Err(format!("nginx not answering on {http_port}/{https_port}: {}", error_log())),
    }
}

fn accepts_tcp(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn answers_as_nginx(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /__ready HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
    reply.starts_with("http/1.") && reply.contains("server: nginx")
}
