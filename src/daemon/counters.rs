//! The daemon's statistics counters: global atomics bumped from every core with `Relaxed` ordering
//! (they are statistics, not synchronisation) and read by the metrics endpoint at scrape time.
//!
//! Invariant: counters only grow. A leaf: it imports nothing of the daemon, so any room may count.

use std::sync::atomic::{AtomicU64, Ordering};

pub static DOWNLOADS_DONE: AtomicU64 = AtomicU64::new(0);
pub static DOWNLOADS_FAILED: AtomicU64 = AtomicU64::new(0);
pub static CACHE_HITS: AtomicU64 = AtomicU64::new(0);
pub static PIECES_FETCHED: AtomicU64 = AtomicU64::new(0);
pub static BYTES_FETCHED: AtomicU64 = AtomicU64::new(0);
/// Piece bytes served to other peers (Vortex), by how they left: `splice(2)` or a buffered copy.
pub static UPLOAD_BYTES_SPLICED: AtomicU64 = AtomicU64::new(0);
pub static UPLOAD_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
