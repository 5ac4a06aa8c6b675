//! Who is calling, and acting as them. The daemon is root; its callers are not.
//!
//! Every socket connection's peer credentials come from `SO_PEERCRED` (uid, gid, pid at
//! connect time: one `getsockopt`, on the core); the caller's supplementary groups and umask
//! (`Rights`) from `/proc/PID/status`, read only where they are used — on the thread that acts as
//! the caller, never on a core: a procfs read allocates and takes the target's locks, and can
//! stall under memory pressure like any file read. They are trusted only if that process still
//! has the peer's uid (else the caller gets its primary group alone: fewer rights, never more);
//! the client waits on its connection until its export is done, so its pid is still its own.
//!
//! Acting as the caller: Linux keeps the filesystem uid/gid and the supplementary groups per
//! thread in the kernel, but glibc's `setgroups`/`setfsuid` wrappers broadcast to every thread
//! (its setxid machinery). So [`as_caller`] runs the job on a fresh thread that switches with the
//! raw syscalls and then exits: the caller's credentials live exactly as long as the job and
//! never reach a core or a pooled thread. With fsuid ≠ 0 the kernel also drops the thread's
//! filesystem capabilities (DAC override, FOWNER…), so every path lookup, create, link and rename
//! is checked exactly as if the caller had made it — symlinks included.
//!
//! Invariant: nothing touches a caller's files except inside `as_caller`; the switch is verified
//! (setfsuid/setfsgid report the current value) before the job runs, and a failed switch fails
//! the job instead of running it with the daemon's rights.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::limits;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// What a job acting as the caller needs beyond `SO_PEERCRED`, read from `/proc` by `as_caller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    /// Supplementary groups (include `gid`).
    pub groups: Vec<u32>,
    /// The caller's umask, for files the daemon creates for it (copies of a task file).
    pub umask: u32,
}

/// What `/proc/PID/status` says about a process's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcStatus {
    /// Effective uid (the second field of `Uid:`).
    pub euid: Option<u32>,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
}

/// Parses the `Uid:`, `Groups:` and `Umask:` lines of `/proc/PID/status`. Pure.
pub fn parse_status(text: &str) -> ProcStatus {
    let mut st = ProcStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        match key {
            "Uid" => st.euid = value.split_whitespace().nth(1).and_then(|v| v.parse().ok()),
            "Groups" => st.groups = value.split_whitespace().filter_map(|g| g.parse().ok()).collect(),
            "Umask" => st.umask = u32::from_str_radix(value.trim(), 8).ok(),
            _ => {}
        }
    }
    st
}

impl Caller {
    /// The peer of a Unix-socket connection: one `getsockopt`, no file read (safe on a core).
    pub fn of_socket(fd: impl AsFd) -> Result<Caller> {
        let cred = rustix::net::sockopt::socket_peercred(fd)
            .map_err(|e| Error::internal(format!("cannot read the caller's credentials (SO_PEERCRED): {e}")))?;
        Ok(Caller { uid: cred.uid.as_raw(), gid: cred.gid.as_raw(), pid: cred.pid.as_raw_nonzero().get() })
    }

    /// The caller's groups and umask from `<proc_root>/PID/status`. Blocking (a file read): only
    /// on a thread that may wait, never a core.
    fn rights_in(&self, proc_root: &Path) -> Rights {
        let path = proc_root.join(self.pid.to_string()).join("status");
        let status = std::fs::read_to_string(path).map(|t| parse_status(&t)).ok();
        // The pid may have exited (or been reused) since connecting: then its groups are not ours to use.
        let status = status.filter(|s| s.euid == Some(self.uid)).unwrap_or_default();
        let mut groups = status.groups;
        if !groups.contains(&self.gid) {
            groups.push(self.gid);
        }
        groups.truncate(limits::MAX_CALLER_GROUPS);
        Rights { groups, umask: status.umask.unwrap_or(0o022) }
    }

    /// Root, or the daemon's own user: may manage the whole cache.
    pub fn is_privileged(&self) -> bool {
        self.uid == 0 || self.uid == rustix::process::geteuid().as_raw()
    }

    /// Root may be given the daemon's own registry credentials; nobody else.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// How many `as_caller` threads may run at once: a burst of exports queues instead of spawning
/// without bound.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Runs `prepare` with the daemon's rights (e.g. opening the task file), then `job` with the
/// caller's filesystem uid, gid and groups, on one fresh thread that exits afterwards, taking the
/// credentials with it. The caller's `Rights` are read on that thread too, and given to `job`.
pub async fn as_caller<P, T: Send + 'static>(
    caller: &Caller,
    prepare: impl FnOnce() -> Result<P> + Send + 'static,
    job: impl FnOnce(P, &Rights) -> Result<T> + Send + 'static,
) -> Result<T> {
    as_caller_in(PathBuf::from("/proc"), caller, prepare, job).await
}

/// `as_caller` with `/proc` at `proc_root` (a test puts a slow one there).
async fn as_caller_in<P, T: Send + 'static>(
    proc_root: PathBuf,
    caller: &Caller,
    prepare: impl FnOnce() -> Result<P> + Send + 'static,
    job: impl FnOnce(P, &Rights) -> Result<T> + Send + 'static,
) -> Result<T> {
    if !needs_switch(caller) {
        // The daemon's own identity: the shared blocking pool, no thread to start.
        let c = caller.clone();
        let job = move || {
            let rights = c.rights_in(&proc_root);
            prepare().and_then(|p| job(p, &rights))
        };
        return compio::runtime::spawn_blocking(job)
            .await
            .unwrap_or_else(|_| Err(Error::internal("the job acting as the caller panicked")));
    }
    while IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= limits::MAX_CALLER_THREADS {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        // Polling, not a cross-core wake-up: a full pool must never make one core wait on another.
        compio::time::sleep(limits::CALLER_THREAD_POLL).await;
    }
    let (tx, rx) = flume::bounded(1);
    let c = caller.clone();
    let spawned = std::thread::Builder::new().name(format!("as-uid-{}", c.uid)).spawn(move || {
        let rights = c.rights_in(&proc_root);
        let result = prepare().and_then(|p| become_caller(&c, &rights).and_then(|()| job(p, &rights)));
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        return Err(Error::internal(format!("cannot start a thread to act as uid {}: {e}", caller.uid)));
    }
    rx.recv_async().await.unwrap_or_else(|_| Err(Error::internal("the job acting as the caller panicked")))
}

/// Whether the caller is another user than the daemon's (then a switch is needed). The daemon's
/// own user is served with the daemon's identity: root's rights do not come from its groups, and a
/// daemon that is not root could not switch groups anyway. (So a file root copies keeps the
/// daemon's gid even if the caller ran under another group.)
fn needs_switch(c: &Caller) -> bool {
    c.uid != rustix::process::geteuid().as_raw()
}

/// Switches this thread (only) to the caller's filesystem identity. No-op for the daemon's own
/// uid and gid.
fn become_caller(c: &Caller, rights: &Rights) -> Result<()> {
    if !needs_switch(c) {
        return Ok(());
    }
    let refused = |what: &str, e: std::io::Error| {
        Error::internal(format!(
            "cannot act as uid {} ({what}: {e}); a daemon that is not root can serve only its own user",
            c.uid
        ))
    };
    // SAFETY: raw syscalls on this thread's own credentials; `groups` outlives the call and its
    // length is passed with it. The libc wrappers are avoided on purpose (they change every thread).
    unsafe {
        if libc::syscall(libc::SYS_setgroups, rights.groups.len(), rights.groups.as_ptr()) != 0 {
            return Err(refused("setgroups", std::io::Error::last_os_error()));
        }
        libc::syscall(libc::SYS_setfsgid, c.gid);
        libc::syscall(libc::SYS_setfsuid, c.uid);
        // An invalid id changes nothing and returns the current one: the way to check the switch.
        let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        if fsuid != c.uid || fsgid != c.gid {
            return Err(refused("setfsuid", std::io::Error::from_raw_os_error(libc::EPERM)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_lines_give_effective_uid_groups_and_umask() {
        let text = "Name:\tbash\nUmask:\t0027\nState:\tS (sleeping)\nUid:\t1000\t1001\t1000\t1000\n\
                    Gid:\t100\t100\t100\t100\nGroups:\t4 24 27 1000 \n";
        let st = parse_status(text);
        assert_eq!(st, ProcStatus { euid: Some(1001), groups: vec![4, 24, 27, 1000], umask: Some(0o027) });
        assert_eq!(parse_status("Groups:\t\n"), ProcStatus::default());
        assert_eq!(parse_status("garbage"), ProcStatus::default());
    }

    #[test]
    fn the_peer_of_our_own_socket_is_us() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = Caller::of_socket(&a).unwrap();
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
        assert_eq!(c.pid, std::process::id() as i32);
        assert!(c.rights_in(Path::new("/proc")).groups.contains(&c.gid));
        assert!(c.is_privileged());
    }

    /// Regression: `of_socket` read `/proc/PID/status` on the core that took the connection. A
    /// FIFO stands in for that file (a fault: opening it blocks until a writer comes, as a procfs
    /// read can stall under memory pressure, which no real /proc does on demand): the core must
    /// keep running its other work while the read waits, and the job gets the rights read.
    #[test]
    fn a_stalled_proc_read_never_stalls_the_core() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join(std::process::id().to_string());
        std::fs::create_dir(&dir).unwrap();
        let fifo = dir.join("status");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        // The writer answers once the core has turned ten times (or after 3 s, whatever happened).
        let ticked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let me = rustix::process::geteuid().as_raw();
        let status = format!("Uid:\t{me}\t{me}\t{me}\t{me}\nUmask:\t0027\n");
        let seen = ticked.clone();
        let writer = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while !seen.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::fs::write(fifo, status).unwrap();
            seen.load(Ordering::Acquire)
        });
        let rt = compio::runtime::Runtime::new().unwrap();
        let umask = rt.block_on(async {
            let caller = Caller::of_socket(&a).unwrap();
            let root = proc_root.path().to_path_buf();
            let job = compio::runtime::spawn(async move {
                as_caller_in(root, &caller, || Ok(()), |(), rights: &Rights| Ok(rights.umask)).await
            });
            for _ in 0..10 {
                compio::time::sleep(Duration::from_millis(10)).await;
            }
            ticked.store(true, Ordering::Release);
            job.await.unwrap()
        });
        assert!(writer.join().unwrap(), "the core stood still while the /proc read waited");
        assert_eq!(umask.unwrap(), 0o027, "the job got the rights from the status read");
    }

    #[test]
    fn a_job_as_the_callers_uid_sees_its_rights_and_the_daemon_keeps_its_own() {
        // Needs root to switch; as another user only the no-switch path can run.
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root_only = dir.path().to_path_buf(); // 0700, root's
        let nobody = Caller { uid: 65534, gid: 65534, pid: 1 };
        let rt = compio::runtime::Runtime::new().unwrap();
        let p = root_only.join("x");
        let write = move |(), _: &Rights| std::fs::write(&p, b"x").map_err(|e| Error::disk(e.to_string()));
        let got = rt.block_on(as_caller(&nobody, || Ok(()), write));
        assert!(got.is_err(), "nobody wrote into root's 0700 dir");
        assert!(!root_only.join("x").exists());
        // This thread (and the process) still has root's rights.
        std::fs::write(root_only.join("y"), b"y").unwrap();
        assert_eq!(rustix::process::geteuid().as_raw(), 0);
    }
}
