//! Piece math: how a task's content is cut into pieces, and the shared bitmap that records which are
//! on disk. Pure and allocation-light; the daemon's piece workers and the GC read it from every core.
//!
//! Invariant: pieces tile `[0, content_len)` exactly — every byte belongs to one piece, the last piece
//! may be short, and an empty content has zero pieces.

pub(crate) mod bitmap;
pub(crate) mod cutter;

/// Piece length for files up to [`SMALL_FILE_LIMIT_BYTES`] (Dragonfly's default).
pub const DEFAULT_PIECE_LEN_BYTES: u64 = 4 * 1024 * 1024;
/// Above this size the piece length grows so that a task has about [`TARGET_PIECES_LARGE`] pieces.
pub const SMALL_FILE_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Dragonfly computes `next_power_of_two(len / 500)` for large files.
pub const TARGET_PIECES_LARGE: u64 = 500;

/// Dragonfly's piece size rule: 4 MiB up to 1 GiB, then `next_power_of_two(len/500)` capped at 64 MiB.
pub fn piece_len_for(content_len_bytes: u64) -> u64 {
    if content_len_bytes <= SMALL_FILE_LIMIT_BYTES {
        return DEFAULT_PIECE_LEN_BYTES;
    }
    let raw = (content_len_bytes / TARGET_PIECES_LARGE).next_power_of_two();
    raw.clamp(DEFAULT_PIECE_LEN_BYTES, crate::limits::MAX_PIECE_LEN_BYTES)
}

/// The geometry of one task's pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub content_len_bytes: u64,
    pub piece_len_bytes: u64,
}

impl Layout {
    pub fn for_len(content_len_bytes: u64) -> Layout {
        Layout { content_len_bytes, piece_len_bytes: piece_len_for(content_len_bytes) }
    }

    pub fn n_pieces(&self) -> u64 {
        debug_assert!(self.piece_len_bytes > 0);
        self.content_len_bytes.div_ceil(self.piece_len_bytes)
    }

    /// Byte range `[start, end)` of piece `piece_idx`; `None` past the last piece.
    pub fn piece_range(&self, piece_idx: u64) -> Option<(u64, u64)> {
        if piece_idx >= self.n_pieces() {
            return None;
        }
        let start = piece_idx * self.piece_len_bytes;
        let end = (start + self.piece_len_bytes).min(self.content_len_bytes);
        debug_assert!(start < end);
        Some((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn check_len(content_len: u64, expected_piece_len: u64) {
        assert_eq!(piece_len_for(content_len), expected_piece_len, "content_len={content_len}");
    }

    #[test]
    fn piece_len_follows_dragonfly() {
        check_len(0, 4 * MIB);
        check_len(1, 4 * MIB);
        check_len(1024 * MIB, 4 * MIB);
        // 1 GiB + 1: len/500 ≈ 2.05 MiB → 4 MiB (power of two, floor 4 MiB).
        check_len(1024 * MIB + 1, 4 * MIB);
        // 3 GiB / 500 ≈ 6.1 MiB → 8 MiB.
        check_len(3 * 1024 * MIB, 8 * MIB);
        // 20 GiB / 500 ≈ 41 MiB → 64 MiB.
        check_len(20 * 1024 * MIB, 64 * MIB);
        // 100 GiB / 500 ≈ 205 MiB → capped.
        check_len(100 * 1024 * MIB, 64 * MIB);
    }

    /// Peers of one task must cut it alike; Dragonfly's Rust dfdaemon (`calculate_piece_length`,
    /// no fixed piece length) clamps `next_power_of_two(len / 500)` to [4, 64] MiB. Its own test
    /// points, and the edges where the power of two steps.
    #[test]
    fn piece_len_matches_the_rust_dfdaemon_rule() {
        for (len, want) in [
            (500 * 4 * MIB, 4 * MIB),
            (500 * 4 * MIB + 500, 8 * MIB),
            (500 * 5 * MIB, 8 * MIB),
            (500 * 8 * MIB, 8 * MIB),
            (500 * 8 * MIB + 500, 16 * MIB),
            (500 * 64 * MIB, 64 * MIB),
            (1000 * 64 * MIB, 64 * MIB),
        ] {
            check_len(len, want);
        }
    }

    fn check_layout(content_len: u64, expected: &[(u64, u64)]) {
        let layout = Layout::for_len(content_len);
        assert_eq!(layout.n_pieces(), expected.len() as u64, "content_len={content_len}");
        for (idx, want) in expected.iter().enumerate() {
            assert_eq!(layout.piece_range(idx as u64), Some(*want));
        }
        assert_eq!(layout.piece_range(expected.len() as u64), None);
    }

    #[test]
    fn pieces_tile_the_content() {
        let p = 4 * MIB;
        check_layout(0, &[]);
        check_layout(1, &[(0, 1)]);
        check_layout(p - 1, &[(0, p - 1)]);
        check_layout(p, &[(0, p)]);
        check_layout(p + 1, &[(0, p), (p, p + 1)]);
        check_layout(3 * p + 7, &[(0, p), (p, 2 * p), (2 * p, 3 * p), (3 * p, 3 * p + 7)]);
    }
}
