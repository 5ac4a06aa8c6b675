//! The front door: one thread that owns the API socket, accepts every connection, answers
//! `GET /healthy` itself and hands every other connection, unread, to a core's inbox
//! (round-robin).
//!
//! Why a thread of its own and not an accept loop on core 0: a health probe must never wait
//! behind bulk work. With 10,000 clients on one task, core 0 ran thousands of ready futures per
//! turn (the connect burst, then the export burst) and a probe's connection waited seconds, first
//! for the accept future's turn, then in an inbox behind thousands of connections, then for its
//! own request read (PERF.md, waiters). Here the only work ahead of a probe is accepting the
//! connections that arrived before it (a peek and an inbox send each: microseconds). The thread
//! never waits on a core — inboxes are unbounded flume senders — and touches no file.
//!
//! Invariant: a connection is answered here only when its first bytes, peeked without being
//! consumed, are a complete bodyless head that `ApiRequest::parse` calls `Healthy`; any other
//! connection (a head split over several writes included) reaches a core with every byte still
//! unread. One that has said nothing after `FRONT_WAIT` goes to a core too, whose
//! `API_REQUEST_TIMEOUT` then applies, and at most `FRONT_PENDING` wait here at once.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketFlags};

use crate::daemon::serving::json_response;
use crate::daemon::shared::{CoreMsg, Shared};
use crate::daemon::slots::ConnSlot;
use crate::limits;
use crate::proto::{ApiRequest, Health};

/// What the front does with a connection, from the bytes it has sent so far. Pure: [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A complete `GET /healthy` head of `head_len` bytes and no body: answer it here.
    Health { head_len: usize },
    /// Anything else: a core reads it.
    Core,
    /// Nothing sent yet: look again when something arrives.
    Wait,
}

/// The health answer, the same wherever it is given.
pub fn health(shared: &Shared) -> Health {
    Health {
        ok: true,
        driver: shared.driver.clone(),
        cores: shared.cores.len(),
        tasks: shared.index.len() + shared.rested.len(),
    }
}

/// Judges the first bytes a client sent. A head that is not complete in what arrived goes to a
/// core: peeked bytes keep the socket readable, so waiting here for the rest would spin.
pub fn judge(bytes: &[u8]) -> Verdict {
    if bytes.is_empty() {
        return Verdict::Wait;
    }
    const PREFIX: &[u8] = b"GET /healthy";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Verdict::Core;
    }
    let mut headers = [httparse::EMPTY_HEADER; limits::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => {
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
            });
            let route = ApiRequest::parse(req.method.unwrap_or(""), req.path.unwrap_or(""), b"");
            match route {
                Ok(ApiRequest::Healthy) if !has_body => Verdict::Health { head_len },
                _ => Verdict::Core,
            }
        }
        Ok(httparse::Status::Partial) | Err(_) => Verdict::Core,
    }
}

/// Starts the front thread on `listener`; it stops once `shared.shutting_down` is set.
pub fn start(shared: Arc<Shared>, listener: StdListener) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("front".into()).spawn(move || run(&shared, &listener))
}

/// A connection that has not said enough yet, with the slot it holds (`daemon::slots`).
struct Waiting {
    stream: StdStream,
    slot: ConnSlot,
    since: Instant,
}

fn run(shared: &Shared, listener: &StdListener) {
    let mut waiting: Vec<Waiting> = Vec::new();
    while !shared.shutting_down.load(Ordering::Acquire) {
        let (accept_ready, ready) = wait_ready(listener, &waiting);
        let mut still = Vec::with_capacity(waiting.len());
        for (w, r) in waiting.drain(..).zip(ready) {
            let expired = w.since.elapsed() >= limits::FRONT_WAIT;
            if r || expired {
                if let Some(w) = dispatch(shared, w, expired) {
                    still.push(w);
                }
            } else {
                still.push(w);
            }
        }
        waiting = still;
        if accept_ready {
            accept_some(shared, listener, &mut waiting);
        }
    }
}

/// Polls the listener and the waiting connections, at most until the oldest one's `FRONT_WAIT`
/// ends or `FRONT_TICK` (the shutdown check) passes. Returns (listener ready, each one ready).
fn wait_ready(listener: &StdListener, waiting: &[Waiting]) -> (bool, Vec<bool>) {
    let now = Instant::now();
    let timeout = waiting
        .iter()
        .map(|w| (w.since + limits::FRONT_WAIT).saturating_duration_since(now))
        .fold(limits::FRONT_TICK, Duration::min);
    let pollfd = |fd: i32| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let mut fds = Vec::with_capacity(waiting.len() + 1);
    fds.push(pollfd(listener.as_raw_fd()));
    fds.extend(waiting.iter().map(|w| pollfd(w.stream.as_raw_fd())));
    // SAFETY: `fds` is a live array of `fds.len()` pollfds whose fds outlive the call (owned by
    // `listener` and `waiting`, borrowed for its duration). EINTR is "nothing ready yet".
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis().max(1) as libc::c_int) };
    let accept_ready = fds[0].revents != 0;
    (accept_ready, fds[1..].iter().map(|f| f.revents != 0).collect())
}

/// Accepts what the backlog holds, up to `FRONT_ACCEPT_BATCH` (then the waiting ones get a look).
fn accept_some(shared: &Shared, listener: &StdListener, waiting: &mut Vec<Waiting>) {
    for _ in 0..limits::FRONT_ACCEPT_BATCH {
        // Blocking sockets, as the cores' runtimes expect from `from_std`; peeks pass DONTWAIT.
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => {
                let stream = StdStream::from(fd);
                // Waiting here counts against the cap too: a slot per connection from its accept.
                let Some(slot) = shared.conn_slots.try_take() else {
                    shared.conn_slots.refuse(stream);
                    continue;
                };
                let w = Waiting { stream, slot, since: Instant::now() };
                if let Some(w) = dispatch(shared, w, false) {
                    if waiting.len() >= limits::FRONT_PENDING {
                        // Full: the oldest goes to a core undecided (the core reads it normally).
                        hand_off(shared, waiting.remove(0));
                    }
                    waiting.push(w);
                }
            }
            Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::CONNABORTED) => return,
            Err(e) => {
                // Out of fds (EMFILE, ENFILE): the listener stays readable, so pause rather than spin.
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(limits::FRONT_ACCEPT_BACKOFF);
                return;
            }
        }
    }
}

/// Answers, hands off or keeps (returned) one connection. `expired`: it had its `FRONT_WAIT`.
fn dispatch(shared: &Shared, w: Waiting, expired: bool) -> Option<Waiting> {
    let mut buf = [0u8; limits::FRONT_PEEK_BYTES];
    let verdict = match rustix::net::recv(&w.stream, &mut buf[..], RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        // The client closed (or broke) before asking anything: nothing to answer.
        Ok((0, _)) => return None,
        Ok((n, _)) => judge(&buf[..n]),
        Err(Errno::AGAIN) | Err(Errno::INTR) => Verdict::Wait,
        Err(_) => return None,
    };
    match verdict {
        Verdict::Health { head_len } => answer_health(shared, &w.stream, &mut buf[..head_len]),
        Verdict::Wait if !expired => return Some(w),
        Verdict::Core | Verdict::Wait => hand_off(shared, w),
    }
    None
}

/// Reads the health request's head (so closing with unread bytes cannot reset the client) and
/// writes the answer: well under any socket buffer, so one non-blocking send takes it whole.
fn answer_health(shared: &Shared, stream: &StdStream, head: &mut [u8]) {
    shared.last_request_unix_ms.store(crate::clock::now_unix_ms(), Ordering::Release);
    let _ = rustix::net::recv(stream, head, RecvFlags::DONTWAIT);
    let Ok(resp) = json_response(200, &health(shared)) else { return };
    match rustix::net::send(stream, &resp, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
        Ok(n) if n == resp.len() => {}
        Ok(n) => tracing::debug!("health answer cut at {n} of {} bytes", resp.len()),
        Err(e) => tracing::debug!("health answer not sent: {e}"),
    }
}

fn hand_off(shared: &Shared, w: Waiting) {
    let _ = shared.pick_core().send(CoreMsg::Conn(w.stream, w.slot));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &str, expected: Verdict) {
        assert_eq!(judge(bytes.as_bytes()), expected, "{bytes:?}");
    }

    #[test]
    fn only_a_complete_bodyless_health_head_is_answered_at_the_front() {
        let probe = "GET /healthy HTTP/1.1\r\nHost: dfdaemon\r\n\r\n";
        check(probe, Verdict::Health { head_len: probe.len() });
        let q = "GET /healthy?x=1 HTTP/1.1\r\n\r\n";
        check(q, Verdict::Health { head_len: q.len() });
        let zero = "GET /healthy HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        check(zero, Verdict::Health { head_len: zero.len() });
        // Pipelined bytes after the head stay unread: only the head is consumed.
        check(&format!("{probe}GET /tasks"), Verdict::Health { head_len: probe.len() });
        // A body, chunked or not, is the core's to read.
        check("GET /healthy HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", Verdict::Core);
        check("GET /healthy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Verdict::Core);
    }

    #[test]
    fn everything_else_goes_to_a_core_as_soon_as_its_first_bytes_arrive() {
        check("P", Verdict::Core);
        check("POST /download HTTP/1.1\r\n", Verdict::Core);
        check("GET /tasks HTTP/1.1\r\n\r\n", Verdict::Core);
        check("GET /healthyx HTTP/1.1\r\n\r\n", Verdict::Core);
        check("GET /healthy HTTP/1.1\r\nbad header\r\n\r\n", Verdict::Core);
        // An incomplete head: the core reads the rest (peeked bytes would keep the front spinning).
        check("GE", Verdict::Core);
        check("GET /healthy HTTP/1.1\r\nHost: x\r\n", Verdict::Core);
        check("", Verdict::Wait);
    }
}
