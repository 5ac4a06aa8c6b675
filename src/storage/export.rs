//! Export: put a finished task file at the user's OUT path, atomically.
//!
//! Order of preference: hard link (one inode — editing OUT in place edits the cache, which is why a
//! reused task is re-verified before linking), reflink (`FICLONE`, copy-on-write), then
//! `copy_file_range`. Always through a temp name in OUT's directory and a `rename`, so OUT is either
//! the old file or the complete new one, and a failure leaves no temp file behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    HardLink,
    Reflink,
    Copy,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::HardLink => "hardlink",
            Method::Reflink => "reflink",
            Method::Copy => "copy",
        }
    }
}

/// Blocking: run off the IO path. Opens `src` and exports it ([`export_file`]), with copies made
/// 0644 (tests; the daemon exports as the caller, through `export_file`).
#[cfg(test)]
pub fn export(src: &Path, out: &Path, allow_link: bool) -> Result<Method> {
    let from = File::open(src).map_err(|e| crate::storage::disk_err(e, src, "open task file"))?;
    export_file(&from, out, allow_link, 0o644, None).map(|(method, _)| method)
}

/// Puts the open task file `src` at `out`. Run it as the caller (`daemon::caller::as_caller`):
/// every step below then has exactly the caller's rights. The link goes through
/// `/proc/self/fd/N`, so the caller needs no access to the data dir's path, and the kernel's
/// `fs.protected_hardlinks` decides whether the caller could have made that link itself; where not,
/// the caller gets a reflink or copy it owns, with mode `copy_mode`. Errors name OUT's side.
pub fn export_file<'a>(
    src: &File,
    out: &Path,
    allow_link: bool,
    copy_mode: u32,
    links: Option<&'a Mutex<()>>,
) -> Result<(Method, Option<MutexGuard<'a, ()>>)> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::client(format!("output directory {} is not a directory", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::client(format!("output directory {} does not exist", dir.display())))
        }
        Err(e) => return Err(out_err(e, &dir, "output directory")),
    }
    // OUT already is this very file (the same download asked again): there is nothing to place.
    if allow_link && is_same_file(src, out) {
        return Ok((Method::HardLink, None));
    }
    let tmp = temp_name(&dir, out);
    // A hard link changes the source's links twice (link, then rename): under `links` throughout.
    let mut held = links.filter(|_| allow_link).map(|m| m.lock().unwrap_or_else(PoisonError::into_inner));
    let result = try_link(src, &tmp, allow_link).and_then(|linked| {
        let method = match linked {
            true => Method::HardLink,
            false => {
                // A copy leaves the source's links alone: others need not wait for it.
                held = None;
                copy_into(src, &tmp, copy_mode)?
            }
        };
        fs::rename(&tmp, out).map_err(|e| out_err(e, out, "rename into place"))?;
        Ok(method)
    });
    // On failure, and when OUT became a link of the same file meanwhile: renaming one hard link
    // over another of the same inode does nothing and leaves the temp name (rename(2)).
    if result.is_err() || fs::symlink_metadata(&tmp).is_ok() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|method| (method, held))
}

/// Whether `out` is a name of the open file `src` (same device and inode).
fn is_same_file(src: &File, out: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (src.metadata(), fs::symlink_metadata(out)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// An error on OUT's side: a full or read-only filesystem, or no permission, is the output's,
/// not the data dir's. A permission problem is the caller's own (OUT is made with its rights), so
/// it is a client error.
pub fn out_err(e: io::Error, path: &Path, what: &str) -> Error {
    let msg = |hint: &str| format!("{what} {}: {e} ({hint})", path.display());
    match e.raw_os_error() {
        Some(libc::ENOSPC) => Error::disk(msg("no space left on the output's filesystem")),
        Some(libc::EDQUOT) => Error::disk(msg("disk quota exceeded on the output's filesystem")),
        Some(libc::EROFS) => Error::disk(msg("the output's filesystem is read-only")),
        Some(libc::EACCES | libc::EPERM) => {
            Error::client(msg("permission denied: dfget writes OUT with your own rights, and you may not write there"))
        }
        _ => Error::disk(format!("{what} {}: {e}", path.display())),
    }
}

fn temp_name(dir: &Path, out: &Path) -> PathBuf {
    let base = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{base}.dfget-{}.tmp", uuid::Uuid::new_v4().simple()))
}

/// Hard-links `src` at `tmp` when allowed. Ok(false): no link possible here (cross-device, a link
/// the caller could not have made under fs.protected_hardlinks, too many links, or no /proc), so
/// the caller copies; anything else is a real error.
fn try_link(src: &File, tmp: &Path, allow_link: bool) -> Result<bool> {
    use std::os::fd::AsRawFd;
    if !allow_link {
        return Ok(false);
    }
    let by_fd = format!("/proc/self/fd/{}", src.as_raw_fd());
    let cwd = rustix::fs::CWD;
    match rustix::fs::linkat(cwd, by_fd.as_str(), cwd, tmp, rustix::fs::AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(true),
        Err(
            rustix::io::Errno::XDEV | rustix::io::Errno::PERM | rustix::io::Errno::MLINK | rustix::io::Errno::NOENT,
        ) => Ok(false),
        Err(e) => Err(out_err(e.into(), tmp, "hard-link task file to")),
    }
}

/// A reflink of `src` at `tmp` where the filesystem can, else an in-kernel copy.
fn copy_into(src: &File, tmp: &Path, copy_mode: u32) -> Result<Method> {
    use std::os::unix::fs::OpenOptionsExt;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(copy_mode)
        .open(tmp)
        .map_err(|e| out_err(e, tmp, "create output temp file"))?;
    if rustix::fs::ioctl_ficlone(&to, src).is_ok() {
        return Ok(Method::Reflink);
    }
    copy_range(src, &to).map_err(|e| out_err(e, tmp, "copy task file to"))?;
    Ok(Method::Copy)
}

/// `copy_file_range` (in-kernel); a plain read/write copy where the kernel refuses it — between
/// filesystems of different types it returns EXDEV since Linux 5.19, and some filesystems lack it.
fn copy_range(mut from: &File, mut to: &File) -> io::Result<()> {
    let len = from.metadata()?.len();
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        let n = match rustix::fs::copy_file_range(from, None, to, None, chunk) {
            Ok(n) => n,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS,
            ) if done == 0 => {
                io::copy(&mut from, &mut to)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank while copying"));
        }
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn hardlink_replaces_existing_output_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"new content").unwrap();
        let out = dir.path().join("out");
        fs::write(&out, b"old").unwrap();
        assert_eq!(export(&src, &out, true).unwrap(), Method::HardLink);
        assert_eq!(fs::read(&out).unwrap(), b"new content");
        assert_eq!(fs::metadata(&out).unwrap().ino(), fs::metadata(&src).unwrap().ino());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temp file left");
    }

    #[test]
    fn exporting_again_over_the_same_link_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"content").unwrap();
        let out = dir.path().join("out");
        assert_eq!(export(&src, &out, true).unwrap(), Method::HardLink);
        assert_eq!(export(&src, &out, true).unwrap(), Method::HardLink);
        assert_eq!(fs::metadata(&out).unwrap().ino(), fs::metadata(&src).unwrap().ino());
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, vec!["out", "src"], "no temp file left by the second export");
    }

    #[test]
    fn copy_when_links_not_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, vec![7u8; 100_000]).unwrap();
        let out = dir.path().join("out");
        let m = export(&src, &out, false).unwrap();
        assert!(matches!(m, Method::Copy | Method::Reflink));
        assert_eq!(fs::read(&out).unwrap(), vec![7u8; 100_000]);
        assert_ne!(fs::metadata(&out).unwrap().ino(), fs::metadata(&src).unwrap().ino());
    }

    #[test]
    fn missing_output_dir_is_a_client_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"x").unwrap();
        let err = export(&src, &dir.path().join("nope/out"), true).unwrap_err();
        assert_eq!(err.source, crate::error::Source::Client);
    }

    #[test]
    fn out_errors_name_the_outputs_filesystem() {
        let p = Path::new("/o/x");
        let full = out_err(io::Error::from_raw_os_error(libc::ENOSPC), p, "copy task file to");
        assert!(full.message.contains("output's filesystem") && !full.message.contains("data dir"), "{}", full.message);
        let denied = out_err(io::Error::from_raw_os_error(libc::EPERM), p, "rename into place");
        assert!(denied.message.contains("permission denied"), "{}", denied.message);
        assert_eq!(denied.source, crate::error::Source::Client);
    }
}
