//! Harness for the ORAS end-to-end tests: a real `docker-registry` (Debian's distribution 2.8.2)
//! with optional htpasswd or token auth, a test token service, artifact pushes with oras-py, and a
//! `dfget daemon` whose docker config and `$HOME` live in its own temp dir.
//!
//! Invariant: every process or thread started here is stopped by a `Drop` impl (SIGTERM, ≤3 s
//! grace, SIGKILL), so a panicking test leaves nothing running; and no spawned process ever reads
//! the real user's `$HOME` or docker config (both point into temp dirs).

// Each test uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod push;
pub mod registry;
pub mod token;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use daemon::{DaemonOpts, OrasDaemon};
pub use push::{push, Layer, PushAuth, PushSpec, Pushed};
pub use registry::{BlobRequest, Registry, RegistryAuth};
pub use token::{TokenRequest, TokenServer};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
/// The media type the daemon accepts for the one layer of an image.
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
pub const SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";

/// Checks once per test binary that docker-registry, htpasswd, openssl and oras-py are there,
/// installing what is missing; panics with the reason when that is impossible, because a test
/// that silently skips the real servers proves nothing.
pub fn ensure_tools() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(install_missing) {
        panic!("ORAS e2e prerequisites missing: {e}");
    }
}

fn install_missing() -> Result<(), String> {
    let mut packages = Vec::new();
    if !on_path("docker-registry") {
        packages.push("docker-registry");
    }
    if !on_path("htpasswd") {
        packages.push("apache2-utils");
    }
    if !on_path("openssl") {
        packages.push("openssl");
    }
    if !packages.is_empty() {
        run_ok(Command::new("apt-get").arg("update"), "apt-get update")?;
        run_ok(Command::new("apt-get").args(["install", "-y"]).args(&packages), "apt-get install")?;
    }
    let has_oras =
        || Command::new("python3").args(["-c", "import oras.client"]).output().is_ok_and(|o| o.status.success());
    if !has_oras() {
        run_ok(Command::new("python3").args(["-m", "pip", "install", "oras"]), "pip install oras")?;
        if !has_oras() {
            return Err("python3 cannot import oras.client even after `pip install oras`".into());
        }
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
}

/// A fresh temp dir whose name says which test made it.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

/// A port that was free a moment ago: nothing listens on it once this returns.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Deterministic pseudo-random bytes (xorshift64*): a different seed gives different content, so
/// a test cannot pass on a file left over from another test.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Names of the entries of `dir`, sorted, so a stray temp file shows in the failure message.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every regular file under `root`, recursively.
pub fn regular_files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    out
}

/// Runs `cmd` to completion with piped output; kills it and panics if it outlives `limit`, so a
/// hung client fails the test instead of hanging the suite.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes on threads: a child blocked on a full pipe would never exit.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_or_kill(&mut child, limit);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` up to `limit`; on timeout SIGKILLs and reaps it and returns None.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
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

/// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps. Never panics (runs in Drop).
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own, not yet reaped child: the pid cannot belong to anyone else.
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

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
