//! One task's place in the cluster, shared by the compio cores (piece workers read which parent
//! has which piece) and the control-plane thread (SyncPieces streams write it, the AnnouncePeer
//! conversation reads the reports). Lock-free: a fixed table of parent slots, one atomic bitmask
//! of holders per piece, atomics for the mode and the parents given up on, and — once the task
//! trades pieces with parents — an atomic bitmap of the pieces this peer's workers have taken and
//! a count of fetches in flight per parent, from which `pick` chooses each worker's next piece.
//!
//! Invariant: a slot's bit is published in `has` only after the slot's address is set, so a
//! worker that sees a bit can always read the parent it names. A piece is taken by one worker at
//! a time (its bit in `taken` set by that worker's `fetch_or`), and given back only by it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::clock::mono_ms;
use crate::limits;
use crate::p2p::pick::{self, Piece};
use crate::piece::bitmap::AtomicBitmap;

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
    /// It was downloading from the origin when the scheduler named it (state `BackToSource`):
    /// a source parent, left to the children with no other parent (`pick::usable`).
    pub source: bool,
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
    /// Per piece: when a parent first announced it (`clock::mono_ms`; 0 = not yet).
    first_announced_ms: Box<[AtomicU64]>,
    /// The slots of source parents (`Parent::source`).
    source: AtomicU32,
    /// Parents given up on (a failed fetch, a bad crc, a broken SyncPieces stream).
    dead: AtomicU32,
    /// SyncPieces streams still open.
    pub live_streams: AtomicUsize,
    /// Last time any parent announced a piece or a parent was added (`clock::mono_ms`).
    last_news_ms: AtomicU64,
    pub reschedules: AtomicU32,
    /// Set by the first piece that arrived from a parent (logged once per task).
    pub got_from_parent: std::sync::atomic::AtomicBool,
    /// Wakes piece workers (on any core) waiting for a parent to announce a piece; notified from
    /// the control-plane thread. A `wake::Signal`: one relay wake per core, whatever the waiters.
    pub event: crate::wake::Signal,
    reports: tokio::sync::mpsc::Sender<Report>,
    /// Workers take pieces through `take_held`/`take_any` instead of the task's cursor: set once,
    /// when the scheduler's first answer gave parents (`start_trading`).
    trading: AtomicBool,
    /// Pieces this peer's workers have taken (trading only); a failed parent fetch gives its
    /// piece back (`release`).
    taken: AtomicBitmap,
    /// Vortex fetches in flight from this peer to each parent slot (`InFlight`).
    in_flight: Box<[AtomicU32]>,
    /// Per parent slot, the rate its last pieces came at (KiB/s, a moving average; 0 = none yet).
    rate_kib_s: Box<[AtomicU32]>,
    /// This peer's order of the pieces (`pick::seed_of` its peer id).
    seed: u64,
    /// The task's piece workers when trading (set by `start_trading`), split over the parents
    /// by `pick::full_slots`.
    n_workers: AtomicU32,
}

/// One fetch from a parent slot, counted in `PeerTask::in_flight` while it lives; its end wakes
/// workers waiting for a parent to have room (`fetch::next_pick`).
pub struct InFlight<'a>(&'a PeerTask, usize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight[self.1].fetch_sub(1, Ordering::AcqRel);
        self.0.event.notify();
    }
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
            n_pieces,
            layout,
            mode: AtomicU8::new(Mode::Registering as u8),
            slots: (0..MAX_PARENTS).map(|_| OnceLock::new()).collect(),
            n_slots: AtomicUsize::new(0),
            has: (0..n_pieces).map(|_| AtomicU32::new(0)).collect(),
            first_announced_ms: (0..n_pieces).map(|_| AtomicU64::new(0)).collect(),
            source: AtomicU32::new(0),
            dead: AtomicU32::new(0),
            live_streams: AtomicUsize::new(0),
            last_news_ms: AtomicU64::new(mono_ms()),
            reschedules: AtomicU32::new(0),
            got_from_parent: std::sync::atomic::AtomicBool::new(false),
            event: crate::wake::Signal::new(),
            reports,
            trading: AtomicBool::new(false),
            taken: AtomicBitmap::new(n_pieces),
            in_flight: (0..MAX_PARENTS).map(|_| AtomicU32::new(0)).collect(),
            rate_kib_s: (0..MAX_PARENTS).map(|_| AtomicU32::new(0)).collect(),
            seed: pick::seed_of(&peer_id),
            n_workers: AtomicU32::new(1),
            peer_id,
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
        let source = parent.source;
        let _ = self.slots[slot].set(parent);
        if source {
            self.source.fetch_or(1 << slot, Ordering::AcqRel);
        }
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
            // The time first, then the bit: a reader that sees the holder also sees the piece's age.
            let first = &self.first_announced_ms[piece as usize];
            let _ = first.compare_exchange(0, mono_ms(), Ordering::AcqRel, Ordering::Acquire);
            h.fetch_or(1 << slot, Ordering::AcqRel);
            self.news();
        }
    }

    fn news(&self) {
        self.last_news_ms.store(mono_ms(), Ordering::Release);
        self.event.notify();
    }

    /// Live parents that have `piece` and may be asked (`usable_holders`), best first: the
    /// cheapest one more fetch (`pick::costs`) first, ties spread over parents by piece number so
    /// that several children of one parent set do not all hit the same parent.
    pub fn holders(&self, piece: u64) -> Vec<usize> {
        let mask = self.usable_holders(piece, 0);
        let mut slots: Vec<usize> = (0..MAX_PARENTS).filter(|s| mask & (1 << s) != 0).collect();
        if !slots.is_empty() {
            let k = piece as usize % slots.len();
            slots.rotate_left(k);
            let cost = self.costs();
            slots.sort_by_key(|s| cost[*s]);
        }
        slots
    }

    fn costs(&self) -> Vec<u32> {
        let load = |v: &[AtomicU32]| v.iter().map(|c| c.load(Ordering::Acquire)).collect::<Vec<u32>>();
        pick::costs(&load(&self.in_flight), &load(&self.rate_kib_s))
    }

    /// A whole piece of `len_bytes` came from `slot` in `took`: feeds the slot's rate (a moving
    /// average, the last piece weighing a quarter, so a parent that slows down is seen soon).
    pub fn note_rate(&self, slot: usize, len_bytes: u64, took: std::time::Duration) {
        let sample = (len_bytes as u128 * 1000 / 1024 / took.as_millis().max(1)).clamp(1, u32::MAX as u128) as u32;
        if let Some(r) = self.rate_kib_s.get(slot) {
            let _ = r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(if old == 0 { sample } else { ((u64::from(old) * 3 + u64::from(sample)) / 4) as u32 })
            });
        }
    }

    /// The parent slots added and not given up on.
    fn live_mask(&self) -> u32 {
        let n = self.n_slots.load(Ordering::Acquire).min(MAX_PARENTS);
        let added = if n == MAX_PARENTS { u32::MAX } else { (1u32 << n) - 1 };
        added & !self.dead.load(Ordering::Acquire)
    }

    fn live_holders(&self, piece: u64) -> u32 {
        self.has.get(piece as usize).map(|h| h.load(Ordering::Acquire)).unwrap_or(0)
            & !self.dead.load(Ordering::Acquire)
    }

    /// The live holders of `piece` outside `skip` that this peer should ask: source parents left
    /// to the children that need them (`pick::usable`). `skip` (e.g. parents that have their share
    /// of fetches in flight) is taken out after that choice: a busy sibling holding the piece
    /// still keeps this child off the source parent.
    fn usable_holders(&self, piece: u64, skip: u32) -> u32 {
        let holders = self.live_holders(piece);
        let source = self.source.load(Ordering::Acquire);
        if holders & source == 0 {
            return holders & !skip;
        }
        let first = self.first_announced_ms.get(piece as usize).map_or(0, |t| t.load(Ordering::Acquire));
        let young = mono_ms().saturating_sub(first) < limits::SOURCE_PARENT_HOLD.as_millis() as u64;
        pick::usable(holders, source, self.live_mask(), young) & !skip
    }

    /// Counts a fetch from `slot` until the guard drops.
    pub fn begin_fetch(&self, slot: usize) -> InFlight<'_> {
        let slot = slot.min(MAX_PARENTS - 1);
        self.in_flight[slot].fetch_add(1, Ordering::AcqRel);
        InFlight(self, slot)
    }

    /// From now on `n_workers` workers pick pieces (`take_held`, `take_any`); pieces below
    /// `first_untaken` (the first response's piece 0) are already someone's. Called once, before
    /// any worker runs.
    pub fn start_trading(&self, first_untaken: u64, n_workers: usize) {
        for idx in 0..first_untaken.min(self.n_pieces) {
            self.taken.set(idx);
        }
        self.n_workers.store(u32::try_from(n_workers).unwrap_or(u32::MAX), Ordering::Release);
        self.trading.store(true, Ordering::Release);
    }

    pub fn trading(&self) -> bool {
        self.trading.load(Ordering::Acquire)
    }

    /// Piece `idx` as a picker sees it, holders in `skip` left out.
    fn piece_state(&self, idx: u64, done: &impl Fn(u64) -> bool, skip: u32) -> Piece {
        if self.taken.get(idx) || done(idx) {
            Piece::Gone
        } else {
            Piece::Open(self.usable_holders(idx, skip))
        }
    }

    /// Takes the piece `pick::choose` prefers among the untaken ones a live parent holds, leaving
    /// out parents that have their share of our workers already (`pick::full_slots`).
    pub fn take_held(&self, done: impl Fn(u64) -> bool) -> Option<u64> {
        loop {
            let in_flight: Vec<u32> = self.in_flight.iter().map(|c| c.load(Ordering::Acquire)).collect();
            let live = self.live_mask();
            let full = pick::full_slots(&in_flight, live, self.n_workers.load(Ordering::Acquire));
            let idx = pick::choose(self.n_pieces, self.seed, &self.costs(), |i| self.piece_state(i, &done, full))?;
            // Another worker may have taken it since the look: choose again.
            if self.taken.set(idx) {
                return Some(idx);
            }
        }
    }

    /// Takes any untaken piece (for the origin), from this peer's place in the task on.
    pub fn take_any(&self, done: impl Fn(u64) -> bool) -> Option<u64> {
        loop {
            let idx = pick::first_open(self.n_pieces, self.seed, |i| self.piece_state(i, &done, 0))?;
            if self.taken.set(idx) {
                return Some(idx);
            }
        }
    }

    /// Whether a live parent holds a piece that is neither done nor taken (it may have its
    /// share of our workers in flight: then a worker waits for one of them, not for the origin).
    pub fn any_held_untaken(&self, done: impl Fn(u64) -> bool) -> bool {
        (0..self.n_pieces).any(|i| matches!(self.piece_state(i, &done, 0), Piece::Open(1..)))
    }

    /// Whether any piece is neither done nor taken.
    pub fn any_untaken(&self, done: impl Fn(u64) -> bool) -> bool {
        pick::first_open(self.n_pieces, 0, |i| self.piece_state(i, &done, 0)).is_some()
    }

    /// Gives a taken piece back (its parents failed it) so any worker may take it again.
    pub fn release(&self, idx: u64) {
        if idx < self.n_pieces {
            self.taken.clear(idx);
        }
        self.event.notify();
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
        mono_ms().saturating_sub(self.last_news_ms.load(Ordering::Acquire))
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
            source: false,
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
    fn trading_workers_take_each_piece_once_least_busy_holder_first_and_a_released_one_again() {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(20 << 20), tx); // 5 pieces
        let a = t.add_parent(parent("a")).unwrap();
        let b = t.add_parent(parent("b")).unwrap();
        assert!(!t.trading());
        t.start_trading(1, 8); // piece 0 came with the first response
        assert!(t.trading());
        let done = |i: u64| i == 4; // piece 4 is on disk already
        assert_eq!(t.take_held(done), None, "nothing announced yet");
        for piece in [0, 1, 2, 4] {
            t.announce(a, piece);
        }
        t.announce(b, 2);
        {
            let _busy = t.begin_fetch(a);
            assert_eq!(t.holders(2), vec![b, a], "the idle holder first");
            assert_eq!(t.take_held(done), Some(2), "b holds piece 2 and is idle; a is busy");
        }
        assert_eq!(t.holders(2).len(), 2);
        assert_eq!(t.take_held(done), Some(1), "piece 0 was taken before trading, 4 is done");
        assert_eq!(t.take_held(done), None, "every held piece is taken");
        t.give_up_on(b);
        t.release(2);
        assert_eq!(t.take_held(done), Some(2), "a released piece is taken again (a still holds it)");
        assert_eq!(t.take_any(done), Some(3), "the origin gets the piece nobody holds");
        assert_eq!(t.take_any(done), None, "and nothing twice");
    }

    #[test]
    fn a_parent_with_its_share_of_the_workers_in_flight_is_not_asked_for_more() {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        let a = t.add_parent(parent("a")).unwrap();
        let b = t.add_parent(parent("b")).unwrap();
        t.start_trading(1, 2); // two workers, two parents: one each
        t.announce(a, 1);
        t.announce(a, 2);
        let busy = t.begin_fetch(a);
        assert_eq!(t.take_held(|_| false), None, "a has its one worker; b holds nothing");
        assert!(t.any_held_untaken(|_| false), "but a holds pieces: wait for it, not for the origin");
        t.announce(b, 3);
        assert_eq!(t.take_held(|_| false), Some(3));
        t.give_up_on(b);
        drop(busy);
        let again = t.take_held(|_| false);
        assert!(matches!(again, Some(1 | 2)), "a alone is live and free again: {again:?}");
    }

    #[test]
    fn a_parent_whose_pieces_come_slowly_is_asked_last_even_when_idle() {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        let fast = t.add_parent(parent("fast")).unwrap();
        let slow = t.add_parent(parent("slow")).unwrap();
        t.start_trading(1, 8);
        for piece in [1, 2] {
            t.announce(fast, piece);
            t.announce(slow, piece);
        }
        let ms = std::time::Duration::from_millis;
        t.note_rate(fast, 4 << 20, ms(40)); // 100 MiB/s
        t.note_rate(slow, 4 << 20, ms(2000)); // 2 MiB/s: every sibling asks it
        assert_eq!(t.rate_kib_s[slow].load(Ordering::Acquire), 2048);
        let _busy = t.begin_fetch(fast);
        let mut h = t.holders(1);
        h.extend(t.holders(2));
        assert_eq!(h, vec![fast, slow, fast, slow], "the fast parent first, though one fetch is in flight there");
        t.note_rate(slow, 4 << 20, ms(40));
        assert_eq!(t.rate_kib_s[slow].load(Ordering::Acquire), (2048 * 3 + 102_400) / 4, "a moving average");
    }

    /// A 4-piece task with a source parent ("seed") and another parent: (task, seed, sibling).
    fn seed_and_sibling() -> (PeerTask, usize, usize) {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let t = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        let seed = t.add_parent(Parent { source: true, ..parent("seed") }).unwrap();
        let sibling = t.add_parent(parent("sibling")).unwrap();
        (t, seed, sibling)
    }

    /// Marks `piece` as first announced just over `SOURCE_PARENT_HOLD` ago.
    fn held_long(t: &PeerTask, piece: usize) {
        let since = mono_ms() - limits::SOURCE_PARENT_HOLD.as_millis() as u64 - 1;
        t.first_announced_ms[piece].store(since, Ordering::Release);
    }

    #[test]
    fn a_source_parent_is_asked_only_for_what_no_other_parent_has_had_for_a_while() {
        let (t, seed, sibling) = seed_and_sibling();
        t.start_trading(1, 8);
        let nobody = |_| false;
        // Piece 1: only the seed, just announced: left to the children that have no other parent.
        t.announce(seed, 1);
        assert_eq!(t.take_held(nobody), None);
        assert!(t.holders(1).is_empty());
        // Piece 2: the sibling has it too: taken, and only the sibling is asked.
        t.announce(seed, 2);
        t.announce(sibling, 2);
        assert_eq!(t.holders(2), vec![sibling]);
        assert_eq!(t.take_held(nobody), Some(2));
        // Piece 1 once the seed has held it alone for SOURCE_PARENT_HOLD: asked of the seed.
        held_long(&t, 1);
        assert_eq!(t.holders(1), vec![seed]);
        assert_eq!(t.take_held(nobody), Some(1));
        // With the sibling given up on, the seed is asked for a new piece at once.
        t.announce(seed, 3);
        assert_eq!(t.take_held(nobody), None);
        t.give_up_on(sibling);
        assert_eq!(t.take_held(nobody), Some(3));
    }

    /// Regression: parents with their share of fetches in flight were taken out before the
    /// source rule, so a busy sibling holding an old piece sent this child to the seed for it.
    #[test]
    fn a_busy_sibling_holding_a_piece_still_keeps_the_child_off_the_source_parent() {
        let (t, seed, sibling) = seed_and_sibling();
        t.start_trading(1, 2); // one fetch per parent is its share
        t.announce(seed, 1);
        t.announce(sibling, 1);
        held_long(&t, 1);
        let _busy = t.begin_fetch(sibling);
        assert_eq!(t.take_held(|_| false), None, "the seed was asked for a piece the busy sibling has");
        drop(_busy);
        assert_eq!(t.take_held(|_| false), Some(1));
        assert_eq!(t.holders(1), vec![sibling]);
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
