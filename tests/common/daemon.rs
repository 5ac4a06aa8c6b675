//! A `dfget daemon` in its own temp dir (data, logs, work home, Unix socket), driven through the
//! real binary, plus a `dfget` client runner pointed at its socket.
//!
//! Invariant: a `Daemon` value exists only once the daemon answered `/healthy`; dropping it
//! always stops the process (SIGTERM, ≤3 s grace, SIGKILL), even while a test panics.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use tempfile::TempDir;

use super::{poll_until, run_with_limit, terminate};

const HEALTH_LIMIT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);
/// A client that runs longer than this is hung: the largest test download is 100 MiB on loopback.
const CLIENT_LIMIT: Duration = Duration::from_secs(180);

pub struct DaemonOpts {
    /// YAML deep-merged over the base config (its keys win).
    pub extra_yaml: String,
    /// `--cores N`; None leaves the daemon's default.
    pub cores: Option<usize>,
    /// `--log-level L`; None leaves the daemon's default.
    pub log_level: Option<String>,
    pub console: bool,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        // Two cores: enough to show parallel pieces, modest on a shared 2-core CI machine.
        DaemonOpts { extra_yaml: String::new(), cores: Some(2), log_level: None, console: false }
    }
}

pub struct Daemon {
    dir: TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start_default() -> Daemon {
        Daemon::start(DaemonOpts::default())
    }

    pub fn start(opts: DaemonOpts) -> Daemon {
        let dir = tempfile::Builder::new().prefix("dfget-e2e-").tempdir().expect("temp dir");
        let socket = dir.path().join("dfdaemon.sock");
        let config_path = dir.path().join("dfget.yaml");
        fs::write(&config_path, config_yaml(dir.path(), &socket, &opts.extra_yaml)).expect("write config");
        let child = spawn(dir.path(), &config_path, &opts);
        let mut daemon = Daemon { dir, socket, child: Some(child) };
        daemon.wait_healthy();
        daemon
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn core_log_path(&self) -> PathBuf {
        self.dir.path().join("log").join("daemon").join("core.log")
    }

    /// The daemon's core.log so far ("" if it does not exist yet).
    pub fn core_log(&self) -> String {
        fs::read_to_string(self.core_log_path()).unwrap_or_default()
    }

    /// The core.log lines that parse as JSON objects.
    pub fn core_log_json(&self) -> Vec<serde_json::Value> {
        self.core_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// Waits (≤5 s: logs may be written by a background thread) for `needle` in core.log.
    pub fn wait_log(&self, needle: &str) -> bool {
        poll_until(Duration::from_secs(5), || self.core_log().contains(needle))
    }

    /// Runs `dfget ARGS --daemon-sock SOCK --no-spawn` to completion (killed and panics after
    /// 180 s). `--no-spawn`: a client must not hide a dead test daemon by starting its own.
    pub fn dfget(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.args(args).arg("--daemon-sock").arg(&self.socket).arg("--no-spawn");
        run_with_limit(&mut cmd, CLIENT_LIMIT)
    }

    /// `GET /healthy` over the Unix socket answers `HTTP/1.1 200`.
    pub fn is_healthy(&self) -> bool {
        health_check(&self.socket)
    }

    /// Daemon stdout + stderr + core.log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- daemon stdout ---\n{}\n--- daemon stderr ---\n{}\n--- core.log ---\n{}",
            read("daemon.stdout"),
            read("daemon.stderr"),
            self.core_log()
        )
    }

    fn wait_healthy(&mut self) {
        let mut exited = None;
        let healthy = poll_until(HEALTH_LIMIT, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            health_check(&self.socket)
        });
        if let Some(status) = exited {
            panic!("daemon exited during start-up ({status})\n{}", self.diagnostics());
        }
        if !healthy {
            panic!("daemon not healthy within {HEALTH_LIMIT:?}\n{}", self.diagnostics());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

fn spawn(dir: &Path, config_path: &Path, opts: &DaemonOpts) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
    cmd.arg("daemon").arg("--config").arg(config_path);
    if let Some(cores) = opts.cores {
        cmd.arg("--cores").arg(cores.to_string());
    }
    if let Some(level) = &opts.log_level {
        cmd.arg("--log-level").arg(level);
    }
    if opts.console {
        cmd.arg("--console");
    }
    let stdout = fs::File::create(dir.join("daemon.stdout")).expect("daemon.stdout");
    let stderr = fs::File::create(dir.join("daemon.stderr")).expect("daemon.stderr");
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// The base config of the brief, with `extra` deep-merged over it.
fn config_yaml(dir: &Path, socket: &Path, extra: &str) -> String {
    let base = format!(
        "dataDir: {data}\nlogDir: {log}\nworkHome: {work}\n\
         download:\n  downloadGRPC:\n    unixListen:\n      socket: {sock}\n\
         storage:\n  multiplex: true\n",
        data = dir.join("data").display(),
        log = dir.join("log").display(),
        work = dir.join("work").display(),
        sock = socket.display(),
    );
    if extra.trim().is_empty() {
        return base;
    }
    let mut merged: Value = serde_yaml_ng::from_str(&base).expect("base config is YAML");
    let extra: Value = serde_yaml_ng::from_str(extra).expect("extra_yaml is not valid YAML");
    merge(&mut merged, extra);
    serde_yaml_ng::to_string(&merged).expect("config serialises")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Mapping(into), Value::Mapping(from)) => merge_maps(into, from),
        (into, from) => *into = from,
    }
}

fn merge_maps(into: &mut Mapping, from: Mapping) {
    for (key, value) in from {
        match into.get_mut(&key) {
            Some(existing) => merge(existing, value),
            None => {
                into.insert(key, value);
            }
        }
    }
}

fn health_check(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthy HTTP/1.1\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    // Only the status line matters; read until it is complete or the peer stops.
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}
