//! A `dfget daemon` in its own temp dir (config, logs, work home, Unix socket, and the data dir
//! unless the test puts it elsewhere), driven through the real binary with the environment the
//! test chooses, plus `dfget` client runners pointed at its socket. The process can be killed
//! (SIGKILL) or stopped (SIGTERM) and started again on the same directory and config.
//!
//! Invariant: every start of a `Daemon` returns only once it answered `/healthy`; dropping it
//! always stops the process (SIGTERM, ≤5 s grace, SIGKILL), even while a test panics. The daemon
//! and its clients get the test's environment minus `env_remove`, plus `env` (and the daemon
//! alone `daemon_env`), so a variable meant for the daemon never leaks into the test process.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use tempfile::TempDir;

use super::{poll_until, run_with_limit, terminate, wait_child_ready, wait_or_kill, NotReady};

const HEALTH_LIMIT: Duration = Duration::from_secs(10);
/// Long enough for a daemon to park its running tasks (and release a tmpfs data dir).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A client that runs longer than this is hung: the largest test download is 100 MiB on loopback.
const CLIENT_LIMIT: Duration = Duration::from_secs(180);
/// `dfget tasks` only talks to the daemon's control API.
const TASKS_LIMIT: Duration = Duration::from_secs(30);

pub struct DaemonOpts {
    /// YAML deep-merged over the base config (its keys win).
    pub extra_yaml: String,
    /// YAML written as-is (comments and all) at the top of the config, e.g. a documented sample
    /// file; its top-level keys replace those of the base config and `extra_yaml` whole.
    pub verbatim_yaml: &'static str,
    /// `--cores N`; None leaves the daemon's default.
    pub cores: Option<usize>,
    /// `--log-level L`; None leaves the daemon's default.
    pub log_level: Option<String>,
    pub console: bool,
    /// `dataDir`; None = `data` in the daemon's temp dir.
    pub data_dir: Option<PathBuf>,
    /// Variables set on the daemon and on every client run through it (e.g. `HOME`).
    pub env: Vec<(String, OsString)>,
    /// Variables set on the daemon only (e.g. the proxy variables the daemon must read).
    pub daemon_env: Vec<(String, OsString)>,
    /// Variables removed from the daemon's and the clients' environment before the above are set.
    pub env_remove: Vec<String>,
    /// The daemon's soft `RLIMIT_NOFILE` at exec (as after `ulimit -n N`); None inherits ours.
    pub nofile_soft: Option<u64>,
    /// The daemon's hard (and soft) `RLIMIT_NOFILE` at exec; None inherits ours.
    pub nofile_hard: Option<u64>,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        DaemonOpts {
            extra_yaml: String::new(),
            verbatim_yaml: "",
            // Two cores: enough to show parallel pieces, modest on a shared 2-core CI machine.
            cores: Some(2),
            log_level: None,
            console: false,
            data_dir: None,
            env: Vec::new(),
            daemon_env: Vec::new(),
            env_remove: Vec::new(),
            nofile_soft: None,
            nofile_hard: None,
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    socket: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
    opts: DaemonOpts,
    /// How often the process was started (named in start-up failures).
    n_starts: usize,
}

impl Daemon {
    pub fn start_default() -> Daemon {
        Daemon::start(DaemonOpts::default())
    }

    pub fn start(opts: DaemonOpts) -> Daemon {
        let dir = super::temp_dir("dfget-e2e-");
        let socket = dir.path().join("dfdaemon.sock");
        let config = dir.path().join("dfget.yaml");
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        fs::write(&config, config_yaml(dir.path(), &data_dir, &socket, &opts)).expect("write config");
        let mut daemon = Daemon { child: None, dir, socket, config, data_dir, opts, n_starts: 0 };
        daemon.launch();
        daemon
    }

    /// Starts the daemon process again on the same config (after `kill9` or `sigterm`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a daemon that is still running");
        self.launch();
    }

    /// SIGKILL: a crash. Nothing of the daemon's shutdown path runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9 of a daemon that is not running");
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the daemon");
    }

    /// SIGTERM, and waits for the clean exit (panics if the daemon needs longer than `limit`).
    pub fn sigterm(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("sigterm of a daemon that is not running");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        match wait_or_kill(&mut child, limit) {
            Some(status) => status,
            None => panic!("daemon did not stop within {limit:?} of SIGTERM\n{}", self.diagnostics()),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The running daemon's pid (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
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

    /// `dfget ARGS --daemon-sock SOCK` in the clients' environment, not yet run (no
    /// `--no-spawn`: `dfget tasks` does not take it).
    pub fn client<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.args(args).arg("--daemon-sock").arg(&self.socket);
        for var in &self.opts.env_remove {
            cmd.env_remove(var);
        }
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `dfget ARGS --daemon-sock SOCK --no-spawn` to completion (killed and panics after
    /// 180 s). `--no-spawn`: a client must not hide a dead test daemon by starting its own.
    pub fn dfget(&self, args: &[&str]) -> Output {
        let mut cmd = self.client(args);
        cmd.arg("--no-spawn");
        run_with_limit(&mut cmd, CLIENT_LIMIT)
    }

    /// `dfget -u URL -O OUT --daemon-sock SOCK --no-spawn`, not yet run (e.g. for a background
    /// download).
    pub fn download_command(&self, url: &str, out: &Path) -> Command {
        let mut cmd = self.client([OsStr::new("-u"), OsStr::new(url), OsStr::new("-O"), out.as_os_str()]);
        cmd.arg("--no-spawn");
        cmd
    }

    /// `dfget -u URL -O OUT --daemon-sock SOCK --no-spawn` to completion (limits as `dfget`).
    pub fn download(&self, url: &str, out: &Path) -> Output {
        run_with_limit(&mut self.download_command(url, out), CLIENT_LIMIT)
    }

    /// `dfget tasks ARGS --daemon-sock SOCK` to completion (killed and panics after 30 s).
    pub fn tasks(&self, args: &[&str]) -> Output {
        let mut cmd = self.client(std::iter::once("tasks").chain(args.iter().copied()));
        run_with_limit(&mut cmd, TASKS_LIMIT)
    }

    /// `GET /healthy` over the Unix socket answers `HTTP/1.1 200`.
    pub fn is_healthy(&self) -> bool {
        health_check(&self.socket)
    }

    /// Daemon stdout + stderr (of every start) + core.log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- daemon stdout ---\n{}\n--- daemon stderr ---\n{}\n--- core.log ---\n{}",
            read("daemon.stdout"),
            read("daemon.stderr"),
            self.core_log()
        )
    }

    fn launch(&mut self) {
        self.n_starts += 1;
        let child = self.child.insert(self.spawn());
        let socket = &self.socket;
        match wait_child_ready(child, HEALTH_LIMIT, || health_check(socket)) {
            Ok(()) => {}
            Err(NotReady::Exited(status)) => {
                self.child = None;
                panic!("daemon exited during start #{} ({status})\n{}", self.n_starts, self.diagnostics());
            }
            Err(NotReady::TimedOut) => {
                panic!("daemon not healthy within {HEALTH_LIMIT:?} (start #{})\n{}", self.n_starts, self.diagnostics())
            }
        }
    }

    fn spawn(&self) -> Child {
        let opts = &self.opts;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("daemon").arg("--config").arg(&self.config);
        if let Some(cores) = opts.cores {
            cmd.arg("--cores").arg(cores.to_string());
        }
        if let Some(level) = &opts.log_level {
            cmd.arg("--log-level").arg(level);
        }
        if opts.console {
            cmd.arg("--console");
        }
        for var in &opts.env_remove {
            cmd.env_remove(var);
        }
        cmd.envs(opts.env.iter().chain(&opts.daemon_env).map(|(k, v)| (k, v)));
        // Appended: a restarted daemon's output follows the earlier runs'.
        let append = |name: &str| {
            fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name)).expect("daemon output")
        };
        cmd.stdin(Stdio::null()).stdout(append("daemon.stdout")).stderr(append("daemon.stderr"));
        if opts.nofile_soft.is_some() || opts.nofile_hard.is_some() {
            let (soft, hard) = (opts.nofile_soft, opts.nofile_hard);
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (getrlimit/setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim: libc::rlimit = std::mem::zeroed();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    if let Some(hard) = hard {
                        lim.rlim_max = hard.min(lim.rlim_max);
                        lim.rlim_cur = lim.rlim_max;
                    }
                    if let Some(soft) = soft {
                        lim.rlim_cur = soft.min(lim.rlim_max);
                    }
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    Ok(())
                });
            }
        }
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

/// The base config (data, log, work dirs and socket; `storage.multiplex: true`) with
/// `extra_yaml` deep-merged over it, under `verbatim_yaml`.
fn config_yaml(dir: &Path, data_dir: &Path, socket: &Path, opts: &DaemonOpts) -> String {
    let base = format!(
        "dataDir: {data}\nlogDir: {log}\nworkHome: {work}\n\
         download:\n  downloadGRPC:\n    unixListen:\n      socket: {sock}\n\
         storage:\n  multiplex: true\n",
        data = data_dir.display(),
        log = dir.join("log").display(),
        work = dir.join("work").display(),
        sock = socket.display(),
    );
    if opts.extra_yaml.trim().is_empty() && opts.verbatim_yaml.is_empty() {
        return base;
    }
    let mut merged: Value = serde_yaml_ng::from_str(&base).expect("base config is YAML");
    let extra: Value = serde_yaml_ng::from_str(&opts.extra_yaml).expect("extra_yaml is not valid YAML");
    // An empty `extra_yaml` parses as null, which would replace the whole base.
    if !extra.is_null() {
        merge(&mut merged, extra);
    }
    if opts.verbatim_yaml.is_empty() {
        return serde_yaml_ng::to_string(&merged).expect("config serialises");
    }
    let verbatim: Value = serde_yaml_ng::from_str(opts.verbatim_yaml).expect("verbatim_yaml is not valid YAML");
    if let (Value::Mapping(merged), Value::Mapping(verbatim)) = (&mut merged, &verbatim) {
        merged.retain(|key, _| !verbatim.contains_key(key));
    }
    format!("{}\n{}", opts.verbatim_yaml, serde_yaml_ng::to_string(&merged).expect("config serialises"))
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
