//! Cutting a byte stream into pieces: a body arrives in reads of any size, and each piece's crc32
//! is computed as its bytes pass, so a piece is recorded the moment its last byte is written.
//!
//! Invariant: for any split of the same bytes into reads, the same pieces come out with the same
//! crcs and lengths; only the last piece may be short. Pure: no IO.

/// Cuts a byte stream at piece boundaries, computing each piece's crc32.
pub struct Cutter {
    piece_idx: u64,
    piece_len_bytes: u64,
    fill_bytes: u64,
    crc: crc32fast::Hasher,
}

impl Cutter {
    #[cfg(test)]
    pub fn new(first_piece: u64, piece_len_bytes: u64) -> Cutter {
        Cutter::resume(first_piece, piece_len_bytes, (0, 0))
    }

    /// Continues a piece whose first `fill_bytes` (crc32 `crc`) were cut earlier: crc32 is
    /// incremental, so the piece's crc comes out as if it had been cut in one go.
    pub fn resume(first_piece: u64, piece_len_bytes: u64, (fill_bytes, crc): (u64, u32)) -> Cutter {
        debug_assert!(fill_bytes < piece_len_bytes);
        let crc = crc32fast::Hasher::new_with_initial_len(crc, fill_bytes);
        Cutter { piece_idx: first_piece, piece_len_bytes, fill_bytes, crc }
    }

    /// The piece the next byte belongs to.
    pub fn piece(&self) -> u64 {
        self.piece_idx
    }

    /// The current piece's bytes so far and their crc32 (0, _ right after a piece boundary).
    pub fn progress(&self) -> (u64, u32) {
        (self.fill_bytes, self.crc.clone().finalize())
    }

    /// Returns the pieces completed by `bytes`: (index, crc, length).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<(u64, u32, u64)> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            let room = (self.piece_len_bytes - self.fill_bytes) as usize;
            let take = room.min(bytes.len());
            self.crc.update(&bytes[..take]);
            self.fill_bytes += take as u64;
            bytes = &bytes[take..];
            if self.fill_bytes == self.piece_len_bytes {
                let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
                done.push((self.piece_idx, crc, self.fill_bytes));
                self.piece_idx += 1;
                self.fill_bytes = 0;
            }
        }
        done
    }

    /// The trailing short piece, if any.
    pub fn finish(self) -> Option<(u64, u32, u64)> {
        (self.fill_bytes > 0).then(|| (self.piece_idx, self.crc.finalize(), self.fill_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutter_resumed_mid_piece_gives_the_whole_pieces_crc() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 13 % 251) as u8).collect();
        for split in [1usize, 63, 64, 100, 127] {
            let piece = split / 64;
            let within = split - piece * 64;
            let prefix_crc = crc32fast::hash(&data[piece * 64..split]);
            let mut c = Cutter::resume(piece as u64, 64, (within as u64, prefix_crc));
            let mut got = c.feed(&data[split..]);
            got.extend(c.finish());
            let want: Vec<u32> = data.chunks(64).skip(piece).map(crc32fast::hash).collect();
            assert_eq!(got.iter().map(|p| p.1).collect::<Vec<_>>(), want, "split={split}");
        }
        let mut c = Cutter::new(0, 64);
        c.feed(&data[..10]);
        assert_eq!(c.progress(), (10, crc32fast::hash(&data[..10])));
    }

    #[test]
    fn cutter_splits_at_piece_boundaries_for_any_chunking() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want: Vec<u32> = data.chunks(64).map(crc32fast::hash).collect();
        for chunk in [1usize, 7, 63, 64, 65, 1000] {
            let mut c = Cutter::new(0, 64);
            let mut got: Vec<(u64, u32, u64)> = Vec::new();
            for part in data.chunks(chunk) {
                got.extend(c.feed(part));
            }
            got.extend(c.finish());
            let crcs: Vec<u32> = got.iter().map(|p| p.1).collect();
            assert_eq!(crcs, want, "chunk={chunk}");
            assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), (0..16).collect::<Vec<_>>());
            assert_eq!(got.last().unwrap().2, 1000 - 15 * 64);
        }
    }
}
