//! Shared end-to-end harness of every `tests/e2e_*.rs` binary: a daemon in a temp dir driven
//! through the real `dfget` binary, an in-process HTTP origin (and the server plumbing other
//! origins build on), a throwaway nginx, the apt-get installer of external tools, and the process
//! helpers (run with a time limit, terminate, poll).
//!
//! Invariant: every process or thread a test starts through this module is stopped by a `Drop`
//! impl, so a failing (panicking) test leaves no daemon, nginx or origin behind.

// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod checks;
pub mod cluster;
pub mod daemon;
pub mod manager;
pub mod nginx;
pub mod origin;
pub mod range;
pub mod scheduler;
pub mod server;
pub mod tools;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use checks::{assert_dfget_failed, assert_download_fails, assert_still_serves, download_exact};
pub use daemon::{Daemon, DaemonOpts};
pub use nginx::{AccessEntry, Nginx};
pub use origin::{Mode, Request, Serve, TestOrigin};
pub use tools::{ensure_tool, go_tool};

/// Piece length the daemon uses for files up to 1 GiB.
pub const PIECE: usize = 4 * 1024 * 1024;
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// A fresh temp dir whose name says what made it (removed on drop).
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

/// A fresh, empty directory for a test's output files.
pub fn out_dir() -> tempfile::TempDir {
    temp_dir("dfget-out-")
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, release it), and never handed
/// out before in this test process: the kernel may give a just-released port to the next
/// `bind(0)`, so two tests running side by side could otherwise get the same one and the second
/// daemon to bind it fails with "Address already in use" (seen once in CI).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (splitmix64): same `(len, seed)`, same content; different
/// seeds give different content so a test cannot pass on a stale file.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts `path` holds exactly `expected`, naming the first differing offset instead of
/// printing megabytes of bytes.
pub fn assert_file_is(path: &Path, expected: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_bytes_eq(&got, expected, &path.display().to_string());
}

pub fn assert_bytes_eq(got: &[u8], expected: &[u8], what: &str) {
    if got == expected {
        return;
    }
    let first_diff = got.iter().zip(expected.iter()).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
    panic!(
        "{what}: content differs: got {} bytes, expected {} bytes, first difference at offset {} \
         (piece {})",
        got.len(),
        expected.len(),
        first_diff,
        first_diff / PIECE
    );
}

/// Names of the entries of `dir`, sorted (to show stray temp files in a failure message).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every regular file under `root`, recursively (symlinks are not followed).
pub fn regular_files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// Runs `cmd` with piped output, killing it and panicking if it outlives `limit`, so a hung
/// client fails the test instead of hanging CI.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes on threads: a child blocked on a full pipe would never exit.
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let status = wait_or_kill(&mut child, limit);
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` up to `limit`; on timeout kills it (SIGKILL), reaps it and returns None.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL; always reaps. Never panics (runs in Drop).
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on our own child's pid; it is not reaped yet, so the pid is ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let _ = wait_or_kill(child, grace);
}

/// Polls `f` every 50 ms until it returns true or `limit` passes; returns its last answer.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why a started server never became ready.
#[derive(Debug)]
pub enum NotReady {
    /// The process exited first.
    Exited(ExitStatus),
    /// The limit passed with the process still running.
    TimedOut,
}

/// Polls `ready` every 50 ms for up to `limit` while `child` runs, so a server that dies at
/// start-up is reported at once instead of after the whole limit.
pub fn wait_child_ready(child: &mut Child, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
    let mut exited = None;
    let answered = poll_until(limit, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        ready()
    });
    match (exited, answered) {
        (Some(status), _) => Err(NotReady::Exited(status)),
        (None, true) => Ok(()),
        (None, false) => Err(NotReady::TimedOut),
    }
}

/// Output's stderr as text, for assertions and messages.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with the client's stdout/stderr unless it exited 0.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: dfget failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr_of(out)
    );
}
