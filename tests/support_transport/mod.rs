//! Harness for the transport end-to-end tests (issue 3): a scriptable plain/TLS origin, a test PKI
//! and a TLS nginx, tinyproxy, a listener whose accept queue is full, the daemon's
//! `download.resourceClients.http` block, and the checks every failure case shares.
//!
//! Invariant: every process, thread or socket a test starts through this module is stopped or
//! closed by a `Drop` impl; a missing external tool is installed with apt-get (once per run), and
//! when that is impossible the test fails loudly naming the package — it never silently skips.

#![allow(dead_code)]

pub mod env_daemon;
pub mod script_origin;
pub mod tinyproxy;
pub mod tls_site;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{assert_file_is, content, dir_entries, stderr_of, Daemon, DaemonOpts, TestOrigin, PIECE};

pub use env_daemon::EnvDaemon;
#[allow(unused_imports)]
pub use script_origin::{Ctx, Next, Req, ScriptOrigin};
pub use tinyproxy::Tinyproxy;
pub use tls_site::{TestPki, TlsNginx};

/// The daemon's `download.resourceClients.http` block with `keys` (YAML scalars, written as
/// given: quote paths and URLs yourself when they need it).
pub fn http_transport_yaml(keys: &[(&str, String)]) -> String {
    let mut yaml = String::from("download:\n  resourceClients:\n    http:\n");
    if keys.is_empty() {
        yaml.push_str("      {}\n");
    }
    for (k, v) in keys {
        yaml.push_str(&format!("      {k}: {v}\n"));
    }
    yaml
}

/// A daemon (2 cores) whose http(s) transport has `keys`.
pub fn daemon_with(keys: &[(&str, String)]) -> Daemon {
    Daemon::start(DaemonOpts { extra_yaml: http_transport_yaml(keys), ..DaemonOpts::default() })
}

/// Same, with debug logs (retried errors are logged at debug level only).
pub fn daemon_with_debug_log(keys: &[(&str, String)]) -> Daemon {
    Daemon::start(DaemonOpts {
        extra_yaml: http_transport_yaml(keys),
        log_level: Some("debug".into()),
        ..DaemonOpts::default()
    })
}

/// A path as a single-quoted YAML scalar.
pub fn yaml_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

pub fn out_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("dfget-out-").tempdir().expect("out dir")
}

/// `dfget -u URL -O OUT` through `daemon`.
pub fn download(daemon: &Daemon, url: &str, out: &Path) -> Output {
    daemon.dfget(&["-u", url, "-O", out.to_str().expect("UTF-8 temp path")])
}

/// Downloads `url` into `dir/name` and checks the file holds exactly `expected`.
pub fn download_exact(daemon: &Daemon, url: &str, dir: &Path, name: &str, expected: &[u8]) -> PathBuf {
    let out = dir.join(name);
    let result = download(daemon, url, &out);
    assert!(
        result.status.success(),
        "{url} -> {name}: dfget failed ({})\nstderr: {}\n{}",
        result.status,
        stderr_of(&result),
        daemon.diagnostics()
    );
    assert_file_is(&out, expected);
    out
}

/// Downloads `url` into an empty dir and checks the failure contract: non-zero exit, exactly one
/// line on stderr, no output file and nothing else left in the output dir. Returns that line.
pub fn assert_download_fails(daemon: &Daemon, url: &str) -> String {
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = download(daemon, url, &out);
    let stderr = stderr_of(&result);
    assert!(
        !result.status.success(),
        "{url}: dfget succeeded but must fail\nstderr: {stderr}\n{}",
        daemon.diagnostics()
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{url}: want a one-line reason on stderr, got {stderr:?}");
    assert!(!out.exists(), "{url}: failed download left its output file");
    let left = dir_entries(dir.path());
    assert!(left.is_empty(), "{url}: failed download left files in the output dir: {left:?}");
    // Shown with --nocapture: the reasons are what a user reads.
    eprintln!("{url}: {}", lines[0]);
    lines[0].to_string()
}

/// Asserts `haystack` contains `needle` (case-insensitively), showing both on failure.
pub fn assert_mentions(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase()),
        "{what}: expected the message to mention {needle:?}, got: {haystack}"
    );
}

/// After a failure: the daemon still answers `/healthy` and serves a fresh two-piece download.
pub fn assert_still_serves(daemon: &Daemon) {
    assert!(daemon.is_healthy(), "daemon unhealthy after a failed download\n{}", daemon.diagnostics());
    let origin = TestOrigin::start();
    let body = content(PIECE + 4099, 0x5EED);
    origin.add("/after-failure.bin", body.clone());
    let dir = out_dir();
    download_exact(daemon, &origin.url("/after-failure.bin"), dir.path(), "after.bin", &body);
}

/// The binary `name`, installed with apt-get (trying `packages` in order) when it is missing.
pub fn ensure_tool(name: &str, packages: &[&str]) -> PathBuf {
    // One install at a time: parallel tests would fight over the dpkg lock.
    static INSTALL: Mutex<bool> = Mutex::new(false);
    if let Some(found) = find_binary(name) {
        return found;
    }
    let mut updated = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = find_binary(name) {
        return found;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "`{name}` is missing and this is not root: run `apt-get install -y {}`", packages[0]);
    if !*updated {
        apt(&["update"]);
        *updated = true;
    }
    for package in packages {
        if apt(&["install", "-y", "--no-install-recommends", package]) {
            break;
        }
    }
    find_binary(name).unwrap_or_else(|| {
        panic!("`{name}` is required and `apt-get install {}` did not provide it (see output above)", packages[0])
    })
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn apt(args: &[&str]) -> bool {
    eprintln!("harness: apt-get {}", args.join(" "));
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A 127.0.0.1 listener that never accepts and whose accept queue is full, so a new connect gets
/// no SYN-ACK and hangs (Linux drops a SYN while the accept queue is full).
pub struct FullBacklog {
    listener: TcpListener,
    /// Connections sitting in the accept queue; kept open so the queue stays full.
    queued: Vec<TcpStream>,
}

impl FullBacklog {
    /// `None` when the kernel kept completing connects (the queue never filled), so the caller
    /// can skip with a reason instead of failing on a kernel behaviour.
    pub fn start() -> Option<FullBacklog> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // Re-listening on a listening socket only changes its backlog: 0 means one queued
        // connection fills it.
        rustix::net::listen(&listener, 0).expect("listen(0)");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => return Some(FullBacklog { listener, queued }),
            }
        }
        None
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("addr")
    }
}
