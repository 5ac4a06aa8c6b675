//! Which child hears of a new piece first: super-seeding by the parent, over its SyncPieces
//! streams. While this peer is still downloading a task, a piece that just landed here is
//! announced to one child (the first stream to claim it) and to the others only `HOLD` later, so
//! each new piece leaves this peer's uplink about once and the children that got different pieces
//! then trade them among themselves, instead of every child asking this peer for the newest piece
//! at once (PERF.md, swarm). A stream claims a new piece only while fewer than `MAX_OPEN_CLAIMS`
//! of its claims are unfetched and young, so a child that fetches fast hears of more pieces and a
//! child that does not fetch what it was told holds back little. A task done here announces
//! everything at once: it is no longer the frontier; so does a task with a single stream open,
//! whose child has no sibling to hear a piece first.
//!
//! Invariant: every piece a stream wants and this peer holds is announced to it at most `HOLD`
//! after it was first announced to anyone (or at once when unclaimed and the stream may claim), so
//! staging delays a child but never starves it. `decide` is pure and table-tested; `Spread` holds
//! the per-task atomics the streams and the upload server share.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How long a new piece is told only to the child that claimed it: several piece times at 100
/// MiB/s (a 4 MiB piece takes 40 ms), enough for that child to fetch it and announce it onwards.
pub const HOLD_MS: u64 = 500;

/// A stream's claims that may be unfetched and younger than `HOLD_MS` at once before it claims
/// more: a child asks 1–8 pieces of one parent at a time.
pub const MAX_OPEN_CLAIMS: usize = 2;

/// What a stream does with one piece this peer holds and the stream's child wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Announce it (the task is done here, or the piece's hold is over).
    Tell,
    /// Nobody heard of it yet and this stream may claim it: claim, then announce.
    Claim,
    /// Held for another child, or this stream has enough open claims: look again at this time
    /// (`clock::mono_ms`), or at the next change when None.
    Wait(Option<u64>),
}

/// The decision for one held piece: `told_ms` when it was first announced to any child (0 =
/// never), `open_claims` this stream's claims still unfetched and young.
pub fn decide(done_here: bool, told_ms: u64, open_claims: usize, now_ms: u64) -> Decision {
    if done_here {
        return Decision::Tell;
    }
    if told_ms == 0 {
        return if open_claims < MAX_OPEN_CLAIMS { Decision::Claim } else { Decision::Wait(None) };
    }
    let until = told_ms + HOLD_MS;
    if now_ms >= until {
        Decision::Tell
    } else {
        Decision::Wait(Some(until))
    }
}

/// One task's staging state, shared by its SyncPieces streams and the upload server.
pub struct Spread {
    /// Per piece: when a stream first announced it (`clock::mono_ms`; 0 = not yet).
    told_ms: Box<[AtomicU64]>,
    /// Per piece: how many times a child fetched it from this peer.
    uploads: Box<[AtomicU32]>,
    /// Notified on every fetch: a stream waiting for its child to fetch its claims looks again.
    pub changed: tokio::sync::Notify,
    /// SyncPieces streams of this task open now (`Spread::join`).
    streams: AtomicUsize,
}

/// One open stream of a task, counted while it lives.
pub struct Joined(Arc<Spread>);

impl Drop for Joined {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Spread {
    pub fn new(n_pieces: u64) -> Spread {
        Spread {
            told_ms: (0..n_pieces).map(|_| AtomicU64::new(0)).collect(),
            uploads: (0..n_pieces).map(|_| AtomicU32::new(0)).collect(),
            changed: tokio::sync::Notify::new(),
            streams: AtomicUsize::new(0),
        }
    }

    /// Counts a stream as open until the guard drops; None when `max` are open already (every
    /// upload wakes every stream of its task, so their number is bounded).
    pub fn join(self: &Arc<Self>, max: usize) -> Option<Joined> {
        self.streams.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Joined(self.clone()))
    }

    /// Whether one stream at most is open: with no sibling to hear a piece first, nothing is
    /// staged (a lone child sees every piece at once, as from a finished parent).
    pub fn alone(&self) -> bool {
        self.streams.load(Ordering::Acquire) <= 1
    }

    pub fn told_ms(&self, piece: u64) -> u64 {
        self.told_ms.get(piece as usize).map_or(0, |t| t.load(Ordering::Acquire))
    }

    /// Claims a piece nobody was told of: true for exactly one caller.
    pub fn claim(&self, piece: u64, now_ms: u64) -> bool {
        self.told_ms
            .get(piece as usize)
            .is_some_and(|t| t.compare_exchange(0, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire).is_ok())
    }

    /// A child fetched `piece` from this peer: how many times it has been, this one included.
    pub fn uploaded(&self, piece: u64) -> u32 {
        let n = self.uploads.get(piece as usize).map_or(0, |u| u.fetch_add(1, Ordering::AcqRel) + 1);
        self.changed.notify_waiters();
        n
    }

    /// Whether a claim of `piece` still holds the stream back: unfetched and within its hold.
    pub fn open(&self, piece: u64, now_ms: u64) -> bool {
        let unfetched = self.uploads.get(piece as usize).is_some_and(|u| u.load(Ordering::Acquire) == 0);
        unfetched && now_ms < self.told_ms(piece) + HOLD_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Claim, Tell, Wait};

    #[test]
    fn a_lone_stream_is_alone_until_a_second_joins_and_again_when_it_leaves() {
        let s = Arc::new(Spread::new(4));
        assert!(s.alone());
        let first = s.join(2).expect("first");
        assert!(s.alone());
        let second = s.join(2).expect("second");
        assert!(!s.alone());
        assert!(s.join(2).is_none(), "a third stream past the bound");
        drop(first);
        assert!(s.alone());
        drop(second);
        assert!(s.alone());
    }

    #[test]
    fn a_new_piece_goes_to_one_child_first_and_to_the_others_after_the_hold() {
        let now = 10_000;
        // Done here: everything at once.
        assert_eq!(decide(true, 0, 0, now), Tell);
        assert_eq!(decide(true, now, MAX_OPEN_CLAIMS, now), Tell);
        // Nobody told yet: the first stream with room claims it.
        assert_eq!(decide(false, 0, 0, now), Claim);
        assert_eq!(decide(false, 0, MAX_OPEN_CLAIMS - 1, now), Claim);
        // A stream whose child has not fetched its last claims waits for a change.
        assert_eq!(decide(false, 0, MAX_OPEN_CLAIMS, now), Wait(None));
        // Told to another child: held until the hold is over, then told.
        assert_eq!(decide(false, now - 100, 0, now), Wait(Some(now - 100 + HOLD_MS)));
        assert_eq!(decide(false, now - HOLD_MS, 0, now), Tell);
        assert_eq!(decide(false, now - HOLD_MS - 1, MAX_OPEN_CLAIMS, now), Tell);
    }

    #[test]
    fn one_claim_per_piece_and_claims_close_when_fetched_or_old() {
        let s = Spread::new(4);
        assert!(s.claim(1, 5_000));
        assert!(!s.claim(1, 5_001), "a second stream cannot claim it");
        assert_eq!(s.told_ms(1), 5_000);
        assert!(!s.claim(9, 5_000), "out of range");
        assert!(s.open(1, 5_100));
        assert_eq!(s.uploaded(1), 1);
        assert!(!s.open(1, 5_100), "fetched: the claim no longer holds the stream back");
        assert_eq!(s.uploaded(1), 2, "the second fetch of the piece");
        assert!(s.claim(2, 5_000));
        assert!(!s.open(2, 5_000 + HOLD_MS), "past its hold");
        assert!(!s.open(3, 5_000), "never claimed: told at 0, its hold long over");
    }
}
