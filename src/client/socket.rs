//! Talking to the daemon from `dfget`: connect (spawning a daemon when none answers), send one
//! request, read the NDJSON event stream. Plain blocking std sockets: the client does one thing at a
//! time and gains nothing from a runtime.
//!
//! Invariant: a spawned daemon is detached (own session, stdio to /dev/null) so it outlives this
//! process, and only one client spawns at a time (a lock file beside the socket).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::limits;
use crate::proto::{ApiRequest, DownloadRequest, Event};

pub enum StreamError {
    Timeout(Duration),
    Other(String),
}

/// Connects to `sock`; when nothing answers and `spawn` is set, starts `dfget daemon` and polls its
/// health for a few seconds.
pub fn connect_or_spawn(sock: &Path, config: Option<&Path>, spawn: bool) -> Result<UnixStream, String> {
    match UnixStream::connect(sock) {
        Ok(s) => return Ok(s),
        // A daemon is there, we may not talk to it: spawning another would not help.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(no_access(sock, &e)),
        Err(_) => {}
    }
    if !spawn {
        return Err(format!("no daemon is listening on {} (start one with `dfget daemon`)", sock.display()));
    }
    let _lock = SpawnLock::take(sock)?;
    // Another client may have spawned one while we waited for the lock.
    if let Ok(s) = UnixStream::connect(sock) {
        return Ok(s);
    }
    spawn_daemon(sock, config)?;
    let deadline = Instant::now() + limits::SPAWN_WAIT;
    while Instant::now() < deadline {
        if crate::proto::healthy(sock) {
            return UnixStream::connect(sock).map_err(|e| format!("daemon started but {}: {e}", sock.display()));
        }
        std::thread::sleep(limits::SPAWN_POLL);
    }
    Err(format!(
        "started a daemon but it did not answer on {} within {:?}; see its log (logDir/daemon/core.log)",
        sock.display(),
        limits::SPAWN_WAIT
    ))
}

/// Says that the socket is there but this user may not use it, and how to get access: the
/// socket's group, which the user can be added to.
pub fn no_access(sock: &Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::getuid().as_raw();
    match std::fs::metadata(sock) {
        Ok(m) => {
            let group = group_name(m.gid()).unwrap_or_else(|| m.gid().to_string());
            format!(
                "permission denied on the daemon's socket {} ({e}): it admits its owner and group `{group}` \
                 (mode {:o}), and uid {me} is in neither; ask an administrator to add you to `{group}` \
                 (usermod -aG {group} USER, then log in again), or run a daemon of your own with --daemon-sock",
                sock.display(),
                m.mode() & 0o777
            )
        }
        Err(_) => format!(
            "permission denied on the daemon's socket {} ({e}): uid {me} may not enter its directory; ask an \
             administrator for access, or run a daemon of your own with --daemon-sock",
            sock.display()
        ),
    }
}

/// The name of group `gid` (NSS: files, LDAP, ...), if it has one.
fn group_name(gid: u32) -> Option<String> {
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes only into `grp` and `buf` (whose length is passed) and sets
    // `found` to `&grp` or null; the strings it points to live in `buf`, read before it drops.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: gr_name is a NUL-terminated string inside `buf`.
    Some(unsafe { std::ffi::CStr::from_ptr(grp.gr_name) }.to_string_lossy().into_owned())
}

fn spawn_daemon(sock: &Path, config: Option<&Path>) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the dfget binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("daemon").arg("--daemon-sock").arg(sock).env("DFGET_SPAWNED", "1");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal and process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map(|_| ()).map_err(|e| format!("cannot start `dfget daemon`: {e}"))
}

/// An exclusive lock file beside the socket, held while spawning.
struct SpawnLock(#[allow(dead_code)] std::fs::File);

impl SpawnLock {
    fn take(sock: &Path) -> Result<SpawnLock, String> {
        if let Some(dir) = sock.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let path = sock.with_extension("spawn.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Ok(SpawnLock(f))
    }
}

/// Sends the download request and reads events until `done` or `error`, which is returned.
pub fn download(
    mut stream: UnixStream,
    req: &DownloadRequest,
    timeout: Option<Duration>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Event, StreamError> {
    let other = |e: String| StreamError::Other(e);
    let body = serde_json::to_vec(req).map_err(|e| other(e.to_string()))?;
    let (method, path) = ApiRequest::Download(req.clone()).target();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: dfdaemon\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let deadline = timeout.map(|t| Instant::now() + t);
    let sent = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
    let mut reader = BufReader::new(stream);
    let status = answer_status(sent, &mut reader).map_err(other)?;
    if status != 200 {
        let mut rest = String::new();
        let _ = reader.take(64 * 1024).read_to_string(&mut rest);
        return Err(other(format!("daemon refused the request ({status}): {}", rest.trim())));
    }
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StreamError::Timeout(timeout.unwrap_or_default()));
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(other("the daemon closed the connection mid-download (did it crash? see core.log)".into()))
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(StreamError::Timeout(timeout.unwrap_or_default()))
            }
            Err(e) => return Err(other(format!("reading from the daemon: {e}"))),
        }
        let ev: Event =
            serde_json::from_str(line.trim()).map_err(|e| other(format!("bad event from the daemon: {e}")))?;
        on_event(&ev);
        if matches!(ev, Event::Done { .. } | Event::Error { .. }) {
            return Ok(ev);
        }
    }
}

/// The status of the daemon's answer, also when sending failed: a daemon at its connection limit
/// answers 503 and closes without reading, which can break our write; its answer is the reason.
pub(crate) fn answer_status(sent: std::io::Result<()>, reader: &mut impl BufRead) -> Result<u16, String> {
    match (sent, read_status(reader)) {
        (_, Ok(status)) => Ok(status),
        (Err(e), Err(_)) => Err(format!("sending to the daemon: {e}")),
        (Ok(()), Err(e)) => Err(e),
    }
}

pub(crate) fn read_status(reader: &mut impl BufRead) -> Result<u16, String> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(|e| format!("reading from the daemon: {e}"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from the daemon socket: {:?}", status_line.trim()))?;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| format!("reading from the daemon: {e}"))?;
        if n == 0 || line == "\r\n" || line == "\n" {
            return Ok(status);
        }
    }
}

/// One small request/response exchange with the daemon: (status, body).
pub fn request(sock: &Path, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = UnixStream::connect(sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => no_access(sock, &e),
        _ => format!("no daemon is listening on {} ({e}); start one with `dfget daemon`", sock.display()),
    })?;
    let _ = s.set_read_timeout(Some(limits::CONTROL_REQUEST_TIMEOUT));
    let req = format!("{method} {path} HTTP/1.1\r\nHost: dfdaemon\r\nContent-Length: 0\r\n\r\n");
    let sent = s.write_all(req.as_bytes());
    let mut reader = BufReader::new(s);
    let status = answer_status(sent, &mut reader)?;
    let mut body = String::new();
    reader.take(16 * 1024 * 1024).read_to_string(&mut body).map_err(|e| format!("reading from the daemon: {e}"))?;
    Ok((status, body))
}
