//! The checks every e2e suite makes after a `dfget` run, once: the exact bytes at OUT
//! (`download_exact`), the failure contract (`assert_dfget_failed`: non-zero exit, a one-line
//! reason, no OUT and nothing else next to it), and "the daemon still serves" after a failure
//! (`assert_still_serves`: healthy, and a fresh two-piece download is exact).
//!
//! Invariant: suites call these instead of keeping copies, so the contract is stated once.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{assert_file_is, content, dir_entries, out_dir, stderr_of, Daemon, TestOrigin, PIECE};

/// Downloads `url` into `dir/name` and checks the file holds exactly `expected`.
pub fn download_exact(daemon: &Daemon, url: &str, dir: &Path, name: &str, expected: &[u8]) -> PathBuf {
    let out = dir.join(name);
    let result = daemon.download(url, &out);
    assert!(
        result.status.success(),
        "{url} -> {name} ({} bytes): dfget failed ({})\nstdout: {}\nstderr: {}\n{}",
        expected.len(),
        result.status,
        String::from_utf8_lossy(&result.stdout),
        stderr_of(&result),
        daemon.diagnostics()
    );
    assert_file_is(&out, expected);
    out
}

/// The failure contract of a `dfget` run that wrote (or would have written) `out`: non-zero
/// exit, exactly one non-empty line on stderr, no `out` and nothing else left in its directory.
/// Returns that line.
pub fn assert_dfget_failed(result: &Output, out: &Path) -> String {
    let stderr = stderr_of(result);
    assert!(!result.status.success(), "dfget succeeded but must fail\nstderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want a one-line reason on stderr, got {stderr:?}");
    assert!(!out.exists(), "a failed download left its output file {}", out.display());
    let parent = out.parent().expect("output has a parent");
    let left = dir_entries(parent);
    assert!(left.is_empty(), "a failed download left files next to the output: {left:?}");
    // Shown with --nocapture: the reasons are what a user reads.
    eprintln!("failed as expected: {}", lines[0]);
    lines[0].to_string()
}

/// Downloads `url` into an empty dir and checks the failure contract; returns the reason.
pub fn assert_download_fails(daemon: &Daemon, url: &str) -> String {
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = daemon.download(url, &out);
    if result.status.success() {
        panic!("{url}: dfget succeeded but must fail\n{}", daemon.diagnostics());
    }
    assert_dfget_failed(&result, &out)
}

/// After a failure: the daemon still answers `/healthy` and serves a fresh two-piece download.
pub fn assert_still_serves(daemon: &Daemon) {
    assert!(daemon.is_healthy(), "daemon unhealthy after a failed download\n{}", daemon.diagnostics());
    let origin = TestOrigin::start();
    let body = content(PIECE + 4099, 0x5EED);
    origin.add("/after-failure.bin", body.clone());
    let dir = out_dir();
    download_exact(daemon, &origin.url("/after-failure.bin"), dir.path(), "after.bin", &body);
}
