//! End-to-end tests of the daemon's surroundings through the real binary: the polling driver path,
//! the socket's mode, the metrics endpoint, `dfget` spawning a daemon when none runs, downloading
//! straight from the origin when no daemon can be had, and `--timeout`.
//!
//! Invariant: every process a test starts is stopped by the test, including a daemon that `dfget`
//! spawned detached (found by its socket path in /proc and sent SIGTERM).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    assert_file_is, assert_success, content, out_dir, stderr_of, Daemon, DaemonOpts, Serve, TestOrigin, PIECE,
};

#[test]
fn polling_driver_downloads_exact_bytes_and_says_so_in_the_log() {
    let origin = TestOrigin::start();
    let body = content(3 * PIECE + 7, 50);
    origin.add("/poll.bin", body.clone());
    let opts = DaemonOpts { daemon_env: vec![("DFGET_DRIVER".into(), "polling".into())], ..DaemonOpts::default() };
    let daemon = Daemon::start(opts);
    let dir = out_dir();
    let out = dir.path().join("poll.bin");
    assert_success(&daemon.download(&origin.url("/poll.bin"), &out), "download on the polling driver");
    assert_file_is(&out, &body);
    let started = daemon
        .core_log_json()
        .into_iter()
        .find(|l| l["msg"] == "dfget daemon started")
        .expect("start line in core.log");
    let driver = started["driver"].as_str().unwrap_or("");
    assert!(driver.starts_with("poll"), "driver named in the log: {started}");
    assert!(driver.contains("DFGET_DRIVER"), "and why: {started}");
}

#[test]
fn io_uring_driver_is_the_default_and_logged() {
    let daemon = Daemon::start_default();
    let started = daemon.core_log_json().into_iter().find(|l| l["msg"] == "dfget daemon started").expect("start line");
    let driver = started["driver"].as_str().unwrap_or("");
    // io_uring where the kernel allows it; where it does not, the log must say why.
    assert!(driver == "io_uring" || driver.contains("io_uring unavailable"), "driver: {started}");
}

#[test]
fn api_socket_has_mode_0660() {
    let daemon = Daemon::start_default();
    let mode = std::fs::metadata(daemon.socket()).expect("socket exists").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
}

#[test]
fn metrics_endpoint_counts_downloads_and_cache_hits() {
    let port = common::free_port();
    let daemon =
        Daemon::start(DaemonOpts { extra_yaml: format!("metrics: 127.0.0.1:{port}\n"), ..DaemonOpts::default() });
    let origin = TestOrigin::start();
    let body = content(PIECE + 1, 51);
    origin.add("/m.bin", body);
    let dir = out_dir();
    for name in ["a", "b"] {
        assert_success(&daemon.download(&origin.url("/m.bin"), &dir.path().join(name)), "download");
    }
    let text = scrape(port);
    assert!(text.contains("dfget_downloads_done_total 1\n"), "{text}");
    assert!(text.contains("dfget_cache_hits_total 1\n"), "{text}");
    assert!(text.contains("dfget_pieces_fetched_total 2\n"), "{text}");
    assert!(text.contains(&format!("dfget_bytes_fetched_total {}\n", PIECE + 1)), "{text}");
}

fn scrape(port: u16) -> String {
    let mut last_err = String::new();
    for _ in 0..50 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
                let mut text = String::new();
                s.read_to_string(&mut text).expect("read metrics");
                return text;
            }
            Err(e) => last_err = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("metrics endpoint never answered: {last_err}");
}

/// A daemon `dfget` started on its own: found through /proc by the socket path in its command
/// line, and stopped when this guard drops.
struct SpawnedDaemon<'a> {
    socket: &'a Path,
}

impl SpawnedDaemon<'_> {
    fn pids(&self) -> Vec<i32> {
        let needle = self.socket.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(" daemon ") && cmd.contains(&needle)
            })
            .collect()
    }
}

impl Drop for SpawnedDaemon<'_> {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) on a daemon this test made dfget start (matched by its unique socket).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        common::poll_until(Duration::from_secs(5), || self.pids().is_empty());
    }
}

fn config_in(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("dfget.yaml");
    let yaml = format!(
        "dataDir: {d}/data\nlogDir: {d}/log\nworkHome: {d}/work\ndownload:\n  downloadGRPC:\n    unixListen:\n      socket: {d}/run/dfdaemon.sock\n",
        d = dir.display()
    );
    std::fs::write(&cfg, yaml).expect("write config");
    cfg
}

#[test]
fn dfget_spawns_a_daemon_when_none_runs_and_reuses_it() {
    let home = common::temp_dir("dfget-spawn-");
    let cfg = config_in(home.path());
    let socket = home.path().join("run/dfdaemon.sock");
    let guard = SpawnedDaemon { socket: &socket };
    let origin = TestOrigin::start();
    let body = content(2 * PIECE + 3, 52);
    origin.add("/s.bin", body.clone());
    let dir = out_dir();
    for name in ["first", "second"] {
        let out = dir.path().join(name);
        let result = Command::new(env!("CARGO_BIN_EXE_dfget"))
            .args(["--config", cfg.to_str().unwrap(), "-u", &origin.url("/s.bin"), "-O", out.to_str().unwrap()])
            .output()
            .expect("run dfget");
        assert_success(&result, name);
        assert_file_is(&out, &body);
    }
    assert_eq!(guard.pids().len(), 1, "exactly one daemon was spawned and then reused");
    let log = std::fs::read_to_string(home.path().join("log/daemon/core.log")).expect("spawned daemon's core.log");
    assert!(log.contains("reuse file peer task done"), "second download was a cache hit of the spawned daemon");
}

#[test]
fn without_any_daemon_dfget_downloads_straight_from_the_origin() {
    let origin = TestOrigin::start();
    let body = content(PIECE + 9, 53);
    origin.add("/direct.bin", body.clone());
    let dir = out_dir();
    let out = dir.path().join("direct.bin");
    // A socket path no daemon can ever bind (its directory cannot be created under /proc).
    let result = Command::new(env!("CARGO_BIN_EXE_dfget"))
        .args(["--daemon-sock", "/proc/dfget-test/none.sock", "-u", &origin.url("/direct.bin"), "-O"])
        .arg(&out)
        .output()
        .expect("run dfget");
    assert_success(&result, "back-to-source download");
    assert_file_is(&out, &body);
    assert!(stderr_of(&result).contains("downloading directly"), "says it went to the source: {}", stderr_of(&result));
    assert_eq!(common::dir_entries(dir.path()), vec!["direct.bin".to_string()], "no temp file left");

    let out2 = dir.path().join("never.bin");
    let refused = Command::new(env!("CARGO_BIN_EXE_dfget"))
        .args([
            "--daemon-sock",
            "/proc/dfget-test/none.sock",
            "--disable-back-source",
            "-u",
            &origin.url("/direct.bin"),
            "-O",
        ])
        .arg(&out2)
        .output()
        .expect("run dfget");
    assert_eq!(refused.status.code(), Some(3), "no daemon and no back-to-source: exit 3");
    assert!(!out2.exists());
}

#[test]
fn timeout_ends_the_client_with_exit_code_4() {
    let origin = TestOrigin::start();
    origin.add_with("/slow.bin", content(1000, 54), Serve::normal().with_delay(Duration::from_secs(5)));
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let out = dir.path().join("slow.bin");
    let result = daemon.dfget(&["-u", &origin.url("/slow.bin"), "-O", out.to_str().unwrap(), "--timeout", "1s"]);
    assert_eq!(result.status.code(), Some(4), "stderr: {}", stderr_of(&result));
    assert!(stderr_of(&result).contains("timed out"), "{}", stderr_of(&result));
    assert!(!out.exists());
    assert!(daemon.is_healthy());
}

/// Raw bytes to the API socket; returns what the daemon answered.
fn raw_request(daemon: &Daemon, bytes: &[u8]) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(daemon.socket()).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(bytes).expect("send");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn malformed_socket_requests_get_clear_4xx_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start_default();
    let cases: &[(&[u8], &str, &str)] = &[
        (b"\x16\x03\x01garbage\r\n\r\n", "400", "malformed request"),
        (b"POST /download HTTP/1.1\r\nContent-Length: 9\r\n\r\nnot json!", "400", "bad download request"),
        (b"POST /download HTTP/1.1\r\nContent-Length: 22\r\n\r\n{\"url\":\"http://h/\"}   ", "400", "output"),
        (b"POST /download HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", "400", "request body over"),
        (b"POST /download HTTP/1.1\r\nContent-Length: x\r\n\r\n", "400", "Content-Length"),
        (b"GET /nope HTTP/1.1\r\n\r\n", "404", "no route"),
        (b"DELETE /tasks/0000 HTTP/1.1\r\n\r\n", "404", "no task"),
    ];
    for (bytes, status, needle) in cases {
        let answer = raw_request(&daemon, bytes);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{:?} → {answer}", String::from_utf8_lossy(bytes));
        assert!(answer.contains(needle), "{:?} → {answer}", String::from_utf8_lossy(bytes));
    }
    // A request cut off mid-head, then a dead connection: nothing to answer, nothing broken.
    let _ = raw_request(&daemon, b"GET /heal");
    assert!(daemon.is_healthy());
    let origin = TestOrigin::start();
    origin.add("/after.bin", content(100, 56));
    let dir = out_dir();
    assert_success(&daemon.download(&origin.url("/after.bin"), &dir.path().join("after.bin")), "download afterwards");
}

#[test]
fn malformed_urls_and_flags_fail_with_exit_2_and_a_reason() {
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let out = dir.path().join("x");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-u", "http://", "-O", o], "invalid URL"),
        (&["-u", "ftp://example.invalid/f", "-O", o], "unsupported URL scheme"),
        (&["-u", "oras://", "-O", o], "oras"),
        (&["-u", "oras://127.0.0.1:1/UPPER/case:tag", "-O", o], "repository"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "--digest", "md5:abc"], "digest"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "--digest", "sha256:abc"], "64 hex"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "-H", "no colon here"], "Key: Value"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "-H", "Bad Name: v"], "invalid header"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "--timeout", "soon"], "--timeout"),
        (&["-u", "http://127.0.0.1:1/f", "-O", o, "-H", "Range: bytes=0-1"], "set by dfget"),
        (&["-u", "http://127.0.0.1:1/f"], "no output"),
    ];
    for (args, needle) in cases {
        let result = daemon.dfget(args);
        assert_eq!(result.status.code(), Some(2), "{args:?}: {}", stderr_of(&result));
        assert!(stderr_of(&result).contains(needle), "{args:?}: {}", stderr_of(&result));
        assert!(!out.exists());
    }
    assert!(daemon.is_healthy());
}
