//! Harness of the storage end-to-end tests: a `dfget daemon` whose directory outlives its process
//! (so a test can SIGKILL or SIGTERM it and start it again on the same config, data and socket),
//! background downloads, the `dfget tasks` CLI, and readers of the on-disk task layout
//! (`<dataDir>/tasks/<id[..2]>/<id>/{data,meta.json}`).
//!
//! Invariant: every process this module starts is stopped by a Drop impl (the daemon: SIGTERM,
//! grace, SIGKILL; a background client: SIGKILL), and a tmpfs data dir is unmounted only after
//! the daemon using it has stopped, so a panicking test leaves nothing running or mounted.

// Each test uses a different subset of the harness.
#![allow(dead_code)]

pub mod origin;
pub mod tmpfs;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{poll_until, run_with_limit, sha256_hex, terminate, wait_or_kill};
pub use origin::ThrottledOrigin;
pub use tmpfs::Tmpfs;

const HEALTH_LIMIT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The largest download here is 64 MiB on loopback: a client running longer is hung.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// What a test wants of its daemon beyond the base config (data, log, socket in a temp dir).
#[derive(Default)]
pub struct Setup {
    /// Top-level YAML appended to the base config (e.g. `gcInterval: 1s` and a `storage:` block;
    /// the base has neither key, so no merging is needed).
    pub extra_yaml: String,
    /// Mount a tmpfs of this many MiB and put the data dir (and `out_on_data_fs`) on it.
    pub tmpfs_data_mib: Option<u64>,
}

pub struct StorageDaemon {
    child: Option<Child>,
    /// Dropped before `dir`: the mount point lives inside it.
    tmpfs: Option<Tmpfs>,
    dir: TempDir,
    config: PathBuf,
    socket: PathBuf,
    data_dir: PathBuf,
    n_starts: usize,
}

impl StorageDaemon {
    /// A running, healthy daemon with `extra_yaml` over the base config.
    pub fn start(extra_yaml: &str) -> StorageDaemon {
        StorageDaemon::start_with(Setup { extra_yaml: extra_yaml.to_string(), ..Setup::default() })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Err only when the requested tmpfs cannot be mounted (the caller decides to skip).
    pub fn start_with(setup: Setup) -> Result<StorageDaemon, String> {
        let dir = tempfile::Builder::new().prefix("dfget-storage-").tempdir().expect("temp dir");
        let tmpfs = match setup.tmpfs_data_mib {
            Some(mib) => Some(Tmpfs::mount(&dir.path().join("fs"), mib)?),
            None => None,
        };
        // On a tmpfs the data dir is a subdirectory of the mount, so OUT can share its filesystem.
        let data_dir = match &tmpfs {
            Some(fs) => fs.path().join("data"),
            None => dir.path().join("data"),
        };
        let socket = dir.path().join("dfdaemon.sock");
        let config = dir.path().join("dfget.yaml");
        let base = format!(
            "dataDir: {data}\nlogDir: {log}\nworkHome: {work}\n\
             download:\n  downloadGRPC:\n    unixListen:\n      socket: {sock}\n",
            data = data_dir.display(),
            log = dir.path().join("log").display(),
            work = dir.path().join("work").display(),
            sock = socket.display(),
        );
        fs::write(&config, format!("{base}{}\n", setup.extra_yaml)).expect("write config");
        fs::create_dir_all(dir.path().join("out")).expect("out dir");
        let mut daemon = StorageDaemon { child: None, tmpfs, dir, config, socket, data_dir, n_starts: 0 };
        daemon.launch();
        Ok(daemon)
    }

    /// Starts the daemon process again on the same config (after `kill9` or `sigterm`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a daemon that is still running");
        self.launch();
    }

    fn launch(&mut self) {
        self.n_starts += 1;
        let stdout = self.append_file("daemon.stdout");
        let stderr = self.append_file("daemon.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        // Two cores: at most 2 × PIECE_WORKERS_PER_CORE pieces in flight, which bounds refetches.
        cmd.arg("daemon").arg("--config").arg(&self.config).args(["--cores", "2"]);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
        let mut exited = None;
        let healthy = poll_until(HEALTH_LIMIT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                exited = Some(status);
                return true;
            }
            health_check(&self.socket)
        });
        if let Some(status) = exited {
            self.child = None;
            panic!("daemon exited during start #{} ({status})\n{}", self.n_starts, self.diagnostics());
        }
        assert!(
            healthy,
            "daemon not healthy within {HEALTH_LIMIT:?} (start #{})\n{}",
            self.n_starts,
            self.diagnostics()
        );
    }

    fn append_file(&self, name: &str) -> fs::File {
        fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name)).expect("daemon log file")
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

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// A fresh output path in the test's own out dir (never on a tmpfs data dir).
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// An output path on the tmpfs that holds the data dir (so OUT can be a hard link of the
    /// task file); panics without a tmpfs.
    pub fn out_on_data_fs(&self, name: &str) -> PathBuf {
        let fs = self.tmpfs.as_ref().expect("out_on_data_fs needs a tmpfs data dir");
        let dir = fs.path().join("out");
        fs::create_dir_all(&dir).expect("out dir on the tmpfs");
        dir.join(name)
    }

    /// Panics, with the daemon's diagnostics, unless the client exited 0.
    pub fn assert_ok(&self, out: &Output, what: &str) {
        assert!(
            out.status.success(),
            "{what}: dfget failed ({})\nstdout: {}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.data_dir().join("tasks").join(&id[..2]).join(id)
    }

    pub fn data_path(&self, id: &str) -> PathBuf {
        self.task_dir(id).join("data")
    }

    pub fn meta_path(&self, id: &str) -> PathBuf {
        self.task_dir(id).join("meta.json")
    }

    pub fn core_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log").join("daemon").join("core.log")).unwrap_or_default()
    }

    /// Daemon stdout + stderr + the last 60 lines of core.log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let log = self.core_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "--- daemon stdout ---\n{}\n--- daemon stderr ---\n{}\n--- core.log (tail) ---\n{tail}",
            read("daemon.stdout"),
            read("daemon.stderr")
        )
    }

    pub fn is_healthy(&self) -> bool {
        health_check(&self.socket)
    }

    /// `dfget -u URL -O OUT --daemon-sock SOCK --no-spawn` to completion.
    pub fn download(&self, url: &str, out: &Path) -> Output {
        run_with_limit(&mut self.download_cmd(url, out), CLIENT_LIMIT)
    }

    /// The same, in the background: for downloads a test interrupts or races.
    pub fn spawn_download(&self, url: &str, out: &Path) -> Background {
        let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("client").to_string();
        let stdout = self.dir.path().join(format!("client-{name}.stdout"));
        let stderr = self.dir.path().join(format!("client-{name}.stderr"));
        let mut cmd = self.download_cmd(url, out);
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("client stdout"))
            .stderr(fs::File::create(&stderr).expect("client stderr"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Background { child: Some(child), stdout, stderr }
    }

    fn download_cmd(&self, url: &str, out: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("-u").arg(url).arg("-O").arg(out).arg("--daemon-sock").arg(&self.socket).arg("--no-spawn");
        cmd
    }

    /// `dfget tasks ARGS --daemon-sock SOCK`.
    pub fn tasks(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfget"));
        cmd.arg("tasks").args(args).arg("--daemon-sock").arg(&self.socket);
        run_with_limit(&mut cmd, Duration::from_secs(30))
    }

    /// `dfget tasks ls --json`, parsed (panics if it fails or is not a JSON array).
    pub fn ls(&self) -> Vec<Value> {
        let out = self.tasks(&["ls", "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tasks ls --json failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_str::<Value>(stdout.trim()) {
            Ok(Value::Array(tasks)) => tasks,
            other => panic!("tasks ls --json printed {stdout:?} ({other:?})"),
        }
    }

    /// The `tasks ls` entry for `id`, if the daemon lists it.
    pub fn listed(&self, id: &str) -> Option<Value> {
        self.ls().into_iter().find(|t| t["id"] == id)
    }
}

impl Drop for StorageDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

/// A `dfget` client running in the background; killed on Drop if still running.
pub struct Background {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for the client to exit (panics after `limit`).
    pub fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().expect("client already waited for");
        let status = wait_or_kill(&mut child, limit);
        let stdout = fs::read(&self.stdout).unwrap_or_default();
        let stderr = fs::read(&self.stderr).unwrap_or_default();
        match status {
            Some(status) => Output { status, stdout, stderr },
            None => {
                panic!("background dfget did not finish within {limit:?}; stderr: {}", String::from_utf8_lossy(&stderr))
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The task id the daemon gives a plain URL (no digest, tag, application or filter): the hex
/// sha256 of the URL, as Dragonfly computes it with every other part empty.
pub fn task_id_of(url: &str) -> String {
    sha256_hex(url.as_bytes())
}

/// What a meta.json says, read independently of the daemon's decoder: its JSON line's
/// `pieces_done` string ("1" per done piece), after checking the `crc32:` trailer's shape.
pub fn meta_pieces_done(meta_path: &Path) -> Option<Vec<bool>> {
    let text = fs::read_to_string(meta_path).ok()?;
    let mut lines = text.lines();
    let json: Value = serde_json::from_str(lines.next()?).ok()?;
    let trailer = lines.next()?;
    assert!(
        trailer.starts_with("crc32:") && trailer.len() == 14,
        "meta trailer {trailer:?} in {}",
        meta_path.display()
    );
    Some(json["pieces_done"].as_str()?.bytes().map(|b| b == b'1').collect())
}

/// Indexes of the pieces a `bytes=a-b` Range list asks for, with 4 MiB pieces (a range that is
/// not one exact piece is reported as an error so the test shows it).
pub fn pieces_requested(ranges: &[Option<String>], piece_len: u64, file_len: u64) -> Vec<u64> {
    let mut pieces = Vec::new();
    for range in ranges {
        let spec = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).unwrap_or_else(|| {
            panic!("request without a closed Range: {range:?}");
        });
        let (first, last) = spec.split_once('-').expect("a-b");
        let (first, last): (u64, u64) = (first.parse().expect("range start"), last.parse().expect("range end"));
        assert_eq!(first % piece_len, 0, "range {spec} does not start on a piece boundary");
        assert_eq!(last + 1, (first + piece_len).min(file_len), "range {spec} is not one whole piece");
        pieces.push(first / piece_len);
    }
    pieces
}

/// Sum of the lengths of every `data` file under `<dataDir>/tasks`, and the task dirs holding one.
pub fn task_files_on_disk(data_dir: &Path) -> (u64, Vec<String>) {
    let mut total = 0;
    let mut ids = Vec::new();
    for path in crate::common::regular_files_under(&data_dir.join("tasks")) {
        if path.file_name().is_some_and(|n| n == "data") {
            total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if let Some(id) = path.parent().and_then(|p| p.file_name()) {
                ids.push(id.to_string_lossy().into_owned());
            }
        }
    }
    ids.sort();
    (total, ids)
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
