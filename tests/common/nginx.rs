//! A throwaway nginx serving a directory on 127.0.0.1:PORT with its own prefix, config and
//! access log (which records the connection serial and Range of every request).
//!
//! Invariant: an `Nginx` value exists only once that nginx answered an HTTP request on its
//! port; dropping it always stops the process. A missing nginx is installed with apt, and if
//! that is impossible the test fails loudly — it never skips.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, poll_until, terminate};

const START_LIMIT: Duration = Duration::from_secs(10);
const BIND_ATTEMPTS: usize = 5;
/// Path of the readiness probe; left out of `access_log_entries`.
const READY_PATH: &str = "/__harness_ready";

/// One access-log line: `$connection $request_method $uri "$http_range" $status $body_bytes_sent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    /// nginx's connection serial number: equal values = same TCP connection.
    pub connection: u64,
    pub method: String,
    pub uri: String,
    pub range: Option<String>,
    pub status: u16,
    pub body_bytes_sent: u64,
}

pub struct Nginx {
    prefix: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Serves `root` (files under `root/slow/` are rate-limited to 40 MB/s per request, so a
    /// multi-piece download from there takes long enough to show parallel connections).
    pub fn start(root: &Path) -> Nginx {
        let binary = nginx_binary();
        let prefix = tempfile::Builder::new().prefix("dfget-nginx-").tempdir().expect("temp dir");
        for dir in ["logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(prefix.path().join(dir)).expect("nginx prefix dirs");
        }
        let mut last_error = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let conf = prefix.path().join("nginx.conf");
            fs::write(&conf, nginx_conf(prefix.path(), root, port)).expect("write nginx.conf");
            let mut child = spawn(&binary, prefix.path(), &conf);
            match wait_ready(&mut child, port, prefix.path()) {
                Ok(()) => return Nginx { prefix, port, child: Some(child) },
                // Most likely the port was taken between free_port() and nginx's bind.
                Err(e) => {
                    terminate(&mut child, Duration::from_secs(3));
                    last_error = e;
                }
            }
        }
        panic!("nginx did not start after {BIND_ATTEMPTS} attempts: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }

    /// The parsed access log (nginx writes a line when a request completes).
    pub fn access_log_entries(&self) -> Vec<AccessEntry> {
        let text = fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default();
        text.lines().filter_map(parse_access_line).filter(|e| e.uri != READY_PATH).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

fn wait_ready(child: &mut Child, port: u16, prefix: &Path) -> Result<(), String> {
    let error_log = || fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
    let mut exited = None;
    let ready = poll_until(START_LIMIT, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        answers_as_nginx(port)
    });
    match (exited, ready) {
        (Some(status), _) => Err(format!("nginx exited ({status}): {}", error_log())),
        (None, true) => Ok(()),
        (None, false) => Err(format!("nginx not answering on {port}: {}", error_log())),
    }
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

fn nginx_conf(prefix: &Path, root: &Path, port: u16) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/logs/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format dfget '$connection $request_method $uri "$http_range" $status $body_bytes_sent';
    access_log {p}/logs/access.log dfget;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        location /slow/ {{ limit_rate 40m; }}
    }}
}}
"#,
        root = root.display()
    )
}

/// True once something on `port` answers HTTP with `Server: nginx`.
fn answers_as_nginx(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {READY_PATH} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).to_ascii_lowercase();
    reply.starts_with("http/1.") && reply.contains("server: nginx")
}

fn parse_access_line(line: &str) -> Option<AccessEntry> {
    // `CONN METHOD URI "RANGE" STATUS BYTES`; the range is quoted and may contain spaces.
    let (before, rest) = line.split_once(" \"")?;
    let (range, after) = rest.rsplit_once("\" ")?;
    let mut head = before.splitn(3, ' ');
    let connection = head.next()?.parse().ok()?;
    let method = head.next()?.to_string();
    let uri = head.next()?.to_string();
    let mut tail = after.split(' ');
    let status = tail.next()?.parse().ok()?;
    let body_bytes_sent = tail.next()?.parse().ok()?;
    let range = (range != "-" && !range.is_empty()).then(|| range.to_string());
    Some(AccessEntry { connection, method, uri, range, status, body_bytes_sent })
}

/// The nginx binary, installed with apt-get when missing (CI runs as root on Debian).
fn nginx_binary() -> PathBuf {
    if let Some(found) = find_nginx() {
        return found;
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(install_nginx);
    find_nginx().unwrap_or_else(|| {
        panic!(
            "nginx is required by this test and is not installed; installing it with apt-get \
             failed (see messages above). Install it with `apt-get install -y nginx-light` \
             (or `nginx`) and re-run."
        )
    })
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| candidate.is_file())
}

fn install_nginx() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("nginx missing and not running as root: cannot apt-get install it");
        return;
    }
    let apt = |args: &[&str]| -> bool {
        eprintln!("harness: apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or_else(|e| {
                eprintln!("harness: cannot run apt-get: {e}");
                false
            })
    };
    if !apt(&["update"]) {
        eprintln!("harness: apt-get update failed");
    }
    if !apt(&["install", "-y", "--no-install-recommends", "nginx-light"]) {
        apt(&["install", "-y", "--no-install-recommends", "nginx"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<AccessEntry>) {
        assert_eq!(parse_access_line(line), expected, "line {line:?}");
    }

    #[test]
    fn access_log_parsing() {
        let entry = |connection, range: Option<&str>, status, bytes| AccessEntry {
            connection,
            method: "GET".into(),
            uri: "/a b".into(),
            range: range.map(str::to_string),
            status,
            body_bytes_sent: bytes,
        };
        check(r#"7 GET /a b "bytes=0-9" 206 10"#, Some(entry(7, Some("bytes=0-9"), 206, 10)));
        check(r#"8 GET /a b "-" 200 5"#, Some(entry(8, None, 200, 5)));
        check("garbage", None);
    }
}
