//! One task's place in the cluster, shared by the compio cores (piece workers read which parent
//! has which piece) and the control-plane thread (SyncPieces streams write it, the AnnouncePeer
//! conversation reads the reports). Lock-free: a fixed table of parent slots, one atomic bitmask
//! of holders per piece, atomics for the mode and the parents given up on.
//!
//! Invariant: a slot's bit is published in `has` only after the slot's address is set, so a
//! worker that sees a bit can always read the parent it names.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::clock::now_unix_ms;

/// Parents one task may ever use (3 per scheduling round, up to 5 reschedules, with room to
/// spare); each is one bit of a `u32` mask.
pub const MAX_PARENTS: usize = 32;

/// How the task's pieces are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Waiting for the scheduler's first answer.
    Registering = 0,
    /// Pieces come from the parents when they have them, else from the origin.
    Parents = 1,
    /// Every piece from the origin (scheduler said so, or is unreachable).
    BackToSource = 2,
}

/// A parent peer, as the scheduler named it.
#[derive(Debug)]
pub struct Parent {
    pub peer_id: String,
    pub host_id: String,
    /// The gRPC (DfdaemonUpload) address: `Host.ip:Host.port`.
    pub grpc_addr: SocketAddr,
    /// Where its Vortex server is, from its SyncPieces answers.
    pub vortex_addr: OnceLock<SocketAddr>,
}

/// Where one piece was obtained, for the scheduler report.
#[derive(Debug, Clone)]
pub struct PieceReport {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    pub crc: u32,
    /// None = from the origin.
    pub parent_id: Option<String>,
    pub cost_ms: u64,
    pub created_at_unix_ms: u64,
}

/// What the cores tell the scheduler about this task (through the control-plane thread).
#[derive(Debug, Clone)]
pub enum Report {
    Piece(PieceReport),
    /// A parent failed to give a piece (unreachable, refused, bad crc).
    PieceFailed {
        number: u32,
        parent_id: String,
    },
    /// Every parent is exhausted: ask for new ones.
    Reschedule,
    Finished,
    Failed(String),
}

pub struct PeerTask {
    /// The cluster's (Dragonfly Rust) task id.
    pub cluster_id: String,
    pub peer_id: String,
    pub n_pieces: u64,
    /// This peer's layout of the task: a parent's announced pieces must have the same bounds.
    pub layout: crate::piece::Layout,
    mode: AtomicU8,
    slots: Box<[OnceLock<Parent>]>,
    n_slots: AtomicUsize,
    /// Per piece: which parent slots have announced it.
    has: Box<[AtomicU32]>,
    /// Parents given up on (a failed fetch, a bad crc, a broken SyncPieces stream).
    dead: AtomicU32,
    /// SyncPieces streams still open.
    pub live_streams: AtomicUsize,
    /// Last time any parent announced a piece or a parent was added (unix ms).
    last_news_unix_ms: AtomicU64,
    pub reschedules: AtomicU32,
    /// Set by the first piece that arrived from a parent (logged once per task).
    pub got_from_parent: std::sync::atomic::AtomicBool,
    /// Wakes piece workers (on any core) waiting for a parent to announce a piece; notified from
    /// the control-plane thread. A `wake::Signal`: one relay wake per core, whatever the waiters.
    pub event: crate::wake::Signal,
    reports: tokio::sync::mpsc::Sender<Report>,
}

impl PeerTask {
    pub fn new(
        cluster_id: String,
        peer_id: String,
        layout: crate::piece::Layout,
        reports: tokio::sync::mpsc::Sender<Report>,
    ) -> PeerTask {
        let n_pieces = layout.n_pieces();
        PeerTask {
            cluster_id,
            peer_id,
            n_pieces,
            layout,
            mode: AtomicU8::new(Mode::Registering as u8),
            slots: (0..MAX_PARENTS).map(|_| OnceLock::new()).collect(),
            n_slots: AtomicUsize::new(0),
            has: (0..n_pieces).map(|_| AtomicU32::new(0)).collect(),
            dead: AtomicU32::new(0),
            live_streams: AtomicUsize::new(0),
            last_news_unix_ms: AtomicU64::new(now_unix_ms()),
            reschedules: AtomicU32::new(0),
            got_from_parent: std::sync::atomic::AtomicBool::new(false),
            event: crate::wake::Signal::new(),
            reports,
        }
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Registering,
            1 => Mode::Parents,
            _ => Mode::BackToSource,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Release);
        self.event.notify();
    }

    /// Adds a parent; returns its slot, or None when the table is full or it is known already.
    pub fn add_parent(&self, parent: Parent) -> Option<usize> {
        if self.parents().any(|(_, p)| p.peer_id == parent.peer_id) {
            return None;
        }
        let slot = self.n_slots.fetch_add(1, Ordering::AcqRel);
        if slot >= MAX_PARENTS {
            return None;
        }
        let _ = self.slots[slot].set(parent);
        self.news();
        Some(slot)
    }

    /// The parents added so far, with their slots.
    pub fn parents(&self) -> impl Iterator<Item = (usize, &Parent)> {
        let n = self.n_slots.load(Ordering::Acquire).min(MAX_PARENTS);
        (0..n).filter_map(|i| self.slots[i].get().map(|p| (i, p)))
    }

    pub fn parent(&self, slot: usize) -> Option<&Parent> {
        self.slots.get(slot).and_then(|s| s.get())
    }

    /// A parent announced a piece (from its SyncPieces stream).
    pub fn announce(&self, slot: usize, piece: u64) {
        if let Some(h) = self.has.get(piece as usize) {
            h.fetch_or(1 << slot, Ordering::AcqRel);
            self.news();
        }
    }

    fn news(&self) {
        self.last_news_unix_ms.store(now_unix_ms(), Ordering::Release);
        self.event.notify();
    }

    /// Live parents that have `piece`, best first: spread over parents by piece number so that
    /// several children of one parent set do not all hit the same parent.
    pub fn holders(&self, piece: u64) -> Vec<usize> {
        let mask = self.has.get(piece as usize).map(|h| h.load(Ordering::Acquire)).unwrap_or(0)
            & !self.dead.load(Ordering::Acquire);
        let mut slots: Vec<usize> = (0..MAX_PARENTS).filter(|s| mask & (1 << s) != 0).collect();
        if !slots.is_empty() {
            let k = piece as usize % slots.len();
            slots.rotate_left(k);
        }
        slots
    }

    pub fn give_up_on(&self, slot: usize) {
        self.dead.fetch_or(1 << slot, Ordering::AcqRel);
        self.event.notify();
    }

    /// True when no parent can still announce anything: every stream ended or every parent died.
    pub fn parents_exhausted(&self) -> bool {
        let n = self.n_slots.load(Ordering::Acquire).min(MAX_PARENTS);
        let all_dead = n > 0 && (0..n).all(|s| self.dead.load(Ordering::Acquire) & (1 << s) != 0);
        all_dead || self.live_streams.load(Ordering::Acquire) == 0
    }

    pub fn ms_since_news(&self) -> u64 {
        now_unix_ms().saturating_sub(self.last_news_unix_ms.load(Ordering::Acquire))
    }

    /// Queues a report for the scheduler; never blocks a core (a full queue drops the report: the
    /// scheduler uses them as hints, the download does not depend on them).
    pub fn report(&self, r: Report) {
        if self.reports.try_send(r).is_err() {
            tracing::debug!(task = %self.cluster_id, "scheduler report queue full or closed; report dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(id: &str) -> Parent {
        Parent {
            peer_id: id.into(),
            host_id: format!("h-{id}"),
            grpc_addr: "127.0.0.1:4000".parse().unwrap(),
            vortex_addr: OnceLock::new(),
        }
    }

    #[test]
    fn holders_follow_announcements_and_skip_dead_parents() {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        let a = t.add_parent(parent("a")).unwrap();
        let b = t.add_parent(parent("b")).unwrap();
        assert_eq!(t.add_parent(parent("a")), None, "a parent is added once");
        assert!(t.holders(0).is_empty());
        t.announce(a, 0);
        t.announce(b, 0);
        t.announce(b, 1);
        t.announce(a, 99);
        let mut h0 = t.holders(0);
        h0.sort();
        assert_eq!(h0, vec![a, b]);
        assert_eq!(t.holders(1), vec![b]);
        t.give_up_on(b);
        assert_eq!(t.holders(0), vec![a]);
        assert!(t.holders(1).is_empty());
        assert!(t.parents_exhausted(), "no stream is open");
        t.live_streams.store(1, Ordering::Release);
        assert!(!t.parents_exhausted());
        t.give_up_on(a);
        assert!(t.parents_exhausted(), "every parent is dead");
    }

    #[test]
    fn reports_never_block_when_the_queue_is_full() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(1), tx);
        t.report(Report::Finished);
        t.report(Report::Finished);
        assert!(matches!(rx.try_recv(), Ok(Report::Finished)));
        assert!(rx.try_recv().is_err());
    }
}
