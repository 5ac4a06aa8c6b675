//! Which piece a trading peer's worker takes next: pure functions of what the worker sees (each
//! piece gone or open with its live holders, what one more fetch from each parent costs, this
//! peer's order), table-tested. `PeerTask::take_held` and `take_any` apply them to the atomics.
//!
//! Why not the task's cursor: with every child walking 0, 1, 2, … at the same pace, the only
//! holder of the piece a child wants is the peer that went back to source, which then uploads
//! every copy (PERF.md, swarm). So a child spreads its requests: the piece whose cheapest holder
//! costs least (`costs`: our fetches in flight to it, over the rate its last pieces came at, so a
//! parent every sibling hammers is left to the children that have no other), then the rarest
//! among its parents, then the first in an order of its own (a per-peer permutation, so siblings
//! that see the same holders still take different pieces and then serve them to each other).
//!
//! The peer that went back to source (the scheduler's `BackToSource` parent, here a "source
//! parent") is where every new piece enters the swarm, and its uplink is the swarm's scarcest
//! link: a child with another live parent leaves it the pieces someone else also holds, and waits
//! `SOURCE_PARENT_HOLD` for a piece only the source parent holds before asking it (`usable`), so
//! that each piece leaves it about once — to the children that have no other parent — and spreads
//! from there (BitTorrent's super-seeding, decided by the child).
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

/// The piece to ask parents for, or None when no open piece is held by a live parent. Cheapest
/// first (the smallest `cost` among the piece's holders, see `costs`), then rarest (fewest
/// holders), then first in this peer's order (`order_key`).
pub fn choose(n_pieces: u64, seed: u64, cost: &[u32], piece: impl Fn(u64) -> Piece) -> Option<u64> {
    let mut best: Option<((u32, u32, u64), u64)> = None;
    for idx in 0..n_pieces {
        let Piece::Open(holders @ 1..) = piece(idx) else { continue };
        let key = (cheapest(holders, cost), holders.count_ones(), order_key(seed, idx));
        if best.is_none_or(|(b, _)| key < b) {
            best = Some((key, idx));
        }
    }
    best.map(|(_, idx)| idx)
}

/// Of a piece's live `holders`, those a child should ask: with `source` the live source parents'
/// slots and `live` every live parent's, a child that has a live parent besides the source ones
/// leaves them out while another holder has the piece, and while the piece is `young` (announced
/// less than `SOURCE_PARENT_HOLD` ago, so a sibling is likely fetching it from them right now).
pub fn usable(holders: u32, source: u32, live: u32, young: bool) -> u32 {
    let source = source & live;
    if live & !source == 0 {
        return holders;
    }
    match holders & !source {
        0 if young => 0,
        0 => holders,
        others => others,
    }
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

/// What one more fetch from each parent slot costs: (our fetches in flight to it + 1) ÷ the rate
/// its pieces came at lately (`rate_kib_s`, 0 = none fetched yet). A parent never measured is
/// taken at the best rate measured (so a new parent gets tried); with none measured, the count
/// alone decides. In units of 2^-20 s per KiB; only the order matters.
pub fn costs(in_flight: &[u32], rate_kib_s: &[u32]) -> Vec<u32> {
    let best = rate_kib_s.iter().copied().max().unwrap_or(0).max(1);
    in_flight
        .iter()
        .zip(rate_kib_s.iter().chain(std::iter::repeat(&0)))
        .map(|(n, rate)| {
            let rate = if *rate == 0 { best } else { *rate };
            let c = (u64::from(*n) + 1) * (1 << 20) / u64::from(rate);
            u32::try_from(c).unwrap_or(u32::MAX)
        })
        .collect()
}

/// The parent slots a worker must not ask now: those with their share of this peer's workers in
/// flight already, the share being the workers split evenly over the live parents (rounded up).
/// A child with several parents thus keeps asking the others while one (the peer every sibling
/// has as a parent, say) is slow, instead of filling every worker with it.
pub fn full_slots(in_flight: &[u32], live: u32, n_workers: u32) -> u32 {
    let share = n_workers.div_ceil(live.count_ones().max(1)).max(1);
    (0..in_flight.len().min(u32::BITS as usize))
        .filter(|s| live & (1 << s) != 0 && in_flight[*s] >= share)
        .fold(0, |m, s| m | 1 << s)
}

/// The smallest cost of any parent in `holders` (a slot with no cost is free).
fn cheapest(holders: u32, cost: &[u32]) -> u32 {
    (0..u32::BITS as usize)
        .filter(|s| holders & (1 << s) != 0)
        .map(|s| cost.get(s).copied().unwrap_or(0))
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

    fn check(pieces: &[Piece], cost: &[u32], seed: u64, want: Option<u64>) {
        let got = choose(pieces.len() as u64, seed, cost, |i| pieces[i as usize]);
        assert_eq!(got, want, "pieces {pieces:?}, cost {cost:?}, seed {seed}");
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
    fn a_cheaper_holder_beats_rarity() {
        // A (the one back-to-source peer, say) costs 3, B 1: the piece B also holds is taken
        // from B, even though piece 0 (only A) is rarer.
        check(&[Open(A), Open(A | B)], &[3, 1], 7, Some(1));
        // Every holder costs the same again: rarity decides.
        check(&[Open(A), Open(A | B)], &[2, 2], 7, Some(0));
        // A slot beyond the costs is free.
        check(&[Open(A), Open(C)], &[1, 1], 7, Some(1));
    }

    #[test]
    fn a_fetch_costs_the_fetches_in_flight_over_the_parents_rate() {
        let u = 1 << 20;
        // Nothing measured yet: the count alone (each slot at the same unit rate).
        assert_eq!(costs(&[0, 2, 1], &[0, 0, 0]), vec![u, 3 * u, 2 * u]);
        // A at 1000 KiB/s with 3 in flight is cheaper than B at 100 KiB/s with none: B is the
        // parent every sibling hammers.
        let c = costs(&[3, 0], &[1000, 100]);
        assert!(c[0] < c[1], "{c:?}");
        assert_eq!(c, vec![4 * u / 1000, u / 100]);
        // A parent never measured is taken at the best rate measured, so it gets tried.
        assert_eq!(costs(&[0, 0], &[0, 500]), vec![u / 500, u / 500]);
        // Rates missing for some slots count as unmeasured.
        assert_eq!(costs(&[1, 1], &[200]), vec![2 * u / 200, 2 * u / 200]);
        assert!(costs(&[], &[]).is_empty());
    }

    #[test]
    fn a_parent_is_full_with_its_share_of_the_workers_in_flight() {
        // 8 workers, 3 live parents: at most 3 in flight to each.
        assert_eq!(full_slots(&[3, 2, 0], A | B | C, 8), A);
        assert_eq!(full_slots(&[2, 2, 2], A | B | C, 8), 0);
        // One parent: every worker may ask it.
        assert_eq!(full_slots(&[7, 0, 0], A, 8), 0);
        assert_eq!(full_slots(&[8, 0, 0], A, 8), A);
        // Dead parents (not live) take no share and are never "full".
        assert_eq!(full_slots(&[4, 9, 0], A | C, 8), A);
        assert_eq!(full_slots(&[1, 0], 0, 8), 0);
    }

    #[test]
    fn a_source_parent_is_left_to_the_children_that_have_no_other() {
        // A is the source parent, B and C other parents.
        // Only the source parent alive: it is asked for everything, young or not.
        assert_eq!(usable(A, A, A, true), A);
        assert_eq!(usable(A, A | C, A, true), A, "C, another source parent, is dead");
        // Another parent alive: a piece B also holds comes from B only.
        assert_eq!(usable(A | B, A, A | B, true), B);
        assert_eq!(usable(A | B, A, A | B, false), B);
        assert_eq!(usable(A | B | C, A, A | B | C, false), B | C);
        // A piece only the source parent holds waits while young, then is asked of it.
        assert_eq!(usable(A, A, A | B, true), 0);
        assert_eq!(usable(A, A, A | B, false), A);
        // No source parent: holders as they are.
        assert_eq!(usable(B | C, 0, A | B | C, true), B | C);
        assert_eq!(usable(0, A, A | B, false), 0);
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
