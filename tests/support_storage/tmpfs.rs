//! A small tmpfs mounted for the length of one test, so a "disk full" is a real ENOSPC from the
//! kernel rather than a simulated one.
//!
//! Invariant: a `Tmpfs` value exists only while its mount is in place, and Drop unmounts it
//! (lazily if something still holds it), so a failing test never leaves a mount behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Tmpfs {
    mountpoint: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<mib>m tmpfs <dir>` (creating `dir`). Err names why it failed
    /// (not root, no mount(8), a container without CAP_SYS_ADMIN) so a test can print a skip.
    pub fn mount(dir: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount(8): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { mountpoint: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.mountpoint).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there (a daemon that outlived its grace period):
            // detach now, the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).stderr(Stdio::null()).status();
        }
    }
}
