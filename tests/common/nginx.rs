//! A throwaway nginx with its own prefix, config and logs on fresh 127.0.0.1 ports: by default
//! serving a directory on one port with an access log that records the connection serial and
//! Range of every request; a caller may supply its own `server { }` blocks and log format
//! (`NginxSite`, e.g. a TLS site).
//!
//! Invariant: an `Nginx` value exists only once that nginx answered an HTTP request on its first
//! port (and its other ports accept TCP); dropping it always stops the process. A missing nginx
//! is installed with apt (`tools::ensure_tool`), and if that is impossible the test fails
//! loudly — it never skips.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{ensure_tool, free_port, terminate, wait_child_ready, NotReady};

const START_LIMIT: Duration = Duration::from_secs(10);
const BIND_ATTEMPTS: usize = 5;
/// Path of the readiness probe; left out of `access_log_entries`.
const READY_PATH: &str = "/__harness_ready";
/// The `log_format` `access_log_entries` parses.
const ENTRY_LOG_FORMAT: &str = r#"$connection $request_method $uri "$http_range" $status $body_bytes_sent"#;

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

/// What a site adds to the config every harness nginx shares (foreground, one worker, its own
/// prefix, pid, logs and temp paths, keep-alive for 100000 requests).
pub struct NginxSite<'a> {
    /// The `log_format` of `logs/access.log`.
    pub log_format: &'a str,
    /// How many distinct ports to pick: `ports[0]` must serve plain HTTP (the readiness probe
    /// asks it for `Server: nginx`); the others need only accept TCP.
    pub n_ports: usize,
    /// The rest of the `http { }` block (its `server { }` blocks), given the ports.
    pub http_tail: &'a dyn Fn(&[u16]) -> String,
}

pub struct Nginx {
    prefix: TempDir,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl Nginx {
    /// Serves `root` (files under `root/slow/` are rate-limited to 40 MB/s per request, so a
    /// multi-piece download from there takes long enough to show parallel connections).
    pub fn start(root: &Path) -> Nginx {
        let server = |ports: &[u16]| {
            format!(
                r#"    sendfile on;
    keepalive_timeout 65s;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        location /slow/ {{ limit_rate 40m; }}
    }}
"#,
                port = ports[0],
                root = root.display()
            )
        };
        Nginx::start_site(&NginxSite { log_format: ENTRY_LOG_FORMAT, n_ports: 1, http_tail: &server })
    }

    /// Starts nginx with `site` on fresh ports, retrying with other ports when one was taken.
    pub fn start_site(site: &NginxSite) -> Nginx {
        let binary = ensure_tool("nginx", &["nginx-light", "nginx"]);
        let prefix = super::temp_dir("dfget-nginx-");
        for dir in ["logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(prefix.path().join(dir)).expect("nginx prefix dirs");
        }
        let mut last_error = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let ports = distinct_free_ports(site.n_ports);
            let conf = prefix.path().join("nginx.conf");
            fs::write(&conf, nginx_conf(prefix.path(), site, &ports)).expect("write nginx.conf");
            let mut child = spawn(&binary, prefix.path(), &conf);
            match wait_ready(&mut child, &ports, prefix.path()) {
                Ok(()) => return Nginx { prefix, ports, child: Some(child) },
                // Most likely a port was taken between free_port() and nginx's bind.
                Err(e) => {
                    terminate(&mut child, Duration::from_secs(3));
                    last_error = e;
                }
            }
        }
        panic!("nginx did not start after {BIND_ATTEMPTS} attempts: {last_error}");
    }

    /// The plain-HTTP port (`ports()[0]`).
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port(), path)
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("logs/error.log")).unwrap_or_default()
    }

    /// The access log as written (one line per completed request, in the site's `log_format`).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("logs/access.log")).unwrap_or_default()
    }

    /// The parsed access log of a `Nginx::start` site (nginx writes a line when a request
    /// completes).
    pub fn access_log_entries(&self) -> Vec<AccessEntry> {
        self.access_log().lines().filter_map(parse_access_line).filter(|e| e.uri != READY_PATH).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn wait_ready(child: &mut Child, ports: &[u16], prefix: &Path) -> Result<(), String> {
    let error_log = || fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
    let ready = || answers_as_nginx(ports[0]) && ports[1..].iter().all(|&port| accepts_tcp(port));
    match wait_child_ready(child, START_LIMIT, ready) {
        Ok(()) => Ok(()),
        Err(NotReady::Exited(status)) => Err(format!("nginx exited ({status}): {}", error_log())),
        Err(NotReady::TimedOut) => Err(format!("nginx not answering on {ports:?}: {}", error_log())),
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

fn nginx_conf(prefix: &Path, site: &NginxSite, ports: &[u16]) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/logs/nginx.pid;
error_log {p}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format site '{log_format}';
    access_log {p}/logs/access.log site;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
{tail}}}
"#,
        log_format = site.log_format,
        tail = (site.http_tail)(ports)
    )
}

fn accepts_tcp(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
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
