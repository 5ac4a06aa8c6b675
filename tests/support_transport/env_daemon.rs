//! A `dfget daemon` started with chosen environment variables (the proxy variables are read by
//! the daemon process, so a test must set them on the daemon, never on the shared test process).
//!
//! Invariant: an `EnvDaemon` exists only once it answered `/healthy`; dropping it always stops
//! the process (SIGTERM, ≤3 s grace, SIGKILL). The proxy variables of the test process itself
//! are never passed on: only the ones the test names.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{poll_until, run_with_limit, terminate};

const PROXY_VARS: [&str; 8] =
    ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"];

pub struct EnvDaemon {
    dir: TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl EnvDaemon {
    /// `transport_yaml` is a whole `download:` block (see `http_transport_yaml`).
    pub fn start(transport_yaml: &str, env: &[(&str, String)]) -> EnvDaemon {
        let dir = tempfile::Builder::new().prefix("dfget-env-").tempdir().expect("temp dir");
        let socket = dir.path().join("dfdaemon.sock");
        let config = dir.path().join("dfget.yaml");
        fs::write(&config, config_yaml(dir.path(), &socket, transport_yaml)).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("daemon").arg("--config").arg(&config).arg("--cores").arg("2");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = |name: &str| fs::File::create(dir.path().join(name)).expect("daemon output file");
        cmd.stdin(Stdio::null()).stdout(out("daemon.stdout")).stderr(out("daemon.stderr"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut daemon = EnvDaemon { dir, socket, child: Some(child) };
        let healthy = poll_until(Duration::from_secs(10), || daemon.exited() || daemon.is_healthy());
        assert!(healthy && !daemon.exited(), "daemon did not become healthy\n{}", daemon.diagnostics());
        daemon
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// `dfget -u URL -O OUT --daemon-sock SOCK --no-spawn` (no proxy variables either).
    pub fn download(&self, url: &str, out: &Path) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("-u").arg(url).arg("-O").arg(out).arg("--daemon-sock").arg(&self.socket).arg("--no-spawn");
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        run_with_limit(&mut cmd, Duration::from_secs(120))
    }

    pub fn is_healthy(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /healthy HTTP/1.1\r\nHost: localhost\r\n\r\n").is_err() {
            return false;
        }
        let mut got = [0u8; 12];
        s.read_exact(&mut got).is_ok() && got.starts_with(b"HTTP/1.1 200")
    }

    pub fn diagnostics(&self) -> String {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- daemon stderr ---\n{}\n--- core.log ---\n{}",
            read(self.dir.path().join("daemon.stderr")),
            read(self.dir.path().join("log/daemon/core.log"))
        )
    }
}

impl Drop for EnvDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

fn config_yaml(dir: &Path, socket: &Path, transport_yaml: &str) -> String {
    // `download:` comes from the transport block; the socket key is merged into it by hand.
    let transport = if transport_yaml.trim().is_empty() { "download:\n".to_string() } else { transport_yaml.into() };
    format!(
        "dataDir: '{data}'\nlogDir: '{log}'\nworkHome: '{work}'\nstorage:\n  multiplex: true\n\
         {transport}  downloadGRPC:\n    unixListen:\n      socket: '{sock}'\n",
        data = dir.join("data").display(),
        log = dir.join("log").display(),
        work = dir.join("work").display(),
        sock = socket.display(),
    )
}
