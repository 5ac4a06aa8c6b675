//! A fixed-size bitmap of atomics recording which pieces of a task are on disk.
//!
//! Shared by every core working on one task (it lives in the task's `Arc`), so it is lock-free: a bit
//! is set with `fetch_or` *after* the piece's bytes were written, and read with `Acquire`, so a reader
//! that sees the bit also sees the data's metadata (crc) published before it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct AtomicBitmap {
    words: Box<[AtomicU64]>,
    n_bits: u64,
}

impl AtomicBitmap {
    pub fn new(n_bits: u64) -> AtomicBitmap {
        let n_words = n_bits.div_ceil(64) as usize;
        AtomicBitmap { words: (0..n_words).map(|_| AtomicU64::new(0)).collect(), n_bits }
    }

    /// Sets bit `idx`; returns true when this call set it (false when it was already set).
    pub fn set(&self, idx: u64) -> bool {
        assert!(idx < self.n_bits, "piece index {idx} out of range {}", self.n_bits);
        let mask = 1u64 << (idx % 64);
        let old = self.words[(idx / 64) as usize].fetch_or(mask, Ordering::AcqRel);
        old & mask == 0
    }

    /// Clears bit `idx` (a taken piece given back, `p2p::peer::PeerTask::release`); returns true
    /// when it was set.
    pub fn clear(&self, idx: u64) -> bool {
        assert!(idx < self.n_bits, "piece index {idx} out of range {}", self.n_bits);
        let mask = 1u64 << (idx % 64);
        let old = self.words[(idx / 64) as usize].fetch_and(!mask, Ordering::AcqRel);
        old & mask != 0
    }

    pub fn get(&self, idx: u64) -> bool {
        if idx >= self.n_bits {
            return false;
        }
        let mask = 1u64 << (idx % 64);
        self.words[(idx / 64) as usize].load(Ordering::Acquire) & mask != 0
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.load(Ordering::Acquire).count_ones() as u64).sum()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.n_bits
    }

    pub fn to_vec(&self) -> Vec<bool> {
        (0..self.n_bits).map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        for n in [0u64, 1, 63, 64, 65, 500] {
            let b = AtomicBitmap::new(n);
            assert_eq!(b.count(), 0);
            assert_eq!(b.is_full(), n == 0);
            for i in (0..n).step_by(3) {
                assert!(b.set(i));
                assert!(!b.set(i), "second set reports already set");
                assert!(b.get(i));
            }
            assert_eq!(b.count(), n.div_ceil(3));
            assert!(!b.get(n), "out of range reads false");
            if n > 0 {
                assert!(b.clear(0), "clearing a set bit reports it was set");
                assert!(!b.clear(0), "clearing it again reports it was clear");
                assert!(!b.get(0));
                assert_eq!(b.count(), n.div_ceil(3) - 1);
            }
        }
    }
}
