//! A `dfget daemon` for the ORAS tests, in its own temp dir (data, logs, socket, `$HOME`, docker
//! config), plus a `dfget` client runner pointed at its socket.
//!
//! The shared `tests/common` daemon inherits the test's environment; ORAS credentials come from
//! the daemon's `$DOCKER_CONFIG`, so this harness sets `DOCKER_CONFIG` and `HOME` per daemon.
//!
//! Invariant: an `OrasDaemon` exists only once it answered `/healthy`; Drop always stops it
//! (SIGTERM, ≤3 s grace, SIGKILL), and it never sees the real user's home or docker config.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tempfile::TempDir;

use super::{poll_until, run_with_limit, terminate};

const HEALTH_LIMIT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The largest pull is 100 MiB on loopback: a client running longer than this is hung.
const CLIENT_LIMIT: Duration = Duration::from_secs(180);
/// The seed page's YAML block, verbatim (its `storage:` and top-level `oras:`).
const SEED_YAML: &str = include_str!("../fixtures/seed-dfget.yaml");

#[derive(Default)]
pub struct DaemonOpts {
    /// `(registry host:port, user, password)` entries of `$DOCKER_CONFIG/config.json`.
    pub credentials: Vec<(String, String, String)>,
    /// Use the seed page's `storage:` + `oras:` block instead of the minimal test config.
    pub seed_config: bool,
    /// `--log-level`; None = the daemon's default.
    pub log_level: Option<&'static str>,
}

pub struct OrasDaemon {
    dir: TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl OrasDaemon {
    pub fn start(opts: DaemonOpts) -> OrasDaemon {
        let dir = super::temp_dir("oras-daemon-");
        let socket = dir.path().join("dfdaemon.sock");
        let (home, docker) = (dir.path().join("home"), dir.path().join("docker"));
        fs::create_dir_all(&home).expect("mkdir home");
        fs::create_dir_all(&docker).expect("mkdir docker config dir");
        if !opts.credentials.is_empty() {
            fs::write(docker.join("config.json"), docker_config(&opts.credentials)).expect("write config.json");
        }
        let config_path = dir.path().join("dfget.yaml");
        fs::write(&config_path, config_yaml(dir.path(), &socket, opts.seed_config)).expect("write dfget.yaml");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("daemon").arg("--config").arg(&config_path).args(["--cores", "2"]);
        if let Some(level) = opts.log_level {
            cmd.args(["--log-level", level]);
        }
        cmd.env("HOME", &home).env("DOCKER_CONFIG", &docker).env_remove("XDG_RUNTIME_DIR");
        let stdout = File::create(dir.path().join("daemon.stdout")).expect("daemon.stdout");
        let stderr = File::create(dir.path().join("daemon.stderr")).expect("daemon.stderr");
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut daemon = OrasDaemon { dir, socket, child: Some(child) };
        daemon.wait_healthy();
        daemon
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn core_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/daemon/core.log")).unwrap_or_default()
    }

    /// Waits (≤5 s: a background thread may write the log) for `needle` in core.log.
    pub fn wait_log(&self, needle: &str) -> bool {
        poll_until(Duration::from_secs(5), || self.core_log().contains(needle))
    }

    /// Everything the daemon wrote: stdout, stderr, core.log.
    pub fn all_output(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- daemon stdout ---\n{}\n--- daemon stderr ---\n{}\n--- core.log ---\n{}",
            read("daemon.stdout"),
            read("daemon.stderr"),
            self.core_log()
        )
    }

    /// `dfget -u URL -O OUT --daemon-sock SOCK --no-spawn`: `--no-spawn` so a dead test daemon
    /// cannot be hidden by a client that starts its own.
    pub fn pull(&self, url: &str, out: &Path) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.args(["-u", url]).arg("-O").arg(out).arg("--daemon-sock").arg(&self.socket).arg("--no-spawn");
        cmd.env("HOME", self.dir.path().join("home")).env("DOCKER_CONFIG", self.dir.path().join("docker"));
        run_with_limit(&mut cmd, CLIENT_LIMIT)
    }

    pub fn is_healthy(&self) -> bool {
        health_check(&self.socket)
    }

    fn wait_healthy(&mut self) {
        let mut exited = None;
        let healthy = poll_until(HEALTH_LIMIT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            health_check(&self.socket)
        });
        if let Some(status) = exited {
            panic!("daemon exited during start-up ({status})\n{}", self.all_output());
        }
        assert!(healthy, "daemon not healthy within {HEALTH_LIMIT:?}\n{}", self.all_output());
    }
}

impl Drop for OrasDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

fn docker_config(credentials: &[(String, String, String)]) -> String {
    let auths: serde_json::Map<String, serde_json::Value> = credentials
        .iter()
        .map(|(host, user, password)| {
            (host.clone(), serde_json::json!({"auth": STANDARD.encode(format!("{user}:{password}"))}))
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

fn config_yaml(dir: &Path, socket: &Path, seed: bool) -> String {
    let paths = format!(
        "dataDir: {}\nlogDir: {}\ndownload:\n  downloadGRPC:\n    unixListen:\n      socket: {}\n",
        dir.join("data").display(),
        dir.join("log").display(),
        socket.display()
    );
    if seed {
        return format!("{SEED_YAML}\n{paths}");
    }
    format!("{paths}storage:\n  multiplex: true\noras:\n  insecureSkipVerify: true\n")
}

fn health_check(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthy HTTP/1.1\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
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
