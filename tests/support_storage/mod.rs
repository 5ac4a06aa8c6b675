//! Harness of the storage end-to-end tests: a `dfget daemon` (the shared `common::Daemon`, whose
//! directory outlives its process, so a test can SIGKILL or SIGTERM it and start it again on the
//! same config, data and socket) optionally with its data dir on a tmpfs, background downloads,
//! the `dfget tasks` CLI, and readers of the on-disk task layout
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
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{sha256_hex, temp_dir, wait_or_kill, Daemon, DaemonOpts};
pub use origin::ThrottledOrigin;
pub use tmpfs::Tmpfs;

/// What a test wants of its daemon beyond the base config (data, log, socket in a temp dir).
#[derive(Default)]
pub struct Setup {
    /// Top-level YAML merged over the base config (e.g. `gcInterval: 1s` and a `storage:` block).
    pub extra_yaml: String,
    /// Mount a tmpfs of this many MiB and put the data dir (and `out_on_data_fs`) on it.
    pub tmpfs_data_mib: Option<u64>,
}

/// A `common::Daemon` (reached through `Deref`) with an output dir and an optional tmpfs data dir.
pub struct StorageDaemon {
    /// Declared first: dropped (process stopped) before the tmpfs is unmounted.
    daemon: Daemon,
    tmpfs: Option<Tmpfs>,
    /// Holds the tmpfs mount point; removed after the unmount.
    tmpfs_dir: Option<TempDir>,
}

impl StorageDaemon {
    /// A running, healthy daemon with `extra_yaml` over the base config.
    pub fn start(extra_yaml: &str) -> StorageDaemon {
        StorageDaemon::start_with(Setup { extra_yaml: extra_yaml.to_string(), ..Setup::default() })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Err only when the requested tmpfs cannot be mounted (the caller decides to skip).
    pub fn start_with(setup: Setup) -> Result<StorageDaemon, String> {
        let tmpfs_dir = setup.tmpfs_data_mib.map(|_| temp_dir("dfget-storage-fs-"));
        let tmpfs = match (&tmpfs_dir, setup.tmpfs_data_mib) {
            (Some(dir), Some(mib)) => Some(Tmpfs::mount(dir.path(), mib)?),
            _ => None,
        };
        // On a tmpfs the data dir is a subdirectory of the mount, so OUT can share its filesystem.
        let data_dir = tmpfs.as_ref().map(|fs| fs.path().join("data"));
        // Two cores (the default): at most 2 × PIECE_WORKERS_PER_CORE pieces in flight (and never
        // more than are left), which bounds refetches.
        let daemon = Daemon::start(DaemonOpts { extra_yaml: setup.extra_yaml, data_dir, ..DaemonOpts::default() });
        fs::create_dir_all(daemon.dir().join("out")).expect("out dir");
        Ok(StorageDaemon { daemon, tmpfs, tmpfs_dir })
    }

    /// A fresh output path in the test's own out dir (never on a tmpfs data dir).
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir().join("out").join(name)
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

    /// `dfget -u URL -O OUT` in the background: for downloads a test interrupts or races.
    pub fn spawn_download(&self, url: &str, out: &Path) -> Background {
        let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("client").to_string();
        let stdout = self.dir().join(format!("client-{name}.stdout"));
        let stderr = self.dir().join(format!("client-{name}.stderr"));
        let mut cmd = self.download_command(url, out);
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("client stdout"))
            .stderr(fs::File::create(&stderr).expect("client stderr"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Background { child: Some(child), stdout, stderr }
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

impl Deref for StorageDaemon {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl DerefMut for StorageDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
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

/// Indexes of the pieces a `bytes=a-b` Range list asks for, with 4 MiB pieces: each range is a run
/// of whole pieces (a worker asks for several consecutive pieces at once), whose first may be the
/// rest of one (a resumed piece in flight); a range that does not end where a piece ends is
/// reported as an error so the test shows it.
pub fn pieces_requested(ranges: &[Option<String>], piece_len: u64, file_len: u64) -> Vec<u64> {
    let mut pieces = Vec::new();
    for range in ranges {
        let spec = range.as_deref().and_then(|r| r.strip_prefix("bytes=")).unwrap_or_else(|| {
            panic!("request without a closed Range: {range:?}");
        });
        let (first, last) = spec.split_once('-').expect("a-b");
        let (first, last): (u64, u64) = (first.parse().expect("range start"), last.parse().expect("range end"));
        let last_piece = last / piece_len;
        let piece_end = ((last_piece + 1) * piece_len).min(file_len);
        assert_eq!(last + 1, piece_end, "range {spec} does not end where its piece ends");
        pieces.extend(first / piece_len..=last_piece);
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
