//! External programs the end-to-end tests drive (nginx, tinyproxy, openssl, docker-registry, …):
//! found on `PATH` or in the sbin directories, and installed with apt-get when missing.
//!
//! Invariant: within one test binary installs run one at a time (parallel tests would fight over
//! the dpkg lock) and `apt-get update` runs at most once; a tool that cannot be found or installed
//! fails the test loudly, naming the package — a test never silently skips a real server.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The binary `name`, installed with apt-get (trying `packages` in order) when it is missing.
pub fn ensure_tool(name: &str, packages: &[&str]) -> PathBuf {
    // Holds "apt-get update has run": one install at a time, one update per process.
    static INSTALL: Mutex<bool> = Mutex::new(false);
    if let Some(found) = find_binary(name) {
        return found;
    }
    let mut updated = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    // Another test may have installed it while this one waited for the lock.
    if let Some(found) = find_binary(name) {
        return found;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "`{name}` is missing and this is not root: run `apt-get install -y {}`", packages[0]);
    if !*updated {
        if !apt(&["update"]) {
            eprintln!("harness: apt-get update failed");
        }
        *updated = true;
    }
    for package in packages {
        if apt(&["install", "-y", "--no-install-recommends", package]) {
            break;
        }
    }
    find_binary(name).unwrap_or_else(|| {
        panic!("`{name}` is required and `apt-get install {}` did not provide it (see output above)", packages[0])
    })
}

/// `name` in a `PATH` directory, else in /usr/sbin, /usr/bin or /sbin (root's tools are often
/// not on a test runner's `PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn apt(args: &[&str]) -> bool {
    eprintln!("harness: apt-get {}", args.join(" "));
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or_else(|e| {
            eprintln!("harness: cannot run apt-get: {e}");
            false
        })
}
