//! Which piece a trading peer's worker takes next: pure functions of what the worker sees (each
//! piece gone or open with its live holders, the fetches in flight to each parent, this peer's
//! order), table-tested. `PeerTask::take_held` and `take_any` apply them to the atomics.
//!
//! Why not the task's cursor: with every child walking 0, 1, 2, … at the same pace, the only
//! holder of the piece a child wants is the peer that went back to source, which then uploads
//! every copy (PERF.md, swarm). So a child spreads its requests: the piece whose least busy
//! holder has the fewest of our fetches in flight, then the rarest among its parents, then the
//! first in an order of its own (a per-peer permutation, so siblings that see the same holders
//! still take different pieces and then serve them to each other).
//!
//! Invariant: `choose` returns only an open piece with at least one live holder, `first_open`
//! only an open piece; both are deterministic for one `seed`.

/// What a worker knows of one piece when it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Done, or taken by a worker of this peer.
    Gone,
    /// Not taken yet: the live parents that announced it, one bit per parent slot (0 = none).
    Open(u32),
}

/// The piece to ask parents for, or None when no open piece is held by a live parent. Least
/// loaded first (the smallest count in `in_flight` among the piece's holders), then rarest (fewest
/// holders), then first in this peer's order (`order_key`).
pub fn choose(n_pieces: u64, seed: u64, in_flight: &[u32], piece: impl Fn(u64) -> Piece) -> Option<u64> {
    let mut best: Option<((u32, u32, u64), u64)> = None;
    for idx in 0..n_pieces {
        let Piece::Open(holders @ 1..) = piece(idx) else { continue };
        let key = (least_load(holders, in_flight), holders.count_ones(), order_key(seed, idx));
        if best.is_none_or(|(b, _)| key < b) {
            best = Some((key, idx));
        }
    }
    best.map(|(_, idx)| idx)
}

/// The piece to fetch from the origin: the first open one from this peer's place in the task
/// (`seed` modulo the piece count), wrapping, so peers falling back at once take different ones.
pub fn first_open(n_pieces: u64, seed: u64, piece: impl Fn(u64) -> Piece) -> Option<u64> {
    let start = seed.checked_rem(n_pieces)?;
    (0..n_pieces).map(|k| (start + k) % n_pieces).find(|idx| piece(*idx) != Piece::Gone)
}

/// This peer's seed for `choose` and `first_open`, from its peer id (a random uuid): FNV-1a.
pub fn seed_of(peer_id: &str) -> u64 {
    peer_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Piece `idx`'s place in the order of the peer with `seed`: splitmix64 of both, a permutation of
/// the pieces that differs from peer to peer.
pub fn order_key(seed: u64, idx: u64) -> u64 {
    let mut z = seed.wrapping_add(idx.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fewest fetches in flight to any parent in `holders` (a slot with no count has none).
fn least_load(holders: u32, in_flight: &[u32]) -> u32 {
    (0..u32::BITS as usize)
        .filter(|s| holders & (1 << s) != 0)
        .map(|s| in_flight.get(s).copied().unwrap_or(0))
        .min()
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::{Gone, Open};

    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 4;

    fn check(pieces: &[Piece], in_flight: &[u32], seed: u64, want: Option<u64>) {
        let got = choose(pieces.len() as u64, seed, in_flight, |i| pieces[i as usize]);
        assert_eq!(got, want, "pieces {pieces:?}, in flight {in_flight:?}, seed {seed}");
    }

    /// Of the open pieces in `among`, the one first in `seed`'s order.
    fn first_in_order(seed: u64, among: &[u64]) -> u64 {
        *among.iter().min_by_key(|i| order_key(seed, **i)).unwrap()
    }

    #[test]
    fn only_open_pieces_some_live_parent_holds_are_chosen() {
        check(&[], &[], 7, None);
        check(&[Open(0), Open(0)], &[0, 0], 7, None);
        check(&[Gone, Gone], &[0, 0], 7, None);
        check(&[Gone, Open(0), Open(A)], &[0], 7, Some(2));
        check(&[Open(A), Gone], &[5], 7, Some(0));
    }

    #[test]
    fn the_rarest_piece_wins_among_equally_loaded_holders() {
        // Piece 1 only A has; pieces 0 and 2 A and B have; nobody is busy.
        check(&[Open(A | B), Open(A), Open(A | B)], &[0, 0], 7, Some(1));
        check(&[Open(A | B | C), Open(A | C), Open(A | B | C)], &[0, 0, 0], 7, Some(1));
    }

    #[test]
    fn a_less_busy_holder_beats_rarity() {
        // A (the one back-to-source peer, say) has 2 of our fetches in flight, B none: the piece
        // B also holds is taken from B, even though piece 0 (only A) is rarer.
        check(&[Open(A), Open(A | B)], &[2, 0], 7, Some(1));
        // Every holder equally busy again: rarity decides.
        check(&[Open(A), Open(A | B)], &[1, 1], 7, Some(0));
        // A slot beyond the counts has nothing in flight.
        check(&[Open(A), Open(C)], &[1, 1], 7, Some(1));
    }

    #[test]
    fn ties_follow_the_peers_own_order() {
        let pieces = [Open(A), Open(A), Gone, Open(A), Open(A | B), Open(A)];
        let open_a_only = [0, 1, 3, 5];
        for seed in [0, 1, 42, seed_of("10.0.0.1-host-peer-a"), u64::MAX] {
            check(&pieces, &[0, 0], seed, Some(first_in_order(seed, &open_a_only)));
        }
    }

    #[test]
    fn siblings_seeing_the_same_holders_take_different_pieces() {
        // Eight children, one parent that holds 16 pieces: a cursor would send all eight to the
        // same piece; their own orders spread them.
        let pieces = vec![Open(A); 16];
        let chosen: std::collections::BTreeSet<u64> = (0..8)
            .map(|k| choose(16, seed_of(&format!("10.0.0.{k}-swarm{k}-peer")), &[0], |i| pieces[i as usize]).unwrap())
            .collect();
        assert!(chosen.len() >= 5, "8 siblings chose only {chosen:?}");
    }

    #[test]
    fn the_origin_gets_the_first_open_piece_from_the_peers_place() {
        let pieces = [Gone, Open(0), Open(A), Gone, Open(0)];
        let first = |seed| first_open(5, seed, |i| pieces[i as usize]);
        assert_eq!(first(0), Some(1));
        assert_eq!(first(3), Some(4), "from piece 3 on, wrapping");
        assert_eq!(first(5 + 3), Some(4), "the seed is taken modulo the piece count");
        assert_eq!(first(2), Some(2), "a piece a parent holds may come from the origin too");
        assert_eq!(first_open(0, 3, |_| Open(0)), None, "no pieces");
        assert_eq!(first_open(2, 3, |_| Gone), None, "everything gone");
    }
}
