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
    pub fn new(first_piece: u64, piece_len_bytes: u64) -> Cutter {
        Cutter { piece_idx: first_piece, piece_len_bytes, fill_bytes: 0, crc: crc32fast::Hasher::new() }
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
