//! The two outcomes every ORAS interop test checks after a `dfget` pull: the exact bytes at OUT,
//! or a clean failure (non-zero exit, the named reasons in stderr, no OUT, a daemon still healthy).
//!
//! Invariant: one copy of each check, shared by the registry, TLS and fault suites.

use std::fs;
use std::path::Path;
use std::process::Output;

use super::{stderr_of, OrasDaemon};

pub fn assert_pulled(result: &Output, out: &Path, expected: &[u8], what: &str) {
    assert!(result.status.success(), "{what}: dfget failed ({}): {}", result.status, stderr_of(result));
    let got = fs::read(out).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", out.display()));
    assert!(got == expected, "{what}: got {} bytes, expected {} (contents differ)", got.len(), expected.len());
}

/// Returns stderr for further checks.
pub fn assert_failed_cleanly(daemon: &OrasDaemon, result: &Output, out: &Path, needles: &[&str]) -> String {
    let stderr = stderr_of(result);
    eprintln!("failed as expected: {}", stderr.trim());
    assert!(!result.status.success(), "pull should fail, but exited 0");
    for needle in needles {
        assert!(stderr.to_lowercase().contains(&needle.to_lowercase()), "stderr should mention {needle:?}: {stderr}");
    }
    assert!(!out.exists(), "a failed pull left {}", out.display());
    assert!(daemon.is_healthy(), "daemon unhealthy after a failed pull\n{}", daemon.diagnostics());
    stderr
}
