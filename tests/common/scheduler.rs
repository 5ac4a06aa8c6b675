//! Dragonfly's real scheduler (Go, `d7y.io/dragonfly/v2/cmd/scheduler`, built by `scripts/test.sh`
//! into `${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/scheduler-v2.5.1/`) on a free 127.0.0.1 port,
//! without Redis, with its logs and dynamic config in a temp dir: without a manager, or registered
//! with one (`start_with_manager`: `manager.addr`, the manager's default scheduler cluster 1).
//!
//! Invariant: a `Scheduler` exists only once its gRPC port accepts connections; dropping it stops
//! the process. A missing binary fails the test loudly, naming the script that builds it.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, terminate, wait_child_ready, NotReady};

const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Scheduler {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// The scheduler release `scripts/test.sh` builds (it cannot come from `scripts/go-tools.txt`:
/// `go install` of it fails, see the script).
pub const SCHEDULER_VERSION: &str = "v2.5.1";

/// The Go tools cache `scripts/test.sh` fills: `${DFGET_TOOLS:-$HOME/.cache/dfget-tools}`.
pub fn tools_cache() -> PathBuf {
    match std::env::var_os("DFGET_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/dfget-tools"),
    }
}

/// Where `scripts/test.sh` puts the scheduler: `${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/scheduler-VERSION/`.
pub fn scheduler_dir() -> PathBuf {
    tools_cache().join(format!("scheduler-{SCHEDULER_VERSION}"))
}

impl Scheduler {
    pub fn start() -> Scheduler {
        Scheduler::start_with(None)
    }

    /// A scheduler that registers itself with the manager at `manager_addr` (UpdateScheduler,
    /// then keep-alives every second, so the manager marks it active at once and inactive soon
    /// after it stops).
    pub fn start_with_manager(manager_addr: &str) -> Scheduler {
        Scheduler::start_with(Some(manager_addr))
    }

    fn start_with(manager_addr: Option<&str>) -> Scheduler {
        let bin = scheduler_dir().join("scheduler");
        assert!(bin.is_file(), "Dragonfly's scheduler is not built at {}: run scripts/test.sh", bin.display());
        let dir = super::temp_dir("dfget-scheduler-");
        let port = free_port();
        let logs = dir.path().join("logs");
        let config = format!(
            "server:\n  advertiseIP: 127.0.0.1\n  advertisePort: {port}\n  listenIP: 127.0.0.1\n  port: {port}\n  \
             host: localhost\n  logDir: {logs}\n  pluginDir: {plugins}\n\
             scheduler:\n  algorithm: default\n  backToSourceCount: 1\n  retryBackToSourceLimit: 3\n  \
             retryLimit: 10\n  retryInterval: 200ms\n\
             seedPeer:\n  enable: false\n\
             job:\n  enable: false\n\
             metrics:\n  enable: false\n{manager}",
            manager = manager_addr
                .map(|a| format!("manager:\n  addr: {a}\n  schedulerClusterID: 1\n  keepAlive:\n    interval: 1s\n"))
                .unwrap_or_default(),
            logs = logs.display(),
            plugins = dir.path().join("plugins").display(),
        );
        let cfg_path = dir.path().join("scheduler.yaml");
        fs::write(&cfg_path, config).expect("write scheduler config");
        let log = fs::File::create(dir.path().join("stdout.log")).expect("scheduler stdout");
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(&cfg_path)
            .arg("--dynconfig")
            .arg(dir.path().join("dynconfig.yaml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn scheduler");
        let ready = || TcpStream::connect(("127.0.0.1", port)).is_ok();
        match wait_child_ready(&mut child, START_LIMIT, ready) {
            Ok(()) => {}
            Err(NotReady::Exited(status)) => {
                panic!(
                    "scheduler exited ({status}): {}",
                    fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default()
                )
            }
            Err(NotReady::TimedOut) => {
                terminate(&mut child, Duration::from_secs(2));
                panic!("scheduler did not listen within {START_LIMIT:?}")
            }
        }
        Scheduler { dir, port, child: Some(child) }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the scheduler logged (its own core log and stdout).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        for f in super::regular_files_under(&self.dir.path().join("logs")) {
            out.push_str(&fs::read_to_string(f).unwrap_or_default());
        }
        out
    }

    /// Stops the scheduler now (the test of "scheduler gone").
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}
