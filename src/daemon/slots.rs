//! The cap on client connections the daemon holds at once, so the accept loop cannot use up the
//! open-file limit that task files, origin connections and the log need too: the front thread takes a
//! `ConnSlot` for each accepted connection before handing it to a core, and the slot goes back
//! when the connection's future ends. With none free the connection is answered `503` at once and
//! closed (`refuse`), on the front thread, without waiting for anything.
//!
//! Invariant: at most `cap` slots are out at any time; a slot is returned exactly once (its drop).

use std::io::Write;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Reads of what a refused client already sent (its request: a few hundred bytes, a download's
/// JSON at most `MAX_API_BODY_BYTES`), so the close is no reset; past this the reset is the
/// client's to handle (it reads the answer first).
const DRAIN_READS: usize = 16;

pub struct ConnSlots {
    /// Shared with every slot, which may be dropped on any core.
    in_use: Arc<AtomicUsize>,
    cap: usize,
    refused: AtomicU64,
}

/// One held client connection; dropping it frees the slot.
pub struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnSlots {
    /// Room for `open_files - RESERVED_FDS` connections, and never fewer than `MIN_CLIENT_SLOTS`
    /// (under a tiny limit `accept` failing with EMFILE is the backstop: the loop pauses).
    pub fn for_open_files(open_files: u64) -> ConnSlots {
        let room = open_files.saturating_sub(crate::limits::RESERVED_FDS);
        let cap = usize::try_from(room).unwrap_or(usize::MAX).max(crate::limits::MIN_CLIENT_SLOTS);
        ConnSlots { in_use: Arc::new(AtomicUsize::new(0)), cap, refused: AtomicU64::new(0) }
    }

    /// A slot, or None when `cap` are out.
    pub fn try_take(&self) -> Option<ConnSlot> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1))
            .ok()
            .map(|_| ConnSlot(self.in_use.clone()))
    }

    /// Answers a connection that found no slot: `503` with the reason, written without blocking
    /// (a fresh socket's send buffer is empty, so it fits; if not, the client just sees the close),
    /// then reads (without waiting) what the client already sent, since closing a Unix socket
    /// with unread data resets it and the client's read would fail after the answer; then the
    /// caller drops (closes) it. Logged on the 1st, 2nd, 4th, 8th… refusal, so a flood
    /// of clients does not also flood the log.
    pub fn refuse(&self, stream: StdStream) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                refused = n,
                cap = self.cap,
                "client connections at the limit of {}: refusing with 503 (raise the open-file limit)",
                self.cap
            );
        }
        let body = format!(
            "{{\"error\":\"the daemon holds {} client connections, its limit (open files minus {} reserved); \
             retry when one ends\"}}",
            self.cap,
            crate::limits::RESERVED_FDS
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = stream;
        if stream.set_nonblocking(true).is_ok() {
            let _ = stream.write_all(answer.as_bytes());
            let mut sink = [0u8; 4096];
            for _ in 0..DRAIN_READS {
                match std::io::Read::read(&mut stream, &mut sink) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_cap_slots_are_out_and_a_dropped_one_comes_back() {
        let slots = ConnSlots::for_open_files(crate::limits::RESERVED_FDS + 20);
        assert_eq!(slots.cap, 20);
        let mut held: Vec<ConnSlot> = (0..20).map(|_| slots.try_take().expect("a free slot")).collect();
        assert!(slots.try_take().is_none(), "a 21st slot");
        assert_eq!(slots.in_use.load(Ordering::Acquire), 20);
        held.pop();
        assert_eq!(slots.in_use.load(Ordering::Acquire), 19);
        assert!(slots.try_take().is_some(), "the freed slot");
    }

    #[test]
    fn a_tiny_or_unlimited_open_file_limit_still_gives_sane_caps() {
        assert_eq!(ConnSlots::for_open_files(10).cap, crate::limits::MIN_CLIENT_SLOTS);
        assert_eq!(ConnSlots::for_open_files(u64::MAX).cap as u64, u64::MAX - crate::limits::RESERVED_FDS);
    }

    #[test]
    fn a_refused_connection_reads_a_503_naming_the_limit() {
        use std::io::Read;
        let slots = ConnSlots::for_open_files(crate::limits::RESERVED_FDS + 20);
        let (ours, theirs) = StdStream::pair().expect("socketpair");
        slots.refuse(ours);
        let mut answer = String::new();
        (&theirs).read_to_string(&mut answer).expect("read to the close");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("holds 20 client connections"), "{answer}");
    }
}
