//! Task storage on disk: where a task's data and metadata live, creating a preallocated task file,
//! verifying a finished one, and exporting it to the user's OUT path.
//!
//! Layout: `<dataDir>/tasks/<id[..2]>/<id>/data` and `.../meta.json`. The two-level fan-out keeps any
//! one directory small when the cache holds many thousands of tasks.
//!
//! Invariant: a task file always has its final length before any piece is written (`fallocate`, or
//! `set_len` where the filesystem cannot preallocate), so positional writes from any core never race
//! on the file size.

pub(crate) mod export;
pub(crate) mod hash;
pub(crate) mod index;
pub mod meta;
pub mod task_id;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The task store rooted at the data dir. Cheap to clone; shared by every core (paths only).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store { root: data_dir.join("tasks") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        let fan = task_id.get(..2).unwrap_or("00");
        self.root.join(fan).join(task_id)
    }

    pub fn data_path(&self, task_id: &str) -> PathBuf {
        self.task_dir(task_id).join("data")
    }

    pub fn meta_path(&self, task_id: &str) -> PathBuf {
        self.task_dir(task_id).join("meta.json")
    }

    /// Creates (or truncates) the task file and gives it its final length. `None` = unknown length:
    /// the file starts empty and grows as a single stream appends to it.
    pub fn create_task_file(&self, task_id: &str, len_bytes: Option<u64>) -> Result<PathBuf> {
        let dir = self.task_dir(task_id);
        private_dir_all(&dir).map_err(|e| disk_err(e, &dir, "create task dir"))?;
        let path = dir.join("data");
        // Always a new inode: an old task file may be hard-linked as some user's OUT, and
        // truncating it in place would rewrite that user's file.
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(disk_err(e, &path, "replace old task file")),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| disk_err(e, &path, "create task file"))?;
        if let Some(len) = len_bytes {
            preallocate(&file, len).map_err(|e| disk_err(e, &path, "preallocate task file"))?;
        }
        Ok(path)
    }

    /// Removes a task's directory (data and metadata). Missing is fine.
    pub fn remove_task(&self, task_id: &str) -> Result<()> {
        let dir = self.task_dir(task_id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(disk_err(e, &dir, "remove task")),
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700: the cache admits only the daemon's uid
/// (OUT reaches a task file through a hard link, never through this path).
pub fn private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `dir` 0700, or makes it 0700 if it exists: older builds left the cache 0755, and
/// the files cached then would stay readable through the path by anyone.
pub fn make_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    private_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// `fallocate` reserves the blocks so a full disk fails now, not mid-download; filesystems without
/// it (tmpfs on old kernels, some FUSE) fall back to a sparse `set_len`.
fn preallocate(file: &File, len_bytes: u64) -> io::Result<()> {
    if len_bytes == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len_bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => file.set_len(len_bytes),
        Err(e) => Err(e.into()),
    }
}

pub fn disk_err(e: io::Error, path: &Path, what: &str) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => " (no space left on the data dir's filesystem)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied: check the data dir's owner)",
        _ => "",
    };
    Error::disk(format!("{what} {}: {e}{hint}", path.display()))
}

/// Recomputes the crc32 of every piece of a finished file and compares with the recorded ones.
/// Blocking: run it off the IO path (`spawn_blocking`).
pub fn verify_pieces(path: &Path, layout: crate::piece::Layout, crcs: &[u32]) -> Result<()> {
    let actual_len = fs::metadata(path).map_err(|e| disk_err(e, path, "stat task file"))?.len();
    if actual_len != layout.content_len_bytes {
        return Err(Error::disk(format!(
            "task file {} has {actual_len} bytes, expected {}",
            path.display(),
            layout.content_len_bytes
        )));
    }
    let good = recheck_pieces(path, layout, &vec![true; crcs.len()], crcs);
    match good.iter().position(|ok| !ok) {
        Some(idx) => {
            Err(Error::disk(format!("task file {} piece {idx} does not match its recorded crc", path.display())))
        }
        None => Ok(()),
    }
}

/// `sha256:<hex>` of a finished task file (one pass over a map of it). Blocking.
pub fn sha256_of(path: &Path, len_bytes: u64) -> Result<crate::digest::Digest> {
    let file = File::open(path).map_err(|e| disk_err(e, path, "open task file"))?;
    let mut h = crate::digest::Hasher::new();
    if len_bytes > 0 {
        // SAFETY: the task file is ours and no writer touches it once all pieces are recorded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| disk_err(e, path, "map task file"))?;
        h.update(&map[..]);
    }
    Ok(h.finish())
}

/// Which of the recorded pieces still match their crc (a resumed task trusts only those).
/// Blocking. Unreadable pieces count as missing.
pub fn recheck_pieces(path: &Path, layout: crate::piece::Layout, done: &[bool], crcs: &[u32]) -> Vec<bool> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = File::open(path) else { return vec![false; done.len()] };
    if file.metadata().map(|m| m.len()).ok() != Some(layout.content_len_bytes) {
        return vec![false; done.len()];
    }
    let mut buf = vec![0u8; layout.piece_len_bytes.min(layout.content_len_bytes).max(1) as usize];
    done.iter()
        .zip(crcs)
        .enumerate()
        .map(|(idx, (was_done, want))| {
            let Some((start, end)) = layout.piece_range(idx as u64) else { return false };
            let n = (end - start) as usize;
            *was_done && file.read_exact_at(&mut buf[..n], start).is_ok() && crc32fast::hash(&buf[..n]) == *want
        })
        .collect()
}

/// The partial pieces whose recorded prefix is still on disk with its crc (the others are fetched
/// whole again). Blocking.
pub fn recheck_partial(
    path: &Path,
    layout: crate::piece::Layout,
    partial: &[meta::PartialPiece],
) -> Vec<meta::PartialPiece> {
    use std::os::unix::fs::FileExt;
    let Ok(file) = File::open(path) else { return Vec::new() };
    let mut buf = Vec::new();
    partial
        .iter()
        .filter(|p| {
            let Some((start, end)) = layout.piece_range(p.idx) else { return false };
            if p.len_bytes == 0 || p.len_bytes >= end - start {
                return false;
            }
            buf.resize(p.len_bytes as usize, 0);
            file.read_exact_at(&mut buf, start).is_ok() && crc32fast::hash(&buf) == p.crc
        })
        .copied()
        .collect()
}

/// Records a task's progress: its metadata, replaced atomically, with no fsync of the task file
/// or of the metadata. Nothing on the download path forces a writeback: the kernel writes the
/// pages back on its own, and a restarted daemon re-checks every recorded piece by crc before it
/// trusts it (a resumed task in `recheck_pieces`, a finished one on its first reuse), so a piece
/// recorded before its bytes reached the disk is fetched again, never served (ARCHITECTURE.md,
/// "Durability without fsync"). Blocking.
pub fn persist_meta(meta_path: &Path, meta: &meta::TaskMeta) -> Result<()> {
    meta::write_unsynced(meta_path, &meta.encode()).map_err(|e| disk_err(e, meta_path, "write task metadata"))
}

/// What identifies the state of a finished task file without reading it: an in-place edit (even
/// through a hard-linked OUT, which shares the inode) changes mtime and ctime, a replacement
/// changes the inode, a truncation the length; ctime cannot be set back by a user. Checked with
/// one `stat` on a cache hit; the full crc check runs only when it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileIdentity {
    pub fn of(path: &Path) -> io::Result<FileIdentity> {
        Ok(FileIdentity::of_metadata(&fs::metadata(path)?))
    }

    /// Of an open file (`fstat`): no path lookup, and no rights needed beyond holding it, so a
    /// job acting as the caller can take it of the task file it was handed.
    pub fn of_file(file: &fs::File) -> io::Result<FileIdentity> {
        Ok(FileIdentity::of_metadata(&file.metadata()?))
    }

    fn of_metadata(m: &fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            nlink: m.nlink(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether `now` is the same content as `self` was. Every write moves mtime (and ctime); a
    /// write whose mtime was set back still moved ctime. A hard link made or removed (an OUT
    /// exported or deleted) moves ctime too, but also the link count: a ctime change that comes
    /// with a link-count change is that, and needs no re-read; any other ctime change does.
    pub fn unchanged_in(&self, now: &FileIdentity) -> bool {
        let same_file = (self.dev, self.ino, self.len, self.mtime) == (now.dev, now.ino, now.len, now.mtime);
        same_file && (self.ctime == now.ctime || self.nlink != now.nlink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn file_identity_sees_edits_but_not_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        fs::write(&path, b"hello world").unwrap();
        let id = FileIdentity::of(&path).unwrap();
        assert!(id.unchanged_in(&FileIdentity::of(&path).unwrap()));
        // A link made and removed (an OUT exported, then deleted): same content.
        let out = dir.path().join("out");
        fs::hard_link(&path, &out).unwrap();
        assert!(id.unchanged_in(&FileIdentity::of(&path).unwrap()), "a new hard link is no edit");
        let linked = FileIdentity::of(&path).unwrap();
        fs::remove_file(&out).unwrap();
        assert!(linked.unchanged_in(&FileIdentity::of(&path).unwrap()), "a removed hard link is no edit");
        // One byte written in place through the file: same inode and length, new mtime/ctime.
        let before = FileIdentity::of(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"J", 6).unwrap();
        let after = FileIdentity::of(&path).unwrap();
        assert_eq!((before.ino, before.len), (after.ino, after.len));
        assert!(!before.unchanged_in(&after), "an in-place write must be seen");
        // A ctime change without a link-count change (chmod, or a write whose mtime was set back).
        let mut restored = after;
        restored.ctime.1 += 1;
        assert!(!after.unchanged_in(&restored));
    }

    #[test]
    fn recreating_a_task_file_never_touches_a_linked_output() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let first = store.create_task_file("ab12", Some(5)).unwrap();
        fs::write(&first, b"hello").unwrap();
        let out = dir.path().join("out");
        fs::hard_link(&first, &out).unwrap();
        let second = store.create_task_file("ab12", Some(3)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello", "the user's hard-linked OUT is unchanged");
        assert_ne!(fs::metadata(&out).unwrap().ino(), fs::metadata(&second).unwrap().ino());
        assert_eq!(fs::metadata(&second).unwrap().len(), 3, "preallocated to the new length");
    }
}
