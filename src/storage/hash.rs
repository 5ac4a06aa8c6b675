//! sha256 of a task file computed while it downloads: the hasher advances over the longest
//! prefix of finished pieces (pieces land in any order), reading each back through a read-only
//! map of just that piece (page cache, no copy; unmapped after, so the daemon's resident set stays
//! one piece, not the file), so when the last piece lands only the pieces after that prefix remain
//! to hash.
//!
//! Invariant: a piece is hashed only after the caller says its bytes are written, each piece
//! exactly once and in index order, so the result is the sha256 of the whole file.

use std::fs::File;
use std::path::Path;

use crate::error::Result;
use crate::piece::Layout;
use crate::storage::disk_err;

pub struct PrefixHasher {
    sha: crate::digest::Hasher,
    layout: Layout,
    next_piece: u64,
    file: File,
}

impl PrefixHasher {
    /// Opens the task file at `path` (already at its final length). Blocking.
    pub fn open(path: &Path, layout: Layout) -> Result<PrefixHasher> {
        let file = File::open(path).map_err(|e| disk_err(e, path, "open task file for hashing"))?;
        let len = file.metadata().map_err(|e| disk_err(e, path, "stat task file"))?.len();
        if len < layout.content_len_bytes {
            return Err(crate::error::Error::disk(format!("task file {} is shorter than its layout", path.display())));
        }
        Ok(PrefixHasher { sha: crate::digest::Hasher::new(), layout, next_piece: 0, file })
    }

    /// Hashes pieces from the first unhashed one on while `is_done` says they are written.
    /// Returns how many pieces it hashed. Blocking (CPU-bound).
    pub fn advance(&mut self, is_done: impl Fn(u64) -> bool) -> Result<u64> {
        let mut n = 0;
        while self.next_piece < self.layout.n_pieces() && is_done(self.next_piece) {
            if let Some((start, end)) = self.layout.piece_range(self.next_piece).filter(|(s, e)| e > s) {
                // SAFETY: the task file is preallocated to its final length before any piece is
                // written and never truncated while its task runs (a new task for the id gets a new
                // inode, removal only unlinks); this piece's writes completed before its bit was set.
                let map =
                    unsafe { memmap2::MmapOptions::new().offset(start).len((end - start) as usize).map(&self.file) }
                        .map_err(|e| {
                            crate::error::Error::disk(format!("map piece {} for hashing: {e}", self.next_piece))
                        })?;
                self.sha.update(&map[..]);
            }
            self.next_piece += 1;
            n += 1;
        }
        Ok(n)
    }

    pub fn is_complete(&self) -> bool {
        self.next_piece >= self.layout.n_pieces()
    }

    /// `sha256:<hex>` of everything hashed so far (the whole file once `is_complete`).
    pub fn finish(self) -> crate::digest::Digest {
        self.sha.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn out_of_order_pieces_hash_to_the_whole_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        let layout = Layout { content_len_bytes: body.len() as u64, piece_len_bytes: 64 };
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        // Pieces "land" in reverse order: nothing is hashed until piece 0 is there.
        let mut h = PrefixHasher::open(&path, layout).unwrap();
        let mut done = vec![false; layout.n_pieces() as usize];
        for idx in (0..done.len()).rev() {
            done[idx] = true;
            let n = h.advance(|i| done[i as usize]).unwrap();
            assert_eq!(n, if idx == 0 { done.len() as u64 } else { 0 }, "piece {idx}");
        }
        assert!(h.is_complete());
        assert_eq!(h.finish().as_str(), want);
        // In order, a piece at a time, and an empty file.
        let mut h = PrefixHasher::open(&path, layout).unwrap();
        for idx in 0..layout.n_pieces() {
            assert_eq!(h.advance(|i| i <= idx).unwrap(), 1);
        }
        assert_eq!(h.finish().as_str(), want);
        let empty = Layout { content_len_bytes: 0, piece_len_bytes: 64 };
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        let mut h = PrefixHasher::open(&dir.path().join("empty"), empty).unwrap();
        h.advance(|_| true).unwrap();
        assert!(h.is_complete());
        assert_eq!(h.finish().as_str(), format!("sha256:{}", hex::encode(Sha256::digest(b""))));
    }
}
