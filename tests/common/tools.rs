//! External programs the end-to-end tests drive (nginx, tinyproxy, openssl, docker-registry, …):
//! found on `PATH` or in the sbin directories, and installed with apt-get when missing; and the Go
//! programs of `scripts/go-tools.txt` (the oras CLI, distribution v3), built with `go install` into
//! `${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/NAME-VERSION/` when missing, as `scripts/test.sh` does.
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

/// The Go program `name` of `scripts/go-tools.txt`, built with `go install MODULE@VERSION` into
/// the tools cache when it is not there yet (one build at a time per test binary).
pub fn go_tool(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let list = include_str!("../../scripts/go-tools.txt");
    let (module, version) = list
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 3 && f[0] == name)
        .map(|f| (f[1], f[2]))
        .unwrap_or_else(|| panic!("`{name}` is not listed in scripts/go-tools.txt"));
    let cache = std::env::var_os("DFGET_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME or DFGET_TOOLS must be set")).join(".cache/dfget-tools")
    });
    let bin_dir = cache.join(format!("{name}-{version}"));
    let binary = bin_dir.join(name);
    let _one_build = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if binary.is_file() {
        return binary;
    }
    let go = find_binary("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("`{name}` is not built and there is no `go` to build {module}@{version}"));
    eprintln!("harness: go install {module}@{version} into {}", bin_dir.display());
    let status = Command::new(go)
        .args(["install", &format!("{module}@{version}")])
        .env("GOBIN", &bin_dir)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run go: {e}"));
    assert!(status.success() && binary.is_file(), "go install {module}@{version} failed ({status})");
    binary
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
